//! Paul Hsieh's SuperFastHash as twemproxy has it: seed 0, little-endian 16-bit reads,
//! and a sign-extended third byte in the three-byte tail.

use super::sign_extend;

fn read_u16_le(bytes: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([bytes[0], bytes[1]]))
}

pub(crate) fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut hash: u32 = 0;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        hash = hash.wrapping_add(read_u16_le(&block[0..2]));
        let mixed = (read_u16_le(&block[2..4]) << 11) ^ hash;
        hash = (hash << 16) ^ mixed;
        hash = hash.wrapping_add(hash >> 11);
    }
    let tail = blocks.remainder();
    match tail.len() {
        3 => {
            hash = hash.wrapping_add(read_u16_le(&tail[0..2]));
            hash ^= hash << 16;
            // twemproxy reads this byte through a plain (signed) char.
            hash ^= sign_extend(tail[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(read_u16_le(tail));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(u32::from(tail[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}
