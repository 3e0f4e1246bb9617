//! What a `-MOVED` or `-ASK` error reply says: the slot, and the node that serves it now.

/// A node's address as Redis Cluster announces it. An empty host means "the node you asked"
/// (Redis 7 sends `:port` when it knows no endpoint for itself).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// `host:port` (IPv6 hosts as Redis writes them, without brackets: the port follows the
    /// last colon).
    pub fn parse(text: &[u8]) -> Option<NodeAddr> {
        let text = std::str::from_utf8(text).ok()?;
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some(NodeAddr {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }

    /// This address with an empty host filled in from the node that was asked.
    pub fn or_host_of(mut self, asked: &NodeAddr) -> NodeAddr {
        if self.host.is_empty() {
            self.host.clone_from(&asked.host);
        }
        self
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Which redirect it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectKind {
    /// The slot has moved for good: update the map.
    Moved,
    /// Ask that node once (after `ASKING`), without changing the map.
    Ask,
}

/// A parsed redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub kind: RedirectKind,
    pub slot: u16,
    pub to: NodeAddr,
}

/// The redirect in an error reply (`-MOVED 3999 127.0.0.1:6381\r\n`), if it is one.
pub fn parse(reply: &[u8]) -> Option<Redirect> {
    let body = reply.strip_prefix(b"-")?;
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    let (kind, rest) = if let Some(rest) = body.strip_prefix(b"MOVED ") {
        (RedirectKind::Moved, rest)
    } else {
        (RedirectKind::Ask, body.strip_prefix(b"ASK ")?)
    };
    let space = rest.iter().position(|&b| b == b' ')?;
    let slot: u16 = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    if usize::from(slot) >= super::slot::SLOTS {
        return None;
    }
    Some(Redirect {
        kind,
        slot,
        to: NodeAddr::parse(&rest[space + 1..])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(host: &str, port: u16) -> NodeAddr {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn reads_moved_and_ask_as_redis_sends_them() {
        assert_eq!(
            parse(b"-MOVED 11298 127.0.0.1:26003\r\n"),
            Some(Redirect {
                kind: RedirectKind::Moved,
                slot: 11298,
                to: addr("127.0.0.1", 26003)
            })
        );
        assert_eq!(
            parse(b"-ASK 12182 127.0.0.1:26001\r\n").map(|r| (r.kind, r.slot)),
            Some((RedirectKind::Ask, 12182))
        );
        // Redis 7 without a known endpoint, and IPv6.
        let unknown = parse(b"-MOVED 1 :7001\r\n").unwrap().to;
        assert_eq!(unknown, addr("", 7001));
        assert_eq!(
            unknown.or_host_of(&addr("10.0.0.9", 7000)),
            addr("10.0.0.9", 7001)
        );
        assert_eq!(parse(b"-ASK 2 ::1:7002\r\n").unwrap().to, addr("::1", 7002));
        assert_eq!(addr("::1", 7002).to_string(), "[::1]:7002");
    }

    #[test]
    fn other_errors_and_nonsense_are_not_redirects() {
        assert_eq!(parse(b"-ERR wrong\r\n"), None);
        assert_eq!(parse(b"+MOVED 1 a:1\r\n"), None);
        assert_eq!(parse(b"-MOVED 16384 127.0.0.1:1\r\n"), None);
        assert_eq!(parse(b"-MOVED x 127.0.0.1:1\r\n"), None);
        assert_eq!(parse(b"-MOVED 1 127.0.0.1\r\n"), None);
        assert_eq!(parse(b"-MOVED 1 127.0.0.1:99999\r\n"), None);
        assert_eq!(
            parse(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            None
        );
    }
}
