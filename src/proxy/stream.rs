//! A TCP or unix-socket stream, plain or under TLS, split into borrowed halves.
//!
//! Plain halves share no lock. A TLS session is one rustls state that both halves use, so
//! they share it through a mutex; both are polled from the one task that owns the stream, so
//! it is never contended. A TLS session can also move between threads between its handshake
//! and its first request ([`TlsHandoff`]): the socket leaves one event loop and joins another
//! while the rustls state travels with it.

use std::io::{self, IoSlice};

use super::error::BackendError;
use crate::config::ServerAddr;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

/// A connected stream of either family, plain or under TLS.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<Mutex<TlsSession>>),
}

/// A TLS session (walnut as the server, or as a client of a backend) over its socket.
pub type TlsSession = tokio_rustls::TlsStream<Transport>;

/// The reading half of a [`Stream`].
pub enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Unix(unix::ReadHalf<'a>),
    Tls(&'a Mutex<TlsSession>),
}

/// The writing half of a [`Stream`].
pub enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Unix(unix::WriteHalf<'a>),
    Tls(&'a Mutex<TlsSession>),
}

fn lock(session: &Mutex<TlsSession>) -> MutexGuard<'_, TlsSession> {
    session
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The plain socket under a TLS session: empty while the session moves to another thread.
#[derive(Debug)]
pub struct Transport(Option<Stream>);

impl Transport {
    /// Wraps a plain stream (a TLS one is refused: no TLS over TLS).
    pub fn new(stream: Stream) -> io::Result<Transport> {
        match stream {
            Stream::Tls(_) => Err(io::Error::other("TLS over TLS")),
            plain => Ok(Transport(Some(plain))),
        }
    }

    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "the socket is being moved")
    }

    /// Ready once the socket is readable (tokio's readiness, as `TcpStream::readable`).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.0 {
            Some(Stream::Tcp(s)) => s.poll_read_ready(cx),
            Some(Stream::Unix(s)) => s.poll_read_ready(cx),
            _ => Poll::Ready(Err(Transport::gone())),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_read(cx, buf),
            Some(Stream::Unix(s)) => Pin::new(s).poll_read(cx, buf),
            _ => Poll::Ready(Err(Transport::gone())),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_write(cx, buf),
            Some(Stream::Unix(s)) => Pin::new(s).poll_write(cx, buf),
            _ => Poll::Ready(Err(Transport::gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_write_vectored(cx, bufs),
            Some(Stream::Unix(s)) => Pin::new(s).poll_write_vectored(cx, bufs),
            _ => Poll::Ready(Err(Transport::gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_flush(cx),
            Some(Stream::Unix(s)) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Some(Stream::Tcp(s)) => Pin::new(s).poll_shutdown(cx),
            Some(Stream::Unix(s)) => Pin::new(s).poll_shutdown(cx),
            _ => Poll::Ready(Ok(())),
        }
    }
}

fn transport_of(session: &mut TlsSession) -> &mut Transport {
    match session {
        tokio_rustls::TlsStream::Client(s) => s.get_mut().0,
        tokio_rustls::TlsStream::Server(s) => s.get_mut().0,
    }
}

/// A TLS session whose handshake is done, on its way to the thread that will serve it: the
/// rustls state, and the socket detached from the event loop it came from.
#[derive(Debug)]
pub struct TlsHandoff {
    session: TlsSession,
    socket: DetachedStream,
}

impl TlsHandoff {
    /// Detaches the session's socket from this thread's event loop.
    pub fn new(mut session: TlsSession) -> io::Result<TlsHandoff> {
        let socket = transport_of(&mut session)
            .0
            .take()
            .ok_or_else(Transport::gone)?
            .detach()?;
        Ok(TlsHandoff { session, socket })
    }

    /// Registers the socket with this thread's event loop and puts it back under the session.
    pub fn attach(mut self) -> io::Result<Stream> {
        transport_of(&mut self.session).0 = Some(Stream::attach(self.socket)?);
        Ok(Stream::Tls(Box::new(Mutex::new(self.session))))
    }
}

/// Both ends of a client's connection ([`Stream::endpoints`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub peer: String,
    pub local: String,
    pub fd: i32,
    pub unix: bool,
}

/// A [`Stream`] detached from its runtime, to be handed to another worker.
#[derive(Debug)]
pub enum DetachedStream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl std::os::fd::AsFd for DetachedStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            DetachedStream::Tcp(s) => s.as_fd(),
            DetachedStream::Unix(s) => s.as_fd(),
        }
    }
}

