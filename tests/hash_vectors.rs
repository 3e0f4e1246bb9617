//! Checks every hash function against twemproxy's own outputs in
//! `tests/data/hash-vectors.tsv` (`name<TAB>hexkey<TAB>u32`, `-` = empty key).
//!
//! The file also carries four `ketama_hash(align=N)` lines with a plain-text key; those
//! pin the ketama point values and are checked separately.

use walnut::dist::ketama_point_values;
use walnut::hash::HashKind;

const EXPECTED_HASH_VECTORS: usize = 3_912;
const EXPECTED_KETAMA_VECTORS: usize = 4;

fn vectors_file() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hash-vectors.tsv");
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

fn decode_hex(hex: &str) -> Vec<u8> {
    if hex == "-" {
        return Vec::new();
    }
    assert!(hex.len() % 2 == 0, "odd-length hex key {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|start| {
            u8::from_str_radix(&hex[start..start + 2], 16)
                .unwrap_or_else(|error| panic!("bad hex key {hex:?}: {error}"))
        })
        .collect()
}

/// Parses `ketama_hash(align=N)` into `N`.
fn ketama_alignment(name: &str) -> Option<usize> {
    name.strip_prefix("ketama_hash(align=")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

#[test]
fn all_hash_vectors_match_twemproxy() {
    let text = vectors_file();
    let mut checked = 0;
    let mut ketama_checked = 0;
    let mut mismatches = Vec::new();

    for (line_number, line) in text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
    {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, key, expected] = fields[..] else {
            panic!("line {line_number}: expected 3 tab-separated fields, got {line:?}");
        };
        let expected: u32 = expected
            .parse()
            .unwrap_or_else(|error| panic!("line {line_number}: bad value {expected:?}: {error}"));

        let got = if let Some(kind) = HashKind::from_name(name) {
            checked += 1;
            kind.hash(&decode_hex(key))
        } else if let Some(alignment) = ketama_alignment(name) {
            ketama_checked += 1;
            let (server, index) = key
                .rsplit_once('-')
                .unwrap_or_else(|| panic!("line {line_number}: ketama key {key:?} lacks '-'"));
            let index: u32 = index
                .parse()
                .unwrap_or_else(|error| panic!("line {line_number}: bad index: {error}"));
            ketama_point_values(server, index)[alignment]
        } else {
            panic!("line {line_number}: unknown function {name:?}");
        };

        if got != expected {
            mismatches.push(format!(
                "line {line_number}: {name} key={key} expected={expected} got={got}"
            ));
        }
    }

    for mismatch in &mismatches {
        eprintln!("{mismatch}");
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} vectors mismatched (listed above)",
        mismatches.len(),
        checked + ketama_checked
    );
    assert_eq!(checked, EXPECTED_HASH_VECTORS);
    assert_eq!(ketama_checked, EXPECTED_KETAMA_VECTORS);
}

#[test]
fn every_function_has_the_same_number_of_vectors() {
    let text = vectors_file();
    for kind in HashKind::ALL {
        let count = text
            .lines()
            .filter(|line| line.split('\t').next() == Some(kind.name()))
            .count();
        assert_eq!(
            count,
            EXPECTED_HASH_VECTORS / HashKind::ALL.len(),
            "{}",
            kind.name()
        );
    }
}

#[test]
fn names_round_trip() {
    for kind in HashKind::ALL {
        assert_eq!(HashKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(HashKind::from_name("sha1"), None);
    assert_eq!(HashKind::from_name("MD5"), None);
}
