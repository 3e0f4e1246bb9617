//! The memcached side of a client session: decode text-protocol requests, answer malformed
//! ones as memcached would, and forward, split or answer the rest.
//!
//! - `noreply` requests go to their server without `noreply`, and walnut drops the reply:
//!   every request a server gets has exactly one reply, so replies always match in order.
//! - Meta commands in quiet mode (`q`) go with a meta no-op (`mn`) behind them; what the
//!   server says before its `MN` is the reply (often nothing).
//! - The client's own `mn` is answered here, in order.

use bytes::{Bytes, BytesMut};

use super::error::BackendError;
use super::pool::PoolSnapshot;
use super::session::{route, Closing, Core, Expect, Merger, Protocol};
use crate::proto::memcache::merge::{self, GetMerge};
use crate::proto::memcache::request::{Command, Decoded, Fatal, Request, RequestDecoder};

const META_NOOP: &[u8] = b"mn\r\n";
const META_NOOP_REPLY: &[u8] = b"MN\r\n";
/// twemproxy sends `version` to the server of this key.
const VERSION_KEY: &[u8] = b"placeholder";

/// Per-connection memcached state.
pub struct MemcacheProtocol {
    decoder: RequestDecoder,
}

impl Merger for GetMerge {
    fn accept(&mut self, part: usize, reply: Result<Bytes, String>) -> bool {
        GetMerge::accept(self, part, reply)
    }
    fn is_complete(&self) -> bool {
        GetMerge::is_complete(self)
    }
    fn finish(&self) -> Bytes {
        GetMerge::finish(self)
    }
    fn is_proxy_error(&self) -> bool {
        GetMerge::is_proxy_error(self)
    }
}

impl Protocol for MemcacheProtocol {
    fn new(_snapshot: &PoolSnapshot) -> Self {
        MemcacheProtocol {
            decoder: RequestDecoder::default(),
        }
    }

    fn handle_input(
        &mut self,
        core: &mut Core,
        snapshot: &std::sync::Arc<PoolSnapshot>,
        input: &mut BytesMut,
    ) {
        while core.decodes() && core.has_room() {
            match self.decoder.decode(input) {
                Ok(Some(Decoded::Request(request))) => handle_request(core, snapshot, request),
                Ok(Some(Decoded::Answer(answer))) => {
                    if !answer.is_empty() {
                        core.push_ready(answer);
                    }
                }
                Ok(None) => break,
                Err(Fatal(answer)) => {
                    core.push_ready(Bytes::from_static(answer));
                    core.closing = Some(Closing::ProtocolError);
                }
            }
        }
    }

    fn error_reply(err: &BackendError) -> Bytes {
        Bytes::from(format!("SERVER_ERROR {err}\r\n"))
    }

    fn count_requests(&mut self, input: &mut BytesMut) -> usize {
        std::iter::from_fn(|| self.decoder.decode(input).ok().flatten()).count()
    }
}

fn handle_request(core: &mut Core, snapshot: &PoolSnapshot, request: Request) {
    let command = request.command();
    core.count_memcache_command(command);
    match command {
        Command::Quit => core.closing = Some(Closing::Quit),
        Command::MetaNoop => core.push_ready(Bytes::from_static(META_NOOP_REPLY)),
        Command::Version => {
            // A pool whose keys name their servers has no server for `placeholder`: ask the
            // first one.
            let server = match route(snapshot, VERSION_KEY) {
                Err(BackendError::UnknownServerName { .. }) => Ok(0),
                other => other,
            };
            core.forward(snapshot, server, request.frame().clone());
        }
        Command::Get | Command::Gets | Command::Gat | Command::Gats => {
            retrieve(core, snapshot, &request)
        }
        _ if request.noreply() => core.forward_expecting(
            snapshot,
            route(snapshot, request.key()),
            request.frame_without_noreply(),
            Expect::Dropped,
        ),
        _ if request.quiet() => {
            let mut frame = BytesMut::with_capacity(request.frame().len() + META_NOOP.len());
            frame.extend_from_slice(request.frame());
            frame.extend_from_slice(META_NOOP);
            core.forward_expecting(
                snapshot,
                route(snapshot, &request.routing_key()),
                frame.freeze(),
                Expect::UntilNoop,
            );
        }
        _ => core.forward(
            snapshot,
            route(snapshot, &request.routing_key()),
            request.frame().clone(),
        ),
    }
}

/// A single-key retrieval, or one whose keys all live on one server, is forwarded byte for
/// byte; the others are split per server and merged in request order.
fn retrieve(core: &mut Core, snapshot: &PoolSnapshot, request: &Request) {
    let mut keys = request.keys();
    let first = keys.next().unwrap_or_default();
    if keys.next().is_none() {
        return core.forward(snapshot, route(snapshot, first), request.frame().clone());
    }
    let plan = match merge::plan(request, |key| route(snapshot, key)) {
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
