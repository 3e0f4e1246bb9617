//! Pool listeners: bind a TCP or unix socket as twemproxy does, accept clients, enforce the
//! pool's client limit, and hand each client to the doorman (`proxy::doorman`), which starts its
//! session on its worker once it sends something.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::doorman::{Admitted, Doorman};
use super::pool::Pool;
use super::session::DrainDeadline;
use super::stream::Stream;
use crate::config::{ListenAddr, PoolConfig};

/// Client ids are unique across pools; they pick a client's backend connection.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(0);

/// A bound pool listener.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    /// The socket file is removed when the proxy stops.
    Unix(UnixListener, PathBuf),
}

/// Why a listener could not be bound; `Display` is the startup error line.
#[derive(Debug, thiserror::Error)]
#[error("bind on p '{pool}' to addr '{listen}' failed: {reason}")]
pub struct BindError {
    pub pool: String,
    pub listen: String,
    pub reason: String,
}

fn bind_error(pool: &PoolConfig, reason: impl ToString) -> BindError {
    BindError {
        pool: pool.name.clone(),
        listen: pool.listen_text.clone(),
        reason: reason.to_string(),
    }
}

/// Binds the pool's listen address. Must run inside the tokio runtime.
pub fn bind(pool: &PoolConfig) -> Result<Listener, BindError> {
    match &pool.listen {
        ListenAddr::Tcp { addr, .. } => {
            let socket = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .map_err(|e| bind_error(pool, e))?;
            socket
                .set_reuse_address(true)
                .map_err(|e| bind_error(pool, e))?;
            if pool.reuseport {
                socket
                    .set_reuse_port(true)
                    .map_err(|e| bind_error(pool, e))?;
            }
            socket
                .bind(&(*addr).into())
                .map_err(|e| bind_error(pool, strip_os_error(&e)))?;
            let backlog = i32::try_from(pool.backlog).unwrap_or(i32::MAX);
            socket
                .listen(backlog)
                .map_err(|e| bind_error(pool, strip_os_error(&e)))?;
            socket
                .set_nonblocking(true)
                .map_err(|e| bind_error(pool, e))?;
            let listener = TcpListener::from_std(socket.into()).map_err(|e| bind_error(pool, e))?;
            Ok(Listener::Tcp(listener))
        }
        ListenAddr::Unix { path, perm } => {
            remove_stale_socket(path).map_err(|reason| bind_error(pool, reason))?;
            let listener = match perm {
                Some(mode) => bind_unix_with_mode(path, *mode).map_err(|e| bind_error(pool, e))?,
                None => {
                    UnixListener::bind(path).map_err(|e| bind_error(pool, strip_os_error(&e)))?
                }
            };
            Ok(Listener::Unix(listener, path.clone()))
        }
    }
}

/// Binds a unix socket that appears at `path` with `mode` already set: it is bound under a
/// temporary name beside `path`, given its mode, then renamed into place, so no client ever
/// finds it with the umask's mode. Falls back to bind-then-chmod when the temporary name
/// cannot be bound (a path near the 108-byte limit).
fn bind_unix_with_mode(path: &Path, mode: u32) -> Result<UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |at: &Path| {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {mode:o}: {}", strip_os_error(&e)))
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let staging = path.with_file_name(format!(
        ".{}.{}.binding",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&staging);
    let Ok(listener) = UnixListener::bind(&staging) else {
        let listener = UnixListener::bind(path).map_err(|e| strip_os_error(&e))?;
        chmod(path)?;
        return Ok(listener);
    };
    let placed = chmod(&staging).and_then(|()| {
        std::fs::rename(&staging, path).map_err(|e| format!("rename: {}", strip_os_error(&e)))
    });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    Ok(listener)
}

/// Removes a unix socket file left by a dead process, but never one a live process listens on.
fn remove_stale_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err("Address already in use (the path exists and is not a socket)".into());
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err("Address already in use (another process is listening on this socket)".into());
    }
    std::fs::remove_file(path)
        .map_err(|e| format!("cannot remove stale socket: {}", strip_os_error(&e)))
}

