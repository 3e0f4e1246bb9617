//! Commands asked of every server and merged into one reply (`DBSIZE`, `KEYS`, `RANDOMKEY`,
//! `FLUSHDB`, `FLUSHALL`, `SCRIPT LOAD|EXISTS|FLUSH`), and `SCAN`'s cursor, which names the
//! server as well as that server's own cursor. Pure functions over reply frames.
//!
//! A merged reply is an error when any server's is one (the first, as it came): a fan-out
//! either worked everywhere or the client hears why not.

use super::pubsub::{frame_of_bulks, push_bulk};
use super::request::Request;

/// How the replies of every server become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fanout {
    /// Integers added up (`DBSIZE`).
    Sum,
    /// Arrays concatenated in server order (`KEYS`).
    Concat,
    /// One non-nil reply, the `pick`-th among them modulo their count (`RANDOMKEY`).
    AnyNonNil,
    /// The same status everywhere (`FLUSHDB`, `SCRIPT FLUSH`): the first reply.
    AllOk,
    /// The same bulk everywhere (`SCRIPT LOAD`'s SHA1): the first reply.
    Same,
    /// Integer arrays and-ed element by element (`SCRIPT EXISTS`).
    AndArrays,
}

/// Why replies could not be merged: a reply of the wrong shape (walnut's error text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("walnut: a server's reply cannot be merged ({0})")]
pub struct MergeError(pub &'static str);

/// Merges `replies`, one per server (at least one), with `pick` choosing for `AnyNonNil`.
pub fn merge(kind: Fanout, replies: &[&[u8]], pick: usize) -> Result<Vec<u8>, MergeError> {
    if let Some(error) = first_error(replies) {
        return Ok(error.to_vec());
    }
    let first = replies.first().ok_or(MergeError("no reply"))?;
    match kind {
        Fanout::AllOk | Fanout::Same => Ok(first.to_vec()),
        Fanout::Sum => {
            let mut total: i64 = 0;
            for reply in replies {
                let n = integer(reply).ok_or(MergeError("not an integer"))?;
                total = total.saturating_add(n);
            }
            Ok(format!(":{total}\r\n").into_bytes())
        }
        Fanout::Concat => {
            let mut count = 0usize;
            let mut body = Vec::new();
            for reply in replies {
                let (n, rest) = array_header(reply).ok_or(MergeError("not an array"))?;
                count += n;
                body.extend_from_slice(rest);
            }
            let mut out = format!("*{count}\r\n").into_bytes();
            out.extend_from_slice(&body);
            Ok(out)
        }
        Fanout::AnyNonNil => {
            let found: Vec<&&[u8]> = replies
                .iter()
                .filter(|r| {
                    !r.starts_with(b"$-1") && !r.starts_with(b"*-1") && !r.starts_with(b"_")
                })
                .collect();
            Ok(match found.len() {
                // Every server's nil is the same, in the session's protocol.
                0 => first.to_vec(),
                n => found[pick % n].to_vec(),
            })
        }
        Fanout::AndArrays => {
            let mut all: Option<Vec<bool>> = None;
            for reply in replies {
                let flags = integers(reply).ok_or(MergeError("not an array of integers"))?;
                all = Some(match all {
                    None => flags,
                    Some(so_far) if so_far.len() == flags.len() => {
                        so_far.iter().zip(&flags).map(|(a, b)| *a && *b).collect()
                    }
                    Some(_) => return Err(MergeError("arrays of different lengths")),
                });
            }
            let flags = all.unwrap_or_default();
            let mut out = format!("*{}\r\n", flags.len()).into_bytes();
            for flag in flags {
                out.extend_from_slice(if flag { b":1\r\n" } else { b":0\r\n" });
            }
            Ok(out)
        }
    }
}

/// The first error reply among `replies`: what a merged reply is when any server failed.
pub(super) fn first_error<'r>(replies: &[&'r [u8]]) -> Option<&'r [u8]> {
    replies.iter().copied().find(|r| r.first() == Some(&b'-'))
}

