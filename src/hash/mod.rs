//! The 12 key hash functions of twemproxy, bit-exact with its `hashkit/`.
//!
//! Owned by the hash work; see `tests/data/hash-vectors.tsv`.

/// One of twemproxy's `hash:` functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashKind {
    OneAtATime,
    Md5,
    Crc16,
    Crc32,
    Crc32a,
    Fnv1_64,
    Fnv1a64,
    Fnv1_32,
    Fnv1a32,
    Hsieh,
    Murmur,
    Jenkins,
}

impl HashKind {
    /// Every hash function, in twemproxy's table order.
    pub const ALL: [HashKind; 12] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
    ];

    /// The config name (`hash: fnv1a_64`).
    pub fn name(self) -> &'static str {
        todo!()
    }

    /// Parses a config name; exact, case-sensitive match.
    pub fn from_name(name: &str) -> Option<HashKind> {
        let _ = name;
        todo!()
    }

    /// Hashes `key` exactly as twemproxy does.
    pub fn hash(self, key: &[u8]) -> u32 {
        let _ = key;
        todo!()
    }
}
