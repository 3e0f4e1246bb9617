//! The Redis side of a client session: decode RESP requests, apply the dispatch decision
//! (forward, split, answer locally), and keep the connection's AUTH and name state.

use bytes::{Bytes, BytesMut};

use std::sync::Arc;

use super::backend::Lane;
use super::client_list::SessionState;
use super::error::BackendError;
use super::pool::PoolSnapshot;
use super::pubsub::Subscriptions;
use super::session::{route, route_error, Closing, Core, Merger, Protocol};
use super::transaction::{Queued, Transactions, CROSSSLOT};
use crate::config::ReadFrom;
use crate::proto::redis::clients::ReplyMode;
use crate::proto::redis::command::{self, StateCommand};
use crate::proto::redis::dispatch::{
    self, Dispatch, KeyRange, KeyRanges, SplitKind, TrackingCommand,
};
use crate::proto::redis::encode::Encoder;
use crate::proto::redis::hello::{self, HelloOption};
use crate::proto::redis::pubsub::{subscribed_pong, PubsubMerge};
use crate::proto::redis::reply::Protocol as RespProtocol;
use crate::proto::redis::request::{Limits, Request, RequestDecoder};
use crate::proto::redis::split::{self, Merge};
use crate::proto::redis::tracking::{self, Current, Tracking};
use crate::proxy::backend::ReplyTo;
use crate::proxy::tracker::{Confirmations, Done, Sink, Tracker};
use crate::route::RouteError;

/// Per-connection Redis state.
pub struct RedisProtocol {
    decoder: RequestDecoder,
    authenticated: bool,
    /// The user this connection authenticated as (`users:` pools). Looked up again on each
    /// request, so a reload's new permissions apply at once and a removed user is logged out.
    user: Option<Box<str>>,
    /// Set by `CLIENT SETNAME`, returned by `CLIENT GETNAME`.
    client_name: Option<Bytes>,
    /// WATCH / MULTI state and the connection it holds.
    transactions: Transactions,
    /// Pub/sub subscriptions and their connections.
    subscriptions: Subscriptions,
    /// The backend connection the last forwarded request went over.
    last_path: Path,
    /// A request that must wait until every request before it is answered.
    stash: Option<Request>,
    /// The name and user last published to the pool's list of sessions.
    listed_as: (Option<Bytes>, Option<Box<str>>),
    /// Client-side caching (`CLIENT TRACKING ON`) and its connections.
    tracking: Option<TrackingState>,
    /// The client asked its id (`CLIENT ID`, `HELLO`): it may be another's `REDIRECT` target.
    asked_id: bool,
    /// Its pushes are offered to other sessions' redirects (`offer_pushes`).
    offered_pushes: bool,
    /// `CLIENT CACHING yes|no` was the last command but `CLIENT` ones (shown by
    /// `TRACKINGINFO`, as Redis shows it).
    caching_once: bool,
}

/// A session's `CLIENT TRACKING` options and its tracking connections (RESP3 sessions: one
/// per server, by name, in the snapshot's order).
#[derive(Debug)]
struct TrackingState {
    options: Tracking,
    trackers: Vec<(String, Tracker)>,
}

/// Which backend connection of a server a request goes over. Requests on one path keep
/// their order on the wire; one on a different path waits until every earlier request is
/// answered, so it never overtakes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The shared, pipelined connections of the client's lane (database and protocol): a
    /// `SELECT` or `HELLO` that changes lane waits for what went over the old one.
    Shared(Lane),
    /// A blocking command's own dedicated connection.
    Own,
    /// A transaction's leased connection (numbered per transaction).
    Lease(u64),
    /// No connection: set by `CLIENT TRACKING ON`, so the next forwarded request waits for
    /// its answer (the tracking connections confirmed).
    Barrier,
}

impl Merger for Merge {
    fn accept(&mut self, part: usize, reply: Result<Bytes, String>) -> bool {
        Merge::accept(self, part, reply)
    }
    fn is_complete(&self) -> bool {
        Merge::is_complete(self)
    }
    fn finish(&self) -> Bytes {
        Merge::finish(self)
    }
    fn is_proxy_error(&self) -> bool {
        Merge::is_proxy_error(self)
    }
}

impl Protocol for RedisProtocol {
    fn new(snapshot: &PoolSnapshot) -> Self {
        RedisProtocol {
            decoder: RequestDecoder::new(Limits::default()),
            authenticated: snapshot.config.redis_auth.is_none() && snapshot.config.users.is_none(),
            user: None,
            client_name: None,
            transactions: Transactions::default(),
            subscriptions: Subscriptions::default(),
            last_path: Path::Shared(super::pool::default_lane(&snapshot.config)),
            stash: None,
            listed_as: (None, None),
            tracking: None,
            asked_id: false,
            offered_pushes: false,
            caching_once: false,
        }
    }

    const LISTED: bool = true;

    fn handle_input(
        &mut self,
        core: &mut Core,
        snapshot: &Arc<PoolSnapshot>,
        input: &mut BytesMut,
    ) {
        while core.decodes() && core.has_room() {
            if let Some(request) = self.stash.take() {
                core.deferred = false;
                core.answers_awaited();
                self.handle_request(core, snapshot, request);
                continue;
            }
            match self.decoder.decode(input) {
                Ok(Some(request)) => self.handle_request(core, snapshot, request),
                Ok(None) => break,
                Err(err) => {
                    core.replies.begin_request();
                    core.push_ready(Bytes::from(dispatch::error_reply(&err.to_string())));
                    core.closing = Some(Closing::ProtocolError);
                }
            }
        }
        if !self.offered_pushes {
            self.offer_pushes(core);
        }
        self.publish(core);
    }