impl Stream {
    /// Detaches a plain stream from this runtime's event loop, so another runtime can take
    /// it (a TLS one moves as a [`TlsHandoff`]).
    pub fn detach(self) -> io::Result<DetachedStream> {
        match self {
            Stream::Tcp(s) => s.into_std().map(DetachedStream::Tcp),
            Stream::Unix(s) => s.into_std().map(DetachedStream::Unix),
            Stream::Tls(_) => Err(io::Error::other("a TLS stream moves as a TlsHandoff")),
        }
    }

    /// A TLS session, as a stream.
    pub fn tls(session: TlsSession) -> Stream {
        Stream::Tls(Box::new(Mutex::new(session)))
    }

    /// Registers a detached stream with the current runtime (it is still non-blocking).
    pub fn attach(detached: DetachedStream) -> io::Result<Stream> {
        match detached {
            DetachedStream::Tcp(s) => TcpStream::from_std(s).map(Stream::Tcp),
            DetachedStream::Unix(s) => UnixStream::from_std(s).map(Stream::Unix),
        }
    }

    /// Both ends of the connection, as Redis's `CLIENT LIST` writes them (`ip:port`; a unix
    /// socket's path and `:0` for both, its peer having no name), its descriptor, and
    /// whether it is a unix socket.
    pub fn endpoints(&mut self) -> Endpoints {
        use std::os::fd::AsRawFd;
        let shown = |addr: io::Result<std::net::SocketAddr>| {
            addr.map_or_else(|_| "?:0".to_owned(), |addr| addr.to_string())
        };
        match self {
            Stream::Tcp(s) => Endpoints {
                peer: shown(s.peer_addr()),
                local: shown(s.local_addr()),
                fd: s.as_raw_fd(),
                unix: false,
            },
            Stream::Unix(s) => {
                let path = s
                    .local_addr()
                    .ok()
                    .and_then(|addr| addr.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_default();
                Endpoints {
                    peer: format!("{path}:0"),
                    local: format!("{path}:0"),
                    fd: s.as_raw_fd(),
                    unix: true,
                }
            }
            Stream::Tls(session) => {
                let mut session = lock(session);
                match transport_of(&mut session).0.as_mut() {
                    Some(plain) => plain.endpoints(),
                    None => Endpoints {
                        peer: "?:0".to_owned(),
                        local: "?:0".to_owned(),
                        fd: -1,
                        unix: false,
                    },
                }
            }
        }
    }

    /// Splits into halves that can be polled concurrently from one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.split();
                (ReadHalf::Unix(r), WriteHalf::Unix(w))
            }
            Stream::Tls(session) => (ReadHalf::Tls(session), WriteHalf::Tls(session)),
        }
    }
}

impl WriteHalf<'_> {
    /// True when TLS records of bytes already accepted are still waiting for room in the
    /// socket: the owner must [`WriteHalf::flush_pending`] them even with nothing new to say.
    pub fn has_pending(&self) -> bool {
        match self {
            WriteHalf::Tls(session) => match &*lock(session) {
                tokio_rustls::TlsStream::Client(s) => s.get_ref().1.wants_write(),
                tokio_rustls::TlsStream::Server(s) => s.get_ref().1.wants_write(),
            },
            _ => false,
        }
    }

    /// Writes what [`WriteHalf::has_pending`] says is waiting.
    pub async fn flush_pending(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_flush(cx)).await
    }
}

impl ReadHalf<'_> {
    /// Waits until the stream is readable, without a buffer to read into.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(r) => r.readable().await,
            ReadHalf::Unix(r) => r.readable().await,
            ReadHalf::Tls(session) => {
                std::future::poll_fn(|cx| tls_readable(&mut lock(session), cx)).await
            }
        }
    }
}

/// Ready when a read would find something: plaintext rustls already holds (it may hold some
/// with nothing left in the socket, e.g. a request that came with the handshake's last
/// flight), a close_notify it has seen, or a readable socket. rustls wants no read exactly
/// when it holds plaintext or has seen the peer's close; otherwise only the socket can bring
/// more, so a TLS client between requests waits without a read buffer, as a plain one does.
fn tls_readable(session: &mut TlsSession, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let wants_read = match &*session {
        tokio_rustls::TlsStream::Client(s) => s.get_ref().1.wants_read(),
        tokio_rustls::TlsStream::Server(s) => s.get_ref().1.wants_read(),
    };
    if !wants_read {
        return Poll::Ready(Ok(()));
    }
    transport_of(session).poll_read_ready(cx)
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(session) => Pin::new(&mut *lock(session)).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Unix(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(session) => tls_write(&mut lock(session), cx, |s, cx| {
                Pin::new(s).poll_write(cx, buf)
            }),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Unix(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(session) => tls_write(&mut lock(session), cx, |s, cx| {
                Pin::new(s).poll_write_vectored(cx, bufs)
            }),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(session) => Pin::new(&mut *lock(session)).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(session) => Pin::new(&mut *lock(session)).poll_shutdown(cx),
        }
    }
}

