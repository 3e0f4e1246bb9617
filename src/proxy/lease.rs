//! A dedicated connection leased to one client for a while: a transaction (`WATCH`, `MULTI`
//! … `EXEC`) runs on it, so that what the client queues is never mixed with anyone else's
//! requests on the shared, pipelined connection.
//!
//! The lease is a task that owns the connection. The session sends it requests in order; it
//! writes each batch at once and delivers the replies, in the same order, to the slots the
//! session reserved. When the session lets go of the lease (it drops the [`Lease`]), the
//! connection goes back to its server's idle set only if the last request was marked
//! `release` (an `EXEC`, `DISCARD` or `UNWATCH` that leaves the connection with no state)
//! and every reply was read; otherwise it is closed.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backend::{Lane, ReplyTo};
use super::dedicated::{send, sleep_until, Dedicated, MAX_REPLY, READ_CHUNK};
use super::error::BackendError;
use super::exchange::read_reply;
use crate::proto::redis::reply::ReplyDecoder;

/// One request on a leased connection.
#[derive(Debug)]
pub struct LeaseRequest {
    pub frame: Bytes,
    /// `None`: the reply is read and dropped (the `MULTI` walnut already answered).
    pub reply_to: Option<ReplyTo>,
    /// When walnut gives up on the reply (the pool's `timeout`).
    pub deadline: Option<Instant>,
    /// After this reply the connection holds no client state and may be reused.
    pub release: bool,
}

/// A client's hold on a dedicated connection of one server.
#[derive(Debug)]
pub struct Lease {
    requests: mpsc::UnboundedSender<LeaseRequest>,
}

impl Lease {
    /// Takes a connection of `dedicated` in the client's `lane` (opened in the background)
    /// for one client.
    pub fn start(dedicated: &Arc<Dedicated>, lane: Lane) -> Lease {
        let (requests, queue) = mpsc::unbounded_channel();
        let dedicated = dedicated.clone();
        tokio::spawn(async move { run(dedicated, lane, queue).await });
        Lease { requests }
    }

    /// Queues `request`; its reply (or the reason there is none) reaches its `reply_to`.
    pub fn send(&self, request: LeaseRequest) {
        if let Err(mpsc::error::SendError(request)) = self.requests.send(request) {
            if let Some(reply_to) = request.reply_to {
                reply_to.deliver(Err(BackendError::ConnectionReset));
            }
        }
    }
}

/// A request written, waiting for its reply.
struct InFlight {
    reply_to: Option<ReplyTo>,
    deadline: Option<Instant>,
    release: bool,
    bytes: u64,
    sent_at: Instant,
}

async fn run(
    dedicated: Arc<Dedicated>,
    lane: Lane,
    mut queue: mpsc::UnboundedReceiver<LeaseRequest>,
) {
    let mut stream = match dedicated.take(lane).await {
        Ok(stream) => stream,
        Err(err) => return fail_all(&mut queue, err).await,
    };
    let info = dedicated.info().clone();
    let stats = info.stats.clone();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut open = true;
    let mut clean = false;
    let failure = {
        let (mut reader, mut writer) = stream.split();
        let mut input = BytesMut::new();
        let mut decoder = ReplyDecoder::with_protocol(MAX_REPLY, lane.protocol());
        let mut batch = Vec::new();
        loop {
            if !open && in_flight.is_empty() {
                break None;
            }
            let deadline = in_flight.front().and_then(|request| request.deadline);
            tokio::select! {
                request = queue.recv(), if open => {
                    let Some(request) = request else {
                        open = false;
                        continue;
                    };
                    batch.clear();
                    let now = Instant::now();
                    let first_new = in_flight.len();
                    let mut take = |request: LeaseRequest| {
                        let bytes = request.frame.len() as u64;
                        stats.enqueue(bytes);
                        batch.extend_from_slice(&request.frame);
                        in_flight.push_back(InFlight {
                            reply_to: request.reply_to,
                            deadline: request.deadline,
                            release: request.release,
                            bytes,
                            sent_at: now,
                        });
                    };
                    take(request);
                    while let Ok(request) = queue.try_recv() {
                        take(request);
                    }
                    clean = false;
                    if let Err(err) = send(&mut writer, &batch).await {
                        break Some(err);
                    }
                    for request in in_flight.iter().skip(first_new) {
                        stats.sent(request.bytes);
                    }
                }
                reply = read_reply(&mut reader, &mut decoder, &mut input, READ_CHUNK), if !in_flight.is_empty() => {
                    let reply = match reply {
                        Ok(reply) => reply,
                        Err(err) => break Some(BackendError::from(err)),
                    };
                    if info.cluster && reply.frame.starts_with(b"-MOVED ") {
                        // A slot moved under the transaction: Redis aborts it and the client
                        // sees the redirect as the command's error; the slot map learns it, so
                        // the client's retry binds to the right node.
                        let _ = info.owner.redirect_dedicated(&info, &reply.frame);
                    }
                    if let Some(request) = in_flight.pop_front() {
                        stats.replied(request.bytes, reply.frame.len() as u64, request.sent_at.elapsed());
                        clean = request.release && input.is_empty();
                        if let Some(reply_to) = request.reply_to {
                            reply_to.deliver(Ok(reply.frame));
                        }
                    }
                }
                _ = sleep_until(deadline) => break Some(BackendError::TimedOut),
            }
        }
    };
    match failure {
        None if clean => dedicated.give_back(lane, stream),
        None => dedicated.discard(stream),
        Some(err) => {
            dedicated.discard(stream);
            for request in in_flight.drain(..) {
                stats.abandoned(request.bytes);
                if let Some(reply_to) = request.reply_to {
                    reply_to.deliver(Err(err.clone()));
                }
            }
            if open {
                fail_all(&mut queue, err).await;
            }
        }
    }
}

/// Answers every request the session still sends with `err`, until it lets go.
async fn fail_all(queue: &mut mpsc::UnboundedReceiver<LeaseRequest>, err: BackendError) {
    while let Some(request) = queue.recv().await {
        if let Some(reply_to) = request.reply_to {
            reply_to.deliver(Err(err.clone()));
        }
    }
}
