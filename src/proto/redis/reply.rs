//! RESP reply decoding for backend connections: one complete reply at a time, zero-copy,
//! resuming across partial reads. No I/O.
//!
//! A decoder speaks one protocol, the one its connection chose with `HELLO`:
//! [`ReplyDecoder::new`] reads RESP2 (`+ - : $ *`) and rejects every other type byte, exactly as
//! before RESP3 existed; [`ReplyDecoder::with_protocol`] with [`Protocol::Resp3`] also reads
//! every RESP3 type:
//!
//! | type | frame | [`ReplyKind`] |
//! |---|---|---|
//! | null | `_\r\n` | `Null` |
//! | boolean | `#t\r\n`, `#f\r\n` | `Boolean` |
//! | double | `,<line>\r\n` (the text is not checked: `inf`, `-nan`, `1e+21` all pass) | `Double` |
//! | big number | `(<optional sign><digits>\r\n` | `BigNumber` |
//! | blob error | `!<len>\r\n<bytes>\r\n` | `Error` |
//! | verbatim string | `=<len>\r\n<fmt>:<bytes>\r\n`, the `fmt:` inside `len` | `Verbatim` |
//! | map | `%<n>\r\n` and 2n values | `Map` |
//! | set | `~<n>\r\n` and n values | `Set` |
//! | push | `><n>\r\n` and n values (out of band: not the reply to any request) | `Push` |
//! | attribute | `\|<n>\r\n`, 2n values, then the value it annotates | the annotated value's |
//!
//! An attribute is never a frame of its own: it and the value after it are one [`Reply`], whose
//! kind is that value's ([`Reply::attribute_len`] says where the value starts). RESP2 forms
//! (`$-1`, `*-1`) stay valid on a RESP3 connection.
//!
//! Streamed types (`$?` with `;` chunks, `*?`/`%?`/`~?`/`>?`/`|?` closed by `.`) are not
//! supported: no Redis version sends them. They are decode errors, as any malformed length:
//! `$?` is [`ProtocolError::InvalidBulkLength`] (as is `!?` and `=?`), an aggregate's `?` is
//! [`ProtocolError::InvalidMultibulkLength`], and a `;` or `.` where a value should start is
//! [`ProtocolError::InvalidReplyType`]. Other malformed RESP3 values map onto the same errors:
//! anything but exactly `_\r\n`, `#t\r\n` or `#f\r\n` after `_` or `#` is
//! [`ProtocolError::ExpectedCrlf`], a bad big number [`ProtocolError::InvalidInteger`], a
//! verbatim string shorter than 4 bytes or without its `:` [`ProtocolError::InvalidBulkLength`],
//! and a negative length other than `$-1`/`*-1` the length error of its type.
//!
//! Nesting needs no recursion and no stack: the decoder keeps one counter of values still to
//! read. It starts at 1; every value read takes one off, an aggregate header of `n` adds `n`
//! (a map's `2n`), and an attribute header adds `2n + 1`: its pairs and the value it annotates.
//! The reply is complete when the counter reaches 0. A reply that starts with attributes takes
//! the kind of the value after them, found by walking them once the reply is complete.
//!
//! Contract with the caller: as for the request decoder, between calls that returned
//! `Ok(None)` the buffer may only be appended to.

use bytes::{Bytes, BytesMut};

pub use super::request::ProtocolError;
use super::request::{scan_line, strict_parse, strict_prefix_ok};

/// The default bound on one reply: 1 GiB.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024 * 1024;

/// The smallest possible encoded value (`+\r\n`, `_\r\n`), used to bound declared array sizes.
const MIN_VALUE_BYTES: usize = 3;

/// The RESP version a connection speaks: RESP2 until `HELLO 3` switched it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

impl Protocol {
    /// The protocol `HELLO <version>` asks for, if Redis supports it (2 or 3).
    pub fn from_version(version: i64) -> Option<Protocol> {
        match version {
            2 => Some(Protocol::Resp2),
            3 => Some(Protocol::Resp3),
            _ => None,
        }
    }

    /// The version number, as `HELLO` reports it in `proto`.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// The type of a reply, from its first byte (after any attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Status,
    /// A simple error (`-`) or, in RESP3, a blob error (`!`).
    Error,
    Integer,
    Bulk,
    Array,
    /// RESP3 `_`.
    Null,
    /// RESP3 `#t`/`#f`.
    Boolean,
    /// RESP3 `,`.
    Double,
    /// RESP3 `(`.
    BigNumber,
    /// RESP3 `=`.
    Verbatim,
    /// RESP3 `%`.
    Map,
    /// RESP3 `~`.
    Set,
    /// RESP3 `>`: an out-of-band message (pub/sub, client-side caching invalidation), not
    /// the reply to a request.
    Push,
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

    /// The kind a RESP3 type byte announces (RESP2's included); `None` for an attribute
    /// (`|`), which announces no kind of its own, and for any other byte.
    pub fn from_resp3_byte(b: u8) -> Option<ReplyKind> {
        match b {
            b'_' => Some(ReplyKind::Null),
            b'#' => Some(ReplyKind::Boolean),
            b',' => Some(ReplyKind::Double),
            b'(' => Some(ReplyKind::BigNumber),
            b'!' => Some(ReplyKind::Error),
            b'=' => Some(ReplyKind::Verbatim),
            b'%' => Some(ReplyKind::Map),
            b'~' => Some(ReplyKind::Set),
            b'>' => Some(ReplyKind::Push),
            _ => ReplyKind::from_byte(b),
        }
    }
}