/// `:n\r\n` → n.
fn integer(reply: &[u8]) -> Option<i64> {
    let line = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// `*n\r\n…` → (n, the elements' bytes). A nil array is an empty one.
fn array_header(reply: &[u8]) -> Option<(usize, &[u8])> {
    let rest = reply.strip_prefix(b"*")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let n: i64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((usize::try_from(n).unwrap_or(0), &rest[end + 2..]))
}

/// `*n\r\n:a\r\n…` → the integers' truth.
fn integers(reply: &[u8]) -> Option<Vec<bool>> {
    let (n, mut rest) = array_header(reply)?;
    let mut flags = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let body = rest.strip_prefix(b":")?;
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        flags.push(&body[..end] != b"0");
        rest = &body[end + 2..];
    }
    rest.is_empty().then_some(flags)
}

/// A bulk string at the start of `reply`: its data and what follows it.
pub(super) fn bulk(reply: &[u8]) -> Option<(&[u8], &[u8])> {
    blob(reply, b'$')
}

/// The data of `reply` when it is exactly one bulk string.
pub fn bulk_text(reply: &[u8]) -> Option<&[u8]> {
    bulk(reply)
        .filter(|(_, rest)| rest.is_empty())
        .map(|(data, _)| data)
}

/// A length-prefixed string of type `marker` (`$` bulk, RESP3 `=` verbatim) at the start of
/// `reply`: its data and what follows it.
pub(super) fn blob(reply: &[u8], marker: u8) -> Option<(&[u8], &[u8])> {
    let rest = reply.strip_prefix(&[marker])?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let start = end + 2;
    let data = rest.get(start..start.checked_add(len)?)?;
    let after = rest.get(start + len..)?.strip_prefix(b"\r\n")?;
    Some((data, after))
}

/// Where a client's `SCAN` cursor points: a server, and that server's cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanCursor {
    pub server: usize,
    pub cursor: u64,
}

/// Redis's answer to a cursor that is not a number.
pub const INVALID_CURSOR: &str = "-ERR invalid cursor\r\n";

impl ScanCursor {
    /// The position of walnut cursor `text` over `servers` servers: `cursor × servers +
    /// server`, so `0` is the first server's start.
    pub fn parse(text: &[u8], servers: usize) -> Option<ScanCursor> {
        let value: u64 = std::str::from_utf8(text).ok()?.parse().ok()?;
        let servers = u64::try_from(servers.max(1)).ok()?;
        Some(ScanCursor {
            server: usize::try_from(value % servers).ok()?,
            cursor: value / servers,
        })
    }

    /// The walnut cursor for `next`, the cursor server `self.server` answered: the same
    /// server again while it has more, else the next server's start, else `0` (done).
    /// `None` when the server's cursor is too large to carry the server in 64 bits.
    pub fn after(self, next: u64, servers: usize) -> Option<u64> {
        let count = u64::try_from(servers.max(1)).ok()?;
        let server = u64::try_from(self.server).ok()?;
        if next != 0 {
            return next.checked_mul(count)?.checked_add(server);
        }
        Some(if server + 1 >= count { 0 } else { server + 1 })
    }
}

/// `SCAN` as sent to the cursor's server: the client's request with its cursor replaced.
pub fn scan_request(request: &Request, cursor: ScanCursor) -> Vec<u8> {
    let cursor = cursor.cursor.to_string();
    let args: Vec<&[u8]> = (0..request.argc())
        .map(|i| match i {
            1 => cursor.as_bytes(),
            _ => request.arg(i).unwrap_or_default(),
        })
        .collect();
    frame_of_bulks(&args)
}

