//! A RESP value tree over one complete reply, for the few control replies walnut reads
//! itself (`CLUSTER SLOTS`, `CLUSTER SHARDS`). Borrowed from the frame, bounded in depth,
//! and never allocating for a length the peer only declared.

/// One RESP value, borrowing its bytes from the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<&'a [u8]>),
    /// `None`: the null array. A RESP3 map arrives as its key, value, key, value, ….
    Array(Option<Vec<Value<'a>>>),
}

/// Why a frame is not one well-formed value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("the reply ends early")]
    Truncated,
    #[error("the reply is malformed at byte {0}")]
    Malformed(usize),
    #[error("the reply nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} bytes follow the reply")]
    Trailing(usize),
}

/// How deep arrays may nest (`CLUSTER SHARDS` needs 4).
pub const MAX_DEPTH: usize = 16;

impl<'a> Value<'a> {
    /// The elements of an array, if this is one.
    pub fn items(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<&'a [u8]> {
        match self {
            Value::Simple(s) | Value::Bulk(Some(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer, or a string that holds one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            other => std::str::from_utf8(other.text()?).ok()?.parse().ok(),
        }
    }

    /// In a flat `key, value, …` array (a RESP2 map): the value after `key`.
    pub fn field(&self, key: &[u8]) -> Option<&Value<'a>> {
        let items = self.items()?;
        items
            .chunks_exact(2)
            .find(|pair| pair[0].text() == Some(key))
            .map(|pair| &pair[1])
    }
}

/// Parses `frame`, which must hold exactly one value.
pub fn parse(frame: &[u8]) -> Result<Value<'_>, ValueError> {
    let mut at = 0;
    let value = parse_at(frame, &mut at, 0)?;
    if at != frame.len() {
        return Err(ValueError::Trailing(frame.len() - at));
    }
    Ok(value)
}

fn line<'a>(frame: &'a [u8], at: &mut usize) -> Result<&'a [u8], ValueError> {
    let start = *at;
    let rest = frame.get(start..).ok_or(ValueError::Truncated)?;
    let end = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(ValueError::Truncated)?;
    *at = start + end + 2;
    Ok(&rest[..end])
}

fn number(text: &[u8], at: usize) -> Result<i64, ValueError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(ValueError::Malformed(at))
}

fn parse_at<'a>(frame: &'a [u8], at: &mut usize, depth: usize) -> Result<Value<'a>, ValueError> {
    let start = *at;
    let kind = *frame.get(start).ok_or(ValueError::Truncated)?;
    *at += 1;
    let head = line(frame, at)?;
    match kind {
        b'+' => Ok(Value::Simple(head)),
        b'-' => Ok(Value::Error(head)),
        b':' => Ok(Value::Int(number(head, start)?)),
        b'$' => {
            let len = number(head, start)?;
            if len < 0 {
                return Ok(Value::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| ValueError::Malformed(start))?;
            let end = at.checked_add(len).ok_or(ValueError::Malformed(start))?;
            let data = frame.get(*at..end).ok_or(ValueError::Truncated)?;
            if frame.get(end..end + 2).ok_or(ValueError::Truncated)? != b"\r\n" {
                return Err(ValueError::Malformed(end));
            }
            *at = end + 2;
            Ok(Value::Bulk(Some(data)))
        }
        b'*' | b'%' => {
            let declared = number(head, start)?;
            if declared < 0 {
                return Ok(Value::Array(None));
            }
            if depth >= MAX_DEPTH {
                return Err(ValueError::TooDeep);
            }
            let count = usize::try_from(declared).map_err(|_| ValueError::Malformed(start))?;
            let count = if kind == b'%' {
                count.saturating_mul(2)
            } else {
                count
            };
            // Every element takes at least 3 bytes: a larger count cannot be true, and no
            // memory is reserved for more than the frame could hold.
            if count > (frame.len() - *at) / 3 {
                return Err(ValueError::Truncated);
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(parse_at(frame, at, depth + 1)?);
            }
            Ok(Value::Array(Some(items)))
        }
        _ => Err(ValueError::Malformed(start)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_arrays_of_every_type() {
        let frame = b"*4\r\n:7\r\n$3\r\nabc\r\n*2\r\n+OK\r\n$-1\r\n-ERR no\r\n";
        let value = parse(frame).unwrap();
        assert_eq!(
            value,
            Value::Array(Some(vec![
                Value::Int(7),
                Value::Bulk(Some(b"abc")),
                Value::Array(Some(vec![Value::Simple(b"OK"), Value::Bulk(None)])),
                Value::Error(b"ERR no"),
            ]))
        );
        assert_eq!(value.items().unwrap()[1].text(), Some(&b"abc"[..]));
    }

    #[test]
    fn flat_maps_answer_fields() {
        let value = parse(b"*4\r\n$4\r\nport\r\n:7000\r\n$4\r\nrole\r\n$6\r\nmaster\r\n").unwrap();
        assert_eq!(value.field(b"port").and_then(Value::int), Some(7000));
        assert_eq!(
            value.field(b"role").and_then(Value::text),
            Some(&b"master"[..])
        );
        assert_eq!(value.field(b"missing"), None);
    }

    #[test]
    fn refuses_what_is_not_one_whole_value() {
        assert_eq!(parse(b"*2\r\n:1\r\n"), Err(ValueError::Truncated));
        assert_eq!(parse(b":1\r\n:2\r\n"), Err(ValueError::Trailing(4)));
        assert_eq!(parse(b"$3\r\nabcd\r\n"), Err(ValueError::Malformed(7)));
        assert_eq!(parse(b"?x\r\n"), Err(ValueError::Malformed(0)));
        // A huge declared count reserves nothing.
        assert_eq!(parse(b"*999999999999\r\n"), Err(ValueError::Truncated));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert_eq!(parse(deep.as_bytes()), Err(ValueError::TooDeep));
    }

    #[test]
    fn never_panics_on_any_prefix_of_a_valid_frame() {
        let frame = b"*3\r\n*3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n$1\r\nx\r\n:2\r\n";
        for end in 0..frame.len() {
            let _ = parse(&frame[..end]);
        }
        for i in 0..frame.len() {
            let mut bent = frame.to_vec();
            bent[i] ^= 0x5a;
            let _ = parse(&bent);
        }
    }
}
