//! Pool directives: the table of keys, twemproxy's value parsers, duplicate detection,
//! defaults (`nc_conf.h`) and the per-pool checks of `conf_validate_pool`.

use super::listen::parse_listen;
use super::num::{atoi, Atoi, MAX};
use super::server::parse_server;
use super::text::{one_line, quoted};
use super::validate::sort_servers;
use super::yaml::{RawPool, RawValue, Scalar};
use super::{ConfigError, EjectPolicy, ListenAddr, PoolConfig, ReadFrom, ServerConfig};
use crate::dist::DistributionKind;
use crate::hash::HashKind;

/// Defaults applied to unset directives (`nc_conf.h`).
pub(crate) mod defaults {
    use crate::dist::DistributionKind;
    use crate::hash::HashKind;

    pub const HASH: HashKind = HashKind::Fnv1a64;
    pub const DISTRIBUTION: DistributionKind = DistributionKind::Ketama;
    pub const BACKLOG: u32 = 512;
    pub const CLIENT_CONNECTIONS: u32 = 0;
    pub const REDIS_DB: u32 = 0;
    pub const SERVER_CONNECTIONS: u32 = 1;
    /// walnut: dedicated connections (blocking commands) per server.
    pub const DEDICATED_CONNECTIONS: u32 = 64;
    pub const DATABASES: u32 = 16;
    pub const SERVER_RETRY_TIMEOUT_MS: u64 = 30_000;
    pub const SERVER_FAILURE_LIMIT: u32 = 2;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Directive {
    Listen,
    Hash,
    HashTag,
    Distribution,
    Timeout,
    Backlog,
    ClientConnections,
    Redis,
    TcpKeepalive,
    Reuseport,
    RedisAuth,
    RedisDb,
    Databases,
    Preconnect,
    AutoEjectHosts,
    ServerConnections,
    DedicatedConnections,
    AllowFlush,
    ServerRetryTimeout,
    ServerFailureLimit,
    EjectPolicy,
    HealthProbe,
    RedisCluster,
    ReadFrom,
    RedisUsername,
    Users,
    Sentinels,
    SentinelAuth,
    Tls,
    ServerTls,
    Servers,
}

/// twemproxy's `conf_commands`, plus `reuseport` (added after 0.5.0), plus walnut's own
/// `eject_policy`, `health_probe`, and its nested directives (`yaml::TREE_DIRECTIVES`).
/// Case-sensitive.
const DIRECTIVES: [(&str, Directive); 31] = [
    ("listen", Directive::Listen),
    ("hash", Directive::Hash),
    ("hash_tag", Directive::HashTag),
    ("distribution", Directive::Distribution),
    ("timeout", Directive::Timeout),
    ("backlog", Directive::Backlog),
    ("client_connections", Directive::ClientConnections),
    ("redis", Directive::Redis),
    ("tcpkeepalive", Directive::TcpKeepalive),
    ("reuseport", Directive::Reuseport),
    ("redis_auth", Directive::RedisAuth),
    ("redis_db", Directive::RedisDb),
    ("databases", Directive::Databases),
    ("preconnect", Directive::Preconnect),
    ("auto_eject_hosts", Directive::AutoEjectHosts),
    ("server_connections", Directive::ServerConnections),
    ("dedicated_connections", Directive::DedicatedConnections),
    ("allow_flush", Directive::AllowFlush),
    ("server_retry_timeout", Directive::ServerRetryTimeout),
    ("server_failure_limit", Directive::ServerFailureLimit),
    ("eject_policy", Directive::EjectPolicy),
    ("health_probe", Directive::HealthProbe),
    ("redis_cluster", Directive::RedisCluster),
    ("read_from", Directive::ReadFrom),
    ("redis_username", Directive::RedisUsername),
    ("users", Directive::Users),
    ("sentinels", Directive::Sentinels),
    ("sentinel_auth", Directive::SentinelAuth),
    ("tls", Directive::Tls),
    ("server_tls", Directive::ServerTls),
    ("servers", Directive::Servers),
];

/// The most dedicated connections a pool may keep per server.
const MAX_DEDICATED_CONNECTIONS: u32 = 10_000;
/// The most databases a pool lets clients select (each costs a few bytes per server until used).
const MAX_DATABASES: u32 = 1024;

/// The walnut value of `hash` and `distribution` that routes a key to the server it names.
const SERVER_NAME: &str = "server_name";

const HASHES: [(&str, HashKind); 12] = [
    ("one_at_a_time", HashKind::OneAtATime),
    ("md5", HashKind::Md5),
    ("crc16", HashKind::Crc16),
    ("crc32", HashKind::Crc32),
    ("crc32a", HashKind::Crc32a),
    ("fnv1_64", HashKind::Fnv1_64),
    ("fnv1a_64", HashKind::Fnv1a64),
    ("fnv1_32", HashKind::Fnv1_32),
    ("fnv1a_32", HashKind::Fnv1a32),
    ("hsieh", HashKind::Hsieh),
    ("murmur", HashKind::Murmur),
    ("jenkins", HashKind::Jenkins),
];

const READ_FROM: [(&str, ReadFrom); 3] = [
    ("master", ReadFrom::Master),
    ("replica", ReadFrom::Replica),
    ("prefer_replica", ReadFrom::PreferReplica),
];

const DISTRIBUTIONS: [(&str, DistributionKind); 3] = [
    ("ketama", DistributionKind::Ketama),
    ("modula", DistributionKind::Modula),
    ("random", DistributionKind::Random),
];

/// True when `name` is a pool directive (case-sensitive).
pub(crate) fn is_directive(name: &str) -> bool {
    lookup(&DIRECTIVES, name).is_some()
}

fn lookup<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

/// A rejected value: twemproxy's reason, and walnut's optional explanation.
struct Problem {
    reason: &'static str,
    hint: Option<String>,
}

impl Problem {
    fn new(reason: &'static str) -> Problem {
        Problem { reason, hint: None }
    }

