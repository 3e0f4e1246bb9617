//! The Redis side of a client session: decode RESP requests, apply the dispatch decision
//! (forward, split, answer locally), and keep the connection's AUTH and name state.

use bytes::{Bytes, BytesMut};

use super::error::BackendError;
use super::pool::PoolSnapshot;
use super::session::{route, Closing, Core, Merger, Protocol};
use crate::proto::redis::command;
use crate::proto::redis::dispatch::{self, Dispatch, KeyRanges, SplitKind};
use crate::proto::redis::request::{Limits, Request, RequestDecoder};
use crate::proto::redis::split::{self, Merge};

/// Per-connection Redis state.
pub struct RedisProtocol {
    decoder: RequestDecoder,
    authenticated: bool,
    /// Set by `CLIENT SETNAME`, returned by `CLIENT GETNAME`.
    client_name: Option<Bytes>,
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
            authenticated: snapshot.config.redis_auth.is_none(),
            client_name: None,
        }
    }

    fn handle_input(&mut self, core: &mut Core, snapshot: &PoolSnapshot, input: &mut BytesMut) {
        while core.closing.is_none() && core.has_room() {
            match self.decoder.decode(input) {
                Ok(Some(request)) => self.handle_request(core, snapshot, request),
                Ok(None) => break,
                Err(err) => {
                    core.push_ready(Bytes::from(dispatch::error_reply(&err.to_string())));
                    core.closing = Some(Closing::ProtocolError);
                }
            }
        }
    }

    fn error_reply(err: &BackendError) -> Bytes {
        Bytes::from(dispatch::error_reply(&err.to_string()))
    }

    fn count_requests(&mut self, input: &mut BytesMut) -> usize {
        std::iter::from_fn(|| self.decoder.decode(input).ok().flatten()).count()
    }
}

impl RedisProtocol {
    fn handle_request(&mut self, core: &mut Core, snapshot: &PoolSnapshot, request: Request) {
        let spec = command::lookup(request.arg(0).unwrap_or_default());
        core.count_command_spec(spec);
        match dispatch::dispatch_as(&request, spec) {
            Dispatch::Quit => core.closing = Some(Closing::Quit),
            Dispatch::Auth { password } => {
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
            // Errors about the request itself come before authentication, as in Redis.
            Dispatch::Reply(reply) if reply.first() == Some(&b'-') => {
                core.push_ready(Bytes::from(reply))
            }
            _ if !self.authenticated => core.push_ready(Bytes::from_static(dispatch::NOAUTH)),
            Dispatch::Reply(reply) => core.push_ready(Bytes::from(reply)),
            Dispatch::Forward { key } => {
                core.forward(snapshot, route(snapshot, key), request.frame().clone());
            }
            Dispatch::ForwardSameServer { keys } => {
                forward_same_server(core, snapshot, &request, keys)
            }
            Dispatch::Split { kind } => split(core, snapshot, kind, &request),
            Dispatch::SetClientName { name } => {
                // An empty name clears it, as in Redis.
                self.client_name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                core.push_ready(Bytes::from_static(dispatch::OK));
            }
            Dispatch::GetClientName => {
                let reply = match &self.client_name {
                    Some(name) => dispatch::bulk(name),
                    None => b"$-1\r\n".to_vec(),
                };
                core.push_ready(Bytes::from(reply));
            }
        }
    }
}

/// Forwards a multi-key request whole when every key maps to one server.
fn forward_same_server(
    core: &mut Core,
    snapshot: &PoolSnapshot,
    request: &Request,
    keys: KeyRanges,
) {
    // One walk over the arguments: `Request::arg(i)` walks from the start for i >= 3.
    let mut servers = request
        .args()
        .enumerate()
        .filter(|&(i, _)| is_key_position(keys, i))
        .map(|(_, key)| route(snapshot, key));
    let Some(target) = servers.next() else {
        return core.push_error(&BackendError::ConnectionRefused);
    };
    let target = match target {
        Ok(target) => target,
        Err(err) => return core.push_error(&err),
    };
    for server in servers {
        match server {
            Ok(server) if server == target => {}
            Ok(_) => {
                return core.push_ready(Bytes::from(dispatch::error_reply(dispatch::CROSS_SERVER)))
            }
            Err(err) => return core.push_error(&err),
        }
    }
    core.forward(snapshot, Ok(target), request.frame().clone());
}

/// Sends one part per server and merges their replies. A request whose keys all live on
/// one server is forwarded unchanged: the reply is the same.
fn split(core: &mut Core, snapshot: &PoolSnapshot, kind: SplitKind, request: &Request) {
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

/// True when argument `i` is one of the key positions in `keys`.
fn is_key_position(keys: KeyRanges, i: usize) -> bool {
    keys.0
        .iter()
        .any(|r| i >= r.first && i < r.end && (i - r.first) % r.step.max(1) == 0)
}
