//! Stats and metrics: twemproxy's stats JSON (byte-compatible) and Prometheus metrics, fed by
//! lock-free counters the data path updates.
//!
//! * [`PoolStats`] / [`ServerStats`]: the figures, one `Relaxed` atomic each
//!   ([`Counter`], [`Gauge`], [`Timestamp`]), plus lock-free latency histograms
//!   ([`LatencyHistogram`]) and per-command counts ([`CommandCounts`]). Shared as `Arc`s.
//! * [`Stats`]: identity, `total_connections`/`curr_connections` ([`ConnectionStats`]), the
//!   pool/server layout, and the JSON body re-rendered every `-i` interval by
//!   [`Stats::spawn_aggregator`].
//! * [`serve_stats`] on a listener from [`bind_stats`]: the twemproxy stats port.
//! * [`serve_metrics`] on a listener from [`bind_metrics`]: `GET /metrics` from
//!   [`metrics_registry`].
//! * [`json`]: the byte-exact renderer and the `-D` text ([`describe_stats`]).
//!
//! See `docs/METRICS.md` for every metric and the integration points.

pub mod commands;
pub mod counters;
pub mod histogram;
pub mod http;
pub mod json;
pub mod listener;
pub mod prometheus;
pub mod registry;

#[cfg(test)]
mod tests;

/// Config reloads applied (Prometheus `walnut_reloads_total`).
pub static RELOADS: Counter = Counter::new();
/// Config reloads that failed: an invalid file, or a listener that could not be bound
/// (Prometheus `walnut_reload_failures_total`).
pub static RELOAD_FAILURES: Counter = Counter::new();

pub use commands::{command_index, CommandCounts};
pub use counters::{
    now_micros, Counter, Gauge, PoolFigures, PoolStats, ServerFigures, ServerStats, Timestamp,
};
pub use histogram::{HistogramSnapshot, LatencyHistogram, LATENCY_BUCKETS};
pub use http::{bind_metrics, serve_metrics};
pub use json::{describe_stats, render_json, JsonHeader, PoolJson};
pub use listener::{bind_stats, serve_stats, JsonSource};
pub use prometheus::{encode_metrics, metrics_registry, StatsCollector, METRICS_CONTENT_TYPE};
pub use registry::{
    hostname, ConnectionGuard, ConnectionStats, Identity, PoolEntry, ServerEntry, Stats,
    StatsOptions, DEFAULT_INTERVAL,
};
