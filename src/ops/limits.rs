//! The open-file limit and the process-wide client limit derived from it, as twemproxy
//! computes it: `max_client_conns = nofile − Σpools(server_connections × nservers + 1) − 32`.
//!
//! At startup walnut raises its soft `RLIMIT_NOFILE` as far as the hard limit allows
//! ([`raise_nofile`]), derives the limit ([`derive_max_clients`]) and installs it
//! ([`set_max_clients`]); every listener then takes a [`ClientSlot`] per client
//! ([`admit_client`]) next to its pool's own `client_connections` check.

use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Descriptors kept for everything that is not a client or server connection (twemproxy's
/// `RESERVED_FDS`): stdio, the log file, listeners, the stats socket, the event loop.
pub const RESERVED_FDS: u64 = 32;

/// The process-wide client limit; 0 means none.
static MAX_CLIENTS: AtomicUsize = AtomicUsize::new(0);
/// Clients currently open, across every pool.
static CLIENTS: AtomicUsize = AtomicUsize::new(0);

/// The open-file limit before and after [`raise_nofile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit found at startup.
    pub before: u64,
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit (`u64::MAX` when unlimited).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or, when the hard limit is infinite, to
/// the kernel's `fs.nr_open`). On failure the limit stays as it was; the error is returned
/// with the unchanged limit so the caller can log it.
pub fn raise_nofile() -> Result<NofileLimit, (NofileLimit, nix::Error)> {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            let unknown = NofileLimit {
                before: 0,
                soft: 0,
                hard: 0,
            };
            return Err((unknown, err));
        }
    };
    let mut limit = NofileLimit {
        before: soft,
        soft,
        hard,
    };
    let target = if hard == RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(soft)
    } else {
        hard
    };
    if target <= soft {
        return Ok(limit);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => {
            limit.soft = target;
            Ok(limit)
        }
        Err(err) => Err((limit, err)),
    }
}

/// twemproxy's client limit for an open-file limit `nofile` and pools given as
/// `(server_connections, number of servers)`; `None` when nothing is left for clients.
pub fn derive_max_clients(
    nofile: u64,
    pools: impl IntoIterator<Item = (u32, usize)>,
) -> Option<u64> {
    let servers = server_descriptors(pools);
    nofile
        .checked_sub(servers)
        .and_then(|left| left.checked_sub(RESERVED_FDS))
        .filter(|&n| n > 0)
}

/// Σpools(server_connections × nservers + 1): server connections plus one listener per pool.
pub fn server_descriptors(pools: impl IntoIterator<Item = (u32, usize)>) -> u64 {
    pools
        .into_iter()
        .map(|(conns, servers)| u64::from(conns.max(1)) * servers as u64 + 1)
        .sum()
}

/// Installs the process-wide client limit (0 = none).
pub fn set_max_clients(limit: usize) {
    MAX_CLIENTS.store(limit, Ordering::Release);
}

/// The process-wide client limit (0 = none).
pub fn max_clients() -> usize {
    MAX_CLIENTS.load(Ordering::Acquire)
}

/// Clients open across every pool.
pub fn open_clients() -> usize {
    CLIENTS.load(Ordering::Acquire)
}

/// A client's place under the process-wide limit; released on drop.
#[derive(Debug)]
pub struct ClientSlot(());

impl Drop for ClientSlot {
    fn drop(&mut self) {
        CLIENTS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a new client in, unless the process-wide limit is reached.
pub fn admit_client() -> Option<ClientSlot> {
    let limit = max_clients();
    let before = CLIENTS.fetch_add(1, Ordering::AcqRel);
    if limit > 0 && before >= limit {
        CLIENTS.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(ClientSlot(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_limit_follows_twemproxy() {
        // 1024 − (2×3 + 1) − (1×1 + 1) − 32
        assert_eq!(derive_max_clients(1024, [(2, 3), (1, 1)]), Some(983));
        assert_eq!(derive_max_clients(64, [(1, 1)]), Some(30));
        assert_eq!(derive_max_clients(34, [(1, 1)]), None);
        assert_eq!(derive_max_clients(10, [(100, 10)]), None);
        assert_eq!(derive_max_clients(u64::MAX, [(1, 1)]), Some(u64::MAX - 34));
        assert_eq!(
            server_descriptors([(0, 2)]),
            3,
            "server_connections 0 counts as 1"
        );
    }

    #[test]
    fn slots_are_counted_and_limited() {
        // The only test touching the process-wide counters.
        set_max_clients(2);
        let a = admit_client().expect("first");
        let b = admit_client().expect("second");
        assert!(admit_client().is_none(), "third is over the limit");
        assert_eq!(open_clients(), 2);
        drop(a);
        let c = admit_client().expect("a slot was freed");
        drop((b, c));
        set_max_clients(0);
        let many: Vec<_> = (0..100)
            .map(|_| admit_client().expect("no limit"))
            .collect();
        assert_eq!(open_clients(), 100);
        drop(many);
        assert_eq!(open_clients(), 0);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        if let Ok(limit) = raise_nofile() {
            assert!(limit.soft >= limit.before);
            assert!(limit.soft <= limit.hard);
        }
    }
}
