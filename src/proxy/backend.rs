//! One backend connection: a task that owns the socket, pipelines the requests of many
//! clients onto it and hands each reply back to the client that asked, strictly FIFO.
//!
//! The connection is made lazily, on the first request (or at start with `preconnect`), and
//! again after any failure; the hostname is resolved on every connect. Frames are written
//! zero-copy with vectored writes, so the task always knows which requests were sent. When the
//! connection fails, requests already sent fail (a late reply could cross), and requests not
//! yet sent are retried on a fresh connection. A request's `timeout` runs from the moment it
//! was queued until its reply arrives.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::error::BackendError;
use super::health::{ProbeKind, ServerHealth};
use super::stream::{connect, Stream};
use crate::config::ServerAddr;
use crate::proto::memcache;
use crate::proto::redis::reply::{Protocol, ReplyDecoder, ReplyKind};
use crate::stats::{ConnectionStats, ServerStats};

/// Requests taken off the queue and not yet answered, per connection; beyond this the
/// connection stops taking more, and the queue holds them.
const MAX_IN_FLIGHT: usize = 16 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// How long a connection waits before asking a server that was not a master again.
const NOT_MASTER_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
/// The most room made at once for a reply's declared size, ahead of its bytes.
const MAX_ROOM_AHEAD: usize = 64 * 1024 * 1024;
/// A value at least this large gets an allocation of its own, kept for reuse afterwards.
const LARGE_VALUE: usize = 64 * 1024;
/// The most large allocations a connection keeps for reuse, and the most memory they hold.
const MAX_SPARES: usize = 4;
const MAX_SPARE_BYTES: usize = 8 * 1024 * 1024;
const PAGE: usize = 4096;

/// Where a reply goes: the client's reply channel and the request's place in its order.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    /// `None` when nobody wants the reply (`noreply`): it is read and dropped.
    pub tx: Option<mpsc::UnboundedSender<ClientReply>>,
    pub seq: u64,
    /// The fragment number within a split request (0 for a whole request).
    pub part: u32,
    /// The client and its worker: a redirected request takes the connection the client's
    /// own requests to that server take.
    pub client: u64,
    pub worker: usize,
    /// The client's database and protocol: a redirected request takes the same lane.
    pub lane: Lane,
}

/// Which of a server's sets of shared connections a request takes: the database its client
/// selected and the protocol it agreed (`HELLO 3`). Each lane's connections are set up for
/// it once (`SELECT n`, `HELLO 3`), so clients of every database and protocol share
/// pipelined connections and nobody needs one of their own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lane {
    pub db: u32,
    pub resp3: bool,
}

impl Lane {
    /// The protocol of the lane's replies.
    pub fn protocol(self) -> Protocol {
        if self.resp3 {
            Protocol::Resp3
        } else {
            Protocol::Resp2
        }
    }

