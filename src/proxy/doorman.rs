//! Where a client waits between its connect and its first byte: as a bare socket in one epoll
//! set, not as a session. A session (its task, its event-loop registration, its state) costs
//! about 1.7 KB; a waiting client costs its slot here, under 100 B, so thousands of connected
//! but idle clients cost little more than they do in nutcracker. The first readable event (a
//! request, or the client hanging up) hands the socket to its worker, where its session
//! starts and reads what arrived.
//!
//! The doorman runs on worker 0, beside the accept loops that park clients in it.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::memcache_client::MemcacheProtocol;
use super::pool::{ClientGuard, Pool};
use super::redis_client::RedisProtocol;
use super::session::{serve_client, DrainDeadline};
use super::stream::{DetachedStream, Stream};
use super::workers;
use crate::ops::limits::ClientSlot;

/// An admitted client, before its session starts.
#[derive(Debug)]
pub struct Admitted {
    pub pool: Arc<Pool>,
    pub id: u64,
    pub shutdown: watch::Receiver<DrainDeadline>,
    pub redis: bool,
    /// The worker its session runs on.
    pub worker: usize,
    /// Its places under the process-wide and the pool's client limits (and in the connection
    /// counts), released when it ends.
    pub held: (ClientSlot, ClientGuard),
}

impl Admitted {
    /// Starts the session on the client's worker: here if this is it, else the socket is
    /// handed over and registered there.
    pub fn start(self, stream: DetachedStream) {
        let id = self.id;
        workers::spawn_on(self.worker, async move {
            match Stream::attach(stream) {
                Ok(stream) => self.serve(stream).await,
                Err(e) => warn!("client {id}: registering the connection failed: {e}"),
            }
        });
    }

    /// Starts the session of a TLS client whose handshake is done, on the client's worker.
    pub fn start_tls(self, handoff: super::stream::TlsHandoff) {
        let id = self.id;
        workers::spawn_on(self.worker, async move {
            match handoff.attach() {
                Ok(stream) => self.serve(stream).await,
                Err(e) => warn!("client {id}: registering the TLS connection failed: {e}"),
            }
        });
    }

    async fn serve(self, stream: Stream) {
        let Admitted {
            pool,
            id,
            shutdown,
            redis,
            held,
            ..
        } = self;
        if redis {
            serve_client::<RedisProtocol>(stream, pool, id, shutdown).await;
        } else {
            serve_client::<MemcacheProtocol>(stream, pool, id, shutdown).await;
        }
        debug!("client {id} closed");
        drop(held);
    }
}

/// The epoll set, registered with worker 0's event loop.
struct EpollSet(Epoll);

impl AsRawFd for EpollSet {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

#[derive(Debug)]
struct Waiting {
    stream: DetachedStream,
    client: Admitted,
}

/// Waiting clients by slot; a slot's index is its epoll token.
#[derive(Debug)]
struct Slots<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    fn insert(&mut self, waiting: T) -> usize {
        match self.free.pop() {
            Some(index) => {
                self.entries[index] = Some(waiting);
                index
            }
            None => {
                self.entries.push(Some(waiting));
                self.entries.len() - 1
            }
        }
    }

    fn take(&mut self, index: usize) -> Option<T> {
        let waiting = self.entries.get_mut(index)?.take()?;
        self.free.push(index);
        Some(waiting)
    }
}

/// The clients waiting for their first byte.
pub struct Doorman {
    epoll: AsyncFd<EpollSet>,
    slots: Mutex<Slots<Waiting>>,
}

impl std::fmt::Debug for Doorman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorman").finish_non_exhaustive()
    }
}

/// How many ready clients one wake-up takes.
const EVENTS_PER_WAKE: usize = 256;

