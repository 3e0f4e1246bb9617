//! One backend connection: a task that owns the socket, pipelines the requests of many
//! clients onto it and hands each reply back to the client that asked, strictly FIFO.
//!
//! The connection is made lazily, on the first request (or at start with `preconnect`), and
//! again after any failure; the hostname is resolved on every connect. A failure fails every
//! request already taken from the queue; requests still queued wait for the next connection.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::error::BackendError;
use super::stream::Stream;
use crate::config::ServerAddr;
use crate::proto::redis::reply::{ReplyDecoder, ReplyKind};

/// Requests taken off the queue and not yet answered, per connection; beyond this the
/// connection stops taking more, and the queue holds them.
const MAX_IN_FLIGHT: usize = 16 * 1024;
/// Bytes gathered before a write is forced even if more requests are queued.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Where a reply goes: the client's reply channel and the request's place in its order.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub tx: mpsc::UnboundedSender<ClientReply>,
    pub seq: u64,
    /// The fragment number within a split request (0 for a whole request).
    pub part: u32,
}

/// A reply, or the reason there is none, for one request or fragment.
#[derive(Debug)]
pub struct ClientReply {
    pub seq: u64,
    pub part: u32,
    pub result: Result<Bytes, BackendError>,
}

/// One request for a backend: the exact bytes to send, and where its reply goes.
#[derive(Debug)]
pub struct BackendRequest {
    pub frame: Bytes,
    pub reply_to: ReplyTo,
}

impl BackendRequest {
    fn fail(self, err: BackendError) {
        self.reply_to.deliver(Err(err));
    }
}

impl ReplyTo {
    fn deliver(self, result: Result<Bytes, BackendError>) {
        // A client that has gone away no longer wants its reply: dropping it is correct.
        let _ = self.tx.send(ClientReply {
            seq: self.seq,
            part: self.part,
            result,
        });
    }
}

/// What a backend connection needs to know about its server.
#[derive(Debug)]
pub struct ServerInfo {
    pub pool_name: String,
    /// The twemproxy name (stats key, ketama identity).
    pub name: String,
    /// The server string without its alias, for log lines.
    pub pname: String,
    pub addr: ServerAddr,
    /// Commands sent first on every new connection (AUTH, then SELECT), replies swallowed.
    pub handshake: Vec<(&'static str, Bytes)>,
}

/// An entry of the in-flight queue: a client waiting, or a handshake reply to swallow.
enum InFlight {
    Client(ReplyTo),
    Handshake(&'static str),
}

/// Starts a connection task and returns the queue that feeds it.
pub fn spawn_connection(
    info: Arc<ServerInfo>,
    preconnect: bool,
) -> mpsc::UnboundedSender<BackendRequest> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(connection_loop(info, rx, preconnect));
    tx
}

async fn connect(addr: &ServerAddr) -> Result<Stream, BackendError> {
    match addr {
        ServerAddr::Tcp { host, port } => {
            let addrs = match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addrs) => addrs.collect::<Vec<_>>(),
                Err(_) => return Err(BackendError::HostDown),
            };
            let Some(first) = addrs.first() else {
                return Err(BackendError::HostDown);
            };
            let stream = TcpStream::connect(first)
                .await
                .map_err(|e| BackendError::from_io(&e))?;
            let _ = stream.set_nodelay(true);
            Ok(Stream::Tcp(stream))
        }
        ServerAddr::Unix { path } => UnixStream::connect(path)
            .await
            .map(Stream::Unix)
            .map_err(|e| BackendError::from_io(&e)),
    }
}

async fn connection_loop(
    info: Arc<ServerInfo>,
    mut queue: mpsc::UnboundedReceiver<BackendRequest>,
    preconnect: bool,
) {
    let mut first = None;
    if !preconnect {
        first = match queue.recv().await {
            Some(req) => Some(req),
            None => return,
        };
    }
    loop {
        match connect(&info.addr).await {
            Ok(stream) => {
                let err = serve(stream, &info, &mut queue, first.take()).await;
                match err {
                    None => return,
                    Some(err) => {
                        debug!(pool = %info.pool_name, server = %info.name, "server connection closed: {err}")
                    }
                }
            }
            Err(err) => {
                if first.is_none() && preconnect {
                    warn!("connect to server '{}' failed, ignored: {err}", info.pname);
                }
                // Everything queued while connecting was meant for this connection: fail it.
                if let Some(req) = first.take() {
                    req.fail(err.clone());
                }
                while let Ok(req) = queue.try_recv() {
                    req.fail(err.clone());
                }
            }
        }
        first = match queue.recv().await {
            Some(req) => Some(req),
            None => return,
        };
    }
}

