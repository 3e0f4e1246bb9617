//! A real Redis Sentinel setup on loopback, started as an operator would: per shard a master
//! redis-server and one replica (`--replicaof`), then three sentinels
//! (`redis-server sentinel-N.conf --sentinel`) monitoring every master with quorum 2. Ready once
//! every sentinel knows every master, its replica and the two other sentinels. Every process is
//! stopped by its PID on drop. Start one per test: a setup takes about two seconds, a failover
//! two to three.
//!
//! What redis-server 7.0 (Debian) needs here, found by experiment:
//! - a sentinel refuses to start without a config file, and rewrites it (known sentinels and
//!   replicas, epochs) as it learns: each sentinel has its own writable file;
//! - `bind 127.0.0.1` is enough: no `announce-ip` (everything is on one loopback address, so
//!   the addresses sentinels see are the ones clients use) and no `protected-mode no` (with an
//!   explicit `bind`, protected mode does not refuse loopback clients);
//! - `sentinel resolve-hostnames no` is accepted (and is the default): addresses stay IPs;
//! - a restarted old master comes back as a master with an empty data set; Sentinel turns it into
//!   a replica of the new master only some ten seconds later (`+convert-to-slave`), so a test
//!   that restarts one must not expect it to be a replica at once.

use std::collections::HashMap;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, local, wait_for_tcp, Process, RespClient, TempDir, Value};

/// How long a setup may take to settle, or Sentinel to replace a master.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// One redis-server of a shard, master or replica (roles change with failovers).
struct DataNode {
    shard: String,
    port: u16,
    /// The `--replicaof` port it was started with, kept so a restart uses the same arguments.
    replica_of: Option<u16>,
    /// `None` while killed.
    process: Option<Process>,
}

/// One sentinel.
struct SentinelNode {
    port: u16,
    process: Option<Process>,
}

/// A shard as it was started.
pub struct Shard {
    /// The master name Sentinel monitors.
    pub name: String,
    pub initial_master: u16,
    pub initial_replica: u16,
}

/// A running setup: shards of a master and a replica, and three sentinels.
pub struct SentinelSetup {
    pub shards: Vec<Shard>,
    // Dropped in this order: sentinels first, so none starts a failover while the nodes stop.
    sentinels: Vec<SentinelNode>,
    nodes: Vec<DataNode>,
    password: Option<String>,
    pub dir: TempDir,
}

fn node_command(dir: &TempDir, port: u16, replica_of: Option<u16>) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.current_dir(&dir.path)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        // A replica's full sync writes the RDB it received: each node its own file, or a node
        // started later would load another's keys.
        .args(["--dbfilename", &format!("dump-{port}.rdb")])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--loglevel", "warning"])
        .stdout(Stdio::null());
    if let Some(master) = replica_of {
        cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    cmd
}

fn start_node(dir: &TempDir, port: u16, replica_of: Option<u16>) -> Process {
    let mut process = Process::spawn(
        "redis-server (sentinel setup)",
        &mut node_command(dir, port, replica_of),
    );
    wait_for_tcp(local(port), "redis-server (sentinel setup)", &mut process);
    process
}

/// The text of `sentinel-N.conf`.
fn sentinel_conf(port: u16, masters: &[(&str, u16)], password: Option<&str>) -> String {
    let mut conf = format!(
        "port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames no\nlogfile sentinel-{port}.log\n"
    );
    if let Some(password) = password {
        // Clients must AUTH, and the sentinels use the same password with each other.
        conf.push_str(&format!("requirepass {password}\n"));
    }
    for (name, master) in masters {
        conf.push_str(&format!(
            "sentinel monitor {name} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n"
        ));
    }
    conf
}

