//! Lock-free counters, gauges and timestamps, and the per-pool and per-server sets of them.
//!
//! Every figure is one atomic updated with `Relaxed` ordering: the data path pays one
//! uncontended atomic add per update and never takes a lock. `Relaxed` is enough because no
//! figure is used to synchronise anything; a reader only needs each value to be a value that
//! really was written, not a consistent cut across figures (twemproxy's own aggregation is not
//! one either).
//!
//! Why plain atomics rather than per-thread shards: each server figure is written mostly by
//! that server's backend task, and pool figures change once per connection, so these lines are
//! rarely contended. The two figures every client task updates on every request (the pool's
//! request latency histogram and its command counts) are striped instead, see
//! [`super::histogram`] and [`super::commands`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::commands::CommandCounts;
use super::histogram::LatencyHistogram;

/// A monotonic counter (`"k":<n>` in the JSON, `…_total` in Prometheus).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero (usable in a `static`).
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Adds `n` (e.g. a byte count). Wraps at 2^64, which no real proxy reaches.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (connections, queue depths).
///
/// Stored signed and read clamped at zero: when a decrement on one thread is observed before
/// the matching increment on another, the stored value briefly dips below zero and comes back
/// when the increment lands. Saturating at zero on write instead would lose that decrement and
/// leave the gauge one too high for ever. A reader never sees a negative (or a wrapped 2^64)
/// value.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }

    /// Adds `n` (e.g. bytes entering a queue). Values above `i64::MAX` are clamped.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(clamp_i64(n), Relaxed);
    }

    /// Subtracts `n` (e.g. bytes leaving a queue).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(clamp_i64(n), Relaxed);
    }

    /// Overwrites the value (for a figure computed elsewhere).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(clamp_i64(v), Relaxed);
    }

    /// The current value, never below zero.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed).max(0) as u64
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A point in time in microseconds since the Unix epoch; 0 means never.
#[derive(Debug, Default)]
pub struct Timestamp(AtomicU64);

impl Timestamp {
    /// Records now.
    pub fn set_now(&self) {
        self.set(now_micros());
    }

    /// Records `micros` (µs since the Unix epoch).
    #[inline]
    pub fn set(&self, micros: u64) {
        self.0.store(micros, Relaxed);
    }

    /// µs since the Unix epoch, 0 if never set.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The figures twemproxy keeps per pool (`nc_stats.h`), plus walnut's request latency
/// histogram and per-command counts (Prometheus only).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Clients that closed normally (EOF, or after QUIT).
    pub client_eof: Counter,
    /// Clients closed on an error (protocol error, write error, …).
    pub client_err: Counter,
    /// Clients connected now: `inc()` on accept, `dec()` on close.
    pub client_connections: Gauge,
    /// Times a server of this pool was ejected.
    pub server_ejects: Counter,
    /// Error replies the proxy generated itself (`-ERR Connection refused`, …).
    pub forward_error: Counter,
    /// Fragments created from multi-key requests. twemproxy 0.5.0 never increments it (always
    /// 0); the data path should leave it alone when it wants byte-compatible figures.
    pub fragments: Counter,
    /// walnut: TLS handshakes with clients that succeeded (`tls:` pools).
    pub tls_handshakes: Counter,
    /// walnut: TLS clients closed before their session: a failed or unfinished handshake,
    /// or a client that did not speak TLS.
    pub tls_handshake_failures: Counter,
    /// walnut, `users:` pools: `AUTH` with a wrong user-password pair.
    pub auth_failures: Counter,
    /// walnut, `users:` pools: requests refused by a user's permissions (`-NOPERM`).
    pub acl_denied: Counter,
    /// walnut, Sentinel pools: masters switched to a new address.
    pub sentinel_switches: Counter,
    /// walnut, Sentinel pools: polls no sentinel answered, and subscriptions that ended.
    pub sentinel_errors: Counter,
    /// walnut, Redis Cluster pools: `-MOVED` replies followed.
    pub cluster_moved: Counter,
    /// walnut, Redis Cluster pools: `-ASK` replies followed.
    pub cluster_ask: Counter,
    /// walnut, Redis Cluster pools: `-TRYAGAIN` / `-CLUSTERDOWN` replies retried.
    pub cluster_retries: Counter,
    /// walnut, Redis Cluster pools: slot maps read.
    pub cluster_refreshes: Counter,
    /// walnut, Redis Cluster pools: refreshes that found no node able to answer.
    pub cluster_refresh_failures: Counter,
    /// walnut, Redis Cluster pools: refreshes that changed the slot map or the node set.
    pub cluster_topology_changes: Counter,
    /// From a request's arrival to its reply being written to the client.
    pub request_latency: LatencyHistogram,
    /// Requests by command.
    pub commands: CommandCounts,
}

