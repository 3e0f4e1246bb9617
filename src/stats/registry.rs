//! The process-wide stats: identity, connection counts, the pool/server layout, and the
//! aggregated JSON body refreshed every interval.
//!
//! How the served JSON is kept fresh without touching the data path:
//! * the data path only updates atomics in [`PoolStats`]/[`ServerStats`]/[`ConnectionStats`];
//! * an aggregator task ([`Stats::spawn_aggregator`]) re-renders the pools part of the JSON
//!   every interval (`-i` ms) into an `ArcSwap<Bytes>`, like twemproxy's aggregator thread
//!   publishing its `sum`;
//! * a stats reader ([`Stats::json`]) loads that body (one atomic load, no lock) and prefixes a
//!   header rendered on the spot: like twemproxy, `uptime`, `timestamp`, `total_connections`
//!   and `curr_connections` are current, the pool and server figures are up to one interval
//!   old.
//!
//! The layout (which pools and servers, in which order) is an `ArcSwap` too, so a reload can
//! replace it whole with [`Stats::set_pools`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::task::JoinHandle;

use super::counters::{Gauge, PoolStats, ServerStats};
use super::json::{self, JsonHeader, PoolJson};
use crate::config::PoolConfig;

/// twemproxy's default `-i`: 30 s.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(30_000);

/// Which `service` and `version` the JSON reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Identity {
    /// `"service":"nutcracker"`, `"version":"0.5.0"`: what existing dashboards and checks
    /// expect (the default).
    #[default]
    Nutcracker,
    /// `"service":"walnut"`, `"version":"<walnut's version>"` (`--stats-identity walnut`).
    Walnut,
}

impl Identity {
    /// `--stats-identity` values: `nutcracker` or `walnut`.
    pub fn parse(text: &str) -> Option<Identity> {
        match text {
            "nutcracker" => Some(Identity::Nutcracker),
            "walnut" => Some(Identity::Walnut),
            _ => None,
        }
    }

    pub fn service(self) -> &'static str {
        match self {
            Identity::Nutcracker => "nutcracker",
            Identity::Walnut => "walnut",
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Identity::Nutcracker => "0.5.0",
            Identity::Walnut => env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The host name, for `source` (gethostname, like twemproxy).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `total_connections` and `curr_connections`: every proxy listener, client connection and
/// server connection (the stats and metrics sockets are not counted, as in twemproxy).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    total: AtomicU64,
    current: Gauge,
}

impl ConnectionStats {
    /// A connection (or listener) was created.
    #[inline]
    pub fn opened(&self) {
        self.total.fetch_add(1, Relaxed);
        self.current.inc();
    }

    /// A connection created with [`opened`](Self::opened) was closed.
    #[inline]
    pub fn closed(&self) {
        self.current.dec();
    }

    /// [`opened`](Self::opened) now, [`closed`](Self::closed) when the guard drops.
    pub fn track(self: &Arc<Self>) -> ConnectionGuard {
        self.opened();
        ConnectionGuard(self.clone())
    }

    /// Connections ever created.
    pub fn total(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Connections open now.
    pub fn current(&self) -> u64 {
        self.current.get()
    }
}

/// Counts one connection as open while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<ConnectionStats>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// A server's name (its stats key) and figures.
#[derive(Clone, Debug)]
pub struct ServerEntry {
    pub name: String,
    pub stats: Arc<ServerStats>,
}

/// A pool's name, figures and servers, in twemproxy's sorted order.
#[derive(Clone, Debug)]
pub struct PoolEntry {
    pub name: String,
    pub stats: Arc<PoolStats>,
    pub servers: Vec<ServerEntry>,
}

impl PoolEntry {
    /// A pool with fresh (zero) figures for each named server, kept in the given order.
    pub fn new<I, S>(name: impl Into<String>, servers: I) -> PoolEntry
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PoolEntry {
            name: name.into(),
            stats: Arc::default(),
            servers: servers
                .into_iter()
                .map(|name| ServerEntry {
                    name: name.into(),
                    stats: Arc::default(),
                })
                .collect(),
        }
    }

    /// From a validated pool config (servers already in twemproxy's order, named by their
    /// stats name).
    pub fn from_config(config: &PoolConfig) -> PoolEntry {
        PoolEntry::new(
            config.name.clone(),
            config.servers.iter().map(|s| s.name.clone()),
        )
    }