    fn error_reply(err: &BackendError) -> Bytes {
        if let BackendError::ClusterDown(text) = err {
            return Bytes::from(format!("-CLUSTERDOWN {text}\r\n"));
        }
        Bytes::from(dispatch::error_reply(&err.to_string()))
    }

    fn count_requests(&mut self, input: &mut BytesMut) -> usize {
        let stashed = usize::from(self.stash.is_some());
        stashed + std::iter::from_fn(|| self.decoder.decode(input).ok().flatten()).count()
    }

    fn follows_servers(&self) -> bool {
        self.subscriptions.is_subscribed()
            || self
                .tracking
                .as_ref()
                .is_some_and(|t| !t.trackers.is_empty())
    }

    fn servers_changed(&mut self, core: &mut Core, snapshot: &Arc<PoolSnapshot>) {
        self.subscriptions.follow(core, snapshot);
        self.follow_trackers(core, snapshot, None);
    }
}

impl RedisProtocol {
    fn handle_request(&mut self, core: &mut Core, snapshot: &Arc<PoolSnapshot>, request: Request) {
        let spec = command::lookup(request.arg(0).unwrap_or_default());
        // A command walnut's table lacks is routed by the backend's own key specs.
        let catalog = match spec {
            None => snapshot.commands.load_full(),
            Some(_) => None,
        };
        let learned = catalog.as_deref().and_then(|c| c.table.keys_of(&request));
        let learned_command = learned
            .as_ref()
            .and_then(|keys| keys.as_ref().ok())
            .map(|keys| keys.command);
        let decision = match learned {
            Some(keys) => dispatch::learned(&request, keys),
            None => dispatch::dispatch_as(&request, spec),
        };
        if let Some(path) = self.path_of(&decision, core.lane) {
            if path != self.last_path || path == Path::Own {
                if !core.all_answered() {
                    // Handled once everything before it is answered (Request is a cheap,
                    // shared clone of the frame).
                    self.stash = Some(request.clone());
                    core.wait_for_answers();
                    core.deferred = true;
                    return;
                }
                self.last_path = path;
            }
        }
        core.count_command_spec(spec);
        if self.caching_once && spec.is_none_or(|s| s.name != "CLIENT") {
            // As Redis: CLIENT CACHING applies to the next command but CLIENT ones.
            self.caching_once = false;
        }
        core.replies.begin_request();
        if let Some(listed) = core.listing() {
            listed
                .entry()
                .command(spec, request.arg(1).unwrap_or_default());
        }
        if snapshot.config.redis_cluster && self.authenticated {
            if let Some(reply) = cluster_answer(snapshot, &request, spec, core.lane.resp3) {
                return core.push_ready(Bytes::from(reply));
            }
        }
        // RESP3 lets a subscribed client run any command (its messages come as pushes).
        if self.subscriptions.is_subscribed() && !core.lane.resp3 {
            let name = learned_command.map(|c| &*c.name);
            if let Some(reply) = subscribed_mode(spec, name, &request) {
                return core.push_ready(Bytes::from(reply));
            }
        }
        let rule = match (spec, learned_command) {
            (Some(spec), _) => Some(Permission::Table(spec)),
            (None, Some(command)) => Some(Permission::Learned(command)),
            (None, None) => None,
        };
        if let (Some(users), Some(rule)) = (&snapshot.config.users, rule) {
            if self.authenticated && forwards(&decision) {
                if let Some(refusal) = self.acl_refusal(users, rule, &decision, &request) {
                    if refusal != dispatch::ACL_NOAUTH {
                        core.count_acl_denied();
                    }
                    return core.push_ready(Bytes::from(refusal));
                }
            }
        }
        match decision {
            Dispatch::Quit => core.closing = Some(Closing::Quit),
            Dispatch::Auth { username, password } if snapshot.config.users.is_some() => {
                let users = snapshot.config.users.as_deref();
                let reply = match users.and_then(|u| u.authenticate(username, password)) {
                    Some(user) => {
                        self.user = Some(user.name.as_str().into());
                        self.authenticated = true;
                        dispatch::OK
                    }
                    // As in Redis, a failed AUTH leaves the connection as it was.
                    None => {
                        core.count_auth_failure();
                        dispatch::WRONGPASS
                    }
                };
                core.push_ready(Bytes::from_static(reply));
            }
            // twemproxy's AUTH takes only a password.
            Dispatch::Auth {
                username: Some(_), ..
            } => core.push_ready(Bytes::from(dispatch::wrong_arity_reply("auth"))),
            // Inside MULTI every command but the transaction's own goes to the transaction.
            decision if self.authenticated && self.transactions.in_multi() && queues(&decision) => {
                let queued = queued(snapshot, spec, &decision, &request);
                self.transactions
                    .queue(core, snapshot, queued, request.frame().clone());
            }
            Dispatch::Auth { password, .. } => {
                let reply: &'static [u8] = match &snapshot.config.redis_auth {
                    None => dispatch::AUTH_NOT_SET,
                    Some(expected) if expected.as_bytes() == password => {
                        self.authenticated = true;
                        dispatch::OK
                    }
                    Some(_) => {
                        self.authenticated = false;
                        dispatch::INVALID_PASSWORD
                    }
                };
                core.push_ready(Bytes::from_static(reply));
            }
            Dispatch::Hello => self.hello(core, snapshot, &request),
            Dispatch::Tracking(command) => self.tracking_command(core, snapshot, command, &request),
            Dispatch::Command => {
                let commands = snapshot.commands.load();
                match commands
                    .as_deref()
                    .and_then(|c| c.answer(&request, core.lane.resp3))
                {
                    Some(reply) => core.push_ready(Bytes::from(reply)),
                    None => core.forward(
                        snapshot,
                        route(snapshot, dispatch::PLACEHOLDER_KEY),
                        request.frame().clone(),
                    ),
                }
            }
            // Errors about the request itself come before authentication, as in Redis.
            Dispatch::Reply(reply) if reply.first() == Some(&b'-') => {
                core.push_ready(Bytes::from(reply))
            }
            _ if !self.authenticated => {
                let noauth = match snapshot.config.users {
                    Some(_) => dispatch::ACL_NOAUTH,
                    None => dispatch::NOAUTH,
                };
                core.push_ready(Bytes::from_static(noauth))
            }
            Dispatch::Reply(reply) => core.push_ready(Bytes::from(reply)),
            Dispatch::Select { db } => {
                let config = &snapshot.config;
                let reply = if config.redis_cluster && db != 0 {
                    dispatch::SELECT_IN_CLUSTER
                } else if !(0..i64::from(config.databases)).contains(&db) {
                    dispatch::DB_OUT_OF_RANGE
                } else {
                    core.lane.db = db as u32;
                    dispatch::OK
                };
                core.push_ready(Bytes::from_static(reply));
            }
            Dispatch::Forward { key } => {
                let reads = spec.is_some_and(|spec| reads_from_replicas(snapshot, spec));
                if reads && !snapshot.config.sentinels.is_empty() {
                    return sentinel_read(core, snapshot, key, request.frame().clone());
                }
                let server = match reads {
                    true => route_read(snapshot, key, core.client_id()),
                    false => route(snapshot, key),
                };
                core.forward(snapshot, server, request.frame().clone());
            }
            Dispatch::ForwardSameServer { keys } => {
                forward_same_server(core, snapshot, &request, keys)
            }
            Dispatch::Split { kind } => split(core, snapshot, kind, &request),
            Dispatch::Block { keys, wait } => block(core, snapshot, &request, keys, wait),
            Dispatch::Stateful(command) => self.stateful(core, snapshot, command, &request),
            Dispatch::Everywhere(_)
                if !snapshot.config.allow_flush
                    && spec.is_some_and(|spec| matches!(spec.name, "FLUSHDB" | "FLUSHALL")) =>
            {
                let name = spec.map_or("", |spec| spec.name).to_ascii_lowercase();
                core.push_ready(Bytes::from(dispatch::error_reply(&format!(
                    "command '{name}' is disabled in pool '{}' (allow_flush: false)",
                    snapshot.config.name
                ))))
            }
            Dispatch::Everywhere(kind) => super::fanout::everywhere(core, snapshot, &request, kind),
            Dispatch::Scan => super::fanout::scan(core, snapshot, &request),
            Dispatch::Info => super::fanout::info(core, snapshot, &request),
            Dispatch::SetClientName { name } => {
                // An empty name clears it, as in Redis.
                self.client_name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                core.push_ready(Bytes::from_static(dispatch::OK));
            }
            Dispatch::ClientId => {
                self.asked_id = true;
                core.push_ready(Bytes::from(format!(":{}\r\n", core.client_id())))
            }
            Dispatch::ClientInfo => {
                self.publish(core);
                let mut line = Vec::with_capacity(300);
                if let Some(listed) = core.listing() {
                    listed
                        .entry()
                        .write_line(std::time::Instant::now(), &mut line);
                }
                core.push_ready(text_reply(core, &line));
            }
            Dispatch::ClientList(filter) => {
                self.publish(core);
                let listing = core
                    .listing()
                    .map(|listed| listed.registry().list(&filter))
                    .unwrap_or_default();
                core.push_ready(text_reply(core, &listing));
            }
            Dispatch::ClientReply(mode) => {
                core.replies.set(mode);
                if mode == ReplyMode::On {
                    core.push_ready(Bytes::from_static(dispatch::OK));
                }
            }
            Dispatch::Text(text) => core.push_ready(text_reply(core, &text)),
            Dispatch::Time => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                core.push_ready(Bytes::from(dispatch::time_reply(now)));
            }
            Dispatch::GetClientName => {
                let reply = match &self.client_name {
                    Some(name) => dispatch::bulk(name),
                    None if core.lane.resp3 => b"_\r\n".to_vec(),
                    None => b"$-1\r\n".to_vec(),
                };
                core.push_ready(Bytes::from(reply));
            }
        }
    }
}

