//! The router: key → server index for one pool, exactly as twemproxy's `server_pool_idx`.
//!
//! A [`PoolRouter`] is immutable. Ejection or a config reload builds a new one and swaps it in
//! whole (see `proxy::pool`), so a request is always routed against one consistent table.

use crate::config::PoolConfig;
use crate::dist::{Continuum, WeightedServer};
use crate::hash::HashKind;

/// The immutable key-placement rules of one pool.
#[derive(Clone, Debug)]
pub struct PoolRouter {
    hash: HashKind,
    hash_tag: Option<[u8; 2]>,
    server_count: usize,
    continuum: Continuum,
}

impl PoolRouter {
    /// Builds the router of `pool` with the servers whose `live[i]` is true.
    ///
    /// Ejected servers only leave the continuum when the pool ejects hosts at all, as in
    /// twemproxy; `live` must have one entry per server.
    pub fn build(pool: &PoolConfig, live: &[bool]) -> PoolRouter {
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
            continuum: Continuum::build(pool.distribution, &servers),
        }
    }

    /// Builds the router of `pool` with every server live.
    pub fn with_all_live(pool: &PoolConfig) -> PoolRouter {
        PoolRouter::build(pool, &vec![true; pool.servers.len()])
    }

    /// The server index for `key`, or `None` when every server is ejected.
    pub fn server_for_key(&self, key: &[u8]) -> Option<usize> {
        if self.server_count == 1 {
            // twemproxy skips hashing for single-server pools, ejected or not.
            return Some(0);
        }
        self.continuum.pick(self.key_hash(key))
    }

    /// The hash of the routing part of `key` (its hash-tag content when there is one).
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        let routed = match self.hash_tag {
            Some(tag) => hash_tag_content(key, tag).unwrap_or(key),
            None => key,
        };
        if routed.is_empty() {
            return 0;
        }
        self.hash.hash(routed)
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
}
