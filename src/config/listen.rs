//! `listen:` values, as twemproxy's `conf_set_listen`: `host:port` split at the last `:` and
//! resolved now (first address), or `/path [octal permissions]` for a unix socket.

use std::net::ToSocketAddrs;
use std::path::PathBuf;

use super::num::{atoi, strtol_octal_mode, Atoi};
use super::ListenAddr;

/// `sizeof(sockaddr_un.sun_path)` on Linux: the path and its NUL must fit.
const UNIX_PATH_MAX: usize = 108;

/// Why a listen value was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListenError {
    Format,
    Port,
    Perm,
    /// twemproxy's catch-all `has an invalid value`, with walnut's explanation.
    Invalid(String),
}

impl ListenError {
    /// twemproxy's reason text.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ListenError::Format => "has an invalid \"hostname:port\" format string",
            ListenError::Port => "has an invalid port in \"hostname:port\" format string",
            ListenError::Perm => {
                "has an invalid file permission in \"socket_path permission\" format string"
            }
            ListenError::Invalid(_) => "has an invalid value",
        }
    }

    /// walnut's extra explanation, where twemproxy's reason alone would be too vague.
    pub(crate) fn hint(&self) -> Option<String> {
        match self {
            ListenError::Format | ListenError::Port | ListenError::Perm => None,
            ListenError::Invalid(why) => Some(why.clone()),
        }
    }
}

/// Parses (and for TCP, resolves) a listen value.
pub(crate) fn parse_listen(value: &str) -> Result<ListenAddr, ListenError> {
    if value.starts_with('/') {
        parse_unix(value)
    } else {
        parse_tcp(value)
    }
}

fn parse_unix(value: &str) -> Result<ListenAddr, ListenError> {
    let (path, perm) = match value.rfind(' ') {
        None => (value, 0),
        Some(q) => {
            let perm = strtol_octal_mode(&value[q + 1..]).ok_or(ListenError::Perm)?;
            if perm > 0o777 {
                return Err(ListenError::Perm);
            }
            (&value[..q], perm)
        }
    };
    if path.len() >= UNIX_PATH_MAX {
        return Err(ListenError::Invalid(format!(
            "unix socket path is {} bytes long, the limit is {}",
            path.len(),
            UNIX_PATH_MAX - 1
        )));
    }
    if path.contains('\0') {
        return Err(ListenError::Invalid(String::from(
            "unix socket path contains a NUL byte",
        )));
    }
    Ok(ListenAddr::Unix {
        path: PathBuf::from(path),
        perm: (perm != 0).then_some(perm),
    })
}

fn parse_tcp(value: &str) -> Result<ListenAddr, ListenError> {
    let q = value.rfind(':').ok_or(ListenError::Format)?;
    let host = &value[..q];
    let port = match atoi(&value[q + 1..]) {
        Atoi::Value(n) => u16::try_from(n).ok().filter(|&n| n > 0),
        _ => None,
    }
    .ok_or(ListenError::Port)?;

    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| ListenError::Invalid(format!("address resolution failed: {e}")))?
        .next()
        .ok_or_else(|| {
            ListenError::Invalid(String::from("address resolution failed: no address found"))
        })?;
    Ok(ListenAddr::Tcp {
        host: host.to_string(),
        port,
        addr: resolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp() {
        match parse_listen("127.0.0.1:22121") {
            Ok(ListenAddr::Tcp { host, port, addr }) => {
                assert_eq!(host, "127.0.0.1");
                assert_eq!(port, 22121);
                assert_eq!(addr, "127.0.0.1:22121".parse().unwrap());
            }
            other => panic!("{other:?}"),
        }
        // Split at the LAST colon: an IPv6 literal works without brackets.
        match parse_listen("::1:22121") {
            Ok(ListenAddr::Tcp { host, port, .. }) => {
                assert_eq!((host.as_str(), port), ("::1", 22121))
            }
            other => panic!("{other:?}"),
        }
        match parse_listen("0.0.0.0:1") {
            Ok(ListenAddr::Tcp { addr, .. }) => assert_eq!(addr, "0.0.0.0:1".parse().unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp_errors() {
        assert_eq!(parse_listen("127.0.0.1"), Err(ListenError::Format));
        assert_eq!(parse_listen("127.0.0.1:0"), Err(ListenError::Port));
        assert_eq!(parse_listen("127.0.0.1:65536"), Err(ListenError::Port));
        assert_eq!(parse_listen("127.0.0.1:"), Err(ListenError::Port));
        assert_eq!(parse_listen("127.0.0.1:-1"), Err(ListenError::Port));
        assert_eq!(parse_listen("127.0.0.1:4294989417"), Err(ListenError::Port));
        assert!(matches!(
            parse_listen("[::1]:22121"),
            Err(ListenError::Invalid(_))
        ));
    }

    #[test]
    fn unix() {
        assert_eq!(
            parse_listen("/tmp/x.sock 0666"),
            Ok(ListenAddr::Unix {
                path: "/tmp/x.sock".into(),
                perm: Some(0o666)
            })
        );
        assert_eq!(
            parse_listen("/tmp/x.sock"),
            Ok(ListenAddr::Unix {
                path: "/tmp/x.sock".into(),
                perm: None
            })
        );
        // strtol stops at the first non-octal digit: "0999" is 0, which means "no chmod".
        assert_eq!(
            parse_listen("/tmp/x.sock 0999"),
            Ok(ListenAddr::Unix {
                path: "/tmp/x.sock".into(),
                perm: None
            })
        );
        assert_eq!(
            parse_listen("/tmp/x.sock 777"),
            Ok(ListenAddr::Unix {
                path: "/tmp/x.sock".into(),
                perm: Some(0o777)
            })
        );
        assert_eq!(parse_listen("/tmp/x.sock 1000"), Err(ListenError::Perm));
        assert_eq!(parse_listen("/tmp/x.sock -1"), Err(ListenError::Perm));
        let long = format!("/{}", "a".repeat(107));
        assert!(matches!(parse_listen(&long), Err(ListenError::Invalid(_))));
        let fits = format!("/{}", "a".repeat(106));
        assert!(parse_listen(&fits).is_ok());
    }
}
