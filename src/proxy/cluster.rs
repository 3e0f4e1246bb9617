//! Redis Cluster pools at run time: the topology source, and redirects followed so that
//! clients never see them.
//!
//! The topology task reads the slot map from any reachable known node or seed
//! (`CLUSTER SHARDS`, else `CLUSTER SLOTS`) at start, then every [`REFRESH_PERIOD`] and at
//! once when asked (a `MOVED`, a failed node connection, a reload), never more often than
//! [`REFRESH_GAP`]. A request never waits for it: routing reads the pool's snapshot.
//!
//! A backend connection of a cluster pool hands replies that are redirects to [`follow`]:
//! `-MOVED` patches the slot table at once and re-sends the request there; `-ASK` re-sends it
//! once after `ASKING`; `-TRYAGAIN` and `-CLUSTERDOWN` hand it back to the same connection,
//! which re-sends it after a short backoff ahead of anything newer, within the request's
//! timeout. The request keeps its place in its client's
//! reply order (its sequence number), so a redirect can never reorder or cross replies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::backend::{BackendRequest, ServerInfo};
use super::error::BackendError;
use super::pool::{Pool, Server};
use crate::cluster::redirect::{self, NodeAddr, RedirectKind};
use crate::cluster::topology::{self, SlotMap, TopologyError};
use crate::config::ServerAddr;
use crate::proto::redis::reply::{ReplyDecoder, ReplyKind};

/// How often the slot map is read when nothing asks for it sooner.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(5);
/// The least time between two refreshes.
pub const REFRESH_GAP: Duration = Duration::from_millis(100);
/// The most redirects and retries one request goes through before its client gets an error.
pub const MAX_REDIRECTS: u8 = 16;
/// The longest wait before a `TRYAGAIN` / `CLUSTERDOWN` retry.
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// The largest slot-map reply read (a big cluster's `CLUSTER SHARDS` is well under it).
const MAX_TOPOLOGY_REPLY: usize = 16 * 1024 * 1024;

/// A cluster pool's handle on its topology task.
#[derive(Debug, Default)]
pub struct ClusterControl {
    wake: Arc<Notify>,
    /// A `MOVED` patched the slot table since the last refresh: apply the next map even if
    /// it equals the last one read.
    patched: AtomicBool,
}

