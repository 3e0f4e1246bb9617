//! walnut's Redis Cluster readers (`walnut::cluster`) against a real cluster of 3 masters
//! with one replica each: the slot map from the nodes' own `CLUSTER SLOTS` and
//! `CLUSTER SHARDS` replies, and key slots against `CLUSTER KEYSLOT`.

mod common;

use common::cluster::Cluster;
use common::raw::RawConn;
use common::resp::encode;
use common::{local, Value};
use walnut::cluster::redirect::{self, NodeAddr, RedirectKind};
use walnut::cluster::slot::key_slot;
use walnut::cluster::topology;

fn raw_reply(port: u16, args: &[&[u8]]) -> Vec<u8> {
    let mut conn = RawConn::connect(local(port));
    assert!(conn.send(&encode(args)));
    let replies = conn.read_replies(1);
    replies.replies.into_iter().next().expect("one reply")
}

#[test]
fn slot_maps_keyslots_and_redirects_agree_with_a_real_cluster() {
    let cluster = Cluster::start(3);
    let mut masters = cluster.master_ports();
    masters.sort_unstable();
    assert_eq!(masters.len(), 3);
    let asked = NodeAddr {
        host: "127.0.0.1".into(),
        port: cluster.nodes[0].port,
    };

    // A node learns its peers' replicas by gossip, a moment after cluster_state:ok.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (slots, shards) = loop {
        let slots = raw_reply(asked.port, &[b"CLUSTER", b"SLOTS"]);
        let shards = raw_reply(asked.port, &[b"CLUSTER", b"SHARDS"]);
        let complete = |map: Result<topology::SlotMap, _>| {
            map.is_ok_and(|m: topology::SlotMap| m.ranges.iter().all(|r| r.replicas.len() == 1))
        };
        if complete(topology::from_cluster_slots(&slots, &asked))
            && complete(topology::from_cluster_shards(&shards, &asked))
        {
            break (slots, shards);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replicas never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for map in [
        topology::from_cluster_slots(&slots, &asked).expect("CLUSTER SLOTS reads"),
        topology::from_cluster_shards(&shards, &asked).expect("CLUSTER SHARDS reads"),
    ] {
        assert_eq!(map.served_slots(), 16384);
        let mut seen: Vec<u16> = map
            .ranges
            .iter()
            .map(|r| map.nodes[r.master].port)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, masters);
        for range in &map.ranges {
            assert_eq!(range.replicas.len(), 1, "one replica per master");
        }
    }

    // Every key's slot is Redis's own, and its master is the node that takes it.
    let map = topology::from_cluster_slots(&slots, &asked).unwrap();
    let mut client = cluster.client(0);
    for i in 0..200 {
        let key = format!("user:{i}:{{tag{}}}", i % 7);
        assert_eq!(
            client.cmd_str(&["CLUSTER", "KEYSLOT", &key]),
            Value::Int(i64::from(key_slot(key.as_bytes()))),
            "{key}"
        );
    }
    // A key sent to a node that does not own it: the MOVED reply names the map's master.
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| map.master(key_slot(k.as_bytes())).map(|m| m.port) != Some(asked.port))
        .unwrap();
    let reply = raw_reply(asked.port, &[b"SET", key.as_bytes(), b"v"]);
    let moved =
        redirect::parse(&reply).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&reply)));
    assert_eq!(moved.kind, RedirectKind::Moved);
    assert_eq!(moved.slot, key_slot(key.as_bytes()));
    assert_eq!(Some(&moved.to), map.master(moved.slot));
}