    /// The figures of the server at `index` (the index the router returns).
    pub fn server(&self, index: usize) -> Option<&Arc<ServerStats>> {
        self.servers.get(index).map(|s| &s.stats)
    }

    /// Reads the figures for the JSON.
    pub fn to_json(&self) -> PoolJson<'_> {
        PoolJson {
            name: &self.name,
            figures: self.stats.figures(),
            servers: self
                .servers
                .iter()
                .map(|s| (s.name.as_str(), s.stats.figures()))
                .collect(),
        }
    }
}

/// How the stats are labelled and aggregated.
#[derive(Clone, Debug)]
pub struct StatsOptions {
    pub identity: Identity,
    /// `source`: normally [`hostname()`].
    pub source: String,
    /// `-i`: how often the JSON figures are refreshed.
    pub interval: Duration,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            identity: Identity::Nutcracker,
            source: hostname(),
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// Everything the stats listener and the metrics endpoint read.
#[derive(Debug)]
pub struct Stats {
    options: StatsOptions,
    started: Instant,
    connections: Arc<ConnectionStats>,
    pools: ArcSwap<Vec<PoolEntry>>,
    body: ArcSwap<Bytes>,
}

impl Stats {
    /// Starts the clock (`uptime`) and renders a first body.
    pub fn new(options: StatsOptions, pools: Vec<PoolEntry>) -> Arc<Stats> {
        let stats = Stats {
            options,
            started: Instant::now(),
            connections: Arc::default(),
            pools: ArcSwap::from_pointee(pools),
            body: ArcSwap::from_pointee(Bytes::new()),
        };
        stats.refresh();
        Arc::new(stats)
    }

    /// From validated pool configs.
    pub fn from_configs<'a>(
        options: StatsOptions,
        pools: impl IntoIterator<Item = &'a PoolConfig>,
    ) -> Arc<Stats> {
        Stats::new(
            options,
            pools.into_iter().map(PoolEntry::from_config).collect(),
        )
    }

    pub fn options(&self) -> &StatsOptions {
        &self.options
    }

    /// The process-wide connection counts.
    pub fn connections(&self) -> &Arc<ConnectionStats> {
        &self.connections
    }

    /// The current layout (one atomic load).
    pub fn pools(&self) -> Arc<Vec<PoolEntry>> {
        self.pools.load_full()
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<PoolEntry> {
        self.pools.load().iter().find(|p| p.name == name).cloned()
    }

    /// Replaces the layout (e.g. after a reload) and re-renders at once. Reuse the old
    /// entries' `Arc`s for pools and servers that remain, to keep their figures.
    pub fn set_pools(&self, pools: Vec<PoolEntry>) {
        self.pools.store(Arc::new(pools));
        self.refresh();
    }

    /// Replaces the servers of pool `pool` in the layout (a cluster pool's nodes changed).
    pub fn set_pool_servers(&self, pool: &str, servers: Vec<ServerEntry>) {
        let mut layout = (**self.pools.load()).clone();
        let Some(entry) = layout.iter_mut().find(|p| p.name == pool) else {
            return;
        };
        entry.servers = servers;
        self.set_pools(layout);
    }

    /// Seconds since [`Stats::new`].
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Re-renders the pools part of the JSON from the live figures. The aggregator calls it
    /// every interval.
    pub fn refresh(&self) {
        let pools = self.pools.load();
        let views: Vec<PoolJson<'_>> = pools.iter().map(PoolEntry::to_json).collect();
        self.body
            .store(Arc::new(Bytes::from(json::render_body(&views))));
    }

    /// Refreshes every interval until the task is aborted.
    pub async fn run_aggregator(self: Arc<Self>) {
        let period = self.options.interval.max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.refresh();
        }
    }

    /// Spawns [`run_aggregator`](Self::run_aggregator) on the current runtime.
    pub fn spawn_aggregator(self: &Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(self.clone().run_aggregator())
    }

    /// The JSON document: a header rendered now and the last aggregated body.
    pub fn json(&self) -> Bytes {
        let body = self.body.load();
        Bytes::from(json::join(&self.header(), &body))
    }

