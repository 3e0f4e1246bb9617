//! The router: key → server index for one pool, exactly as twemproxy's `server_pool_idx`.
//!
//! A [`PoolRouter`] is immutable. Ejection or a config reload builds a new one and swaps it in
//! whole (see `proxy::pool`), so a request is always routed against one consistent table.

use crate::cluster::slot::key_slot;
use crate::cluster::table::SlotTable;
use crate::config::PoolConfig;
use crate::dist::{Continuum, WeightedServer};
use crate::hash::HashKind;

/// Why a key has no server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Every server is ejected.
    NoLiveServer,
    /// `distribution: server_name`: the key's routing part names no server of the pool.
    UnknownName,
    /// Redis Cluster: no node serves the key's slot.
    SlotNotServed,
    /// Redis Cluster: walnut has no slot map yet.
    NoSlotMap,
}

/// How keys find their server.
#[derive(Clone, Debug)]
enum Placement {
    /// twemproxy's ketama, modula or random continuum.
    Continuum(Continuum),
    /// `distribution: server_name`: server names, sorted, with their indexes.
    Names(Vec<(Box<[u8]>, usize)>),
    /// `redis_cluster: true`: the key's CRC16 slot (of its `{...}` tag) and the slot table.
    Slots(SlotTable),
}

/// The immutable key-placement rules of one pool.
#[derive(Clone, Debug)]
pub struct PoolRouter {
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    server_count: usize,
    placement: Placement,
}

impl PoolRouter {
    /// Builds the router of `pool` with the servers whose `live[i]` is true.
    ///
    /// Ejected servers only leave the continuum when the pool ejects hosts at all, as in
    /// twemproxy; `live` must have one entry per server.
    pub fn build(pool: &PoolConfig, live: &[bool]) -> PoolRouter {
        if pool.route_by_server_name {
            let mut names: Vec<(Box<[u8]>, usize)> = pool
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_bytes().into(), i))
                .collect();
            names.sort();
            return PoolRouter {
                hash: pool.hash,
                hash_tag: pool.hash_tag,
                server_count: pool.servers.len(),
                placement: Placement::Names(names),
            };
        }
        let servers: Vec<WeightedServer<'_>> = pool
            .servers
            .iter()
            .zip(live.iter().copied().chain(std::iter::repeat(true)))
            .map(|(s, live)| WeightedServer {
                name: &s.name,
                weight: s.weight,
                live: live || !pool.auto_eject_hosts,
            })
            .collect();
        PoolRouter {
            hash: pool.hash,
            hash_tag: pool.hash_tag,
            server_count: pool.servers.len(),
            placement: Placement::Continuum(Continuum::build(pool.distribution, &servers)),
        }
    }

    /// The router of a Redis Cluster pool whose `server_count` servers serve as `table` says.
    pub fn cluster(table: SlotTable, server_count: usize) -> PoolRouter {
        PoolRouter {
            hash: HashKind::Crc16,
            hash_tag: None,
            server_count,
            placement: Placement::Slots(table),
        }
    }

    /// The slot table of a cluster pool.
    pub fn slot_table(&self) -> Option<&SlotTable> {
        match &self.placement {
            Placement::Slots(table) => Some(table),
            _ => None,
        }
    }

    /// A replica of `key`'s slot (the `pick`-th, wrapping), for `read_from` replicas.
    pub fn replica_for_key(&self, key: &[u8], pick: usize) -> Option<usize> {
        let shard = self.slot_table()?.shard(key_slot(key))?;
        let count = shard.replicas.len();
        (count > 0).then(|| shard.replicas[pick % count])
    }

    /// Builds the router of `pool` with every server live.
    pub fn with_all_live(pool: &PoolConfig) -> PoolRouter {
        PoolRouter::build(pool, &vec![true; pool.servers.len()])
    }

    /// The server index for `key`.
    pub fn server_for_key(&self, key: &[u8]) -> Result<usize, RouteError> {
        match &self.placement {
            Placement::Names(names) => {
                let name = self.routing_part(key);
                names
                    .binary_search_by(|(n, _)| n.as_ref().cmp(name))
                    .map(|found| names[found].1)
                    .map_err(|_| RouteError::UnknownName)
            }
            Placement::Slots(table) => match table.shard(key_slot(key)) {
                Some(shard) => Ok(shard.master),
                None if table.is_empty() => Err(RouteError::NoSlotMap),
                None => Err(RouteError::SlotNotServed),
            },
            // twemproxy skips hashing for single-server pools, ejected or not.
            Placement::Continuum(_) if self.server_count == 1 => Ok(0),
            Placement::Continuum(continuum) => continuum
                .pick(self.key_hash(key))
                .ok_or(RouteError::NoLiveServer),
        }
    }

    /// The part of `key` that decides its server: its hash-tag content when there is one.
    pub fn routing_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        match self.hash_tag {
            Some(tag) => hash_tag_content(key, tag).unwrap_or(key),
            None => key,
        }
    }

    /// The hash of the routing part of `key`; the empty key hashes to 0.
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        let routed = self.routing_part(key);
        if routed.is_empty() {
            return 0;
        }
        self.hash.hash(routed)
    }

    /// True when keys name their server (`distribution: server_name`).
    pub fn routes_by_name(&self) -> bool {
        matches!(self.placement, Placement::Names(_))
    }

    pub fn server_count(&self) -> usize {
        self.server_count
    }
}

