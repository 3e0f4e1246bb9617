//! Bob Jenkins' one-at-a-time hash (`one_at_a_time`), over sign-extended bytes.

use super::sign_extend;

pub(crate) fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &byte in key {
        value = value.wrapping_add(sign_extend(byte));
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}