/// One complete reply, byte for byte as the server sent it (attributes included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub frame: Bytes,
}

impl Reply {
    /// For an error reply, its first word without the `-` (e.g. `ERR`, `OOM`, `BUSY`,
    /// `LOADING`, `WRONGTYPE`), for a blob error the first word of its data; `None` for
    /// other kinds.
    pub fn error_word(&self) -> Option<&[u8]> {
        if self.kind != ReplyKind::Error {
            return None;
        }
        let body = self.body();
        let text = match body.first() {
            Some(b'!') => {
                let data = body.iter().position(|&b| b == b'\n')? + 1;
                body.get(data..body.len().checked_sub(2)?)?
            }
            _ => body.get(1..)?,
        };
        let end = text
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(text.len());
        Some(&text[..end])
    }

    /// Whether this is a null bulk (`$-1`), a null array (`*-1`) or a RESP3 null (`_`).
    pub fn is_null(&self) -> bool {
        matches!(self.body(), b"$-1\r\n" | b"*-1\r\n" | b"_\r\n")
    }

    /// The length of the attributes in front of the value; 0 for a reply without any
    /// (every RESP2 reply).
    pub fn attribute_len(&self) -> usize {
        if self.frame.first() != Some(&b'|') {
            return 0;
        }
        skip_attributes(&self.frame).unwrap_or(0)
    }

    /// The value without the attributes in front of it: what a RESP2 client would get.
    pub fn body(&self) -> &[u8] {
        &self.frame[self.attribute_len()..]
    }
}

/// Where the value after the attributes at the front of a complete RESP3 frame starts.
fn skip_attributes(frame: &[u8]) -> Option<usize> {
    let mut d = ReplyDecoder::with_protocol(usize::MAX, Protocol::Resp3);
    while frame.get(d.pos) == Some(&b'|') {
        // Read the attribute and its pairs: what is left then is the annotated value alone.
        d.pending = 1;
        if !d.advance(frame, 1).ok()? {
            return None;
        }
    }
    Some(d.pos)
}

/// Syntax of an integer reply as it arrives: an optional `-`, then digits.
fn integer_prefix_ok(s: &[u8]) -> bool {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    digits.iter().all(u8::is_ascii_digit)
}

/// A complete big number: an optional sign, then at least one digit.
fn big_number_ok(s: &[u8]) -> bool {
    let digits = s
        .strip_prefix(b"-")
        .or_else(|| s.strip_prefix(b"+"))
        .unwrap_or(s);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// A value of fixed bytes (`_\r\n`, `#t\r\n`) at `buf[start]`: where it ends, or `None` until
/// it is all there. Any byte off the shape is an error as soon as it arrives.
#[inline(always)]
fn fixed(buf: &[u8], start: usize, shape: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let have = buf.get(start..).unwrap_or(&[]);
    let n = have.len().min(shape.len());
    if have[..n] != shape[..n] {
        return Err(ProtocolError::ExpectedCrlf);
    }
    Ok((n == shape.len()).then_some(start + n))
}

/// The three length-prefixed string types.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Blob {
    /// `$`: may be `$-1`, the null bulk.
    String,
    /// `!`
    Error,
    /// `=`: at least `fmt:`.
    Verbatim,
}

/// Decodes replies from a backend's read buffer.
#[derive(Debug)]
pub struct ReplyDecoder {
    max_reply_bytes: usize,
    protocol: Protocol,
    /// Values still to read in the reply in progress; 0 when idle.
    pending: usize,
    /// Offset in the buffer of the first value not yet completely read.
    pos: usize,
    /// For a line in progress: where to resume looking for its CR.
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
    /// A RESP2 decoder that rejects any reply larger than `max_reply_bytes` (declared or
    /// real).
    pub fn new(max_reply_bytes: usize) -> ReplyDecoder {
        ReplyDecoder::with_protocol(max_reply_bytes, Protocol::Resp2)
    }

    /// A decoder for a connection speaking `protocol` (RESP3 after `HELLO 3`), with the same
    /// bound as [`ReplyDecoder::new`].
    pub fn with_protocol(max_reply_bytes: usize, protocol: Protocol) -> ReplyDecoder {
        ReplyDecoder {
            max_reply_bytes,
            protocol,
            pending: 0,
            pos: 0,
            scan: 0,
            want: 0,
        }
    }

