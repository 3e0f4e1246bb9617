//! The data plane: listener → client session → (codec, router) → backend connection → back.
//!
//! [`start`] binds every pool's listener and starts its backend tasks; the returned
//! [`Proxy`] serves until [`Proxy::drain`] (stop) and can apply a new config in place with
//! [`Proxy::reload`].

pub mod backend;
pub mod client_list;
pub mod cluster;
pub mod commands;
pub mod dedicated;
pub mod doorman;
pub mod error;
pub mod exchange;
pub mod fanout;
pub mod health;
pub mod lease;
pub mod listener;
pub mod memcache_client;
pub mod outbox;
pub mod pool;
pub mod pubsub;
pub mod redis_client;
pub mod reply_mode;
pub mod sentinel;
pub mod session;
pub mod stream;
pub mod subscriber;
pub mod timers;
pub mod tls_accept;
pub mod tracker;
pub mod transaction;
pub mod workers;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

use crate::config::{Config, PoolConfig};
use crate::stats::{self, Stats};
use doorman::Doorman;
use listener::Listener;
use pool::Pool;
use session::{DrainDeadline, DrainTally};

/// Why the proxy could not start, or a reload could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] listener::BindError),
    #[error("cannot open the epoll set where new clients wait: {0}")]
    Doorman(#[from] std::io::Error),
    #[error("pool '{pool}': {err}")]
    Tls {
        pool: String,
        err: crate::tls::TlsError,
    },
}

/// Builds a pool's TLS configs, or says which pool's files are wrong.
fn pool_tls(
    config: &PoolConfig,
    current: Option<&pool::PoolSnapshot>,
) -> Result<pool::PoolTls, StartError> {
    pool::PoolTls::build(config, current).map_err(|err| StartError::Tls {
        pool: config.name.clone(),
        err,
    })
}

/// One serving pool: its shared state, its listener task and its clients' drain signal.
#[derive(Debug)]
struct PoolEntry {
    pool: Arc<Pool>,
    listen_text: String,
    /// Shared with the accept task, so a pool that replaces this one on the same address
    /// can take the socket over.
    listener: Arc<Listener>,
    accept_task: JoinHandle<()>,
    socket_file: Option<PathBuf>,
    /// Set to a deadline to make this pool's client sessions drain and close.
    drain: watch::Sender<DrainDeadline>,
    /// Where its clients wait for their first byte.
    doorman: Arc<Doorman>,
    /// The listener counts as a connection in `total_connections`/`curr_connections`.
    _listener_counted: stats::ConnectionGuard,
}

impl PoolEntry {
    /// Binds and starts a pool (the listener is already bound).
    fn start(
        config: PoolConfig,
        tls: pool::PoolTls,
        listener: Arc<Listener>,
        stats: &Arc<Stats>,
        doorman: &Arc<Doorman>,
    ) -> PoolEntry {
        info!(
            "pool '{}' listening on {} with {} servers",
            config.name,
            config.listen_text,
            config.servers.len()
        );
        let listen_text = config.listen_text.clone();
        let pool = Pool::start(config, tls, stats.connections().clone());
        let _ = pool.stats_registry.set(Arc::downgrade(stats));
        log_threads(&pool);
        let socket_file = listener.socket_path().map(|p| p.to_path_buf());
        let (drain, drain_rx) = watch::channel(None);
        let accept_task = tokio::spawn(Listener::run(
            listener.clone(),
            pool.clone(),
            drain_rx,
            doorman.clone(),
        ));
        PoolEntry {
            pool,
            listen_text,
            listener,
            accept_task,
            socket_file,
            drain,
            doorman: doorman.clone(),
            _listener_counted: stats.connections().track(),
        }
    }

    /// Closes the listener (and its unix socket file), and tells the clients to drain: each
    /// answers everything it is sent until it has been quiet for a moment, then closes; at
    /// `deadline` at the latest.
    fn retire(self, deadline: Instant) -> Arc<Pool> {
        if let Some(path) = &self.socket_file {
            let _ = std::fs::remove_file(path);
        }
        // Clients still in the backlog are taken in before the socket closes, so what they
        // sent is answered rather than reset (a pool handed over keeps them for its successor).
        self.listener
            .admit_backlog(&self.pool, &self.drain.subscribe(), &self.doorman);
        self.hand_over(deadline).0
    }

    /// Stops accepting and drains the clients like [`PoolEntry::retire`], but keeps the bound
    /// socket for the pool that replaces this one on the same address: no moment without a
    /// listener, and no bind that would find the address still in use.
    fn hand_over(self, deadline: Instant) -> (Arc<Pool>, Arc<Listener>) {
        self.accept_task.abort();
        let _ = self.drain.send(Some(deadline));
        // Waiting clients have sent nothing: they close now.
        self.doorman.close_draining();
        (self.pool, self.listener)
    }

    fn name(&self) -> String {
        self.pool.current.load().config.name.clone()
    }
}