/// `text` as a verbatim string (`=n txt:…`) in RESP3, a bulk string in RESP2, as Redis
/// answers `CLIENT INFO`, `CLIENT LIST` and `LOLWUT`.
fn text_reply(core: &Core, text: &[u8]) -> Bytes {
    let mut encoder = Encoder::new(core.lane.protocol());
    encoder.verbatim(b"txt", text);
    Bytes::from(encoder.finish())
}

impl RedisProtocol {
    /// `CLIENT TRACKING|CACHING|TRACKINGINFO|GETREDIR`.
    fn tracking_command(
        &mut self,
        core: &mut Core,
        snapshot: &PoolSnapshot,
        command: TrackingCommand,
        request: &Request,
    ) {
        let current = self
            .tracking
            .as_ref()
            .map_or(Current::default(), |t| Current {
                on: true,
                bcast: t.options.bcast,
                optin: t.options.optin,
                optout: t.options.optout,
            });
        let resp3 = core.lane.resp3;
        let refused =
            |err: tracking::TrackingError| Bytes::from(dispatch::error_reply(&err.to_string()));
        let reply = match command {
            TrackingCommand::Info => {
                let options = self.tracking.as_ref().map(|t| &t.options);
                let registry = core.listing().map(|listed| listed.registry());
                let broken = options
                    .and_then(|o| o.redirect)
                    .is_some_and(|id| registry.is_some_and(|r| r.find(id).is_none()));
                let caching = self.caching_once;
                Bytes::from(tracking::info(options, caching, broken, resp3))
            }
            TrackingCommand::GetRedir => Bytes::from(match &self.tracking {
                None => ":-1\r\n".to_string(),
                Some(t) => format!(":{}\r\n", t.options.redirect.unwrap_or(0)),
            }),
            TrackingCommand::Caching => {
                match tracking::caching(request.arg(2).unwrap_or_default(), current) {
                    Ok(()) => {
                        self.caching_once = true;
                        Bytes::from_static(dispatch::OK)
                    }
                    Err(err) => refused(err),
                }
            }
            TrackingCommand::Set => {
                let registry = core.listing().map(|listed| listed.registry());
                let exists = |id: i64| registry.is_some_and(|r| r.find(id).is_some());
                let mut options = match tracking::parse(request, current, exists) {
                    Ok(options) => options,
                    Err(err) => return core.push_ready(refused(err)),
                };
                if !options.on {
                    self.tracking = None;
                    self.caching_once = false;
                    return core.push_ready(Bytes::from_static(dispatch::OK));
                }
                if let Some(existing) = &self.tracking {
                    let held = &existing.options.prefixes;
                    if let Some(err) = tracking::overlap_with_existing(&options.prefixes, held) {
                        return core.push_ready(refused(err));
                    }
                    let mut prefixes = held.clone();
                    prefixes.append(&mut options.prefixes);
                    options.prefixes = prefixes;
                }
                self.tracking = Some(TrackingState {
                    options,
                    trackers: Vec::new(),
                });
                // Answered once every server tracks, and the next forwarded request waits
                // for the answer: no read is cached before its server tracks it.
                let reply_to = core.reserve_reply();
                self.follow_trackers(core, snapshot, Some(reply_to));
                self.last_path = Path::Barrier;
                return;
            }
        };
        core.push_ready(reply);
    }

