//! memcached text-protocol request decoding, zero-copy over `BytesMut`. No I/O.
//!
//! One call decodes one request: a command line and, for storage commands, its data block.
//! Malformed input gets memcached 1.6's own answer and the stream goes on where memcached
//! goes on (a bad line is consumed alone; a bad data block is consumed with its declared
//! length), so the client sees what it would see talking to memcached directly. Only a line
//! that never ends closes the connection.
//!
//! Contract with the caller: between calls that returned `Ok(None)` the buffer may only be
//! appended to.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

/// memcached's key limit (`KEY_MAX_LENGTH`).
pub const MAX_KEY_LEN: usize = 250;
/// A line with no end past this many bytes closes the connection, unless it is a retrieval
/// command (memcached does the same: only `get`/`gets` lines may be longer).
pub const MAX_LINE_LEN: usize = 2048;
/// The bound on a retrieval line (`get k1 k2 …`): room for tens of thousands of keys.
pub const MAX_RETRIEVAL_LINE_LEN: usize = 16 * 1024 * 1024;
/// The bound on one value: memcached's own largest item size (`-I 1024m`).
pub const MAX_VALUE_LEN: usize = 1024 * 1024 * 1024;
/// The most room made at once for a data block still arriving.
const RESERVE_STEP: usize = 1024 * 1024;
/// Tokens on a non-retrieval line, as memcached counts them (`MAX_TOKENS`).
const MAX_TOKENS: usize = 24;

pub const ERROR: &[u8] = b"ERROR\r\n";
pub const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
pub const BAD_DATA_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
pub const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
pub const BAD_EXPTIME: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
pub const BAD_DELETE: &[u8] =
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
pub const TOO_LARGE: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
pub const LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";

/// The commands walnut proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Get,
    Gets,
    Gat,
    Gats,
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas,
    Delete,
    Incr,
    Decr,
    Touch,
    Version,
    Quit,
    MetaGet,
    MetaSet,
    MetaDelete,
    MetaArithmetic,
    MetaDebug,
    MetaNoop,
}

impl Command {
    /// Every command, in a fixed order (the stats count them by their place here).
    pub const ALL: [Command; 22] = [
        Command::Get,
        Command::Gets,
        Command::Gat,
        Command::Gats,
        Command::Set,
        Command::Add,
        Command::Replace,
        Command::Append,
        Command::Prepend,
        Command::Cas,
        Command::Delete,
        Command::Incr,
        Command::Decr,
        Command::Touch,
        Command::Version,
        Command::Quit,
        Command::MetaGet,
        Command::MetaSet,
        Command::MetaDelete,
        Command::MetaArithmetic,
        Command::MetaDebug,
        Command::MetaNoop,
    ];

    /// The command's place in [`Command::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn from_name(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"get" => Command::Get,
            b"gets" => Command::Gets,
            b"gat" => Command::Gat,
            b"gats" => Command::Gats,
            b"set" => Command::Set,
            b"add" => Command::Add,
            b"replace" => Command::Replace,
            b"append" => Command::Append,
            b"prepend" => Command::Prepend,
            b"cas" => Command::Cas,
            b"delete" => Command::Delete,
            b"incr" => Command::Incr,
            b"decr" => Command::Decr,
            b"touch" => Command::Touch,
            b"version" => Command::Version,
            b"quit" => Command::Quit,
            b"mg" => Command::MetaGet,
            b"ms" => Command::MetaSet,
            b"md" => Command::MetaDelete,
            b"ma" => Command::MetaArithmetic,
            b"me" => Command::MetaDebug,
            b"mn" => Command::MetaNoop,
            _ => return None,
        })
    }

    /// The command's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Delete => "delete",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::Version => "version",
            Command::Quit => "quit",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaDebug => "me",
            Command::MetaNoop => "mn",
        }
    }

    /// `get`, `gets`, `gat`, `gats`: any number of keys, a `VALUE … END` reply.
    pub fn is_retrieval(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// Retrieval commands whose first argument is an expiry time, not a key.
    fn takes_exptime(self) -> bool {
        matches!(self, Command::Gat | Command::Gats)
    }
}

