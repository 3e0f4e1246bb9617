//! RESP request decoding: one complete request at a time, zero-copy over the client's buffer.
//!
//! The decoder never allocates for a length the peer only declared, and it resumes where it
//! stopped when a request arrives in several reads.
//!
//! Contract with the caller: between two calls that returned `Ok(None)`, the caller may only
//! *append* to the buffer (e.g. `read_buf`). The decoder remembers offsets into it. After an
//! `Err` the stream cannot be resynchronised; the decoder resets itself, but the connection
//! should be closed.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

/// The longest header line (`*N` or `$N`, type byte and digits, without CRLF) accepted.
/// A longer line without CRLF is an error rather than something to wait for.
pub(super) const MAX_HEADER_LINE: usize = 32;

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest whole request, in bytes (declared or real).
    pub max_request_bytes: usize,
    /// The most arguments in one request.
    pub max_args: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
        }
    }
}

/// A byte shown in an error message: printable ASCII as is, anything else as `\xHH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShownByte(pub u8);

impl fmt::Display for ShownByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (0x20..=0x7e).contains(&self.0) {
            write!(f, "{}", self.0 as char)
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

fn shown(b: &u8) -> ShownByte {
    ShownByte(*b)
}

/// Malformed framing. `Display` is the text after `-ERR ` in the reply to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A request did not start with `*` (inline commands are not accepted).
    #[error("Protocol error: expected '*', got '{}'", shown(.0))]
    ExpectedArray(u8),
    /// An argument did not start with `$`.
    #[error("Protocol error: expected '$', got '{}'", shown(.0))]
    ExpectedBulk(u8),
    /// A `*N` line that is not a number, is negative (other than -1) or exceeds the limits.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$N` line that is not a number, is negative (-1 is allowed in replies only) or exceeds
    /// the limits.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A `*N` line longer than [`MAX_HEADER_LINE`] without CRLF.
    #[error("Protocol error: too big mbulk count string")]
    MultibulkCountTooBig,
    /// A `$N` line longer than [`MAX_HEADER_LINE`] without CRLF.
    #[error("Protocol error: too big bulk count string")]
    BulkCountTooBig,
    /// Bulk data not followed by CRLF, or a CR not followed by LF in a line.
    #[error("Protocol error: expected CRLF")]
    ExpectedCrlf,
    /// The request's declared size exceeds `Limits::max_request_bytes`.
    #[error("Protocol error: request too large")]
    RequestTooLarge,
    /// A reply starting with a byte other than `+ - : $ *`.
    #[error("Protocol error: invalid reply type '{}'", shown(.0))]
    InvalidReplyType(u8),
    /// A `:` line that is not an integer.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// The reply's declared size exceeds the decoder's `max_reply_bytes`.
    #[error("Protocol error: reply too large")]
    ReplyTooLarge,
}

/// Whether `s` can begin a length as Redis's `string2ll` accepts it: an optional `-`, then
/// digits without a leading zero (`0` alone is fine, `-0` is not).
pub(super) fn strict_prefix_ok(s: &[u8]) -> bool {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    match digits.first() {
        Some(b'0') => digits.len() == 1 && digits.len() == s.len(),
        _ => true,
    }
}