/// One write into a TLS session. What was accepted before must be on the socket before more
/// is taken, so the session buffers at most one write's records; then the new records go out
/// as far as the socket takes them, and the rest waits for [`WriteHalf::flush_pending`].
fn tls_write(
    session: &mut TlsSession,
    cx: &mut Context<'_>,
    write: impl FnOnce(&mut TlsSession, &mut Context<'_>) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    ready!(Pin::new(&mut *session).poll_flush(cx))?;
    let written = ready!(write(session, cx))?;
    // An error here shows again on the next write or flush.
    let _ = Pin::new(&mut *session).poll_flush(cx);
    Poll::Ready(Ok(written))
}

/// Buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// One write of `buffers` (the first [`MAX_IOVECS`] of them) in order; returns the bytes
/// written. With no buffers, it flushes a TLS session's pending records and returns 0. The iovec array lives only inside each poll, so a task waiting here does not carry
/// it; a single buffer needs none.
pub async fn write_buffers<'b, I>(writer: &mut WriteHalf<'_>, buffers: I) -> io::Result<usize>
where
    I: Iterator<Item = &'b [u8]> + Clone,
{
    std::future::poll_fn(|cx| {
        let mut rest = buffers.clone();
        let Some(first) = rest.next() else {
            // Nothing new: push out what a TLS session still holds (`WriteHalf::has_pending`).
            return Pin::new(&mut *writer).poll_flush(cx).map_ok(|()| 0);
        };
        let Some(second) = rest.next() else {
            return Pin::new(&mut *writer).poll_write(cx, first);
        };
        let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
        slices[0] = IoSlice::new(first);
        slices[1] = IoSlice::new(second);
        let mut count = 2;
        for buffer in rest.take(MAX_IOVECS - 2) {
            slices[count] = IoSlice::new(buffer);
            count += 1;
        }
        Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
    })
    .await
}

/// Connects to `addr`, resolving a hostname afresh, and starts TLS over it with `tls`.
pub async fn connect(
    addr: &ServerAddr,
    tls: Option<&crate::tls::Connector>,
) -> Result<Stream, BackendError> {
    let plain = match addr {
        ServerAddr::Tcp { host, port } => {
            let addrs = match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(_) => return Err(BackendError::HostDown),
            };
            let Some(first) = addrs.first() else {
                return Err(BackendError::HostDown);
            };
            let stream = TcpStream::connect(first)
                .await
                .map_err(|e| BackendError::from_io(&e))?;
            let _ = stream.set_nodelay(true);
            Stream::Tcp(stream)
        }
        ServerAddr::Unix { path } => UnixStream::connect(path)
            .await
            .map(Stream::Unix)
            .map_err(|e| BackendError::from_io(&e))?,
    };
    match tls {
        None => Ok(plain),
        Some(tls) => start_tls(plain, addr, tls).await,
    }
}

/// The TLS handshake with a server: verified against `server_tls`'s CA (or the system's
/// roots) under its `server_name`, else the server's host.
async fn start_tls(
    plain: Stream,
    addr: &ServerAddr,
    tls: &crate::tls::Connector,
) -> Result<Stream, BackendError> {
    let name = match (&tls.files().server_name, addr) {
        (Some(name), _) => name.clone(),
        (None, ServerAddr::Tcp { host, .. }) => host.clone(),
        (None, ServerAddr::Unix { .. }) => {
            return Err(BackendError::Tls(
                "a unix socket server needs server_tls's server_name".into(),
            ))
        }
    };
    let name = rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| BackendError::Tls(format!("server name: {e}")))?;
    let transport = Transport::new(plain).map_err(|e| BackendError::Tls(e.to_string()))?;
    let session = tokio_rustls::TlsConnector::from(tls.current())
        .connect(name, transport)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::Other => {
                BackendError::Tls(e.to_string())
            }
            _ => BackendError::from_io(&e),
        })?;
    Ok(Stream::tls(tokio_rustls::TlsStream::Client(session)))
}
