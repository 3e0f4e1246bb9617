//! One Redis client connection: read a batch, decode every complete request, route each,
//! and write the replies back in request order in one coalesced write.
//!
//! Every request takes a numbered slot in `slots` when it is read; a reply fills its slot,
//! and only the ready slots at the front are written. So replies can never be reordered
//! or cross, however the backends interleave.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tracing::debug;

use super::backend::{BackendRequest, ClientReply, ReplyTo};
use super::error::BackendError;
use super::pool::{Pool, PoolSnapshot, Server};
use super::stream::Stream;
use crate::config::EjectPolicy;
use crate::proto::redis::dispatch::{self, Dispatch};
use crate::proto::redis::request::{Limits, Request, RequestDecoder};
use crate::proto::redis::split::{self, Merge};

/// Requests in flight per client before walnut stops decoding and reading from it.
const MAX_PENDING_REQUESTS: usize = 4096;
/// Reply bytes waiting to be written before walnut stops decoding and reading from the client.
const MAX_PENDING_OUTPUT: usize = 32 * 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// A request's place in the reply order.
#[derive(Debug)]
enum Slot {
    Waiting,
    /// A split request waiting for some of its parts.
    Split(Box<Merge>),
    Ready(Bytes),
}

/// Why the session stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The client half-closed: answer what is pending, then close.
    Eof,
    /// QUIT: answer what came before it, then close.
    Quit,
    /// Malformed framing: answer what came before, then the error, then close.
    ProtocolError,
}

