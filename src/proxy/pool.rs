//! A server pool at run time: its config, router and backend servers as one immutable
//! snapshot, published through an `ArcSwap` so it can be replaced whole (ejection, reload)
//! while client sessions read it without a lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use super::backend::{spawn_connection, BackendRequest, Lane, ServerInfo, ServerOwner};
use super::error::BackendError;
use super::health::{self, ProbeKind, ServerHealth};
use super::session::DrainTally;
use super::workers;
use crate::cluster::redirect::NodeAddr;
use crate::cluster::table::SlotTable;
use crate::cluster::topology::SlotMap;
use crate::config::{EjectPolicy, PoolConfig, ServerAddr};
use crate::route::PoolRouter;
use crate::stats::{ConnectionStats, PoolStats, ServerStats};
use crate::tls;

/// One lane's shared connections to a server.
type Connections = Box<[mpsc::UnboundedSender<BackendRequest>]>;

/// One backend server and its connections.
#[derive(Debug)]
pub struct Server {
    pub info: Arc<ServerInfo>,
    /// The pool's own lane (its `redis_db`, RESP2), opened with the server. Connection `i`
    /// runs on worker `placement.first_worker + i` (mod the worker count).
    connections: Vec<mpsc::UnboundedSender<BackendRequest>>,
    /// The lane of `connections`. A reload that changes `redis_db` keeps the server: clients
    /// already connected stay in their database, new ones start in the new one's lane.
    default_lane: Lane,
    /// Every other lane (database × protocol, `Lane::index`), opened the first time a client
    /// of it sends something, with as many connections on the same workers.
    lanes: Box<[OnceLock<Connections>]>,
    /// Connections of its own for each blocking command.
    pub dedicated: Arc<super::dedicated::Dedicated>,
    placement: Placement,
}

impl Server {
    /// The connection a client uses: always the same one for a given client, so one client's
    /// requests to one server stay in order even with `server_connections > 1`. It is one that
    /// runs on the client's own worker when there is one, so the request never wakes another
    /// thread.
    ///
    /// `None` for a lane beyond the pool's `databases` (a reload lowered it).
    pub fn connection_for(
        &self,
        client_id: u64,
        worker: usize,
        lane: Lane,
    ) -> Option<&mpsc::UnboundedSender<BackendRequest>> {
        let index = self
            .placement
            .connection_index(self.connections.len(), worker, client_id);
        if lane == self.default_lane {
            return Some(&self.connections[index]);
        }
        let slot = (lane.db as usize)
            .checked_mul(2)
            .map(|i| i + usize::from(lane.resp3))
            .and_then(|i| self.lanes.get(i))?;
        let connections = slot.get_or_init(|| {
            (0..self.connections.len())
                .map(|i| {
                    let worker = self.placement.first_worker + i;
                    spawn_connection(self.info.clone(), false, worker, lane)
                })
                .collect()
        });
        Some(&connections[index])
    }

    /// Queues `request` on the connection its client and lane take (a redirect, a request
    /// handed to a replacement); one that cannot be queued fails.
    pub fn enqueue(&self, request: BackendRequest) {
        let stats = &self.info.stats;
        stats.enqueue(request.frame.len() as u64);
        let reply_to = &request.reply_to;
        let Some(connection) = self.connection_for(reply_to.client, reply_to.worker, reply_to.lane)
        else {
            return request.fail(BackendError::DbOutOfRange, stats);
        };
        if let Err(refused) = connection.send(request) {
            refused.0.fail(BackendError::ConnectionRefused, stats);
        }
    }

    /// The lanes it can serve: one per database and protocol.
    fn lane_count(&self) -> usize {
        self.lanes.len()
    }
}

/// The worker a pool's first connections run on: pools take turns, so several pools with one
/// connection per server spread over the workers.
static NEXT_FIRST_WORKER: AtomicUsize = AtomicUsize::new(0);

/// An immutable view of a pool: everything a request needs to be routed and sent.
#[derive(Debug)]
pub struct PoolSnapshot {
    pub config: Arc<PoolConfig>,
    pub router: PoolRouter,
    pub servers: Vec<Arc<Server>>,
    /// How clients reach the pool over TLS (`tls:`), if they do.
    pub listen_tls: Option<Arc<tls::Acceptor>>,
    /// How the pool reaches its servers over TLS (`server_tls:`), if it does.
    pub server_tls: Option<Arc<tls::Connector>>,
    /// A Redis Cluster pool: why its last topology refresh failed, if it did.
    pub cluster_error: Option<Arc<str>>,
    /// A Sentinel pool with `read_from` replicas: each server's replicas (by server index).
    pub replicas: Arc<Vec<Vec<Arc<Server>>>>,
    /// A Redis pool's command catalog, read once from a server (`proxy::commands`); the
    /// same one in every snapshot of the pool.
    pub commands: super::commands::Learned,
}

