//! Why a request failed on the proxy side, worded as twemproxy words it (`strerror(errno)`).

use std::io;

/// A proxy-side failure of one request. `Display` is the text after `-ERR ` or `SERVER_ERROR `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("Connection refused")]
    ConnectionRefused,
    #[error("Connection timed out")]
    TimedOut,
    #[error("Connection reset by peer")]
    ConnectionReset,
    #[error("Host is down")]
    HostDown,
    /// The server sent something unparsable or unexpected.
    #[error("Invalid argument")]
    InvalidReply,
    /// `eject_policy: fail_fast`: the key's server is ejected, and its keys do not move.
    #[error("server '{0}' is ejected")]
    Ejected(String),
    /// `distribution: server_name`: the key names no server of the pool.
    #[error("key '{key}' names no server in pool '{pool}'")]
    UnknownServerName { key: String, pool: String },
    /// walnut: the TLS session with the server failed (`server_tls:`).
    #[error("TLS with the server failed: {0}")]
    Tls(String),
    /// walnut: a Redis Cluster pool cannot serve the key now; the client sees
    /// `-CLUSTERDOWN <text>`, as from Redis itself.
    #[error("{0}")]
    ClusterDown(String),
    /// walnut: a Redis Cluster request was redirected this many times without an answer.
    #[error("too many cluster redirects ({0}) for one request")]
    TooManyRedirects(u8),
    /// walnut: the server refused walnut's `AUTH` (`redis_auth`, `redis_username`).
    #[error("the server refused walnut's AUTH: {0}")]
    AuthRefused(String),
    /// walnut: the server refused the `SELECT` or `HELLO 3` that puts a connection in the
    /// client's database or protocol; nothing is sent there in the wrong one.
    #[error("the server refused walnut's {step}: {text}")]
    SetupRefused { step: &'static str, text: String },
    /// walnut: the client's database is beyond the pool's `databases` (Redis's text).
    #[error("DB index is out of range")]
    DbOutOfRange,
    /// walnut: `read_from: replica` and the key's shard has no healthy replica.
    #[error("no healthy replica for the key's shard (read_from: replica)")]
    NoReplica,
    /// walnut: a Sentinel pool's server is not (or no longer) a master.
    #[error("the server is not a master")]
    NotMaster,
    /// walnut: a blocking command found every dedicated connection of its server in use.
    #[error(
        "server '{server}' has all {limit} dedicated connections in use (dedicated_connections)"
    )]
    DedicatedExhausted { server: String, limit: usize },
    /// Any other OS error, with its `strerror` text.
    #[error("{0}")]
    Os(String),
}

impl BackendError {
    /// The error for a key that names no server, with the key shown safely on one line.
    pub fn unknown_server_name(key: &[u8], pool: &str) -> BackendError {
        let shown: String = String::from_utf8_lossy(&key[..key.len().min(128)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        BackendError::UnknownServerName {
            key: shown,
            pool: pool.to_string(),
        }
    }

    /// Maps an I/O error to the text twemproxy would show for its errno.
    pub fn from_io(err: &io::Error) -> BackendError {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => BackendError::ConnectionRefused,
            io::ErrorKind::TimedOut => BackendError::TimedOut,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => BackendError::ConnectionReset,
            io::ErrorKind::NotFound => BackendError::ConnectionRefused,
            _ => {
                let text = err.to_string();
                // std appends " (os error N)"; twemproxy shows the bare strerror text.
                let bare = text.split(" (os error").next().unwrap_or(&text);
                BackendError::Os(bare.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_like_strerror() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(
            BackendError::from_io(&refused).to_string(),
            "Connection refused"
        );
        let unreachable = io::Error::from_raw_os_error(113);
        assert_eq!(
            BackendError::from_io(&unreachable).to_string(),
            "No route to host"
        );
        assert_eq!(BackendError::HostDown.to_string(), "Host is down");
    }
}
