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