/// A pool's TLS configs, built before the pool starts or changes (so a file that went bad
/// since `-t` changes nothing).
#[derive(Debug, Default, Clone)]
pub struct PoolTls {
    pub listen: Option<Arc<tls::Acceptor>>,
    pub server: Option<Arc<tls::Connector>>,
}

/// How often a pool looks at its certificate, key and CA files.
const TLS_FILES_CHECK: Duration = Duration::from_secs(1);

/// Rebuilds a pool's TLS configs when their files change on disk (certificate rotation):
/// new handshakes use the new files, open sessions go on as they are. Stops with the pool.
async fn watch_tls_files(pool: Weak<Pool>) {
    loop {
        tokio::time::sleep(TLS_FILES_CHECK).await;
        let Some(pool) = pool.upgrade() else { return };
        let snapshot = pool.current.load();
        let name = &snapshot.config.name;
        let listen = snapshot
            .listen_tls
            .as_ref()
            .map(|l| ("tls", l.refresh(false)));
        let server = snapshot
            .server_tls
            .as_ref()
            .map(|s| ("server_tls", s.refresh(false)));
        for (directive, refresh) in listen.into_iter().chain(server) {
            match refresh {
                tls::Refresh::Rebuilt => tracing::info!(
                    "pool '{name}': the {directive} files changed; new TLS sessions use them"
                ),
                tls::Refresh::Failed(err) => warn!(
                    "pool '{name}': the {directive} files changed but cannot be used ({err}); TLS sessions keep the previous ones"
                ),
                tls::Refresh::Unchanged | tls::Refresh::StillFailing => {}
            }
        }
    }
}

impl PoolTls {
    /// The configs for `config`: the ones `current` already serves with when their files
    /// are the same (re-read now, as a reload re-reads every file), else new ones.
    pub fn build(
        config: &PoolConfig,
        current: Option<&PoolSnapshot>,
    ) -> Result<PoolTls, tls::TlsError> {
        fn side<C, F: tls::Source<Config = C> + Clone + PartialEq>(
            files: Option<&F>,
            current: Option<&Arc<tls::Live<C, F>>>,
        ) -> Result<Option<Arc<tls::Live<C, F>>>, tls::TlsError> {
            let Some(files) = files else { return Ok(None) };
            if let Some(live) = current.filter(|live| live.files() == files) {
                if let tls::Refresh::Failed(err) = live.refresh(true) {
                    return Err(err);
                }
                return Ok(Some(live.clone()));
            }
            Ok(Some(Arc::new(tls::Live::new(files)?)))
        }
        Ok(PoolTls {
            listen: side(
                config.tls.as_ref(),
                current.and_then(|c| c.listen_tls.as_ref()),
            )?,
            server: side(
                config.server_tls.as_ref(),
                current.and_then(|c| c.server_tls.as_ref()),
            )?,
        })
    }
}

/// A pool's shared state: the current snapshot and its live client count.
#[derive(Debug)]
pub struct Pool {
    pub current: ArcSwap<PoolSnapshot>,
    pub clients: AtomicUsize,
    /// The pool's counters; kept across reloads.
    pub stats: Arc<PoolStats>,
    /// Process-wide connection counts (`total_connections`, `curr_connections`).
    pub connections: Arc<ConnectionStats>,
    /// Serialises snapshot rebuilds (ejection, return); never taken on the request path.
    rebuild: Mutex<()>,
    /// Which workers run the pool's connections and clients.
    pub placement: Placement,
    /// What a drain deadline cut off among its clients.
    pub drain_cut: DrainTally,
    /// A Redis Cluster pool's topology refreshes (unused by other pools).
    pub cluster: super::cluster::ClusterControl,
    /// Where the stats layout lives, for a cluster pool whose servers come and go.
    pub stats_registry: std::sync::OnceLock<Weak<crate::stats::Stats>>,
    /// Its live Redis sessions, for `CLIENT LIST`; kept across reloads.
    pub sessions: Arc<super::client_list::ClientRegistry>,
}

/// `*N\r\n$len\r\narg\r\n…` for handshake commands.
fn command_frame(args: &[&[u8]]) -> Bytes {
    Bytes::from(crate::proto::redis::pubsub::frame_of_bulks(args))
}