    /// The handshake of a connection of this lane: the server's own (`AUTH`, its `SELECT`,
    /// `READONLY`, `ROLE`) with `HELLO 3` after `AUTH` for RESP3 and the lane's `SELECT`.
    pub fn handshake(self, steps: &[(&'static str, Bytes)]) -> Vec<(&'static str, Bytes)> {
        let mut out = Vec::with_capacity(steps.len() + 2);
        let auth = steps.iter().take_while(|(label, _)| *label == "AUTH");
        out.extend(auth.cloned());
        if self.resp3 {
            out.push((
                "HELLO 3",
                Bytes::from_static(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
            ));
        }
        if self.db != 0 {
            let db = self.db.to_string();
            out.push((
                "SELECT",
                Bytes::from(crate::proto::redis::pubsub::frame_of_bulks(&[
                    b"SELECT",
                    db.as_bytes(),
                ])),
            ));
        }
        out.extend(
            steps
                .iter()
                .filter(|(label, _)| *label != "AUTH" && *label != "SELECT")
                .cloned(),
        );
        out
    }
}

/// A reply, or the reason there is none, for one request or fragment.
#[derive(Debug)]
pub struct ClientReply {
    pub seq: u64,
    pub part: u32,
    pub result: Result<Bytes, BackendError>,
}

/// One request for a backend: the exact bytes to send, and where its reply goes.
#[derive(Debug)]
pub struct BackendRequest {
    pub frame: Bytes,
    pub reply_to: ReplyTo,
    /// When the request times out (queued time + the pool's `timeout`), if it can.
    pub deadline: Option<Instant>,
    /// The frame ends with a memcached meta no-op (`mn`): the reply is everything the server
    /// sends up to its `MN`, which is dropped (quiet mode may send nothing before it).
    pub until_noop: bool,
    /// Redis Cluster: redirects and retries this request has been through.
    pub redirects: u8,
    /// Redis Cluster: send `ASKING` first (an `-ASK` redirect).
    pub asking: bool,
}

impl BackendRequest {
    /// Fails a request that was never sent: it leaves the server's in-queue.
    pub(super) fn fail(self, err: BackendError, stats: &ServerStats) {
        stats.unqueued(self.frame.len() as u64);
        self.reply_to.deliver(Err(err));
    }

    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

impl ReplyTo {
    pub(super) fn deliver(self, result: Result<Bytes, BackendError>) {
        // A client that has gone away, or asked for no reply, does not want it: dropping it
        // is correct.
        let Some(tx) = self.tx else {
            return;
        };
        let _ = tx.send(ClientReply {
            seq: self.seq,
            part: self.part,
            result,
        });
    }
}

/// What a backend connection needs to know about its server.
#[derive(Debug)]
pub struct ServerInfo {
    pub pool_name: String,
    /// The twemproxy name (stats key, ketama identity).
    pub name: String,
    /// The server string without its alias, for log lines.
    pub pname: String,
    pub addr: ServerAddr,
    /// Commands sent first on every new connection (AUTH, then SELECT), replies swallowed.
    /// Swapped by a reload that changes `redis_auth` or `redis_db`: new connections use it.
    pub handshake: arc_swap::ArcSwap<Vec<(&'static str, Bytes)>>,
    pub probe: ProbeKind,
    pub health: ServerHealth,
    /// The pool that owns the server, told about failures and redirects.
    pub owner: Arc<dyn ServerOwner>,
    /// The server's counters; kept across reloads while the server stays.
    pub stats: Arc<ServerStats>,
    /// Process-wide connection counts.
    pub connections: Arc<ConnectionStats>,
    /// A node of a Redis Cluster pool: redirects in its replies are followed.
    pub cluster: bool,
    /// A master of a Sentinel pool: a `-READONLY` reply (it was demoted) is re-sent to the
    /// master that replaced it.
    pub sentinel: bool,
}

/// The one way back from a backend connection to the pool that owns its server, so that
/// this module depends on nothing above it: the pool implements it.
pub trait ServerOwner: Send + Sync + std::fmt::Debug {
    /// How the pool reaches its servers over TLS now (`server_tls:`), if it does.
    fn server_tls(&self) -> Option<Arc<crate::tls::Connector>>;
    /// A connection to `server` failed, or the server could not serve.
    fn server_failed(&self, server: &ServerInfo, err: &BackendError);
    /// A cluster node answered `request` with a redirect or retry (`reply`): the owner sends
    /// it on, keeping its `ReplyTo`, or hands it back to be re-sent on this same connection
    /// after the given backoff (`-TRYAGAIN`, `-CLUSTERDOWN`).
    fn redirected(
        &self,
        server: &ServerInfo,
        request: BackendRequest,
        reply: Bytes,
    ) -> Option<(BackendRequest, std::time::Duration)>;
    /// A cluster node answered a request on one of its dedicated connections with `reply`:
    /// when it is a redirect, the dedicated connections of the node it points to, and
    /// whether `ASKING` must come first.
    fn redirect_dedicated(
        &self,
        server: &ServerInfo,
        reply: &[u8],
    ) -> Option<(Arc<super::dedicated::Dedicated>, bool)>;
    /// A Sentinel pool's blocking command on `server` was cut off by a failover (`failure`
    /// is what ended it): the owner sends it again to the shard's master once there is one,
    /// or delivers `failure` when its retries run out.
    fn failover_blocking(
        &self,
        server: &ServerInfo,
        request: super::dedicated::BlockingRequest,
        failure: Result<Bytes, BackendError>,
    );
    /// `server` turned out not to be a master (Sentinel pools check `ROLE`): the owner sends
    /// `requests` to the server that replaced it, and returns those it cannot place yet.
    fn not_master(&self, server: &ServerInfo, requests: Vec<BackendRequest>)
        -> Vec<BackendRequest>;
}

impl ServerInfo {
    /// How the pool reaches its servers over TLS now (`server_tls:`), if it does.
    pub fn server_tls(&self) -> Option<Arc<crate::tls::Connector>> {
        self.owner.server_tls()
    }

    fn report_failure(&self, err: &BackendError) {
        self.owner.server_failed(self, err);
    }
}

/// An entry of the in-flight queue: a client waiting, or a handshake reply to swallow.
enum InFlight {
    Client {
        reply_to: ReplyTo,
        deadline: Option<Instant>,
        frame: Bytes,
        /// When its last byte was written (for the server latency).
        sent_at: Option<Instant>,
        /// For a request that runs until `MN`: what the server said before it.
        gathered: Option<BytesMut>,
        /// Redis Cluster: redirects and retries so far.
        redirects: u8,
        /// Redis Cluster: sent after `ASKING` (resent the same way after a failure).
        asking: bool,
    },
    Handshake(&'static str),
}

/// Redis Cluster: requests the node answered `-TRYAGAIN` or `-CLUSTERDOWN`, re-sent on the
/// same connection once the backoff ends, in the order they were answered and ahead of
/// anything not yet sent; until then the connection takes no new request. So a retried
/// request is never overtaken by a later request of its client (a `SET` retried after the
/// `GET` that followed it would make the `GET` read the old value).
#[derive(Default)]
struct Held {
    requests: VecDeque<BackendRequest>,
    until: Option<Instant>,
}

impl Held {
    fn hold(
        &mut self,
        request: BackendRequest,
        backoff: std::time::Duration,
        now: Instant,
        stats: &ServerStats,
    ) {
        // It waits in the in-queue again, as a request routed to the server does.
        stats.enqueue(request.frame.len() as u64);
        self.until.get_or_insert(now + backoff);
        self.requests.push_back(request);
    }
}

/// Starts a connection task and returns the queue that feeds it.
pub fn spawn_connection(
    info: Arc<ServerInfo>,
    preconnect: bool,
    worker: usize,
    lane: Lane,
) -> mpsc::UnboundedSender<BackendRequest> {
    let (tx, rx) = mpsc::unbounded_channel();
    super::workers::spawn_on(worker, connection_loop(info, rx, preconnect, lane));
    tx
}

/// Fails every request waiting to be sent: in `retry` and in the queue.
fn fail_waiting(
    retry: &mut VecDeque<BackendRequest>,
    queue: &mut mpsc::UnboundedReceiver<BackendRequest>,
    err: &BackendError,
    stats: &ServerStats,
) {
    for req in retry.drain(..) {
        req.fail(err.clone(), stats);
    }
    while let Ok(req) = queue.try_recv() {
        req.fail(err.clone(), stats);
    }
}

async fn connection_loop(
    info: Arc<ServerInfo>,
    mut queue: mpsc::UnboundedReceiver<BackendRequest>,
    preconnect: bool,
    lane: Lane,
) {
    // Requests that must go out before anything else in the queue: never sent yet.
    let mut retry: VecDeque<BackendRequest> = VecDeque::new();
    let mut eager = preconnect;
    loop {
        if retry.is_empty() && !eager {
            match queue.recv().await {
                Some(req) => retry.push_back(req),
                None => return,
            }
        }
        let now = Instant::now();
        while retry.front().is_some_and(|r| r.expired(now)) {
            if let Some(req) = retry.pop_front() {
                req.fail(BackendError::TimedOut, &info.stats);
            }
        }
        if retry.is_empty() && !eager {
            continue;
        }
        // Connecting counts against the first request's timeout. twemproxy counts a server
        // connection from the moment it is created, before it connects.
        info.connections.opened();
        let tls = info.server_tls();
        let connecting = connect(&info.addr, tls.as_deref());
        let connected = match retry.front().and_then(|r| r.deadline) {
            Some(deadline) => tokio::time::timeout_at(deadline, connecting)
                .await
                .unwrap_or(Err(BackendError::TimedOut)),
            None => connecting.await,
        };
        match connected {
            Ok(stream) => {
                info.stats.server_connections.inc();
                let closed = serve(stream, &info, lane, &mut queue, &mut retry).await;
                info.stats.server_connections.dec();
                info.connections.closed();
                match closed {
                    None => return,
                    Some(Closed { err, eof }) => {
                        debug!(pool = %info.pool_name, server = %info.name, "server connection closed: {err}");
                        match (&err, eof) {
                            (_, true) => info.stats.server_eof.inc(),
                            (BackendError::TimedOut, _) => info.stats.server_timedout.inc(),
                            _ => info.stats.server_err.inc(),
                        }
                        info.report_failure(&err);
                        if err == BackendError::NotMaster {
                            // Hand what waits to the server that replaced this one, if any;
                            // the rest waits a moment before the next try.
                            let mut waiting: Vec<BackendRequest> = retry.drain(..).collect();
                            while let Ok(req) = queue.try_recv() {
                                waiting.push(req);
                            }
                            retry.extend(info.owner.not_master(&info, waiting));
                            tokio::time::sleep(NOT_MASTER_PAUSE).await;
                        }
                    }
                }
            }
            Err(err) => {
                info.connections.closed();
                if err == BackendError::TimedOut {
                    info.stats.server_timedout.inc();
                } else {
                    info.stats.server_err.inc();
                }
                if eager {
                    warn!("connect to server '{}' failed, ignored: {err}", info.pname);
                }
                info.report_failure(&err);
                fail_waiting(&mut retry, &mut queue, &err, &info.stats);
            }
        }
        eager = false;
    }
}

/// Why a connection ended.
struct Closed {
    err: BackendError,
    /// The server closed it (EOF), rather than an error or a timeout.
    eof: bool,
}

/// The connection's pipeline state: what is in flight and what is still to be written.
struct Pipeline {
    in_flight: VecDeque<InFlight>,
    /// Frames not yet completely written, oldest first; each has an entry at the back of
    /// `in_flight`. The flag says whether it is a client request (counted in the stats).
    unwritten: VecDeque<(Bytes, bool)>,
    /// Bytes of `unwritten[0]` already written.
    front_written: usize,
    stats: Arc<ServerStats>,
}

impl Pipeline {
    fn push(&mut self, req: BackendRequest) {
        if req.asking {
            self.push_handshake("ASKING", Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n"));
        }
        self.unwritten.push_back((req.frame.clone(), true));
        self.in_flight.push_back(InFlight::Client {
            reply_to: req.reply_to,
            deadline: req.deadline,
            frame: req.frame,
            sent_at: None,
            gathered: req.until_noop.then(BytesMut::new),
            redirects: req.redirects,
            asking: req.asking,
        });
    }

    fn push_handshake(&mut self, label: &'static str, frame: Bytes) {
        self.unwritten.push_back((frame, false));
        self.in_flight.push_back(InFlight::Handshake(label));
    }

    /// Records `written` more bytes written: frames fully written count as sent.
    fn advance(&mut self, mut written: usize) {
        let mut now = None;
        while written > 0 {
            let Some((front, counted)) = self.unwritten.front() else {
                return;
            };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                if *counted {
                    self.stats.sent(front.len() as u64);
                    // The entry of `unwritten[0]` is the first one not yet fully written.
                    let index = self.in_flight.len() - self.unwritten.len();
                    if let Some(InFlight::Client { sent_at, .. }) = self.in_flight.get_mut(index) {
                        *sent_at = Some(*now.get_or_insert_with(Instant::now));
                    }
                }
                self.unwritten.pop_front();
                self.front_written = 0;
            } else {
                self.front_written += written;
                written = 0;
            }
        }
    }

    /// The earliest deadline among requests in flight (the oldest client request's that
    /// has one: a noreply request has none).
    fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.iter().find_map(|entry| match entry {
            InFlight::Client { deadline, .. } => *deadline,
            InFlight::Handshake(_) => None,
        })
    }

    /// After a failure: requests never sent go back to `retry` (in order, unless expired);
    /// every request sent fails with `err`.
    fn unwind(mut self, err: &BackendError, retry: &mut VecDeque<BackendRequest>) {
        let partially_written = usize::from(self.front_written > 0);
        let unsent = self.unwritten.len().saturating_sub(partially_written);
        let now = Instant::now();
        let mut requeue = Vec::with_capacity(unsent);
        for _ in 0..unsent {
            match self.in_flight.pop_back() {
                Some(InFlight::Client {
                    reply_to,
                    deadline,
                    frame,
                    gathered,
                    redirects,
                    asking,
                    ..
                }) => {
                    let req = BackendRequest {
                        frame,
                        reply_to,
                        deadline,
                        until_noop: gathered.is_some(),
                        redirects,
                        asking,
                    };
                    if req.expired(now) {
                        req.fail(BackendError::TimedOut, &self.stats);
                    } else {
                        requeue.push(req);
                    }
                }
                Some(InFlight::Handshake(_)) | None => {}
            }
        }
        for req in requeue {
            retry.push_front(req);
        }
        // What is left was sent and will get no reply, except the partly written request
        // (if any, the last one left), which never left the in-queue.
        let last = self.in_flight.len().saturating_sub(1);
        for (index, entry) in self.in_flight.into_iter().enumerate() {
            if let InFlight::Client {
                reply_to, frame, ..
            } = entry
            {
                if partially_written == 1 && index == last {
                    self.stats.unqueued(frame.len() as u64);
                } else {
                    self.stats.abandoned(frame.len() as u64);
                }
                reply_to.deliver(Err(err.clone()));
            }
        }
    }
}

/// Serves one connected socket until it fails (`Some`) or the queue closes (`None`).
async fn serve(
    mut stream: Stream,
    info: &ServerInfo,
    lane: Lane,
    queue: &mut mpsc::UnboundedReceiver<BackendRequest>,
    retry: &mut VecDeque<BackendRequest>,
) -> Option<Closed> {
    let (mut reader, mut writer) = stream.split();
    let mut pipe = Pipeline {
        in_flight: VecDeque::new(),
        unwritten: VecDeque::new(),
        front_written: 0,
        stats: info.stats.clone(),
    };
    let mut eof = false;
    let mut buffer = ReadBuffer::new();
    let mut decoder = ReplyCodec::for_server(info.probe, lane.protocol());
    let mut queue_open = true;
    let mut held = Held::default();

    let handshake = lane.handshake(&info.handshake.load());
    // A Sentinel pool's master is used only once `ROLE` says it is one: until the handshake
    // is answered, no request is sent.
    let mut gated = handshake.iter().any(|(label, _)| *label == "ROLE");
    for (label, frame) in handshake.iter() {
        pipe.push_handshake(label, frame.clone());
    }
    if !gated {
        while let Some(req) = retry.pop_front() {
            pipe.push(req);
        }
    }

    let failure = loop {
        if !queue_open && pipe.in_flight.is_empty() && held.requests.is_empty() {
            return None;
        }
        let deadline = pipe.next_deadline();
        let may_take =
            queue_open && !gated && held.until.is_none() && pipe.in_flight.len() < MAX_IN_FLIGHT;
        // TLS records of requests already handed over, still waiting for room in the socket.
        let tls_pending = writer.has_pending();
        tokio::select! {
            biased;
            read = reader.read_buf(&mut buffer.input) => {
                match read {
                    Ok(0) => {
                        eof = true;
                        break BackendError::ConnectionReset;
                    }
                    Err(e) => break BackendError::from_io(&e),
                    Ok(_) => {}
                }
                if let Err(err) = dispatch_replies(&mut decoder, &mut buffer.input, &mut pipe.in_flight, &mut held, info) {
                    break err;
                }
                if gated && !pipe.in_flight.iter().any(|e| matches!(e, InFlight::Handshake(_))) {
                    gated = false;
                    while let Some(req) = retry.pop_front() {
                        pipe.push(req);
                    }
                }
                buffer.make_room(decoder.bytes_wanted());
            }
            written = write_some(&mut writer, &pipe.unwritten, pipe.front_written), if !pipe.unwritten.is_empty() || tls_pending => {
                match written {
                    Ok(n) => pipe.advance(n),
                    Err(e) => break BackendError::from_io(&e),
                }
            }
            _ = tokio::time::sleep_until(held.until.unwrap_or_else(Instant::now)), if held.until.is_some() => {
                held.until = None;
                while let Some(req) = held.requests.pop_front() {
                    pipe.push(req);
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                warn!(pool = %info.pool_name, server = %info.name, "request timed out; closing the server connection");
                break BackendError::TimedOut;
            }
            next = queue.recv(), if may_take => {
                match next {
                    None => queue_open = false,
                    Some(req) => {
                        pipe.push(req);
                        // Take everything already queued so it leaves in one write.
                        while pipe.in_flight.len() < MAX_IN_FLIGHT {
                            let Ok(req) = queue.try_recv() else { break };
                            pipe.push(req);
                        }
                    }
                }
            }
        }
    };
    pipe.unwind(&failure, retry);
    // Held requests were answered before anything still unsent was: they go first.
    while let Some(req) = held.requests.pop_back() {
        retry.push_front(req);
    }
    Some(Closed { err: failure, eof })
}

/// One vectored write of the pending frames, the first one from `front_written` on.
async fn write_some(
    writer: &mut super::stream::WriteHalf<'_>,
    unwritten: &VecDeque<(Bytes, bool)>,
    front_written: usize,
) -> std::io::Result<usize> {
    let frames = unwritten.iter().enumerate().map(move |(i, (frame, _))| {
        let start = if i == 0 { front_written } else { 0 };
        &frame[start..]
    });
    super::stream::write_buffers(writer, frames).await
}

/// The connection's read buffer.
///
/// A large value gets all the room it needs in one allocation as soon as its header is in: its
/// bytes are read straight into place and split off whole as the reply, never copied while the
/// buffer grows (and no more than [`MAX_ROOM_AHEAD`] is made ahead of the bytes received,
/// whatever a header claims). The allocation outlives the reply: the connection keeps a handle
/// on it, and once the client has written the reply and let it go, a later large value is read
/// into the same memory, already mapped, instead of fresh pages from the allocator.
struct ReadBuffer {
    input: BytesMut,
    /// The size of `input`'s allocation when it was made for a large value, else 0.
    large: usize,
    /// Empty handles on earlier large allocations and their sizes, oldest first; each is
    /// shared with replies still on their way to a client until those are dropped.
    spares: VecDeque<(BytesMut, usize)>,
    /// The sizes of `spares`, summed.
    spare_bytes: usize,
}

impl ReadBuffer {
    fn new() -> ReadBuffer {
        ReadBuffer {
            input: BytesMut::with_capacity(READ_CHUNK),
            large: 0,
            spares: VecDeque::new(),
            spare_bytes: 0,
        }
    }

    /// Makes room for the next read. `wanted` is the length the buffer must reach to complete
    /// the reply in progress, when its header said so (0 otherwise); without it the buffer
    /// grows by doubling with what is buffered.
    fn make_room(&mut self, wanted: usize) {
        let len = self.input.len();
        let additional = if wanted > len && wanted - len <= MAX_ROOM_AHEAD {
            // A little more than the value, for what follows it (its `END`, the next reply).
            let needed = wanted + READ_CHUNK / 4;
            if self.input.capacity() >= needed {
                return;
            }
            // At least doubling: a reply of many large values is not copied once per value.
            let size = needed.max(len.saturating_mul(2));
            if size >= LARGE_VALUE {
                self.switch_to_large(size);
                return;
            }
            size - len
        } else if self.input.capacity() - len < READ_CHUNK / 4 {
            READ_CHUNK.max(len)
        } else {
            return;
        };
        if self.large == 0 || self.input.try_reclaim(additional) {
            self.input.reserve(additional);
            return;
        }
        // Back to a small buffer; the large one waits for the next large value.
        let mut small = BytesMut::with_capacity(len + additional);
        small.extend_from_slice(&self.input);
        self.replace(small, 0);
    }

    /// Moves what is buffered into an allocation of at least `target` bytes made for a large
    /// value: a spare nothing else holds any more, or fresh memory.
    fn switch_to_large(&mut self, target: usize) {
        let len = self.input.len();
        if self.large >= target && self.input.try_reclaim(target - len) {
            return;
        }
        let found = self
            .spares
            .iter_mut()
            .position(|(spare, size)| *size >= target && spare.try_reclaim(target));
        let (mut buf, size) = match found.and_then(|i| self.spares.remove(i)) {
            Some((spare, size)) => {
                self.spare_bytes -= size;
                (spare, size)
            }
            None => {
                // Rounded up to whole pages only: a client that holds many such replies
                // (one that does not read) holds little more than their bytes.
                let size = target.next_multiple_of(PAGE);
                (BytesMut::with_capacity(size), size)
            }
        };
        buf.extend_from_slice(&self.input);
        self.replace(buf, size);
    }

    /// Makes `buf` the read buffer; the old one's allocation is kept as a spare if it was a
    /// large one and there is room among the spares.
    fn replace(&mut self, buf: BytesMut, size: usize) {
        let mut old = std::mem::replace(&mut self.input, buf);
        let old_size = std::mem::replace(&mut self.large, size);
        if old_size == 0 || old_size > MAX_SPARE_BYTES {
            return;
        }
        old.clear();
        self.spares.push_back((old, old_size));
        self.spare_bytes += old_size;
        while self.spares.len() > MAX_SPARES || self.spare_bytes > MAX_SPARE_BYTES {
            if let Some((_, size)) = self.spares.pop_front() {
                self.spare_bytes -= size;
            }
        }
    }
}

/// A decoded reply, as the connection needs to see it.
struct Decoded {
    frame: Bytes,
    /// An error reply (for the handshake's log line).
    error: bool,
    /// The server is alive but cannot serve (`-OOM`, `-BUSY`, `-LOADING`): a failure toward
    /// ejection.
    overloaded: bool,
    /// memcached's meta no-op reply, `MN`.
    noop: bool,
    /// A RESP3 push (out of band: it answers no request).
    push: bool,
}

/// The reply decoder for the protocol the server speaks.
enum ReplyCodec {
    Redis(ReplyDecoder),
    Memcache(memcache::reply::ReplyDecoder),
}

impl ReplyCodec {
    fn for_server(kind: ProbeKind, protocol: Protocol) -> ReplyCodec {
        match kind {
            ProbeKind::Redis => ReplyCodec::Redis(ReplyDecoder::with_protocol(
                crate::proto::redis::reply::DEFAULT_MAX_REPLY_BYTES,
                protocol,
            )),
            ProbeKind::Memcache => ReplyCodec::Memcache(memcache::reply::ReplyDecoder::default()),
        }
    }

    /// See [`ReplyDecoder::bytes_wanted`].
    fn bytes_wanted(&self) -> usize {
        match self {
            ReplyCodec::Redis(decoder) => decoder.bytes_wanted(),
            ReplyCodec::Memcache(decoder) => decoder.bytes_wanted(),
        }
    }

    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Decoded>, String> {
        match self {
            ReplyCodec::Redis(decoder) => Ok(decoder
                .decode(input)
                .map_err(|e| e.to_string())?
                .map(|reply| Decoded {
                    error: reply.kind == ReplyKind::Error,
                    overloaded: matches!(reply.error_word(), Some(b"OOM" | b"BUSY" | b"LOADING")),
                    noop: false,
                    push: reply.kind == ReplyKind::Push,
                    frame: reply.frame,
                })),
            ReplyCodec::Memcache(decoder) => Ok(decoder
                .decode(input)
                .map_err(|e| e.to_string())?
                .map(|reply| Decoded {
                    error: reply.kind == memcache::reply::ReplyKind::Error,
                    // twemproxy's memcache_failure is always false.
                    overloaded: false,
                    noop: reply.kind == memcache::reply::ReplyKind::MetaNoop,
                    push: false,
                    frame: reply.frame,
                })),
        }
    }
}

/// Hands every complete reply in `input` to the request at the head of `in_flight`.
fn dispatch_replies(
    decoder: &mut ReplyCodec,
    input: &mut BytesMut,
    in_flight: &mut VecDeque<InFlight>,
    held: &mut Held,
    info: &ServerInfo,
) -> Result<(), BackendError> {
    let mut now = None;
    loop {
        let reply = match decoder.decode(input) {
            Ok(Some(reply)) => reply,
            Ok(None) => return Ok(()),
            Err(err) => {
                warn!(pool = %info.pool_name, server = %info.name, "unparsable reply from server: {err}");
                return Err(BackendError::InvalidReply);
            }
        };
        if reply.push {
            // Shared connections subscribe to nothing and track nothing, so a push here
            // belongs to no client: it is dropped, never matched to a request.
            debug!(pool = %info.pool_name, server = %info.name, "push message on a shared connection dropped");
            continue;
        }
        // A quiet-mode request gathers what comes before its `MN`.
        if let Some(InFlight::Client {
            gathered: Some(gathered),
            ..
        }) = in_flight.front_mut()
        {
            if !reply.noop {
                gathered.extend_from_slice(&reply.frame);
                continue;
            }
        }
        match in_flight.pop_front() {
            Some(InFlight::Client {
                reply_to,
                frame,
                sent_at,
                gathered,
                deadline,
                redirects,
                ..
            }) => {
                let now = *now.get_or_insert_with(Instant::now);
                let latency = sent_at.map_or(std::time::Duration::ZERO, |t| {
                    now.saturating_duration_since(t)
                });
                let answer = match gathered {
                    Some(gathered) => gathered.freeze(),
                    None => reply.frame,
                };
                info.stats
                    .replied(frame.len() as u64, answer.len() as u64, latency);
                if reply.overloaded {
                    // The server is alive but cannot serve: a failure toward ejection.
                    info.report_failure(&BackendError::InvalidReply);
                } else {
                    info.health.record_success();
                }
                let follow = reply.error
                    && ((info.cluster && super::cluster::is_redirect(&answer))
                        || (info.sentinel && answer.starts_with(b"-READONLY")));
                if follow {
                    let request = BackendRequest {
                        frame,
                        reply_to,
                        deadline,
                        until_noop: false,
                        redirects,
                        asking: false,
                    };
                    if let Some((request, backoff)) = info.owner.redirected(info, request, answer) {
                        held.hold(request, backoff, now, &info.stats);
                    }
                    continue;
                }
                reply_to.deliver(Ok(answer));
            }
            Some(InFlight::Handshake(what)) => {
                if what == "ROLE" && !reply.frame.starts_with(b"*3\r\n$6\r\nmaster\r\n") {
                    warn!(
                        "pool '{}': server '{}' at {} is not a master (ROLE); no request goes to it",
                        info.pool_name, info.name, info.pname
                    );
                    return Err(BackendError::NotMaster);
                }
                if reply.error {
                    let frame = reply.frame.trim_ascii_end();
                    let text = String::from_utf8_lossy(frame.strip_prefix(b"-").unwrap_or(frame))
                        .into_owned();
                    warn!(
                        "pool '{}': server '{}' refused walnut's {what}: {text}",
                        info.pool_name, info.name
                    );
                    if what == "AUTH" {
                        // Every request on this connection would be refused: the server
                        // is failing, as far as the pool is concerned.
                        info.report_failure(&BackendError::AuthRefused(text));
                    } else if what == "SELECT" || what == "HELLO 3" {
                        // Requests would run in the wrong database or protocol.
                        return Err(BackendError::SetupRefused { step: what, text });
                    }
                }
            }
            None => {
                warn!(pool = %info.pool_name, server = %info.name, "stray reply from server with no request waiting");
                return Err(BackendError::InvalidReply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        tx: &mpsc::UnboundedSender<ClientReply>,
        seq: u64,
        frame: &'static [u8],
    ) -> BackendRequest {
        BackendRequest {
            frame: Bytes::from_static(frame),
            reply_to: ReplyTo {
                tx: Some(tx.clone()),
                seq,
                part: 0,
                client: 0,
                worker: 0,
                lane: Lane::default(),
            },
            deadline: None,
            until_noop: false,
            redirects: 0,
            asking: false,
        }
    }

    fn empty_pipeline() -> Pipeline {
        Pipeline {
            in_flight: VecDeque::new(),
            unwritten: VecDeque::new(),
            front_written: 0,
            stats: Arc::default(),
        }
    }

    #[test]
    fn after_a_failure_sent_requests_fail_and_unsent_ones_are_kept_for_retry_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pipe = empty_pipeline();
        let stats = pipe.stats.clone();
        for (seq, frame) in [(0, &b"aaaa"[..]), (1, b"bbbb"), (2, b"cccc"), (3, b"dddd")] {
            stats.enqueue(4);
            pipe.push(request(&tx, seq, frame));
        }
        // The first frame is written, the second only half.
        pipe.advance(6);
        assert_eq!(pipe.front_written, 2);
        let mut retry = VecDeque::new();
        pipe.unwind(&BackendError::ConnectionReset, &mut retry);
        let kept: Vec<u64> = retry.iter().map(|r| r.reply_to.seq).collect();
        assert_eq!(kept, vec![2, 3], "never-sent requests keep their order");
        let mut failed = Vec::new();
        while let Ok(reply) = rx.try_recv() {
            assert_eq!(reply.result.unwrap_err(), BackendError::ConnectionReset);
            failed.push(reply.seq);
        }
        assert_eq!(
            failed,
            vec![0, 1],
            "a partly written request counts as sent"
        );
    }

    #[test]
    fn expired_unsent_requests_fail_with_the_timeout_instead_of_being_retried() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pipe = empty_pipeline();
        let mut expired = request(&tx, 7, b"eeee");
        expired.deadline = Some(Instant::now() - std::time::Duration::from_millis(1));
        pipe.push(expired);
        let mut retry = VecDeque::new();
        pipe.unwind(&BackendError::TimedOut, &mut retry);
        assert!(retry.is_empty());
        let reply = rx.try_recv().unwrap();
        assert_eq!(
            (reply.seq, reply.result.unwrap_err()),
            (7, BackendError::TimedOut)
        );
    }

    #[test]
    fn handshake_entries_are_not_retried_or_answered() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pipe = empty_pipeline();
        pipe.push_handshake("AUTH", Bytes::from_static(b"*1\r\n$4\r\nAUTH\r\n"));
        pipe.push(request(&tx, 0, b"get"));
        let mut retry = VecDeque::new();
        pipe.unwind(&BackendError::ConnectionRefused, &mut retry);
        assert_eq!(retry.len(), 1);
        assert!(rx.try_recv().is_err());
    }

    /// Reads `input` into `buffer` as the connection does (reads of at most `READ_CHUNK`,
    /// decode, make room); returns the replies and the bytes copied by growth.
    fn read_replies(
        buffer: &mut ReadBuffer,
        codec: &mut ReplyCodec,
        input: &[u8],
    ) -> (Vec<Bytes>, usize) {
        let (mut frames, mut copied, mut fed) = (Vec::new(), 0, 0);
        while fed < input.len() {
            let spare = buffer.input.capacity() - buffer.input.len();
            assert!(spare >= READ_CHUNK / 4, "room for a read: {spare}");
            let n = spare.min(READ_CHUNK).min(input.len() - fed);
            buffer.input.extend_from_slice(&input[fed..fed + n]);
            fed += n;
            while let Some(reply) = codec.decode(&mut buffer.input).unwrap() {
                frames.push(reply.frame);
            }
            let before = buffer.input.as_ptr();
            buffer.make_room(codec.bytes_wanted());
            if buffer.input.as_ptr() != before {
                copied += buffer.input.len();
            }
        }
        (frames, copied)
    }

    fn bulk(len: usize) -> Vec<u8> {
        let mut reply = format!("${len}\r\n").into_bytes();
        reply.resize(reply.len() + len, b'v');
        reply.extend_from_slice(b"\r\n");
        reply
    }

    #[test]
    fn a_large_value_is_read_in_place_and_its_memory_reused_once_dropped() {
        let reply = bulk(1 << 20);
        let mut buffer = ReadBuffer::new();
        let mut codec = ReplyCodec::for_server(ProbeKind::Redis, Protocol::Resp2);
        let (frames, copied) = read_replies(&mut buffer, &mut codec, &reply);
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &reply[..]);
        // Only the first read moves, into the room made for the whole value.
        assert!(copied <= READ_CHUNK, "{copied}");
        let first = frames[0].as_ptr();

        // While the client still holds the reply, the next value gets other memory.
        let (held, _) = read_replies(&mut buffer, &mut codec, &reply);
        assert_ne!(held[0].as_ptr(), first);
        drop(frames);
        // Once it is dropped, its memory is reused.
        let (again, copied) = read_replies(&mut buffer, &mut codec, &reply);
        assert_eq!(&again[0][..], &reply[..]);
        assert_eq!(again[0].as_ptr(), first);
        assert!(copied <= READ_CHUNK, "{copied}");
        drop((held, again));

        let (small, _) = read_replies(&mut buffer, &mut codec, &b"+OK\r\n".repeat(10_000));
        assert_eq!(small.len(), 10_000);
        assert!(buffer.spares.len() <= MAX_SPARES && buffer.spare_bytes <= MAX_SPARE_BYTES);
    }

    #[test]
    fn a_header_claiming_a_huge_value_reserves_nothing_ahead_of_its_bytes() {
        let mut buffer = ReadBuffer::new();
        let mut codec = ReplyCodec::for_server(ProbeKind::Redis, Protocol::Resp2);
        let mut input = b"$1000000000\r\n".to_vec();
        input.resize(200_000, b'v');
        let (frames, _) = read_replies(&mut buffer, &mut codec, &input);
        assert!(frames.is_empty());
        assert!(codec.bytes_wanted() > MAX_ROOM_AHEAD);
        // Doubling with what arrived, not the declared gigabyte.
        assert!(
            buffer.input.capacity() <= 4 * input.len(),
            "{}",
            buffer.input.capacity()
        );
    }

    #[test]
    fn a_reply_of_many_large_values_is_not_copied_once_per_value() {
        let value = vec![b'm'; 256 * 1024];
        let mut reply = Vec::new();
        for i in 0..32 {
            reply.extend_from_slice(format!("VALUE k{i} 0 {}\r\n", value.len()).as_bytes());
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\n");
        }
        reply.extend_from_slice(b"END\r\n");
        let mut buffer = ReadBuffer::new();
        let mut codec = ReplyCodec::for_server(ProbeKind::Memcache, Protocol::Resp2);
        let (frames, copied) = read_replies(&mut buffer, &mut codec, &reply);
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &reply[..]);
        assert!(copied <= 2 * reply.len(), "{copied}");
    }

    #[test]
    fn spares_are_bounded() {
        let mut buffer = ReadBuffer::new();
        let mut codec = ReplyCodec::for_server(ProbeKind::Redis, Protocol::Resp2);
        let mut held = Vec::new();
        for len in [
            1 << 20,
            3 << 20,
            1 << 20,
            2 << 20,
            16 << 20,
            1 << 20,
            1 << 20,
        ] {
            held.extend(read_replies(&mut buffer, &mut codec, &bulk(len)).0);
            assert!(buffer.spares.len() <= MAX_SPARES);
            assert!(buffer.spare_bytes <= MAX_SPARE_BYTES);
            assert_eq!(
                buffer.spare_bytes,
                buffer.spares.iter().map(|(_, size)| size).sum::<usize>()
            );
        }
        assert_eq!(held.len(), 7);
    }
}
