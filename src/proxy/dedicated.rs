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

use super::backend::{ReplyTo, ServerInfo};
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
    idle: Mutex<Vec<Stream>>,
}

/// One blocking command for [`Dedicated::run`].
#[derive(Debug)]
pub struct BlockingRequest {
    pub frame: Bytes,
    pub reply_to: ReplyTo,
    /// When walnut gives up on the reply: the command's own timeout plus a margin; `None`
    /// for a command that may block forever.
    pub deadline: Option<Instant>,
    /// Redis Cluster: redirects followed so far, and whether `ASKING` goes first.
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
        let mut stream = match self.take().await {
            Ok(stream) => stream,
            Err(err) => {
                stats.unqueued(bytes);
                return reply_to.deliver(Err(err));
            }
        };
        let Some(client) = reply_to.tx.clone() else {
            stats.unqueued(bytes);
            return self.give_back(stream);
        };
        let sent_at = Instant::now();
        let mut sent = false;
        let exchange = async {
            let (mut reader, mut writer) = stream.split();
            let mut input = BytesMut::new();
            let mut decoder = ReplyDecoder::new(MAX_REPLY);
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
                        self.give_back(stream);
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
                reply_to.deliver(Ok(reply));
                if clean {
                    return self.give_back(stream);
                }
            }
            Some(Err(err)) => {
                if sent {
                    stats.abandoned(bytes);
                } else {
                    stats.unqueued(bytes);
                }
                reply_to.deliver(Err(err));
            }
            None if sent => stats.abandoned(bytes),
            None => stats.unqueued(bytes),
        }
        self.discard(stream);
    }

    /// An idle connection, or a new one if the bound allows.
    pub(super) async fn take(&self) -> Result<Stream, BackendError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
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
        match self.connect().await {
            Ok(stream) => Ok(stream),
            Err(err) => {
                self.closed_one();
                self.info.owner.server_failed(&self.info, &err);
                Err(err)
            }
        }
    }

    /// A new connection, through the server's handshake (AUTH, SELECT, READONLY, ROLE).
    async fn connect(&self) -> Result<Stream, BackendError> {
        let tls = self.info.server_tls();
        let mut stream = super::stream::connect(&self.info.addr, tls.as_deref()).await?;
        let handshake = self.info.handshake.load_full();
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
        let mut decoder = ReplyDecoder::new(MAX_REPLY);
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
                if *label == "AUTH" {
                    return Err(BackendError::AuthRefused(text));
                }
            }
        }
        Ok(stream)
    }

    pub(super) fn give_back(&self, stream: Stream) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(stream);
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
