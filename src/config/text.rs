//! Message helpers: keep every `ConfigError` on one line, whatever the configuration holds.

/// Escapes control characters (newlines, tabs, ...) so that a name stays on one line.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c, false);
    }
    out
}

/// Formats a value for a message: double-quoted, with `"`, `\` and control characters escaped.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, true);
    }
    out.push('"');
    out
}

fn push_escaped(out: &mut String, c: char, in_quotes: bool) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '"' | '\\' if in_quotes => {
            out.push('\\');
            out.push(c);
        }
        c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_to_one_line() {
        assert_eq!(one_line("a\nb\t\u{0}"), "a\\nb\\t\\u{0}");
        assert_eq!(one_line("it's \"x\""), "it's \"x\"");
        assert_eq!(quoted("md5\n"), "\"md5\\n\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
