//! Dedicated backend connections: a blocking command (BLPOP, BLMOVE, XREAD BLOCK, …) runs on
//! a connection of its own, so it never stalls the shared, pipelined connection of its server.
//!
//! Each server keeps a small set of idle dedicated connections, opened on demand (each
//! authenticated and with its database selected, by the server's handshake) and bounded by
//! `dedicated_connections`. A connection goes back to the idle set only when it is known to be
//! clean: it answered exactly the one command and nothing else is pending on it. It is closed
//! instead when the command's time (its own timeout plus a margin) runs out, when the server
//! fails, or when the client goes away while it waits. The set is guarded by a plain mutex,
//! taken only by these commands, never on the shared path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tracing::warn;

use super::backend::{Lane, ReplyTo, ServerInfo};
use super::error::BackendError;
use super::exchange::read_reply;
use super::stream::Stream;
use crate::proto::redis::reply::{ReplyDecoder, ReplyKind};

/// The largest reply a dedicated connection reads (Redis's own `proto-max-bulk-len` is
/// 512 MB; a popped value is one element).
pub(super) const MAX_REPLY: usize = 512 * 1024 * 1024;
/// How much a dedicated connection reads at a time.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Idle dedicated connections kept per server beyond which a returned one is closed.
const MAX_IDLE: usize = 16;

/// A server's dedicated connections.
#[derive(Debug)]
pub struct Dedicated {
    info: Arc<ServerInfo>,
    limit: usize,
    /// Open now: idle plus in use (the bound).
    open: AtomicUsize,
    /// Idle connections and the lane each is set up for (database, protocol).
    idle: Mutex<Vec<(Lane, Stream)>>,
}

/// One blocking command for [`Dedicated::run`].
#[derive(Debug)]
pub struct BlockingRequest {
    pub frame: Bytes,
    pub reply_to: ReplyTo,
    /// When walnut gives up on the reply: the command's own timeout plus a margin; `None`
    /// for a command that may block forever.
    pub deadline: Option<Instant>,
    /// Redis Cluster: redirects followed so far, and whether `ASKING` goes first; Sentinel
    /// pools: how many times a failover cut the command off and it was sent again.
    pub redirects: u8,
    pub asking: bool,
}

/// Redirects a blocking command follows before its client gets the last one.
const MAX_REDIRECTS: u8 = 5;
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

