//! A client's subscriber connection to one server: a dedicated connection in Redis's
//! subscribed mode, holding the channels, patterns and shard channels of that client that
//! live on the server.
//!
//! The task owns the connection. It sends the session's (un)subscribe commands, answers
//! each name's confirmation to the slot the session reserved for it (the session writes its
//! own confirmation, with the client's counts over every server), and passes every message
//! on to the client. When the connection fails it connects again and subscribes everything
//! it holds, so the client's subscriptions survive. When the session lets go, the connection
//! goes back to the idle set only if it holds no subscription and every confirmation was
//! read; otherwise it is closed.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::backend::{Lane, ReplyTo};
use super::dedicated::{send, Dedicated, MAX_REPLY, READ_CHUNK};
use super::error::BackendError;
use super::exchange::read_reply;
use super::stream::Stream;
use crate::proto::redis::command::Subscription;
use crate::proto::redis::pubsub::{self, Pushed};
use crate::proto::redis::reply::ReplyDecoder;

/// How long a subscriber waits before connecting again, at first and at most.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// One (un)subscribe command for one server: each name with where its confirmation goes
/// (`None` when walnut moves a name itself and nobody waits for it).
#[derive(Debug)]
pub struct SubscribeOp {
    pub kind: Subscription,
    pub subscribe: bool,
    pub names: Vec<(Bytes, Option<ReplyTo>)>,
}

/// A session's handle on its subscriber connection to one server.
#[derive(Debug)]
pub struct Subscriber {
    ops: mpsc::UnboundedSender<SubscribeOp>,
}

impl Subscriber {
    /// Starts a subscriber connection on `dedicated`'s server; messages go to `push`.
    pub fn start(dedicated: &Arc<Dedicated>, push: ReplyTo) -> Subscriber {
        let (ops, queue) = mpsc::unbounded_channel();
        let dedicated = dedicated.clone();
        tokio::spawn(async move { run(dedicated, queue, push).await });
        Subscriber { ops }
    }

    pub fn send(&self, op: SubscribeOp) {
        if let Err(mpsc::error::SendError(op)) = self.ops.send(op) {
            for (_, reply_to) in op.names {
                if let Some(reply_to) = reply_to {
                    reply_to.deliver(Err(BackendError::ConnectionReset));
                }
            }
        }
    }
}

/// A name whose confirmation has not been read yet.
struct Pending {
    word: &'static str,
    name: Bytes,
    reply_to: Option<ReplyTo>,
}

/// What the connection holds and waits for.
#[derive(Default)]
struct State {
    /// Channels, patterns and shard channels, by [`kind_index`].
    sets: [HashSet<Bytes>; 3],
    pending: VecDeque<Pending>,
}

fn kind_index(kind: Subscription) -> usize {
    match kind {
        Subscription::Channel => 0,
        Subscription::Pattern => 1,
        Subscription::Shard => 2,
    }
}

const KINDS: [Subscription; 3] = [
    Subscription::Channel,
    Subscription::Pattern,
    Subscription::Shard,
];

impl State {
    /// Records `op` and returns the command to send for it.
    fn apply(&mut self, op: SubscribeOp) -> Vec<u8> {
        let (on, off) = pubsub::words(op.kind);
        let set = &mut self.sets[kind_index(op.kind)];
        for (name, _) in &op.names {
            if op.subscribe {
                set.insert(name.clone());
            } else {
                set.remove(name);
            }
        }
        let frame = pubsub::frame(
            pubsub::command(op.kind, op.subscribe),
            op.names.iter().map(|(name, _)| &name[..]),
        );
        let word = if op.subscribe { on } else { off };
        self.pending
            .extend(op.names.into_iter().map(|(name, reply_to)| Pending {
                word,
                name,
                reply_to,
            }));
        frame
    }

    fn holds_nothing(&self) -> bool {
        self.sets.iter().all(HashSet::is_empty)
    }

    /// On a fresh connection: the commands that subscribe everything held. Confirmations
    /// still awaited that the fresh subscriptions will not give (an unsubscribe, or a name
    /// unsubscribed since) are answered now: what they asked for is true.
    fn resubscribe(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for kind in KINDS {
            let set = &self.sets[kind_index(kind)];
            if !set.is_empty() {
                out.extend(pubsub::frame(
                    pubsub::command(kind, true),
                    set.iter().map(|name| &name[..]),
                ));
            }
        }
        let sets = &self.sets;
        self.pending.retain_mut(|pending| {
            let subscribed = KINDS.iter().any(|&kind| {
                pubsub::words(kind).0 == pending.word
                    && sets[kind_index(kind)].contains(&pending.name)
            });
            if !subscribed {
                if let Some(reply_to) = pending.reply_to.take() {
                    reply_to.deliver(Ok(Bytes::from_static(b"+OK\r\n")));
                }
            }
            subscribed
        });
        out
    }