/// AUTH before SELECT: the other order fails with NOAUTH (a twemproxy bug walnut fixes).
pub(super) fn handshake_for(config: &PoolConfig) -> Vec<(&'static str, Bytes)> {
    let mut steps = Vec::new();
    if !config.redis {
        return steps;
    }
    match (&config.redis_username, &config.redis_auth) {
        (Some(user), Some(password)) => steps.push((
            "AUTH",
            command_frame(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
        )),
        (None, Some(password)) => {
            steps.push(("AUTH", command_frame(&[b"AUTH", password.as_bytes()])))
        }
        _ => {}
    }
    if config.redis_db > 0 {
        let db = config.redis_db.to_string();
        steps.push(("SELECT", command_frame(&[b"SELECT", db.as_bytes()])));
    }
    // Replicas serve reads only after READONLY; masters take it and change nothing.
    if config.redis_cluster && config.read_from != crate::config::ReadFrom::Master {
        steps.push(("READONLY", command_frame(&[b"READONLY"])));
    }
    // A Sentinel pool's master must say it is one before it gets a request.
    if !config.sentinels.is_empty() {
        steps.push(("ROLE", command_frame(&[b"ROLE"])));
    }
    steps
}

/// The handshake of a Sentinel pool's replica connections: no `ROLE` check.
fn replica_handshake(config: &PoolConfig) -> Vec<(&'static str, Bytes)> {
    let mut steps = handshake_for(config);
    steps.retain(|(label, _)| *label != "ROLE");
    steps
}

impl Pool {
    /// Builds a pool and starts its backend connection tasks (which connect lazily unless
    /// `preconnect`). Must run inside the tokio runtime.
    pub fn start(config: PoolConfig, tls: PoolTls, connections: Arc<ConnectionStats>) -> Arc<Pool> {
        let config = Arc::new(config);
        let workers = workers::count();
        // The first pool starts on worker 0, where clients are accepted: its new clients need
        // no hand-over to another thread.
        let first_worker = NEXT_FIRST_WORKER.fetch_add(1, Ordering::Relaxed) % workers;
        let placement = Placement {
            first_worker,
            workers,
        };
        Arc::new_cyclic(|pool: &Weak<Pool>| {
            let handshake = Arc::new(handshake_for(&config));
            // A cluster pool's servers are the nodes its topology source finds.
            let (servers, router) = if config.redis_cluster {
                tokio::spawn(super::cluster::run_topology(pool.clone()));
                (Vec::new(), PoolRouter::cluster(SlotTable::empty(), 0))
            } else {
                if !config.sentinels.is_empty() {
                    tokio::spawn(super::sentinel::run(pool.clone()));
                }
                let servers = config
                    .servers
                    .iter()
                    .map(|server| {
                        new_server(pool, &config, server, &handshake, &connections, placement)
                    })
                    .collect();
                (servers, PoolRouter::with_all_live(&config))
            };
            let snapshot = PoolSnapshot {
                router,
                config: config.clone(),
                servers,
                listen_tls: tls.listen,
                server_tls: tls.server,
                cluster_error: None,
                replicas: Arc::default(),
                commands: super::commands::Learned::default(),
            };
            if config.redis {
                tokio::spawn(super::commands::learn(pool.clone()));
            }
            // Every pool: a reload may give it `server_tls:` later.
            tokio::spawn(watch_tls_files(pool.clone()));
            Pool {
                current: ArcSwap::from_pointee(snapshot),
                clients: AtomicUsize::new(0),
                stats: Arc::default(),
                connections,
                rebuild: Mutex::new(()),
                placement,
                drain_cut: DrainTally::default(),
                cluster: super::cluster::ClusterControl::default(),
                stats_registry: std::sync::OnceLock::new(),
                sessions: Arc::default(),
            }
        })
    }

    /// Applies a changed config to a running pool: servers that stay (same name, address and
    /// connection count) keep their connections, health and counters; new ones start; removed
    /// ones leave the snapshot, and their connections close once their in-flight requests are
    /// answered. The new routing table is swapped in at once: requests already routed finish
    /// on their old server. Returns the names of the servers added and removed.
    pub fn reconfigure(
        self: &Arc<Pool>,
        config: PoolConfig,
        tls: PoolTls,
    ) -> (Vec<String>, Vec<String>) {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let config = Arc::new(config);
        let handshake = Arc::new(handshake_for(&config));
        if config.redis_cluster && current.config.redis_cluster {
            // The nodes stay; new seeds and options are used by the next refresh, now.
            for server in &current.servers {
                server.info.handshake.store(handshake.clone());
            }
            self.current.store(Arc::new(PoolSnapshot {
                config,
                router: current.router.clone(),
                servers: current.servers.clone(),
                listen_tls: tls.listen,
                server_tls: tls.server,
                cluster_error: current.cluster_error.clone(),
                replicas: current.replicas.clone(),
                commands: current.commands.clone(),
            }));
            self.cluster.refresh_soon();
            return (Vec::new(), Vec::new());
        }
        if !config.sentinels.is_empty() && current.config.sentinels.is_empty() {
            tokio::spawn(super::sentinel::run(Arc::downgrade(self)));
        }
        self.cluster.refresh_soon();
        let weak = Arc::downgrade(self);
        let mut added = Vec::new();
        let servers: Vec<Arc<Server>> = config
            .servers
            .iter()
            .map(|server| {
                let sentinel = !config.sentinels.is_empty();
                let kept = current.servers.iter().find(|old| {
                    old.info.name == server.name
                        && (old.info.addr == server.addr || sentinel)
                        && old.connections.len() == config.server_connections.max(1) as usize
                        && old.lane_count() == lanes_of(&config)
                        && old.info.probe == probe_kind(&config)
                });
                match kept {
                    Some(old) => {
                        old.info.handshake.store(handshake.clone());
                        old.clone()
                    }
                    None => {
                        added.push(server.name.clone());
                        new_server(
                            &weak,
                            &config,
                            server,
                            &handshake,
                            &self.connections,
                            self.placement,
                        )
                    }
                }
            })
            .collect();
        let removed = removed_names(&current.servers, &servers);
        let router = router_for(&config, &servers);
        self.current.store(Arc::new(PoolSnapshot {
            config,
            router,
            servers,
            listen_tls: tls.listen,
            server_tls: tls.server,
            cluster_error: None,
            replicas: current.replicas.clone(),
            commands: current.commands.clone(),
        }));
        (added, removed)
    }

    /// A connection to `server` failed: count it, and eject the server when the streak
    /// reaches `server_failure_limit` (only with `auto_eject_hosts`).
    pub fn server_failed(self: &Arc<Pool>, server: &ServerInfo, err: &BackendError) {
        let config = self.current.load().config.clone();
        if config.redis_cluster {
            // The cluster fails over by itself; learn its new shape.
            self.cluster.refresh_soon();
            return;
        }
        if !config.auto_eject_hosts || !server.health.record_failure(config.server_failure_limit) {
            return;
        }
        server.stats.server_ejected_at.set_now();
        self.stats.server_ejects.inc();
        warn!(
            "pool '{}': ejecting server '{}' for {} ms after {} consecutive failures (last: {err})",
            config.name,
            server.name,
            config.server_retry_timeout_ms,
            config.server_failure_limit.max(1)
        );
        self.rebuild_router();
        let Some(server) = self.find_server(&server.name) else {
            return;
        };
        tokio::spawn(return_after_retry_timeout(Arc::downgrade(self), server));
    }

    fn find_server(&self, name: &str) -> Option<Arc<Server>> {
        self.current
            .load()
            .servers
            .iter()
            .find(|s| s.info.name == name)
            .cloned()
    }

    /// Publishes a new snapshot whose router reflects the servers' current health.
    fn rebuild_router(&self) {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        self.current.store(Arc::new(PoolSnapshot {
            config: current.config.clone(),
            router: router_for(&current.config, &current.servers),
            servers: current.servers.clone(),
            listen_tls: current.listen_tls.clone(),
            server_tls: current.server_tls.clone(),
            cluster_error: current.cluster_error.clone(),
            replicas: current.replicas.clone(),
            commands: current.commands.clone(),
        }));
    }

    /// A cluster pool's new slot map: nodes it names that the pool already has keep their
    /// connections; new ones start; the others leave the snapshot and close once their
    /// in-flight requests are answered. Returns the nodes added and removed.
    pub fn apply_slot_map(self: &Arc<Pool>, map: &SlotMap) -> (Vec<String>, Vec<String>) {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let config = &current.config;
        let handshake = Arc::new(handshake_for(config));
        let weak = Arc::downgrade(self);
        let mut added = Vec::new();
        let servers: Vec<Arc<Server>> = map
            .nodes
            .iter()
            .map(|node| {
                let server = node_server(node);
                match current.servers.iter().find(|s| s.info.addr == server.addr) {
                    Some(old) => old.clone(),
                    None => {
                        added.push(server.name.clone());
                        new_server(
                            &weak,
                            config,
                            &server,
                            &handshake,
                            &self.connections,
                            self.placement,
                        )
                    }
                }
            })
            .collect();
        let removed = removed_names(&current.servers, &servers);
        let table = SlotTable::build(map, |node| node);
        self.current.store(Arc::new(PoolSnapshot {
            config: config.clone(),
            router: PoolRouter::cluster(table, servers.len()),
            servers,
            listen_tls: current.listen_tls.clone(),
            server_tls: current.server_tls.clone(),
            cluster_error: None,
            replicas: current.replicas.clone(),
            commands: current.commands.clone(),
        }));
        (added, removed)
    }

    /// The server of cluster node `node`, added to the pool if it is new; with `slot` (a
    /// `MOVED` reply), that slot is served by it from now on, in a new slot table swapped in
    /// at once.
    pub fn apply_moved(
        self: &Arc<Pool>,
        slot: Option<u16>,
        node: &NodeAddr,
    ) -> Option<Arc<Server>> {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let table = current.router.slot_table()?;
        let wanted = node_server(node);
        let mut servers = current.servers.clone();
        let index = match servers.iter().position(|s| s.info.addr == wanted.addr) {
            Some(index) => index,
            None => {
                let handshake = Arc::new(handshake_for(&current.config));
                servers.push(new_server(
                    &Arc::downgrade(self),
                    &current.config,
                    &wanted,
                    &handshake,
                    &self.connections,
                    self.placement,
                ));
                servers.len() - 1
            }
        };
        let added = servers.len() > current.servers.len();
        let table = match slot {
            Some(slot) if table.shard(slot).map(|s| s.master) != Some(index) => {
                table.with_slot_moved(slot, index)
            }
            _ if added => table.clone(),
            _ => return servers.get(index).cloned(),
        };
        let server = servers.get(index).cloned();
        self.current.store(Arc::new(PoolSnapshot {
            config: current.config.clone(),
            router: PoolRouter::cluster(table, servers.len()),
            servers,
            listen_tls: current.listen_tls.clone(),
            server_tls: current.server_tls.clone(),
            cluster_error: current.cluster_error.clone(),
            replicas: current.replicas.clone(),
            commands: current.commands.clone(),
        }));
        server
    }

    /// Sends `requests`, which waited for `server`, to the server that has replaced it
    /// under the same name (a Sentinel switch); returns them when there is none yet, and
    /// asks the topology source to look again.
    pub fn reroute(
        &self,
        server: &ServerInfo,
        requests: Vec<BackendRequest>,
    ) -> Vec<BackendRequest> {
        let current = self.current.load();
        let replacement = current
            .servers
            .iter()
            .find(|s| s.info.name == server.name && !std::ptr::eq(&*s.info, server));
        let Some(replacement) = replacement else {
            self.cluster.refresh_soon();
            return requests;
        };
        for request in requests {
            replacement.enqueue(request);
        }
        Vec::new()
    }

    /// A Sentinel pool's server `index` has its master at `addr` now: a new server with the
    /// same name, counters and placement takes its place; the old one's connections close
    /// once their requests are answered. Returns the old address, or `None` if nothing
    /// changed.
    pub fn switch_master(self: &Arc<Pool>, index: usize, addr: &ServerAddr) -> Option<Arc<Server>> {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let old = current.servers.get(index)?;
        if old.info.addr == *addr {
            return None;
        }
        let config = &current.config;
        let pname = match addr {
            ServerAddr::Tcp { host, port } => format!("{host}:{port}:1"),
            ServerAddr::Unix { path } => format!("{}:1", path.display()),
        };
        let server = crate::config::ServerConfig {
            name: old.info.name.clone(),
            pname,
            addr: addr.clone(),
            weight: 1,
            has_alias: true,
        };
        let handshake = Arc::new(handshake_for(config));
        let fresh = new_server_with_stats(
            &Arc::downgrade(self),
            config,
            &server,
            &handshake,
            &self.connections,
            self.placement,
            old.info.stats.clone(),
        );
        let mut servers = current.servers.clone();
        servers[index] = fresh;
        self.current.store(Arc::new(PoolSnapshot {
            config: config.clone(),
            router: router_for(config, &servers),
            servers,
            listen_tls: current.listen_tls.clone(),
            server_tls: current.server_tls.clone(),
            cluster_error: current.cluster_error.clone(),
            replicas: current.replicas.clone(),
            commands: current.commands.clone(),
        }));
        Some(old.clone())
    }

    /// A Sentinel pool's server `index` has these healthy replicas now (`read_from`).
    pub fn set_replicas(self: &Arc<Pool>, index: usize, addrs: &[ServerAddr]) {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        let Some(name) = current.servers.get(index).map(|s| s.info.name.clone()) else {
            return;
        };
        let old = current.replicas.get(index).cloned().unwrap_or_default();
        let same =
            old.len() == addrs.len() && old.iter().zip(addrs).all(|(s, a)| s.info.addr == *a);
        if same {
            return;
        }
        let config = &current.config;
        let handshake = Arc::new(replica_handshake(config));
        let servers: Vec<Arc<Server>> = addrs
            .iter()
            .map(|addr| match old.iter().find(|s| s.info.addr == *addr) {
                Some(kept) => kept.clone(),
                None => new_server(
                    &Arc::downgrade(self),
                    config,
                    &crate::config::ServerConfig {
                        name: name.clone(),
                        pname: format!("{} (replica)", name),
                        addr: addr.clone(),
                        weight: 1,
                        has_alias: true,
                    },
                    &handshake,
                    &self.connections,
                    self.placement,
                ),
            })
            .collect();
        let mut replicas = (*current.replicas).clone();
        replicas.resize(current.servers.len(), Vec::new());
        replicas[index] = servers;
        self.current.store(Arc::new(PoolSnapshot {
            config: config.clone(),
            router: current.router.clone(),
            servers: current.servers.clone(),
            listen_tls: current.listen_tls.clone(),
            server_tls: current.server_tls.clone(),
            cluster_error: current.cluster_error.clone(),
            replicas: Arc::new(replicas),
            commands: current.commands.clone(),
        }));
    }

    /// Records why a cluster pool's refresh failed, for clients' `-CLUSTERDOWN` replies.
    pub fn set_cluster_error(&self, error: &str) {
        let _serial = self
            .rebuild
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load_full();
        if current.cluster_error.as_deref() == Some(error) {
            return;
        }
        self.current.store(Arc::new(PoolSnapshot {
            config: current.config.clone(),
            router: current.router.clone(),
            servers: current.servers.clone(),
            listen_tls: current.listen_tls.clone(),
            server_tls: current.server_tls.clone(),
            cluster_error: Some(error.into()),
            replicas: current.replicas.clone(),
            commands: current.commands.clone(),
        }));
    }

    /// The worker a new client runs on: one that runs connections of this pool, so its
    /// requests stay on its thread; clients take turns among them.
    pub fn worker_for_client(&self, client_id: u64) -> usize {
        let connections = self.current.load().config.server_connections.max(1) as usize;
        self.placement.client_worker(connections, client_id)
    }

    /// Counts a new client in, unless the pool's `client_connections` limit is reached: in
    /// the limit, in the pool's `client_connections` and in the process's connection counts.
    pub fn admit_client(self: &Arc<Pool>) -> Option<ClientGuard> {
        let limit = self.current.load().config.client_connections as usize;
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        if limit > 0 && before >= limit {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.stats.client_connections.inc();
        Some(ClientGuard {
            pool: self.clone(),
            _connection: self.connections.track(),
        })
    }
}

/// The names of the servers in `old` that `new` no longer has.
fn removed_names(old: &[Arc<Server>], new: &[Arc<Server>]) -> Vec<String> {
    old.iter()
        .filter(|o| !new.iter().any(|s| Arc::ptr_eq(s, o)))
        .map(|o| o.info.name.clone())
        .collect()
}

/// A cluster node as a server: named `host:port` in the stats, weight 1.
fn node_server(node: &NodeAddr) -> crate::config::ServerConfig {
    let name = node.to_string();
    crate::config::ServerConfig {
        pname: format!("{name}:1"),
        name,
        addr: crate::config::ServerAddr::Tcp {
            host: node.host.clone(),
            port: node.port,
        },
        weight: 1,
        has_alias: false,
    }
}

/// The router for `servers` as their health stands now.
fn router_for(config: &PoolConfig, servers: &[Arc<Server>]) -> PoolRouter {
    match config.eject_policy {
        EjectPolicy::Rehash => {
            let live: Vec<bool> = servers
                .iter()
                .map(|s| !s.info.health.is_ejected())
                .collect();
            PoolRouter::build(config, &live)
        }
        // Keys never move; requests to an ejected server fail fast in the session.
        EjectPolicy::FailFast => PoolRouter::with_all_live(config),
    }
}

fn probe_kind(config: &PoolConfig) -> ProbeKind {
    if config.redis {
        ProbeKind::Redis
    } else {
        ProbeKind::Memcache
    }
}

/// Where a pool's connections run: connection `i` on worker `(first_worker + i) % workers`.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub first_worker: usize,
    pub workers: usize,
}

impl Placement {
    /// How many workers run connections (and clients) of a pool with `connections` per
    /// server: connections are never multiplied per worker.
    pub fn owners(self, connections: usize) -> usize {
        connections.clamp(1, self.workers.max(1))
    }

    /// Which of a server's `len` connections a client on `worker` uses: one on its own worker
    /// when there is one (connections `first_local`, `first_local + workers`, …), the same one
    /// for every request of the client.
    fn connection_index(self, len: usize, worker: usize, client_id: u64) -> usize {
        let workers = self.workers.max(1);
        let len = len.max(1);
        let first_local = (worker % workers + workers - self.first_worker % workers) % workers;
        if first_local < len {
            let local = (len - first_local).div_ceil(workers);
            first_local + workers * (client_id as usize % local)
        } else {
            client_id as usize % len
        }
    }

    /// The worker for a new client when each server has `connections` connections: the
    /// workers that run one take turns, so a client's requests never leave its thread.
    fn client_worker(self, connections: usize, client_id: u64) -> usize {
        let owners = self.owners(connections);
        (self.first_worker + client_id as usize % owners) % self.workers.max(1)
    }
}

/// How a pool's servers reach it ([`ServerOwner`]): weakly, so a retired pool goes away
/// while connections finish.
#[derive(Debug)]
struct PoolLink(Weak<Pool>);

impl ServerOwner for PoolLink {
    fn server_tls(&self) -> Option<Arc<tls::Connector>> {
        self.0.upgrade()?.current.load().server_tls.clone()
    }

    fn server_failed(&self, server: &ServerInfo, err: &BackendError) {
        if let Some(pool) = self.0.upgrade() {
            pool.server_failed(server, err);
        }
    }

    fn not_master(
        &self,
        server: &ServerInfo,
        requests: Vec<BackendRequest>,
    ) -> Vec<BackendRequest> {
        match self.0.upgrade() {
            Some(pool) => pool.reroute(server, requests),
            None => requests,
        }
    }

    fn redirected(
        &self,
        server: &ServerInfo,
        request: BackendRequest,
        reply: Bytes,
    ) -> Option<(BackendRequest, Duration)> {
        match self.0.upgrade() {
            Some(pool) if server.sentinel => {
                super::sentinel::retry_write(&pool, server, request, reply);
                None
            }
            Some(pool) => super::cluster::follow(&pool, server, request, reply),
            None => {
                request.reply_to.deliver(Ok(reply));
                None
            }
        }
    }

    fn failover_blocking(
        &self,
        server: &ServerInfo,
        request: super::dedicated::BlockingRequest,
        failure: Result<Bytes, BackendError>,
    ) {
        match self.0.upgrade() {
            Some(pool) => super::sentinel::retry_blocking(&pool, server, request, failure),
            None => request.reply_to.deliver(failure),
        }
    }

    fn redirect_dedicated(
        &self,
        server: &ServerInfo,
        reply: &[u8],
    ) -> Option<(Arc<super::dedicated::Dedicated>, bool)> {
        let pool = self.0.upgrade()?;
        let (target, asking) = super::cluster::follow_dedicated(&pool, server, reply)?;
        Some((target.dedicated.clone(), asking))
    }
}

/// A server with its connection tasks started, each on its worker.
fn new_server(
    pool: &Weak<Pool>,
    config: &PoolConfig,
    server: &crate::config::ServerConfig,
    handshake: &Arc<Vec<(&'static str, Bytes)>>,
    connections: &Arc<ConnectionStats>,
    placement: Placement,
) -> Arc<Server> {
    let stats = Arc::new(ServerStats::default());
    new_server_with_stats(
        pool,
        config,
        server,
        handshake,
        connections,
        placement,
        stats,
    )
}

/// [`new_server`] keeping counters (a Sentinel switch: the same server at a new address).
fn new_server_with_stats(
    pool: &Weak<Pool>,
    config: &PoolConfig,
    server: &crate::config::ServerConfig,
    handshake: &Arc<Vec<(&'static str, Bytes)>>,
    connections: &Arc<ConnectionStats>,
    placement: Placement,
    stats: Arc<ServerStats>,
) -> Arc<Server> {
    let address = match &server.addr {
        ServerAddr::Tcp { host, port } => format!("{host}:{port}"),
        ServerAddr::Unix { path } => path.display().to_string(),
    };
    stats.address.store(Arc::new(address));
    let info = Arc::new(ServerInfo {
        pool_name: config.name.clone(),
        name: server.name.clone(),
        pname: server.pname.clone(),
        addr: server.addr.clone(),
        handshake: ArcSwap::new(handshake.clone()),
        probe: probe_kind(config),
        health: ServerHealth::default(),
        owner: Arc::new(PoolLink(pool.clone())),
        stats,
        connections: connections.clone(),
        cluster: config.redis_cluster,
        sentinel: !config.sentinels.is_empty() && !server.pname.ends_with("(replica)"),
    });
    let dedicated = Arc::new(super::dedicated::Dedicated::new(
        info.clone(),
        config.dedicated_connections.max(1) as usize,
    ));
    let lane = default_lane(config);
    let connections = (0..config.server_connections.max(1) as usize)
        .map(|i| {
            let worker = placement.first_worker + i;
            spawn_connection(info.clone(), config.preconnect && i == 0, worker, lane)
        })
        .collect();
    Arc::new(Server {
        info,
        connections,
        default_lane: lane,
        lanes: (0..lanes_of(config)).map(|_| OnceLock::new()).collect(),
        dedicated,
        placement,
    })
}

/// The lane a pool's clients start in: its `redis_db`, RESP2
/// (memcached has no databases: its one lane selects nothing, whatever `redis_db` says).
pub fn default_lane(config: &PoolConfig) -> Lane {
    Lane {
        db: if config.redis { config.redis_db } else { 0 },
        resp3: false,
    }
}

/// How many lanes a server of the pool has: two protocols for each database (a Redis
/// Cluster has only database 0; memcached has no lanes but the pool's own).
fn lanes_of(config: &PoolConfig) -> usize {
    match (config.redis, config.redis_cluster) {
        (false, _) => 0,
        (true, true) => 2,
        (true, false) => 2 * config.databases.max(1) as usize,
    }
}

/// Waits `server_retry_timeout`, then returns the server to the continuum: at once (twemproxy),
/// or once a probe shows it answers (`health_probe`, the default). Stops if the pool is gone.
async fn return_after_retry_timeout(pool: Weak<Pool>, server: Arc<Server>) {
    loop {
        let Some(config) = pool.upgrade().map(|p| p.current.load().config.clone()) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(config.server_retry_timeout_ms)).await;
        if config.health_probe {
            let handshake: Vec<Bytes> = server
                .info
                .handshake
                .load()
                .iter()
                .map(|(_, f)| f.clone())
                .collect();
            let limit = Duration::from_millis(config.timeout_ms.unwrap_or(1000).max(100));
            let tls = server.info.server_tls();
            if let Err(err) = health::probe(
                &server.info.addr,
                server.info.probe,
                &handshake,
                tls.as_deref(),
                limit,
            )
            .await
            {
                warn!(
                    "pool '{}': server '{}' is still failing its health probe ({err}); retrying in {} ms",
                    config.name, server.info.name, config.server_retry_timeout_ms
                );
                continue;
            }
        }
        let Some(pool) = pool.upgrade() else { return };
        server.info.health.restore();
        pool.rebuild_router();
        let reason = if config.health_probe {
            "it answered its health probe".to_string()
        } else {
            format!(
                "its retry time of {} ms passed (health_probe: false)",
                config.server_retry_timeout_ms
            )
        };
        warn!(
            "pool '{}': server '{}' is back in the continuum: {reason}",
            config.name, server.info.name
        );
        return;
    }
}

/// Holds a client's place in its pool's counts (from its connect, waiting or in session);
/// releases it on drop.
#[derive(Debug)]
pub struct ClientGuard {
    pool: Arc<Pool>,
    _connection: crate::stats::ConnectionGuard,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.pool.stats.client_connections.dec();
        self.pool.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(first_worker: usize, workers: usize) -> Placement {
        Placement {
            first_worker,
            workers,
        }
    }

    #[test]
    fn one_worker_spreads_clients_over_connections_as_before() {
        let p = place(0, 1);
        let picks: Vec<usize> = (0..6).map(|id| p.connection_index(3, 0, id)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(p.client_worker(3, 5), 0);
    }

    #[test]
    fn a_client_uses_a_connection_on_its_own_worker() {
        // 5 connections over 2 workers starting at worker 1: worker 1 runs 0, 2, 4; worker 0
        // runs 1, 3.
        let p = place(1, 2);
        let on_1: Vec<usize> = (0..4).map(|id| p.connection_index(5, 1, id)).collect();
        assert_eq!(on_1, [0, 2, 4, 0]);
        let on_0: Vec<usize> = (0..4).map(|id| p.connection_index(5, 0, id)).collect();
        assert_eq!(on_0, [1, 3, 1, 3]);
    }

    #[test]
    fn clients_go_only_to_workers_that_run_connections() {
        // One connection per server, 4 workers, pool starting at worker 2: every client on 2.
        let p = place(2, 4);
        assert!((0..8).all(|id| p.client_worker(1, id) == 2));
        // Two connections: workers 2 and 3 take turns.
        let two: Vec<usize> = (0..4).map(|id| p.client_worker(2, id)).collect();
        assert_eq!(two, [2, 3, 2, 3]);
        // More connections than workers: every worker, and each has a connection of its own.
        let all: Vec<usize> = (0..4).map(|id| p.client_worker(6, id)).collect();
        assert_eq!(all, [2, 3, 0, 1]);
        for (id, worker) in all.into_iter().enumerate() {
            let index = p.connection_index(6, worker, id as u64);
            assert_eq!(
                (2 + index) % 4,
                worker,
                "connection {index} runs on worker {worker}"
            );
        }
    }

    #[test]
    fn a_worker_without_a_connection_still_gets_one() {
        let p = place(0, 4);
        assert_eq!(p.connection_index(1, 3, 9), 0);
        assert_eq!(p.connection_index(2, 3, 9), 1);
    }

    #[test]
    fn handshake_frames_are_resp_arrays() {
        assert_eq!(
            &command_frame(&[b"AUTH", b"pw"])[..],
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"
        );
        assert_eq!(
            &command_frame(&[b"SELECT", b"3"])[..],
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
        );
    }
}
