//! Redis's glob patterns for ACL key rules (`~app:*`): `*`, `?`, `[abc]`, `[^a-z]` and `\`
//! escapes. Iterative with one backtrack point, so a hostile pattern or key costs at most
//! pattern × key steps, never an exponential search.

/// One pattern element and how many bytes of the pattern it takes.
enum Token<'p> {
    Star,
    Any,
    Byte(u8),
    Class { body: &'p [u8], negated: bool },
}

fn token(pattern: &[u8]) -> (Token<'_>, usize) {
    match pattern[0] {
        b'*' => (Token::Star, 1),
        b'?' => (Token::Any, 1),
        b'\\' if pattern.len() > 1 => (Token::Byte(pattern[1]), 2),
        b'[' => {
            let negated = pattern.get(1) == Some(&b'^');
            let start = 1 + usize::from(negated);
            // The class runs to the first unescaped `]`; an unclosed class takes the rest.
            let mut i = start;
            while i < pattern.len() && pattern[i] != b']' {
                i += if pattern[i] == b'\\' { 2 } else { 1 };
            }
            let end = i.min(pattern.len());
            let body = &pattern[start..end];
            (Token::Class { body, negated }, (end + 1).min(pattern.len()))
        }
        b => (Token::Byte(b), 1),
    }
}

fn class_matches(body: &[u8], byte: u8) -> bool {
    let mut i = 0;
    while i < body.len() {
        let (low, next) = if body[i] == b'\\' && i + 1 < body.len() {
            (body[i + 1], i + 2)
        } else {
            (body[i], i + 1)
        };
        if next + 1 < body.len() && body[next] == b'-' {
            let high = body[next + 1];
            let (a, b) = if low <= high {
                (low, high)
            } else {
                (high, low)
            };
            if (a..=b).contains(&byte) {
                return true;
            }
            i = next + 2;
        } else {
            if low == byte {
                return true;
            }
            i = next;
        }
    }
    false
}

/// True when `text` matches `pattern` whole.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the text it has taken.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            let (tok, len) = token(&pattern[p..]);
            let single = match tok {
                Token::Star => {
                    p += len;
                    resume = Some((p, t));
                    continue;
                }
                Token::Any => text.get(t).is_some(),
                Token::Byte(b) => text.get(t) == Some(&b),
                Token::Class { body, negated } => text
                    .get(t)
                    .is_some_and(|&byte| class_matches(body, byte) != negated),
            };
            if single {
                p += len;
                t += 1;
                continue;
            }
        } else if t == text.len() {
            return true;
        }
        // A mismatch: let the last `*` take one more byte, or fail.
        match resume {
            Some((after_star, taken)) if taken < text.len() => {
                resume = Some((after_star, taken + 1));
                p = after_star;
                t = taken + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_glob_forms() {
        assert!(matches(b"app:*", b"app:1"));
        assert!(matches(b"app:*", b"app:"));
        assert!(!matches(b"app:*", b"other:1"));
        assert!(matches(b"*", b""));
        assert!(matches(b"h?llo", b"hello"));
        assert!(!matches(b"h?llo", b"hllo"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[ae]llo", b"hillo"));
        assert!(matches(b"h[^e]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"*:*:end", b"a:b:c:end"));
        assert!(!matches(b"*:*:end", b"a:b:c:en"));
        assert!(matches(b"exact", b"exact"));
        assert!(!matches(b"exact", b"exactly"));
        assert!(matches(b"[unclosed", b"u"));
    }

    #[test]
    fn hostile_patterns_finish_quickly() {
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_vec();
        let text = vec![b'a'; 4096];
        assert!(!matches(&pattern, &text));
    }
}
