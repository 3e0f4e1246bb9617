//! A real Redis Cluster on loopback, started as an operator would: N redis-servers with
//! `--cluster-enabled yes`, then `redis-cli --cluster create … --cluster-replicas 1
//! --cluster-yes`, ready once every node reports `cluster_state:ok`. Each node is stopped by
//! its PID on drop. Start one per test file, not per test: creating a cluster takes seconds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, local, wait_for_tcp, Process, RespClient, TempDir, Value};

/// One node of the cluster.
pub struct Node {
    pub port: u16,
    pub process: Process,
}

/// A running cluster.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: TempDir,
}

fn node_command(dir: &TempDir, port: u16) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.current_dir(&dir.path)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        // A replica's full sync writes the RDB it received: each node its own file, or a
        // node started later would load another's keys.
        .args(["--dbfilename", &format!("dump-{port}.rdb")])
        .args(["--cluster-node-timeout", "2000"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(["--loglevel", "warning"])
        .stdout(Stdio::null());
    cmd
}

/// A free port whose cluster bus port (port + 10000) exists too.
fn node_port() -> u16 {
    loop {
        let port = free_port();
        if port <= u16::MAX - 10000 {
            return port;
        }
    }
}

impl Cluster {
    /// `masters` masters, each with one replica.
    pub fn start(masters: usize) -> Cluster {
        let dir = TempDir::new("cluster");
        let mut nodes = Vec::new();
        for _ in 0..masters * 2 {
            let port = node_port();
            let mut process =
                Process::spawn("redis-server (cluster)", &mut node_command(&dir, port));
            wait_for_tcp(local(port), "redis-server (cluster)", &mut process);
            nodes.push(Node { port, process });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, dir };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and agrees on every slot.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self.nodes.iter().all(|node| {
                let mut client = RespClient::connect(&format!("127.0.0.1:{}", node.port));
                match client.cmd_str(&["CLUSTER", "INFO"]) {
                    Value::Bulk(info) => {
                        let info = String::from_utf8_lossy(&info);
                        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                    }
                    _ => false,
                }
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts one more cluster-enabled node, not yet part of the cluster; returns its port.
    pub fn add_empty_node(&mut self) -> u16 {
        let port = node_port();
        let mut process =
            Process::spawn("redis-server (cluster)", &mut node_command(&self.dir, port));
        wait_for_tcp(local(port), "redis-server (cluster)", &mut process);
        self.nodes.push(Node { port, process });
        port
    }

    /// The port of a replica of the master on `master`.
    pub fn replica_of(&self, master: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for node in &self.nodes {
                let mut client = RespClient::connect(&format!("127.0.0.1:{}", node.port));
                if let Value::Array(role) = client.cmd_str(&["ROLE"]) {
                    if role.first() == Some(&Value::bulk("slave"))
                        && role.get(2) == Some(&Value::Int(i64::from(master)))
                    {
                        return node.port;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no replica of {master}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client of node `index`.
    pub fn client(&self, index: usize) -> RespClient {
        RespClient::connect(&format!("127.0.0.1:{}", self.nodes[index].port))
    }

    /// The ports of the nodes whose `ROLE` is `master`.
    pub fn master_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| match self.client(*i).cmd_str(&["ROLE"]) {
                Value::Array(items) => items.first() == Some(&Value::bulk("master")),
                _ => false,
            })
            .map(|(_, n)| n.port)
            .collect()
    }
}

/// Moving one slot between masters by hand, with Redis Cluster's own commands (what
/// `redis-cli --cluster reshard` does for each slot), so a test can stop half-way.
impl Cluster {
    /// The port of each slot's master, as node 0 sees it (one `CLUSTER SLOTS`).
    pub fn slot_owners(&self) -> Vec<u16> {
        let mut owners = vec![0u16; 16384];
        let Value::Array(ranges) = self.client(0).cmd_str(&["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS is an array");
        };
        for range in ranges {
            let Value::Array(items) = range else { continue };
            let (Value::Int(first), Value::Int(last), Value::Array(master)) =
                (&items[0], &items[1], &items[2])
            else {
                continue;
            };
            let Value::Int(port) = master[1] else {
                continue;
            };
            for slot in *first..=*last {
                owners[slot as usize] = port as u16;
            }
        }
        owners
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn key_slot(&self, key: &str) -> u16 {
        match self.client(0).cmd_str(&["CLUSTER", "KEYSLOT", key]) {
            Value::Int(slot) => slot as u16,
            other => panic!("CLUSTER KEYSLOT {key}: {other:?}"),
        }
    }

    /// Step 1: `to` imports `slot` from `from`, and `from` migrates it to `to`. From now on
    /// `from` answers `-ASK` for keys of the slot it no longer has.
    pub fn begin_slot_migration(&self, slot: u16, from: u16, to: u16) {
        let slot = slot.to_string();
        let ok = Value::Status("OK".into());
        let (from_id, to_id) = (node_id(from), node_id(to));
        assert_eq!(
            node_client(to).cmd_str(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]),
            ok,
            "SETSLOT {slot} IMPORTING on {to}"
        );
        assert_eq!(
            node_client(from).cmd_str(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]),
            ok,
            "SETSLOT {slot} MIGRATING on {from}"
        );
    }

    /// Step 2: every key of `slot` still on `from` is sent to `to` (`MIGRATE … KEYS`).
    pub fn migrate_slot_keys(&self, slot: u16, from: u16, to: u16) {
        let mut source = node_client(from);
        loop {
            let Value::Array(keys) =
                source.cmd_str(&["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "100"])
            else {
                panic!("CLUSTER GETKEYSINSLOT is an array");
            };
            if keys.is_empty() {
                return;
            }
            let to_port = to.to_string();
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                b"127.0.0.1",
                to_port.as_bytes(),
                b"",
                b"0",
                b"10000",
                b"KEYS",
            ];
            for key in &keys {
                let Value::Bulk(key) = key else {
                    panic!("a key name: {key:?}")
                };
                args.push(key);
            }
            assert_eq!(
                source.cmd(&args),
                Value::Status("OK".into()),
                "MIGRATE slot {slot} from {from} to {to}"
            );
        }
    }

    /// Step 3: `slot` is served by `to`, told to `to`, then `from`, then every other master.
    pub fn finish_slot_migration(&self, slot: u16, from: u16, to: u16) {
        let to_id = node_id(to);
        let mut masters = self.master_ports();
        masters.retain(|&p| p != to && p != from);
        for port in [to, from].into_iter().chain(masters) {
            assert_eq!(
                node_client(port).cmd_str(&[
                    "CLUSTER",
                    "SETSLOT",
                    &slot.to_string(),
                    "NODE",
                    &to_id
                ]),
                Value::Status("OK".into()),
                "SETSLOT {slot} NODE on {port}"
            );
        }
    }

    /// All three steps: `slot` and its keys move from `from` to `to`.
    pub fn move_slot(&self, slot: u16, from: u16, to: u16) {
        self.begin_slot_migration(slot, from, to);
        self.migrate_slot_keys(slot, from, to);
        self.finish_slot_migration(slot, from, to);
    }
}

/// A client of the node on `port`.
pub fn node_client(port: u16) -> RespClient {
    RespClient::connect(&format!("127.0.0.1:{port}"))
}

/// The node id of the node on `port` (`CLUSTER MYID`).
pub fn node_id(port: u16) -> String {
    match node_client(port).cmd_str(&["CLUSTER", "MYID"]) {
        Value::Bulk(id) => String::from_utf8(id).expect("a UTF-8 node id"),
        other => panic!("CLUSTER MYID on {port}: {other:?}"),
    }
}
