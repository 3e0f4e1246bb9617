//! The twemproxy YAML configuration: model, defaults, validation, server naming and ordering.
//!
//! Parsing collects *every* problem before failing, so `-t` can print them all.
//! Nothing here opens a socket; listen hosts are resolved, as twemproxy does at parse time.

use std::net::SocketAddr;
use std::path::PathBuf;

mod listen;
mod num;
mod pool;
mod server;
mod settings;
mod text;
mod tls;
mod tree;
mod users;
mod validate;
mod yaml;

pub use validate::string_compare;

use crate::dist::DistributionKind;
use crate::hash::HashKind;

/// A whole, validated configuration: pools sorted the way twemproxy sorts them.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub pools: Vec<PoolConfig>,
    /// walnut: `threads: N` under the reserved top-level key `walnut:` (not a pool), the
    /// number of data-plane threads (1..=1024); `None` when not set.
    pub threads: Option<usize>,
}

/// Where a pool listens.
#[derive(Clone, Debug, PartialEq)]
pub enum ListenAddr {
    /// `host:port`, resolved at parse time (first result).
    Tcp {
        host: String,
        port: u16,
        addr: SocketAddr,
    },
    /// `/path [octal perm]`; `perm` is `None` when absent or parsed as 0.
    Unix { path: PathBuf, perm: Option<u32> },
}

/// Where a backend server lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddr {
    /// Resolved lazily, on every new connection.
    Tcp {
        host: String,
        port: u16,
    },
    Unix {
        path: PathBuf,
    },
}

/// One `servers:` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// The identity used by ketama, dedup and stats: the alias, else `host:port`,
    /// else `host` when the port is 11211, else `/path:` for a unix socket.
    pub name: String,
    /// The server string without the ` alias` (`host:port:weight`).
    pub pname: String,
    pub addr: ServerAddr,
    pub weight: u32,
    /// True when the server string named it (`host:port:weight alias`).
    pub has_alias: bool,
}

/// One pool, with twemproxy's defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    /// The listen string exactly as written (used for the same-listen check).
    pub listen_text: String,
    pub listen: ListenAddr,
    pub hash: HashKind,
    pub hash_tag: Option<[u8; 2]>,
    pub distribution: DistributionKind,
    /// Milliseconds; `None` for unset, `0` or no timeout.
    pub timeout_ms: Option<u64>,
    pub backlog: u32,
    /// Deliberate difference: honoured as a per-pool limit (0 = unlimited).
    pub client_connections: u32,
    pub redis: bool,
    pub tcpkeepalive: bool,
    pub reuseport: bool,
    pub redis_auth: Option<String>,
    pub redis_db: u32,
    /// walnut: how many databases clients may `SELECT` (0 to `databases - 1`; default 16, as
    /// in Redis). Each database a client selects gets its own shared backend connections.
    pub databases: u32,
    pub preconnect: bool,
    pub auto_eject_hosts: bool,
    pub server_connections: u32,
    /// walnut: dedicated connections per server for blocking commands (default 64).
    pub dedicated_connections: u32,
    /// walnut: whether FLUSHDB and FLUSHALL reach the servers (default true, as in Redis).
    pub allow_flush: bool,
    pub server_retry_timeout_ms: u64,
    pub server_failure_limit: u32,
    /// walnut: `hash: server_name` + `distribution: server_name`: a key's routing part (its
    /// hash-tag content, else the whole key) is the name of its server; `hash` and
    /// `distribution` then hold their defaults and are unused.
    pub route_by_server_name: bool,
    /// walnut: what an ejected server's keys do (twemproxy: they move, `Rehash`).
    pub eject_policy: EjectPolicy,
    /// walnut: probe an ejected server (PING / `version`) before it rejoins; `false` re-adds it
    /// blindly after `server_retry_timeout`, as twemproxy does.
    pub health_probe: bool,
    /// Sorted by name, length first (twemproxy's `string_compare`).
    pub servers: Vec<ServerConfig>,
    /// walnut: clients reach the pool over TLS (`tls:`).
    pub tls: Option<ListenTls>,
    /// walnut: the pool reaches its servers over TLS (`server_tls:`).
    pub server_tls: Option<ServerTls>,
    /// walnut: the servers are seeds of a Redis Cluster (`redis_cluster: true`); the
    /// cluster's slot map places keys, and its nodes become the pool's servers.
    pub redis_cluster: bool,
    /// walnut: which nodes of a cluster serve read-only commands (`read_from:`).
    pub read_from: ReadFrom,
    /// walnut: the users clients must authenticate as (`users:`), Redis pools only.
    pub users: Option<std::sync::Arc<crate::acl::Users>>,
    /// walnut: with `redis_auth`, servers get `AUTH redis_username redis_auth`.
    pub redis_username: Option<String>,
    /// walnut: Sentinels that name each server's current master (`sentinels:`); each
    /// server's name is the master name they monitor.
    pub sentinels: Vec<SentinelAddr>,
    /// walnut: the password for the sentinels (`sentinel_auth:`).
    pub sentinel_auth: Option<String>,
}

/// One sentinel's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelAddr {
    pub host: String,
    pub port: u16,
}

/// `read_from:` which node of a cluster slot serves read-only commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// Every command goes to the slot's master.
    #[default]
    Master,
    /// Read-only commands go to the slot's replicas; fail when it has none.
    Replica,
    /// Read-only commands go to a replica when the slot has one, else to the master.
    PreferReplica,
}

/// `tls:`: the certificate walnut shows its clients, and the CA their certificates must be
/// signed by, when it asks for one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenTls {
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
    /// When set, a client must present a certificate signed by this CA.
    pub ca_file: Option<std::path::PathBuf>,
}

/// `server_tls:`: how walnut verifies its servers, and the certificate it shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// The CA servers are verified against; the system's roots when absent.
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    /// The name verified and sent as SNI; the server's host when absent.
    pub server_name: Option<String>,
}

/// What happens to the keys of an ejected server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EjectPolicy {
    /// twemproxy's behaviour: the continuum is rebuilt without the server; its keys move.
    #[default]
    Rehash,
    /// Keys never move: requests for the ejected server fail until it is back.
    FailFast,
}

/// One problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Every problem found in a configuration file, in the order found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.0.as_str()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Parses and validates a configuration text; `file_name` appears in file-level messages.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    let file = text::one_line(file_name);
    let raw = yaml::read(text, &file).map_err(ConfigErrors)?;
    let mut errs = Vec::new();
    let settings = settings::build(&raw.settings, &file, &mut errs);
    let drafts: Vec<pool::PoolDraft> = raw
        .pools
        .iter()
        .map(|p| pool::build(p, &file, &mut errs))
        .collect();
    let pools = validate::finish(drafts, &file, &mut errs);
    if errs.is_empty() {
        Ok(Config {
            pools,
            threads: settings.threads,
        })
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Reads and parses a configuration file.
///
/// The path, as given, names the file in messages.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
    let shown = text::one_line(&path.to_string_lossy());
    let fail = |msg: String| ConfigErrors(vec![ConfigError(msg)]);
    let bytes = std::fs::read(path)
        .map_err(|e| fail(format!("conf: failed to open configuration '{shown}': {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let last_line = std::str::from_utf8(valid)
            .ok()
            .and_then(|s| s.rsplit('\n').next())
            .unwrap_or("");
        let col = last_line.chars().count() + 1;
        fail(format!(
            "conf: '{shown}' is not valid UTF-8 (invalid byte at line {line}, column {col})"
        ))
    })?;
    parse(&text, &path.to_string_lossy())
}

#[cfg(test)]
mod tests;
