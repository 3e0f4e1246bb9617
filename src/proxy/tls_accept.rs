//! TLS clients, from their connect to their session: the handshake runs on a thread of its
//! own (`walnut-tls`), so its crypto never stalls a worker that serves other clients; the
//! finished session then moves to the client's worker ([`TlsHandoff`]) and is served there
//! like any other.
//!
//! A client that does not start a TLS handshake (its first byte is not a TLS handshake
//! record, as with a plaintext client on a TLS port) is closed without a byte sent. A
//! handshake that fails or does not finish within [`HANDSHAKE_TIMEOUT`] is closed too. Both
//! count in the pool's `walnut_pool_tls_handshake_failures_total`; none reaches a backend.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{debug, warn};

use super::doorman::Admitted;
use super::stream::{DetachedStream, Stream, TlsHandoff, Transport};
use crate::tls::Acceptor;

/// How long a client has to complete its handshake from its connect.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The handshake thread's runtime, started on first use.
static HANDSHAKER: OnceLock<Option<Handle>> = OnceLock::new();

fn handshaker() -> Option<&'static Handle> {
    HANDSHAKER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let started = std::thread::Builder::new()
                .name("walnut-tls".into())
                .spawn(move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        let _ = tx.send(None);
                        return;
                    };
                    let _ = tx.send(Some(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                });
            match started {
                Ok(_) => rx.recv().ok().flatten(),
                Err(e) => {
                    warn!("cannot start the TLS handshake thread ({e}); handshakes run on the workers");
                    None
                }
            }
        })
        .as_ref()
}

/// Runs the client's handshake on the handshake thread, then starts its session on its
/// worker.
pub fn start(socket: DetachedStream, client: Admitted, acceptor: Arc<Acceptor>) {
    let task = handshake(socket, client, acceptor);
    match handshaker() {
        Some(handle) => {
            handle.spawn(task);
        }
        None => {
            tokio::spawn(task);
        }
    }
}

async fn handshake(socket: DetachedStream, client: Admitted, acceptor: Arc<Acceptor>) {
    let id = client.id;
    let stats = client.pool.stats.clone();
    // Pinned here, not a temporary: a client cut off by the timeout keeps its socket (inside
    // the unfinished handshake) until it is counted, so whoever sees the close sees the count.
    let accepting = accept(socket, &acceptor);
    tokio::pin!(accepting);
    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, &mut accepting).await;
    let failure = match done {
        Ok(Ok(handoff)) => {
            stats.tls_handshakes.inc();
            client.start_tls(handoff);
            return;
        }
        Ok(Err(why)) => why,
        Err(_) => format!("no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
    };
    stats.tls_handshake_failures.inc();
    debug!(
        "client {id}: TLS handshake on pool '{}' failed: {failure}",
        client.pool.current.load().config.name
    );
}

/// The handshake itself, on this thread's event loop; the session comes back detached.
async fn accept(socket: DetachedStream, acceptor: &Acceptor) -> Result<TlsHandoff, String> {
    let stream = Stream::attach(socket).map_err(|e| e.to_string())?;
    let first = first_byte(&stream).await?;
    if first != TLS_HANDSHAKE_RECORD {
        return Err(format!(
            "the client did not start TLS (first byte {first:#04x}: plaintext on a TLS port?)"
        ));
    }
    let transport = Transport::new(stream).map_err(|e| e.to_string())?;
    let session = tokio_rustls::TlsAcceptor::from(acceptor.current())
        .accept(transport)
        .await
        .map_err(|e| e.to_string())?;
    TlsHandoff::new(tokio_rustls::TlsStream::Server(session)).map_err(|e| e.to_string())
}

/// The client's first byte, left in the socket.
async fn first_byte(stream: &Stream) -> Result<u8, String> {
    let mut byte = [0u8; 1];
    let read = match stream {
        Stream::Tcp(s) => s.peek(&mut byte).await,
        Stream::Unix(s) => loop {
            // tokio has no peek for unix sockets: wait until readable, then MSG_PEEK.
            use std::os::fd::AsRawFd;
            s.readable().await.map_err(|e| e.to_string())?;
            let flags = nix::sys::socket::MsgFlags::MSG_PEEK;
            match nix::sys::socket::recv(s.as_raw_fd(), &mut byte, flags) {
                Err(nix::errno::Errno::EAGAIN) => continue,
                Err(e) => break Err(std::io::Error::from(e)),
                Ok(n) => break Ok(n),
            }
        },
        Stream::Tls(_) => return Err("already TLS".into()),
    };
    match read {
        Ok(0) => Err("the client closed before its handshake".into()),
        Ok(_) => Ok(byte[0]),
        Err(e) => Err(e.to_string()),
    }
}
