//! `servers:` entries: `host:port:weight [name]` or `/path:weight [name]`, parsed from the
//! end exactly as twemproxy's `conf_add_server` does, and the server's name (its identity
//! for ketama, duplicate detection and stats). Backend hosts are not resolved here.

use std::path::PathBuf;

use super::num::{atoi, Atoi};
use super::{ServerAddr, ServerConfig};

/// The memcached port that libmemcached leaves out of ketama names.
const KETAMA_PORT: u16 = 11211;

/// Why a server string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ServerError {
    Format,
    /// A weight that is not a decimal number; `hint` adds walnut's explanation.
    Weight {
        hint: Option<String>,
    },
    ZeroWeight,
    Port,
}

impl ServerError {
    /// twemproxy's reason text.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ServerError::Format => {
                "has an invalid \"hostname:port:weight [name]\"or \"/path/unix_socket:weight [name]\" format string"
            }
            ServerError::Weight { .. } => {
                "has an invalid weight in \"hostname:port:weight [name]\" format string"
            }
            ServerError::ZeroWeight => {
                "has a zero weight in \"hostname:port:weight [name]\" format string"
            }
            ServerError::Port => {
                "has an invalid port in \"hostname:port:weight [name]\" format string"
            }
        }
    }

    /// walnut's extra explanation, where twemproxy's reason alone would mislead.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            ServerError::Weight { hint } => hint.clone(),
            ServerError::Format | ServerError::ZeroWeight | ServerError::Port => None,
        }
    }
}

/// Searches backwards from `end` (inclusive) down to 0 for `byte`: twemproxy's `nc_strrchr`.
fn rfind_from(bytes: &[u8], end: Option<usize>, byte: u8) -> Option<usize> {
    let end = end?;
    bytes.get(..=end)?.iter().rposition(|&b| b == byte)
}

