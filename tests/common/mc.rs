//! A raw memcached text-protocol client for tests: write arbitrary bytes, then read replies
//! exactly as the peer sent them. The framing is parsed only to know where a reply ends (a
//! `VALUE … END` block, a meta `VA <n>` with its data, or one line); the bytes are untouched.
//! It is written independently of walnut's own parser, so it can check it.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Long enough that only a hang trips it; no test asserts anything about time.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The length of the first whole reply in `buf`: `None` while incomplete.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = find_lf(buf, at)?;
        let line = &buf[at..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let after = line_end + 1;
        if line.starts_with(b"VALUE ") {
            // VALUE <key> <flags> <bytes> [<cas>]
            let bytes: usize = word(line, 3)?;
            at = after + bytes + 2;
            if buf.len() < at {
                return None;
            }
            continue;
        }
        if at > 0 && line != b"END" {
            // A line other than END after VALUE blocks ends the reply (an error mid-way).
            return Some(after);
        }
        if line.starts_with(b"VA ") {
            let bytes: usize = word(line, 1)?;
            let end = after + bytes + 2;
            return (buf.len() >= end).then_some(end);
        }
        return Some(after);
    }
}

fn word<T: std::str::FromStr>(line: &[u8], index: usize) -> Option<T> {
    let text = std::str::from_utf8(line.split(|&b| b == b' ').nth(index)?).ok()?;
    text.parse().ok()
}

fn find_lf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| i + from)
}

/// Replies read from a connection, each its exact bytes.
#[derive(Clone, Debug)]
pub struct Replies {
    pub replies: Vec<Vec<u8>>,
    /// The peer closed the connection before (or after) the replies asked for.
    pub closed: bool,
    /// Nothing more arrived within [`READ_TIMEOUT`].
    pub timed_out: bool,
    /// Bytes received after the last whole reply.
    pub rest: Vec<u8>,
}

impl Replies {
    pub fn bytes(&self) -> Vec<u8> {
        self.replies.concat()
    }
}

/// A connection to memcached or to a proxy in front of it.
pub struct McClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl McClient {
    pub fn connect(addr: SocketAddr) -> McClient {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        McClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Reads exactly `count` replies (or fewer if the peer closes or goes silent).
    pub fn read_replies(&mut self, count: usize) -> Replies {
        let mut replies = Vec::with_capacity(count);
        let mut closed = false;
        let mut timed_out = false;
        while replies.len() < count {
            if let Some(len) = reply_len(&self.buf) {
                replies.push(self.buf.drain(..len).collect());
                continue;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    timed_out = true;
                    break;
                }
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        Replies {
            replies,
            closed,
            timed_out,
            rest: std::mem::take(&mut self.buf),
        }
    }

    /// Sends `bytes` and reads `count` replies, panicking unless all arrive.
    pub fn exchange(&mut self, bytes: &[u8], count: usize) -> Vec<Vec<u8>> {
        self.send(bytes);
        let got = self.read_replies(count);
        assert_eq!(
            got.replies.len(),
            count,
            "expected {count} replies to {:?}, got {:?} (closed: {}, rest: {:?})",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]),
            got.replies
                .iter()
                .map(|r| String::from_utf8_lossy(&r[..r.len().min(200)]).into_owned())
                .collect::<Vec<_>>(),
            got.closed,
            String::from_utf8_lossy(&got.rest[..got.rest.len().min(200)])
        );
        got.replies
    }

    /// One request, one reply.
    pub fn call(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.exchange(bytes, 1).remove(0)
    }

    /// True once the peer has closed the connection (reads EOF within [`READ_TIMEOUT`]).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let got = self.read_replies(1);
        got.closed && got.replies.is_empty()
    }

    /// Reads whatever arrives until the peer has been quiet for `quiet` (for differential
    /// tests of inputs whose reply count is unknown). Returns the bytes and whether it closed.
    pub fn read_until_quiet(&mut self, quiet: Duration) -> (Vec<u8>, bool) {
        self.stream.set_read_timeout(Some(quiet)).unwrap();
        let mut out = std::mem::take(&mut self.buf);
        let mut closed = false;
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        (out, closed)
    }
}

/// Bytes as text, for assertions whose failure message should be readable.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `set` (flags 0, no expiry) of `value` under `key`.
pub fn mc_set(key: &str, value: &str) -> Vec<u8> {
    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).into_bytes()
}

/// One `VALUE` block (flags 0), without the `END`.
pub fn mc_value(key: &str, value: &str) -> Vec<u8> {
    format!("VALUE {key} 0 {}\r\n{value}\r\n", value.len()).into_bytes()
}

/// A `get` hit: the key's `VALUE` block, then `END`.
pub fn mc_hit(key: &str, value: &str) -> Vec<u8> {
    [mc_value(key, value), b"END\r\n".to_vec()].concat()
}

/// The load clients' mixed pipeline over `pairs`: each pair's `set` (every tenth with
/// `noreply`) followed by a `get` of its key, then one multi-get of the first ten keys.
/// Returns the bytes and how many replies they expect.
pub fn mixed_round(pairs: &[(String, String)]) -> (Vec<u8>, usize) {
    let mut request = Vec::new();
    let mut expected = 0;
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i % 10 == 9 {
            request.extend(
                format!("set {key} 0 0 {} noreply\r\n{value}\r\n", value.len()).into_bytes(),
            );
        } else {
            request.extend(mc_set(key, value));
            expected += 1;
        }
        request.extend(format!("get {key}\r\n").into_bytes());
        expected += 1;
    }
    request.extend(b"get");
    for (key, _) in &pairs[..10] {
        request.extend(format!(" {key}").into_bytes());
    }
    request.extend(b"\r\n");
    (request, expected + 1)
}