    /// Starts, restarts or stops the session's tracking connections: they run while tracking
    /// is on and invalidations have somewhere to go (a RESP3 session, or a `REDIRECT`).
    /// `answer` is `CLIENT TRACKING ON`'s reply, sent once they are all confirmed; without it
    /// they are restarted only when the servers changed, and the client is then told to drop
    /// everything once the new ones are confirmed.
    fn follow_trackers(
        &mut self,
        core: &mut Core,
        snapshot: &PoolSnapshot,
        answer: Option<ReplyTo>,
    ) {
        let Some(state) = &mut self.tracking else {
            if let Some(answer) = answer {
                answer.deliver(Ok(Bytes::from_static(dispatch::OK)));
            }
            return;
        };
        let redirect = state.options.redirect;
        if !core.lane.resp3 && redirect.is_none() {
            // A RESP2 client without a redirect takes no invalidations (as in Redis).
            state.trackers.clear();
            if let Some(answer) = answer {
                answer.deliver(Ok(Bytes::from_static(dispatch::OK)));
            }
            return;
        }
        let names = snapshot.servers.iter().map(|s| &s.info.name);
        let same = state.trackers.len() == snapshot.servers.len()
            && state.trackers.iter().map(|(n, _)| n).eq(names);
        if same && answer.is_none() {
            return;
        }
        let own = core.lane.resp3.then(|| core.push_target());
        let sink = match redirect {
            None => Sink::Own(core.push_target()),
            Some(id) => Sink::Redirect {
                id,
                target: core
                    .listing()
                    .and_then(|listed| listed.registry().find(id))
                    .map_or_else(std::sync::Weak::new, |entry| Arc::downgrade(&entry)),
                own,
            },
        };
        let done = match answer {
            Some(reply_to) => Done::Reply(reply_to),
            None => Done::Flush(sink.clone()),
        };
        let confirmations = Confirmations::new(snapshot.servers.len(), done);
        let command = Bytes::from(tracking::server_command(&state.options));
        // The old connections close as the new ones open.
        state.trackers = snapshot
            .servers
            .iter()
            .map(|server| {
                let tracker = Tracker::start(
                    &server.dedicated,
                    command.clone(),
                    sink.clone(),
                    &confirmations,
                );
                (server.info.name.clone(), tracker)
            })
            .collect();
    }

    /// Lets another session's `CLIENT TRACKING … REDIRECT` reach this one, once it can take
    /// pushes (RESP3, or subscribed) or has asked its id.
    fn offer_pushes(&mut self, core: &mut Core) {
        let wanted = core.lane.resp3 || self.subscriptions.is_subscribed() || self.asked_id;
        if !wanted {
            return;
        }
        self.offered_pushes = true;
        if core.listing().is_some() {
            let to = core.push_target();
            if let Some(listed) = core.listing() {
                listed.entry().offer_pushes(to);
            }
        }
    }
}