/// Parses one `servers:` entry.
pub(crate) fn parse_server(value: &str) -> Result<ServerConfig, ServerError> {
    let bytes = value.as_bytes();
    let unix = bytes.first() == Some(&b'/');
    let wanted = if unix { 2 } else { 3 };

    // Ranges are [start, end) byte offsets. `p` is the last byte still to be parsed.
    let mut p: Option<usize> = bytes.len().checked_sub(1);
    let mut name: Option<(usize, usize)> = None;
    let mut weight: (usize, usize) = (0, 0);
    let mut port: (usize, usize) = (0, 0);
    let mut found = 0;
    for (k, delim) in [b' ', b':', b':'].into_iter().enumerate() {
        let Some(q) = rfind_from(bytes, p, delim) else {
            if k == 0 {
                // The ` name` suffix is optional.
                found = 1;
                continue;
            }
            break;
        };
        let end = p.map_or(0, |p| p + 1);
        match k {
            0 => name = Some((q + 1, end)),
            1 => weight = (q + 1, end),
            _ => port = (q + 1, end),
        }
        p = q.checked_sub(1);
        found = k + 1;
    }
    // twemproxy's delimiter list ends with the string's NUL: finding one more (a NUL byte
    // in the address) or, for a unix socket, a colon in the path, is a format error.
    if found == 3 && rfind_from(bytes, p, 0).is_some() {
        found = 4;
    }
    if found != wanted {
        return Err(ServerError::Format);
    }

    let addr_end = p.map_or(0, |p| p + 1);
    let addr = &value[..addr_end];
    let name_len = name.map_or(0, |(s, e)| e - s);
    let pname = if name_len > 0 {
        &value[..value.len() - (name_len + 1)]
    } else {
        value
    };

    let weight_text = &value[weight.0..weight.1];
    let weight = match atoi(weight_text) {
        Atoi::Value(0) => return Err(ServerError::ZeroWeight),
        Atoi::Value(w) => w,
        Atoi::TooBig => {
            return Err(ServerError::Weight {
                hint: Some(format!("the weight must be at most {}", i32::MAX)),
            })
        }
        Atoi::NotANumber => {
            let hint = weight_text.contains(' ').then(|| {
                String::from("the name is taken after the last space; names cannot contain spaces")
            });
            return Err(ServerError::Weight { hint });
        }
    };

    let (addr_kind, port_num) = if unix {
        (
            ServerAddr::Unix {
                path: PathBuf::from(addr),
            },
            0u16,
        )
    } else {
        let port_num = match atoi(&value[port.0..port.1]) {
            Atoi::Value(n) => u16::try_from(n).ok().filter(|&n| n > 0),
            _ => None,
        }
        .ok_or(ServerError::Port)?;
        (
            ServerAddr::Tcp {
                host: addr.to_string(),
                port: port_num,
            },
            port_num,
        )
    };

    let name = match name {
        Some((s, e)) => value[s..e].to_string(),
        None if port_num == KETAMA_PORT => addr.to_string(),
        // `host:port`, or `/path:` for a unix socket (its "port" is empty).
        None => value[..addr_end + 1 + (port.1 - port.0)].to_string(),
    };

    Ok(ServerConfig {
        name,
        pname: pname.to_string(),
        addr: addr_kind,
        weight,
        has_alias: name_len > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> ServerConfig {
        parse_server(s).unwrap_or_else(|e| panic!("{s:?}: {e:?}"))
    }

    #[test]
    fn names_default_to_host_port() {
        let s = ok("127.0.0.1:6379:1");
        assert_eq!(s.name, "127.0.0.1:6379");
        assert_eq!(s.pname, "127.0.0.1:6379:1");
        assert_eq!(s.weight, 1);
        assert_eq!(
            s.addr,
            ServerAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 6379
            }
        );
    }

    #[test]
    fn port_11211_is_left_out_of_the_name() {
        let s = ok("10.0.0.1:11211:2");
        assert_eq!(s.name, "10.0.0.1");
        assert_eq!(s.pname, "10.0.0.1:11211:2");
        assert_eq!(s.weight, 2);
        assert_eq!(ok("10.0.0.1:11212:2").name, "10.0.0.1:11212");
    }

    #[test]
    fn alias_wins() {
        let s = ok("127.0.0.1:11211:1 server1");
        assert_eq!(s.name, "server1");
        assert_eq!(s.pname, "127.0.0.1:11211:1");
        let s = ok("/tmp/redis.sock:3 cache");
        assert_eq!(s.name, "cache");
        assert_eq!(s.pname, "/tmp/redis.sock:3");
    }

    #[test]
    fn unix_socket_name_has_trailing_colon() {
        let s = ok("/tmp/redis.sock:1");
        assert_eq!(s.name, "/tmp/redis.sock:");
        assert_eq!(s.pname, "/tmp/redis.sock:1");
        assert_eq!(
            s.addr,
            ServerAddr::Unix {
                path: "/tmp/redis.sock".into()
            }
        );
    }

    #[test]
    fn parsed_from_the_end() {
        // The name is what follows the LAST space, so "1 my" becomes the weight.
        assert!(matches!(
            parse_server("127.0.0.1:6379:1 my name"),
            Err(ServerError::Weight { hint: Some(_) })
        ));
        // IPv6 literals work because the port and weight are taken from the end.
        let s = ok("::1:6379:1");
        assert_eq!(s.name, "::1:6379");
        assert_eq!(
            s.addr,
            ServerAddr::Tcp {
                host: "::1".into(),
                port: 6379
            }
        );
        // A trailing space gives an empty alias and keeps the space in pname (twemproxy).
        let s = ok("127.0.0.1:6379:1 ");
        assert_eq!(s.name, "");
        assert_eq!(s.pname, "127.0.0.1:6379:1 ");
    }

    #[test]
    fn weights() {
        assert_eq!(ok("h:1:100").weight, 100);
        assert_eq!(ok("h:1:0007").weight, 7);
        assert_eq!(parse_server("h:1:0"), Err(ServerError::ZeroWeight));
        assert!(matches!(
            parse_server("h:1:-1"),
            Err(ServerError::Weight { .. })
        ));
        assert!(matches!(
            parse_server("h:1:"),
            Err(ServerError::Weight { .. })
        ));
        assert!(matches!(
            parse_server("h:1:x"),
            Err(ServerError::Weight { .. })
        ));
        assert!(matches!(
            parse_server("h:1:2147483648"),
            Err(ServerError::Weight { .. })
        ));
        assert_eq!(ok("h:1:2147483647").weight, 2147483647);
    }

    #[test]
    fn ports_and_formats() {
        assert_eq!(parse_server("127.0.0.1:0:1"), Err(ServerError::Port));
        assert_eq!(parse_server("127.0.0.1:65536:1"), Err(ServerError::Port));
        assert_eq!(parse_server("127.0.0.1:x:1"), Err(ServerError::Port));
        assert_eq!(ok("127.0.0.1:65535:1").name, "127.0.0.1:65535");
        assert_eq!(parse_server("127.0.0.1:6379"), Err(ServerError::Format));
        assert_eq!(parse_server("6379"), Err(ServerError::Format));
        assert_eq!(parse_server(""), Err(ServerError::Format));
        assert_eq!(parse_server(":1"), Err(ServerError::Format));
        assert_eq!(parse_server("/tmp/a:b:1"), Err(ServerError::Format));
        assert_eq!(parse_server("/tmp/sock"), Err(ServerError::Format));
        assert_eq!(parse_server("h\0x:1:1"), Err(ServerError::Format));
        // An empty host is accepted at parse time (it fails later, at connect).
        assert_eq!(ok(":6379:1").name, ":6379");
    }
}
