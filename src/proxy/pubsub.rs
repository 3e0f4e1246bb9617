//! A client's pub/sub subscriptions, kept by its session: which server each channel,
//! pattern and shard channel is subscribed on, one [`Subscriber`] connection per server,
//! and the confirmations the client sees.
//!
//! A channel (and a shard channel) lives on the server the pool's hash and distribution
//! give its name, so that `PUBLISH`, routed the same way, meets its subscribers. A pattern
//! is subscribed on every server (on one node in a cluster pool, where a publish reaches
//! every node). The counts in confirmations are the client's own totals, as Redis reports
//! them. A reload or failover that moves a name moves its subscription.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::error::BackendError;
use super::pool::{PoolSnapshot, Server};
use super::session::{route, Core, Merger};
use super::subscriber::{SubscribeOp, Subscriber};
use crate::proto::redis::command::Subscription;
use crate::proto::redis::dispatch;
use crate::proto::redis::pubsub::{confirmation, words};

/// A server's identity while its `Arc` is held.
type ServerKey = usize;

fn key_of(server: &Arc<Server>) -> ServerKey {
    Arc::as_ptr(server) as usize
}

/// One server's subscriber connection and how many names it holds.
#[derive(Debug)]
struct Connection {
    /// Held so that no other server takes its address, which is its key.
    _server: Arc<Server>,
    subscriber: Subscriber,
    held: usize,
}

/// A session's subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: HashMap<Bytes, ServerKey>,
    shard_channels: HashMap<Bytes, ServerKey>,
    patterns: HashMap<Bytes, Vec<ServerKey>>,
    connections: HashMap<ServerKey, Connection>,
    /// The snapshot the names were placed under (its address).
    placed_under: usize,
}