struct Session {
    id: u64,
    pool: Arc<Pool>,
    decoder: RequestDecoder,
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]`.
    front_seq: u64,
    reply_tx: mpsc::UnboundedSender<ClientReply>,
    authenticated: bool,
    /// Bytes of replies in ready slots, not yet moved to the output buffer.
    ready_bytes: usize,
    /// When requests read in the current batch time out (now + the pool's `timeout`).
    batch_deadline: Option<Instant>,
    /// Set by `CLIENT SETNAME`, returned by `CLIENT GETNAME`.
    client_name: Option<Bytes>,
    closing: Option<Closing>,
}

/// Serves one client until it closes or fails.
pub async fn serve_redis_client(mut stream: Stream, pool: Arc<Pool>, id: u64) {
    let (reply_tx, mut replies) = mpsc::unbounded_channel();
    let needs_auth = pool.current.load().config.redis_auth.is_some();
    let mut session = Session {
        id,
        pool,
        decoder: RequestDecoder::new(Limits::default()),
        slots: VecDeque::new(),
        front_seq: 0,
        reply_tx,
        authenticated: !needs_auth,
        ready_bytes: 0,
        batch_deadline: None,
        client_name: None,
        closing: None,
    };
    let (mut reader, mut writer) = stream.split();
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut out = BytesMut::with_capacity(READ_CHUNK);

    loop {
        session.move_ready_replies(&mut out);
        // Requests left undecoded while the client was over its bounds.
        if !input.is_empty() && session.closing.is_none() && session.has_room(out.len()) {
            session.handle_input(&mut input, out.len());
            session.move_ready_replies(&mut out);
        }
        if session.closing.is_some() && session.slots.is_empty() && out.is_empty() {
            break;
        }
        // A client that does not read its replies is not read from either.
        let may_read = session.closing.is_none() && session.has_room(out.len());
        tokio::select! {
            biased;
            Some(reply) = replies.recv() => {
                session.accept_reply(reply);
                while let Ok(reply) = replies.try_recv() {
                    session.accept_reply(reply);
                }
            }
            written = writer.write_buf(&mut out), if !out.is_empty() => {
                if let Err(e) = written {
                    debug!(client = id, "client write failed: {e}");
                    break;
                }
            }
            read = reader.read_buf(&mut input), if may_read => {
                match read {
                    Ok(0) => session.closing = Some(Closing::Eof),
                    Ok(_) => session.handle_input(&mut input, out.len()),
                    Err(e) => {
                        debug!(client = id, "client read failed: {e}");
                        break;
                    }
                }
                if input.capacity() - input.len() < READ_CHUNK / 4 {
                    input.reserve(READ_CHUNK);
                }
            }
        }
    }
    let _ = writer.shutdown().await;
}

impl Session {
    /// True while the client is within its bounds: requests in flight and reply bytes
    /// waiting to be written.
    fn has_room(&self, unwritten: usize) -> bool {
        self.slots.len() < MAX_PENDING_REQUESTS && unwritten + self.ready_bytes < MAX_PENDING_OUTPUT
    }

    /// Decodes and routes the complete requests in `input`, while the client has room.
    fn handle_input(&mut self, input: &mut BytesMut, unwritten: usize) {
        // One snapshot for the whole batch: it stays consistent even if a reload swaps it.
        let snapshot = self.pool.current.load_full();
        self.batch_deadline = snapshot
            .config
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        while self.closing.is_none() && self.has_room(unwritten) {
            match self.decoder.decode(input) {
                Ok(Some(request)) => self.handle_request(&snapshot, request),
                Ok(None) => break,
                Err(err) => {
                    let reply = dispatch::error_reply(&err.to_string());
                    self.push_ready(Bytes::from(reply));
                    self.closing = Some(Closing::ProtocolError);
                }
            }
        }
        if self.closing.is_some() {
            // Whatever follows QUIT or a framing error in the same read is discarded.
            input.clear();
        }
    }

    fn handle_request(&mut self, snapshot: &PoolSnapshot, request: Request) {
        match dispatch::dispatch(&request) {
            Dispatch::Quit => self.closing = Some(Closing::Quit),
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
                self.push_ready(Bytes::from_static(reply));
            }
            // Errors about the request itself come before authentication, as in Redis.
            Dispatch::Reply(reply) if reply.first() == Some(&b'-') => {
                self.push_ready(Bytes::from(reply))
            }
            _ if !self.authenticated => self.push_ready(Bytes::from_static(dispatch::NOAUTH)),
            Dispatch::Reply(reply) => self.push_ready(Bytes::from(reply)),
            Dispatch::Forward { key } => {
                let server = snapshot.router.server_for_key(key);
                self.forward(snapshot, server, request.frame().clone());
            }
            Dispatch::ForwardSameServer { keys } => {
                // One walk over the arguments: `Request::arg(i)` walks from the start for i >= 3.
                let mut servers = request
                    .args()
                    .enumerate()
                    .filter(|&(i, _)| is_key_position(keys, i))
                    .map(|(_, key)| snapshot.router.server_for_key(key));
                let target = servers.next().flatten();
                if servers.all(|s| s == target) {
                    self.forward(snapshot, target, request.frame().clone());
                } else {
                    self.push_ready(Bytes::from(dispatch::error_reply(dispatch::CROSS_SERVER)));
                }
            }
            Dispatch::Split { kind } => self.split(snapshot, kind, &request),
            Dispatch::SetClientName { name } => {
                // An empty name clears it, as in Redis.
                self.client_name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                self.push_ready(Bytes::from_static(dispatch::OK));
            }
            Dispatch::GetClientName => {
                let reply = match &self.client_name {
                    Some(name) => dispatch::bulk(name),
                    None => b"$-1\r\n".to_vec(),
                };
                self.push_ready(Bytes::from(reply));
            }
        }
    }

    /// Sends `frame` to `server` (all ejected when `None`) and reserves its reply slot.
    fn forward(&mut self, snapshot: &PoolSnapshot, server: Option<usize>, frame: Bytes) {
        let Some(server) = server.and_then(|i| snapshot.servers.get(i)) else {
            self.push_ready(error_bytes(&BackendError::ConnectionRefused));
            return;
        };
        if let Some(err) = fail_fast(snapshot, server) {
            self.push_ready(error_bytes(&err));
            return;
        }
        let seq = self.next_seq();
        let request = BackendRequest {
            frame,
            reply_to: ReplyTo {
                tx: self.reply_tx.clone(),
                seq,
                part: 0,
            },
            deadline: self.batch_deadline,
        };
        match server.connection_for(self.id).send(request) {
            Ok(()) => self.slots.push_back(Slot::Waiting),
            Err(_) => self.push_ready(error_bytes(&BackendError::ConnectionRefused)),
        }
    }

    /// Sends one part per server and reserves a slot that merges their replies. A request
    /// whose keys all live on one server is forwarded unchanged: the reply is the same.
    fn split(&mut self, snapshot: &PoolSnapshot, kind: dispatch::SplitKind, request: &Request) {
        let plan = match split::plan(kind, request, |key| snapshot.router.server_for_key(key)) {
            Ok(plan) => plan,
            Err(split::NoServer) => {
                self.push_ready(error_bytes(&BackendError::ConnectionRefused));
                return;
            }
        };
        if let [only] = plan.parts.as_slice() {
            self.forward(snapshot, Some(only.server), request.frame().clone());
            return;
        }
        let seq = self.next_seq();
        let mut merge = plan.merge;
        for (index, part) in plan.parts.into_iter().enumerate() {
            let reply_to = ReplyTo {
                tx: self.reply_tx.clone(),
                seq,
                part: index as u32,
            };
            let Some(server) = snapshot.servers.get(part.server) else {
                merge.accept(index, Err(BackendError::ConnectionRefused.to_string()));
                continue;
            };
            if let Some(err) = fail_fast(snapshot, server) {
                merge.accept(index, Err(err.to_string()));
                continue;
            }
            let request = BackendRequest {
                frame: part.frame,
                reply_to,
                deadline: self.batch_deadline,
            };
            if server.connection_for(self.id).send(request).is_err() {
                merge.accept(index, Err(BackendError::ConnectionRefused.to_string()));
            }
        }
        if merge.is_complete() {
            let reply = merge.finish();
            self.push_ready(reply);
        } else {
            self.slots.push_back(Slot::Split(Box::new(merge)));
        }
    }

    /// The sequence number the next slot will get.
    fn next_seq(&self) -> u64 {
        self.front_seq + self.slots.len() as u64
    }

    fn push_ready(&mut self, reply: Bytes) {
        self.ready_bytes += reply.len();
        self.slots.push_back(Slot::Ready(reply));
    }

    fn accept_reply(&mut self, reply: ClientReply) {
        let Some(index) = reply.seq.checked_sub(self.front_seq) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        let ready = match slot {
            Slot::Waiting => match reply.result {
                Ok(frame) => frame,
                Err(err) => error_bytes(&err),
            },
            Slot::Split(merge) => {
                if !merge.accept(reply.part as usize, reply.result.map_err(|e| e.to_string())) {
                    return;
                }
                merge.finish()
            }
            // A reply for a slot that already has one: never overwrite it.
            Slot::Ready(_) => return,
        };
        self.ready_bytes += ready.len();
        *slot = Slot::Ready(ready);
    }

    /// Moves the ready replies at the front of the order into the output buffer.
    fn move_ready_replies(&mut self, out: &mut BytesMut) {
        while let Some(Slot::Ready(_)) = self.slots.front() {
            if let Some(Slot::Ready(reply)) = self.slots.pop_front() {
                self.ready_bytes -= reply.len();
                out.extend_from_slice(&reply);
            }
            self.front_seq += 1;
        }
    }
}

/// With `eject_policy: fail_fast`, an ejected server's requests fail at once.
fn fail_fast(snapshot: &PoolSnapshot, server: &Server) -> Option<BackendError> {
    (snapshot.config.eject_policy == EjectPolicy::FailFast && server.info.health.is_ejected())
        .then(|| BackendError::Ejected(server.info.name.clone()))
}

/// True when argument `i` is one of the key positions in `keys`.
fn is_key_position(keys: dispatch::KeyRanges, i: usize) -> bool {
    keys.0
        .iter()
        .any(|r| i >= r.first && i < r.end && (i - r.first) % r.step.max(1) == 0)
}

fn error_bytes(err: &BackendError) -> Bytes {
    Bytes::from(dispatch::error_reply(&err.to_string()))
}
