//! `md5`: the first four digest bytes read little-endian. Ketama points reuse the digest.

use md5::{Digest, Md5};

/// The full 16-byte MD5 digest of `data`.
pub(crate) fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// The `alignment`-th (0..4) little-endian u32 word of a digest.
pub(crate) fn digest_word(digest: &[u8; 16], alignment: usize) -> u32 {
    let start = alignment * 4;
    u32::from_le_bytes([
        digest[start],
        digest[start + 1],
        digest[start + 2],
        digest[start + 3],
    ])
}

pub(crate) fn md5(key: &[u8]) -> u32 {
    digest_word(&md5_digest(key), 0)
}