/// Says which threads serve a pool, when there is more than one: a pool with one connection
/// per server runs on one thread, as connections are never multiplied per thread.
fn log_threads(pool: &Pool) {
    let snapshot = pool.current.load();
    let connections = snapshot.config.server_connections.max(1) as usize;
    let workers = pool.placement.workers;
    if workers < 2 {
        return;
    }
    let owners = pool.placement.owners(connections);
    let hint = if owners < workers {
        format!("; server_connections: {workers} would spread it over all {workers}")
    } else {
        String::new()
    };
    info!(
        "pool '{}' runs on {owners} of {workers} threads (server_connections: {connections}){hint}",
        snapshot.config.name
    );
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    entries: Vec<PoolEntry>,
    /// The stats registry: its layout follows the pools and servers being served.
    stats: Arc<Stats>,
    /// Pools removed by a reload whose clients may still be draining.
    retired: Vec<Arc<Pool>>,
    /// Where new clients of every pool wait for their first byte, and its task.
    doorman: Arc<Doorman>,
    doorman_task: JoinHandle<()>,
}

/// What a reload changed, for its one summary log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub pools_added: Vec<String>,
    pub pools_removed: Vec<String>,
    pub pools_changed: Vec<String>,
    /// `pool/server` names.
    pub servers_added: Vec<String>,
    pub servers_removed: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "pools added: {}; pools removed: {}; pools changed: {}; servers added: {}; servers removed: {}",
            list(&self.pools_added),
            list(&self.pools_removed),
            list(&self.pools_changed),
            list(&self.servers_added),
            list(&self.servers_removed)
        )
    }
}

/// Binds all listeners (in sorted pool order) and starts serving. Must run inside the runtime.
pub fn start(config: Config, stats: Arc<Stats>) -> Result<Proxy, StartError> {
    let mut tls = Vec::with_capacity(config.pools.len());
    for pool in &config.pools {
        tls.push(pool_tls(pool, None)?);
    }
    let mut bound = Vec::with_capacity(config.pools.len());
    for pool in &config.pools {
        bound.push(Arc::new(listener::bind(pool)?));
    }
    let (doorman, doorman_task) = Doorman::start()?;
    let entries = config
        .pools
        .into_iter()
        .zip(tls)
        .zip(bound)
        .map(|((pool, tls), listener)| PoolEntry::start(pool, tls, listener, &stats, &doorman))
        .collect();
    let proxy = Proxy {
        entries,
        stats,
        retired: Vec::new(),
        doorman,
        doorman_task,
    };
    proxy.publish_stats_layout();
    Ok(proxy)
}

