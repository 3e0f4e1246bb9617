//! Commands asked of several servers at once, their replies gathered into one: `PUBSUB`,
//! `DBSIZE`, `KEYS`, `RANDOMKEY`, `INFO`, `FLUSHDB`/`FLUSHALL`, `SCRIPT LOAD|EXISTS|FLUSH`, and `SCAN`,
//! whose cursor names the server it continues on. The merging itself is pure
//! (`proto::redis::fanout`, `proto::redis::pubsub`); this module picks the servers and
//! reserves the client's one slot.

use bytes::Bytes;

use super::error::BackendError;
use super::pool::PoolSnapshot;
use super::session::{Core, Merger};
use crate::proto::redis::dispatch;
use crate::proto::redis::fanout::{self, Fanout, ScanCursor};
use crate::proto::redis::info;
use crate::proto::redis::request::Request;

/// How the gathered replies (one per part, in part order) become the client's reply.
type MergeFn = Box<dyn Fn(&[&[u8]]) -> Result<Vec<u8>, String> + Send>;

/// The replies of every part of a fanned-out request, merged once all are in.
struct Gathered {
    replies: Vec<Option<Result<Bytes, String>>>,
    merge: MergeFn,
}

impl Merger for Gathered {
    fn accept(&mut self, part: usize, reply: Result<Bytes, String>) -> bool {
        if let Some(slot) = self.replies.get_mut(part) {
            *slot = Some(reply);
        }
        self.is_complete()
    }
    fn is_complete(&self) -> bool {
        self.replies.iter().all(Option::is_some)
    }
    fn finish(&self) -> Bytes {
        let mut frames = Vec::with_capacity(self.replies.len());
        for reply in self.replies.iter().flatten() {
            match reply {
                Ok(frame) => frames.push(&frame[..]),
                Err(text) => return Bytes::from(dispatch::error_reply(text)),
            }
        }
        match (self.merge)(&frames) {
            Ok(reply) => Bytes::from(reply),
            Err(text) => Bytes::from(dispatch::error_reply(&text)),
        }
    }
    fn is_proxy_error(&self) -> bool {
        self.replies.iter().flatten().any(Result::is_err)
    }
}

/// The servers that hold the pool's data, in a stable order: every server of a ring or
/// Sentinel pool, each master of a cluster pool.
pub fn primaries(snapshot: &PoolSnapshot) -> Vec<usize> {
    match snapshot.router.slot_table() {
        Some(table) => table.masters(),
        None => (0..snapshot.servers.len()).collect(),
    }
}

/// Sends `frames` (server, request) as the parts of one client request, merged by `merge`.
pub fn gather(
    core: &mut Core,
    snapshot: &PoolSnapshot,
    parts: Vec<(usize, Bytes)>,
    merge: MergeFn,
) {
    if parts.is_empty() {
        return core.push_error(&BackendError::ConnectionRefused);
    }
    let merger = Gathered {
        replies: vec![None; parts.len()],
        merge,
    };
    core.forward_split(snapshot, parts, Box::new(merger));
}

/// `request` sent whole to every primary, the replies merged as `kind` says.
pub fn everywhere(core: &mut Core, snapshot: &PoolSnapshot, request: &Request, kind: Fanout) {
    let parts = primaries(snapshot)
        .into_iter()
        .map(|server| (server, request.frame().clone()))
        .collect();
    let pick = pick_seed(core);
    let merge =
        move |replies: &[&[u8]]| fanout::merge(kind, replies, pick).map_err(|err| err.to_string());
    gather(core, snapshot, parts, Box::new(merge));
}

/// `SCAN cursor …`: on the server walnut's cursor names, with that server's own cursor; the
/// reply's cursor names the next position (the same server, the next one, or `0`: done).
pub fn scan(core: &mut Core, snapshot: &PoolSnapshot, request: &Request) {
    let servers = primaries(snapshot);
    let count = servers.len();
    let cursor = request.arg(1).unwrap_or_default();
    let Some(at) = ScanCursor::parse(cursor, count) else {
        return core.push_ready(Bytes::from_static(fanout::INVALID_CURSOR.as_bytes()));
    };
    let Some(&server) = servers.get(at.server) else {
        return core.push_error(&BackendError::ConnectionRefused);
    };
    let frame = Bytes::from(fanout::scan_request(request, at));
    let merge = move |replies: &[&[u8]]| {
        let reply = replies.first().copied().unwrap_or_default();
        fanout::scan_reply(reply, at, count).map_err(|err| err.to_string())
    };
    gather(core, snapshot, vec![(server, frame)], Box::new(merge));
}

/// `INFO [section …]`: `INFO` of every primary, merged with walnut's own sections.
pub fn info(core: &mut Core, snapshot: &PoolSnapshot, request: &Request) {
    let sections = info::Sections::parse(request.args().skip(1));
    let stats = core.pool_stats();
    let config = &snapshot.config;
    let own = info::Own {
        walnut_version: env!("CARGO_PKG_VERSION"),
        mode: if config.redis_cluster {
            "cluster"
        } else {
            "standalone"
        },
        process_id: std::process::id(),
        tcp_port: config
            .listen_text
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or(0),
        connected_clients: stats.client_connections.get(),
        forward_errors: stats.forward_error.get(),
        fragments: stats.fragments.get(),
    };
    let frame = Bytes::from_static(b"*1\r\n$4\r\nINFO\r\n");
    let parts = primaries(snapshot)
        .into_iter()
        .map(|server| (server, frame.clone()))
        .collect();
    let merge = move |replies: &[&[u8]]| {
        info::merge(&own, &sections, replies).map_err(|err| err.to_string())
    };
    gather(core, snapshot, parts, Box::new(merge));
}

/// A number to pick a random server's reply by (`RANDOMKEY`): the clock's nanoseconds mixed
/// with the client's id, good enough to spread picks, not for anything secret.
fn pick_seed(core: &Core) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ core.client_id().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as usize
}