/// The server's `SCAN` reply with its cursor replaced by walnut's; errors pass unchanged.
pub fn scan_reply(reply: &[u8], at: ScanCursor, servers: usize) -> Result<Vec<u8>, MergeError> {
    if reply.first() == Some(&b'-') {
        return Ok(reply.to_vec());
    }
    let shape = MergeError("SCAN reply");
    let (text, keys) = reply.strip_prefix(b"*2\r\n").and_then(bulk).ok_or(shape)?;
    let next: u64 = std::str::from_utf8(text)
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or(shape)?;
    let ours = at
        .after(next, servers)
        .ok_or(MergeError("SCAN cursor too large"))?
        .to_string();
    let mut out = b"*2\r\n".to_vec();
    push_bulk(&mut out, ours.as_bytes());
    out.extend_from_slice(keys);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_concatenates_and_ands() {
        assert_eq!(
            merge(Fanout::Sum, &[b":3\r\n", b":4\r\n"], 0).unwrap(),
            b":7\r\n"
        );
        assert_eq!(
            merge(
                Fanout::Concat,
                &[
                    b"*1\r\n$1\r\na\r\n",
                    b"*0\r\n",
                    b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
                ],
                0
            )
            .unwrap(),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(
            merge(
                Fanout::AndArrays,
                &[b"*2\r\n:1\r\n:1\r\n", b"*2\r\n:1\r\n:0\r\n"],
                0
            )
            .unwrap(),
            b"*2\r\n:1\r\n:0\r\n"
        );
        assert!(merge(
            Fanout::AndArrays,
            &[b"*2\r\n:1\r\n:1\r\n", b"*1\r\n:1\r\n"],
            0
        )
        .is_err());
        assert!(merge(Fanout::Sum, &[b"+OK\r\n"], 0).is_err());
    }

    #[test]
    fn any_error_wins_and_random_picks_a_non_nil_reply() {
        assert_eq!(
            merge(Fanout::Sum, &[b":1\r\n", b"-ERR no\r\n"], 0).unwrap(),
            b"-ERR no\r\n"
        );
        let replies: [&[u8]; 3] = [b"$-1\r\n", b"$1\r\nk\r\n", b"$1\r\nj\r\n"];
        assert_eq!(
            merge(Fanout::AnyNonNil, &replies, 0).unwrap(),
            b"$1\r\nk\r\n"
        );
        assert_eq!(
            merge(Fanout::AnyNonNil, &replies, 3).unwrap(),
            b"$1\r\nj\r\n"
        );
        assert_eq!(
            merge(Fanout::AnyNonNil, &[b"$-1\r\n", b"$-1\r\n"], 1).unwrap(),
            b"$-1\r\n"
        );
    }

    #[test]
    fn a_scan_cursor_walks_every_server_in_turn() {
        let start = ScanCursor::parse(b"0", 3).unwrap();
        assert_eq!(
            start,
            ScanCursor {
                server: 0,
                cursor: 0
            }
        );
        // Server 0 has more: its cursor 17 comes back carrying the server.
        let more = start.after(17, 3).unwrap();
        assert_eq!(more, 51);
        assert_eq!(
            ScanCursor::parse(b"51", 3).unwrap(),
            ScanCursor {
                server: 0,
                cursor: 17
            }
        );
        // Server 0 is done: server 1's start, then server 2's, then 0 (done).
        assert_eq!(
            ScanCursor {
                server: 0,
                cursor: 17
            }
            .after(0, 3),
            Some(1)
        );
        assert_eq!(ScanCursor::parse(b"1", 3).unwrap().after(0, 3), Some(2));
        assert_eq!(ScanCursor::parse(b"2", 3).unwrap().after(0, 3), Some(0));
        assert_eq!(
            ScanCursor {
                server: 1,
                cursor: 0
            }
            .after(u64::MAX, 3),
            None
        );
        assert!(ScanCursor::parse(b"x", 3).is_none());
        assert!(ScanCursor::parse(b"-1", 3).is_none());
    }

    #[test]
    fn a_scan_reply_gets_walnuts_cursor_and_keeps_its_keys() {
        let at = ScanCursor {
            server: 1,
            cursor: 0,
        };
        let reply = b"*2\r\n$2\r\n12\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        assert_eq!(
            scan_reply(reply, at, 3).unwrap(),
            b"*2\r\n$2\r\n37\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
        let last = ScanCursor {
            server: 2,
            cursor: 9,
        };
        assert_eq!(
            scan_reply(b"*2\r\n$1\r\n0\r\n*0\r\n", last, 3).unwrap(),
            b"*2\r\n$1\r\n0\r\n*0\r\n"
        );
        assert!(scan_reply(b"*2\r\n$9\r\n1\r\n", at, 3).is_err());
        assert_eq!(scan_reply(b"-ERR x\r\n", at, 3).unwrap(), b"-ERR x\r\n");
    }
}
