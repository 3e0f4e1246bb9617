//! The twemproxy stats port: every accepted connection gets the whole JSON and is closed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::registry::Stats;

/// Stats connections served at once; more are closed at once (they cannot slow the proxy).
pub const MAX_STATS_CONNECTIONS: usize = 256;
/// A reader that does not take the JSON within this time is dropped.
pub const STATS_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Anything that yields the current JSON document.
pub trait JsonSource: Send + Sync + 'static {
    /// The whole document.
    fn json(&self) -> Bytes;

    /// The document as two pieces written back to back, so a large shared body need not be
    /// copied per reader. Defaults to `(json(), empty)`.
    fn json_parts(&self) -> (Bytes, Bytes) {
        (self.json(), Bytes::new())
    }
}

impl JsonSource for Stats {
    fn json(&self) -> Bytes {
        Stats::json(self)
    }

    fn json_parts(&self) -> (Bytes, Bytes) {
        Stats::json_parts(self)
    }
}

impl<F> JsonSource for F
where
    F: Fn() -> Bytes + Send + Sync + 'static,
{
    fn json(&self) -> Bytes {
        self()
    }
}

/// Binds a listener the way twemproxy binds its stats port: SO_REUSEADDR and SO_REUSEPORT
/// (so two proxies can share it), backlog SOMAXCONN, non-blocking. Must run inside a tokio
/// runtime. `addr` is `-a`:`-s`, already resolved.
pub fn bind_stats(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_tcp(addr, true)
}

/// A TCP listener with SO_REUSEADDR (and SO_REUSEPORT if asked), backlog SOMAXCONN.
pub(crate) fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(nix::libc::SOMAXCONN)?;
    TcpListener::from_std(socket.into())
}

/// Serves the stats port until the task is aborted: each connection gets `source.json()`
/// written whole, then is closed; nothing is read from the client. Each connection is its
/// own task, at most [`MAX_STATS_CONNECTIONS`] at once, each bounded by
/// [`STATS_WRITE_TIMEOUT`]. The aggregated body is shared (`Bytes`), so a reader costs one
/// render of the small header, not a copy of the document.
pub async fn serve_stats<S>(listener: TcpListener, source: Arc<S>)
where
    S: JsonSource + ?Sized,
{
    let permits = Arc::new(Semaphore::new(MAX_STATS_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!("stats: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("stats: too many readers, closing {peer}");
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = send(stream, source.json_parts()).await {
                debug!("stats: writing to {peer} failed: {e}");
            }
        });
    }
}

async fn send(mut stream: TcpStream, (head, body): (Bytes, Bytes)) -> io::Result<()> {
    tokio::time::timeout(STATS_WRITE_TIMEOUT, async {
        stream.write_all_buf(&mut head.chain(body)).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{PoolEntry, StatsOptions};
    use tokio::io::AsyncReadExt;

    async fn fetch(addr: SocketAddr) -> Vec<u8> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn each_connection_gets_the_whole_json() {
        let stats = Stats::new(
            StatsOptions {
                source: "testhost".into(),
                ..StatsOptions::default()
            },
            vec![
                PoolEntry::new("alpha", ["one", "127.0.0.1:1"]),
                PoolEntry::new("beta", ["two"]),
            ],
        );
        stats.pools()[1].server(0).unwrap().requests.add(9);
        stats.refresh();
        let listener = bind_stats("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve_stats(listener, stats.clone()));
        let readers: Vec<_> = (0..50).map(|_| tokio::spawn(fetch(addr))).collect();
        for reader in readers {
            let body = reader.await.unwrap();
            assert!(body.ends_with(b"}}}\n"));
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["service"], "nutcracker");
            assert_eq!(value["source"], "testhost");
            assert_eq!(value["beta"]["two"]["requests"], 9);
            assert_eq!(value["alpha"]["127.0.0.1:1"]["out_queue_bytes"], 0);
        }
        task.abort();
    }

    #[tokio::test]
    async fn closures_are_sources_and_the_port_is_shared() {
        let listener = bind_stats("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // SO_REUSEPORT: a second listener on the same port binds (twemproxy behaviour).
        let second = bind_stats(addr).unwrap();
        drop(second);
        let source = Arc::new(|| Bytes::from_static(b"{}\n"));
        let task = tokio::spawn(serve_stats(listener, source));
        assert_eq!(fetch(addr).await, b"{}\n");
        task.abort();
    }
}