impl Subscriptions {
    /// True in Redis's subscribed mode: any subscription held.
    pub fn is_subscribed(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    /// How many channels, patterns and shard channels it holds.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.channels.len(),
            self.patterns.len(),
            self.shard_channels.len(),
        )
    }

    /// The count a confirmation of `kind` reports: channels and patterns together, shard
    /// channels apart (as Redis 7 counts them).
    fn count(&self, kind: Subscription) -> usize {
        match kind {
            Subscription::Shard => self.shard_channels.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    fn held(&self, kind: Subscription, name: &[u8]) -> bool {
        match kind {
            Subscription::Channel => self.channels.contains_key(name),
            Subscription::Shard => self.shard_channels.contains_key(name),
            Subscription::Pattern => self.patterns.contains_key(name),
        }
    }

    /// `SUBSCRIBE`, `PSUBSCRIBE`, `SSUBSCRIBE` of `names`: one confirmation per name, all
    /// written once every server has confirmed its part.
    pub fn subscribe(
        &mut self,
        core: &mut Core,
        snapshot: &Arc<PoolSnapshot>,
        kind: Subscription,
        names: &[&[u8]],
    ) {
        self.place(core, snapshot);
        let (word, _) = words(kind);
        let mut reply = Vec::new();
        let mut parts: Vec<(ServerKey, Bytes)> = Vec::new();
        for &name in names {
            if self.held(kind, name) {
                reply.extend(confirmation(
                    word,
                    Some(name),
                    self.count(kind),
                    core.lane.protocol(),
                ));
                continue;
            }
            let servers = match servers_for(snapshot, kind, name) {
                Ok(servers) => servers,
                Err(err) => {
                    reply.extend(dispatch::error_reply(&err.to_string()));
                    continue;
                }
            };
            let name = Bytes::copy_from_slice(name);
            let mut keys = Vec::with_capacity(servers.len());
            for server in servers {
                let key = self.connection(core, server);
                parts.push((key, name.clone()));
                keys.push(key);
            }
            match kind {
                Subscription::Channel => self.channels.insert(name.clone(), keys[0]),
                Subscription::Shard => self.shard_channels.insert(name.clone(), keys[0]),
                Subscription::Pattern => {
                    self.patterns.insert(name.clone(), keys);
                    None
                }
            };
            reply.extend(confirmation(
                word,
                Some(&name),
                self.count(kind),
                core.lane.protocol(),
            ));
        }
        self.send(core, kind, true, reply, parts);
    }

    /// `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE` of `names`, or of every name of the kind
    /// held when there is none.
    pub fn unsubscribe(&mut self, core: &mut Core, kind: Subscription, names: &[&[u8]]) {
        let (_, word) = words(kind);
        let names: Vec<Bytes> = match names {
            [] => self.names(kind),
            names => names.iter().map(|n| Bytes::copy_from_slice(n)).collect(),
        };
        if names.is_empty() {
            let reply = confirmation(word, None, self.count(kind), core.lane.protocol());
            return core.push_ready(Bytes::from(reply));
        }
        let mut reply = Vec::new();
        let mut parts = Vec::new();
        for name in names {
            let keys = match kind {
                Subscription::Channel => self.channels.remove(&name).into_iter().collect(),
                Subscription::Shard => self.shard_channels.remove(&name).into_iter().collect(),
                Subscription::Pattern => self.patterns.remove(&name).unwrap_or_default(),
            };
            for key in keys {
                if let Some(connection) = self.connections.get_mut(&key) {
                    connection.held -= 1;
                    parts.push((key, name.clone()));
                }
            }
            reply.extend(confirmation(
                word,
                Some(&name),
                self.count(kind),
                core.lane.protocol(),
            ));
        }
        self.send(core, kind, false, reply, parts);
    }

    /// `RESET`: every subscription dropped with its connections (closed, not reused).
    pub fn clear(&mut self) {
        *self = Subscriptions::default();
    }

    /// Moves the subscriptions whose server changed (a reload, a failover) since they were
    /// placed: unsubscribed where they were, subscribed where they belong now.
    pub fn follow(&mut self, core: &mut Core, snapshot: &Arc<PoolSnapshot>) {
        if Arc::as_ptr(snapshot) as usize == self.placed_under {
            return;
        }
        self.placed_under = Arc::as_ptr(snapshot) as usize;
        // (kind, subscribe, server, name), in the order they are sent.
        let mut moves: Vec<(Subscription, bool, ServerKey, Bytes)> = Vec::new();
        for kind in [Subscription::Channel, Subscription::Shard] {
            let names = self.names(kind);
            for name in names {
                let Ok(mut servers) = servers_for(snapshot, kind, &name) else {
                    continue;
                };
                let server = servers.remove(0);
                let now = key_of(&server);
                let map = match kind {
                    Subscription::Shard => &mut self.shard_channels,
                    _ => &mut self.channels,
                };
                let Some(was) = map.insert(name.clone(), now) else {
                    continue;
                };
                if was == now {
                    continue;
                }
                let now = self.connection(core, server);
                moves.push((kind, false, was, name.clone()));
                moves.push((kind, true, now, name));
            }
        }
        for name in self.names(Subscription::Pattern) {
            let Ok(servers) = servers_for(snapshot, Subscription::Pattern, &name) else {
                continue;
            };
            let keys: Vec<ServerKey> = servers
                .into_iter()
                .map(|server| self.connection(core, server))
                .collect();
            let was = self
                .patterns
                .insert(name.clone(), keys.clone())
                .unwrap_or_default();
            for &key in keys.iter().filter(|key| !was.contains(key)) {
                moves.push((Subscription::Pattern, true, key, name.clone()));
            }
            for &key in was.iter().filter(|key| !keys.contains(key)) {
                moves.push((Subscription::Pattern, false, key, name.clone()));
            }
        }
        for (kind, subscribe, key, name) in moves {
            let Some(connection) = self.connections.get_mut(&key) else {
                continue;
            };
            if subscribe {
                connection.held += 1;
            } else {
                connection.held -= 1;
            }
            connection.subscriber.send(SubscribeOp {
                kind,
                subscribe,
                names: vec![(name, None)],
            });
        }
        self.let_go_of_empty();
    }

    /// Places the names under `snapshot` first when it is not the one they were placed
    /// under (a subscribe reads the newest servers).
    fn place(&mut self, core: &mut Core, snapshot: &Arc<PoolSnapshot>) {
        if self.placed_under == 0 {
            self.placed_under = Arc::as_ptr(snapshot) as usize;
        } else {
            self.follow(core, snapshot);
        }
    }

    fn names(&self, kind: Subscription) -> Vec<Bytes> {
        match kind {
            Subscription::Channel => self.channels.keys().cloned().collect(),
            Subscription::Shard => self.shard_channels.keys().cloned().collect(),
            Subscription::Pattern => self.patterns.keys().cloned().collect(),
        }
    }

    /// The subscriber connection to `server`, started if there is none.
    fn connection(&mut self, core: &mut Core, server: Arc<Server>) -> ServerKey {
        let key = key_of(&server);
        self.connections.entry(key).or_insert_with(|| Connection {
            subscriber: Subscriber::start(&server.dedicated, core.push_target()),
            _server: server,
            held: 0,
        });
        key
    }

    /// Reserves the slot of `reply` (the client's confirmations), completed when every part
    /// (a name on a server) is confirmed, and sends the parts.
    fn send(
        &mut self,
        core: &mut Core,
        kind: Subscription,
        subscribe: bool,
        reply: Vec<u8>,
        parts: Vec<(ServerKey, Bytes)>,
    ) {
        let merger = Confirmations {
            reply: Bytes::from(reply),
            needed: parts.len(),
            got: 0,
            confirmed: 0,
            failure: None,
            // A pattern is on every server: one that is down does not refuse it.
            lenient: kind == Subscription::Pattern,
        };
        let seq = core.reserve_merged(Box::new(merger));
        let mut by_server: HashMap<ServerKey, Vec<(Bytes, Option<super::backend::ReplyTo>)>> =
            HashMap::new();
        for (part, (key, name)) in parts.into_iter().enumerate() {
            let reply_to = core.reply_to(seq, part as u32);
            if subscribe {
                if let Some(connection) = self.connections.get_mut(&key) {
                    connection.held += 1;
                }
            }
            by_server
                .entry(key)
                .or_default()
                .push((name, Some(reply_to)));
        }
        for (key, names) in by_server {
            match self.connections.get(&key) {
                Some(connection) => connection.subscriber.send(SubscribeOp {
                    kind,
                    subscribe,
                    names,
                }),
                None => {
                    for (_, reply_to) in names {
                        if let Some(reply_to) = reply_to {
                            reply_to.deliver(Err(BackendError::ConnectionReset));
                        }
                    }
                }
            }
        }
        self.let_go_of_empty();
    }

    /// Lets go of the connections that hold nothing: each goes back to its server's idle
    /// set once its last confirmations are read.
    fn let_go_of_empty(&mut self) {
        self.connections.retain(|_, connection| connection.held > 0);
    }
}

/// Where a name of `kind` is subscribed: its server, or for a pattern every server (one
/// node in a cluster pool, where every node sees every publish).
fn servers_for(
    snapshot: &PoolSnapshot,
    kind: Subscription,
    name: &[u8],
) -> Result<Vec<Arc<Server>>, BackendError> {
    if kind == Subscription::Pattern && !snapshot.config.redis_cluster {
        if snapshot.servers.is_empty() {
            return Err(BackendError::ConnectionRefused);
        }
        return Ok(snapshot.servers.clone());
    }
    let index = route(snapshot, name)?;
    let server = snapshot
        .servers
        .get(index)
        .ok_or(BackendError::ConnectionRefused)?;
    Ok(vec![server.clone()])
}

/// The client's confirmations for one (un)subscribe command, written once every part is
/// confirmed by its server; a server's refusal is written instead.
struct Confirmations {
    reply: Bytes,
    needed: usize,
    got: usize,
    confirmed: usize,
    failure: Option<Bytes>,
    lenient: bool,
}

impl Merger for Confirmations {
    fn accept(&mut self, _part: usize, reply: Result<Bytes, String>) -> bool {
        self.got += 1;
        match reply {
            Ok(frame) if frame.first() == Some(&b'-') => self.failure = Some(frame),
            Ok(_) => self.confirmed += 1,
            Err(text) => self.failure = Some(Bytes::from(dispatch::error_reply(&text))),
        }
        self.is_complete()
    }
    fn is_complete(&self) -> bool {
        self.got >= self.needed
    }
    fn finish(&self) -> Bytes {
        match &self.failure {
            Some(_) if self.lenient && self.confirmed > 0 => self.reply.clone(),
            Some(failure) => failure.clone(),
            None => self.reply.clone(),
        }
    }
    fn is_proxy_error(&self) -> bool {
        self.failure.is_some() && !(self.lenient && self.confirmed > 0)
    }
}