    /// The same document as (header rendered now, shared aggregated body): written back to
    /// back they are [`json`](Self::json), without copying the body.
    pub fn json_parts(&self) -> (Bytes, Bytes) {
        let body = Bytes::clone(&self.body.load());
        if body.is_empty() {
            return (self.json(), body);
        }
        let mut head = Vec::with_capacity(256);
        json::write_header(&mut head, &self.header());
        (Bytes::from(head), body)
    }

    fn header(&self) -> JsonHeader<'_> {
        JsonHeader {
            service: self.options.identity.service(),
            source: &self.options.source,
            version: self.options.identity.version(),
            uptime: self.uptime(),
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            total_connections: self.connections.total(),
            curr_connections: self.connections.current(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(interval_ms: u64) -> StatsOptions {
        StatsOptions {
            identity: Identity::Nutcracker,
            source: "host".into(),
            interval: Duration::from_millis(interval_ms),
        }
    }

    fn text(stats: &Stats) -> String {
        String::from_utf8(stats.json().to_vec()).unwrap()
    }

    #[test]
    fn identity() {
        assert_eq!(Identity::parse("walnut"), Some(Identity::Walnut));
        assert_eq!(Identity::parse("nutcracker"), Some(Identity::Nutcracker));
        assert_eq!(Identity::parse("x"), None);
        assert_eq!(Identity::default().version(), "0.5.0");
        assert_eq!(Identity::Walnut.version(), env!("CARGO_PKG_VERSION"));
        let stats = Stats::new(
            StatsOptions {
                identity: Identity::Walnut,
                ..options(1000)
            },
            vec![],
        );
        let json = text(&stats);
        assert!(json.starts_with(&format!(
            "{{\"service\":\"walnut\", \"source\":\"host\", \"version\":\"{}\", \"uptime\":0, ",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn connections_are_counted() {
        let stats = Stats::new(options(1000), vec![]);
        let c = stats.connections();
        c.opened();
        {
            let _g = c.track();
            assert_eq!((c.total(), c.current()), (2, 2));
        }
        assert_eq!((c.total(), c.current()), (2, 1));
        c.closed();
        c.closed();
        assert_eq!((c.total(), c.current()), (2, 0));
        assert!(text(&stats).contains("\"total_connections\":2, \"curr_connections\":0}\n"));
    }

    #[test]
    fn body_changes_only_on_refresh() {
        let stats = Stats::new(options(3_600_000), vec![PoolEntry::new("p", ["s1", "s2"])]);
        let pools = stats.pools();
        pools[0].server(1).unwrap().requests.add(5);
        stats.connections().opened();
        let before = text(&stats);
        assert!(before.contains("\"s2\": {\"server_eof\":0, \"server_err\":0, \"server_timedout\":0, \"server_connections\":0, \"server_ejected_at\":0, \"requests\":0,"));
        assert!(
            before.contains("\"curr_connections\":1, "),
            "the header is live"
        );
        stats.refresh();
        assert!(text(&stats).contains("\"requests\":5, "));
        let (head, body) = stats.json_parts();
        assert!(stats.json().ends_with(&body));
        assert!(head.starts_with(b"{\"service\":\"nutcracker\", "));
        assert!(head.ends_with(b"\"curr_connections\":1, "));
        assert!(body.starts_with(b"\"p\": {"));
        let empty = Stats::new(options(1000), vec![]);
        let (head, body) = empty.json_parts();
        assert!(body.is_empty());
        assert!(head.ends_with(b"}\n"));
    }

    #[tokio::test]
    async fn aggregator_refreshes_every_interval() {
        let stats = Stats::new(options(100), vec![PoolEntry::new("p", ["s"])]);
        let task = stats.spawn_aggregator();
        stats.pools()[0].stats.client_err.inc();
        assert!(text(&stats).contains("\"client_err\":0, "));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(text(&stats).contains("\"client_err\":1, "));
        task.abort();
    }

    #[test]
    fn set_pools_rerenders() {
        let stats = Stats::new(options(1000), vec![PoolEntry::new("a", ["x"])]);
        let keep = stats.pool("a").unwrap();
        keep.stats.forward_error.add(2);
        stats.set_pools(vec![keep, PoolEntry::new("b", ["y"])]);
        let json = text(&stats);
        assert!(json.contains("\"forward_error\":2, "));
        assert!(json.contains("}},\"b\": {"));
        assert!(stats.pool("c").is_none());
    }
}