/// Serves one connected socket until it fails (`Some(err)`) or the queue closes (`None`).
async fn serve(
    mut stream: Stream,
    info: &ServerInfo,
    queue: &mut mpsc::UnboundedReceiver<BackendRequest>,
    first: Option<BackendRequest>,
) -> Option<BackendError> {
    let (mut reader, mut writer) = stream.split();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut decoder = ReplyDecoder::default();
    let mut queue_open = true;

    for (label, frame) in &info.handshake {
        out.extend_from_slice(frame);
        in_flight.push_back(InFlight::Handshake(label));
    }
    if let Some(req) = first {
        out.extend_from_slice(&req.frame);
        in_flight.push_back(InFlight::Client(req.reply_to));
    }

    let failure = loop {
        if !queue_open && in_flight.is_empty() && out.is_empty() {
            return None;
        }
        tokio::select! {
            biased;
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) => break BackendError::ConnectionReset,
                    Err(e) => break BackendError::from_io(&e),
                    Ok(_) => {}
                }
                if let Err(err) = dispatch_replies(&mut decoder, &mut input, &mut in_flight, info) {
                    break err;
                }
                if input.capacity() - input.len() < READ_CHUNK / 4 {
                    input.reserve(READ_CHUNK);
                }
            }
            written = writer.write_buf(&mut out), if !out.is_empty() => {
                if let Err(e) = written {
                    break BackendError::from_io(&e);
                }
            }
            next = queue.recv(), if queue_open && in_flight.len() < MAX_IN_FLIGHT && out.len() < MAX_BATCH_BYTES => {
                match next {
                    None => queue_open = false,
                    Some(req) => {
                        out.extend_from_slice(&req.frame);
                        in_flight.push_back(InFlight::Client(req.reply_to));
                        // Take everything already queued so it leaves in one write.
                        while in_flight.len() < MAX_IN_FLIGHT && out.len() < MAX_BATCH_BYTES {
                            let Ok(req) = queue.try_recv() else { break };
                            out.extend_from_slice(&req.frame);
                            in_flight.push_back(InFlight::Client(req.reply_to));
                        }
                    }
                }
            }
        }
    };
    for waiting in in_flight {
        if let InFlight::Client(reply_to) = waiting {
            reply_to.deliver(Err(failure.clone()));
        }
    }
    Some(failure)
}

/// Hands every complete reply in `input` to the request at the head of `in_flight`.
fn dispatch_replies(
    decoder: &mut ReplyDecoder,
    input: &mut BytesMut,
    in_flight: &mut VecDeque<InFlight>,
    info: &ServerInfo,
) -> Result<(), BackendError> {
    loop {
        let reply = match decoder.decode(input) {
            Ok(Some(reply)) => reply,
            Ok(None) => return Ok(()),
            Err(err) => {
                warn!(pool = %info.pool_name, server = %info.name, "unparsable reply from server: {err}");
                return Err(BackendError::InvalidReply);
            }
        };
        match in_flight.pop_front() {
            Some(InFlight::Client(reply_to)) => reply_to.deliver(Ok(reply.frame)),
            Some(InFlight::Handshake(what)) => {
                if reply.kind == ReplyKind::Error {
                    warn!(
                        "{what} failed on {} | {}: {}",
                        info.pool_name,
                        info.name,
                        String::from_utf8_lossy(reply.frame.trim_ascii_end())
                    );
                }
            }
            None => {
                warn!(pool = %info.pool_name, server = %info.name, "stray reply from server with no request waiting");
                return Err(BackendError::InvalidReply);
            }
        }
    }
}