impl Dedicated {
    pub fn new(info: Arc<ServerInfo>, limit: usize) -> Dedicated {
        Dedicated {
            info,
            limit,
            open: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `request` on a dedicated connection, in a task of its own, and delivers its reply.
    pub fn spawn(self: &Arc<Self>, request: BlockingRequest) {
        let dedicated = self.clone();
        tokio::spawn(async move { dedicated.run(request).await });
    }

    async fn run(&self, request: BlockingRequest) {
        let started = Instant::now();
        let BlockingRequest {
            frame,
            reply_to,
            deadline,
            redirects,
            asking,
        } = request;
        let stats = &self.info.stats;
        let bytes = frame.len() as u64;
        stats.enqueue(bytes);
        let again = |reply_to: ReplyTo| BlockingRequest {
            frame: frame.clone(),
            reply_to,
            deadline,
            redirects,
            asking: false,
        };
        let lane = reply_to.lane;
        let mut stream = match self.take(lane).await {
            Ok(stream) => stream,
            Err(err) => {
                stats.unqueued(bytes);
                return self.answer(again(reply_to), Err(err), started);
            }
        };
        let Some(client) = reply_to.tx.clone() else {
            stats.unqueued(bytes);
            return self.give_back(lane, stream);
        };
        let sent_at = Instant::now();
        let mut sent = false;
        let exchange = async {
            let (mut reader, mut writer) = stream.split();
            let mut input = BytesMut::new();
            let mut decoder = ReplyDecoder::with_protocol(MAX_REPLY, lane.protocol());
            if asking {
                send(&mut writer, ASKING).await?;
                read_reply(&mut reader, &mut decoder, &mut input, READ_CHUNK).await?;
            }
            send(&mut writer, &frame).await?;
            sent = true;
            stats.sent(bytes);
            let reply = read_reply(&mut reader, &mut decoder, &mut input, READ_CHUNK).await?;
            // Anything after the one reply means the connection is not what walnut thinks.
            Ok::<_, BackendError>((reply.frame, input.is_empty()))
        };
        let outcome = tokio::select! {
            outcome = exchange => Some(outcome),
            _ = sleep_until(deadline) => Some(Err(BackendError::TimedOut)),
            // The client went away while it waited: nobody wants the reply.
            _ = client.closed() => None,
        };
        match outcome {
            Some(Ok((reply, clean))) => {
                stats.replied(bytes, reply.len() as u64, sent_at.elapsed());
                self.info.health.record_success();
                // A cluster slot that moved: the command goes to the node that has it now,
                // on one of its dedicated connections; the client never sees the redirect.
                let redirect = (self.info.cluster && redirects < MAX_REDIRECTS)
                    .then(|| self.info.owner.redirect_dedicated(&self.info, &reply))
                    .flatten();
                if let Some((next, asking)) = redirect {
                    if clean {
                        self.give_back(lane, stream);
                    } else {
                        self.discard(stream);
                    }
                    return next.spawn(BlockingRequest {
                        frame,
                        reply_to,
                        deadline,
                        redirects: redirects + 1,
                        asking,
                    });
                }
                let dirty = !clean || cut_by_failover(&Ok(reply.clone()));
                self.answer(again(reply_to), Ok(reply), started);
                if !dirty {
                    return self.give_back(lane, stream);
                }
            }
            Some(Err(err)) => {
                if sent {
                    stats.abandoned(bytes);
                } else {
                    stats.unqueued(bytes);
                }
                self.answer(again(reply_to), Err(err), started);
            }
            None if sent => stats.abandoned(bytes),
            None => stats.unqueued(bytes),
        }
        self.discard(stream);
    }

    /// Delivers the outcome of `request`, begun at `started`; in a Sentinel pool, a command
    /// a failover cut off goes to the owner to be sent again to the shard's master, with its
    /// deadline moved by the time this attempt took (the command's own timeout starts over).
    fn answer(
        &self,
        mut request: BlockingRequest,
        outcome: Result<Bytes, BackendError>,
        started: Instant,
    ) {
        if !self.info.sentinel || !cut_by_failover(&outcome) || request.reply_to.tx.is_none() {
            return request.reply_to.deliver(outcome);
        }
        request.deadline = request
            .deadline
            .map(|deadline| deadline + started.elapsed());
        self.info
            .owner
            .failover_blocking(&self.info, request, outcome);
    }

    /// An idle connection of `lane`, or a new one if the bound allows.
    pub(super) async fn take(&self, lane: Lane) -> Result<Stream, BackendError> {
        let idle = {
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let found = idle.iter().rposition(|(of, _)| *of == lane);
            found.map(|index| idle.swap_remove(index).1)
        };
        if let Some(stream) = idle {
            self.info.stats.dedicated_idle.dec();
            return Ok(stream);
        }
        let reserved = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.limit).then_some(open + 1)
            });
        if reserved.is_err() {
            return Err(BackendError::DedicatedExhausted {
                server: self.info.name.clone(),
                limit: self.limit,
            });
        }
        self.info.stats.dedicated_connections.inc();
        match self.connect(lane).await {
            Ok(stream) => Ok(stream),
            Err(err) => {
                self.closed_one();
                self.info.owner.server_failed(&self.info, &err);
                Err(err)
            }
        }
    }

    /// A new connection, through the server's handshake for `lane` (AUTH, HELLO 3, SELECT,
    /// READONLY, ROLE).
    pub(super) async fn connect(&self, lane: Lane) -> Result<Stream, BackendError> {
        let tls = self.info.server_tls();
        let mut stream = super::stream::connect(&self.info.addr, tls.as_deref()).await?;
        let handshake = lane.handshake(&self.info.handshake.load());
        if handshake.is_empty() {
            return Ok(stream);
        }
        let (mut reader, mut writer) = stream.split();
        let mut out = Vec::new();
        for (_, frame) in handshake.iter() {
            out.extend_from_slice(frame);
        }
        send(&mut writer, &out).await?;
        let mut input = BytesMut::new();
        let mut decoder = ReplyDecoder::with_protocol(MAX_REPLY, lane.protocol());
        for (label, _) in handshake.iter() {
            let reply = read_reply(&mut reader, &mut decoder, &mut input, READ_CHUNK).await?;
            if *label == "ROLE" && !reply.frame.starts_with(b"*3\r\n$6\r\nmaster\r\n") {
                return Err(BackendError::NotMaster);
            }
            if reply.kind == ReplyKind::Error {
                let text = String::from_utf8_lossy(reply.frame.trim_ascii_end()).into_owned();
                warn!(
                    "pool '{}': server '{}' refused walnut's {label} on a dedicated connection: {text}",
                    self.info.pool_name, self.info.name
                );
                match *label {
                    "AUTH" => return Err(BackendError::AuthRefused(text)),
                    step @ ("SELECT" | "HELLO 3") => {
                        return Err(BackendError::SetupRefused { step, text })
                    }
                    _ => {}
                }
            }
        }
        Ok(stream)
    }

    pub(super) fn give_back(&self, lane: Lane, stream: Stream) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((lane, stream));
            self.info.stats.dedicated_idle.inc();
            return;
        }
        drop(idle);
        self.discard(stream);
    }

    pub(super) fn discard(&self, stream: Stream) {
        drop(stream);
        self.closed_one();
    }

    /// The server these connections go to.
    pub(super) fn info(&self) -> &Arc<ServerInfo> {
        &self.info
    }

    fn closed_one(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.info.stats.dedicated_connections.dec();
    }
}

/// Whether a blocking command's outcome on a Sentinel pool's master says a failover cut it
/// off, so it waited for nothing and may run again on the new master: Redis's `-UNBLOCKED`
/// (a master demoted while the command waited), `-READONLY` (sent to a demoted master), or
/// a lost or refused connection. walnut's own deadline and the connection bound are final.
fn cut_by_failover(outcome: &Result<Bytes, BackendError>) -> bool {
    match outcome {
        Ok(reply) => reply.starts_with(b"-UNBLOCKED") || reply.starts_with(b"-READONLY"),
        Err(err) => !matches!(
            err,
            BackendError::TimedOut
                | BackendError::DedicatedExhausted { .. }
                | BackendError::AuthRefused(_)
                | BackendError::SetupRefused { .. }
        ),
    }
}

/// Writes `bytes` to a dedicated connection and flushes them.
pub(super) async fn send(
    writer: &mut super::stream::WriteHalf<'_>,
    bytes: &[u8],
) -> Result<(), BackendError> {
    super::exchange::send(writer, bytes)
        .await
        .map_err(|e| BackendError::from_io(&e))
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
