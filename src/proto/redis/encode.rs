//! walnut's own replies (the ones it answers without a server) in the protocol the session
//! speaks: RESP3 types for a client that sent `HELLO 3`, and Redis's RESP2 fallbacks for every
//! other client, so a local answer reads exactly as Redis's own would. No I/O.
//!
//! | RESP3 | RESP2 fallback (as Redis 7 writes it) |
//! |---|---|
//! | map `%n` | flat array `*2n`: key, value, key, value, … |
//! | set `~n` | array `*n` |
//! | push `>n` | array `*n` (how RESP2 pub/sub messages look) |
//! | null `_` | `$-1` ([`Encoder::null`]) or `*-1` ([`Encoder::null_array`]): the command's RESP2 null |
//! | boolean `#t`/`#f` | integer `:1`/`:0` |
//! | double `,1.5` | bulk string `$3 1.5` |
//! | big number `(123` | bulk string |
//! | verbatim `=n txt:…` | bulk string of the text alone |
//!
//! The encoder only writes headers and scalars: the caller writes as many values after an
//! aggregate header as it declared.

use std::io::Write as _;

use super::reply::Protocol;

/// Writes RESP values, in the session's protocol, into one buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoder {
    protocol: Protocol,
    out: Vec<u8>,
}

impl Encoder {
    /// An empty buffer for a session speaking `protocol`.
    pub fn new(protocol: Protocol) -> Encoder {
        Encoder {
            protocol,
            out: Vec::new(),
        }
    }