/// Parses a complete length accepted by [`strict_prefix_ok`]; `None` on bad syntax or overflow.
pub(super) fn strict_parse(s: &[u8]) -> Option<i64> {
    if !strict_prefix_ok(s) {
        return None;
    }
    let (neg, digits) = match s.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Scans a header line whose type byte is at `buf[start]`.
///
/// Returns `Ok(Some((cr, next)))` when the line is complete (`cr` is the index of its CR,
/// `next` the index after its LF), `Ok(None)` when more bytes are needed. The text between the
/// type byte and the CR is checked with `syntax` as it arrives, so bad lines fail early; a line
/// longer than [`MAX_HEADER_LINE`] without CR fails with `too_big`.
pub(super) fn scan_line(
    buf: &[u8],
    start: usize,
    syntax: fn(&[u8]) -> bool,
    invalid: ProtocolError,
    too_big: ProtocolError,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    let body = start + 1;
    let limit = buf.len().min(start + MAX_HEADER_LINE + 1);
    let window = buf.get(body..limit).unwrap_or(&[]);
    match window.iter().position(|&b| b == b'\r') {
        Some(k) => {
            let cr = body + k;
            if !syntax(&window[..k]) {
                return Err(invalid);
            }
            match buf.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some((cr, cr + 2))),
                Some(_) => Err(invalid),
            }
        }
        None => {
            if !syntax(window) {
                Err(invalid)
            } else if limit == start + MAX_HEADER_LINE + 1 {
                Err(too_big)
            } else {
                Ok(None)
            }
        }
    }
}

/// One complete RESP request (an array of bulk strings), byte for byte as the client sent it.
///
/// Holds the frame (shared, zero copy) plus the number of arguments and the positions of the
/// first three arguments; later arguments are found by walking the already validated frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    frame: Bytes,
    argc: usize,
    /// `(offset, len)` in `frame` of the data of arguments 0, 1, 2 (unused entries are 0,0).
    spans: [(usize, usize); 3],
}

impl Request {
    /// The whole request, exactly as received.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
    /// The whole request, exactly as received, by value.
    pub fn into_frame(self) -> Bytes {
        self.frame
    }
    /// The number of arguments, command name included.
    pub fn argc(&self) -> usize {
        self.argc
    }
    /// Argument `i` (0 is the command name); O(1) for the first three.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        if i >= self.argc {
            return None;
        }
        if i < 3 {
            let (off, len) = self.spans[i];
            return self.frame.get(off..off.checked_add(len)?);
        }
        self.args().nth(i)
    }
    /// Argument `i` as a zero-copy slice of the frame.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        let arg = self.arg(i)?;
        Some(self.frame.slice_ref(arg))
    }
    /// Every argument in order.
    pub fn args(&self) -> Args<'_> {
        Args {
            req: self,
            i: 0,
            pos: 0,
        }
    }
}

/// Iterator over a request's arguments, from [`Request::args`].
#[derive(Clone, Debug)]
pub struct Args<'a> {
    req: &'a Request,
    i: usize,
    /// Offset in the frame just after the previous argument's CRLF.
    pos: usize,
}