    fn with(reason: &'static str, hint: Option<String>) -> Problem {
        Problem { reason, hint }
    }
}

/// A pool after its directives were applied, before the cross-pool checks.
pub(crate) struct PoolDraft {
    pub name: String,
    /// The listen string, when it parsed.
    pub listen_text: Option<String>,
    /// The finished pool, when this pool had no problem of its own.
    pub config: Option<PoolConfig>,
}

#[derive(Default)]
struct Settings {
    seen: Vec<Directive>,
    listen: Option<(String, ListenAddr)>,
    hash: Option<HashKind>,
    hash_tag: Option<[u8; 2]>,
    distribution: Option<DistributionKind>,
    timeout: Option<u32>,
    backlog: Option<u32>,
    client_connections: Option<u32>,
    redis: Option<bool>,
    tcpkeepalive: Option<bool>,
    reuseport: Option<bool>,
    redis_auth: Option<String>,
    redis_db: Option<u32>,
    databases: Option<u32>,
    preconnect: Option<bool>,
    auto_eject_hosts: Option<bool>,
    server_connections: Option<u32>,
    dedicated_connections: Option<u32>,
    allow_flush: Option<bool>,
    server_retry_timeout: Option<u32>,
    server_failure_limit: Option<u32>,
    eject_policy: Option<EjectPolicy>,
    health_probe: Option<bool>,
    redis_cluster: Option<bool>,
    read_from: Option<ReadFrom>,
    redis_username: Option<String>,
    users: Option<crate::acl::Users>,
    sentinels: Option<Vec<super::SentinelAddr>>,
    sentinel_auth: Option<String>,
    /// `hash: server_name` (walnut): only valid with `distribution: server_name`.
    hash_server_name: bool,
    /// `distribution: server_name` (walnut): only valid with `hash: server_name`.
    distribution_server_name: bool,
    /// Every `servers` entry seen, parsed or not.
    server_entries: usize,
    servers: Vec<ServerConfig>,
    tls: Option<super::ListenTls>,
    server_tls: Option<super::ServerTls>,
}

fn number(value: &str) -> Result<u32, Problem> {
    match atoi(value) {
        Atoi::Value(n) => Ok(n),
        Atoi::NotANumber => Err(Problem::new("is not a number")),
        Atoi::TooBig => Err(Problem::with(
            "is not a number",
            Some(format!("the maximum is {MAX}")),
        )),
    }
}

fn boolean(value: &str) -> Result<bool, Problem> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Problem::new("is not \"true\" or \"false\"")),
    }
}