    /// The protocol this decoder reads.
    pub fn protocol(&self) -> Protocol {
        self.protocol
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

    fn kind_of(&self, ty: u8) -> Option<ReplyKind> {
        match self.protocol {
            Protocol::Resp2 => ReplyKind::from_byte(ty),
            Protocol::Resp3 => ReplyKind::from_resp3_byte(ty),
        }
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

    /// A line ending in CRLF at `buf[start]` (a status, an error, a double, a big number):
    /// where its CR is, or `None` until its CRLF is there (the search resumes where it
    /// stopped).
    #[inline(always)]
    fn line(&mut self, buf: &[u8], start: usize) -> Result<Option<usize>, ProtocolError> {
        let max = self.max_reply_bytes;
        let from = self.scan.max(start + 1);
        let rest = buf.get(from..).unwrap_or(&[]);
        match rest.iter().position(|&b| b == b'\r') {
            None => {
                self.scan = buf.len();
                if buf.len().saturating_add(2) > max {
                    return Err(ProtocolError::ReplyTooLarge);
                }
                Ok(None)
            }
            Some(k) => {
                let cr = from + k;
                if cr + 2 > max {
                    return Err(ProtocolError::ReplyTooLarge);
                }
                match buf.get(cr + 1) {
                    None => {
                        self.scan = cr;
                        Ok(None)
                    }
                    Some(b'\n') => Ok(Some(cr)),
                    Some(_) => Err(ProtocolError::ExpectedCrlf),
                }
            }
        }
    }

    /// A length-prefixed string at `buf[start]`: where it ends, or `None` until it is all
    /// there (with [`ReplyDecoder::bytes_wanted`] set once its length is known).
    #[inline(always)]
    fn blob(
        &mut self,
        buf: &[u8],
        start: usize,
        blob: Blob,
    ) -> Result<Option<usize>, ProtocolError> {
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
            Some(-1) if blob == Blob::String => Ok(Some(next)),
            Some(n) if n >= 0 => {
                let len = usize::try_from(n).map_err(|_| ProtocolError::ReplyTooLarge)?;
                if blob == Blob::Verbatim && len < 4 {
                    return Err(ProtocolError::InvalidBulkLength);
                }
                let end = next
                    .checked_add(len)
                    .and_then(|e| e.checked_add(2))
                    .ok_or(ProtocolError::ReplyTooLarge)?;
                if end > self.max_reply_bytes {
                    return Err(ProtocolError::ReplyTooLarge);
                }
                if buf.len() < end {
                    self.want = end;
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(ProtocolError::ExpectedCrlf);
                }
                if blob == Blob::Verbatim && buf[next + 3] != b':' {
                    return Err(ProtocolError::InvalidBulkLength);
                }
                Ok(Some(end))
            }
            _ => Err(ProtocolError::InvalidBulkLength),
        }
    }

    /// An aggregate header of `n` at `buf[start]`, which adds `n * per + extra` values (`-1`,
    /// the null array, only if `null_ok`): where it ends and the values it adds, or `None`
    /// until its line is there.
    #[inline(always)]
    fn aggregate(
        &self,
        buf: &[u8],
        start: usize,
        per: usize,
        extra: usize,
        null_ok: bool,
    ) -> Result<Option<(usize, usize)>, ProtocolError> {
        let max = self.max_reply_bytes;
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
            Some(-1) if null_ok => Ok(Some((next, 0))),
            Some(n) if n >= 0 => {
                let n = usize::try_from(n).map_err(|_| ProtocolError::ReplyTooLarge)?;
                let added = n
                    .checked_mul(per)
                    .and_then(|a| a.checked_add(extra))
                    .ok_or(ProtocolError::ReplyTooLarge)?;
                // Every value still to come needs at least MIN_VALUE_BYTES.
                let still = (self.pending - 1)
                    .checked_add(added)
                    .ok_or(ProtocolError::ReplyTooLarge)?;
                if next > max || still > (max - next) / MIN_VALUE_BYTES {
                    return Err(ProtocolError::ReplyTooLarge);
                }
                Ok(Some((next, added)))
            }
            _ => Err(ProtocolError::InvalidMultibulkLength),
        }
    }

    /// Reads values from `self.pos` on until only `rest` are left to read (0: the reply is
    /// complete): `Ok(true)`, or `Ok(false)` when more bytes are needed. Reads at least one.
    #[inline(always)]
    fn advance(&mut self, buf: &[u8], rest: usize) -> Result<bool, ProtocolError> {
        let resp3 = self.protocol == Protocol::Resp3;
        loop {
            let start = self.pos;
            let Some(&ty) = buf.get(start) else {
                return Ok(false);
            };
            // `next` is where the value just read ends; `added` the values its header declares.
            let (next, added) = match ty {
                b'+' | b'-' => match self.line(buf, start)? {
                    Some(cr) => (cr + 2, 0),
                    None => return Ok(false),
                },
                b':' => {
                    let Some((cr, next)) = scan_line(
                        buf,
                        start,
                        integer_prefix_ok,
                        ProtocolError::InvalidInteger,
                        ProtocolError::InvalidInteger,
                    )?
                    else {
                        return Ok(false);
                    };
                    if cr == start + 1 || &buf[start + 1..cr] == b"-" {
                        return Err(ProtocolError::InvalidInteger);
                    }
                    (next, 0)
                }
                b'$' => match self.blob(buf, start, Blob::String)? {
                    Some(end) => (end, 0),
                    None => return Ok(false),
                },
                b'*' => match self.aggregate(buf, start, 1, 0, true)? {
                    Some(read) => read,
                    None => return Ok(false),
                },
                b',' | b'(' if resp3 => match self.line(buf, start)? {
                    Some(cr) if ty == b'(' && !big_number_ok(&buf[start + 1..cr]) => {
                        return Err(ProtocolError::InvalidInteger)
                    }
                    Some(cr) => (cr + 2, 0),
                    None => return Ok(false),
                },
                b'_' | b'#' if resp3 => {
                    let shape: &[u8] = match (ty, buf.get(start + 1)) {
                        (b'_', _) => b"_\r\n",
                        (_, Some(b'f')) => b"#f\r\n",
                        _ => b"#t\r\n",
                    };
                    match fixed(buf, start, shape)? {
                        Some(end) => (end, 0),
                        None => return Ok(false),
                    }
                }
                b'!' | b'=' if resp3 => {
                    let blob = if ty == b'!' {
                        Blob::Error
                    } else {
                        Blob::Verbatim
                    };
                    match self.blob(buf, start, blob)? {
                        Some(end) => (end, 0),
                        None => return Ok(false),
                    }
                }
                b'%' | b'~' | b'>' | b'|' if resp3 => {
                    // A map holds pairs; an attribute pairs and then the value it annotates.
                    let (per, extra) = match ty {
                        b'%' => (2, 0),
                        b'|' => (2, 1),
                        _ => (1, 0),
                    };
                    match self.aggregate(buf, start, per, extra, false)? {
                        Some(read) => read,
                        None => return Ok(false),
                    }
                }
                other => return Err(ProtocolError::InvalidReplyType(other)),
            };
            if next > self.max_reply_bytes {
                return Err(ProtocolError::ReplyTooLarge);
            }
            self.pending = self.pending - 1 + added;
            self.pos = next;
            self.scan = 0;
            if self.pending <= rest {
                return Ok(true);
            }
        }
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
        let attribute = first == b'|' && self.protocol == Protocol::Resp3;
        if !attribute && self.kind_of(first).is_none() {
            return Err(ProtocolError::InvalidReplyType(first));
        }
        if self.pending == 0 {
            self.pending = 1;
            self.pos = 0;
            self.scan = 0;
        }
        if !self.advance(buf, 0)? {
            return Ok(None);
        }
        let kind = match self.kind_of(first) {
            Some(kind) => kind,
            // Attributes first (rare): the kind is the annotated value's.
            None => skip_attributes(&buf[..self.pos])
                .and_then(|at| buf.get(at))
                .and_then(|&ty| ReplyKind::from_resp3_byte(ty))
                .ok_or(ProtocolError::InvalidReplyType(first))?,
        };
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
        same_replies_however_split(ReplyDecoder::default, input, &all);
    }

