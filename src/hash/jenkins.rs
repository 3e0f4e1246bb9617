//! Bob Jenkins' lookup3 `hashlittle` with initval 13 (twemproxy's `jenkins`).
//!
//! Only the byte-at-a-time formulation is needed: lookup3's word-aligned fast paths
//! produce the same values by design.

const INITVAL: u32 = 13;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn word_le(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

pub(crate) fn jenkins(key: &[u8]) -> u32 {
    let initial = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(INITVAL);
    let (mut a, mut b, mut c) = (initial, initial, initial);

    // lookup3 mixes only while MORE than 12 bytes remain, so a final full block of
    // exactly 12 bytes goes through the tail and the final mix instead.
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word_le(&rest[0..4]));
        b = b.wrapping_add(word_le(&rest[4..8]));
        c = c.wrapping_add(word_le(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }

    if rest.is_empty() {
        return c;
    }
    // The 1..=12 byte tail is added as zero-padded little-endian words.
    let mut padded = [0u8; 12];
    padded[..rest.len()].copy_from_slice(rest);
    a = a.wrapping_add(word_le(&padded[0..4]));
    b = b.wrapping_add(word_le(&padded[4..8]));
    c = c.wrapping_add(word_le(&padded[8..12]));
    final_mix(&mut a, &mut b, &mut c);
    c
}