/// memcached commands walnut knows but does not proxy (they have no key to route by).
const UNSUPPORTED: &[&[u8]] = &[
    b"stats",
    b"flush_all",
    b"verbosity",
    b"cache_memlimit",
    b"shutdown",
    b"slabs",
    b"lru",
    b"lru_crawler",
    b"watch",
    b"misbehave",
    b"extstore",
    b"debugtime",
    b"mcp",
];

/// One complete request, zero-copy: the exact bytes received, and where its parts are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    command: Command,
    /// The command line (with its line end) and any data block.
    frame: Bytes,
    /// Where the line's tokens after the command start (for retrieval keys).
    args_start: usize,
    /// The end of the line's text, before `\r\n` or `\n`.
    line_end: usize,
    /// The first key (empty for `version`, `quit`, `mn`).
    key: Range<usize>,
    /// The ` noreply` token, with the spaces before it.
    noreply: Option<Range<usize>>,
    /// Meta `q` flag: memcached hides some replies.
    quiet: bool,
    /// Meta `b` flag: the key is base64.
    base64_key: bool,
}

impl Request {
    pub fn command(&self) -> Command {
        self.command
    }

    /// The request exactly as the client sent it.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    /// The first (for most commands the only) key, as sent.
    pub fn key(&self) -> &[u8] {
        &self.frame[self.key.clone()]
    }

    /// The key requests route by: the key itself, or its decoded bytes for a meta command
    /// with the `b` (base64) flag.
    pub fn routing_key(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.base64_key {
            if let Some(decoded) = decode_base64(self.key()) {
                return std::borrow::Cow::Owned(decoded);
            }
        }
        std::borrow::Cow::Borrowed(self.key())
    }

    /// The keys of a retrieval command, in request order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let line = &self.frame[..self.line_end];
        let skip = usize::from(self.command.takes_exptime());
        tokens(line, self.args_start)
            .skip(skip)
            .map(move |r| &line[r])
    }

    /// The positions of the retrieval keys in the frame, in request order.
    pub fn key_ranges(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let skip = usize::from(self.command.takes_exptime());
        tokens(&self.frame[..self.line_end], self.args_start).skip(skip)
    }

    /// A retrieval command's name and its expiry time (`gat 10`): what a part starts with.
    pub fn retrieval_prefix(&self) -> &[u8] {
        let line = &self.frame[..self.line_end];
        let end = if self.command.takes_exptime() {
            tokens(line, self.args_start)
                .next()
                .map_or(self.args_start, |r| r.end)
        } else {
            self.args_start
        };
        let start = line.iter().position(|&b| b != b' ').unwrap_or(0);
        &line[start..end]
    }

    /// The request asked for no reply (`noreply`).
    pub fn noreply(&self) -> bool {
        self.noreply.is_some()
    }

    /// A meta command in quiet mode (`q`).
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// The request without its `noreply` token, so that the server answers it (walnut then
    /// drops the answer): every request sent to a server gets exactly one reply, and replies
    /// can be matched to requests in order.
    pub fn frame_without_noreply(&self) -> Bytes {
        match &self.noreply {
            None => self.frame.clone(),
            Some(r) => {
                let mut out = BytesMut::with_capacity(self.frame.len() - r.len());
                out.extend_from_slice(&self.frame[..r.start]);
                out.extend_from_slice(&self.frame[r.end..]);
                out.freeze()
            }
        }
    }
}

/// What one call to [`RequestDecoder::decode`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A well-formed request to proxy.
    Request(Request),
    /// A malformed or refused request, consumed: answer this (nothing when empty, as
    /// `noreply` asks) and go on.
    Answer(Bytes),
}

/// The stream cannot be resynchronised: answer this, then close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal(pub &'static [u8]);

/// Decodes requests from a client's read buffer.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    /// Bytes of a refused data block still to discard.
    swallow: usize,
    /// How far the current line has been searched for its end.
    scanned: usize,
}