    /// Cut in two at every byte, and fed byte by byte, `input` gives `all`.
    fn same_replies_however_split(decoder: fn() -> ReplyDecoder, input: &[u8], all: &[Reply]) {
        for cut in 0..=input.len() {
            let mut d = decoder();
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
        let mut d = decoder();
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
            assert_waits_untouched(ReplyDecoder::default, input);
        }
    }

    /// `input` is an incomplete reply: the decoder waits and leaves the buffer as it was.
    fn assert_waits_untouched(decoder: fn() -> ReplyDecoder, input: &[u8]) {
        let mut buf = BytesMut::from(input);
        assert_eq!(decoder().decode(&mut buf), Ok(None), "{input:?}");
        assert_eq!(&buf[..], input);
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
            let (replies, ok) = chunked_run(&mut rng, &input, max, Protocol::Resp2, |r| {
                assert_eq!(ReplyKind::from_byte(r.frame[0]), Some(r.kind));
            });
            stats[0] += replies;
            stats[usize::from(ok) + 1] += 1;
        }
        // The generator really exercises every outcome.
        assert!(
            stats[0] > 4_000 && stats[1] > 2_000 && stats[2] > 1_000,
            "{stats:?}"
        );
    }

    /// Decodes `input` fed in random chunks, each reply checked by `check`: the frames are the
    /// input's prefix in order, within the bound, and the run gives the same replies and the
    /// same outcome as the one-piece run. Returns the replies read and whether it ended
    /// without error.
    fn chunked_run(
        rng: &mut Rng,
        input: &[u8],
        max: usize,
        protocol: Protocol,
        mut check: impl FnMut(&Reply),
    ) -> (usize, bool) {
        let decoder = || ReplyDecoder::with_protocol(max, protocol);
        let (all, all_end, _) = decode_all(&mut decoder(), input);
        let mut d = decoder();
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
                        assert!(len <= max);
                        assert_eq!(&input[consumed..consumed + len], &r.frame[..]);
                        check(&r);
                        consumed += len;
                        got.push(r);
                    }
                    Ok(None) => {
                        let wanted = d.bytes_wanted();
                        assert!(wanted == 0 || wanted > buf.len(), "room asked behind");
                        assert!(wanted <= max);
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
        (got.len(), end.is_ok())
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
        random_input(rng, b"+-:$*\r\n0123456789xA\0", random_value)
    }

    /// Random bytes from `alphabet` (mostly), or 1 to 4 values from `value`, mutated and
    /// perhaps truncated.
    fn random_input(
        rng: &mut Rng,
        alphabet: &[u8],
        value: fn(&mut Rng, &mut Vec<u8>, usize),
    ) -> Vec<u8> {
        let mut v = Vec::new();
        if rng.chance(30) {
            for _ in 0..rng.below(64) {
                v.push(if rng.chance(80) {
                    alphabet[rng.below(alphabet.len())]
                } else {
                    rng.next() as u8
                });
            }
            return v;
        }
        for _ in 0..1 + rng.below(4) {
            value(rng, &mut v, 0);
        }
        for _ in 0..rng.below(4) {
            if v.is_empty() {
                break;
            }
            let at = rng.below(v.len());
            match rng.below(4) {
                0 => v[at] = alphabet[rng.below(alphabet.len())],
                1 => v[at] = rng.next() as u8,
                2 => {
                    v.remove(at);
                }
                _ => v.insert(at, alphabet[rng.below(alphabet.len())]),
            }
        }
        if rng.chance(20) {
            let keep = rng.below(v.len() + 1);
            v.truncate(keep);
        }
        v
    }

    // ---- RESP3 ----

    fn resp3() -> ReplyDecoder {
        ReplyDecoder::with_protocol(DEFAULT_MAX_REPLY_BYTES, Protocol::Resp3)
    }

    fn one3(input: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        resp3().decode(&mut BytesMut::from(input))
    }

    fn whole3(input: &[u8]) -> Reply {
        let mut buf = BytesMut::from(input);
        let r = resp3().decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty(), "leftover {:?}", &buf[..]);
        assert_eq!(&r.frame[..], input);
        r
    }

    /// Replies captured from Redis 7.0.15 after `HELLO 3` (`DEBUG PROTOCOL <type>`, `ZSCORE`,
    /// `CLIENT INFO`, `GET` of a missing key, `SUBSCRIBE`, a tracking invalidation).
    const REDIS_RESP3: &[(&[u8], ReplyKind)] = &[
        (b"$11\r\nHello World\r\n", ReplyKind::Bulk),
        (b":12345\r\n", ReplyKind::Integer),
        (b",3.141\r\n", ReplyKind::Double),
        (b",0.10000000000000001\r\n", ReplyKind::Double),
        (
            b"(1234567999999999999999999999999999999\r\n",
            ReplyKind::BigNumber,
        ),
        (b"_\r\n", ReplyKind::Null),
        (b"*3\r\n:0\r\n:1\r\n:2\r\n", ReplyKind::Array),
        (b"~3\r\n:0\r\n:1\r\n:2\r\n", ReplyKind::Set),
        (
            b"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n",
            ReplyKind::Map,
        ),
        (
            b"|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n\
              $39\r\nSome real reply following the attribute\r\n",
            ReplyKind::Bulk,
        ),
        (b">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n", ReplyKind::Push),
        (
            b"=29\r\ntxt:This is a verbatim\nstring\r\n",
            ReplyKind::Verbatim,
        ),
        (b"#t\r\n", ReplyKind::Boolean),
        (b"#f\r\n", ReplyKind::Boolean),
        (
            b"*2\r\n*2\r\n$1\r\nb\r\n,0.10000000000000001\r\n*2\r\n$1\r\na\r\n,1.5\r\n",
            ReplyKind::Array,
        ),
        (
            b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n",
            ReplyKind::Push,
        ),
        (
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
            ReplyKind::Push,
        ),
        (
            b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n\
              $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
              $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
            ReplyKind::Map,
        ),
    ];

    #[test]
    fn resp3_frames_every_type_redis_sends() {
        for &(input, kind) in REDIS_RESP3 {
            assert_eq!(whole3(input).kind, kind, "{}", input.escape_ascii());
        }
        assert_eq!(whole3(b",inf\r\n").kind, ReplyKind::Double);
        assert_eq!(whole3(b",-nan\r\n").kind, ReplyKind::Double);
        assert_eq!(whole3(b",1e+21\r\n").kind, ReplyKind::Double);
        assert_eq!(whole3(b"(-1\r\n").kind, ReplyKind::BigNumber);
        assert_eq!(whole3(b"(+12\r\n").kind, ReplyKind::BigNumber);
        assert_eq!(
            whole3(b"!21\r\nSYNTAX invalid syntax\r\n").kind,
            ReplyKind::Error
        );
        assert_eq!(whole3(b"=4\r\ntxt:\r\n").kind, ReplyKind::Verbatim);
        assert_eq!(whole3(b"%0\r\n").kind, ReplyKind::Map);
        assert_eq!(whole3(b"~0\r\n").kind, ReplyKind::Set);
        assert_eq!(whole3(b">0\r\n").kind, ReplyKind::Push);
        assert!(whole3(b"_\r\n").is_null());
        assert!(!whole3(b"#f\r\n").is_null());
    }

    #[test]
    fn resp3_decoder_reads_resp2_exactly_as_resp2() {
        let input: &[u8] =
            b"*3\r\n*2\r\n:1\r\n$-1\r\n+status line\r\n$4\r\n\r\n\r\n\r\n-ERR e\r\n*-1\r\n:-5\r\n";
        let (two, two_end, two_left) = decode_all(&mut ReplyDecoder::default(), input);
        let (three, three_end, three_left) = decode_all(&mut resp3(), input);
        assert_eq!((two, two_end, two_left), (three, three_end, three_left));
        // Random RESP2 streams the RESP2 decoder accepts: same replies, same leftover.
        let mut rng = Rng(0xfeed_beef_0bad_cafe);
        let mut compared = 0;
        for _ in 0..5_000 {
            let input = random_reply_input(&mut rng);
            let (two, end, left) = decode_all(&mut ReplyDecoder::default(), &input);
            if end.is_ok() {
                assert_eq!(decode_all(&mut resp3(), &input), (two, end, left));
                compared += 1;
            }
        }
        assert!(compared > 1_000, "{compared}");
    }

    #[test]
    fn resp2_decoder_still_rejects_resp3_types() {
        for b in *b"_#,(!=%~>|;." {
            let input = [b, b'1', b'\r', b'\n'];
            assert_eq!(one(&input), Err(ProtocolError::InvalidReplyType(b)));
            let nested = [b'*', b'1', b'\r', b'\n', b, b'\r', b'\n'];
            assert_eq!(one(&nested), Err(ProtocolError::InvalidReplyType(b)));
        }
        assert_eq!(ReplyDecoder::default().protocol(), Protocol::Resp2);
        assert_eq!(resp3().protocol(), Protocol::Resp3);
    }

    #[test]
    fn attribute_and_its_value_are_one_frame() {
        let (attributed, _) = REDIS_RESP3[9];
        let r = whole3(attributed);
        assert_eq!(r.attribute_len(), attributed.len() - 46);
        assert_eq!(
            r.body(),
            b"$39\r\nSome real reply following the attribute\r\n"
        );
        // The kind is the annotated value's, whatever the attribute holds.
        let r = whole3(b"|1\r\n+key\r\n-ERR in attribute\r\n-MOVED 1 h:1\r\n");
        assert_eq!(r.kind, ReplyKind::Error);
        assert_eq!(r.error_word(), Some(&b"MOVED"[..]));
        assert_eq!(r.body(), b"-MOVED 1 h:1\r\n");
        let r = whole3(b"|1\r\n+a\r\n*1\r\n%1\r\n:1\r\n:2\r\n>1\r\n+m\r\n");
        assert_eq!((r.kind, r.body()), (ReplyKind::Push, &b">1\r\n+m\r\n"[..]));
        let r = whole3(b"|1\r\n+a\r\n+b\r\n_\r\n");
        assert!(r.is_null());
        assert_eq!(r.error_word(), None);
        // Attributes in a row, and an empty one.
        let r = whole3(b"|0\r\n|1\r\n+a\r\n|1\r\n+x\r\n+y\r\n+b\r\n:7\r\n");
        assert_eq!((r.kind, r.body()), (ReplyKind::Integer, &b":7\r\n"[..]));
        // Inside an aggregate, before any element: part of the element.
        let r = whole3(b"*2\r\n|1\r\n+ttl\r\n:3600\r\n+a\r\n+b\r\n");
        assert_eq!((r.kind, r.attribute_len()), (ReplyKind::Array, 0));
        let r = whole3(b"%1\r\n|1\r\n+k\r\n+v\r\n+key\r\n|0\r\n:1\r\n");
        assert_eq!(r.kind, ReplyKind::Map);
        // An attribute alone is not a reply yet.
        let mut buf = BytesMut::from(&b"|1\r\n+key\r\n+val\r\n+OK"[..]);
        let mut d = resp3();
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(d.in_progress());
        buf.extend_from_slice(b"\r\n+next\r\n");
        assert_eq!(
            &d.decode(&mut buf).unwrap().unwrap().frame[..],
            b"|1\r\n+key\r\n+val\r\n+OK\r\n"
        );
        assert_eq!(
            &d.decode(&mut buf).unwrap().unwrap().frame[..],
            b"+next\r\n"
        );
        // Every RESP2 reply: no attribute.
        assert_eq!(whole(b"*1\r\n+a\r\n").attribute_len(), 0);
        assert_eq!(whole(b"*1\r\n+a\r\n").body(), b"*1\r\n+a\r\n");
    }

    #[test]
    fn push_is_a_frame_of_its_own_between_replies() {
        // DEBUG PROTOCOL push: the push, then the command's reply; a tracking invalidation
        // right after SET's +OK.
        let input: &[u8] = b">2\r\n$16\r\nserver-cpu-usage\r\n:42\r\n\
            $40\r\nSome real reply following the push reply\r\n\
            +OK\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n";
        let (replies, end, left) = decode_all(&mut resp3(), input);
        assert_eq!((end, left), (Ok(()), 0));
        let kinds: Vec<ReplyKind> = replies.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                ReplyKind::Push,
                ReplyKind::Bulk,
                ReplyKind::Status,
                ReplyKind::Push
            ]
        );
        assert_eq!(
            &replies[3].frame[..],
            b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn blob_error_is_an_error_with_its_word() {
        let r = whole3(b"!21\r\nSYNTAX invalid syntax\r\n");
        assert_eq!(r.error_word(), Some(&b"SYNTAX"[..]));
        assert_eq!(whole3(b"!4\r\nBUSY\r\n").error_word(), Some(&b"BUSY"[..]));
        assert_eq!(whole3(b"!0\r\n\r\n").error_word(), Some(&b""[..]));
        // Binary-safe: CR and LF inside the data.
        let r = whole3(b"!7\r\nOOM\r\n\r\n\r\n");
        assert_eq!(r.error_word(), Some(&b"OOM"[..]));
        assert_eq!(whole3(b"=7\r\ntxt:a\r\n\r\n").kind, ReplyKind::Verbatim);
    }

    #[test]
    fn nested_resp3_aggregates() {
        whole3(
            b"%2\r\n~2\r\n:1\r\n_\r\n%1\r\n#t\r\n,1.5\r\n\
              *1\r\n>1\r\n(9\r\n|1\r\n+a\r\n+b\r\n=5\r\nmkd:x\r\n",
        );
        whole3(b"~3\r\n%0\r\n~0\r\n*-1\r\n");
        // 10,000 levels deep, in each aggregate type: no recursion, no stack.
        for header in [
            &b"%1\r\n:0\r\n"[..],
            b"~1\r\n",
            b">1\r\n",
            b"|1\r\n_\r\n_\r\n*1\r\n",
        ] {
            let mut deep = header.repeat(10_000);
            deep.extend_from_slice(b"#t\r\n");
            whole3(&deep);
        }
        // A map is 2n values: one fewer is incomplete, one more is the next reply.
        assert_eq!(one3(b"%2\r\n:1\r\n:2\r\n:3\r\n"), Ok(None));
        let (replies, _, left) = decode_all(&mut resp3(), b"%1\r\n:1\r\n:2\r\n:3\r\n");
        assert_eq!((replies.len(), left), (2, 0));
    }

    /// A stream of every RESP3 type (and RESP2's), nested and attributed.
    const RESP3_STREAM: &[u8] = b"_\r\n#t\r\n#f\r\n,3.141\r\n,-inf\r\n(-12345678901234567890\r\n\
        !21\r\nSYNTAX invalid syntax\r\n=15\r\ntxt:Some string\r\n\
        %2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n~2\r\n_\r\n#t\r\n\
        |1\r\n+ttl\r\n:3600\r\n*2\r\n|1\r\n+a\r\n+b\r\n,0.5\r\n$-1\r\n\
        >3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n\
        +OK\r\n-ERR x\r\n:7\r\n$2\r\n\r\n\r\n*-1\r\n*0\r\n%0\r\n";

    #[test]
    fn resp3_split_at_every_byte_boundary() {
        let input = RESP3_STREAM;
        let (all, end, left) = decode_all(&mut resp3(), input);
        assert_eq!((end, left), (Ok(()), 0));
        assert_eq!(all.len(), 18);
        same_replies_however_split(resp3, input, &all);
    }

    #[test]
    fn resp3_incomplete_leaves_buffer_untouched() {
        for input in [
            &b"_"[..],
            b"_\r",
            b"#",
            b"#t",
            b"#f\r",
            b",1.5",
            b"(12",
            b"!3\r\nER",
            b"=5\r\ntxt:",
            b"%1\r\n:1\r\n",
            b"~2\r\n_\r\n",
            b">1\r\n",
            b"|1\r\n+a\r\n+b\r\n",
            b"|0\r\n",
            b"*1\r\n|0\r\n",
        ] {
            assert_waits_untouched(resp3, input);
        }
    }

    #[test]
    fn resp3_errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            // Streamed types are not supported.
            (b"$?\r\n;4\r\nHell\r\n;0\r\n", InvalidBulkLength),
            (b"!?\r\n", InvalidBulkLength),
            (b"=?\r\n", InvalidBulkLength),
            (b"*?\r\n:1\r\n.\r\n", InvalidMultibulkLength),
            (b"%?\r\n", InvalidMultibulkLength),
            (b"~?\r\n", InvalidMultibulkLength),
            (b">?\r\n", InvalidMultibulkLength),
            (b"|?\r\n", InvalidMultibulkLength),
            (b";4\r\nHell\r\n", InvalidReplyType(b';')),
            (b".\r\n", InvalidReplyType(b'.')),
            (b"*1\r\n.\r\n", InvalidReplyType(b'.')),
            // Fixed shapes.
            (b"_x", ExpectedCrlf),
            (b"_\rx", ExpectedCrlf),
            (b"_1\r\n", ExpectedCrlf),
            (b"#x\r\n", ExpectedCrlf),
            (b"#true\r\n", ExpectedCrlf),
            (b"#t\n", ExpectedCrlf),
            (b"#\r\n", ExpectedCrlf),
            // Lines.
            (b",1.5\rx", ExpectedCrlf),
            (b"(\r\n", InvalidInteger),
            (b"(-\r\n", InvalidInteger),
            (b"(1.5\r\n", InvalidInteger),
            (b"(12a\r\n", InvalidInteger),
            // Blobs.
            (b"!-1\r\n", InvalidBulkLength),
            (b"=-1\r\n", InvalidBulkLength),
            (b"=3\r\ntxt\r\n", InvalidBulkLength),
            (b"=5\r\ntxt-x\r\n", InvalidBulkLength),
            (b"!2\r\nabc\r\n", ExpectedCrlf),
            (b"=4\r\ntxt:xx", ExpectedCrlf),
            (b"!9999999999999\r\n", ReplyTooLarge),
            // Aggregates.
            (b"%-1\r\n", InvalidMultibulkLength),
            (b"~-1\r\n", InvalidMultibulkLength),
            (b">-1\r\n", InvalidMultibulkLength),
            (b"|-1\r\n", InvalidMultibulkLength),
            (b"%01\r\n", InvalidMultibulkLength),
            (b"%9223372036854775807\r\n", ReplyTooLarge),
            (b"|9223372036854775807\r\n", ReplyTooLarge),
            (b"%1\r\n~9223372036854775807\r\n", ReplyTooLarge),
            (b"~111111111111111111111111111111111", MultibulkCountTooBig),
            (b"x", InvalidReplyType(b'x')),
            (b"|1\r\nx", InvalidReplyType(b'x')),
        ];
        for (input, err) in cases {
            assert_eq!(
                one3(input).as_ref(),
                Err(err),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
        // After an error the decoder starts afresh.
        let mut d = resp3();
        assert!(d.decode(&mut BytesMut::from(&b"%1\r\n#x"[..])).is_err());
        assert!(!d.in_progress());
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"#t\r\n"[..]))
                .unwrap()
                .unwrap()
                .kind,
            ReplyKind::Boolean
        );
    }

    #[test]
    fn resp3_size_bounds() {
        let bounded = || ReplyDecoder::with_protocol(10, Protocol::Resp3);
        // A map of n pairs needs 2n values: %1 is 4 + 2 * 3 = 10 bytes at least; %2 would be 16.
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b"%1\r\n"[..])),
            Ok(None)
        );
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b"%2\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        // An attribute of one pair also waits for its value: 4 + 3 * 3 = 13.
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b"|1\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b"~2\r\n"[..])),
            Ok(None)
        );
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b"!5\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b",123456789"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(
            bounded().decode(&mut BytesMut::from(&b"(12345678\r\n"[..])),
            Err(ProtocolError::ReplyTooLarge)
        );
        assert_eq!(
            bounded()
                .decode(&mut BytesMut::from(&b"=4\r\ntxt:\r\n"[..]))
                .unwrap()
                .unwrap()
                .frame
                .len(),
            10
        );
        // A declared blob asks for room, as a bulk does.
        let mut d = resp3();
        let mut buf = BytesMut::from(&b"*1\r\n=10\r\ntxt"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.bytes_wanted(), 4 + 5 + 10 + 2);
        let mut d = resp3();
        assert_eq!(d.decode(&mut BytesMut::from(&b"!3\r\n"[..])), Ok(None));
        assert_eq!(d.bytes_wanted(), 4 + 3 + 2);
        assert_eq!(d.decode(&mut BytesMut::from(&b"_"[..])), Ok(None));
        assert_eq!(d.bytes_wanted(), 0);
    }

    #[test]
    fn resp3_long_line_is_scanned_once() {
        let mut d = resp3();
        let mut buf = BytesMut::from(&b"|1\r\n+k\r\n+v\r\n("[..]);
        for _ in 0..1000 {
            buf.extend_from_slice(&[b'9'; 100]);
            assert_eq!(d.decode(&mut buf), Ok(None));
            assert_eq!(d.scan, buf.len());
        }
        buf.extend_from_slice(b"\r\n");
        let r = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (r.kind, r.frame.len()),
            (ReplyKind::BigNumber, 12 + 100_003)
        );
    }

    /// Random and mutated-valid RESP3 replies in random chunkings: no panic, the frames are
    /// the input's prefix in order, each kind is its value's first byte after the attributes,
    /// and the chunked run matches the one-piece run.
    #[test]
    fn resp3_fuzz_smoke() {
        let mut rng = Rng(0x5eed_0000_0000_0003);
        let mut stats = [0usize; 4]; // replies, errors, ended incomplete, with attributes
        for _ in 0..10_000 {
            let input = random_resp3_input(&mut rng);
            let max = if rng.chance(10) {
                rng.below(100)
            } else {
                DEFAULT_MAX_REPLY_BYTES
            };
            let mut attributed = 0;
            let (replies, ok) = chunked_run(&mut rng, &input, max, Protocol::Resp3, |r| {
                let at = r.attribute_len();
                assert!(at < r.frame.len());
                attributed += usize::from(at > 0);
                assert_eq!(ReplyKind::from_resp3_byte(r.body()[0]), Some(r.kind));
                assert_eq!(r.error_word().is_some(), r.kind == ReplyKind::Error);
                let _ = r.is_null();
            });
            stats[0] += replies;
            stats[usize::from(ok) + 1] += 1;
            stats[3] += attributed;
        }
        assert!(
            stats[0] > 4_000 && stats[1] > 2_000 && stats[2] > 1_000 && stats[3] > 200,
            "{stats:?}"
        );
    }

    fn random_resp3_value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
        let blob = |rng: &mut Rng, out: &mut Vec<u8>, ty: u8, prefix: &[u8]| {
            let mut data = prefix.to_vec();
            data.extend((0..rng.below(10)).map(|_| rng.next() as u8));
            out.push(ty);
            out.extend_from_slice(format!("{}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        };
        match rng.below(if depth > 3 { 12 } else { 17 }) {
            0 => out.extend_from_slice(b"+OK\r\n"),
            1 => out.extend_from_slice(b"-ERR some error\r\n"),
            2 => out.extend_from_slice(format!(":{}\r\n", rng.next() as i64).as_bytes()),
            3 => out.extend_from_slice(b"_\r\n"),
            4 => out.extend_from_slice(if rng.chance(50) { b"#t\r\n" } else { b"#f\r\n" }),
            5 => out.extend_from_slice(format!(",{}\r\n", rng.next() as f64 / 7.0).as_bytes()),
            6 => out.extend_from_slice(format!("(-{}{}\r\n", rng.next(), rng.next()).as_bytes()),
            7 => blob(rng, out, b'$', b""),
            8 => blob(rng, out, b'!', b"ERR "),
            9 => blob(rng, out, b'=', b"txt:"),
            10 => out.extend_from_slice(b"$-1\r\n"),
            11 => out.extend_from_slice(b"*-1\r\n"),
            ty => {
                let n = rng.below(4);
                let (byte, values) = match ty {
                    12 => (b'*', n),
                    13 => (b'%', 2 * n),
                    14 => (b'~', n),
                    15 => (b'>', n),
                    _ => (b'|', 2 * n + 1),
                };
                out.extend_from_slice(format!("{}{n}\r\n", byte as char).as_bytes());
                for _ in 0..values {
                    random_resp3_value(rng, out, depth + 1);
                }
            }
        }
    }

    fn random_resp3_input(rng: &mut Rng) -> Vec<u8> {
        random_input(
            rng,
            b"+-:$*_#,(!=%~>|;.?tf\r\n0123456789x",
            random_resp3_value,
        )
    }
}
