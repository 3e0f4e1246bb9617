//! Random distribution (`nc_random.c`): every pick is a uniformly chosen live server.
//!
//! A per-thread xorshift64* generator stands in for libc `random()`; no caller can
//! depend on the exact sequence, since twemproxy seeds from the clock.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// Mixes the clock with std's per-thread random hasher keys, so threads started in the
/// same nanosecond still get different streams.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(nanos);
    // xorshift must never hold zero, or it stays zero forever.
    hasher.finish() | 1
}

/// The next value of this thread's xorshift64* stream.
pub(super) fn next_random() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// One slot per live server, in order.
pub(super) fn pick(slots: &[usize]) -> Option<usize> {
    if slots.is_empty() {
        return None;
    }
    let slot = (next_random() % slots.len() as u64) as usize;
    slots.get(slot).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_only_given_slots_and_reaches_all_of_them() {
        let slots = [0, 2, 5];
        let mut seen = [0usize; 6];
        for _ in 0..3_000 {
            let server = pick(&slots).expect("non-empty");
            seen[server] += 1;
        }
        assert_eq!((seen[1], seen[3], seen[4]), (0, 0, 0));
        // Each live server should get roughly a third; 500 is a very loose floor.
        assert!(slots.iter().all(|&server| seen[server] > 500), "{seen:?}");
    }

    #[test]
    fn empty_slots_pick_nothing() {
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn threads_get_different_streams() {
        let streams: Vec<Vec<u64>> = (0..4)
            .map(|_| std::thread::spawn(|| (0..4).map(|_| next_random()).collect()))
            .map(|handle| handle.join().expect("thread"))
            .collect();
        for (index, stream) in streams.iter().enumerate() {
            assert!(streams[index + 1..].iter().all(|other| other != stream));
        }
    }
}
