//! Ketama placement through the public API, pinned to values twemproxy produced.

use walnut::dist::{ketama_point_values, Continuum, DistributionKind, WeightedServer};
use walnut::hash::HashKind;

fn live(name: &str, weight: u32) -> WeightedServer<'_> {
    WeightedServer {
        name,
        weight,
        live: true,
    }
}

fn points_per_server(continuum: &Continuum, servers: usize) -> Vec<usize> {
    (0..servers)
        .map(|index| continuum.points_of(index))
        .collect()
}

#[test]
fn weights_2_3_1_1_give_180_272_88_88_points() {
    let servers = [
        live("127.0.0.1:6379", 2),
        live("127.0.0.1:6380", 3),
        live("127.0.0.1:6381", 1),
        live("127.0.0.1:6382", 1),
    ];
    let continuum = Continuum::build(DistributionKind::Ketama, &servers);
    assert_eq!(points_per_server(&continuum, 4), [180, 272, 88, 88]);
    assert_eq!(continuum.len(), 180 + 272 + 88 + 88);
}

#[test]
fn equal_weights_give_160_points_each() {
    let names: Vec<String> = (1..=5).map(|index| format!("server{index}")).collect();
    let servers: Vec<_> = names.iter().map(|name| live(name, 1)).collect();
    let continuum = Continuum::build(DistributionKind::Ketama, &servers);
    assert_eq!(points_per_server(&continuum, 5), [160; 5]);
}

#[test]
fn twenty_five_equal_servers_lose_four_points_each_to_float32() {
    // twemproxy computes 1/25*160/4*25 in float32, which floors to 39 rather than 40.
    let names: Vec<String> = (1..=25).map(|index| format!("server{index}")).collect();
    let servers: Vec<_> = names.iter().map(|name| live(name, 7)).collect();
    let continuum = Continuum::build(DistributionKind::Ketama, &servers);
    assert_eq!(points_per_server(&continuum, 25), [156; 25]);
}

#[test]
fn point_values_match_twemproxy_vectors() {
    // ketama_hash(align=0..3) of "server1-8" in tests/data/hash-vectors.tsv.
    let expected = [3_853_726_576, 1_491_449_930, 639_619_849, 2_667_054_752];
    assert_eq!(ketama_point_values("server1", 8), expected);
    // Point 0 of a label is the md5 key hash of that label.
    assert_eq!(HashKind::Md5.hash(b"server1-8"), expected[0]);
}

#[test]
fn a_hash_equal_to_a_point_goes_to_that_points_server() {
    let servers = [live("server2", 1), live("server1", 1), live("server3", 1)];
    let continuum = Continuum::build(DistributionKind::Ketama, &servers);
    for value in ketama_point_values("server1", 8) {
        assert_eq!(continuum.pick(value), Some(1), "point {value}");
    }
}

#[test]
fn ejecting_a_server_moves_only_its_keys() {
    let healthy = [live("a", 1), live("b", 1), live("c", 1)];
    let mut degraded = healthy;
    degraded[1].live = false;
    let before = Continuum::build(DistributionKind::Ketama, &healthy);
    let after = Continuum::build(DistributionKind::Ketama, &degraded);
    assert_eq!(points_per_server(&after, 3), [160, 0, 160]);

    for step in 0..10_000u32 {
        let hash = step.wrapping_mul(429_497);
        let old = before.pick(hash).expect("live servers");
        let new = after.pick(hash).expect("live servers");
        assert_ne!(new, 1, "ejected server picked for {hash}");
        if old != 1 {
            assert_eq!(new, old, "key at {hash} moved although its server stayed");
        }
    }
}

#[test]
fn continuum_with_no_servers_picks_nothing() {
    let continuum = Continuum::build(DistributionKind::Ketama, &[]);
    assert_eq!(continuum.len(), 0);
    assert_eq!(continuum.pick(12_345), None);
}