/// The figures twemproxy keeps per server (`nc_stats.h`), plus walnut's server latency
/// histogram (Prometheus only).
#[derive(Debug, Default)]
pub struct ServerStats {
    /// The server closed a connection (EOF).
    pub server_eof: Counter,
    /// A connection closed on an error other than a timeout (refused, reset, …).
    pub server_err: Counter,
    /// A connection closed because a request timed out.
    pub server_timedout: Counter,
    /// Connections established now: `inc()` when a connect completes, `dec()` on close.
    pub server_connections: Gauge,
    /// When the server was last ejected (µs since the epoch), see [`Timestamp::set_now`].
    pub server_ejected_at: Timestamp,
    /// The address the server is reached at now (a Sentinel switch changes it).
    pub address: arc_swap::ArcSwap<String>,
    /// Requests (or fragments) forwarded; injected AUTH/SELECT are not counted.
    pub requests: Counter,
    /// Bytes of those requests.
    pub request_bytes: Counter,
    /// Responses forwarded to a request; swallowed AUTH/SELECT replies are not counted.
    pub responses: Counter,
    /// Bytes of those responses.
    pub response_bytes: Counter,
    /// Requests queued for this server but not yet written.
    pub in_queue: Gauge,
    /// Bytes of those requests.
    pub in_queue_bytes: Gauge,
    /// Requests written to the server, awaiting their reply.
    pub out_queue: Gauge,
    /// Bytes of those requests.
    pub out_queue_bytes: Gauge,
    /// From writing a request to the server to reading its reply.
    pub latency: LatencyHistogram,
    /// Dedicated connections (blocking commands, transactions, subscribers) open now, idle or in use (Prometheus only).
    pub dedicated_connections: Gauge,
    /// Of those, the idle ones.
    pub dedicated_idle: Gauge,
}

/// A pool's twemproxy figures read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolFigures {
    pub client_eof: u64,
    pub client_err: u64,
    pub client_connections: u64,
    pub server_ejects: u64,
    pub forward_error: u64,
    pub fragments: u64,
}

/// A server's twemproxy figures read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerFigures {
    pub server_eof: u64,
    pub server_err: u64,
    pub server_timedout: u64,
    pub server_connections: u64,
    pub server_ejected_at: u64,
    pub requests: u64,
    pub request_bytes: u64,
    pub responses: u64,
    pub response_bytes: u64,
    pub in_queue: u64,
    pub in_queue_bytes: u64,
    pub out_queue: u64,
    pub out_queue_bytes: u64,
}

impl PoolFigures {
    /// `(json key, value)` in twemproxy's order.
    pub fn entries(&self) -> [(&'static str, u64); 6] {
        [
            ("client_eof", self.client_eof),
            ("client_err", self.client_err),
            ("client_connections", self.client_connections),
            ("server_ejects", self.server_ejects),
            ("forward_error", self.forward_error),
            ("fragments", self.fragments),
        ]
    }
}

impl ServerFigures {
    /// `(json key, value)` in twemproxy's order.
    pub fn entries(&self) -> [(&'static str, u64); 13] {
        [
            ("server_eof", self.server_eof),
            ("server_err", self.server_err),
            ("server_timedout", self.server_timedout),
            ("server_connections", self.server_connections),
            ("server_ejected_at", self.server_ejected_at),
            ("requests", self.requests),
            ("request_bytes", self.request_bytes),
            ("responses", self.responses),
            ("response_bytes", self.response_bytes),
            ("in_queue", self.in_queue),
            ("in_queue_bytes", self.in_queue_bytes),
            ("out_queue", self.out_queue),
            ("out_queue_bytes", self.out_queue_bytes),
        ]
    }
}

impl PoolStats {
    /// Reads every twemproxy figure.
    pub fn figures(&self) -> PoolFigures {
        PoolFigures {
            client_eof: self.client_eof.get(),
            client_err: self.client_err.get(),
            client_connections: self.client_connections.get(),
            server_ejects: self.server_ejects.get(),
            forward_error: self.forward_error.get(),
            fragments: self.fragments.get(),
        }
    }

    /// Counts one request for a command (see [`CommandCounts::count`]).
    #[inline]
    pub fn count_command(&self, name: &[u8]) {
        self.commands.count(name);
    }

    /// Counts one memcached request.
    #[inline]
    pub fn count_memcache_command(&self, command: crate::proto::memcache::request::Command) {
        self.commands
            .count_index(super::commands::memcache_index(command));
    }

    /// Counts one request for a command-table entry already looked up (`None`: unknown).
    #[inline]
    pub fn count_command_spec(&self, spec: Option<&crate::proto::redis::command::CommandSpec>) {
        match spec {
            Some(spec) => self.commands.count_spec(spec),
            None => self.commands.count_index(super::commands::OTHER),
        }
    }
}

impl ServerStats {
    /// Reads every twemproxy figure.
    pub fn figures(&self) -> ServerFigures {
        ServerFigures {
            server_eof: self.server_eof.get(),
            server_err: self.server_err.get(),
            server_timedout: self.server_timedout.get(),
            server_connections: self.server_connections.get(),
            server_ejected_at: self.server_ejected_at.get(),
            requests: self.requests.get(),
            request_bytes: self.request_bytes.get(),
            responses: self.responses.get(),
            response_bytes: self.response_bytes.get(),
            in_queue: self.in_queue.get(),
            in_queue_bytes: self.in_queue_bytes.get(),
            out_queue: self.out_queue.get(),
            out_queue_bytes: self.out_queue_bytes.get(),
        }
    }

