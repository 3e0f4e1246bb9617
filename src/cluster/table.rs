//! The routing form of a slot map: for each of the 16384 slots, its shard; for each shard,
//! its master and replicas as indexes into the pool's servers. Immutable: a refresh or a
//! `MOVED` builds a new table and the pool swaps it in whole.

use std::sync::Arc;

use super::slot::SLOTS;
use super::topology::SlotMap;

/// No shard serves the slot.
const NO_SHARD: u16 = u16::MAX;

/// One shard: the servers (pool indexes) of one slot range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub master: usize,
    pub replicas: Vec<usize>,
}

/// Which servers serve each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotTable {
    /// Per slot: its index in `shards`, or [`NO_SHARD`].
    shard_of: Arc<[u16]>,
    shards: Arc<[Shard]>,
}

impl SlotTable {
    /// A table with no slot served: a cluster pool before its first slot map.
    pub fn empty() -> SlotTable {
        SlotTable {
            shard_of: vec![NO_SHARD; SLOTS].into(),
            shards: Arc::new([]),
        }
    }

    /// The table for `map`, where `server_of(node)` is the pool index of `map.nodes[node]`.
    pub fn build(map: &SlotMap, server_of: impl Fn(usize) -> usize) -> SlotTable {
        let mut shard_of = vec![NO_SHARD; SLOTS];
        let mut shards = Vec::with_capacity(map.ranges.len());
        for range in &map.ranges {
            let Ok(index) = u16::try_from(shards.len()) else {
                break;
            };
            if index == NO_SHARD {
                break;
            }
            for slot in range.first..=range.last {
                if let Some(entry) = shard_of.get_mut(usize::from(slot)) {
                    *entry = index;
                }
            }
            shards.push(Shard {
                master: server_of(range.master),
                replicas: range.replicas.iter().map(|&r| server_of(r)).collect(),
            });
        }
        SlotTable {
            shard_of: shard_of.into(),
            shards: shards.into(),
        }
    }

    /// The shard serving `slot`, if any.
    pub fn shard(&self, slot: u16) -> Option<&Shard> {
        let index = *self.shard_of.get(usize::from(slot))?;
        self.shards.get(usize::from(index))
    }

    /// Every shard's master, each once, in pool order.
    pub fn masters(&self) -> Vec<usize> {
        let mut masters: Vec<usize> = self.shards.iter().map(|shard| shard.master).collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }

    /// True when no slot is served (no slot map yet).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// This table with `slot` served by `master` alone (a `MOVED` reply), other slots as
    /// they were. The slot's old replicas are dropped until the next refresh says otherwise.
    pub fn with_slot_moved(&self, slot: u16, master: usize) -> SlotTable {
        let mut shards: Vec<Shard> = self.shards.to_vec();
        let mut shard_of: Vec<u16> = self.shard_of.to_vec();
        let existing = shards
            .iter()
            .position(|s| s.master == master && s.replicas.is_empty());
        let index = match existing {
            Some(i) => i,
            None => {
                shards.push(Shard {
                    master,
                    replicas: Vec::new(),
                });
                shards.len() - 1
            }
        };
        match (u16::try_from(index), shard_of.get_mut(usize::from(slot))) {
            (Ok(index), Some(entry)) if index != NO_SHARD => *entry = index,
            _ => return self.clone(),
        }
        SlotTable {
            shard_of: shard_of.into(),
            shards: shards.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::redirect::NodeAddr;
    use crate::cluster::topology::SlotRange;

    fn node(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn two_shards() -> SlotMap {
        SlotMap::from_parts(
            vec![node(7000), node(7001), node(7002)],
            vec![
                SlotRange {
                    first: 0,
                    last: 8191,
                    master: 0,
                    replicas: vec![2],
                },
                SlotRange {
                    first: 8192,
                    last: 16383,
                    master: 1,
                    replicas: vec![],
                },
            ],
        )
        .expect("a valid map")
    }

    #[test]
    fn slots_map_to_the_pool_indexes_of_their_servers() {
        // The pool lists the nodes in another order than the map.
        let map = two_shards();
        let pool = [node(7001), node(7002), node(7000)];
        let table = SlotTable::build(&map, |n| {
            pool.iter()
                .position(|p| *p == map.nodes[n])
                .expect("listed")
        });
        assert_eq!(
            table.shard(0),
            Some(&Shard {
                master: 2,
                replicas: vec![1]
            })
        );
        assert_eq!(table.shard(16383).map(|s| s.master), Some(0));
        assert!(table.shard(16384).is_none());
        assert!(!table.is_empty());
        assert!(SlotTable::empty().shard(5).is_none());
        assert!(SlotTable::empty().is_empty());
    }

    #[test]
    fn a_moved_slot_changes_only_that_slot() {
        let table = SlotTable::build(&two_shards(), |node| node);
        let moved = table.with_slot_moved(100, 1);
        assert_eq!(moved.shard(100).map(|s| s.master), Some(1));
        assert_eq!(moved.shard(101).map(|s| s.master), Some(0));
        assert_eq!(moved.shard(9000), table.shard(9000));
        // Moving another slot to the same master reuses its shard entry.
        let again = moved.with_slot_moved(101, 1);
        assert_eq!(again.shards.len(), moved.shards.len());
    }
}