impl Settings {
    /// Applies one `key: value` (or one sequence item); duplicates were handled by the caller.
    fn apply(&mut self, directive: Directive, value: &str) -> Result<(), Problem> {
        match directive {
            Directive::Listen => {
                let addr = parse_listen(value).map_err(|e| Problem::with(e.reason(), e.hint()))?;
                self.listen = Some((value.to_string(), addr));
            }
            Directive::Hash if value == SERVER_NAME => self.hash_server_name = true,
            Directive::Hash => {
                self.hash =
                    Some(lookup(&HASHES, value).ok_or(Problem::new("is not a valid hash"))?);
            }
            Directive::HashTag => {
                let tag: [u8; 2] = value.as_bytes().try_into().map_err(|_| {
                    Problem::new("is not a valid hash tag string with two characters")
                })?;
                self.hash_tag = Some(tag);
            }
            Directive::Distribution if value == SERVER_NAME => self.distribution_server_name = true,
            Directive::Distribution => {
                self.distribution = Some(
                    lookup(&DISTRIBUTIONS, value)
                        .ok_or(Problem::new("is not a valid distribution"))?,
                );
            }
            Directive::Timeout => self.timeout = Some(number(value)?),
            Directive::Backlog => self.backlog = Some(number(value)?),
            Directive::ClientConnections => self.client_connections = Some(number(value)?),
            Directive::RedisDb => self.redis_db = Some(number(value)?),
            Directive::Databases => self.databases = Some(number(value)?),
            Directive::ServerConnections => self.server_connections = Some(number(value)?),
            Directive::DedicatedConnections => self.dedicated_connections = Some(number(value)?),
            Directive::AllowFlush => self.allow_flush = Some(boolean(value)?),
            Directive::ServerRetryTimeout => self.server_retry_timeout = Some(number(value)?),
            Directive::ServerFailureLimit => self.server_failure_limit = Some(number(value)?),
            Directive::Redis => self.redis = Some(boolean(value)?),
            Directive::TcpKeepalive => self.tcpkeepalive = Some(boolean(value)?),
            Directive::Reuseport => self.reuseport = Some(boolean(value)?),
            Directive::Preconnect => self.preconnect = Some(boolean(value)?),
            Directive::AutoEjectHosts => self.auto_eject_hosts = Some(boolean(value)?),
            Directive::HealthProbe => self.health_probe = Some(boolean(value)?),
            Directive::RedisCluster => self.redis_cluster = Some(boolean(value)?),
            Directive::ReadFrom => {
                self.read_from = Some(lookup(&READ_FROM, value).ok_or_else(|| {
                    Problem::with(
                        "is not a valid read_from",
                        Some("one of \"master\", \"replica\" or \"prefer_replica\"".into()),
                    )
                })?)
            }
            Directive::EjectPolicy => {
                self.eject_policy = Some(match value {
                    "rehash" => EjectPolicy::Rehash,
                    "fail_fast" => EjectPolicy::FailFast,
                    _ => return Err(Problem::new("is not \"rehash\" or \"fail_fast\"")),
                });
            }
            Directive::RedisAuth => self.redis_auth = Some(value.to_string()),
            Directive::RedisUsername => self.redis_username = Some(value.to_string()),
            Directive::Users => {
                return Err(Problem::new("must be a sequence of users, not a value"))
            }
            Directive::Sentinels => {
                return Err(Problem::new("must be a sequence of host:port, not a value"))
            }
            Directive::SentinelAuth => self.sentinel_auth = Some(value.to_string()),
            Directive::Tls | Directive::ServerTls => {
                return Err(Problem::new("must be a mapping, not a value"))
            }
            Directive::Servers => {
                self.server_entries += 1;
                let server =
                    parse_server(value).map_err(|e| Problem::with(e.reason(), e.hint()))?;
                self.servers.push(server);
            }
        }
        Ok(())
    }
}

