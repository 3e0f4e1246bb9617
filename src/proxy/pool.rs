//! A server pool at run time: its config, router and backend servers as one immutable
//! snapshot, published through an `ArcSwap` so it can be replaced whole (ejection, reload)
//! while client sessions read it without a lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::backend::{spawn_connection, BackendRequest, ServerInfo};
use crate::config::PoolConfig;
use crate::route::PoolRouter;

/// One backend server and its connections.
#[derive(Debug)]
pub struct Server {
    pub info: Arc<ServerInfo>,
    connections: Vec<mpsc::UnboundedSender<BackendRequest>>,
}

impl Server {
    /// The connection a client uses: always the same one for a given client, so one client's
    /// requests to one server stay in order even with `server_connections > 1`.
    pub fn connection_for(&self, client_id: u64) -> &mpsc::UnboundedSender<BackendRequest> {
        &self.connections[(client_id % self.connections.len() as u64) as usize]
    }
}

/// An immutable view of a pool: everything a request needs to be routed and sent.
#[derive(Debug)]
pub struct PoolSnapshot {
    pub config: Arc<PoolConfig>,
    pub router: PoolRouter,
    pub servers: Vec<Arc<Server>>,
}

/// A pool's shared state: the current snapshot and its live client count.
#[derive(Debug)]
pub struct Pool {
    pub current: ArcSwap<PoolSnapshot>,
    pub clients: AtomicUsize,
}

/// `*N\r\n$len\r\narg\r\n…` for handshake commands.
fn command_frame(args: &[&[u8]]) -> Bytes {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// AUTH before SELECT: the other order fails with NOAUTH (a twemproxy bug walnut fixes).
fn handshake_for(config: &PoolConfig) -> Vec<(&'static str, Bytes)> {
    let mut steps = Vec::new();
    if !config.redis {
        return steps;
    }
    if let Some(password) = &config.redis_auth {
        steps.push(("AUTH", command_frame(&[b"AUTH", password.as_bytes()])));
    }
    if config.redis_db > 0 {
        let db = config.redis_db.to_string();
        steps.push(("SELECT", command_frame(&[b"SELECT", db.as_bytes()])));
    }
    steps
}

impl Pool {
    /// Builds a pool and starts its backend connection tasks (which connect lazily unless
    /// `preconnect`). Must run inside the tokio runtime.
    pub fn start(config: PoolConfig) -> Arc<Pool> {
        let config = Arc::new(config);
        let handshake = handshake_for(&config);
        let servers = config
            .servers
            .iter()
            .map(|server| {
                let info = Arc::new(ServerInfo {
                    pool_name: config.name.clone(),
                    name: server.name.clone(),
                    pname: server.pname.clone(),
                    addr: server.addr.clone(),
                    handshake: handshake.clone(),
                });
                let connections = (0..config.server_connections.max(1))
                    .map(|i| spawn_connection(info.clone(), config.preconnect && i == 0))
                    .collect();
                Arc::new(Server { info, connections })
            })
            .collect();
        let snapshot = PoolSnapshot {
            router: PoolRouter::with_all_live(&config),
            config,
            servers,
        };
        Arc::new(Pool {
            current: ArcSwap::from_pointee(snapshot),
            clients: AtomicUsize::new(0),
        })
    }

    /// Counts a new client in, unless the pool's `client_connections` limit is reached.
    pub fn admit_client(self: &Arc<Pool>) -> Option<ClientGuard> {
        let limit = self.current.load().config.client_connections as usize;
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        if limit > 0 && before >= limit {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ClientGuard { pool: self.clone() })
    }
}

/// Holds a client's place in its pool's count; releases it on drop.
#[derive(Debug)]
pub struct ClientGuard {
    pool: Arc<Pool>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.pool.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