    /// The protocol the values are written in.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn resp3(&self) -> bool {
        self.protocol == Protocol::Resp3
    }

    /// A simple string: `+text`. CR and LF become spaces, so the frame stays one line.
    pub fn status(&mut self, text: &[u8]) -> &mut Encoder {
        self.line(b'+', text)
    }

    /// A simple error: `-line`, where `line` starts with its code (`ERR …`, `NOPROTO …`). CR
    /// and LF become spaces, as Redis does.
    pub fn error(&mut self, line: &[u8]) -> &mut Encoder {
        self.line(b'-', line)
    }

    fn line(&mut self, ty: u8, text: &[u8]) -> &mut Encoder {
        self.out.push(ty);
        self.out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// An integer: `:n`.
    pub fn integer(&mut self, n: i64) -> &mut Encoder {
        self.header(b':', n)
    }

    /// A bulk string: `$len data`.
    pub fn bulk(&mut self, data: &[u8]) -> &mut Encoder {
        self.header(b'$', data.len());
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// An array header: `*len`, then `len` values.
    pub fn array(&mut self, len: usize) -> &mut Encoder {
        self.header(b'*', len)
    }

    /// A map header, then `pairs` keys each followed by its value: `%pairs`, or `*2·pairs` in
    /// RESP2.
    pub fn map(&mut self, pairs: usize) -> &mut Encoder {
        if self.resp3() {
            self.header(b'%', pairs)
        } else {
            self.header(b'*', pairs.saturating_mul(2))
        }
    }

    /// A set header, then `len` values: `~len`, or `*len` in RESP2.
    pub fn set(&mut self, len: usize) -> &mut Encoder {
        self.header(if self.resp3() { b'~' } else { b'*' }, len)
    }

    /// A push header (an out-of-band message such as a pub/sub message), then `len` values:
    /// `>len`, or `*len` in RESP2.
    pub fn push(&mut self, len: usize) -> &mut Encoder {
        self.header(if self.resp3() { b'>' } else { b'*' }, len)
    }

    /// Null where RESP2 has the null bulk string: `_`, or `$-1`.
    pub fn null(&mut self) -> &mut Encoder {
        self.raw(if self.resp3() { b"_\r\n" } else { b"$-1\r\n" })
    }

    /// Null where RESP2 has the null array: `_`, or `*-1`.
    pub fn null_array(&mut self) -> &mut Encoder {
        self.raw(if self.resp3() { b"_\r\n" } else { b"*-1\r\n" })
    }

    /// A boolean: `#t`/`#f`, or `:1`/`:0` in RESP2.
    pub fn boolean(&mut self, b: bool) -> &mut Encoder {
        self.raw(match (self.resp3(), b) {
            (true, true) => b"#t\r\n",
            (true, false) => b"#f\r\n",
            (false, true) => b":1\r\n",
            (false, false) => b":0\r\n",
        })
    }

    /// A double: `,text`, or a bulk string of the same text in RESP2. The text is the
    /// shortest that reads back as `d` (`1.5`, `0.1`, `3`, `1e21`, `inf`, `-inf`, `nan`).
    pub fn double(&mut self, d: f64) -> &mut Encoder {
        let text = double_text(d);
        if self.resp3() {
            self.line(b',', text.as_bytes())
        } else {
            self.bulk(text.as_bytes())
        }
    }

    /// A big number: `(digits`, or a bulk string of the digits in RESP2. `digits` is an
    /// optional `-` and decimal digits (not checked).
    pub fn big_number(&mut self, digits: &[u8]) -> &mut Encoder {
        if self.resp3() {
            self.line(b'(', digits)
        } else {
            self.bulk(digits)
        }
    }

    /// A verbatim string of `format` (`txt`, `mkd`): `=len format:text`, or a bulk string of
    /// the text alone in RESP2.
    pub fn verbatim(&mut self, format: &[u8; 3], text: &[u8]) -> &mut Encoder {
        if !self.resp3() {
            return self.bulk(text);
        }
        self.header(b'=', text.len().saturating_add(4));
        self.out.extend_from_slice(format);
        self.out.push(b':');
        self.out.extend_from_slice(text);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// Bytes already encoded in this protocol (a constant reply, a server's frame).
    pub fn raw(&mut self, frame: &[u8]) -> &mut Encoder {
        self.out.extend_from_slice(frame);
        self
    }

    fn header(&mut self, ty: u8, n: impl std::fmt::Display) -> &mut Encoder {
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{}{n}\r\n", ty as char);
        self
    }

    /// What has been written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.out
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// The shortest text that reads back as `d`, with an exponent only for very large or very
/// small magnitudes.
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "nan".to_string()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if d != 0.0 && !(1e-4..1e17).contains(&d.abs()) {
        format!("{d:e}")
    } else {
        format!("{d}")
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::super::reply::{ReplyDecoder, ReplyKind};
    use super::*;

    fn both(write: impl Fn(&mut Encoder) -> &mut Encoder) -> (Vec<u8>, Vec<u8>) {
        let mut three = Encoder::new(Protocol::Resp3);
        write(&mut three);
        let mut two = Encoder::new(Protocol::Resp2);
        write(&mut two);
        (three.finish(), two.finish())
    }

    /// `bytes` is exactly one reply of `kind` in `protocol`.
    fn one_reply(protocol: Protocol, bytes: &[u8]) -> ReplyKind {
        let mut buf = BytesMut::from(bytes);
        let reply = ReplyDecoder::with_protocol(1 << 20, protocol)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty(), "{}", bytes.escape_ascii());
        reply.kind
    }

    fn check(
        write: impl Fn(&mut Encoder) -> &mut Encoder,
        resp3: &[u8],
        kind3: ReplyKind,
        resp2: &[u8],
        kind2: ReplyKind,
    ) {
        let (three, two) = both(write);
        assert_eq!(
            three.escape_ascii().to_string(),
            resp3.escape_ascii().to_string()
        );
        assert_eq!(
            two.escape_ascii().to_string(),
            resp2.escape_ascii().to_string()
        );
        assert_eq!(one_reply(Protocol::Resp3, &three), kind3);
        assert_eq!(one_reply(Protocol::Resp2, &two), kind2);
    }

    #[test]
    fn every_type_and_its_resp2_fallback() {
        use ReplyKind::*;
        check(|e| e.null(), b"_\r\n", Null, b"$-1\r\n", Bulk);
        check(|e| e.null_array(), b"_\r\n", Null, b"*-1\r\n", Array);
        check(|e| e.boolean(true), b"#t\r\n", Boolean, b":1\r\n", Integer);
        check(|e| e.boolean(false), b"#f\r\n", Boolean, b":0\r\n", Integer);
        check(
            |e| e.double(2.25),
            b",2.25\r\n",
            Double,
            b"$4\r\n2.25\r\n",
            Bulk,
        );
        check(
            |e| e.big_number(b"1234567999999999999999999999999999999"),
            b"(1234567999999999999999999999999999999\r\n",
            BigNumber,
            b"$37\r\n1234567999999999999999999999999999999\r\n",
            Bulk,
        );
        check(
            |e| e.verbatim(b"txt", b"This is a verbatim\nstring"),
            b"=29\r\ntxt:This is a verbatim\nstring\r\n",
            Verbatim,
            b"$25\r\nThis is a verbatim\nstring\r\n",
            Bulk,
        );
        check(
            |e| e.map(2).bulk(b"a").integer(1).bulk(b"b").null(),
            b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n",
            Map,
            b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
            Array,
        );
        check(
            |e| e.set(3).integer(0).integer(1).integer(2),
            b"~3\r\n:0\r\n:1\r\n:2\r\n",
            Set,
            b"*3\r\n:0\r\n:1\r\n:2\r\n",
            Array,
        );
        check(
            |e| e.push(3).bulk(b"message").bulk(b"ch").bulk(b"hi"),
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            Push,
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            Array,
        );
        check(|e| e.map(0), b"%0\r\n", Map, b"*0\r\n", Array);
        // The same in both.
        check(|e| e.status(b"OK"), b"+OK\r\n", Status, b"+OK\r\n", Status);
        check(
            |e| e.error(b"ERR bad\r\nthing"),
            b"-ERR bad  thing\r\n",
            Error,
            b"-ERR bad  thing\r\n",
            Error,
        );
        check(
            |e| e.integer(-42),
            b":-42\r\n",
            Integer,
            b":-42\r\n",
            Integer,
        );
        check(|e| e.bulk(b""), b"$0\r\n\r\n", Bulk, b"$0\r\n\r\n", Bulk);
        check(
            |e| e.array(2).raw(b"+a\r\n").status(b"b"),
            b"*2\r\n+a\r\n+b\r\n",
            Array,
            b"*2\r\n+a\r\n+b\r\n",
            Array,
        );
    }

    #[test]
    fn nested_aggregates_fall_back_at_every_level() {
        let (three, two) = both(|e| {
            e.map(1)
                .bulk(b"k")
                .set(2)
                .map(1)
                .boolean(true)
                .double(0.5)
                .null_array()
        });
        assert_eq!(
            &three[..],
            b"%1\r\n$1\r\nk\r\n~2\r\n%1\r\n#t\r\n,0.5\r\n_\r\n"
        );
        assert_eq!(
            &two[..],
            b"*2\r\n$1\r\nk\r\n*2\r\n*2\r\n:1\r\n$3\r\n0.5\r\n*-1\r\n"
        );
        assert_eq!(one_reply(Protocol::Resp3, &three), ReplyKind::Map);
        assert_eq!(one_reply(Protocol::Resp2, &two), ReplyKind::Array);
    }

    #[test]
    fn doubles_read_back_exactly() {
        for (d, text) in [
            (1.5, "1.5"),
            (0.1, "0.1"),
            (3.0, "3"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1e21, "1e21"),
            (1.5e-7, "1.5e-7"),
            (-2.5e300, "-2.5e300"),
            (123456789.125, "123456789.125"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (f64::MAX, "1.7976931348623157e308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ] {
            assert_eq!(double_text(d), text);
            if d.is_finite() {
                assert_eq!(
                    text.parse::<f64>().unwrap().to_bits(),
                    d.to_bits(),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn protocol_and_bytes_so_far() {
        let mut e = Encoder::new(Protocol::Resp3);
        assert_eq!(e.protocol(), Protocol::Resp3);
        e.array(1);
        assert_eq!(e.as_bytes(), b"*1\r\n");
        assert_eq!(
            Encoder::new(Protocol::default()).protocol(),
            Protocol::Resp2
        );
    }
}