impl Proxy {
    /// Points the stats registry at the pools and servers being served (their own counters,
    /// so a server that stays across a reload keeps counting).
    fn publish_stats_layout(&self) {
        let layout = self
            .entries
            .iter()
            .map(|entry| {
                let snapshot = entry.pool.current.load();
                stats::PoolEntry {
                    name: snapshot.config.name.clone(),
                    stats: entry.pool.stats.clone(),
                    servers: snapshot
                        .servers
                        .iter()
                        .map(|s| stats::ServerEntry {
                            name: s.info.name.clone(),
                            stats: s.info.stats.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        self.stats.set_pools(layout);
    }

    /// The pools being served, in sorted order.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.entries.iter().map(|e| e.pool.clone()).collect()
    }

    /// Applies a new, already validated config without a restart:
    /// - an unchanged pool keeps its listener, clients and backend connections untouched;
    /// - a changed pool (servers, weights, hash, distribution, options) gets a new routing
    ///   snapshot swapped in at once, keeping the connections of servers that stay;
    /// - a new pool starts listening;
    /// - a removed pool, or one whose listen address changed, closes its listener and drains
    ///   its clients (a new listener opens where one is needed); so does one whose protocol
    ///   (`redis:`) changed.
    ///
    /// New listeners are bound before anything changes, so a bind failure changes nothing.
    pub fn reload(&mut self, config: Config) -> Result<ReloadSummary, StartError> {
        let mut summary = ReloadSummary::default();
        // A pool keeps its listener and clients unless its name, its address or its protocol
        // changed: a client speaks the protocol it connected with, so a pool that switches
        // between Redis and memcached is replaced (its old clients drain) like a moved one.
        // The same holds for TLS: a client speaks TLS or not from its first byte.
        let stays = |pool: &PoolConfig, entry: &PoolEntry| {
            let current = entry.pool.current.load();
            entry.name() == pool.name
                && entry.listen_text == pool.listen_text
                && current.config.redis == pool.redis
                && current.config.tls.is_some() == pool.tls.is_some()
                && current.config.redis_cluster == pool.redis_cluster
        };
        // TLS files are read before anything changes too.
        let mut tls = Vec::with_capacity(config.pools.len());
        for pool in &config.pools {
            let entry = self.entries.iter().find(|entry| stays(pool, entry));
            let current = entry.map(|e| e.pool.current.load_full());
            tls.push(pool_tls(pool, current.as_deref())?);
        }
        // Pools that need a listener: bind every new address first, so a bind failure
        // changes nothing; only then is a listen address a retiring pool holds handed over
        // to its successor.
        let mut bound = Vec::new();
        for pool in &config.pools {
            let needs_listener = !self.entries.iter().any(|entry| stays(pool, entry));
            let held = self
                .entries
                .iter()
                .any(|e| e.listen_text == pool.listen_text);
            if needs_listener && !held {
                bound.push((pool.listen_text.clone(), Arc::new(listener::bind(pool)?)));
            }
        }
        let mut to_bind = Vec::new();
        for pool in &config.pools {
            if self.entries.iter().any(|entry| stays(pool, entry)) {
                continue;
            }
            let held = self
                .entries
                .iter()
                .position(|e| e.listen_text == pool.listen_text);
            let listener = match held {
                Some(index) => {
                    let entry = self.entries.remove(index);
                    summary.pools_removed.push(entry.name());
                    let (retired, listener) = entry.hand_over(reload_deadline());
                    self.retired.push(retired);
                    listener
                }
                None => match bound
                    .iter()
                    .position(|(listen, _)| *listen == pool.listen_text)
                {
                    Some(index) => bound.swap_remove(index).1,
                    // Two new pools on one address: config validation rejects that.
                    None => continue,
                },
            };
            to_bind.push((pool.listen_text.clone(), listener));
        }
        let mut entries = Vec::with_capacity(config.pools.len());
        for (pool, tls) in config.pools.into_iter().zip(tls) {
            match self.entries.iter().position(|entry| stays(&pool, entry)) {
                Some(index) => {
                    let entry = self.entries.remove(index);
                    if *entry.pool.current.load().config != pool {
                        let name = pool.name.clone();
                        let (added, removed) = entry.pool.reconfigure(pool, tls);
                        summary
                            .servers_added
                            .extend(added.into_iter().map(|s| format!("{name}/{s}")));
                        summary
                            .servers_removed
                            .extend(removed.into_iter().map(|s| format!("{name}/{s}")));
                        summary.pools_changed.push(name);
                    }
                    entries.push(entry);
                }
                None => {
                    let Some(index) = to_bind
                        .iter()
                        .position(|(listen, _)| *listen == pool.listen_text)
                    else {
                        continue;
                    };
                    let listener = to_bind.swap_remove(index).1;
                    summary.pools_added.push(pool.name.clone());
                    entries.push(PoolEntry::start(
                        pool,
                        tls,
                        listener,
                        &self.stats,
                        &self.doorman,
                    ));
                }
            }
        }
        for entry in self.entries.drain(..) {
            summary.pools_removed.push(entry.name());
            self.retired.push(entry.retire(reload_deadline()));
        }
        self.entries = entries;
        self.retired
            .retain(|pool| pool.clients.load(Ordering::Acquire) > 0);
        self.publish_stats_layout();
        info!("reload: {summary}");
        Ok(summary)
    }

    /// Stops accepting clients, then lets every client be answered for everything it sends
    /// until it is quiet (see [`session::serve_client`]) and waits for the servers to take
    /// what was forwarded (memcached `noreply` requests have no client waiting for them);
    /// at `limit`, the sessions still open close, counting what they leave unanswered.
    pub async fn drain(&mut self, limit: Duration) -> DrainReport {
        let deadline = Instant::now() + limit;
        for entry in self.entries.drain(..) {
            self.retired.push(entry.retire(deadline));
        }
        let open = |pools: &[Arc<Pool>]| {
            pools
                .iter()
                .map(|p| p.clients.load(Ordering::Acquire))
                .sum::<usize>()
        };
        let queued = |pools: &[Arc<Pool>]| {
            pools.iter().any(|p| {
                p.current.load().servers.iter().any(|s| {
                    let stats = &s.info.stats;
                    stats.in_queue.get() > 0 || stats.out_queue.get() > 0
                })
            })
        };
        // The sessions close at the deadline themselves; a moment more lets them count.
        let give_up = deadline + DRAIN_REPORT_GRACE;
        while (open(&self.retired) > 0 || queued(&self.retired)) && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tally = |field: fn(&DrainTally) -> &AtomicUsize| {
            self.retired
                .iter()
                .map(|p| field(&p.drain_cut).load(Ordering::Acquire))
                .sum()
        };
        DrainReport {
            cut_clients: tally(|t| &t.clients),
            cut_requests: tally(|t| &t.requests),
            still_open: open(&self.retired),
        }
    }
}

/// What a drain left undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Clients the deadline closed with requests unanswered.
    pub cut_clients: usize,
    /// Requests those clients had sent that got no reply.
    pub cut_requests: usize,
    /// Clients still open when the drain gave up.
    pub still_open: usize,
}

/// How long a pool a reload removes (or moves) gives its clients to finish.
const RELOAD_DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long the drain waits past its deadline for the sessions to close and count.
const DRAIN_REPORT_GRACE: Duration = Duration::from_millis(500);

fn reload_deadline() -> Instant {
    Instant::now() + RELOAD_DRAIN_LIMIT
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for entry in self.entries.drain(..) {
            entry.retire(Instant::now());
        }
        self.doorman_task.abort();
    }
}