impl RequestDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, Fatal> {
        if self.swallow > 0 {
            let n = self.swallow.min(buf.len());
            buf.advance(n);
            self.swallow -= n;
            if self.swallow > 0 {
                return Ok(None);
            }
        }
        // The same bound whether or not the line's end has arrived yet, so how the stream
        // was cut into reads never matters.
        let line_limit = || {
            if is_retrieval_prefix(buf) {
                MAX_RETRIEVAL_LINE_LEN
            } else {
                MAX_LINE_LEN
            }
        };
        let Some(newline) = find_newline(buf, self.scanned) else {
            self.scanned = buf.len();
            return if buf.len() > line_limit() {
                Err(Fatal(LINE_TOO_LONG))
            } else {
                Ok(None)
            };
        };
        if newline > line_limit() {
            return Err(Fatal(LINE_TOO_LONG));
        }
        let line_len = newline + 1;
        let line_end = if newline > 0 && buf[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        match parse_line(&buf[..line_end]) {
            Line::Answer(answer) => {
                buf.advance(line_len);
                self.scanned = 0;
                Ok(Some(Decoded::Answer(answer)))
            }
            Line::Request(mut parsed) => {
                let block = parsed.data_len.map_or(0, |n| n + 2);
                if parsed.data_len.is_some_and(|n| n > MAX_VALUE_LEN) {
                    buf.advance(line_len);
                    self.scanned = 0;
                    self.swallow = block;
                    let answer = if parsed.request.noreply() {
                        Bytes::new()
                    } else {
                        Bytes::from_static(TOO_LARGE)
                    };
                    return Ok(Some(Decoded::Answer(answer)));
                }
                let total = line_len + block;
                if buf.len() < total {
                    // Wait for the whole data block; the line is parsed again then (cheap).
                    // Room for it is made a piece at a time: a declared length is no
                    // reason to allocate.
                    self.scanned = newline;
                    buf.reserve((total - buf.len()).min(RESERVE_STEP));
                    return Ok(None);
                }
                self.scanned = 0;
                let frame = buf.split_to(total).freeze();
                if block > 0 && &frame[total - 2..] != b"\r\n" {
                    // memcached consumed the declared length and answers; meta set always
                    // shows the error, other commands hide it under noreply.
                    let hidden =
                        parsed.request.noreply() && parsed.request.command != Command::MetaSet;
                    let answer = if hidden {
                        Bytes::new()
                    } else {
                        Bytes::from_static(BAD_DATA_CHUNK)
                    };
                    return Ok(Some(Decoded::Answer(answer)));
                }
                parsed.request.frame = frame;
                Ok(Some(Decoded::Request(parsed.request)))
            }
        }
    }
}

/// The result of parsing one command line.
enum Line {
    Request(Parsed),
    Answer(Bytes),
}

struct Parsed {
    /// The request without its frame, which is cut once the data block has arrived.
    request: Request,
    /// The declared data block length of a storage command.
    data_len: Option<usize>,
}

/// The positions of the space-separated tokens of `line` from `from` on.
fn tokens(line: &[u8], from: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut at = from;
    std::iter::from_fn(move || {
        while at < line.len() && line[at] == b' ' {
            at += 1;
        }
        if at >= line.len() {
            return None;
        }
        let start = at;
        while at < line.len() && line[at] != b' ' {
            at += 1;
        }
        Some(start..at)
    })
}

fn find_newline(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| i + from)
}

/// Whether a line that has grown past [`MAX_LINE_LEN`] is a retrieval command. Only the
/// first `MAX_LINE_LEN + 1` bytes decide, so the answer is the same however much has arrived.
fn is_retrieval_prefix(buf: &[u8]) -> bool {
    let buf = &buf[..buf.len().min(MAX_LINE_LEN + 1)];
    let start = buf.iter().position(|&b| b != b' ').unwrap_or(buf.len());
    let rest = &buf[start..];
    [&b"get "[..], b"gets ", b"gat ", b"gats "]
        .iter()
        .any(|p| rest.starts_with(p))
}

/// A key memcached (and walnut) accept: 1..=250 bytes, no control characters.
fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.iter().any(|&b| b < 0x20 || b == 0x7f)
}

fn answer(bytes: &'static [u8]) -> Line {
    Line::Answer(Bytes::from_static(bytes))
}