impl Settings {
    /// Applies one of walnut's nested directives (`yaml::TREE_DIRECTIVES`).
    fn apply_tree(
        &mut self,
        directive: Directive,
        node: &super::yaml::RawNode,
        pool: &str,
        errs: &mut Vec<ConfigError>,
    ) {
        match directive {
            Directive::Tls => self.tls = super::tls::listen(node, pool, errs),
            Directive::ServerTls => self.server_tls = super::tls::server(node, pool, errs),
            Directive::Users => self.users = super::users::read(node, pool, errs),
            Directive::Sentinels => self.sentinels = sentinels(node, pool, errs),
            _ => errs.push(ConfigError(format!(
                "conf: pool '{pool}': directive takes a value, not {} {}",
                node.kind(),
                node.position()
            ))),
        }
    }
}

/// `sentinels:`: a sequence of `host:port`.
fn sentinels(
    node: &super::yaml::RawNode,
    pool: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Vec<super::SentinelAddr>> {
    use super::yaml::RawNode;
    let RawNode::Seq { items, .. } = node else {
        errs.push(ConfigError(format!(
            "conf: pool '{pool}': directive \"sentinels\" must be a sequence of host:port, not {} {}",
            node.kind(),
            node.position()
        )));
        return None;
    };
    let before = errs.len();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let parsed = match item {
            RawNode::Scalar(s) => s
                .text
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
                .filter(|(host, port)| !host.is_empty() && *port > 0),
            _ => None,
        };
        match parsed {
            Some((host, port)) => out.push(super::SentinelAddr {
                host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
                port,
            }),
            None => errs.push(ConfigError(format!(
                "conf: pool '{pool}': directive \"sentinels\" has an entry that is not host:port {}",
                item.position()
            ))),
        }
    }
    if out.is_empty() && errs.len() == before {
        errs.push(ConfigError(format!(
            "conf: pool '{pool}': directive \"sentinels\" lists no sentinel {}",
            node.position()
        )));
    }
    (errs.len() == before).then_some(out)
}

