//! The FNV family over sign-extended bytes. `fnv1a_64` is, as in twemproxy, 32-bit
//! arithmetic with the 64-bit constants truncated to their low 32 bits.

use super::{sign_extend, sign_extend_64};

const FNV_64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_OFFSET_BASIS: u32 = 2_166_136_261;
const FNV_32_PRIME: u32 = 16_777_619;

/// Real 64-bit FNV-1; the caller sees only the low 32 bits.
pub(crate) fn fnv1_64(key: &[u8]) -> u32 {
    let hash = key.iter().fold(FNV_64_OFFSET_BASIS, |hash, &byte| {
        hash.wrapping_mul(FNV_64_PRIME) ^ sign_extend_64(byte)
    });
    hash as u32
}

/// twemproxy declares the accumulator as u32, so this is not 64-bit FNV-1a at all.
pub(crate) fn fnv1a_64(key: &[u8]) -> u32 {
    let offset_basis = FNV_64_OFFSET_BASIS as u32;
    let prime = FNV_64_PRIME as u32;
    key.iter().fold(offset_basis, |hash, &byte| {
        (hash ^ sign_extend(byte)).wrapping_mul(prime)
    })
}

pub(crate) fn fnv1_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_OFFSET_BASIS, |hash, &byte| {
        hash.wrapping_mul(FNV_32_PRIME) ^ sign_extend(byte)
    })
}

pub(crate) fn fnv1a_32(key: &[u8]) -> u32 {
    key.iter().fold(FNV_32_OFFSET_BASIS, |hash, &byte| {
        (hash ^ sign_extend(byte)).wrapping_mul(FNV_32_PRIME)
    })
}
