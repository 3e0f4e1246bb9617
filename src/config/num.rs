//! Number parsing with twemproxy's `nc_atoi` rules: decimal digits only (no sign, no
//! spaces, not empty). twemproxy keeps numbers in a C `int` and never checks for
//! overflow; walnut rejects anything above `i32::MAX` instead of wrapping.

/// The outcome of [`atoi`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Atoi {
    Value(u32),
    NotANumber,
    /// Only digits, but more than `i32::MAX`.
    TooBig,
}

/// The largest number twemproxy can hold in a directive.
pub(crate) const MAX: u32 = i32::MAX as u32;

/// Parses a non-negative decimal number the way twemproxy's `nc_atoi` does.
pub(crate) fn atoi(s: &str) -> Atoi {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Atoi::NotANumber;
    }
    let mut value: u64 = 0;
    for b in s.bytes() {
        value = value * 10 + u64::from(b - b'0');
        if value > u64::from(MAX) {
            return Atoi::TooBig;
        }
    }
    // The loop above bounds `value` by MAX.
    Atoi::Value(u32::try_from(value).unwrap_or(MAX))
}

/// C `strtol(s, NULL, 8)` followed by a cast to `mode_t` (u32); `None` where `errno`
/// would be set (overflow of a 64-bit `long`).
pub(crate) fn strtol_octal_mode(s: &str) -> Option<u32> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        negative = bytes[i] == b'-';
        i += 1;
    }
    let mut magnitude: u128 = 0;
    while i < bytes.len() && (b'0'..=b'7').contains(&bytes[i]) {
        magnitude = magnitude * 8 + u128::from(bytes[i] - b'0');
        // Past LONG_MIN's magnitude: strtol saturates and sets ERANGE.
        if magnitude > (1u128 << 63) {
            return None;
        }
        i += 1;
    }
    let value: i128 = if negative {
        -(magnitude as i128)
    } else {
        magnitude as i128
    };
    if value > i128::from(i64::MAX) {
        return None;
    }
    // `(mode_t)long`: keep the low 32 bits.
    Some((value as i64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_like_twemproxy() {
        assert_eq!(atoi("0"), Atoi::Value(0));
        assert_eq!(atoi("0042"), Atoi::Value(42));
        assert_eq!(atoi("2147483647"), Atoi::Value(2147483647));
        assert_eq!(atoi("2147483648"), Atoi::TooBig);
        assert_eq!(atoi("99999999999999999999999999"), Atoi::TooBig);
        for bad in ["", "-1", "+5", " 1", "1 ", "1.5", "0x10", "abc", "١"] {
            assert_eq!(atoi(bad), Atoi::NotANumber, "{bad:?}");
        }
    }

    #[test]
    fn strtol_octal() {
        assert_eq!(strtol_octal_mode("0666"), Some(0o666));
        assert_eq!(strtol_octal_mode("777"), Some(0o777));
        assert_eq!(strtol_octal_mode("0999"), Some(0));
        assert_eq!(strtol_octal_mode("abc"), Some(0));
        assert_eq!(strtol_octal_mode(""), Some(0));
        assert_eq!(strtol_octal_mode("\t 644x"), Some(0o644));
        assert_eq!(strtol_octal_mode("-1"), Some(u32::MAX));
        assert_eq!(strtol_octal_mode("-0"), Some(0));
        assert_eq!(strtol_octal_mode("+644"), Some(0o644));
        assert_eq!(strtol_octal_mode("40000000000"), Some(0)); // 2^32 truncated
        assert_eq!(strtol_octal_mode("777777777777777777777"), Some(u32::MAX)); // 2^63-1
        assert_eq!(strtol_octal_mode("1000000000000000000000"), None); // 2^63: ERANGE
        assert_eq!(strtol_octal_mode("-1000000000000000000000"), Some(0)); // LONG_MIN
        assert_eq!(strtol_octal_mode("-1000000000000000000001"), None);
    }
}