impl Doorman {
    /// Opens the epoll set and starts the task that starts sessions. Must run inside the
    /// runtime of the accept loops.
    pub fn start() -> std::io::Result<(Arc<Doorman>, JoinHandle<()>)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // `AsyncFd::new` is deprecated because a caller could close the descriptor while it is
        // registered; here the AsyncFd owns the only handle to it (an `OwnedFd`), so the
        // registration ends before the descriptor closes. The replacement is `unsafe`.
        #[allow(deprecated)]
        let epoll = AsyncFd::new(EpollSet(epoll))?;
        let doorman = Arc::new(Doorman {
            epoll,
            slots: Mutex::default(),
        });
        let task = tokio::spawn(doorman.clone().run());
        Ok((doorman, task))
    }

    fn slots(&self) -> MutexGuard<'_, Slots<Waiting>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps `client` here until its socket turns readable, then starts its session.
    pub fn park(&self, stream: DetachedStream, client: Admitted) {
        let mut slots = self.slots();
        let fd = stream.as_fd().as_raw_fd();
        let index = slots.insert(Waiting { stream, client });
        let Some(Some(waiting)) = slots.entries.get(index) else {
            return;
        };
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if let Err(e) = self.epoll.get_ref().0.add(
            waiting.stream.as_fd(),
            EpollEvent::new(interest, index as u64),
        ) {
            // Without a place to wait, the session starts at once.
            debug!("client fd {fd}: waiting for its first byte failed ({e}); starting it now");
            if let Some(waiting) = slots.take(index) {
                drop(slots);
                waiting.client.start(waiting.stream);
            }
        }
    }

    /// Closes the waiting clients whose pool is draining: they have sent nothing. Those whose
    /// first bytes have arrived are started instead: their session answers them.
    pub fn close_draining(&self) {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAKE];
        while self.start_ready(&mut events) == events.len() {}
        let closing: Vec<Waiting> = {
            let mut slots = self.slots();
            let draining: Vec<usize> = slots
                .entries
                .iter()
                .enumerate()
                .filter_map(|(index, entry)| {
                    let shutdown = &entry.as_ref()?.client.shutdown;
                    let drains = shutdown.borrow().is_some() || shutdown.has_changed().is_err();
                    drains.then_some(index)
                })
                .collect();
            draining
                .into_iter()
                .filter_map(|index| slots.take(index))
                .collect()
        };
        for waiting in closing {
            let _ = self.epoll.get_ref().0.delete(waiting.stream.as_fd());
            debug!("client {} closed while draining", waiting.client.id);
        }
    }

    /// Hands every client whose socket turned readable to its session.
    async fn run(self: Arc<Self>) {
        let mut events = vec![EpollEvent::empty(); EVENTS_PER_WAKE];
        loop {
            let mut ready = match self.epoll.readable().await {
                Ok(ready) => ready,
                Err(e) => {
                    warn!("waiting for clients' first bytes failed: {e}");
                    return;
                }
            };
            if self.start_ready(&mut events) < events.len() {
                ready.clear_ready();
            }
        }
    }

    /// Starts the sessions of the clients whose sockets are readable now, up to
    /// `events.len()` of them; returns how many events there were.
    fn start_ready(&self, events: &mut [EpollEvent]) -> usize {
        let count = self
            .epoll
            .get_ref()
            .0
            .wait(events, EpollTimeout::ZERO)
            .unwrap_or(0);
        for event in &events[..count] {
            let waiting = self.slots().take(event.data() as usize);
            if let Some(waiting) = waiting {
                let _ = self.epoll.get_ref().0.delete(waiting.stream.as_fd());
                waiting.client.start(waiting.stream);
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_reuse_freed_places_and_take_each_once() {
        let mut slots = Slots::default();
        assert_eq!(slots.insert("a"), 0);
        assert_eq!(slots.insert("b"), 1);
        assert_eq!(slots.take(0), Some("a"));
        assert_eq!(slots.take(0), None, "a slot is taken once");
        assert_eq!(slots.insert("c"), 0, "the freed slot is reused");
        assert_eq!(slots.take(7), None);
        assert_eq!(slots.take(1), Some("b"));
        assert_eq!(slots.take(0), Some("c"));
        assert_eq!(slots.entries.len(), 2, "no growth while slots are free");
    }
}