impl ClusterControl {
    /// Asks for a refresh as soon as the rate limit allows.
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    /// What a topology task waits on between refreshes.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// True when an error reply is one walnut follows instead of passing on.
pub fn is_redirect(reply: &[u8]) -> bool {
    [&b"-MOVED "[..], b"-ASK ", b"-TRYAGAIN", b"-CLUSTERDOWN"]
        .iter()
        .any(|prefix| reply.starts_with(prefix))
}

/// Keeps a cluster pool's slot map current until the pool is gone.
pub async fn run_topology(pool: Weak<Pool>) {
    let mut last: Option<SlotMap> = None;
    let mut failing = false;
    loop {
        let Some(current) = pool.upgrade() else {
            return;
        };
        let name = current.current.load().config.name.clone();
        match fetch_slot_map(&current).await {
            Ok((map, from)) => {
                current.stats.cluster_refreshes.inc();
                let patched = current.cluster.patched.swap(false, Ordering::AcqRel);
                if last.as_ref() != Some(&map) || patched {
                    let (added, removed) = current.apply_slot_map(&map);
                    if last.as_ref() != Some(&map) {
                        current.stats.cluster_topology_changes.inc();
                        info!(
                            "pool '{name}': cluster topology from {from}: {} shards serve {} of 16384 slots over {} nodes; nodes added: {}; nodes removed: {}",
                            map.ranges.iter().map(|r| r.master).collect::<std::collections::BTreeSet<_>>().len(),
                            map.served_slots(),
                            map.nodes.len(),
                            list(&added),
                            list(&removed)
                        );
                    }
                    publish_stats_layout(&current);
                    last = Some(map);
                }
                if failing {
                    info!("pool '{name}': the cluster's slot map is readable again (from {from})");
                }
                failing = false;
            }
            Err(err) => {
                current.stats.cluster_refresh_failures.inc();
                if !failing {
                    warn!("pool '{name}': cannot read the cluster's slot map: {err}");
                }
                failing = true;
                current.set_cluster_error(&err);
            }
        }
        let wake = current.cluster.wake.clone();
        drop(current);
        tokio::select! {
            _ = tokio::time::sleep(REFRESH_PERIOD) => {}
            _ = wake.notified() => {}
        }
        tokio::time::sleep(REFRESH_GAP).await;
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Shows the pool's current nodes in the stats JSON and `/metrics`.
pub fn publish_stats_layout(pool: &Pool) {
    let Some(stats) = pool.stats_registry.get().and_then(Weak::upgrade) else {
        return;
    };
    let snapshot = pool.current.load();
    let servers = snapshot
        .servers
        .iter()
        .map(|s| crate::stats::ServerEntry {
            name: s.info.name.clone(),
            stats: s.info.stats.clone(),
        })
        .collect();
    stats.set_pool_servers(&snapshot.config.name, servers);
}

/// The slot map from the first node that gives one: known nodes first, then the seeds.
async fn fetch_slot_map(pool: &Pool) -> Result<(SlotMap, NodeAddr), String> {
    let snapshot = pool.current.load_full();
    let mut candidates: Vec<ServerAddr> = Vec::new();
    let known = snapshot.servers.iter().map(|s| s.info.addr.clone());
    let seeds = snapshot.config.servers.iter().map(|s| s.addr.clone());
    for addr in known.chain(seeds) {
        if !candidates.contains(&addr) {
            candidates.push(addr);
        }
    }
    let handshake: Vec<Bytes> = super::pool::handshake_for(&snapshot.config)
        .into_iter()
        .filter(|(label, _)| *label != "READONLY")
        .map(|(_, frame)| frame)
        .collect();
    let limit = Duration::from_millis(snapshot.config.timeout_ms.unwrap_or(1000).max(100));
    let mut last_error = "the pool has no seed".to_string();
    for addr in candidates {
        let ServerAddr::Tcp { host, port } = &addr else {
            continue;
        };
        let node = NodeAddr {
            host: host.clone(),
            port: *port,
        };
        let asked = ask_node(&addr, &node, &handshake, snapshot.server_tls.as_deref());
        match tokio::time::timeout(limit, asked).await {
            Ok(Ok(map)) => return Ok((map, node)),
            Ok(Err(err)) => last_error = format!("{node}: {err}"),
            Err(_) => last_error = format!("{node}: no answer within {} ms", limit.as_millis()),
        }
    }
    Err(last_error)
}

/// Reads one node's slot map.
async fn ask_node(
    addr: &ServerAddr,
    node: &NodeAddr,
    handshake: &[Bytes],
    tls: Option<&crate::tls::Connector>,
) -> Result<SlotMap, String> {
    let mut stream = super::stream::connect(addr, tls)
        .await
        .map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = stream.split();
    let mut out = Vec::new();
    for frame in handshake {
        out.extend_from_slice(frame);
    }
    out.extend_from_slice(b"*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n");
    send(&mut writer, &out).await?;
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut decoder = ReplyDecoder::new(MAX_TOPOLOGY_REPLY);
    for _ in handshake {
        let reply = read_reply(&mut reader, &mut decoder, &mut input).await?;
        if reply.kind == ReplyKind::Error {
            return Err(format!(
                "the node refused walnut's handshake: {}",
                String::from_utf8_lossy(reply.frame.trim_ascii_end())
            ));
        }
    }
    let shards = read_reply(&mut reader, &mut decoder, &mut input).await?;
    if shards.kind != ReplyKind::Error {
        return topology::from_cluster_shards(&shards.frame, node).map_err(|e| e.to_string());
    }
    // Before Redis 7: CLUSTER SLOTS.
    send(&mut writer, b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n").await?;
    let slots = read_reply(&mut reader, &mut decoder, &mut input).await?;
    topology::from_cluster_slots(&slots.frame, node).map_err(|e| match e {
        TopologyError::Refused(text) => format!("not a cluster node ({text})"),
        other => other.to_string(),
    })
}

async fn send(writer: &mut super::stream::WriteHalf<'_>, bytes: &[u8]) -> Result<(), String> {
    super::exchange::send(writer, bytes)
        .await
        .map_err(|e| e.to_string())
}

async fn read_reply(
    reader: &mut super::stream::ReadHalf<'_>,
    decoder: &mut ReplyDecoder,
    input: &mut BytesMut,
) -> Result<crate::proto::redis::reply::Reply, String> {
    super::exchange::read_reply(reader, decoder, input, 16 * 1024)
        .await
        .map_err(|e| e.describe("node"))
}

/// Follows a redirect or retry reply (`reply`) that `info`'s node of `pool` gave to
/// `request`. A retry on the same node (`-TRYAGAIN`, `-CLUSTERDOWN`) comes back with its
/// backoff, for the connection to re-send it in order.
pub fn follow(
    pool: &Arc<Pool>,
    info: &ServerInfo,
    mut request: BackendRequest,
    reply: Bytes,
) -> Option<(BackendRequest, Duration)> {
    if request.redirects >= MAX_REDIRECTS {
        pool.stats.forward_error.inc();
        request
            .reply_to
            .deliver(Err(BackendError::TooManyRedirects(request.redirects)));
        return None;
    }
    request.redirects += 1;
    request.asking = false;
    let here = match &info.addr {
        ServerAddr::Tcp { host, port } => NodeAddr {
            host: host.clone(),
            port: *port,
        },
        ServerAddr::Unix { .. } => {
            request.reply_to.deliver(Ok(reply));
            return None;
        }
    };
    match redirect::parse(&reply) {
        Some(redirect) => {
            request.asking = redirect.kind == RedirectKind::Ask;
            resend(redirect_target(pool, &here, &redirect), request, reply);
            None
        }
        None => {
            // TRYAGAIN (a multi-key request during a migration) or CLUSTERDOWN (a failover
            // in progress): the same node, a little later, within the request's timeout.
            pool.stats.cluster_retries.inc();
            if reply.starts_with(b"-CLUSTERDOWN") {
                pool.cluster.refresh_soon();
            }
            let shift = u32::from(request.redirects.min(8));
            let backoff = Duration::from_millis(2u64 << shift).min(MAX_BACKOFF);
            if request
                .deadline
                .is_some_and(|d| d <= Instant::now() + backoff)
            {
                request.reply_to.deliver(Ok(reply));
                return None;
            }
            Some((request, backoff))
        }
    }
}

/// The server a redirect from the node at `here` points to (a `-MOVED` also updates the
/// slot map and asks for a refresh), counted in the pool's stats.
fn redirect_target(
    pool: &Arc<Pool>,
    here: &NodeAddr,
    redirect: &redirect::Redirect,
) -> Option<Arc<Server>> {
    let to = redirect.to.clone().or_host_of(here);
    if redirect.kind == RedirectKind::Moved {
        pool.stats.cluster_moved.inc();
        let server = pool.apply_moved(Some(redirect.slot), &to);
        pool.cluster.patched.store(true, Ordering::Release);
        pool.cluster.refresh_soon();
        server
    } else {
        pool.stats.cluster_ask.inc();
        pool.apply_moved(None, &to)
    }
}

/// Where a request on a dedicated connection of `info`'s node goes after `reply`, when it
/// is a redirect: the server, and whether `ASKING` must come first.
pub fn follow_dedicated(
    pool: &Arc<Pool>,
    info: &ServerInfo,
    reply: &[u8],
) -> Option<(Arc<Server>, bool)> {
    let ServerAddr::Tcp { host, port } = &info.addr else {
        return None;
    };
    let here = NodeAddr {
        host: host.clone(),
        port: *port,
    };
    let redirect = redirect::parse(reply)?;
    let server = redirect_target(pool, &here, &redirect)?;
    Some((server, redirect.kind == RedirectKind::Ask))
}

/// Queues `request` on `server`'s connection for its client; without a server, the client
/// gets the node's reply... never a redirect: an error instead.
fn resend(server: Option<Arc<Server>>, request: BackendRequest, reply: Bytes) {
    let Some(server) = server else {
        let err = if reply.starts_with(b"-MOVED ") || reply.starts_with(b"-ASK ") {
            BackendError::ClusterDown("the redirect names a node walnut cannot reach".into())
        } else {
            return request.reply_to.deliver(Ok(reply));
        };
        return request.reply_to.deliver(Err(err));
    };
    server.enqueue(request);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_and_retries_are_recognised_and_other_errors_are_not() {
        assert!(is_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"));
        assert!(is_redirect(b"-ASK 3999 127.0.0.1:6381\r\n"));
        assert!(is_redirect(
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
        ));
        assert!(is_redirect(b"-CLUSTERDOWN The cluster is down\r\n"));
        assert!(!is_redirect(b"-ERR unknown command\r\n"));
        assert!(!is_redirect(b"-MOVEDX\r\n"));
        assert!(!is_redirect(
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
        ));
    }
}