    /// A request of `bytes` joins the in-queue (not yet written to the server). It counts as
    /// forwarded (`requests`, `request_bytes`) from here, as in twemproxy's `req_forward`, even
    /// if its connection then fails.
    #[inline]
    pub fn enqueue(&self, bytes: u64) {
        self.in_queue.inc();
        self.in_queue_bytes.add(bytes);
        self.requests.inc();
        self.request_bytes.add(bytes);
    }

    /// A queued request of `bytes` was written to the server: it moves from the in-queue to
    /// the out-queue.
    #[inline]
    pub fn sent(&self, bytes: u64) {
        self.in_queue.dec();
        self.in_queue_bytes.sub(bytes);
        self.out_queue.inc();
        self.out_queue_bytes.add(bytes);
    }

    /// A queued request of `bytes` left the in-queue without being sent (its connection
    /// failed, or its client went away and it was dropped).
    #[inline]
    pub fn unqueued(&self, bytes: u64) {
        self.in_queue.dec();
        self.in_queue_bytes.sub(bytes);
    }

    /// A sent request of `bytes` will get no reply (its connection closed or timed out).
    #[inline]
    pub fn abandoned(&self, bytes: u64) {
        self.out_queue.dec();
        self.out_queue_bytes.sub(bytes);
    }

    /// The reply (`reply_bytes`) to a sent request of `request_bytes` arrived after `latency`.
    #[inline]
    pub fn replied(&self, request_bytes: u64, reply_bytes: u64, latency: Duration) {
        self.out_queue.dec();
        self.out_queue_bytes.sub(request_bytes);
        self.responses.inc();
        self.response_bytes.add(reply_bytes);
        self.latency.observe(latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn assert_send_sync<T: Send + Sync + Default>() {}

    #[test]
    fn stats_are_send_sync_default() {
        assert_send_sync::<PoolStats>();
        assert_send_sync::<ServerStats>();
        assert_send_sync::<Arc<PoolStats>>();
    }

    #[test]
    fn counters_add() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
    }

    #[test]
    fn gauges_never_read_negative() {
        let g = Gauge::default();
        g.dec();
        assert_eq!(g.get(), 0, "a decrement before its increment reads as 0");
        g.inc();
        assert_eq!(g.get(), 0, "and the pair cancels out");
        g.inc();
        assert_eq!(g.get(), 1);
        g.sub(10);
        assert_eq!(g.get(), 0);
        g.add(12);
        assert_eq!(g.get(), 3);
        g.add(u64::MAX);
        assert!(g.get() <= i64::MAX as u64);
        g.set(7);
        assert_eq!(g.get(), 7);
    }

    #[test]
    fn gauges_balance_across_threads() {
        let g = Arc::new(Gauge::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        g.inc();
                        g.add(5);
                        g.sub(5);
                        g.dec();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn timestamps() {
        let t = Timestamp::default();
        assert_eq!(t.get(), 0);
        t.set_now();
        let now = now_micros();
        assert!(t.get() <= now && now - t.get() < 10_000_000);
    }

    #[test]
    fn queue_helpers_move_requests_through() {
        let s = ServerStats::default();
        s.enqueue(10);
        s.enqueue(20);
        let f = s.figures();
        assert_eq!((f.in_queue, f.in_queue_bytes), (2, 30));
        s.sent(10);
        s.sent(20);
        let f = s.figures();
        assert_eq!(
            (f.in_queue, f.in_queue_bytes, f.out_queue, f.out_queue_bytes),
            (0, 0, 2, 30)
        );
        assert_eq!((f.requests, f.request_bytes), (2, 30));
        s.replied(10, 5, Duration::from_micros(100));
        s.replied(20, 7, Duration::from_micros(300));
        let f = s.figures();
        assert_eq!((f.out_queue, f.out_queue_bytes), (0, 0));
        assert_eq!((f.responses, f.response_bytes), (2, 12));
        assert_eq!(s.latency.read().count, 2);
        s.enqueue(4);
        s.enqueue(6);
        s.sent(6);
        s.unqueued(4);
        s.abandoned(6);
        let f = s.figures();
        assert_eq!(
            (f.in_queue, f.in_queue_bytes, f.out_queue, f.out_queue_bytes),
            (0, 0, 0, 0)
        );
        // Every enqueued request counts, sent or not.
        assert_eq!((f.requests, f.responses), (4, 2));
    }
}