/// Parses a decimal number the way memcached's `safe_strto*` accept it: digits with an
/// optional leading `+` (or `-` where `signed`).
fn number(text: &[u8], signed: bool) -> Option<i64> {
    let digits = match text.first() {
        Some(b'+') => &text[1..],
        Some(b'-') if signed => &text[1..],
        _ => text,
    };
    let magnitude = i64::try_from(digits_value(digits)?).ok()?;
    Some(if text.first() == Some(&b'-') {
        -magnitude
    } else {
        magnitude
    })
}

/// The value of a run of decimal digits, `None` if empty, not all digits, or over 64 bits.
fn digits_value(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn parse_line(line: &[u8]) -> Line {
    let mut all = tokens(line, 0);
    let Some(name) = all.next() else {
        return answer(ERROR);
    };
    let Some(command) = Command::from_name(&line[name.clone()]) else {
        let name = &line[name];
        if UNSUPPORTED.contains(&name) {
            let text = format!(
                "SERVER_ERROR unsupported command '{}'\r\n",
                String::from_utf8_lossy(name)
            );
            return Line::Answer(Bytes::from(text));
        }
        return answer(ERROR);
    };
    let args_start = name.end;
    let mut request = Request {
        command,
        frame: Bytes::new(),
        args_start,
        line_end: line.len(),
        key: 0..0,
        noreply: None,
        quiet: false,
        base64_key: false,
    };
    if command.is_retrieval() {
        return parse_retrieval(line, request);
    }
    // Every other command has a handful of tokens.
    let mut args: [Range<usize>; MAX_TOKENS] = std::array::from_fn(|_| 0..0);
    let mut count = 0;
    for token in all {
        if count == MAX_TOKENS {
            return answer(BAD_FORMAT);
        }
        args[count] = token;
        count += 1;
    }
    let args = &args[..count];
    let text = |r: &Range<usize>| &line[r.clone()];
    // memcached's `set_noreply_maybe`: the last token, if it is `noreply`.
    let noreply = args.last().filter(|r| text(r) == b"noreply").map(|r| {
        let mut start = r.start;
        while start > 0 && line[start - 1] == b' ' {
            start -= 1;
        }
        start..r.end
    });
    let hide = |bytes: &'static [u8]| {
        if noreply.is_some() {
            Line::Answer(Bytes::new())
        } else {
            answer(bytes)
        }
    };
    let mut data_len = None;
    match command {
        Command::Set
        | Command::Add
        | Command::Replace
        | Command::Append
        | Command::Prepend
        | Command::Cas => {
            // <key> <flags> <exptime> <bytes> [<cas unique>] [noreply]
            let fixed = if command == Command::Cas { 5 } else { 4 };
            if !(fixed..=fixed + 1).contains(&count) {
                return answer(ERROR);
            }
            if !valid_key(text(&args[0])) {
                return hide(BAD_FORMAT);
            }
            // Like memcached, any flags that fit 64 bits are accepted (it keeps 32).
            let flags = unsigned_u64(text(&args[1]));
            let exptime = number(text(&args[2]), true);
            let bytes = number(text(&args[3]), true);
            let unique_ok = command != Command::Cas || unsigned_u64(text(&args[4])).is_some();
            match (flags, exptime, bytes) {
                (Some(_), Some(_), Some(n))
                    if unique_ok && (0..=i32::MAX as i64 - 2).contains(&n) =>
                {
                    data_len = Some(n as usize)
                }
                _ => return hide(BAD_FORMAT),
            }
        }
        Command::Incr | Command::Decr => {
            if !(2..=3).contains(&count) {
                return answer(ERROR);
            }
            if !valid_key(text(&args[0])) {
                return hide(BAD_FORMAT);
            }
            if unsigned_u64(text(&args[1])).is_none() {
                return hide(BAD_DELTA);
            }
        }
        Command::Touch => {
            if !(2..=3).contains(&count) {
                return answer(ERROR);
            }
            if !valid_key(text(&args[0])) {
                return hide(BAD_FORMAT);
            }
            if number(text(&args[1]), true).is_none() {
                return hide(BAD_EXPTIME);
            }
        }
        Command::Delete => {
            if !(1..=3).contains(&count) {
                return answer(ERROR);
            }
            if !valid_key(text(&args[0])) {
                return hide(BAD_FORMAT);
            }
            if count > 1 {
                let hold_is_zero = text(&args[1]) == b"0";
                let valid = (count == 2 && (hold_is_zero || noreply.is_some()))
                    || (count == 3 && hold_is_zero && noreply.is_some());
                if !valid {
                    return hide(BAD_DELETE);
                }
            }
        }
        Command::Version | Command::Quit | Command::MetaNoop => {}
        Command::MetaGet
        | Command::MetaDelete
        | Command::MetaArithmetic
        | Command::MetaDebug
        | Command::MetaSet => return parse_meta(line, request, args),
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            unreachable!("retrieval commands are parsed above")
        }
    }
    if let Some(first) = args.first() {
        if !matches!(
            command,
            Command::Version | Command::Quit | Command::MetaNoop
        ) {
            request.key = first.clone();
        }
    }
    request.noreply = noreply;
    Line::Request(Parsed { request, data_len })
}