    /// The connection failed: subscriptions awaited now fail (the client sees why), and
    /// stay held, to be made when the server is back.
    fn fail_pending(&mut self, err: &BackendError) {
        for pending in self.pending.drain(..) {
            if let Some(reply_to) = pending.reply_to {
                reply_to.deliver(Err(err.clone()));
            }
        }
    }

    /// A confirmation of `word` for `name` was read: it answers the first name awaiting it.
    fn confirmed(&mut self, word: &[u8], name: Option<&[u8]>, frame: Bytes) {
        let found = self
            .pending
            .iter()
            .position(|p| p.word.as_bytes() == word && Some(&p.name[..]) == name);
        if let Some(pending) = found.and_then(|index| self.pending.remove(index)) {
            if let Some(reply_to) = pending.reply_to {
                reply_to.deliver(Ok(frame));
            }
        }
    }

    /// An error reply answers the oldest command awaited.
    fn refused(&mut self, frame: Bytes) {
        if let Some(Pending {
            reply_to: Some(reply_to),
            ..
        }) = self.pending.pop_front()
        {
            reply_to.deliver(Ok(frame));
        }
    }
}

/// How a connected stretch ended.
enum Ended {
    /// The session let go: the connection is clean (`true`) or not.
    LetGo(bool),
    Failed(BackendError),
}

async fn run(
    dedicated: Arc<Dedicated>,
    mut queue: mpsc::UnboundedReceiver<SubscribeOp>,
    push: ReplyTo,
) {
    let mut state = State::default();
    let mut backoff = RECONNECT_FIRST;
    let info = dedicated.info().clone();
    loop {
        // Channels are not per database, and walnut frames a RESP3 client's pushes itself.
        let mut stream = match dedicated.take(Lane::default()).await {
            Ok(stream) => stream,
            Err(err) => {
                state.fail_pending(&err);
                // Wait before trying again, still taking the session's commands.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        op = queue.recv() => match op {
                            Some(op) => {
                                state.apply(op);
                                state.fail_pending(&err);
                            }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        let ended = connected(&mut stream, &mut state, &mut queue, &push).await;
        match ended {
            Ended::LetGo(true) => return dedicated.give_back(Lane::default(), stream),
            Ended::LetGo(false) => return dedicated.discard(stream),
            Ended::Failed(err) => {
                dedicated.discard(stream);
                if queue.is_closed() && state.holds_nothing() {
                    return;
                }
                warn!(
                    "pool '{}': server '{}': a subscriber connection failed ({err}); subscribing again",
                    info.pool_name, info.name
                );
                state.fail_pending(&err);
                backoff = RECONNECT_FIRST;
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Serves one connection until the session lets go or the connection fails.
async fn connected(
    stream: &mut Stream,
    state: &mut State,
    queue: &mut mpsc::UnboundedReceiver<SubscribeOp>,
    push: &ReplyTo,
) -> Ended {
    let (mut reader, mut writer) = stream.split();
    let fresh = state.resubscribe();
    if !fresh.is_empty() {
        if let Err(err) = send(&mut writer, &fresh).await {
            return Ended::Failed(err);
        }
    }
    let mut input = BytesMut::new();
    let mut decoder = ReplyDecoder::new(MAX_REPLY);
    let mut open = true;
    loop {
        if !open {
            if !state.holds_nothing() {
                return Ended::LetGo(false);
            }
            if state.pending.is_empty() {
                return Ended::LetGo(input.is_empty());
            }
        }
        tokio::select! {
            op = queue.recv(), if open => match op {
                Some(op) => {
                    let mut frame = state.apply(op);
                    while let Ok(op) = queue.try_recv() {
                        frame.extend(state.apply(op));
                    }
                    if let Err(err) = send(&mut writer, &frame).await {
                        return Ended::Failed(err);
                    }
                }
                None => open = false,
            },
            reply = read_reply(&mut reader, &mut decoder, &mut input, READ_CHUNK) => {
                let frame = match reply {
                    Ok(reply) => reply.frame,
                    Err(err) => return Ended::Failed(BackendError::from(err)),
                };
                match pubsub::classify(&frame) {
                    Pushed::Message => {
                        let message = pubsub::message_for(frame.clone(), push.lane.protocol());
                        push.clone().deliver(Ok(message))
                    }
                    Pushed::Confirmation { word, name } => {
                        state.confirmed(word, name, frame.clone())
                    }
                    Pushed::Error => state.refused(frame.clone()),
                    Pushed::Other => debug!("a subscriber connection read an unexpected reply"),
                }
            }
        }
    }
}
