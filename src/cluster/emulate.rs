//! walnut as a one-node Redis Cluster, for cluster-aware clients pointed at a cluster pool:
//! `CLUSTER SLOTS`, `SHARDS`, `NODES` and `INFO` describe one master, walnut's own listen
//! address, owning all 16384 slots; `KEYSLOT`, `MYID` and `COUNTKEYSINSLOT`-free basics answer
//! as Redis does. Pure: the caller gives the announced address.

use super::slot::key_slot;

/// The node walnut announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The listen host (empty when walnut listens on every address: clients then use the
    /// host they connected to, as Redis's own empty endpoint means).
    pub host: String,
    pub port: u16,
    /// 40 hex characters, stable for a listen address.
    pub id: String,
}

impl Announce {
    /// The node for a pool listening on `host:port`.
    pub fn new(host: &str, port: u16) -> Announce {
        let unspecified = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        use md5::{Digest, Md5};
        let digest = Md5::digest(format!("walnut {host}:{port}").as_bytes());
        let mut id: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let tail = id[..8].to_string();
        id.push_str(&tail);
        Announce {
            host: if unspecified {
                String::new()
            } else {
                host.to_string()
            },
            port,
            id,
        }
    }
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

fn error(text: &str) -> Vec<u8> {
    format!("-ERR {text}\r\n").into_bytes()
}

/// The reply to `CLUSTER <args…>` (`args` without the word `CLUSTER`).
pub fn reply(args: &[&[u8]], node: &Announce) -> Vec<u8> {
    let Some(sub) = args.first() else {
        return error("wrong number of arguments for 'cluster' command");
    };
    let sub = sub.to_ascii_uppercase();
    let arity = |n: usize| args.len() == n;
    let wrong = |name: &str| {
        error(&format!(
            "wrong number of arguments for 'cluster|{name}' command"
        ))
    };
    let mut out = Vec::with_capacity(256);
    match sub.as_slice() {
        b"SLOTS" if arity(1) => {
            out.extend_from_slice(b"*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n");
            bulk(&mut out, node.host.as_bytes());
            int(&mut out, i64::from(node.port));
            bulk(&mut out, node.id.as_bytes());
        }
        b"SHARDS" if arity(1) => {
            out.extend_from_slice(
                b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n",
            );
            bulk(&mut out, b"id");
            bulk(&mut out, node.id.as_bytes());
            bulk(&mut out, b"port");
            int(&mut out, i64::from(node.port));
            bulk(&mut out, b"ip");
            bulk(&mut out, node.host.as_bytes());
            bulk(&mut out, b"endpoint");
            bulk(&mut out, node.host.as_bytes());
            bulk(&mut out, b"role");
            bulk(&mut out, b"master");
            bulk(&mut out, b"replication-offset");
            int(&mut out, 0);
            bulk(&mut out, b"health");
            bulk(&mut out, b"online");
        }
        b"NODES" if arity(1) => {
            let line = format!(
                "{} {}:{}@{} myself,master - 0 0 1 connected 0-16383\n",
                node.id,
                node.host,
                node.port,
                u32::from(node.port) + 10000
            );
            bulk(&mut out, line.as_bytes());
        }
        b"INFO" if arity(1) => {
            let text = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n";
            bulk(&mut out, text.as_bytes());
        }
        b"MYID" if arity(1) => bulk(&mut out, node.id.as_bytes()),
        b"KEYSLOT" if arity(2) => int(&mut out, i64::from(key_slot(args[1]))),
        b"SLOTS" | b"SHARDS" | b"NODES" | b"INFO" | b"MYID" | b"KEYSLOT" => {
            return wrong(&String::from_utf8_lossy(&sub).to_ascii_lowercase())
        }
        _ => {
            let shown: String = String::from_utf8_lossy(&sub[..sub.len().min(64)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            return error(&format!(
                "command 'cluster|{}' is not supported by walnut",
                shown.to_ascii_lowercase()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::redirect::NodeAddr;
    use crate::cluster::topology::from_cluster_shards;
    use crate::cluster::topology::from_cluster_slots;

    fn node() -> Announce {
        Announce::new("127.0.0.1", 22121)
    }

    #[test]
    fn the_node_id_is_40_hex_characters_and_stable() {
        let a = node();
        assert_eq!(a.id.len(), 40);
        assert!(a.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, node());
        assert_ne!(a.id, Announce::new("127.0.0.1", 22122).id);
        assert_eq!(Announce::new("0.0.0.0", 1).host, "");
    }

    #[test]
    fn slots_and_shards_read_back_as_one_node_owning_every_slot() {
        let asked = NodeAddr {
            host: "127.0.0.1".into(),
            port: 22121,
        };
        for map in [
            from_cluster_slots(&reply(&[b"slots"], &node()), &asked).expect("slots"),
            from_cluster_shards(&reply(&[b"SHARDS"], &node()), &asked).expect("shards"),
        ] {
            assert_eq!(map.nodes, vec![asked.clone()]);
            assert_eq!(map.served_slots(), 16384);
        }
    }

    #[test]
    fn keyslot_nodes_info_and_errors_read_as_redis_writes_them() {
        assert_eq!(reply(&[b"KEYSLOT", b"foo"], &node()), b":12182\r\n");
        let nodes = String::from_utf8(reply(&[b"nodes"], &node())).expect("utf8");
        assert!(nodes.contains(" 127.0.0.1:22121@32121 myself,master - 0 0 1 connected 0-16383\n"));
        let info = String::from_utf8(reply(&[b"info"], &node())).expect("utf8");
        assert!(info.contains("cluster_state:ok\r\n"));
        assert_eq!(
            reply(&[b"KEYSLOT"], &node()),
            b"-ERR wrong number of arguments for 'cluster|keyslot' command\r\n"
        );
        assert_eq!(
            reply(&[b"failover"], &node()),
            b"-ERR command 'cluster|failover' is not supported by walnut\r\n"
        );
    }
}
