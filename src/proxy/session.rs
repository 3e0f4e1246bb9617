//! The client session engine, the same for every protocol: read a batch, let the protocol
//! decode and route every complete request, and write the replies back in request order in
//! one coalesced write.
//!
//! Every request that expects a reply takes a numbered slot when it is read; a reply fills its
//! slot, and only the ready slots at the front are written. So replies can never be reordered
//! or cross, however the backends interleave. A split request's slot holds a [`Merger`] that
//! completes when every part has answered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use std::future::Future;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};
use tracing::{debug, warn};

use super::backend::{BackendRequest, ClientReply, Lane, ReplyTo};
use super::client_list::Registration;
use super::error::BackendError;
use super::outbox::Outbox;
use super::pool::{Pool, PoolSnapshot, Server};
use super::reply_mode::ReplyControl;
use super::stream::Stream;
use super::timers::{drain_end, Drain, DrainEnd, IdleRelease};
use crate::config::EjectPolicy;
use crate::route::RouteError;
use crate::stats::PoolStats;

/// Requests in flight per client before walnut stops decoding and reading from it.
const MAX_PENDING_REQUESTS: usize = 4096;
/// Reply bytes waiting to be written before walnut stops decoding and reading from the client.
const MAX_PENDING_OUTPUT: usize = 32 * 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// What walnut reads from a client behind its blocked command before it stops reading.
const BLOCKED_INPUT_LIMIT: usize = 1024 * 1024;
/// A read buffer at least this large is reused whole for the next frame.
const LARGE_INPUT: usize = 64 * 1024;
/// At the drain deadline, how much of what a client sent but walnut never read is read to
/// count its requests for the log.
const CUT_COUNT_LIMIT: usize = 16 * 1024 * 1024;

/// The drain signal: `None` while serving, then when a draining session must close whatever
/// it still holds.
pub type DrainDeadline = Option<Instant>;

/// What the drain deadline cut off, over a pool's sessions (reported by the drain).
#[derive(Debug, Default)]
pub struct DrainTally {
    /// Clients closed at the deadline with requests unanswered.
    pub clients: AtomicUsize,
    /// Requests they had sent (read or still in the socket) that got no reply.
    pub requests: AtomicUsize,
}

/// One protocol's side of a session: decoding, dispatch and its error replies.
pub trait Protocol: Send + 'static {
    /// A fresh per-connection state for a client of `snapshot`'s pool.
    fn new(snapshot: &PoolSnapshot) -> Self;

    /// Decodes and handles the complete requests in `input` while `core.has_room()`. Sets
    /// `core.closing` on QUIT or an unrecoverable framing error.
    fn handle_input(&mut self, core: &mut Core, snapshot: &Arc<PoolSnapshot>, input: &mut BytesMut);

    /// The reply a client sees for a proxy-side failure.
    fn error_reply(err: &BackendError) -> Bytes;

    /// Decodes and discards the complete requests in `input`, returning how many there were
    /// (to count what the drain deadline cut off).
    fn count_requests(&mut self, input: &mut BytesMut) -> usize;

    /// Whether the session holds state tied to the pool's servers (pub/sub subscriptions)
    /// that must follow a reload or failover: then [`Protocol::servers_changed`] is called
    /// every [`SERVERS_CHECK`] while it does.
    fn follows_servers(&self) -> bool {
        false
    }

    /// Lets the protocol move what it holds on servers to `snapshot`'s.
    fn servers_changed(&mut self, _core: &mut Core, _snapshot: &Arc<PoolSnapshot>) {}

    /// Whether its sessions are listed in the pool's registry (`CLIENT LIST`).
    const LISTED: bool = false;
}

/// How often a session that follows the pool's servers looks at them.
pub const SERVERS_CHECK: Duration = Duration::from_millis(250);

/// Combines the replies of a split request's parts into one reply.
pub trait Merger: Send {
    /// Records part `part`'s reply (`Err`: the failure text); true once every part answered.
    fn accept(&mut self, part: usize, reply: Result<Bytes, String>) -> bool;
    fn is_complete(&self) -> bool;
    fn finish(&self) -> Bytes;
    /// Whether the finished reply is an error walnut made (a part failed on the proxy side),
    /// counted in `forward_error` like any other proxy-generated error reply.
    fn is_proxy_error(&self) -> bool;
}

/// What a forwarded request expects back from its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// One reply, which the client sees.
    Reply,
    /// Everything up to a meta no-op reply (`MN`), which the frame ends with: a memcached
    /// meta command in quiet mode may or may not answer, and the no-op says it is done.
    UntilNoop,
    /// One reply, dropped: the client asked for none (`noreply`). The request takes no place
    /// in the reply order, so it never delays the replies of the others.
    Dropped,
}

