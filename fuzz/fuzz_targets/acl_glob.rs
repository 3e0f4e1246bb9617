//! Feeds arbitrary patterns and keys to the ACL key-glob matcher (`walnut::acl::glob`).
//!
//! Checks: no panic on any pattern (unclosed classes, trailing escapes, ranges written
//! backwards); `*` matches everything; a pattern with no special byte matches only itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::acl::glob::matches;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (pattern, key) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let _ = matches(pattern, key);
    assert!(matches(b"*", key));
    if !pattern.iter().any(|b| b"*?[\\".contains(b)) {
        assert_eq!(matches(pattern, key), pattern == key);
    }
});