/// The bytes between the first `tag[0]` and the first `tag[1]` after it, when at least one
/// byte lies between them; `None` otherwise (then the whole key is hashed).
pub fn hash_tag_content(key: &[u8], tag: [u8; 2]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == tag[0])?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|&b| b == tag[1])?;
    (close > 0).then(|| &rest[..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named_pool(hash_tag: Option<[u8; 2]>) -> PoolConfig {
        let yaml = "p:\n  listen: 127.0.0.1:22121\n  hash: server_name\n  distribution: server_name\n  servers:\n   - 127.0.0.1:6379:1 r1\n   - 127.0.0.1:6380:1 r2\n   - 127.0.0.1:6379:1 alpha\n";
        let mut pool = crate::config::parse(yaml, "t.yml")
            .expect("valid")
            .pools
            .remove(0);
        pool.hash_tag = hash_tag;
        pool
    }

    #[test]
    fn server_name_routing_looks_the_name_up() {
        let pool = named_pool(Some(*b"{}"));
        let router = PoolRouter::with_all_live(&pool);
        let index_of = |name: &str| pool.servers.iter().position(|s| s.name == name).unwrap();
        assert_eq!(router.server_for_key(b"{r2}:user:42"), Ok(index_of("r2")));
        assert_eq!(router.server_for_key(b"x{alpha}"), Ok(index_of("alpha")));
        assert_eq!(
            router.server_for_key(b"{r9}:x"),
            Err(RouteError::UnknownName)
        );
        // No tag: the whole key is the name.
        assert_eq!(router.server_for_key(b"r1"), Ok(index_of("r1")));
        assert_eq!(router.server_for_key(b""), Err(RouteError::UnknownName));
        // Ejection never moves a named key.
        let ejected = PoolRouter::build(&pool, &[false, false, false]);
        assert_eq!(ejected.server_for_key(b"{r1}"), Ok(index_of("r1")));
    }

    #[test]
    fn without_a_hash_tag_the_whole_key_must_be_a_name() {
        let router = PoolRouter::with_all_live(&named_pool(None));
        assert_eq!(
            router.server_for_key(b"{r2}:user"),
            Err(RouteError::UnknownName)
        );
        assert!(router.server_for_key(b"r2").is_ok());
    }

    #[test]
    fn hash_tag_takes_the_inner_bytes() {
        assert_eq!(hash_tag_content(b"a{b}c", *b"{}"), Some(&b"b"[..]));
        assert_eq!(
            hash_tag_content(b"user:{42}:name", *b"{}"),
            Some(&b"42"[..])
        );
        assert_eq!(hash_tag_content(b"{r2}:user:42", *b"{}"), Some(&b"r2"[..]));
    }

    #[test]
    fn hash_tag_needs_a_byte_between_the_delimiters() {
        assert_eq!(hash_tag_content(b"x{}y", *b"{}"), None);
        assert_eq!(hash_tag_content(b"x{y", *b"{}"), None);
        assert_eq!(hash_tag_content(b"x}y{", *b"{}"), None);
        assert_eq!(hash_tag_content(b"", *b"{}"), None);
    }

    #[test]
    fn hash_tag_closing_is_searched_after_the_opening() {
        assert_eq!(hash_tag_content(b"}a{bc}", *b"{}"), Some(&b"bc"[..]));
        assert_eq!(hash_tag_content(b"$ab$", *b"$$"), Some(&b"ab"[..]));
    }

    #[test]
    fn cluster_routers_place_keys_by_slot_and_say_why_not() {
        use crate::cluster::redirect::NodeAddr;
        use crate::cluster::topology::{SlotMap, SlotRange};
        let node = |port| NodeAddr {
            host: "127.0.0.1".into(),
            port,
        };
        // Slots 0..=8191 on server 0 (replica 1); the rest unserved.
        let map = SlotMap::from_parts(
            vec![node(7000), node(7001)],
            vec![SlotRange {
                first: 0,
                last: 8191,
                master: 0,
                replicas: vec![1],
            }],
        )
        .expect("a map");
        let router = PoolRouter::cluster(SlotTable::build(&map, |n| n), 2);
        // "foo" is slot 12182; "{user1000}.following" and "{user1000}.followers" share 3443.
        assert_eq!(
            router.server_for_key(b"foo"),
            Err(RouteError::SlotNotServed)
        );
        assert_eq!(router.server_for_key(b"{user1000}.following"), Ok(0));
        assert_eq!(router.replica_for_key(b"{user1000}.followers", 7), Some(1));
        assert_eq!(router.replica_for_key(b"foo", 0), None);
        let empty = PoolRouter::cluster(SlotTable::empty(), 0);
        assert_eq!(empty.server_for_key(b"foo"), Err(RouteError::NoSlotMap));
    }
}
