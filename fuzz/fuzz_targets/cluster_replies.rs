//! Feeds arbitrary bytes to the Redis Cluster reply readers: the RESP value tree, the
//! `CLUSTER SLOTS` and `CLUSTER SHARDS` slot-map builders, and the redirect parser.
//!
//! Checks: no panic; a slot map that builds serves only slots that are in one of its ranges,
//! each range's master and replicas are among its nodes; a parsed redirect's slot is below
//! 16384.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::cluster::redirect::{self, NodeAddr};
use walnut::cluster::{topology, value};

fn check(map: &topology::SlotMap) {
    for range in &map.ranges {
        assert!(range.first <= range.last && range.last < 16384);
        assert!(range.master < map.nodes.len());
        assert!(range.replicas.iter().all(|&r| r < map.nodes.len()));
    }
    for slot in 0..16384u16 {
        if let Some(range) = map.range(slot) {
            assert!(range.first <= slot && slot <= range.last);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let asked = NodeAddr {
        host: "127.0.0.1".into(),
        port: 7000,
    };
    let _ = value::parse(data);
    if let Ok(map) = topology::from_cluster_slots(data, &asked) {
        check(&map);
    }
    if let Ok(map) = topology::from_cluster_shards(data, &asked) {
        check(&map);
    }
    if let Some(r) = redirect::parse(data) {
        assert!(r.slot < 16384);
    }
});
