//! The CRC family: `crc16` (CCITT/XMODEM table, never masked), `crc32` (15 bits) and
//! `crc32a` (full standard CRC-32).

/// Non-reflected CRC-16 lookup table for the CCITT polynomial 0x1021.
const CRC16_TABLE: [u32; 256] = build_crc16_table();

const fn build_crc16_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = (index as u32) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[index] = crc & 0xffff;
        index += 1;
    }
    table
}

/// twemproxy keeps the running CRC in a u32 and never masks it back to 16 bits, so keys
/// longer than two bytes carry high bits along; only bits 8..16 feed the table index.
pub(crate) fn crc16(key: &[u8]) -> u32 {
    key.iter().fold(0u32, |crc, &byte| {
        (crc << 8) ^ CRC16_TABLE[(((crc >> 8) ^ u32::from(byte)) & 0xff) as usize]
    })
}

/// libmemcached-style: the top half of the standard CRC-32, limited to 15 bits.
pub(crate) fn crc32(key: &[u8]) -> u32 {
    (crc32fast::hash(key) >> 16) & 0x7fff
}

pub(crate) fn crc32a(key: &[u8]) -> u32 {
    crc32fast::hash(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_table_matches_known_entries() {
        assert_eq!(CRC16_TABLE[0], 0x0000);
        assert_eq!(CRC16_TABLE[1], 0x1021);
        assert_eq!(CRC16_TABLE[255], 0x1ef0);
    }

    #[test]
    fn crc16_check_value_fits_xmodem_for_short_keys() {
        // CRC-16/XMODEM of "a" is 0x7c87; one byte cannot overflow 16 bits yet.
        assert_eq!(crc16(b"a"), 0x7c87);
    }

    #[test]
    fn crc32a_is_the_standard_check_value() {
        assert_eq!(crc32a(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"123456789"), (0xcbf4_3926 >> 16) & 0x7fff);
    }
}
