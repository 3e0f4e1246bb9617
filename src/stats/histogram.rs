//! A lock-free latency histogram with fixed buckets from 50 µs to 10 s.
//!
//! prometheus-client's own `Histogram` takes a mutex on every `observe`, which the data path
//! must not pay. This one is a set of atomic bucket counters and an atomic sum in
//! nanoseconds, striped: each thread writes to one of [`STRIPES`] cache-line-aligned copies
//! (picked once per thread), so client tasks on different cores do not fight over the same
//! cache line; a scrape sums the stripes. Recording is two `Relaxed` atomic adds.
//!
//! The count is derived from the buckets, so `_count` always equals the `+Inf` bucket. A
//! scrape that races with recording may see a `_sum` that lags or leads the buckets by the
//! observations in flight, as with any lock-free histogram.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Upper bounds of the buckets, in seconds (`le` labels); a `+Inf` bucket follows.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, compared against on every observation.
const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets including `+Inf`.
pub const SLOTS: usize = BOUNDS_NS.len() + 1;

/// How many copies of each striped figure exist.
pub const STRIPES: usize = 8;

/// The stripe the calling thread writes to: threads are dealt stripes round-robin on their
/// first use.
#[inline]
pub(crate) fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    buckets: [AtomicU64; SLOTS],
    sum_ns: AtomicU64,
}

/// A latency histogram the data path records into without locks.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    stripes: Box<[Stripe; STRIPES]>,
}

/// A histogram read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), the last one being `+Inf`.
    pub buckets: [u64; SLOTS],
    /// Total observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// `(upper bound in seconds, count in that bucket)` pairs, ending with `+Inf`, as
    /// prometheus-client's encoder wants them (it accumulates them itself).
    pub fn bucket_pairs(&self) -> [(f64, u64); SLOTS] {
        let mut pairs = [(f64::INFINITY, 0); SLOTS];
        for (i, pair) in pairs.iter_mut().enumerate() {
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            *pair = (bound, self.buckets[i]);
        }
        pairs
    }
}

impl LatencyHistogram {
    /// Records one latency.
    #[inline]
    pub fn observe(&self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let slot = BOUNDS_NS.partition_point(|&bound| bound < ns);
        let stripe = &self.stripes[stripe_index()];
        stripe.buckets[slot].fetch_add(1, Relaxed);
        stripe.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Records the time elapsed since `start`.
    #[inline]
    pub fn observe_since(&self, start: Instant) {
        self.observe(start.elapsed());
    }

    /// Sums the stripes.
    pub fn read(&self) -> HistogramSnapshot {
        let mut buckets = [0u64; SLOTS];
        let mut sum_ns = 0u64;
        for stripe in self.stripes.iter() {
            for (total, bucket) in buckets.iter_mut().zip(&stripe.buckets) {
                *total = total.wrapping_add(bucket.load(Relaxed));
            }
            sum_ns = sum_ns.wrapping_add(stripe.sum_ns.load(Relaxed));
        }
        HistogramSnapshot {
            count: buckets.iter().fold(0u64, |a, b| a.wrapping_add(*b)),
            buckets,
            sum_seconds: sum_ns as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounds_agree() {
        for (s, ns) in LATENCY_BUCKETS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn observations_land_in_le_buckets() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(10)); // ≤ 50µs
        h.observe(Duration::from_micros(50)); // exactly 50µs: le="0.00005"
        h.observe(Duration::from_nanos(50_001)); // ≤ 100µs
        h.observe(Duration::from_millis(3)); // ≤ 5ms
        h.observe(Duration::from_secs(10)); // ≤ 10s
        h.observe(Duration::from_secs(11)); // +Inf
        h.observe(Duration::MAX); // +Inf, sum saturates rather than panicking
        let s = h.read();
        assert_eq!(s.count, 7);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[1], 1);
        assert_eq!(s.buckets[6], 1);
        assert_eq!(s.buckets[16], 1);
        assert_eq!(s.buckets[17], 2);
        let pairs = s.bucket_pairs();
        assert_eq!(pairs[0], (0.00005, 2));
        assert_eq!(pairs[17].0, f64::INFINITY);
    }

    #[test]
    fn sum_is_in_seconds() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(2));
        let s = h.read();
        assert!((s.sum_seconds - 0.003).abs() < 1e-12);
        assert_eq!(s.count, 2);
    }

    #[test]
    fn threads_record_without_loss() {
        let h = Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        h.observe(Duration::from_micros(100 * (i + 1)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.read();
        assert_eq!(s.count, 60_000);
        let expected: f64 = (1..=12).map(|i| 5_000.0 * 0.0001 * i as f64).sum();
        assert!((s.sum_seconds - expected).abs() < 1e-6);
    }
}