/// What decides whether a user may run a command: walnut's table, or the backend's entry
/// for a command only the backend knows.
#[derive(Clone, Copy)]
enum Permission<'c> {
    Table(&'static command::CommandSpec),
    Learned(&'c crate::proto::redis::keyspecs::LearnedCommand),
}

/// True when the decision sends the request to a server (what ACLs check).
fn forwards(decision: &Dispatch<'_>) -> bool {
    matches!(
        decision,
        Dispatch::Forward { .. }
            | Dispatch::ForwardSameServer { .. }
            | Dispatch::Split { .. }
            | Dispatch::Block { .. }
            | Dispatch::Stateful(_)
            | Dispatch::Everywhere(_)
            | Dispatch::Scan
            | Dispatch::Info
            | Dispatch::Command
    )
}

/// True for what a transaction queues: everything but its own commands (MULTI, EXEC,
/// DISCARD, WATCH, RESET) and QUIT and AUTH.
fn queues(decision: &Dispatch<'_>) -> bool {
    match decision {
        Dispatch::Stateful(command) => !matches!(
            command,
            StateCommand::Multi
                | StateCommand::Exec
                | StateCommand::Discard
                | StateCommand::Watch
                | StateCommand::Reset
        ),
        Dispatch::Quit | Dispatch::Auth { .. } => false,
        _ => true,
    }
}

/// Where a command inside MULTI goes: its keys' server, any (no key), or refused.
fn queued(
    snapshot: &PoolSnapshot,
    spec: Option<&command::CommandSpec>,
    decision: &Dispatch<'_>,
    request: &Request,
) -> Queued {
    let name = spec.map_or("", |spec| spec.name);
    let not_here = || {
        Queued::Refused(Bytes::from(dispatch::error_reply(&format!(
            "'{}' inside MULTI is not supported by walnut",
            name.to_ascii_lowercase()
        ))))
    };
    let keys = match *decision {
        Dispatch::Reply(ref reply) if reply.first() == Some(&b'-') => {
            return Queued::Refused(Bytes::from(reply.clone()))
        }
        // Redis queues PING and ECHO like any command; walnut's local answers would be
        // missing from EXEC's array.
        Dispatch::Reply(_) if matches!(name, "PING" | "ECHO") => return Queued::Keyless,
        Dispatch::Text(_) if name == "LOLWUT" => return Queued::Keyless,
        Dispatch::Time => return Queued::Keyless,
        Dispatch::Stateful(StateCommand::Unwatch) | Dispatch::Command => return Queued::Keyless,
        Dispatch::Forward { key } if std::ptr::eq(key, dispatch::PLACEHOLDER_KEY) => {
            return Queued::Keyless
        }
        Dispatch::Forward { key } => {
            return match route(snapshot, key) {
                Ok(server) => Queued::Server(server),
                Err(err) => Queued::Refused(RedisProtocol::error_reply(&err)),
            }
        }
        Dispatch::ForwardSameServer { keys } | Dispatch::Block { keys, .. } => keys,
        Dispatch::Split { kind } => {
            let step = if kind == SplitKind::Mset { 2 } else { 1 };
            KeyRanges::one(KeyRange::new(1, step, request.argc()))
        }
        _ => return not_here(),
    };
    match one_server(snapshot, request, keys) {
        Ok(server) => Queued::Server(server),
        Err(Spread::Slots | Spread::Servers) => Queued::Refused(Bytes::from_static(CROSSSLOT)),
        Err(Spread::Failed(err)) => Queued::Refused(RedisProtocol::error_reply(&err)),
    }
}

/// In subscribed mode, Redis's answer for a command that is not allowed there, or the
/// subscribed form of PING; `None` for the (un)subscribe commands, QUIT and RESET.
fn subscribed_mode(
    spec: Option<&command::CommandSpec>,
    learned: Option<&str>,
    request: &Request,
) -> Option<Vec<u8>> {
    let name = match (spec, learned) {
        (Some(spec), _) => spec.name,
        (None, Some(learned)) => learned,
        (None, None) => return None,
    };
    match name {
        "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
        | "SUNSUBSCRIBE" | "QUIT" | "RESET" => None,
        "PING" if request.argc() <= 2 => {
            Some(subscribed_pong(request.arg(1).unwrap_or_default()))
        }
        "PING" => Some(dispatch::wrong_arity_reply("ping")),
        name => Some(dispatch::error_reply(&format!(
            "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            name.to_ascii_lowercase()
        ))),
    }
}

impl RedisProtocol {
    /// Publishes what `CLIENT LIST` shows of this session to its entry: cheap stores once a
    /// batch, the name and user only when they changed.
    fn publish(&mut self, core: &Core) {
        let Some(listed) = core.listing() else {
            return;
        };
        let entry = listed.entry();
        let (sub, psub, ssub) = self.subscriptions.counts();
        entry.publish(&SessionState {
            db: core.lane.db,
            resp3: core.lane.resp3,
            sub,
            psub,
            ssub,
            multi: self.transactions.queued(),
        });
        if self.listed_as.0 != self.client_name {
            self.listed_as.0.clone_from(&self.client_name);
            entry.rename(self.client_name.clone());
        }
        if self.listed_as.1 != self.user {
            self.listed_as.1.clone_from(&self.user);
            entry.authenticated_as(self.user.clone());
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`, applied as Redis applies it: a bad
    /// protocol version first, then each option in turn (stopping at the first that fails),
    /// then a bad option's error, then `NOAUTH` for a client still not authenticated; only
    /// then does the session switch protocol and answer the map, in the new protocol.
    fn hello(&mut self, core: &mut Core, snapshot: &PoolSnapshot, request: &Request) {
        let hello = match hello::parse_request(request) {
            Ok(hello) => hello,
            Err(err) => return core.push_ready(Bytes::from(err.reply())),
        };
        for option in &hello.options {
            match *option {
                HelloOption::Auth { username, password } => {
                    if !self.hello_auth(snapshot, username, password) {
                        core.count_auth_failure();
                        return core.push_ready(Bytes::from_static(dispatch::WRONGPASS));
                    }
                }
                HelloOption::SetName(name) => {
                    self.client_name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                }
            }
        }
        if let Some(err) = &hello.error {
            return core.push_ready(Bytes::from(err.reply()));
        }
        if !self.authenticated {
            return core.push_ready(Bytes::from_static(hello::NOAUTH_HELLO));
        }
        if let Some(protocol) = hello.protover {
            core.lane.resp3 = protocol == RespProtocol::Resp3;
        }
        let mode = match snapshot.config.redis_cluster {
            true => "cluster",
            false => "standalone",
        };
        let reply = hello::HelloReply::redis(
            hello::REDIS_VERSION,
            core.lane.protocol(),
            core.client_id(),
            mode,
        );
        core.push_ready(Bytes::from(reply.encode()));
        self.asked_id = true;
        // A switch of protocol may start or stop the tracking connections.
        self.follow_trackers(core, snapshot, None);
    }

    /// `HELLO`'s `AUTH username password`: a `users:` pool's user, or `default` with the
    /// pool's `redis_auth` (any password when it has none, as Redis's `nopass` default user).
    fn hello_auth(&mut self, snapshot: &PoolSnapshot, username: &[u8], password: &[u8]) -> bool {
        let config = &snapshot.config;
        if let Some(users) = &config.users {
            let Some(user) = users.authenticate(Some(username), password) else {
                return false;
            };
            self.user = Some(user.name.as_str().into());
        } else if username != b"default" {
            return false;
        } else if let Some(expected) = &config.redis_auth {
            if expected.as_bytes() != password {
                return false;
            }
        }
        self.authenticated = true;
        true
    }

    /// The backend connection `decision` goes over, when it goes to one.
    fn path_of(&self, decision: &Dispatch<'_>, lane: Lane) -> Option<Path> {
        let transactions = &self.transactions;
        let lease = Path::Lease(transactions.path());
        match decision {
            Dispatch::Quit | Dispatch::Auth { .. } => None,
            Dispatch::Stateful(command) => match command {
                StateCommand::Multi => transactions.is_bound().then_some(lease),
                StateCommand::Exec | StateCommand::Discard => {
                    transactions.in_multi().then_some(lease)
                }
                StateCommand::Watch => (!transactions.in_multi()).then_some(lease),
                StateCommand::Unwatch => {
                    (transactions.in_multi() || transactions.is_bound()).then_some(lease)
                }
                StateCommand::Pubsub if !transactions.in_multi() => Some(Path::Shared(lane)),
                _ => None,
            },
            _ if transactions.in_multi() => Some(lease),
            Dispatch::Block { .. } => Some(Path::Own),
            decision if forwards(decision) => Some(Path::Shared(lane)),
            _ => None,
        }
    }

    /// Transactions, pub/sub and RESET.
    fn stateful(
        &mut self,
        core: &mut Core,
        snapshot: &Arc<PoolSnapshot>,
        command: StateCommand,
        request: &Request,
    ) {
        let frame = request.frame().clone();
        let names = || request.args().skip(1).collect::<Vec<&[u8]>>();
        match command {
            StateCommand::Multi => self.transactions.multi(core),
            StateCommand::Exec => self.transactions.exec(core, snapshot, frame),
            StateCommand::Discard => self.transactions.discard(core, frame),
            StateCommand::Unwatch => self.transactions.unwatch(core, frame),
            StateCommand::Watch if self.transactions.in_multi() => {
                self.transactions.watch(core, snapshot, 0, frame)
            }
            StateCommand::Watch => {
                let keys = KeyRanges::one(KeyRange::new(1, 1, request.argc()));
                match one_server(snapshot, request, keys) {
                    Ok(server) => self.transactions.watch(core, snapshot, server, frame),
                    Err(Spread::Slots | Spread::Servers) => {
                        core.push_ready(Bytes::from_static(CROSSSLOT))
                    }
                    Err(Spread::Failed(err)) => core.push_error(&err),
                }
            }
            // Confirmations are pushes: sent whatever `CLIENT REPLY` says, as in Redis 7.
            StateCommand::Subscribe(kind) => {
                core.replies.answers_with_pushes();
                self.subscriptions.subscribe(core, snapshot, kind, &names())
            }
            StateCommand::Unsubscribe(kind) => {
                core.replies.answers_with_pushes();
                self.subscriptions.unsubscribe(core, kind, &names())
            }
            StateCommand::Pubsub => pubsub_everywhere(core, snapshot, request),
            StateCommand::Reset => {
                self.tracking = None;
                self.transactions.abandon();
                self.subscriptions.clear();
                self.client_name = None;
                self.authenticated =
                    snapshot.config.redis_auth.is_none() && snapshot.config.users.is_none();
                self.user = None;
                core.replies.reset();
                core.push_ready(Bytes::from_static(b"+RESET\r\n"));
            }
        }
    }
}

/// `PUBSUB CHANNELS|NUMSUB|NUMPAT|SHARDCHANNELS|SHARDNUMSUB`: asked of every server, the
/// answers merged.
fn pubsub_everywhere(core: &mut Core, snapshot: &PoolSnapshot, request: &Request) {
    let sub = request.arg(1).unwrap_or_default();
    let Some(merge) = PubsubMerge::for_subcommand(sub) else {
        return core.push_ready(Bytes::from(dispatch::error_reply(&format!(
            "command 'pubsub|{}' is not supported by walnut",
            String::from_utf8_lossy(&sub[..sub.len().min(64)]).to_ascii_lowercase()
        ))));
    };
    let parts = (0..snapshot.servers.len())
        .map(|server| (server, request.frame().clone()))
        .collect();
    let merge = move |replies: &[&[u8]]| {
        merge
            .merge(replies)
            .ok_or_else(|| BackendError::InvalidReply.to_string())
    };
    super::fanout::gather(core, snapshot, parts, Box::new(merge));
}

impl RedisProtocol {
    /// Why this connection's user may not send `request`, as Redis words it; `None` when it
    /// may. Every key of a multi-key request is checked: one forbidden key refuses it whole.
    fn acl_refusal(
        &mut self,
        users: &crate::acl::Users,
        rule: Permission<'_>,
        decision: &Dispatch<'_>,
        request: &Request,
    ) -> Option<Vec<u8>> {
        let Some(user) = self.user.as_deref().and_then(|name| users.find(name)) else {
            // The user left the config in a reload: authenticate again.
            self.authenticated = false;
            self.user = None;
            return Some(dispatch::ACL_NOAUTH.to_vec());
        };
        let (may_run, name) = match rule {
            Permission::Table(spec) => (user.may_run(spec), spec.name),
            Permission::Learned(command) => (user.may_run_learned(command), &*command.name),
        };
        if !may_run {
            return Some(dispatch::noperm_command(&user.name, name));
        }
        if !user.has_key_rules() {
            return None;
        }
        let allowed = match *decision {
            Dispatch::Forward { key } => user.may_access(key),
            Dispatch::ForwardSameServer { keys } | Dispatch::Block { keys, .. } => request
                .args()
                .enumerate()
                .filter(|&(i, _)| is_key_position(keys, i))
                .all(|(_, key)| user.may_access(key)),
            Dispatch::Split { kind } => {
                let step = if kind == SplitKind::Mset { 2 } else { 1 };
                request
                    .args()
                    .skip(1)
                    .step_by(step)
                    .all(|key| user.may_access(key))
            }
            _ => true,
        };
        (!allowed).then(|| dispatch::NOPERM_KEY.to_vec())
    }
}

/// What a cluster pool answers itself: walnut is one node owning every slot (`CLUSTER …`),
/// and `READONLY` / `READWRITE` (walnut picks replicas by `read_from`).
fn cluster_answer(
    snapshot: &PoolSnapshot,
    request: &Request,
    spec: Option<&command::CommandSpec>,
    resp3: bool,
) -> Option<Vec<u8>> {
    match spec?.name {
        "CLUSTER" => {
            let (host, port) = match &snapshot.config.listen {
                crate::config::ListenAddr::Tcp { host, port, .. } => (host.as_str(), *port),
                crate::config::ListenAddr::Unix { .. } => ("", 0),
            };
            let node = crate::cluster::emulate::Announce::new(host, port);
            let args: Vec<&[u8]> = request.args().skip(1).collect();
            let reply = crate::cluster::emulate::reply(&args, &node);
            // Redis answers INFO and NODES as verbatim text in RESP3.
            let text = args.first().is_some_and(|sub| {
                sub.eq_ignore_ascii_case(b"INFO") || sub.eq_ignore_ascii_case(b"NODES")
            });
            match crate::proto::redis::fanout::bulk_text(&reply) {
                Some(data) if resp3 && text => {
                    let mut encoder =
                        crate::proto::redis::encode::Encoder::new(RespProtocol::Resp3);
                    encoder.verbatim(b"txt", data);
                    Some(encoder.finish())
                }
                _ => Some(reply),
            }
        }
        "READONLY" | "READWRITE" => Some(dispatch::OK.to_vec()),
        _ => None,
    }
}

/// True when `spec` goes to a replica: a read-only command in a cluster pool that reads
/// from replicas.
fn reads_from_replicas(snapshot: &PoolSnapshot, spec: &command::CommandSpec) -> bool {
    (snapshot.config.redis_cluster || !snapshot.config.sentinels.is_empty())
        && snapshot.config.read_from != ReadFrom::Master
        && crate::proto::redis::readonly::is_read_only(spec.name)
}

/// A replica of `key`'s slot (clients spread over them), or with `prefer_replica` the
/// master when the slot has none.
fn route_read(snapshot: &PoolSnapshot, key: &[u8], client: u64) -> Result<usize, BackendError> {
    let pick = client as usize;
    match snapshot.router.replica_for_key(key, pick) {
        Some(replica) => Ok(replica),
        None if snapshot.config.read_from == ReadFrom::PreferReplica => route(snapshot, key),
        None => route(snapshot, key).and_then(|_| {
            Err(BackendError::ClusterDown(
                "no replica serves the key's slot (read_from: replica)".into(),
            ))
        }),
    }
}

/// A Sentinel pool's read: one of the key's shard's healthy replicas (clients take turns),
/// or with `prefer_replica` the master when it has none.
fn sentinel_read(core: &mut Core, snapshot: &PoolSnapshot, key: &[u8], frame: Bytes) {
    let shard = match route(snapshot, key) {
        Ok(shard) => shard,
        Err(err) => return core.push_error(&err),
    };
    let replicas = snapshot
        .replicas
        .get(shard)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match replicas {
        [] if snapshot.config.read_from == ReadFrom::PreferReplica => {
            core.forward(snapshot, Ok(shard), frame)
        }
        [] => core.push_error(&BackendError::NoReplica),
        _ => {
            let replica = &replicas[core.client_id() as usize % replicas.len()];
            core.forward_to_server(replica, frame);
        }
    }
}

/// Why the keys of a request that must go whole have no one server.
enum Spread {
    /// A cluster pool: the keys are in different slots (Redis refuses them even on one node).
    Slots,
    /// The keys map to different servers.
    Servers,
    /// A key has no server to go to.
    Failed(BackendError),
}

/// The one server every key of `request` at `keys` maps to.
fn one_server(
    snapshot: &PoolSnapshot,
    request: &Request,
    keys: KeyRanges,
) -> Result<usize, Spread> {
    // One walk over the arguments: `Request::arg(i)` walks from the start for i >= 3.
    let key_args = || {
        request
            .args()
            .enumerate()
            .filter(move |&(i, _)| is_key_position(keys, i))
            .map(|(_, key)| key)
    };
    if snapshot.config.redis_cluster {
        let mut slots = key_args().map(crate::cluster::slot::key_slot);
        let first = slots.next();
        if slots.any(|slot| Some(slot) != first) {
            return Err(Spread::Slots);
        }
    }
    let mut servers = key_args().map(|key| route(snapshot, key));
    let target = match servers.next() {
        Some(Ok(target)) => target,
        Some(Err(err)) => return Err(Spread::Failed(err)),
        None => return Err(Spread::Failed(BackendError::ConnectionRefused)),
    };
    for server in servers {
        match server {
            Ok(server) if server == target => {}
            Ok(_) => return Err(Spread::Servers),
            Err(err) => return Err(Spread::Failed(err)),
        }
    }
    Ok(target)
}

/// A blocking command: all its keys on one server (one slot in a cluster pool), else
/// Redis's `-CROSSSLOT`; then a dedicated connection there.
fn block(
    core: &mut Core,
    snapshot: &PoolSnapshot,
    request: &Request,
    keys: KeyRanges,
    wait: dispatch::BlockFor,
) {
    let server = match one_server(snapshot, request, keys) {
        Ok(server) => Ok(server),
        Err(Spread::Slots | Spread::Servers) => {
            return core.push_ready(Bytes::from_static(CROSSSLOT))
        }
        Err(Spread::Failed(err)) => Err(err),
    };
    let wait = match wait {
        dispatch::BlockFor::Forever => None,
        dispatch::BlockFor::For(wait) => Some(wait),
    };
    core.forward_blocking(snapshot, server, request.frame().clone(), wait);
}

/// Forwards a multi-key request whole when every key maps to one server.
fn forward_same_server(
    core: &mut Core,
    snapshot: &PoolSnapshot,
    request: &Request,
    keys: KeyRanges,
) {
    match one_server(snapshot, request, keys) {
        Ok(target) => core.forward(snapshot, Ok(target), request.frame().clone()),
        Err(Spread::Slots) => core.push_ready(Bytes::from_static(CROSSSLOT)),
        Err(Spread::Servers) => {
            core.push_ready(Bytes::from(dispatch::error_reply(dispatch::CROSS_SERVER)))
        }
        Err(Spread::Failed(err)) => core.push_error(&err),
    }
}

/// Sends one part per server and merges their replies. A request whose keys all live on
/// one server is forwarded unchanged: the reply is the same.
fn split(core: &mut Core, snapshot: &PoolSnapshot, kind: SplitKind, request: &Request) {
    if snapshot.config.redis_cluster {
        return split_by_slot(core, snapshot, kind, request);
    }
    let plan = match split::plan(kind, request, |key| route(snapshot, key)) {
        Ok(plan) => plan,
        Err(err) => return core.push_error(&err),
    };
    if let [only] = plan.parts.as_slice() {
        return core.forward(snapshot, Ok(only.server), request.frame().clone());
    }
    let parts = plan
        .parts
        .into_iter()
        .map(|p| (p.server, p.frame))
        .collect();
    core.forward_split(snapshot, parts, Box::new(plan.merge));
}

/// A cluster pool's split: one part per slot (Redis refuses keys of different slots even on
/// one node), each sent to the slot's server.
fn split_by_slot(core: &mut Core, snapshot: &PoolSnapshot, kind: SplitKind, request: &Request) {
    // Keys that share one slot (a hash tag) need no plan: the request goes whole.
    let step = if kind == SplitKind::Mset { 2 } else { 1 };
    let mut slots = request
        .args()
        .skip(1)
        .step_by(step)
        .map(crate::cluster::slot::key_slot);
    let first = slots.next();
    let replicas = kind == SplitKind::Mget && snapshot.config.read_from != ReadFrom::Master;
    if let (Some(slot), false) = (first, replicas) {
        if slots.all(|s| s == slot) {
            return core.forward(
                snapshot,
                route_slot(snapshot, slot),
                request.frame().clone(),
            );
        }
    }
    let plan = match split::plan(kind, request, |key| {
        Ok::<_, BackendError>(usize::from(crate::cluster::slot::key_slot(key)))
    }) {
        Ok(plan) => plan,
        Err(err) => return core.push_error(&err),
    };
    let table = snapshot.router.slot_table();
    let read_from = snapshot.config.read_from;
    let replicas = kind == SplitKind::Mget && read_from != ReadFrom::Master;
    let pick = core.client_id() as usize;
    let server_of = |slot: usize| -> usize {
        let shard = u16::try_from(slot)
            .ok()
            .and_then(|slot| table.and_then(|t| t.shard(slot)));
        // No owner: an index past the servers, which fails that part as unreachable.
        let Some(shard) = shard else {
            return usize::MAX;
        };
        match shard.replicas.len() {
            n if replicas && n > 0 => shard.replicas[pick % n],
            0 if replicas && read_from == ReadFrom::Replica => usize::MAX,
            _ => shard.master,
        }
    };
    if let [only] = plan.parts.as_slice() {
        let server = match u16::try_from(only.server) {
            Ok(slot) => route_slot(snapshot, slot).map(|master| match server_of(only.server) {
                usize::MAX => master,
                chosen => chosen,
            }),
            Err(_) => Err(BackendError::ClusterDown("Hash slot not served".into())),
        };
        return core.forward(snapshot, server, request.frame().clone());
    }
    let parts = plan
        .parts
        .into_iter()
        .map(|p| (server_of(p.server), p.frame))
        .collect();
    core.forward_split(snapshot, parts, Box::new(plan.merge));
}

/// The master of `slot`, or why there is none.
fn route_slot(snapshot: &PoolSnapshot, slot: u16) -> Result<usize, BackendError> {
    let table = snapshot
        .router
        .slot_table()
        .ok_or(BackendError::ConnectionRefused)?;
    match table.shard(slot) {
        Some(shard) => Ok(shard.master),
        None if table.is_empty() => Err(route_error(snapshot, b"", RouteError::NoSlotMap)),
        None => Err(route_error(snapshot, b"", RouteError::SlotNotServed)),
    }
}

/// True when argument `i` is one of the key positions in `keys`.
fn is_key_position(keys: KeyRanges, i: usize) -> bool {
    keys.0
        .iter()
        .any(|r| i >= r.first && i < r.end && (i - r.first) % r.step.max(1) == 0)
}
