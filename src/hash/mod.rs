//! The 12 key hash functions of twemproxy, bit-exact with its `hashkit/`.
//!
//! Owned by the hash work; see `tests/data/hash-vectors.tsv`.
//!
//! twemproxy reads keys through a plain `char *`, which is signed on x86-64, so several
//! functions see bytes >= 0x80 sign-extended; `sign_extend` reproduces that.

mod crc;
mod fnv;
mod hsieh;
mod jenkins;
pub(crate) mod md5;
mod murmur;
mod oaat;

/// A byte as a C `signed char` widened to u32: 0x80..=0xff become 0xffffff80..=0xffffffff.
fn sign_extend(byte: u8) -> u32 {
    byte as i8 as i32 as u32
}

/// A byte as a C `signed char` widened to u64.
fn sign_extend_64(byte: u8) -> u64 {
    byte as i8 as i64 as u64
}

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
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
        }
    }

    /// Parses a config name; exact, case-sensitive match.
    pub fn from_name(name: &str) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Hashes `key` exactly as twemproxy does.
    ///
    /// An empty key is hashed like any other here; twemproxy's rule that an empty key
    /// maps to hash 0 belongs to the router.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => oaat::one_at_a_time(key),
            HashKind::Md5 => md5::md5(key),
            HashKind::Crc16 => crc::crc16(key),
            HashKind::Crc32 => crc::crc32(key),
            HashKind::Crc32a => crc::crc32a(key),
            HashKind::Fnv1_64 => fnv::fnv1_64(key),
            HashKind::Fnv1a64 => fnv::fnv1a_64(key),
            HashKind::Fnv1_32 => fnv::fnv1_32(key),
            HashKind::Fnv1a32 => fnv::fnv1a_32(key),
            HashKind::Hsieh => hsieh::hsieh(key),
            HashKind::Murmur => murmur::murmur(key),
            HashKind::Jenkins => jenkins::jenkins(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for kind in HashKind::ALL {
            assert_eq!(HashKind::from_name(kind.name()), Some(kind));
        }
        let mut names: Vec<_> = HashKind::ALL.iter().map(|kind| kind.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 12);
    }

    #[test]
    fn unknown_or_miscased_names_are_rejected() {
        for name in ["sha1", "MD5", "", "fnv1a-64", "md5 "] {
            assert_eq!(HashKind::from_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn sign_extension_matches_c_signed_char() {
        assert_eq!(sign_extend(0x7f), 0x7f);
        assert_eq!(sign_extend(0x80), 0xffff_ff80);
        assert_eq!(sign_extend(0xff), 0xffff_ffff);
        assert_eq!(sign_extend_64(0x80), 0xffff_ffff_ffff_ff80);
    }

    #[test]
    fn empty_key_values() {
        // Values from tests/data/hash-vectors.tsv for the empty key.
        assert_eq!(HashKind::Md5.hash(b""), 3_649_838_548);
        assert_eq!(HashKind::Fnv1a64.hash(b""), 2_216_829_733);
        assert_eq!(HashKind::Jenkins.hash(b""), 3_735_928_572);
        assert_eq!(HashKind::Hsieh.hash(b""), 0);
        assert_eq!(HashKind::Murmur.hash(b""), 0);
    }

    #[test]
    fn every_length_and_byte_is_accepted() {
        // Exercises every tail length of the block-based hashes with high bytes.
        let key: Vec<u8> = (0..=255u8).rev().collect();
        for kind in HashKind::ALL {
            for length in 0..key.len() {
                let _ = kind.hash(&key[..length]);
            }
        }
    }
}
