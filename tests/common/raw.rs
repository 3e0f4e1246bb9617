//! Raw-bytes RESP exchanges for differential tests: one write of arbitrary bytes, then the
//! replies exactly as the peer sent them. RESP framing is parsed only to know where each
//! reply ends; the bytes themselves are returned untouched.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Long enough that only a hang trips it; no test asserts anything about time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How a read stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Every requested reply arrived; the connection may still be open.
    Complete,
    /// The peer closed (EOF or reset) first.
    Closed,
    /// Nothing more arrived within [`READ_TIMEOUT`].
    TimedOut,
    /// The peer sent bytes that are not RESP2.
    Garbage,
}

/// Replies read from a connection, each its exact bytes.
#[derive(Clone, Debug)]
pub struct Replies {
    pub replies: Vec<Vec<u8>>,
    pub stop: Stop,
    /// Bytes received after the last whole reply (an incomplete or unparsable reply).
    pub rest: Vec<u8>,
}

impl Replies {
    /// Every reply concatenated.
    pub fn bytes(&self) -> Vec<u8> {
        self.replies.concat()
    }
}

/// The length of the first whole RESP2 reply in `buf`: `Ok(None)` while incomplete,
/// `Err` when the bytes are not RESP2.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, String> {
    reply_end(buf, 0, 0)
}

fn reply_end(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, String> {
    if depth > 64 {
        return Err("arrays nested deeper than 64".into());
    }
    let Some(line_end) = find_crlf(buf, at) else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let line = &buf[at + 1..line_end];
    let after = line_end + 2;
    match kind {
        b'+' | b'-' => Ok(Some(after)),
        b':' => {
            parse_int(line)?;
            Ok(Some(after))
        }
        b'$' => {
            let len = parse_int(line)?;
            if len < 0 {
                return Ok(Some(after));
            }
            let end = after + len as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                return Err(format!("bulk of {len} bytes not followed by CRLF"));
            }
            Ok(Some(end))
        }
        b'*' => {
            let len = parse_int(line)?;
            let mut pos = after;
            for _ in 0..len.max(0) {
                match reply_end(buf, pos, depth + 1)? {
                    Some(next) => pos = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        other => Err(format!("unexpected reply type byte 0x{other:02x}")),
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number {}", escape(line)))
}

/// A TCP connection read and written as raw bytes.
pub struct RawConn {
    stream: TcpStream,
    /// Received bytes not yet returned as a reply.
    pending: Vec<u8>,
    closed: bool,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            pending: Vec::new(),
            closed: false,
        }
    }

    /// Writes `bytes` with a single `write_all` (one write as far as the test is concerned).
    /// False when the peer has already gone (reset / broken pipe).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        match self.stream.write_all(bytes) {
            Ok(()) => true,
            Err(e) if is_disconnect(e.kind()) => {
                self.closed = true;
                false
            }
            Err(e) => panic!("write: {e}"),
        }
    }

    /// Reads until `n` whole replies have arrived, or the peer closes, or a read times out.
    pub fn read_replies(&mut self, n: usize) -> Replies {
        let mut replies = Vec::new();
        loop {
            while replies.len() < n {
                match reply_len(&self.pending) {
                    Ok(Some(len)) => {
                        let rest = self.pending.split_off(len);
                        replies.push(std::mem::replace(&mut self.pending, rest));
                    }
                    Ok(None) => break,
                    Err(_) => {
                        return Replies {
                            replies,
                            stop: Stop::Garbage,
                            rest: std::mem::take(&mut self.pending),
                        }
                    }
                }
            }
            if replies.len() == n {
                return Replies {
                    replies,
                    stop: Stop::Complete,
                    rest: Vec::new(),
                };
            }
            if let Some(stop) = self.fill() {
                return Replies {
                    replies,
                    stop,
                    rest: std::mem::take(&mut self.pending),
                };
            }
        }
    }

    /// Reads everything until the peer closes (or a read times out). Returns the bytes and
    /// whether the peer closed.
    pub fn read_to_close(&mut self) -> (Vec<u8>, bool) {
        loop {
            if let Some(stop) = self.fill() {
                return (std::mem::take(&mut self.pending), stop == Stop::Closed);
            }
        }
    }

    /// One read into `pending`; `Some` when reading is over.
    fn fill(&mut self) -> Option<Stop> {
        if self.closed {
            return Some(Stop::Closed);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.closed = true;
                Some(Stop::Closed)
            }
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                None
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Some(Stop::TimedOut)
            }
            Err(e) if is_disconnect(e.kind()) => {
                self.closed = true;
                Some(Stop::Closed)
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn is_disconnect(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// Printable form of raw bytes: `\r`, `\n`, `\0`, `\\`, `"` and non-ASCII escaped, long
/// strings shortened in the middle.
pub fn escape(bytes: &[u8]) -> String {
    const LIMIT: usize = 600;
    let shown = |part: &[u8]| -> String {
        part.iter()
            .map(|&b| match b {
                b'\r' => "\\r".to_string(),
                b'\n' => "\\n".to_string(),
                b'\0' => "\\0".to_string(),
                b'\\' => "\\\\".to_string(),
                b'"' => "\\\"".to_string(),
                0x20..=0x7e => (b as char).to_string(),
                _ => format!("\\x{b:02x}"),
            })
            .collect()
    };
    if bytes.len() <= LIMIT {
        format!("\"{}\"", shown(bytes))
    } else {
        format!(
            "\"{}\" …({} bytes)… \"{}\"",
            shown(&bytes[..LIMIT / 2]),
            bytes.len() - LIMIT,
            shown(&bytes[bytes.len() - LIMIT / 2..])
        )
    }
}
