//! RESP reply decoding for backend connections: one complete reply (any RESP2 shape, nested
//! arrays included) at a time, zero-copy, resuming across partial reads. No I/O.
//!
//! Nesting needs no recursion and no stack: the decoder keeps one counter of values still to
//! read. It starts at 1; every value read takes one off, and an array header of `n` adds `n`.
//! The reply is complete when the counter reaches 0.
//!
//! Contract with the caller: as for the request decoder, between calls that returned
//! `Ok(None)` the buffer may only be appended to.

use bytes::{Bytes, BytesMut};

pub use super::request::ProtocolError;
use super::request::{scan_line, strict_parse, strict_prefix_ok};

/// The default bound on one reply: 1 GiB.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024 * 1024;

/// The smallest possible encoded value (`+\r\n`), used to bound declared array sizes.
const MIN_VALUE_BYTES: usize = 3;

/// The type of a reply, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Status,
    Error,
    Integer,
    Bulk,
    Array,
}

impl ReplyKind {
    /// The kind a RESP2 type byte announces.
    pub fn from_byte(b: u8) -> Option<ReplyKind> {
        match b {
            b'+' => Some(ReplyKind::Status),
            b'-' => Some(ReplyKind::Error),
            b':' => Some(ReplyKind::Integer),
            b'$' => Some(ReplyKind::Bulk),
            b'*' => Some(ReplyKind::Array),
            _ => None,
        }
    }
}

/// One complete reply, byte for byte as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub frame: Bytes,
}

impl Reply {
    /// For an error reply, its first word without the `-` (e.g. `ERR`, `OOM`, `BUSY`,
    /// `LOADING`, `WRONGTYPE`); `None` for other kinds.
    pub fn error_word(&self) -> Option<&[u8]> {
        if self.kind != ReplyKind::Error {
            return None;
        }
        let text = self.frame.get(1..)?;
        let end = text
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(text.len());
        Some(&text[..end])
    }

    /// Whether this is a null bulk (`$-1`) or null array (`*-1`).
    pub fn is_null(&self) -> bool {
        &self.frame[..] == b"$-1\r\n" || &self.frame[..] == b"*-1\r\n"
    }
}

/// Syntax of an integer reply as it arrives: an optional `-`, then digits.
fn integer_prefix_ok(s: &[u8]) -> bool {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    digits.iter().all(u8::is_ascii_digit)
}

/// Decodes replies from a backend's read buffer.
#[derive(Debug)]
pub struct ReplyDecoder {
    max_reply_bytes: usize,
    /// Values still to read in the reply in progress; 0 when idle.
    pending: usize,
    /// Offset in the buffer of the first value not yet completely read.
    pos: usize,
    /// For a status/error line in progress: where to resume looking for its CR.
    scan: usize,
    /// When the last call stopped inside a bulk's data: the buffer length that completes it.
    want: usize,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        ReplyDecoder::new(DEFAULT_MAX_REPLY_BYTES)
    }
}

impl ReplyDecoder {
    /// A decoder that rejects any reply larger than `max_reply_bytes` (declared or real).
    pub fn new(max_reply_bytes: usize) -> ReplyDecoder {
        ReplyDecoder {
            max_reply_bytes,
            pending: 0,
            pos: 0,
            scan: 0,
            want: 0,
        }
    }

    /// Whether part of a reply has been read.
    pub fn in_progress(&self) -> bool {
        self.pending > 0
    }

    /// After `decode` returned `Ok(None)`: the length the buffer must reach before the reply
    /// can progress, when a bulk header has declared it (never more than the reply bound);
    /// 0 when unknown. Lets the caller make room for a large value in one step.
    pub fn bytes_wanted(&self) -> usize {
        self.want
    }

    fn reset(&mut self) {
        self.pending = 0;
        self.pos = 0;
        self.scan = 0;
    }

