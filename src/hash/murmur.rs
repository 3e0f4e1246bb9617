//! MurmurHash2 (32-bit), with twemproxy's length-dependent seed `0xdeadbeef * len`.

const MULTIPLIER: u32 = 0x5bd1_e995;
const SHIFT: u32 = 24;
const SEED_FACTOR: u32 = 0xdead_beef;

pub(crate) fn murmur(key: &[u8]) -> u32 {
    // twemproxy truncates the length to 32 bits; so do we.
    let length = key.len() as u32;
    let seed = SEED_FACTOR.wrapping_mul(length);
    let mut hash = seed ^ length;

    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(MULTIPLIER);
        k ^= k >> SHIFT;
        k = k.wrapping_mul(MULTIPLIER);
        hash = hash.wrapping_mul(MULTIPLIER);
        hash ^= k;
    }

    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (position, &byte) in tail.iter().enumerate() {
            hash ^= u32::from(byte) << (8 * position);
        }
        hash = hash.wrapping_mul(MULTIPLIER);
    }

    hash ^= hash >> 13;
    hash = hash.wrapping_mul(MULTIPLIER);
    hash ^ (hash >> 15)
}
