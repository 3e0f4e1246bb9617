//! The data plane: listener → client session → (codec, router) → backend connection → back.
//!
//! [`start`] binds every pool's listener and starts its backend tasks; the returned
//! [`Proxy`] serves until dropped or until [`Proxy::shutdown`] runs.

pub mod backend;
pub mod error;
pub mod health;
pub mod listener;
pub mod pool;
pub mod redis_client;
pub mod session;
pub mod stream;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::Config;
use listener::Listener;
use pool::Pool;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] listener::BindError),
    #[error(
        "pool '{0}': memcached pools (redis: false) are not supported by this build of walnut yet"
    )]
    MemcacheUnsupported(String),
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    pub pools: Vec<Arc<Pool>>,
    accept_tasks: Vec<JoinHandle<()>>,
    socket_files: Vec<PathBuf>,
    /// Set to true to make every client session drain and close.
    drain: watch::Sender<bool>,
}

/// Binds all listeners (in sorted pool order) and starts serving. Must run inside the runtime.
pub fn start(config: Config) -> Result<Proxy, StartError> {
    if let Some(pool) = config.pools.iter().find(|p| !p.redis) {
        return Err(StartError::MemcacheUnsupported(pool.name.clone()));
    }
    let mut bound = Vec::with_capacity(config.pools.len());
    for pool in &config.pools {
        bound.push(listener::bind(pool)?);
    }
    let (drain, drain_rx) = watch::channel(false);
    let mut proxy = Proxy {
        pools: Vec::new(),
        accept_tasks: Vec::new(),
        socket_files: Vec::new(),
        drain,
    };
    for (pool_config, listener) in config.pools.into_iter().zip(bound) {
        info!(
            "pool '{}' listening on {} with {} servers",
            pool_config.name,
            pool_config.listen_text,
            pool_config.servers.len()
        );
        let pool = Pool::start(pool_config);
        if let Some(path) = listener.socket_path() {
            proxy.socket_files.push(path.to_path_buf());
        }
        proxy.accept_tasks.push(tokio::spawn(Listener::run(
            listener,
            pool.clone(),
            drain_rx.clone(),
        )));
        proxy.pools.push(pool);
    }
    Ok(proxy)
}

impl Proxy {
    /// Stops accepting clients, then lets every client finish the requests it has in flight
    /// (its pending replies are written) and closes it; gives up after `limit`. Returns the
    /// number of clients still open at the end.
    pub async fn drain(&mut self, limit: Duration) -> usize {
        self.stop_accepting();
        let _ = self.drain.send(true);
        let open = || {
            self.pools
                .iter()
                .map(|p| p.clients.load(Ordering::Acquire))
                .sum::<usize>()
        };
        let deadline = tokio::time::Instant::now() + limit;
        while open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open()
    }

    /// Stops accepting clients and removes the unix socket files walnut created.
    pub fn stop_accepting(&mut self) {
        for task in self.accept_tasks.drain(..) {
            task.abort();
        }
        for path in self.socket_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}