    /// `Ok(Some(reply))` consumes one reply from the front of `buf`; `Ok(None)` needs more
    /// bytes (the buffer is untouched); `Err` means the stream cannot be resynchronised.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        self.want = 0;
        if self.pending > 0 && self.pos > buf.len() {
            // The caller shrank the buffer behind our back; start over rather than misread.
            self.reset();
        }
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let kind = ReplyKind::from_byte(first).ok_or(ProtocolError::InvalidReplyType(first))?;
        if self.pending == 0 {
            self.pending = 1;
            self.pos = 0;
            self.scan = 0;
        }
        let max = self.max_reply_bytes;
        while self.pending > 0 {
            let start = self.pos;
            let Some(&ty) = buf.get(start) else {
                return Ok(None);
            };
            // `next` is where the value just read ends; `added` the values its header declares.
            let (next, added) = match ty {
                b'+' | b'-' => {
                    let from = self.scan.max(start + 1);
                    let rest = buf.get(from..).unwrap_or(&[]);
                    match rest.iter().position(|&b| b == b'\r') {
                        None => {
                            self.scan = buf.len();
                            if buf.len().saturating_add(2) > max {
                                return Err(ProtocolError::ReplyTooLarge);
                            }
                            return Ok(None);
                        }
                        Some(k) => {
                            let cr = from + k;
                            if cr + 2 > max {
                                return Err(ProtocolError::ReplyTooLarge);
                            }
                            match buf.get(cr + 1) {
                                None => {
                                    self.scan = cr;
                                    return Ok(None);
                                }
                                Some(b'\n') => (cr + 2, 0),
                                Some(_) => return Err(ProtocolError::ExpectedCrlf),
                            }
                        }
                    }
                }
                b':' => {
                    let Some((cr, next)) = scan_line(
                        buf,
                        start,
                        integer_prefix_ok,
                        ProtocolError::InvalidInteger,
                        ProtocolError::InvalidInteger,
                    )?
                    else {
                        return Ok(None);
                    };
                    if cr == start + 1 || &buf[start + 1..cr] == b"-" {
                        return Err(ProtocolError::InvalidInteger);
                    }
                    (next, 0)
                }
                b'$' => {
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
                    match strict_parse(&buf[start + 1..cr]) {
                        Some(-1) => (next, 0),
                        Some(n) if n >= 0 => {
                            let len =
                                usize::try_from(n).map_err(|_| ProtocolError::ReplyTooLarge)?;
                            let end = next
                                .checked_add(len)
                                .and_then(|e| e.checked_add(2))
                                .ok_or(ProtocolError::ReplyTooLarge)?;
                            if end > max {
                                return Err(ProtocolError::ReplyTooLarge);
                            }
                            if buf.len() < end {
                                self.want = end;
                                return Ok(None);
                            }
                            if &buf[end - 2..end] != b"\r\n" {
                                return Err(ProtocolError::ExpectedCrlf);
                            }
                            (end, 0)
                        }
                        _ => return Err(ProtocolError::InvalidBulkLength),
                    }
                }
                b'*' => {
                    let Some((cr, next)) = scan_line(
                        buf,
                        start,
                        strict_prefix_ok,
                        ProtocolError::InvalidMultibulkLength,
                        ProtocolError::MultibulkCountTooBig,
                    )?
                    else {
                        return Ok(None);
                    };
                    match strict_parse(&buf[start + 1..cr]) {
                        Some(-1) => (next, 0),
                        Some(n) if n >= 0 => {
                            let n = usize::try_from(n).map_err(|_| ProtocolError::ReplyTooLarge)?;
                            // Every value still to come needs at least MIN_VALUE_BYTES.
                            let still = (self.pending - 1)
                                .checked_add(n)
                                .ok_or(ProtocolError::ReplyTooLarge)?;
                            if next > max || still > (max - next) / MIN_VALUE_BYTES {
                                return Err(ProtocolError::ReplyTooLarge);
                            }
                            (next, n)
                        }
                        _ => return Err(ProtocolError::InvalidMultibulkLength),
                    }
                }
                other => return Err(ProtocolError::InvalidReplyType(other)),
            };
            if next > max {
                return Err(ProtocolError::ReplyTooLarge);
            }
            self.pending = self.pending - 1 + added;
            self.pos = next;
            self.scan = 0;
        }
        let frame = buf.split_to(self.pos).freeze();
        self.reset();
        Ok(Some(Reply { kind, frame }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::testutil::Rng;
    use super::*;

    fn decode_all(
        d: &mut ReplyDecoder,
        input: &[u8],
    ) -> (Vec<Reply>, Result<(), ProtocolError>, usize) {
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

    fn one(input: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        ReplyDecoder::default().decode(&mut BytesMut::from(input))
    }

    fn whole(input: &[u8]) -> Reply {
        let mut buf = BytesMut::from(input);
        let r = ReplyDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "leftover {:?}", &buf[..]);
        assert_eq!(&r.frame[..], input);
        r
    }

    #[test]
    fn every_kind() {
        assert_eq!(whole(b"+OK\r\n").kind, ReplyKind::Status);
        assert_eq!(whole(b"+\r\n").kind, ReplyKind::Status);
        assert_eq!(whole(b"-ERR unknown command\r\n").kind, ReplyKind::Error);
        assert_eq!(whole(b":0\r\n").kind, ReplyKind::Integer);
        assert_eq!(whole(b":-42\r\n").kind, ReplyKind::Integer);
        assert_eq!(whole(b"$3\r\nfoo\r\n").kind, ReplyKind::Bulk);
        assert_eq!(whole(b"$0\r\n\r\n").kind, ReplyKind::Bulk);
        assert_eq!(whole(b"$5\r\na\r\n\0b\r\n").kind, ReplyKind::Bulk);
        assert!(whole(b"$-1\r\n").is_null());
        assert!(whole(b"*-1\r\n").is_null());
        assert!(!whole(b"*0\r\n").is_null());
        assert_eq!(whole(b"*0\r\n").kind, ReplyKind::Array);
        assert_eq!(whole(b"*2\r\n$1\r\na\r\n$-1\r\n").kind, ReplyKind::Array);
    }

    #[test]
    fn nested_arrays() {
        let r = whole(b"*2\r\n*1\r\n:1\r\n$-1\r\n");
        assert_eq!(r.kind, ReplyKind::Array);
        whole(b"*3\r\n*0\r\n*-1\r\n*2\r\n*1\r\n*1\r\n+deep\r\n-ERR x\r\n");
        // 10,000 levels deep: no recursion, no stack.
        let mut deep = b"*1\r\n".repeat(10_000);
        deep.extend_from_slice(b":7\r\n");
        whole(&deep);
    }

    #[test]
    fn pipelined_replies() {
        let input = b"+OK\r\n:1\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n-ERR no\r\n$3\r\nab";
        let (replies, end, left) = decode_all(&mut ReplyDecoder::default(), input);
        assert_eq!(end, Ok(()));
        assert_eq!(left, 6);
        let frames: Vec<&[u8]> = replies.iter().map(|r| &r.frame[..]).collect();
        assert_eq!(
            frames,
            vec![
                &b"+OK\r\n"[..],
                b":1\r\n",
                b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
                b"-ERR no\r\n"
            ]
        );
        assert_eq!(replies[3].error_word(), Some(&b"ERR"[..]));
        assert_eq!(replies[0].error_word(), None);
    }

    #[test]
    fn error_word() {
        assert_eq!(
            whole(b"-OOM command not allowed\r\n").error_word(),
            Some(&b"OOM"[..])
        );
        assert_eq!(whole(b"-BUSY\r\n").error_word(), Some(&b"BUSY"[..]));
        assert_eq!(whole(b"-\r\n").error_word(), Some(&b""[..]));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let input: &[u8] =
            b"*3\r\n*2\r\n:1\r\n$-1\r\n+status line\r\n$4\r\n\r\n\r\n\r\n-ERR e\r\n*-1\r\n:-5\r\n";
        let (all, end, left) = decode_all(&mut ReplyDecoder::default(), input);
        assert_eq!(end, Ok(()));
        assert_eq!(left, 0);
        assert_eq!(all.len(), 4);
        for cut in 0..=input.len() {
            let mut d = ReplyDecoder::default();
            let mut buf = BytesMut::from(&input[..cut]);
            let mut got = Vec::new();
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
            buf.extend_from_slice(&input[cut..]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
            assert_eq!(got, all, "cut at {cut}");
        }
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in input {
            buf.extend_from_slice(&[b]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, all);
    }

    #[test]
    fn incomplete_leaves_buffer_untouched() {
        for input in [
            &b"+OK"[..],
            b"+OK\r",
            b":1",
            b"$3\r\nfo",
            b"$3\r\nfoo\r",
            b"*2\r\n:1\r\n",
            b"*1\r\n*1\r\n",
            b"$-1\r",
        ] {
            let mut buf = BytesMut::from(input);
            let mut d = ReplyDecoder::default();
            assert_eq!(d.decode(&mut buf), Ok(None), "{input:?}");
            assert_eq!(&buf[..], input);
        }
    }

    #[test]
    fn errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"x", InvalidReplyType(b'x')),
            (b"\0", InvalidReplyType(0)),
            (b"*1\r\n!", InvalidReplyType(b'!')),
            (b"+OK\rX", ExpectedCrlf),
            (b"$1\r\nab\r\n", ExpectedCrlf),
            (b":\r\n", InvalidInteger),
            (b":-\r\n", InvalidInteger),
            (b":1x\r\n", InvalidInteger),
            (b":1\rx", InvalidInteger),
            (b"$-2\r\n", InvalidBulkLength),
            (b"$x", InvalidBulkLength),
            (b"*-2\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"*111111111111111111111111111111111", MultibulkCountTooBig),
            (b"$111111111111111111111111111111111", BulkCountTooBig),
            (b"$9999999999999\r\n", ReplyTooLarge),
            (b"*99999999999\r\n", ReplyTooLarge),
            (b"*9223372036854775807\r\n", ReplyTooLarge),
            (b"*2\r\n*9223372036854775807\r\n", ReplyTooLarge),
        ];
        for (input, err) in cases {
            assert_eq!(
                one(input).as_ref(),
                Err(err),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
        assert_eq!(
            InvalidReplyType(b'x').to_string(),
            "Protocol error: invalid reply type 'x'"
        );
        assert_eq!(
            InvalidReplyType(7).to_string(),
            "Protocol error: invalid reply type '\\x07'"
        );
        assert_eq!(
            InvalidInteger.to_string(),
            "Protocol error: invalid integer"
        );
        assert_eq!(ReplyTooLarge.to_string(), "Protocol error: reply too large");
    }

    #[test]
    fn max_reply_bytes() {
        let mut d = ReplyDecoder::new(10);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"$4\r\nabcd\r\n"[..]))
                .unwrap()
                .unwrap()
                .frame
                .len(),
            10
        );
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"$5\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"+123456789"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(d.decode(&mut BytesMut::from(&b"+1234567"[..])), Ok(None));
        let mut d = ReplyDecoder::new(10);
        // 4 + 3 * 2 = 10 bytes at least: fine; 3 elements would need 13.
        assert_eq!(d.decode(&mut BytesMut::from(&b"*2\r\n"[..])), Ok(None));
        let mut d = ReplyDecoder::new(10);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*3\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
    }

    #[test]
    fn long_status_line_is_scanned_once() {
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"+"[..]);
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'a'; 100]);
            assert_eq!(d.decode(&mut buf), Ok(None));
            assert_eq!(d.scan, buf.len());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().frame.len(), 100_003);
    }

    #[test]
    fn large_bulk_in_small_reads() {
        let value = vec![b'z'; 1 << 20];
        let mut input = format!("*2\r\n:1\r\n${}\r\n", value.len()).into_bytes();
        input.extend_from_slice(&value);
        input.extend_from_slice(b"\r\n");
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in input.chunks(16 * 1024) {
            buf.extend_from_slice(chunk);
            if let Some(r) = d.decode(&mut buf).unwrap() {
                got = Some(r);
            } else {
                // Progress is kept: the position points at the bulk header, past the integer.
                assert_eq!(d.pos, 8);
                assert_eq!(d.pending, 1);
            }
        }
        assert_eq!(&got.unwrap().frame[..], &input[..]);
    }

    #[test]
    fn bytes_wanted_is_where_the_bulk_in_progress_ends() {
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"$10\r\nab"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.bytes_wanted(), 5 + 10 + 2);
        buf.extend_from_slice(b"cdefghij\r");
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.bytes_wanted(), 17);
        buf.extend_from_slice(b"\n+OK");
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().frame.len(), 17);
        assert_eq!(d.bytes_wanted(), 0);
        // A status line in progress: its length is not known.
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.bytes_wanted(), 0);

        // Inside an array, counted from the start of the buffer.
        let mut d = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"*2\r\n:1\r\n$5\r\nab"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.bytes_wanted(), 4 + 4 + 4 + 5 + 2);
        // Not known while a header is incomplete.
        for input in [&b"$10"[..], b"$10\r", b"*2\r\n", b"*2\r\n$1\r\na\r\n"] {
            let mut d = ReplyDecoder::default();
            assert_eq!(d.decode(&mut BytesMut::from(input)), Ok(None));
            assert_eq!(d.bytes_wanted(), 0, "{input:?}");
        }
        // Never beyond the bound: a larger bulk is an error.
        let mut d = ReplyDecoder::new(100);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"$200\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(d.bytes_wanted(), 0);
    }

    /// Random and mutated-valid replies in random chunkings: no panic, the frames are the
    /// input's prefix in order, and the chunked run matches the one-piece run.
    #[test]
    fn fuzz_smoke() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut stats = [0usize; 3]; // replies, errors, ended incomplete
        for _ in 0..10_000 {
            let input = random_reply_input(&mut rng);
            let max = if rng.chance(10) {
                rng.below(100)
            } else {
                DEFAULT_MAX_REPLY_BYTES
            };
            let (all, all_end, _) = decode_all(&mut ReplyDecoder::new(max), &input);
            let mut d = ReplyDecoder::new(max);
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut got: Vec<Reply> = Vec::new();
            let mut end = Ok(());
            let mut consumed = 0;
            'outer: while fed < input.len() {
                let n = 1 + rng.below(input.len() - fed).min(rng.below(40));
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(r)) => {
                            let len = r.frame.len();
                            assert_eq!(&input[consumed..consumed + len], &r.frame[..]);
                            assert_eq!(ReplyKind::from_byte(r.frame[0]), Some(r.kind));
                            consumed += len;
                            got.push(r);
                        }
                        Ok(None) => {
                            let wanted = d.bytes_wanted();
                            assert!(wanted == 0 || wanted > buf.len(), "room asked behind");
                            break;
                        }
                        Err(e) => {
                            end = Err(e);
                            break 'outer;
                        }
                    }
                }
                assert_eq!(consumed, fed - buf.len());
            }
            let shown = input.escape_ascii().to_string();
            assert_eq!(got, all, "{shown}");
            assert_eq!(end, all_end, "{shown}");
            stats[0] += got.len();
            stats[usize::from(end.is_ok()) + 1] += 1;
        }
        // The generator really exercises every outcome.
        assert!(
            stats[0] > 4_000 && stats[1] > 2_000 && stats[2] > 1_000,
            "{stats:?}"
        );
    }

    fn random_value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        match rng.below(if depth > 3 { 6 } else { 8 }) {
            0 => out.extend_from_slice(b"+OK\r\n"),
            1 => out.extend_from_slice(b"-ERR some error\r\n"),
            2 => out.extend_from_slice(format!(":{}\r\n", rng.next() as i64).as_bytes()),
            3 => out.extend_from_slice(b"$-1\r\n"),
            4 => out.extend_from_slice(b"*-1\r\n"),
            5 => {
                let data: Vec<u8> = (0..rng.below(10)).map(|_| rng.next() as u8).collect();
                out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
            _ => {
                let n = rng.below(4);
                out.extend_from_slice(format!("*{n}\r\n").as_bytes());
                for _ in 0..n {
                    random_value(rng, out, depth + 1);
                }
            }
        }
    }

    fn random_reply_input(rng: &mut Rng) -> Vec<u8> {
        const ALPHABET: &[u8] = b"+-:$*\r\n0123456789xA\0";
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
            random_value(rng, &mut v, 0);
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
}
