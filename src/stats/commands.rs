//! Per-pool request counts by command (Redis or memcached), without locks.
//!
//! Interface for the data path: [`CommandCounts::count`] takes the command name as the client
//! sent it (any case) and looks it up in walnut's command table
//! ([`crate::proto::redis::command::COMMANDS`], a binary search of at most 8 comparisons, no
//! allocation); names not in the table count as `other`. A caller that already holds the
//! table entry should call [`CommandCounts::count_spec`] (no search), or keep the index from
//! [`command_index`] and call [`CommandCounts::count_index`].
//!
//! Storage is a fixed array of atomic counters, one slot per command plus `other`, striped
//! per thread like the latency histogram (every client task counts every request, so a single
//! shared `GET` counter would bounce between cores). A scrape sums the stripes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;

use super::histogram::{stripe_index, STRIPES};
use crate::proto::memcache::request::Command as MemcacheCommand;
use crate::proto::redis::command::{CommandSpec, COMMANDS};

/// The slot of commands that are not in the table.
pub const OTHER: usize = COMMANDS.len();
/// The first of the memcached commands' slots, which follow `other`.
const MEMCACHE_FIRST: usize = OTHER + 1;
/// Slots per stripe: every Redis command, `other`, then every memcached command.
pub const COMMAND_SLOTS: usize = MEMCACHE_FIRST + MemcacheCommand::ALL.len();

const PER_LINE: usize = 16;
const LINES_PER_STRIPE: usize = COMMAND_SLOTS.div_ceil(PER_LINE);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Line([AtomicU64; PER_LINE]);

/// Request counts by command.
#[derive(Debug)]
pub struct CommandCounts {
    lines: Box<[Line]>,
}

impl Default for CommandCounts {
    fn default() -> Self {
        CommandCounts {
            lines: (0..STRIPES * LINES_PER_STRIPE)
                .map(|_| Line::default())
                .collect(),
        }
    }
}

/// The slot for a command name (any case), or [`OTHER`].
pub fn command_index(name: &[u8]) -> usize {
    COMMANDS
        .binary_search_by(|spec| {
            spec.name
                .bytes()
                .cmp(name.iter().map(u8::to_ascii_uppercase))
        })
        .unwrap_or(OTHER)
}

/// The slot of a table entry.
pub fn spec_index(spec: &CommandSpec) -> usize {
    // Entries are elements of COMMANDS: their offset is the index. Checked, so an entry
    // from elsewhere falls back to a search by name.
    let offset = (spec as *const CommandSpec as usize).wrapping_sub(COMMANDS.as_ptr() as usize);
    let index = offset / std::mem::size_of::<CommandSpec>();
    match COMMANDS.get(index) {
        Some(entry) if std::ptr::eq(entry, spec) => index,
        _ => command_index(spec.name.as_bytes()),
    }
}

/// The slot of a memcached command.
pub fn memcache_index(command: MemcacheCommand) -> usize {
    MEMCACHE_FIRST + command.index()
}

/// The `command` label of a slot: the lower-case command name, or `other`.
pub fn command_label(index: usize) -> &'static str {
    static LABELS: LazyLock<Vec<String>> = LazyLock::new(|| {
        COMMANDS
            .iter()
            .map(|spec| spec.name.to_ascii_lowercase())
            .chain(std::iter::once("other".to_string()))
            .chain(MemcacheCommand::ALL.iter().map(|c| c.name().to_string()))
            .collect()
    });
    LABELS.get(index).map_or("other", String::as_str)
}

impl CommandCounts {
    /// Counts one request for `name` (as sent, any case).
    #[inline]
    pub fn count(&self, name: &[u8]) {
        self.count_index(command_index(name));
    }

    /// Counts one request for a command-table entry.
    #[inline]
    pub fn count_spec(&self, spec: &CommandSpec) {
        self.count_index(spec_index(spec));
    }

    /// Counts one request for a slot from [`command_index`] or [`memcache_index`];
    /// out-of-range slots count as `other`.
    #[inline]
    pub fn count_index(&self, index: usize) {
        let index = if index < COMMAND_SLOTS { index } else { OTHER };
        let line = stripe_index() * LINES_PER_STRIPE + index / PER_LINE;
        self.lines[line].0[index % PER_LINE].fetch_add(1, Relaxed);
    }

    /// The count of one slot, summed over stripes.
    pub fn get(&self, index: usize) -> u64 {
        if index >= COMMAND_SLOTS {
            return 0;
        }
        (0..STRIPES)
            .map(|s| {
                self.lines[s * LINES_PER_STRIPE + index / PER_LINE].0[index % PER_LINE]
                    .load(Relaxed)
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// `(label, count)` for every command counted at least once, in table order (Redis, then
    /// memcached), `other` last.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        (0..OTHER)
            .chain(MEMCACHE_FIRST..COMMAND_SLOTS)
            .chain(std::iter::once(OTHER))
            .filter_map(|i| {
                let n = self.get(i);
                (n > 0).then(|| (command_label(i), n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::command::lookup;
    use std::sync::Arc;

    #[test]
    fn names_map_to_slots() {
        let get = command_index(b"get");
        assert_eq!(COMMANDS[get].name, "GET");
        assert_eq!(command_index(b"GeT"), get);
        assert_eq!(command_index(b"nosuchcommand"), OTHER);
        assert_eq!(command_index(b""), OTHER);
        assert_eq!(command_label(get), "get");
        assert_eq!(command_label(OTHER), "other");
        assert_eq!(command_label(COMMAND_SLOTS + 5), "other");
        assert_eq!(command_label(memcache_index(MemcacheCommand::Gets)), "gets");
        assert_eq!(
            command_label(memcache_index(MemcacheCommand::MetaNoop)),
            "mn"
        );
        for (i, command) in MemcacheCommand::ALL.iter().enumerate() {
            assert_eq!(command.index(), i);
        }
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(spec_index(spec), i);
            assert_eq!(command_index(spec.name.as_bytes()), i);
        }
        assert_eq!(spec_index(lookup(b"mget").unwrap()), command_index(b"MGET"));
    }

    #[test]
    fn counts_sum_across_threads() {
        let counts = Arc::new(CommandCounts::default());
        let threads: Vec<_> = (0..10)
            .map(|_| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        counts.count(b"get");
                        counts.count(b"SET");
                        counts.count(b"bogus");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        counts.count_index(usize::MAX);
        counts.count_spec(lookup(b"zunionstore").unwrap());
        let nonzero = counts.nonzero();
        assert_eq!(
            nonzero,
            vec![
                ("get", 10_000),
                ("set", 10_000),
                ("zunionstore", 1),
                ("other", 10_001)
            ]
        );
    }
}