fn strip_os_error(err: &io::Error) -> String {
    let text = err.to_string();
    text.split(" (os error").next().unwrap_or(&text).to_string()
}

impl Listener {
    /// The unix socket file this listener created, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, path) => Some(path),
        }
    }

    async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok(Stream::Unix(stream))
            }
        }
    }

    /// The connection waiting in the backlog, if one is there now.
    fn accept_now(&self) -> Option<Stream> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match self {
            Listener::Tcp(l) => match l.poll_accept(&mut cx) {
                std::task::Poll::Ready(Ok((stream, _))) => Some(Stream::Tcp(stream)),
                _ => None,
            },
            Listener::Unix(l, _) => match l.poll_accept(&mut cx) {
                std::task::Poll::Ready(Ok((stream, _))) => Some(Stream::Unix(stream)),
                _ => None,
            },
        }
    }

    /// Accepts clients until aborted; each waits in the `doorman` until its first byte, then
    /// gets a session on its worker. `shutdown` tells sessions to drain.
    pub async fn run(
        self: Arc<Self>,
        pool: Arc<Pool>,
        shutdown: watch::Receiver<DrainDeadline>,
        doorman: Arc<Doorman>,
    ) {
        loop {
            let stream = match self.accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    // EMFILE and friends: keep serving the clients we have, retry shortly.
                    warn!(
                        "accept on pool '{}' failed: {e}",
                        pool.current.load().config.name
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            admit(stream, &pool, &shutdown, &doorman);
        }
    }

    /// Takes in the clients already connected in the backlog when the pool stops accepting,
    /// so a client that has sent a request there is answered (and one that has not is closed
    /// by the doorman) rather than reset.
    pub fn admit_backlog(
        &self,
        pool: &Arc<Pool>,
        shutdown: &watch::Receiver<DrainDeadline>,
        doorman: &Doorman,
    ) {
        while let Some(stream) = self.accept_now() {
            admit(stream, pool, shutdown, doorman);
        }
    }
}

/// Admits an accepted client under the limits and parks it in the doorman, or refuses it.
fn admit(
    mut stream: Stream,
    pool: &Arc<Pool>,
    shutdown: &watch::Receiver<DrainDeadline>,
    doorman: &Doorman,
) {
    let config = pool.current.load().config.clone();
    if let Stream::Tcp(tcp) = &stream {
        let _ = tcp.set_nodelay(true);
        if config.tcpkeepalive {
            let _ = SockRef::from(tcp).set_keepalive(true);
        }
    }
    // The process-wide limit derived from RLIMIT_NOFILE (ops::limits), then the pool's.
    let admitted = crate::ops::limits::admit_client().zip(pool.admit_client());
    let Some((slot, guard)) = admitted else {
        debug!(
                    "pool '{}' is at its client limit (client_connections or the open-file limit); refusing a client",
                    config.name
                );
        let refusal: &'static [u8] = if config.redis {
            b"-ERR max number of clients reached\r\n"
        } else {
            b"SERVER_ERROR max number of clients reached\r\n"
        };
        tokio::spawn(async move {
            let (_, mut writer) = stream.split();
            let _ = writer.write_all(refusal).await;
            let _ = writer.shutdown().await;
        });
        return;
    };
    let id = NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed);
    let worker = pool.worker_for_client(id);
    debug!(
        "client {id} connected to pool '{}' (worker {worker})",
        config.name
    );
    let client = Admitted {
        pool: pool.clone(),
        id,
        shutdown: shutdown.clone(),
        redis: config.redis,
        worker,
        held: (slot, guard),
    };
    let tls = pool.current.load().listen_tls.clone();
    match (stream.detach(), tls) {
        // A TLS client's handshake starts at once, on the handshake thread.
        (Ok(detached), Some(acceptor)) => super::tls_accept::start(detached, client, acceptor),
        // A plain client waits for its first byte as a bare socket, not as a session.
        (Ok(detached), None) => doorman.park(detached, client),
        (Err(e), _) => warn!("client {id}: detaching the connection failed: {e}"),
    }
}
