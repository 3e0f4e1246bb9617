//! Redis dispatch: decides, without I/O, what the proxy does with one decoded request.
//!
//! Every client-facing error string of the Redis data path is built here, so
//! `docs/COMPATIBILITY.md` can list them all.

use super::command::{self, Arity};
use super::request::Request;

/// The key twemproxy routes key-less forwarded commands (`COMMAND`, `LOLWUT`) by.
pub const PLACEHOLDER_KEY: &[u8] = b"placeholder";

/// Argument positions of keys: `first, first + step, …` below `end` (empty when `first >= end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub first: usize,
    pub step: usize,
    pub end: usize,
}

impl KeyRange {
    pub const EMPTY: KeyRange = KeyRange {
        first: 0,
        step: 1,
        end: 0,
    };

    /// Positions `first..end` by `step`.
    pub fn new(first: usize, step: usize, end: usize) -> KeyRange {
        KeyRange {
            first,
            step: step.max(1),
            end,
        }
    }

    pub fn positions(self) -> impl Iterator<Item = usize> {
        (self.first..self.end).step_by(self.step.max(1))
    }
}

/// The keys of a multi-key command: up to two ranges (e.g. `ZUNIONSTORE dest numkeys k…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRanges(pub [KeyRange; 2]);

impl KeyRanges {
    pub fn one(range: KeyRange) -> KeyRanges {
        KeyRanges([range, KeyRange::EMPTY])
    }

    pub fn positions(self) -> impl Iterator<Item = usize> {
        self.0[0].positions().chain(self.0[1].positions())
    }
}

/// The multi-key commands walnut splits per server and merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    /// Values in request order.
    Mget,
    /// The sum of the parts' integers.
    Del,
    Unlink,
    Touch,
    Exists,
    /// `+OK` only when every part is OK; keys at odd positions, values after them.
    Mset,
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatch<'a> {
    /// Forward the request, byte for byte, to the server that owns `key`.
    Forward { key: &'a [u8] },
    /// A multi-key request forwarded whole: every key must map to one server.
    ForwardSameServer { keys: KeyRanges },
    /// Split per server, send the parts in parallel, merge the replies.
    Split { kind: SplitKind },
    /// Answer locally with these bytes.
    Reply(Vec<u8>),
    /// `AUTH <password>`, checked against the pool's `redis_auth`.
    Auth { password: &'a [u8] },
    /// `CLIENT SETNAME <name>`: remembered by the session, answered `+OK`.
    SetClientName { name: &'a [u8] },
    /// `CLIENT GETNAME`: the remembered name, or a null bulk.
    GetClientName,
    /// `QUIT`: write pending replies, then close.
    Quit,
}

/// `-ERR …\r\n` for a walnut-generated error.
pub fn error_reply(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 7);
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

pub const PONG: &[u8] = b"+PONG\r\n";
pub const OK: &[u8] = b"+OK\r\n";
pub const NOAUTH: &[u8] = b"-NOAUTH Authentication required\r\n";
pub const INVALID_PASSWORD: &[u8] = b"-ERR invalid password\r\n";
pub const AUTH_NOT_SET: &[u8] = b"-ERR Client sent AUTH, but no password is set\r\n";
pub const CROSS_SERVER: &str = "keys in request don't hash to the same server";

/// The command name as Redis quotes it in errors: lossy UTF-8, bounded in length.
fn quoted_name(name: &[u8]) -> String {
    let shown = &name[..name.len().min(128)];
    String::from_utf8_lossy(shown).into_owned()
}

/// `$len\r\ndata\r\n`.
pub fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn all_digits(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Decides what to do with `req`.
pub fn dispatch(req: &Request) -> Dispatch<'_> {
    let name = req.arg(0).unwrap_or_default();
    let argc = req.argc();
    let Some(spec) = command::lookup(name) else {
        return Dispatch::Reply(error_reply(&format!(
            "unknown command '{}'",
            quoted_name(name)
        )));
    };
    let wrong_arity = || {
        Dispatch::Reply(error_reply(&format!(
            "wrong number of arguments for '{}' command",
            spec.name.to_ascii_lowercase()
        )))
    };
    match spec.name {
        // PING [message] echoes like Redis (twemproxy closes on PING with an argument).
        "PING" => {
            return match argc {
                1 => Dispatch::Reply(PONG.to_vec()),
                2 => Dispatch::Reply(bulk(req.arg(1).unwrap_or_default())),
                _ => wrong_arity(),
            }
        }
        "QUIT" => return Dispatch::Quit,
        "AUTH" => {
            return match argc {
                2 => Dispatch::Auth {
                    password: req.arg(1).unwrap_or_default(),
                },
                _ => wrong_arity(),
            }
        }
        _ => {}
    }
    if !command::arity_ok(spec, argc) {
        return wrong_arity();
    }
    match spec.arity {
        Arity::Argz | Arity::Nokey => Dispatch::Forward {
            key: PLACEHOLDER_KEY,
        },
        Arity::Argx if argc > 2 => match spec.name {
            "MGET" => Dispatch::Split {
                kind: SplitKind::Mget,
            },
            "DEL" => Dispatch::Split {
                kind: SplitKind::Del,
            },
            "UNLINK" => Dispatch::Split {
                kind: SplitKind::Unlink,
            },
            _ => Dispatch::Split {
                kind: SplitKind::Touch,
            },
        },
        Arity::Argkvx if argc > 3 => Dispatch::Split {
            kind: SplitKind::Mset,
        },
        Arity::Argn if spec.name == "EXISTS" && argc > 2 => Dispatch::Split {
            kind: SplitKind::Exists,
        },
        Arity::Argeval => {
            let numkeys = req.arg(2).and_then(all_digits);
            match numkeys {
                Some(n) if n >= 1 && 3 + n <= argc => {
                    if n == 1 {
                        Dispatch::Forward {
                            key: req.arg(3).unwrap_or_default(),
                        }
                    } else {
                        Dispatch::ForwardSameServer {
                            keys: KeyRanges::one(KeyRange::new(3, 1, 3 + n)),
                        }
                    }
                }
                Some(0) => Dispatch::Reply(error_reply(
                    "EVAL without keys cannot be routed by walnut: numkeys must be at least 1",
                )),
                Some(_) => Dispatch::Reply(error_reply(
                    "Number of keys can't be greater than number of args",
                )),
                None => Dispatch::Reply(error_reply("value is not an integer or out of range")),
            }
        }
        _ => Dispatch::Forward {
            key: req.arg(1).unwrap_or_default(),
        },
    }
}