/// memcached's `safe_strtoull`: digits with an optional `+`, fits in 64 bits.
fn unsigned_u64(text: &[u8]) -> Option<u64> {
    digits_value(text.strip_prefix(b"+").unwrap_or(text))
}

fn parse_retrieval(line: &[u8], mut request: Request) -> Line {
    let mut args = tokens(line, request.args_start);
    if request.command.takes_exptime() {
        let Some(exptime) = args.next() else {
            return answer(ERROR);
        };
        if number(&line[exptime], true).is_none() {
            return answer(BAD_EXPTIME);
        }
    }
    let Some(first) = args.next() else {
        // memcached answers an empty list for `gat <exptime>` with no key.
        if request.command.takes_exptime() {
            return answer(b"END\r\n");
        }
        return answer(ERROR);
    };
    if !valid_key(&line[first.clone()]) || !args.all(|key| valid_key(&line[key])) {
        return answer(BAD_FORMAT);
    }
    request.key = first;
    Line::Request(Parsed {
        request,
        data_len: None,
    })
}

/// `mg|md|ma|me <key> <flags>*` and `ms <key> <datalen> <flags>*`.
fn parse_meta(line: &[u8], mut request: Request, args: &[Range<usize>]) -> Line {
    let command = request.command;
    let Some(key) = args.first() else {
        // memcached's own answers to a meta command without a key.
        return if command == Command::MetaDebug {
            answer(BAD_FORMAT)
        } else {
            answer(ERROR)
        };
    };
    let mut flags = &args[1..];
    let mut data_len = None;
    if command == Command::MetaSet {
        let Some(len) = flags.first() else {
            return answer(BAD_FORMAT);
        };
        match number(&line[len.clone()], false) {
            Some(n) if n <= i32::MAX as i64 - 2 => data_len = Some(n as usize),
            _ => return answer(BAD_FORMAT),
        }
        flags = &flags[1..];
    }
    for flag in flags {
        match line[flag.start] {
            b'q' => request.quiet = true,
            b'b' => request.base64_key = true,
            _ => {}
        }
    }
    // A base64 key that does not decode is memcached's to refuse (its answer and what it
    // skips vary by command): it goes to the server of the key as written.
    if !valid_key(&line[key.clone()]) {
        return answer(BAD_FORMAT);
    }
    request.key = key.clone();
    Line::Request(Parsed { request, data_len })
}