/// A request's place in the reply order, with when it arrived (for the pool latency); a
/// pub/sub message pushed by a server has no arrival and counts in no latency.
struct Slot {
    state: SlotState,
    arrived: Option<Instant>,
    /// The client asked for no reply (`CLIENT REPLY OFF|SKIP`): the slot keeps its place,
    /// its reply is dropped.
    silenced: bool,
}

/// The `seq` of a [`ClientReply`] that answers no request: a pub/sub message a server pushed,
/// written after the replies already queued.
pub const PUSHED: u64 = u64::MAX;

/// What a slot holds.
enum SlotState {
    Waiting,
    Split(Box<dyn Merger>),
    Ready(Bytes),
}

/// Why the session stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client half-closed: answer what is pending, then close.
    Eof,
    /// QUIT: answer what came before it, then close.
    Quit,
    /// Malformed framing: answer what came before, then the error, then close.
    ProtocolError,
}

/// The protocol-independent state of one client connection.
pub struct Core {
    id: u64,
    /// The worker this session runs on; it picks the backend connections on the same thread.
    worker: usize,
    /// The database and protocol the client is in (`SELECT`, `HELLO`): the lane of shared
    /// connections its requests take.
    pub lane: Lane,
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]`.
    front_seq: u64,
    /// Where backends send this client's replies; made on the first forwarded request, so
    /// an idle client costs no channel.
    reply_tx: Option<mpsc::UnboundedSender<ClientReply>>,
    /// The receiving end of a channel just made, for the session loop to take.
    fresh_replies: Option<mpsc::UnboundedReceiver<ClientReply>>,
    /// Bytes of replies in ready slots, not yet moved to the output buffer.
    ready_bytes: usize,
    /// Bytes in the output buffer, as of the last move.
    unwritten: usize,
    /// When requests read in the current batch time out (now + the pool's `timeout`).
    batch_deadline: Option<Instant>,
    /// When the current batch was read.
    batch_arrived: Instant,
    /// The pool's counters.
    stats: Arc<PoolStats>,
    error_reply: fn(&BackendError) -> Bytes,
    pub closing: Option<Closing>,
    /// The slot of a blocking command still waiting: nothing after it is decoded until it
    /// is answered, as Redis runs nothing of a connection's behind a blocked command.
    blocked_on: Option<u64>,
    /// Nothing more is decoded until every request in flight is answered: the next one goes
    /// over another backend connection of the same server (a transaction's, or back to the
    /// shared one) and must not overtake what came before it.
    quiesce: bool,
    /// The protocol holds a decoded request it will handle once `quiesce` is over.
    pub deferred: bool,
    /// Pushed messages have filled the client's output bound: the session ends, as Redis
    /// drops a subscriber over its `client-output-buffer-limit`.
    overflowed: bool,
    /// A subscriber connection holds [`Core::push_target`]: the reply channel must outlive
    /// idle periods, or the messages it pushes later would go nowhere.
    pushed_to: bool,
    /// Which replies the client asked not to be sent (`CLIENT REPLY`).
    pub replies: ReplyControl,
    /// Its entry in the pool's list of sessions (Redis sessions only).
    listed: Option<Registration>,
}

impl Core {
    /// True while the client is within its bounds: requests in flight and reply bytes
    /// waiting to be written.
    pub fn has_room(&self) -> bool {
        !self.decoding_paused() && self.within_bounds()
    }

    /// True when no request in flight is still without its reply.
    pub fn all_answered(&self) -> bool {
        self.slots
            .iter()
            .all(|slot| matches!(slot.state, SlotState::Ready(_)))
    }

    /// Stops decoding until every request in flight is answered ([`Core::has_room`] turns
    /// false); the protocol keeps the request it could not handle yet (`deferred`).
    pub fn wait_for_answers(&mut self) {
        self.quiesce = true;
    }

    /// Ends a [`Core::wait_for_answers`] once it is over.
    pub fn answers_awaited(&mut self) {
        self.quiesce = false;
    }

    /// Whether decoding waits for replies (a blocked command, or [`Core::wait_for_answers`]).
    fn decoding_paused(&self) -> bool {
        self.blocked_on.is_some() || (self.quiesce && !self.all_answered())
    }

    /// Requests in flight and reply bytes waiting are within their bounds (a blocked client
    /// is still read from, so that walnut sees it leave).
    fn within_bounds(&self) -> bool {
        self.slots.len() < MAX_PENDING_REQUESTS
            && self.unwritten + self.ready_bytes < MAX_PENDING_OUTPUT
    }

    /// Whether requests already read are still decoded: yes unless QUIT or a framing error
    /// ended the session (after EOF, what came before it is answered).
    pub fn decodes(&self) -> bool {
        matches!(self.closing, None | Some(Closing::Eof))
    }

    /// This client's id (stable for the connection).
    /// The pool's counters.
    pub fn pool_stats(&self) -> &PoolStats {
        &self.stats
    }

    pub fn client_id(&self) -> u64 {
        self.id
    }

    /// The sequence number the next slot will get.
    fn next_seq(&self) -> u64 {
        self.front_seq + self.slots.len() as u64
    }

    /// Queues a reply that is already known, in its place in the order.
    pub fn push_ready(&mut self, reply: Bytes) {
        self.push_slot(SlotState::Ready(reply));
    }

    fn push_slot(&mut self, state: SlotState) {
        let silenced = self.replies.silenced();
        let state = match state {
            SlotState::Ready(_) if silenced => SlotState::Ready(Bytes::new()),
            SlotState::Ready(reply) => {
                self.ready_bytes += reply.len();
                SlotState::Ready(reply)
            }
            waiting => waiting,
        };
        self.slots.push_back(Slot {
            state,
            arrived: Some(self.batch_arrived),
            silenced,
        });
    }

    /// The session's entry in its pool's list of sessions, if it is listed.
    pub fn listing(&self) -> Option<&Registration> {
        self.listed.as_ref()
    }

    /// Reserves the next slot for a reply that `ReplyTo` will deliver (a request sent on a
    /// connection the protocol holds itself: a transaction's, a subscriber's).
    pub fn reserve_reply(&mut self) -> ReplyTo {
        let reply_to = self.reply_to(self.next_seq(), 0);
        self.push_slot(SlotState::Waiting);
        reply_to
    }

    /// Reserves the next slot for a reply `merger` makes from parts delivered to
    /// [`Core::reply_to`]`(seq, part)`; returns `seq`. A merger already complete (no part
    /// needed, or every part failed before it was sent) is finished at once.
    pub fn reserve_merged(&mut self, merger: Box<dyn Merger>) -> u64 {
        let seq = self.next_seq();
        if merger.is_complete() {
            if merger.is_proxy_error() {
                self.stats.forward_error.inc();
            }
            self.push_ready(merger.finish());
        } else {
            self.push_slot(SlotState::Split(merger));
        }
        seq
    }

    /// Where part `part` of the reply in slot `seq` goes.
    pub fn reply_to(&mut self, seq: u64, part: u32) -> ReplyTo {
        ReplyTo {
            tx: Some(self.reply_sender()),
            seq,
            part,
            client: self.id,
            worker: self.worker,
            lane: self.lane,
        }
    }

    /// Where a server's pushed messages for this client go ([`PUSHED`]).
    pub fn push_target(&mut self) -> ReplyTo {
        self.pushed_to = true;
        self.reply_to(PUSHED, 0)
    }

    /// When requests read in the current batch time out.
    pub fn batch_deadline(&self) -> Option<Instant> {
        self.batch_deadline
    }

    /// A sender for this client's replies, making the channel on first use.
    fn reply_sender(&mut self) -> mpsc::UnboundedSender<ClientReply> {
        if let Some(tx) = &self.reply_tx {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.fresh_replies = Some(rx);
        self.reply_tx = Some(tx.clone());
        tx
    }

    /// Queues the reply for a proxy-side failure.
    pub fn push_error(&mut self, err: &BackendError) {
        self.stats.forward_error.inc();
        let reply = (self.error_reply)(err);
        self.push_ready(reply);
    }

    /// Counts a failed `AUTH` (a wrong user-password pair).
    pub fn count_auth_failure(&self) {
        self.stats.auth_failures.inc();
    }

    /// Counts a request an ACL refused (`-NOPERM`).
    pub fn count_acl_denied(&self) {
        self.stats.acl_denied.inc();
    }

    /// Counts a memcached request by its command (Prometheus `walnut_pool_commands_total`).
    pub fn count_memcache_command(&self, command: crate::proto::memcache::request::Command) {
        self.stats.count_memcache_command(command);
    }

    /// Counts a Redis request by its command, already looked up in the command table
    /// (Prometheus `walnut_pool_commands_total`).
    pub fn count_command_spec(&self, spec: Option<&crate::proto::redis::command::CommandSpec>) {
        self.stats.count_command_spec(spec);
    }

    /// Sends `frame` to `server` (or answers why there is none) and reserves its reply slot.
    pub fn forward(
        &mut self,
        snapshot: &PoolSnapshot,
        server: Result<usize, BackendError>,
        frame: Bytes,
    ) {
        self.forward_expecting(snapshot, server, frame, Expect::Reply);
    }

    /// [`Core::forward`] for a request that expects something other than one reply.
    pub fn forward_expecting(
        &mut self,
        snapshot: &PoolSnapshot,
        server: Result<usize, BackendError>,
        frame: Bytes,
        expect: Expect,
    ) {
        let dropped = expect == Expect::Dropped;
        let server = match server.and_then(|index| target(snapshot, index)) {
            Ok(server) => server.clone(),
            // twemproxy drops a noreply request's forwarding error silently.
            Err(_) if dropped => return,
            Err(err) => return self.push_error(&err),
        };
        self.send_to(&server, frame, expect);
    }

    /// Sends `frame` to `server` itself (a Sentinel pool's replica) and reserves its slot.
    pub fn forward_to_server(&mut self, server: &Server, frame: Bytes) {
        self.send_to(server, frame, Expect::Reply);
    }

    /// Hands `request` to the shared connection of `server` this client's lane takes.
    fn queue_on(&self, server: &Server, request: BackendRequest) -> Result<(), BackendError> {
        match server.connection_for(self.id, self.worker, self.lane) {
            Some(connection) => connection
                .send(request)
                .map_err(|_| BackendError::ConnectionRefused),
            None => Err(BackendError::DbOutOfRange),
        }
    }

    fn send_to(&mut self, server: &Server, frame: Bytes, expect: Expect) {
        let dropped = expect == Expect::Dropped;
        let bytes = frame.len() as u64;
        let request = BackendRequest {
            frame,
            reply_to: ReplyTo {
                tx: (!dropped).then(|| self.reply_sender()),
                seq: self.next_seq(),
                part: 0,
                client: self.id,
                worker: self.worker,
                lane: self.lane,
            },
            // As in twemproxy, a noreply request has no timeout.
            deadline: if dropped { None } else { self.batch_deadline },
            until_noop: expect == Expect::UntilNoop,
            redirects: 0,
            asking: false,
        };
        server.info.stats.enqueue(bytes);
        match self.queue_on(server, request) {
            Ok(()) if dropped => {}
            Ok(()) => self.push_slot(SlotState::Waiting),
            Err(err) => {
                server.info.stats.unqueued(bytes);
                if !dropped {
                    self.push_error(&err);
                }
            }
        }
    }

    /// Runs the blocking command `frame` on a dedicated connection of `server` (or answers why
    /// there is none), reserves its slot, and decodes nothing more until it is answered.
    /// `wait` is how long the command itself may block; walnut waits that plus the pool's
    /// `timeout` (1 s without one) for the reply.
    pub fn forward_blocking(
        &mut self,
        snapshot: &PoolSnapshot,
        server: Result<usize, BackendError>,
        frame: Bytes,
        wait: Option<Duration>,
    ) {
        let server = match server.and_then(|index| target(snapshot, index)) {
            Ok(server) => server.clone(),
            Err(err) => return self.push_error(&err),
        };
        let margin = Duration::from_millis(snapshot.config.timeout_ms.unwrap_or(1000));
        let seq = self.next_seq();
        let request = super::dedicated::BlockingRequest {
            frame,
            reply_to: self.reply_to(seq, 0),
            deadline: wait.map(|wait| self.batch_arrived + wait + margin),
            redirects: 0,
            asking: false,
        };
        server.dedicated.spawn(request);
        self.push_slot(SlotState::Waiting);
        self.blocked_on = Some(seq);
        if let Some(listed) = &self.listed {
            listed.entry().blocked(true);
        }
    }

    /// Sends each `(server, frame)` part and reserves one slot that `merger` completes.
    pub fn forward_split(
        &mut self,
        snapshot: &PoolSnapshot,
        parts: Vec<(usize, Bytes)>,
        mut merger: Box<dyn Merger>,
    ) {
        let seq = self.next_seq();
        // walnut counts the parts of split requests (twemproxy leaves `fragments` at 0).
        self.stats.fragments.add(parts.len() as u64);
        for (index, (server, frame)) in parts.into_iter().enumerate() {
            let server = match target(snapshot, server) {
                Ok(server) => server,
                Err(err) => {
                    merger.accept(index, Err(err.to_string()));
                    continue;
                }
            };
            let reply_to = self.reply_to(seq, index as u32);
            let bytes = frame.len() as u64;
            let request = BackendRequest {
                frame,
                reply_to,
                deadline: self.batch_deadline,
                until_noop: false,
                redirects: 0,
                asking: false,
            };
            server.info.stats.enqueue(bytes);
            if let Err(err) = self.queue_on(server, request) {
                server.info.stats.unqueued(bytes);
                merger.accept(index, Err(err.to_string()));
            }
        }
        self.reserve_merged(merger);
    }

    fn accept_reply(&mut self, reply: ClientReply) {
        if reply.seq == PUSHED {
            if let Ok(message) = reply.result {
                self.ready_bytes += message.len();
                self.slots.push_back(Slot {
                    state: SlotState::Ready(message),
                    arrived: None,
                    silenced: false,
                });
                self.overflowed |= !self.within_bounds();
            }
            return;
        }
        if self.blocked_on == Some(reply.seq) {
            self.blocked_on = None;
            if let Some(listed) = &self.listed {
                listed.entry().blocked(false);
            }
        }
        let Some(index) = reply.seq.checked_sub(self.front_seq) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        let ready = match &mut slot.state {
            SlotState::Waiting => match reply.result {
                Ok(frame) => frame,
                Err(err) => {
                    self.stats.forward_error.inc();
                    (self.error_reply)(&err)
                }
            },
            SlotState::Split(merger) => {
                if !merger.accept(reply.part as usize, reply.result.map_err(|e| e.to_string())) {
                    return;
                }
                if merger.is_proxy_error() {
                    self.stats.forward_error.inc();
                }
                merger.finish()
            }
            // A reply for a slot that already has one: never overwrite it.
            SlotState::Ready(_) => return,
        };
        let ready = if slot.silenced { Bytes::new() } else { ready };
        self.ready_bytes += ready.len();
        slot.state = SlotState::Ready(ready);
    }

    /// Moves the ready replies at the front of the order into the outbox.
    fn move_ready_replies(&mut self, out: &mut Outbox) {
        let mut now = None;
        while let Some(Slot {
            state: SlotState::Ready(_),
            ..
        }) = self.slots.front()
        {
            if let Some(Slot {
                state: SlotState::Ready(reply),
                arrived,
                ..
            }) = self.slots.pop_front()
            {
                self.ready_bytes -= reply.len();
                // A silenced reply is empty (and nothing else is).
                if !reply.is_empty() {
                    out.push(reply);
                }
                if let Some(arrived) = arrived {
                    let now = *now.get_or_insert_with(Instant::now);
                    self.stats
                        .request_latency
                        .observe(now.saturating_duration_since(arrived));
                }
            }
            self.front_seq += 1;
        }
        self.unwritten = out.len();
    }

    /// Gives back what a session between requests holds: its reply channel (made again on
    /// the next forwarded request) and its slot queue. Only with no slot left, so no server
    /// still holds a sender for a reply.
    fn release_buffers(&mut self, replies: &mut Option<mpsc::UnboundedReceiver<ClientReply>>) {
        if !self.slots.is_empty() {
            return;
        }
        self.slots = VecDeque::new();
        if self.pushed_to {
            return;
        }
        self.reply_tx = None;
        self.fresh_replies = None;
        *replies = None;
    }

    /// Starts a new batch: requests read now time out at now + the pool's `timeout`.
    pub fn start_batch(&mut self, snapshot: &PoolSnapshot) {
        self.batch_arrived = Instant::now();
        if let Some(listed) = &self.listed {
            listed.entry().heard(self.batch_arrived.into_std());
        }
        self.batch_deadline = snapshot
            .config
            .timeout_ms
            .map(|ms| self.batch_arrived + Duration::from_millis(ms));
    }
}

/// The server index for `key`, or the error its client sees.
pub fn route(snapshot: &PoolSnapshot, key: &[u8]) -> Result<usize, BackendError> {
    snapshot
        .router
        .server_for_key(key)
        .map_err(|err| route_error(snapshot, key, err))
}

/// The failure a client sees for a key that has no server.
pub fn route_error(snapshot: &PoolSnapshot, key: &[u8], err: RouteError) -> BackendError {
    match err {
        RouteError::NoLiveServer => BackendError::ConnectionRefused,
        RouteError::UnknownName => BackendError::unknown_server_name(key, &snapshot.config.name),
        RouteError::SlotNotServed => BackendError::ClusterDown("Hash slot not served".into()),
        RouteError::NoSlotMap => BackendError::ClusterDown(format!(
            "walnut has no slot map for pool '{}' (last error: {})",
            snapshot.config.name,
            snapshot.cluster_error.as_deref().unwrap_or("none yet")
        )),
    }
}

/// The server a request goes to, or why it cannot go anywhere.
pub fn target(snapshot: &PoolSnapshot, server: usize) -> Result<&Arc<Server>, BackendError> {
    let server = snapshot
        .servers
        .get(server)
        .ok_or(BackendError::ConnectionRefused)?;
    // An ejected server's requests fail at once when its keys must not move: with
    // eject_policy: fail_fast, and always for keys that name their server.
    let keys_stay =
        snapshot.config.eject_policy == EjectPolicy::FailFast || snapshot.router.routes_by_name();
    if keys_stay && server.info.health.is_ejected() {
        return Err(BackendError::Ejected(server.info.name.clone()));
    }
    Ok(server)
}

/// Serves one client until it closes, fails, or walnut drains it.
///
/// Draining (`shutdown` holds a deadline), the session goes on reading and answering
/// everything the client sends, and closes between requests once the client has been quiet
/// for a moment ([`super::timers::DRAIN_QUIET`]) with every reply written, or at the deadline, counting in
/// `pool.drain_cut` the requests it had been sent and could not answer.
pub async fn serve_client<P: Protocol>(
    mut stream: Stream,
    pool: Arc<Pool>,
    id: u64,
    mut shutdown: watch::Receiver<DrainDeadline>,
) {
    let mut replies = None;
    let mut protocol = P::new(&pool.current.load());
    let listed = P::LISTED.then(|| pool.sessions.register(id, stream.endpoints()));
    let lane = super::pool::default_lane(&pool.current.load().config);
    let mut core = Core {
        id,
        worker: super::workers::current(),
        lane,
        slots: VecDeque::new(),
        front_seq: 0,
        reply_tx: None,
        fresh_replies: None,
        ready_bytes: 0,
        unwritten: 0,
        batch_deadline: None,
        batch_arrived: Instant::now(),
        stats: pool.stats.clone(),
        error_reply: P::error_reply,
        closing: None,
        blocked_on: None,
        quiesce: false,
        deferred: false,
        overflowed: false,
        pushed_to: false,
        replies: ReplyControl::default(),
        listed,
    };
    // A read or write error ends the session as a client error (twemproxy's `client_err`).
    let mut failed = false;
    let (mut reader, mut writer) = stream.split();
    // Buffers grow on first use: an idle client holds none.
    let mut input = BytesMut::new();
    // The size of `input`'s allocation when it is a large one (see `grow_input`), else 0.
    let mut large_input = 0;
    let mut out = Outbox::default();
    let mut draining = shutdown.borrow().map(Drain::new);
    let mut idle = IdleRelease::default();
    // Made when the protocol first follows the servers (a subscriber), then kept.
    let mut servers_check: Option<tokio::time::Interval> = None;
    // One wait for the drain signal for the whole session: making a fresh one on every turn
    // of the loop costs more than the rest of a request's bookkeeping.
    let mut drain_signal = std::pin::pin!(async move {
        match shutdown.wait_for(Option::is_some).await {
            Ok(deadline) => deadline.unwrap_or_else(Instant::now),
            // A closed channel (the pool is gone) also means drain, now.
            Err(_) => Instant::now(),
        }
    });

    loop {
        if replies.is_none() {
            replies = core.fresh_replies.take();
        }
        core.move_ready_replies(&mut out);
        // Requests left undecoded while the client was over its bounds.
        if (!input.is_empty() || core.deferred) && core.decodes() && core.has_room() {
            handle_input(&mut protocol, &mut core, &pool, &mut input);
            core.move_ready_replies(&mut out);
        }
        let answered = core.slots.is_empty() && out.is_empty();
        // At EOF, what the client sent before it is still answered (decoded just above).
        if core.closing.is_some() && answered && !core.deferred {
            break;
        }
        // Between requests: everything answered and no request begun.
        let between_requests = answered && input.is_empty() && !core.deferred;
        if core.overflowed {
            warn!("client {id}: pushed messages exceed its output bound ({MAX_PENDING_OUTPUT} bytes unwritten), closing it");
            failed = true;
            break;
        }
        if between_requests && !idle.is_armed() && holds_buffers(&core, &input, &out) {
            idle.arm();
        }
        reuse_input(&mut input, large_input);
        if servers_check.is_none() && protocol.follows_servers() {
            servers_check = Some(tokio::time::interval(SERVERS_CHECK));
        }
        // A client that does not read its replies is not read from either. A blocked one is,
        // up to a bound, so that its leaving is seen.
        let may_read = core.closing.is_none()
            && core.within_bounds()
            && (!core.decoding_paused() || input.len() < BLOCKED_INPUT_LIMIT);
        // TLS records of replies already handed over, still waiting for room in the socket.
        let tls_pending = writer.has_pending();
        tokio::select! {
            biased;
            Some(reply) = next_reply(&mut replies) => {
                core.accept_reply(reply);
                while let Some(Ok(reply)) = replies.as_mut().map(|r| r.try_recv()) {
                    core.accept_reply(reply);
                }
            }
            written = out.write_to(&mut writer), if !out.is_empty() || tls_pending => {
                if let Err(e) = written {
                    debug!(client = id, "client write failed: {e}");
                    failed = true;
                    break;
                }
            }
            // Before the read, so a client that never stops sending still sees the drain.
            deadline = &mut drain_signal, if draining.is_none() => {
                draining = Some(Drain::new(deadline));
            }
            end = drain_end(&mut draining, between_requests && core.closing.is_none()) => {
                if end == DrainEnd::Quiet {
                    debug!(client = id, "draining: the client is quiet, closing it");
                } else if !between_requests {
                    let cut = count_unanswered(&mut protocol, core.slots.len(), &mut reader, &mut input).await;
                    warn!("client {id}: the drain deadline closes it with {cut} requests it sent unanswered");
                    pool.drain_cut.clients.fetch_add(1, Ordering::AcqRel);
                    pool.drain_cut.requests.fetch_add(cut, Ordering::AcqRel);
                }
                break;
            }
            _ = tick(&mut servers_check), if servers_check.is_some() => {
                if protocol.follows_servers() {
                    protocol.servers_changed(&mut core, &pool.current.load_full());
                }
            }
            _ = idle.elapsed(), if between_requests => {
                core.release_buffers(&mut replies);
                out.release();
                input = BytesMut::new();
                large_input = 0;
            }
            read = read_into(&mut reader, &mut input), if may_read => {
                match read {
                    // Redis drops a client that leaves while blocked, and so does walnut:
                    // its dedicated connection closes as the reply channel goes.
                    Ok(0) if core.blocked_on.is_some() => break,
                    Ok(0) => core.closing = Some(Closing::Eof),
                    Ok(_) => {
                        if let Some(draining) = &mut draining {
                            draining.heard();
                        }
                        idle.heard();
                        handle_input(&mut protocol, &mut core, &pool, &mut input)
                    }
                    Err(e) => {
                        debug!(client = id, "client read failed: {e}");
                        failed = true;
                        break;
                    }
                }
                if input.is_empty() && large_input == 0 {
                    // Everything read was decoded: the buffer goes with its requests, and the
                    // next read takes a fresh one, so a client between requests holds none.
                    input = BytesMut::new();
                } else if input.capacity() - input.len() < READ_CHUNK / 4 {
                    grow_input(&mut input, &mut large_input);
                }
            }
        }
    }
    let _ = writer.shutdown().await;
    if failed || core.closing == Some(Closing::ProtocolError) {
        pool.stats.client_err.inc();
    } else {
        pool.stats.client_eof.inc();
    }
}

/// Whether a session between requests holds memory an idle one would give back.
fn holds_buffers(core: &Core, input: &BytesMut, out: &Outbox) -> bool {
    core.reply_tx.is_some()
        || core.slots.capacity() > 0
        || input.capacity() > 0
        || out.holds_memory()
}

/// Reads from the client into `input`; an empty `input` with no buffer gets one only once the
/// socket is readable, so a client waiting between requests holds no read buffer.
async fn read_into(
    reader: &mut super::stream::ReadHalf<'_>,
    input: &mut BytesMut,
) -> std::io::Result<usize> {
    if input.capacity() == 0 {
        reader.readable().await?;
        input.reserve(READ_CHUNK);
    }
    reader.read_buf(input).await
}

/// The requests a client sent that will get no reply when its session closes now: those in
/// flight or waiting to be written, and the complete ones read but not decoded or still in
/// the socket (read here without waiting, up to [`CUT_COUNT_LIMIT`]).
async fn count_unanswered<P: Protocol>(
    protocol: &mut P,
    in_flight: usize,
    reader: &mut super::stream::ReadHalf<'_>,
    input: &mut BytesMut,
) -> usize {
    while input.len() < CUT_COUNT_LIMIT {
        input.reserve(READ_CHUNK);
        let mut read = std::pin::pin!(reader.read_buf(input));
        let now = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match read.as_mut().poll(cx) {
                std::task::Poll::Ready(Ok(n)) => n,
                _ => 0,
            })
        })
        .await;
        if now == 0 {
            break;
        }
    }
    in_flight + protocol.count_requests(input)
}

/// Makes room in a client's read buffer: doubling with what is buffered, so a large frame
/// arriving in pieces is not copied again on every read. The buffer's own memory is reused
/// when the requests split off it are gone; otherwise only what is buffered moves to a new
/// one (`BytesMut::reserve` would copy the consumed bytes before it too). `large` is set to
/// the new allocation's size when it is [`LARGE_INPUT`] or more, so the session can reuse it
/// whole for the next frame.
fn grow_input(input: &mut BytesMut, large: &mut usize) {
    let len = input.len();
    let additional = READ_CHUNK.max(len);
    if input.try_reclaim(additional) {
        return;
    }
    let size = len + additional;
    let mut grown = BytesMut::with_capacity(size);
    grown.extend_from_slice(input);
    *input = grown;
    *large = if size >= LARGE_INPUT { size } else { 0 };
}

/// Once the requests split off a large read buffer (of `large` bytes, 0 for a small one) are
/// gone, the next frame is read into it from its start: no copy, no fresh memory.
#[inline]
fn reuse_input(input: &mut BytesMut, large: usize) {
    if large != 0 && input.is_empty() && input.capacity() < large {
        let _ = input.try_reclaim(large);
    }
}

/// The next tick of `interval`; pending without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next reply from the client's channel; pending until the channel exists.
async fn next_reply(
    replies: &mut Option<mpsc::UnboundedReceiver<ClientReply>>,
) -> Option<ClientReply> {
    match replies {
        Some(replies) => replies.recv().await,
        None => std::future::pending().await,
    }
}

fn handle_input<P: Protocol>(protocol: &mut P, core: &mut Core, pool: &Pool, input: &mut BytesMut) {
    // One snapshot for the whole batch: it stays consistent even if a reload swaps it.
    let snapshot = pool.current.load_full();
    core.start_batch(&snapshot);
    protocol.handle_input(core, &snapshot, input);
    if core.closing.is_some() {
        // Whatever follows QUIT or a framing error in the same read is discarded.
        input.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `frame` into `input` as the session does, in reads of at most `READ_CHUNK`;
    /// returns the bytes copied by growth.
    fn read_frame(input: &mut BytesMut, large: &mut usize, frame: &[u8]) -> usize {
        let mut copied = 0;
        let mut fed = 0;
        while fed < frame.len() {
            reuse_input(input, *large);
            let n = (input.capacity() - input.len())
                .clamp(1, READ_CHUNK)
                .min(frame.len() - fed);
            input.extend_from_slice(&frame[fed..fed + n]);
            fed += n;
            if input.capacity() - input.len() < READ_CHUNK / 4 {
                let before = input.as_ptr();
                grow_input(input, large);
                if input.as_ptr() != before {
                    copied += input.len();
                }
            }
        }
        copied
    }

    #[test]
    fn a_large_read_buffer_is_reused_whole_once_its_frames_are_gone() {
        let frame = vec![b'x'; 1 << 20];
        let (mut input, mut large) = (BytesMut::new(), 0);
        let copied = read_frame(&mut input, &mut large, &frame);
        // Doubling: the growth copies less than the frame twice more.
        assert!(copied < 2 * frame.len(), "{copied}");
        assert!(large > frame.len());
        let first = input.split().freeze();
        let start = first.as_ptr();
        // While the frame is still held (on its way to a server), its memory is not reused.
        reuse_input(&mut input, large);
        assert_ne!(input.as_ptr(), start);
        drop(first);
        // Then the next frame lands at the start of the same memory and never grows.
        let copied = read_frame(&mut input, &mut large, &frame);
        assert_eq!(copied, 0);
        assert_eq!(input.as_ptr(), start);
        assert_eq!(&input[..], &frame[..]);
    }

    #[test]
    fn growing_moves_only_what_is_buffered() {
        let (mut input, mut large) = (BytesMut::with_capacity(100_000), 0);
        input.extend_from_slice(&[b'a'; 100_000]);
        let held = input.split_to(99_000).freeze();
        let before = input.as_ptr();
        grow_input(&mut input, &mut large);
        assert_ne!(
            input.as_ptr(),
            before,
            "the memory is still shared: a new buffer"
        );
        assert_eq!(&input[..], &[b'a'; 1000][..]);
        assert!(input.capacity() >= 1000 + READ_CHUNK);
        assert_eq!(large, 0, "a small buffer is not kept for reuse");
        drop(held);
    }
}