/// Applies a pool's directives, collecting every problem into `errs`.
pub(crate) fn build(raw: &RawPool, file: &str, errs: &mut Vec<ConfigError>) -> PoolDraft {
    let before = errs.len();
    let pool = one_line(&raw.name.text);
    let mut err = |msg: String| errs.push(ConfigError(msg));

    if raw.name.text.is_empty() {
        err(format!(
            "conf: '{file}' has a pool with an empty name {}",
            at(&raw.name)
        ));
    }

    let mut s = Settings::default();
    for entry in &raw.entries {
        let key = &entry.key;
        let name = one_line(&key.text);
        if key.text.is_empty() {
            err(format!(
                "conf: pool '{pool}' has a directive with an empty name {}",
                at(key)
            ));
            continue;
        }
        let Some(directive) = lookup(&DIRECTIVES, &key.text) else {
            // Keys are case-sensitive: point at the intended one when only the case differs.
            let hint = DIRECTIVES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&key.text))
                .map(|(n, _)| {
                    format!(" (directive names are case-sensitive: did you mean \"{n}\"?)")
                })
                .unwrap_or_default();
            err(format!(
                "conf: pool '{pool}': directive \"{name}\" is unknown{hint}"
            ));
            continue;
        };
        let (values, in_seq): (Vec<&Scalar>, bool) = match &entry.value {
            RawValue::Scalar(v) => (vec![v], false),
            RawValue::Seq(items) => (items.iter().collect(), true),
            RawValue::Tree(node) => {
                if s.seen.contains(&directive) {
                    err(format!(
                        "conf: pool '{pool}': directive \"{name}\" is a duplicate {}",
                        node.position()
                    ));
                    continue;
                }
                s.seen.push(directive);
                let mut problems = Vec::new();
                s.apply_tree(directive, node, &pool, &mut problems);
                problems.into_iter().for_each(|p| err(p.0));
                continue;
            }
        };
        for value in values {
            let repeatable = directive == Directive::Servers;
            if !repeatable && s.seen.contains(&directive) {
                err(format!(
                    "conf: pool '{pool}': directive \"{name}\" is a duplicate: {}",
                    quoted(&value.text)
                ));
                continue;
            }
            if !s.seen.contains(&directive) {
                s.seen.push(directive);
            }
            if value.text.is_empty() {
                if in_seq {
                    err(format!(
                        "conf: pool '{pool}': directive \"{name}\" has an empty entry"
                    ));
                } else {
                    err(format!(
                        "conf: pool '{pool}': directive \"{name}\" has no value"
                    ));
                }
                if repeatable {
                    s.server_entries += 1;
                }
                continue;
            }
            if let Err(p) = s.apply(directive, &value.text) {
                let hint = p.hint.map(|h| format!(" ({h})")).unwrap_or_default();
                err(format!(
                    "conf: pool '{pool}': directive \"{name}\" {}: {}{hint}",
                    p.reason,
                    quoted(&value.text)
                ));
            }
        }
    }

    // conf_validate_pool
    if !s.seen.contains(&Directive::Listen) {
        err(format!(
            "conf: pool '{pool}': directive \"listen:\" is missing"
        ));
    }
    if s.dedicated_connections
        .is_some_and(|n| n == 0 || n > MAX_DEDICATED_CONNECTIONS)
    {
        err(format!(
            "conf: pool '{pool}': directive \"dedicated_connections:\" must be between 1 and {MAX_DEDICATED_CONNECTIONS}"
        ));
    }
    if s.databases.is_some_and(|n| n == 0 || n > MAX_DATABASES) {
        err(format!(
            "conf: pool '{pool}': directive \"databases:\" must be between 1 and {MAX_DATABASES}"
        ));
    }
    let databases = s.databases.unwrap_or(defaults::DATABASES);
    if s.redis_db.is_some_and(|db| db >= databases) && (1..=MAX_DATABASES).contains(&databases) {
        err(format!(
            "conf: pool '{pool}': directive \"redis_db\" must be below \"databases\" ({databases})"
        ));
    }
    if s.server_connections == Some(0) {
        err(format!(
            "conf: pool '{pool}': directive \"server_connections:\" cannot be 0"
        ));
    }
    let cluster = s.redis_cluster.unwrap_or(false);
    if cluster && s.redis == Some(false) {
        err(format!(
            "conf: pool '{pool}': directive \"redis_cluster: true\" needs a redis pool, but \"redis\" is false"
        ));
    }
    let redis = s.redis.unwrap_or(cluster);
    if cluster {
        let placing = [
            (Directive::Hash, "hash"),
            (Directive::HashTag, "hash_tag"),
            (Directive::Distribution, "distribution"),
        ];
        for (directive, name) in placing {
            if s.seen.contains(&directive) {
                err(format!(
                    "conf: pool '{pool}': directive \"{name}\" cannot be used with \"redis_cluster: true\": the cluster's CRC16 slots and {{...}} hash tags place keys"
                ));
            }
        }
        if s.redis_db.is_some_and(|db| db > 0) {
            err(format!(
                "conf: pool '{pool}': directive \"redis_db\" cannot be used with \"redis_cluster: true\": a Redis Cluster has only database 0"
            ));
        }
    } else if s.read_from.is_some() && !s.seen.contains(&Directive::Sentinels) {
        err(format!(
            "conf: pool '{pool}': directive \"read_from\" is only valid with \"redis_cluster: true\" or \"sentinels:\""
        ));
    }
    if s.seen.contains(&Directive::Sentinels) {
        if cluster {
            err(format!(
                "conf: pool '{pool}': directives \"sentinels:\" and \"redis_cluster: true\" cannot be used together"
            ));
        }
        if s.redis != Some(true) {
            err(format!(
                "conf: pool '{pool}': directive \"sentinels:\" needs \"redis: true\""
            ));
        }
        for server in s.servers.iter().filter(|server| !server.has_alias) {
            err(format!(
                "conf: pool '{pool}': directive \"servers\" needs a name on every server with \"sentinels:\" (the master name Sentinel monitors, e.g. \"{} shard1\"): {}",
                server.pname,
                quoted(&server.pname)
            ));
        }
    } else if s.sentinel_auth.is_some() {
        err(format!(
            "conf: pool '{pool}': directive \"sentinel_auth\" is only valid with \"sentinels:\""
        ));
    }
    if s.redis_auth.is_some() && !redis {
        err(format!(
            "conf: pool '{pool}': directive \"redis_auth:\" is only valid for a redis pool"
        ));
    }
    if s.redis_username.is_some() && s.redis_auth.is_none() {
        err(format!(
            "conf: pool '{pool}': directive \"redis_username:\" needs \"redis_auth:\" (the password sent with it)"
        ));
    }
    if s.seen.contains(&Directive::Users) && !redis {
        err(format!(
            "conf: pool '{pool}': directive \"users:\" is only valid for a redis pool"
        ));
    }
    if s.seen.contains(&Directive::Users) && s.redis_auth.is_some() && s.redis_username.is_none() {
        err(format!(
            "conf: pool '{pool}': directives \"users:\" and \"redis_auth:\" are both set, so redis_auth would be a second client password; set \"redis_username:\" (\"default\" for a server without ACL users) to make redis_auth the servers' credentials only"
        ));
    }
    if s.server_entries == 0 {
        err(format!("conf: pool '{pool}' has no servers"));
    }
    match (s.hash_server_name, s.distribution_server_name) {
        (true, false) => err(format!(
            "conf: pool '{pool}': directive \"hash\" is \"server_name\", which needs \"distribution: server_name\" too"
        )),
        (false, true) => err(format!(
            "conf: pool '{pool}': directive \"distribution\" is \"server_name\", which needs \"hash: server_name\" too"
        )),
        (true, true) => {
            for server in s.servers.iter().filter(|server| !server.has_alias) {
                err(format!(
                    "conf: pool '{pool}': directive \"servers\" needs a name on every server with \"distribution: server_name\": {}",
                    quoted(&server.pname)
                ));
            }
        }
        (false, false) => {}
    }
    let servers = sort_servers(std::mem::take(&mut s.servers), &pool, errs);

    let listen_text = s.listen.as_ref().map(|(text, _)| text.clone());
    let config = match s.listen {
        Some((listen_text, listen)) if errs.len() == before => Some(PoolConfig {
            name: raw.name.text.clone(),
            listen_text,
            listen,
            hash: s.hash.unwrap_or(defaults::HASH),
            hash_tag: s.hash_tag,
            distribution: s.distribution.unwrap_or(defaults::DISTRIBUTION),
            timeout_ms: s.timeout.filter(|&t| t > 0).map(u64::from),
            backlog: s.backlog.unwrap_or(defaults::BACKLOG),
            client_connections: s.client_connections.unwrap_or(defaults::CLIENT_CONNECTIONS),
            redis,
            tcpkeepalive: s.tcpkeepalive.unwrap_or(false),
            reuseport: s.reuseport.unwrap_or(false),
            redis_auth: s.redis_auth,
            redis_db: s.redis_db.unwrap_or(defaults::REDIS_DB),
            databases: s.databases.unwrap_or(defaults::DATABASES),
            preconnect: s.preconnect.unwrap_or(false),
            auto_eject_hosts: s.auto_eject_hosts.unwrap_or(false),
            server_connections: s.server_connections.unwrap_or(defaults::SERVER_CONNECTIONS),
            dedicated_connections: s
                .dedicated_connections
                .unwrap_or(defaults::DEDICATED_CONNECTIONS),
            allow_flush: s.allow_flush.unwrap_or(true),
            server_retry_timeout_ms: s
                .server_retry_timeout
                .map_or(defaults::SERVER_RETRY_TIMEOUT_MS, u64::from),
            server_failure_limit: s
                .server_failure_limit
                .unwrap_or(defaults::SERVER_FAILURE_LIMIT),
            route_by_server_name: s.hash_server_name && s.distribution_server_name,
            eject_policy: s.eject_policy.unwrap_or_default(),
            health_probe: s.health_probe.unwrap_or(true),
            servers,
            tls: s.tls,
            server_tls: s.server_tls,
            redis_cluster: cluster,
            read_from: s.read_from.unwrap_or_default(),
            users: s.users.map(std::sync::Arc::new),
            sentinels: s.sentinels.unwrap_or_default(),
            sentinel_auth: s.sentinel_auth,
            redis_username: s.redis_username,
        }),
        _ => None,
    };

    PoolDraft {
        name: raw.name.text.clone(),
        listen_text,
        config,
    }
}

fn at(s: &Scalar) -> String {
    format!("(line {}, column {})", s.line, s.col)
}
