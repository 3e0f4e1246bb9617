//! A TCP or unix-socket stream, split into borrowed halves without a lock.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpStream, UnixStream};

/// A connected stream of either family.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The reading half of a [`Stream`].
pub enum ReadHalf<'a> {
    Tcp(tcp::ReadHalf<'a>),
    Unix(unix::ReadHalf<'a>),
}

/// The writing half of a [`Stream`].
pub enum WriteHalf<'a> {
    Tcp(tcp::WriteHalf<'a>),
    Unix(unix::WriteHalf<'a>),
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
    /// Detaches the stream from this runtime's event loop, so another runtime can take it.
    pub fn detach(self) -> io::Result<DetachedStream> {
        match self {
            Stream::Tcp(s) => s.into_std().map(DetachedStream::Tcp),
            Stream::Unix(s) => s.into_std().map(DetachedStream::Unix),
        }
    }

    /// Registers a detached stream with the current runtime (it is still non-blocking).
    pub fn attach(detached: DetachedStream) -> io::Result<Stream> {
        match detached {
            DetachedStream::Tcp(s) => TcpStream::from_std(s).map(Stream::Tcp),
            DetachedStream::Unix(s) => UnixStream::from_std(s).map(Stream::Unix),
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
        }
    }
}

impl ReadHalf<'_> {
    /// Waits until the stream is readable, without a buffer to read into.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ReadHalf::Tcp(r) => r.readable().await,
            ReadHalf::Unix(r) => r.readable().await,
        }
    }
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
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// One write of `buffers` (the first [`MAX_IOVECS`] of them) in order; returns the bytes
/// written. The iovec array lives only inside each poll, so a task waiting here does not carry
/// it; a single buffer needs none.
pub async fn write_buffers<'b, I>(writer: &mut WriteHalf<'_>, buffers: I) -> io::Result<usize>
where
    I: Iterator<Item = &'b [u8]> + Clone,
{
    std::future::poll_fn(|cx| {
        let mut rest = buffers.clone();
        let Some(first) = rest.next() else {
            return Poll::Ready(Ok(0));
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