/// A client of `port`, or `None` if nothing answers there (a killed node).
fn try_client(port: u16) -> Option<RespClient> {
    let stream = TcpStream::connect_timeout(&local(port), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_nodelay(true).ok()?;
    Some(RespClient::over(stream))
}

/// `ROLE` of the node on `port`: its kind (`master`, `slave`), for a replica its master's port
/// and whether the link to it is up (`connected`); `None` if nothing answers.
fn role(port: u16) -> Option<(String, Option<u16>, bool)> {
    let Value::Array(items) = try_client(port)?.cmd_str(&["ROLE"]) else {
        return None;
    };
    let Some(Value::Bulk(kind)) = items.first() else {
        return None;
    };
    let kind = String::from_utf8_lossy(kind).into_owned();
    let master = match items.get(2) {
        Some(Value::Int(port)) if kind == "slave" => u16::try_from(*port).ok(),
        _ => None,
    };
    let connected = items.get(3) == Some(&Value::bulk("connected"));
    Some((kind, master, connected))
}

impl SentinelSetup {
    /// One shard (master + replica) per name, and three sentinels monitoring them.
    pub fn start(shards: &[&str]) -> SentinelSetup {
        SentinelSetup::start_with(shards, None)
    }

    /// Like [`SentinelSetup::start`], the sentinels requiring `password` (`requirepass`).
    pub fn start_with(shards: &[&str], password: Option<&str>) -> SentinelSetup {
        let dir = TempDir::new("sentinel");
        let mut nodes = Vec::new();
        let mut started = Vec::new();
        for name in shards {
            let master = free_port();
            nodes.push(DataNode {
                shard: name.to_string(),
                port: master,
                replica_of: None,
                process: Some(start_node(&dir, master, None)),
            });
            let replica = free_port();
            nodes.push(DataNode {
                shard: name.to_string(),
                port: replica,
                replica_of: Some(master),
                process: Some(start_node(&dir, replica, Some(master))),
            });
            started.push(Shard {
                name: name.to_string(),
                initial_master: master,
                initial_replica: replica,
            });
        }
        let masters: Vec<(&str, u16)> = started
            .iter()
            .map(|s| (s.name.as_str(), s.initial_master))
            .collect();
        let mut sentinels = Vec::new();
        for n in 1..=3 {
            let port = free_port();
            let file = format!("sentinel-{n}.conf");
            std::fs::write(dir.file(&file), sentinel_conf(port, &masters, password))
                .expect("write the sentinel config");
            let mut cmd = Command::new("redis-server");
            cmd.current_dir(&dir.path)
                .arg(&file)
                .arg("--sentinel")
                .stdout(Stdio::null());
            let mut process = Process::spawn("redis-server --sentinel", &mut cmd);
            wait_for_tcp(local(port), "redis-server --sentinel", &mut process);
            sentinels.push(SentinelNode {
                port,
                process: Some(process),
            });
        }
        let setup = SentinelSetup {
            shards: started,
            sentinels,
            nodes,
            password: password.map(str::to_string),
            dir,
        };
        setup.wait_settled();
        setup
    }

    /// Waits until every replica is in sync with its master and every sentinel reports every
    /// master at its address, with status ok, one replica and three sentinels.
    fn wait_settled(&self) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let replicas_synced = self.shards.iter().all(|s| {
                role(s.initial_replica) == Some(("slave".into(), Some(s.initial_master), true))
            });
            let sentinels_agree = replicas_synced
                && self.sentinels.iter().all(|sentinel| {
                    let masters = self.info_sentinel(sentinel.port);
                    self.shards.iter().all(|s| {
                        masters.get(&s.name).is_some_and(|m| {
                            m.get("status").map(String::as_str) == Some("ok")
                                && m.get("address")
                                    == Some(&format!("127.0.0.1:{}", s.initial_master))
                                && m.get("slaves").map(String::as_str) == Some("1")
                                && m.get("sentinels").map(String::as_str) == Some("3")
                        })
                    })
                });
            if sentinels_agree {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel setup never settled (replicas synced: {replicas_synced}); \
                 INFO sentinel of each sentinel: {:?}\n{}",
                self.sentinels
                    .iter()
                    .map(|s| self.info_sentinel(s.port))
                    .collect::<Vec<_>>(),
                self.sentinel_log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client of the sentinel on `port`, authenticated if the sentinels need it.
    fn sentinel_client(&self, port: u16) -> Option<RespClient> {
        let mut client = try_client(port)?;
        if let Some(password) = &self.password {
            match client.cmd_str(&["AUTH", password]) {
                Value::Status(ok) if ok == "OK" => {}
                other => panic!("AUTH to the sentinel on {port}: {other:?}"),
            }
        }
        Some(client)
    }

    /// `INFO sentinel` of the sentinel on `port`, per master name: its `key=value` fields
    /// (`status`, `address`, `slaves`, `sentinels`). Empty if it does not answer.
    fn info_sentinel(&self, port: u16) -> HashMap<String, HashMap<String, String>> {
        let Some(mut client) = self.sentinel_client(port) else {
            return HashMap::new();
        };
        let Value::Bulk(info) = client.cmd_str(&["INFO", "sentinel"]) else {
            return HashMap::new();
        };
        String::from_utf8_lossy(&info)
            .lines()
            .filter(|line| line.starts_with("master"))
            .filter_map(|line| {
                let (_, fields) = line.split_once(':')?;
                let fields: HashMap<String, String> = fields
                    .split(',')
                    .filter_map(|f| f.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Some((fields.get("name")?.clone(), fields))
            })
            .collect()
    }

    /// The last lines of the first sentinel's log, for panic messages.
    fn sentinel_log_tail(&self) -> String {
        let Some(first) = self.sentinels.first() else {
            return String::new();
        };
        let log = std::fs::read_to_string(self.dir.file(&format!("sentinel-{}.log", first.port)))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "sentinel {} log, last lines:\n{}",
            first.port,
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// `SENTINEL get-master-addr-by-name` from the sentinel on `port`: the master's port.
    fn master_from(&self, port: u16, shard: &str) -> Option<u16> {
        let reply =
            self.sentinel_client(port)?
                .cmd_str(&["SENTINEL", "get-master-addr-by-name", shard]);
        match reply {
            Value::Array(addr) => match addr.as_slice() {
                [Value::Bulk(_host), Value::Bulk(port)] => {
                    String::from_utf8_lossy(port).parse().ok()
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The `sentinels:` lines of a walnut pool for this setup.
    pub fn sentinels_yaml(&self) -> String {
        let mut yaml = String::from("  sentinels:\n");
        for port in self.sentinel_ports() {
            yaml.push_str(&format!("   - 127.0.0.1:{port}\n"));
        }
        yaml
    }

    /// The `servers:` lines of a walnut pool: each shard's initial master, weight 1, named.
    pub fn servers_yaml(&self) -> String {
        let mut yaml = String::from("  servers:\n");
        for shard in &self.shards {
            yaml.push_str(&format!(
                "   - 127.0.0.1:{}:1 {}\n",
                shard.initial_master, shard.name
            ));
        }
        yaml
    }

    fn shard(&self, name: &str) -> &Shard {
        self.shards
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no shard {name} in this setup"))
    }

    /// The port of the shard's first master, as started.
    pub fn initial_master(&self, shard: &str) -> u16 {
        self.shard(shard).initial_master
    }

    /// The port of the shard's first replica, as started.
    pub fn initial_replica(&self, shard: &str) -> u16 {
        self.shard(shard).initial_replica
    }

    /// The shard's master now, by the first sentinel that answers.
    pub fn current_master(&self, shard: &str) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.process.is_some())
            .find_map(|s| self.master_from(s.port, shard))
            .unwrap_or_else(|| panic!("no sentinel answers get-master-addr-by-name {shard}"))
    }

    /// The ports of the shard's running nodes whose `ROLE` is a replica (of any master), asked
    /// of the nodes themselves, not of the sentinels.
    pub fn replica_ports(&self, shard: &str) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.shard == shard && n.process.is_some())
            .filter(|n| role(n.port).is_some_and(|(kind, _, _)| kind == "slave"))
            .map(|n| n.port)
            .collect()
    }

    /// `ROLE` of the node on `port`: `"master"` or `"slave"`; `None` if it does not answer.
    pub fn role_of(&self, port: u16) -> Option<String> {
        role(port).map(|(kind, _, _)| kind)
    }

    /// A direct client of the node (or sentinel) on `port`.
    pub fn client(&self, port: u16) -> RespClient {
        RespClient::connect(&format!("127.0.0.1:{port}"))
    }

    /// SIGKILLs the shard's current master (by its PID); returns its port. The process is
    /// remembered: [`SentinelSetup::restart_node`] starts it again.
    pub fn kill_master(&mut self, shard: &str) -> u16 {
        let port = self.current_master(shard);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("the sentinels name {port} as {shard}'s master: not ours"));
        let mut process = node
            .process
            .take()
            .unwrap_or_else(|| panic!("{shard}'s master on {port} is already killed"));
        process.kill_now();
        port
    }

    /// Starts a killed node again on its port with the arguments it first had. An old master
    /// comes back as a master; Sentinel turns it into a replica of the new one seconds later.
    pub fn restart_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on {port} in this setup"));
        assert!(node.process.is_none(), "the node on {port} is running");
        node.process = Some(start_node(&self.dir, port, node.replica_of));
    }

    /// Waits until every running sentinel names a master of `shard` other than `old`, and that
    /// node's `ROLE` is master; returns its port.
    pub fn wait_master_change(&self, shard: &str, old: u16) -> u16 {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let seen: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .filter(|s| s.process.is_some())
                .map(|s| self.master_from(s.port, shard))
                .collect();
            if let Some(Some(new)) = seen.first() {
                let agreed = seen.iter().all(|s| *s == Some(*new));
                if agreed && *new != old && self.role_of(*new).as_deref() == Some("master") {
                    return *new;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new master of {shard} (old {old}) within {SETTLE_LIMIT:?}; the sentinels \
                 name {seen:?}\n{}",
                self.sentinel_log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the node on `port` is a replica, in sync, of the shard's current master.
    pub fn wait_replica_of_current(&self, shard: &str, port: u16) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let master = self.current_master(shard);
            let seen = role(port);
            if seen == Some(("slave".into(), Some(master), true)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{port} never became an in-sync replica of {shard}'s master {master}; ROLE: \
                 {seen:?}\n{}",
                self.sentinel_log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A graceful `SENTINEL FAILOVER` of `shard`; returns the new master's port once every
    /// sentinel names it. Retried while Sentinel answers `-INPROG` or `-NOGOODSLAVE` (a replica
    /// it has not yet seen in sync).
    pub fn failover(&self, shard: &str) -> u16 {
        let old = self.current_master(shard);
        let deadline = Instant::now() + SETTLE_LIMIT;
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.process.is_some())
            .expect("a running sentinel");
        loop {
            let reply = self
                .sentinel_client(sentinel.port)
                .expect("the sentinel answers")
                .cmd_str(&["SENTINEL", "FAILOVER", shard]);
            match reply {
                Value::Status(ok) if ok == "OK" => break,
                Value::Error(e) if e.starts_with("INPROG") || e.starts_with("NOGOODSLAVE") => {
                    assert!(
                        Instant::now() < deadline,
                        "SENTINEL FAILOVER {shard} kept failing: {e}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => panic!("SENTINEL FAILOVER {shard}: {other:?}"),
            }
        }
        self.wait_master_change(shard, old)
    }

    /// Stops every sentinel (SIGKILL, by PID); the data nodes keep running.
    pub fn stop_sentinels(&mut self) {
        for sentinel in &mut self.sentinels {
            if let Some(mut process) = sentinel.process.take() {
                process.kill_now();
            }
        }
    }
}