impl<'a> Args<'a> {
    fn walk(&mut self) -> Option<&'a [u8]> {
        let frame: &'a [u8] = &self.req.frame;
        if self.i < 3 {
            let (off, len) = self.req.spans[self.i];
            let end = off.checked_add(len)?;
            self.pos = end.checked_add(2)?;
            return frame.get(off..end);
        }
        if frame.get(self.pos) != Some(&b'$') {
            return None;
        }
        let (cr, next) = scan_line(
            frame,
            self.pos,
            strict_prefix_ok,
            ProtocolError::InvalidBulkLength,
            ProtocolError::BulkCountTooBig,
        )
        .ok()??;
        let len = usize::try_from(strict_parse(&frame[self.pos + 1..cr])?).ok()?;
        let end = next.checked_add(len)?;
        self.pos = end.checked_add(2)?;
        frame.get(next..end)
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.i >= self.req.argc {
            return None;
        }
        match self.walk() {
            Some(arg) => {
                self.i += 1;
                Some(arg)
            }
            None => {
                // Cannot happen for a frame the decoder validated; stop rather than loop.
                self.i = self.req.argc;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.req.argc.saturating_sub(self.i);
        (0, Some(left))
    }
}

/// Decodes requests from a client's read buffer, keeping progress across partial reads.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    /// A request header has been read and arguments are being read.
    active: bool,
    /// Declared argument count of the request in progress.
    argc: usize,
    /// Arguments completely read so far.
    done: usize,
    /// Offset in the buffer of the next unread argument header.
    pos: usize,
    spans: [(usize, usize); 3],
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> RequestDecoder {
        RequestDecoder {
            limits,
            ..RequestDecoder::default()
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether part of a request has been read (useful to tell a clean EOF from a truncated one).
    pub fn in_progress(&self) -> bool {
        self.active
    }

    fn reset(&mut self) {
        self.active = false;
        self.argc = 0;
        self.done = 0;
        self.pos = 0;
        self.spans = [(0, 0); 3];
    }

    /// `Ok(Some(request))` consumes one request from the front of `buf`; `Ok(None)` needs more
    /// bytes; `Err` means the stream cannot be resynchronised.
    ///
    /// `*0` and `*-1` are consumed and skipped, as Redis does.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if self.active && self.pos > buf.len() {
            // The caller shrank the buffer behind our back; start over rather than misread.
            self.reset();
        }
        let max_bytes = self.limits.max_request_bytes;
        while !self.active {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'*' {
                return Err(ProtocolError::ExpectedArray(first));
            }
            let Some((cr, next)) = scan_line(
                buf,
                0,
                strict_prefix_ok,
                ProtocolError::InvalidMultibulkLength,
                ProtocolError::MultibulkCountTooBig,
            )?
            else {
                return Ok(None);
            };
            let n = strict_parse(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if n == 0 || n == -1 {
                buf.advance(next);
                continue;
            }
            let argc = usize::try_from(n).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
            if argc > self.limits.max_args {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            if next > max_bytes {
                return Err(ProtocolError::RequestTooLarge);
            }
            self.active = true;
            self.argc = argc;
            self.done = 0;
            self.pos = next;
        }

        while self.done < self.argc {
            let start = self.pos;
            let Some(&first) = buf.get(start) else {
                return Ok(None);
            };
            if first != b'$' {
                return Err(ProtocolError::ExpectedBulk(first));
            }
            let Some((cr, next)) = scan_line(
                buf,
                start,
                strict_prefix_ok,
                ProtocolError::InvalidBulkLength,
                ProtocolError::BulkCountTooBig,
            )?
            else {
                return Ok(None);
            };
            let len = strict_parse(&buf[start + 1..cr])
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(ProtocolError::InvalidBulkLength)?;
            if len > max_bytes {
                return Err(ProtocolError::InvalidBulkLength);
            }
            let end = next
                .checked_add(len)
                .and_then(|e| e.checked_add(2))
                .ok_or(ProtocolError::RequestTooLarge)?;
            if end > max_bytes {
                return Err(ProtocolError::RequestTooLarge);
            }
            if buf.len() < end {
                // Resume here: only this header is re-read next time, never earlier arguments.
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(ProtocolError::ExpectedCrlf);
            }
            if let Some(span) = self.spans.get_mut(self.done) {
                *span = (next, len);
            }
            self.done += 1;
            self.pos = end;
        }

        let frame = buf.split_to(self.pos).freeze();
        let request = Request {
            frame,
            argc: self.argc,
            spans: self.spans,
        };
        self.reset();
        Ok(Some(request))
    }
}

/// Test helpers shared by the codec's tests.
#[cfg(test)]
pub(super) mod testutil {
    /// A tiny deterministic xorshift64* generator.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform-ish in `0..n` (n > 0).
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    /// Serialises a request as a RESP array of bulk strings.
    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{encode, Rng};
    use super::*;

    fn dec() -> RequestDecoder {
        RequestDecoder::new(Limits::default())
    }

    /// Decodes everything in one buffer: the requests, then the final outcome.
    fn decode_all(
        d: &mut RequestDecoder,
        input: &[u8],
    ) -> (Vec<Request>, Result<(), ProtocolError>, usize) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, Ok(()), buf.len()),
                Err(e) => return (out, Err(e), buf.len()),
            }
        }
    }

    fn one(input: &[u8]) -> Result<Option<Request>, ProtocolError> {
        dec().decode(&mut BytesMut::from(input))
    }

    fn args_of(r: &Request) -> Vec<Vec<u8>> {
        r.args().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn simple_get() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n"[..]);
        let r = dec().decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(r.argc(), 2);
        assert_eq!(r.arg(0), Some(&b"GET"[..]));
        assert_eq!(r.arg(1), Some(&b"foo"[..]));
        assert_eq!(r.arg(2), None);
        assert_eq!(r.arg(3), None);
        assert_eq!(&r.frame()[..], b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n");
        assert_eq!(args_of(&r), vec![b"GET".to_vec(), b"foo".to_vec()]);
        assert_eq!(r.arg_bytes(1).unwrap(), Bytes::from_static(b"foo"));
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let mut input = encode(&[b"SET", b"k", b"v"]);
        input.extend(encode(&[b"GET", b"k"]));
        input.extend(encode(&[b"DEL", b"a", b"b", b"c", b"d"]));
        input.extend_from_slice(b"*1\r\n$4\r\nPI"); // incomplete tail
        let mut d = dec();
        let (reqs, end, left) = decode_all(&mut d, &input);
        assert_eq!(end, Ok(()));
        assert_eq!(left, 10);
        assert!(d.in_progress());
        assert_eq!(reqs.len(), 3);
        assert_eq!(
            args_of(&reqs[0]),
            vec![b"SET".to_vec(), b"k".to_vec(), b"v".to_vec()]
        );
        assert_eq!(args_of(&reqs[1]), vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(
            args_of(&reqs[2]),
            vec![
                b"DEL".to_vec(),
                b"a".to_vec(),
                b"b".to_vec(),
                b"c".to_vec(),
                b"d".to_vec()
            ]
        );
        assert_eq!(reqs[2].arg(4), Some(&b"d"[..]));
        assert_eq!(&reqs[1].frame()[..], &encode(&[b"GET", b"k"])[..]);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut input = encode(&[b"MSET", b"k1", b"v\r\n1", b"", b"\0\0", b"k3", b"v3"]);
        input.extend_from_slice(b"*0\r\n*-1\r\n");
        input.extend(encode(&[b"GET", b"x"]));
        let (whole, end, _) = decode_all(&mut dec(), &input);
        assert_eq!(end, Ok(()));
        assert_eq!(whole.len(), 2);
        for cut in 0..=input.len() {
            let mut d = dec();
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = Vec::new();
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
            assert_eq!(got, whole, "cut at {cut}");
            assert!(buf.is_empty());
        }
        // And one byte at a time.
        let mut d = dec();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &input {
            buf.extend_from_slice(&[b]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn binary_safe_and_empty_args() {
        let args: [&[u8]; 6] = [b"SET", b"a\r\nb", b"\0", b"", b"\r", b"\n$3\r\n"];
        let r = one(&encode(&args)).unwrap().unwrap();
        assert_eq!(r.argc(), 6);
        for (i, a) in args.iter().enumerate() {
            assert_eq!(r.arg(i), Some(*a), "arg {i}");
        }
        let collected: Vec<&[u8]> = r.args().collect();
        assert_eq!(collected, args.to_vec());
        let r = one(b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n").unwrap().unwrap();
        assert_eq!(r.arg(1), Some(&b""[..]));
    }

    #[test]
    fn arg_and_args_agree() {
        let names: Vec<Vec<u8>> = (0..50).map(|i| format!("arg{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let r = one(&encode(&refs)).unwrap().unwrap();
        assert_eq!(r.argc(), 50);
        let via_iter: Vec<&[u8]> = r.args().collect();
        let via_index: Vec<&[u8]> = (0..50).map(|i| r.arg(i).unwrap()).collect();
        assert_eq!(via_iter, refs);
        assert_eq!(via_index, refs);
        assert_eq!(r.arg(50), None);
    }

    #[test]
    fn empty_and_null_arrays_are_skipped() {
        let mut d = dec();
        let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*0\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert!(!d.in_progress());
        let mut buf = BytesMut::from(&b"*0\r\n*1\r\n$4\r\nPING\r\n*0\r\n"[..]);
        let r = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&r.frame()[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(&buf[..], b"*0\r\n");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_leaves_buffer_untouched() {
        for input in [
            &b"*"[..],
            b"*2",
            b"*2\r",
            b"*2\r\n$3",
            b"*2\r\n$3\r\nGE",
            b"*2\r\n$3\r\nGET\r",
        ] {
            let mut buf = BytesMut::from(input);
            assert_eq!(dec().decode(&mut buf), Ok(None));
            assert_eq!(&buf[..], input);
        }
    }

    #[test]
    fn error_texts() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError, &str)] = &[
            (
                b"GET foo\r\n",
                ExpectedArray(b'G'),
                "Protocol error: expected '*', got 'G'",
            ),
            (
                b"\0",
                ExpectedArray(0),
                "Protocol error: expected '*', got '\\x00'",
            ),
            (
                b"\r\n",
                ExpectedArray(b'\r'),
                "Protocol error: expected '*', got '\\x0d'",
            ),
            (
                b"*1\r\n:1\r\n",
                ExpectedBulk(b':'),
                "Protocol error: expected '$', got ':'",
            ),
            (
                b"*1\r\n\xff",
                ExpectedBulk(0xff),
                "Protocol error: expected '$', got '\\xff'",
            ),
            (
                b"*x\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*-2\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*01\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*+1\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*1\rx",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*1 ",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*99999999999\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*99999999999999999999\r\n",
                InvalidMultibulkLength,
                "Protocol error: invalid multibulk length",
            ),
            (
                b"*1\r\n$x\r\n",
                InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$\r\n",
                InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$-1\r\n",
                InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$-0\r\n",
                InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$9999999999999\r\n",
                InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$99999999999999999999999\r\n",
                InvalidBulkLength,
                "Protocol error: invalid bulk length",
            ),
            (
                b"*111111111111111111111111111111111",
                MultibulkCountTooBig,
                "Protocol error: too big mbulk count string",
            ),
            (
                b"*1\r\n$111111111111111111111111111111111",
                BulkCountTooBig,
                "Protocol error: too big bulk count string",
            ),
            (
                b"*1\r\n$3\r\nGETxx",
                ExpectedCrlf,
                "Protocol error: expected CRLF",
            ),
            (
                b"*1\r\n$3\r\nGET\n\r",
                ExpectedCrlf,
                "Protocol error: expected CRLF",
            ),
        ];
        for (input, err, text) in cases {
            let got = one(input);
            assert_eq!(
                got.as_ref(),
                Err(err),
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(err.to_string(), *text);
        }
        assert_eq!(
            RequestTooLarge.to_string(),
            "Protocol error: request too large"
        );
    }

    #[test]
    fn header_line_limit_is_32_bytes() {
        // 31 digits-ish after the type byte with no CR yet: still waiting only if the syntax
        // could become valid; a 32-byte line can still end with CRLF.
        let mut line = b"*1".to_vec();
        line.extend(std::iter::repeat_n(b'1', 30)); // 32 bytes, no CR yet
        assert_eq!(one(&line), Ok(None));
        line.push(b'1'); // 33 bytes, no CR
        assert_eq!(one(&line), Err(ProtocolError::MultibulkCountTooBig));
        // A 32-byte line that does end in CRLF is parsed (and here overflows).
        let mut line = b"*1".to_vec();
        line.extend(std::iter::repeat_n(b'1', 30));
        line.extend_from_slice(b"\r\n");
        assert_eq!(one(&line), Err(ProtocolError::InvalidMultibulkLength));
    }

    #[test]
    fn huge_declared_lengths_fail_immediately() {
        // Declared, never sent: must fail now, not wait.
        assert_eq!(
            one(b"*99999999999\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            one(b"*2\r\n$9999999999999\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        let limits = Limits {
            max_request_bytes: 100,
            max_args: 3,
        };
        let mut d = RequestDecoder::new(limits);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*4\r\n"[..])),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(d.decode(&mut BytesMut::from(&b"*3\r\n"[..])), Ok(None));
        let mut d = RequestDecoder::new(limits);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*1\r\n$101\r\n"[..])),
            Err(ProtocolError::InvalidBulkLength)
        );
        // 4 + 5 + 89 + 2 = 100: fits exactly.
        let mut d = RequestDecoder::new(limits);
        let mut buf = BytesMut::from(&b"*1\r\n$89\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[b'x'; 89]);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().frame().len(), 100);
        // Cumulative: 4 + 8 + 5 + 85 + 2 = 104 > 100, though 85 alone is fine.
        let mut d = RequestDecoder::new(limits);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*2\r\n$2\r\nab\r\n$85\r\n"[..])),
            Err(ProtocolError::RequestTooLarge)
        );
    }

    #[test]
    fn default_limits_accept_large_values() {
        // 1 MB value arriving in 16 KB reads: decoded once complete.
        let value = vec![b'v'; 1 << 20];
        let input = encode(&[b"SET", b"key", &value]);
        let mut d = dec();
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in input.chunks(16 * 1024) {
            buf.extend_from_slice(chunk);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                assert!(got.is_none());
                got = Some(r);
            }
        }
        let r = got.unwrap();
        assert_eq!(r.arg(2).unwrap().len(), 1 << 20);
        assert!(buf.is_empty());
    }

    #[test]
    fn progress_is_kept_across_reads() {
        // MSET with 10,000 pairs fed in small pieces; the decoder's saved offset only grows.
        let keys: Vec<Vec<u8>> = (0..20_000).map(|i| format!("k{i}").into_bytes()).collect();
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        args.extend(keys.iter().map(Vec::as_slice));
        let input = encode(&args);
        let mut d = dec();
        let mut buf = BytesMut::new();
        let mut last_pos = 0;
        let mut got = None;
        for chunk in input.chunks(1000) {
            buf.extend_from_slice(chunk);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                got = Some(r);
            } else {
                assert!(d.pos >= last_pos);
                assert!(d.pos + 64 >= buf.len(), "pos {} len {}", d.pos, buf.len());
                last_pos = d.pos;
            }
        }
        let r = got.unwrap();
        assert_eq!(r.argc(), 20_001);
        assert_eq!(r.arg(20_000), Some(&b"k19999"[..]));
        assert_eq!(r.args().count(), 20_001);
    }

    #[test]
    fn decoder_is_reusable_after_error() {
        let mut d = dec();
        assert!(d.decode(&mut BytesMut::from(&b"*1\r\n$x\r\n"[..])).is_err());
        assert!(!d.in_progress());
        let r = d.decode(&mut BytesMut::from(&b"*1\r\n$4\r\nPING\r\n"[..]));
        assert_eq!(r.unwrap().unwrap().arg(0), Some(&b"PING"[..]));
    }

    #[test]
    fn shrunk_buffer_does_not_panic() {
        let mut d = dec();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nf"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        let mut other = BytesMut::from(&b"*1"[..]);
        assert_eq!(d.decode(&mut other), Ok(None));
    }

    #[test]
    fn strict_number_syntax() {
        assert_eq!(strict_parse(b"0"), Some(0));
        assert_eq!(strict_parse(b"-1"), Some(-1));
        assert_eq!(strict_parse(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(strict_parse(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(strict_parse(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"-0", b"00", b"01", b"+1", b"1a", b" 1"] {
            assert_eq!(strict_parse(bad), None, "{bad:?}");
        }
        assert!(strict_prefix_ok(b""));
        assert!(strict_prefix_ok(b"-"));
        assert!(!strict_prefix_ok(b"0 "));
    }

    /// Random and mutated-valid inputs in random chunkings: no panic, and the chunked run gives
    /// exactly the result of the one-piece run, frames being the consumed bytes in order.
    #[test]
    fn fuzz_smoke() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut stats = [0usize; 3]; // requests, errors, ended incomplete
        for _ in 0..10_000 {
            let input = random_input(&mut rng);
            let limits = if rng.chance(10) {
                Limits {
                    max_request_bytes: rng.below(200),
                    max_args: rng.below(8),
                }
            } else {
                Limits::default()
            };
            let (n, end) = check_chunked(&input, limits, &mut rng);
            stats[0] += n;
            stats[usize::from(end.is_ok()) + 1] += 1;
        }
        // The generator really exercises every outcome.
        assert!(
            stats[0] > 4_000 && stats[1] > 2_000 && stats[2] > 1_000,
            "{stats:?}"
        );
    }

    fn random_input(rng: &mut Rng) -> Vec<u8> {
        const ALPHABET: &[u8] = b"*$\r\n0123456789-+:xA\0";
        let mut v = Vec::new();
        if rng.chance(30) {
            for _ in 0..rng.below(64) {
                v.push(if rng.chance(80) {
                    ALPHABET[rng.below(ALPHABET.len())]
                } else {
                    rng.next() as u8
                });
            }
            return v;
        }
        for _ in 0..1 + rng.below(4) {
            match rng.below(10) {
                0 => v.extend_from_slice(b"*0\r\n"),
                1 => v.extend_from_slice(b"*-1\r\n"),
                _ => {
                    let argc = 1 + rng.below(6);
                    let args: Vec<Vec<u8>> = (0..argc)
                        .map(|_| (0..rng.below(12)).map(|_| rng.next() as u8).collect())
                        .collect();
                    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    v.extend(encode(&refs));
                }
            }
        }
        for _ in 0..rng.below(4) {
            if v.is_empty() {
                break;
            }
            let at = rng.below(v.len());
            match rng.below(4) {
                0 => v[at] = ALPHABET[rng.below(ALPHABET.len())],
                1 => v[at] = rng.next() as u8,
                2 => {
                    v.remove(at);
                }
                _ => v.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            }
        }
        if rng.chance(20) {
            let keep = rng.below(v.len() + 1);
            v.truncate(keep);
        }
        v
    }

    fn is_skips(mut s: &[u8]) -> bool {
        while !s.is_empty() {
            if let Some(rest) = s.strip_prefix(b"*0\r\n") {
                s = rest;
            } else if let Some(rest) = s.strip_prefix(b"*-1\r\n") {
                s = rest;
            } else {
                return false;
            }
        }
        true
    }

    fn check_chunked(
        input: &[u8],
        limits: Limits,
        rng: &mut Rng,
    ) -> (usize, Result<(), ProtocolError>) {
        let (whole, whole_end, _) = decode_all(&mut RequestDecoder::new(limits), input);
        let mut d = RequestDecoder::new(limits);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut got = Vec::new();
        let mut end = Ok(());
        'outer: while fed < input.len() {
            let n = 1 + rng.below(input.len() - fed).min(rng.below(40));
            buf.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            loop {
                let before = fed - buf.len();
                match d.decode(&mut buf) {
                    Ok(Some(r)) => {
                        let after = fed - buf.len();
                        let start = after - r.frame().len();
                        assert_eq!(&input[start..after], &r.frame()[..]);
                        assert!(is_skips(&input[before..start]));
                        let all: Vec<&[u8]> = r.args().collect();
                        assert_eq!(all.len(), r.argc());
                        for (i, a) in all.iter().enumerate() {
                            assert_eq!(r.arg(i), Some(*a));
                        }
                        got.push(r);
                    }
                    Ok(None) => {
                        assert!(is_skips(&input[before..fed - buf.len()]));
                        break;
                    }
                    Err(e) => {
                        end = Err(e);
                        break 'outer;
                    }
                }
            }
        }
        assert_eq!(got, whole, "input {:?}", input.escape_ascii().to_string());
        assert_eq!(
            end,
            whole_end,
            "input {:?}",
            input.escape_ascii().to_string()
        );
        (got.len(), end)
    }
}