/// Standard base64 with padding, as memcached's meta `b` flag uses.
pub fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    if text.is_empty() || text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<Result<Decoded, Fatal>>, BytesMut) {
        let mut buf = BytesMut::from(input);
        let mut decoder = RequestDecoder::default();
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(d)) => out.push(Ok(d)),
                Ok(None) => break,
                Err(f) => {
                    out.push(Err(f));
                    break;
                }
            }
        }
        (out, buf)
    }

    fn one(input: &[u8]) -> Request {
        match decode_all(input).0.remove(0) {
            Ok(Decoded::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn answers(input: &[u8]) -> Vec<Vec<u8>> {
        decode_all(input)
            .0
            .into_iter()
            .map(|d| match d {
                Ok(Decoded::Answer(a)) => a.to_vec(),
                Ok(Decoded::Request(r)) => format!("<{}>", r.command().name()).into_bytes(),
                Err(Fatal(a)) => [b"FATAL ".as_slice(), a].concat(),
            })
            .collect()
    }

    #[test]
    fn a_set_is_one_frame_with_its_data_block() {
        let r = one(b"set foo 5 0 3\r\nbar\r\nget foo\r\n");
        assert_eq!(r.command(), Command::Set);
        assert_eq!(r.key(), b"foo");
        assert_eq!(&r.frame()[..], b"set foo 5 0 3\r\nbar\r\n");
        assert!(!r.noreply());
    }

    #[test]
    fn flags_beyond_32_bits_are_accepted_as_memcached_accepts_them() {
        assert_eq!(one(b"set f 4294967296 0 1\r\nv\r\n").key(), b"f");
        assert_eq!(answers(b"set f -1 0 1\r\n"), vec![BAD_FORMAT.to_vec()]);
    }

    #[test]
    fn numbers_may_have_a_plus_sign_as_memcached_reads_them() {
        assert_eq!(one(b"incr k +1\r\n").key(), b"k");
        assert_eq!(one(b"set k +1 +0 +1\r\nx\r\n").key(), b"k");
        assert_eq!(answers(b"incr k -1\r\n"), vec![BAD_DELTA.to_vec()]);
    }

    #[test]
    fn gat_with_no_key_is_an_empty_list() {
        assert_eq!(
            answers(b"gat 0\r\ngats 0 \r\ngat\r\n"),
            vec![b"END\r\n".to_vec(), b"END\r\n".to_vec(), ERROR.to_vec()]
        );
    }

    #[test]
    fn numbers_parse_like_memcacheds_strtol() {
        assert_eq!(number(b"+12", false), Some(12));
        assert_eq!(number(b"-12", true), Some(-12));
        assert_eq!(number(b"-12", false), None);
        assert_eq!(number(b"1x", true), None);
        assert_eq!(number(b"", true), None);
        assert_eq!(number(b"9223372036854775808", true), None);
        assert_eq!(unsigned_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(unsigned_u64(b"18446744073709551616"), None);
    }

    #[test]
    fn values_are_binary_safe() {
        let r = one(b"set k 0 0 4\r\n\r\n\0\xff\r\n");
        assert_eq!(&r.frame()[r.frame().len() - 6..], b"\r\n\0\xff\r\n");
    }

    #[test]
    fn an_incomplete_data_block_waits_for_more() {
        let (out, buf) = decode_all(b"set k 0 0 10\r\nabc");
        assert!(out.is_empty());
        assert_eq!(&buf[..], b"set k 0 0 10\r\nabc");
    }

    #[test]
    fn get_lists_its_keys_in_order() {
        let r = one(b"get  a bb   ccc \r\n");
        let keys: Vec<&[u8]> = r.keys().collect();
        assert_eq!(keys, vec![&b"a"[..], b"bb", b"ccc"]);
        assert_eq!(r.retrieval_prefix(), b"get");
        let r = one(b"gat 100 x y\r\n");
        let keys: Vec<&[u8]> = r.keys().collect();
        assert_eq!(keys, vec![&b"x"[..], b"y"]);
        assert_eq!(r.retrieval_prefix(), b"gat 100");
    }

    #[test]
    fn noreply_is_found_and_can_be_stripped() {
        let r = one(b"set k 1 2 1 noreply\r\nx\r\n");
        assert!(r.noreply());
        assert_eq!(&r.frame_without_noreply()[..], b"set k 1 2 1\r\nx\r\n");
        let r = one(b"delete k noreply\n");
        assert_eq!(&r.frame_without_noreply()[..], b"delete k\n");
        // Like memcached, a last token other than noreply is ignored.
        assert!(!one(b"set k 1 2 1 other\r\nx\r\n").noreply());
    }

    #[test]
    fn malformed_lines_get_memcacheds_answers_and_the_stream_goes_on() {
        assert_eq!(
            answers(b"GET a\r\nfoo\r\n\r\nget\r\nset a 0 0\r\ntouch n\r\nget a\r\n"),
            vec![
                ERROR.to_vec(),
                ERROR.to_vec(),
                ERROR.to_vec(),
                ERROR.to_vec(),
                ERROR.to_vec(),
                ERROR.to_vec(),
                b"<get>".to_vec()
            ]
        );
        assert_eq!(
            answers(b"set a 0 0 -1\r\nset a 0 0 abc\r\nincr a -1\r\ndelete a 5\r\n"),
            vec![
                BAD_FORMAT.to_vec(),
                BAD_FORMAT.to_vec(),
                BAD_DELTA.to_vec(),
                BAD_DELETE.to_vec()
            ]
        );
        assert_eq!(
            answers(b"stats\r\n"),
            vec![b"SERVER_ERROR unsupported command 'stats'\r\n".to_vec()]
        );
    }

    #[test]
    fn keys_over_250_bytes_or_with_control_bytes_are_refused() {
        let long = [b"get ".as_slice(), &[b'k'; 251], b"\r\n"].concat();
        assert_eq!(answers(&long), vec![BAD_FORMAT.to_vec()]);
        let ok = [b"get ".as_slice(), &[b'k'; 250], b"\r\n"].concat();
        assert_eq!(one(&ok).key().len(), 250);
        assert_eq!(answers(b"get a\x01b\r\n"), vec![BAD_FORMAT.to_vec()]);
        // The data line of a refused set is read as a command, as memcached does.
        let set = [b"set ".as_slice(), &[b'k'; 251], b" 0 0 2\r\nhi\r\n"].concat();
        assert_eq!(answers(&set), vec![BAD_FORMAT.to_vec(), ERROR.to_vec()]);
    }

    #[test]
    fn a_data_block_of_the_wrong_length_is_consumed_and_refused() {
        assert_eq!(
            answers(b"set a 0 0 2\r\nhello\r\nget a\r\n"),
            vec![BAD_DATA_CHUNK.to_vec(), ERROR.to_vec(), b"<get>".to_vec()]
        );
        assert_eq!(
            answers(b"set a 0 0 2 noreply\r\nhello\r\n"),
            vec![Vec::new(), ERROR.to_vec()]
        );
    }

    #[test]
    fn a_value_over_the_bound_is_swallowed_in_pieces() {
        let mut decoder = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"set big 0 0 2000000000\r\nxxxx"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Decoded::Answer(Bytes::from_static(TOO_LARGE))))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert_eq!(decoder.swallow, 2_000_000_002 - 4);
    }

    #[test]
    fn a_line_that_never_ends_is_fatal() {
        let (out, _) = decode_all(&[b'x'; MAX_LINE_LEN + 1]);
        assert_eq!(out, vec![Err(Fatal(LINE_TOO_LONG))]);
        let mut long_get = b"get ".to_vec();
        long_get.extend(std::iter::repeat_n(b"k ", 5000).flatten());
        let (out, _) = decode_all(&long_get);
        assert!(out.is_empty(), "a long get line may still end");
    }

    #[test]
    fn meta_commands_route_by_key_and_see_quiet_and_base64() {
        let r = one(b"mg foo v q k O123\r\n");
        assert_eq!(
            (r.command(), r.key(), r.quiet()),
            (Command::MetaGet, &b"foo"[..], true)
        );
        let r = one(b"ms foo 2 T90 q\r\nhi\r\n");
        assert_eq!(&r.frame()[..], b"ms foo 2 T90 q\r\nhi\r\n");
        let r = one(b"md azM= b\r\n");
        assert_eq!(&r.routing_key()[..], b"k3");
        assert_eq!(one(b"mn\r\n").command(), Command::MetaNoop);
        assert_eq!(
            answers(b"mg\r\nms x abc\r\nme\r\nms k\r\nmg !!!! b\r\n"),
            vec![
                ERROR.to_vec(),
                BAD_FORMAT.to_vec(),
                BAD_FORMAT.to_vec(),
                BAD_FORMAT.to_vec(),
                b"<mg>".to_vec()
            ]
        );
        assert_eq!(&one(b"mg !!!! b\r\n").routing_key()[..], b"!!!!");
    }

    #[test]
    fn bare_newlines_end_lines_too() {
        let r = one(b"set b 0 0 1\nx\r\n");
        assert_eq!(&r.frame()[..], b"set b 0 0 1\nx\r\n");
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(decode_base64(b"aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64(b"aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64(b"aGk"), None);
        assert_eq!(decode_base64(b"a=Gk"), None);
    }
}
