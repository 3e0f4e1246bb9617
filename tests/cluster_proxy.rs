//! Redis Cluster pools (issue 18) against a real cluster of 3 masters with one replica each,
//! started once for this file: walnut learns the slot map from a seed, places every key on
//! the master that owns its slot, splits multi-key commands by slot, refuses cross-slot
//! ones as Redis does, follows MOVED and ASK through a live reshard and a failover without a
//! client ever seeing them, and answers cluster-aware clients as a one-node cluster.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{free_port, local, ProxyProcess, RespClient, Value};
use walnut::cluster::slot::key_slot;

fn pool_config(listen: u16, seeds: &[u16], extra: &str) -> String {
    let mut config = format!(
        "cluster:\n  listen: 127.0.0.1:{listen}\n  redis_cluster: true\n  timeout: 3000\n{extra}  servers:\n"
    );
    for seed in seeds {
        config.push_str(&format!("   - 127.0.0.1:{seed}:1\n"));
    }
    config
}

/// Waits until walnut answers a key on every master (its first slot map is in).
fn wait_for_slot_map(client: &mut RespClient) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.cmd_str(&["SET", "walnut:probe", "1"]) == Value::Status("OK".into()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "walnut never learned the slot map"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The port of the master that owns `slot`.
fn owner_of(cluster: &Cluster, slot: u16) -> u16 {
    cluster.slot_owners()[usize::from(slot)]
}

fn node_id(port: u16) -> String {
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    match client.cmd_str(&["CLUSTER", "MYID"]) {
        Value::Bulk(id) => String::from_utf8(id).expect("utf8 id"),
        other => panic!("CLUSTER MYID: {other:?}"),
    }
}

fn redis_cli_cluster(args: &[&str]) {
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli --cluster");
    assert!(
        out.status.success(),
        "redis-cli --cluster {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scenario 1: 10,000 keys written through walnut each live on their slot's master.
fn every_key_lands_on_the_master_of_its_slot(cluster: &Cluster, walnut: u16) {
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    let commands: Vec<Vec<Vec<u8>>> = (0..10_000)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("placed:{i}").into_bytes(),
                format!("v{i}").into_bytes(),
            ]
        })
        .collect();
    for chunk in commands.chunks(500) {
        let replies = client.pipeline(chunk);
        assert!(replies.iter().all(|r| *r == Value::Status("OK".into())));
    }
    let masters = cluster.master_ports();
    let owners = cluster.slot_owners();
    for i in (0..10_000).step_by(7) {
        let key = format!("placed:{i}");
        let slot = key_slot(key.as_bytes());
        let owner = owners[usize::from(slot)];
        let mut direct = RespClient::connect(&format!("127.0.0.1:{owner}"));
        assert_eq!(
            direct.cmd_str(&["GET", &key]),
            Value::bulk(format!("v{i}")),
            "{key} (slot {slot}) on its master {owner}"
        );
        for other in masters.iter().filter(|&&p| p != owner) {
            let mut elsewhere = RespClient::connect(&format!("127.0.0.1:{other}"));
            // Another master answers MOVED: the key is not there.
            assert!(
                matches!(elsewhere.cmd_str(&["GET", &key]), Value::Error(e) if e.starts_with("MOVED"))
            );
        }
    }
}

/// Scenario 2: multi-key commands split by slot; cross-slot ones refused as Redis does.
fn multi_key_commands_split_by_slot_and_crossslot_is_refused(walnut: u16) {
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    let keys: Vec<String> = (0..100).map(|i| format!("multi:{i}")).collect();
    let mut mset: Vec<&str> = vec!["MSET"];
    let values: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for (k, v) in keys.iter().zip(&values) {
        mset.push(k);
        mset.push(v);
    }
    assert_eq!(client.cmd_str(&mset), Value::Status("OK".into()));
    let mut mget: Vec<&str> = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("multi:absent");
    let Value::Array(got) = client.cmd_str(&mget) else {
        panic!("MGET gives an array");
    };
    assert_eq!(got.len(), 101);
    for (i, value) in got.iter().take(100).enumerate() {
        assert_eq!(*value, Value::bulk(format!("m{i}")), "MGET position {i}");
    }
    assert_eq!(got[100], Value::Nil);
    let mut del: Vec<&str> = vec!["DEL"];
    del.extend(keys.iter().take(60).map(String::as_str));
    del.push("multi:absent");
    assert_eq!(client.cmd_str(&del), Value::Int(60));
    let mut exists: Vec<&str> = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    assert_eq!(client.cmd_str(&exists), Value::Int(40));

    // RENAME across slots: Redis's own refusal, and the connection stays usable.
    assert_ne!(key_slot(b"multi:70"), key_slot(b"renamed:70"));
    assert_eq!(
        client.cmd_str(&["RENAME", "multi:70", "renamed:70"]),
        Value::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(client.cmd_str(&["GET", "multi:70"]), Value::bulk("m70"));
    // With a shared hash tag, the same command goes through.
    client.cmd_str(&["SET", "{user1}:a", "x"]);
    assert_eq!(
        client.cmd_str(&["RENAME", "{user1}:a", "{user1}:b"]),
        Value::Status("OK".into())
    );
    assert_eq!(client.cmd_str(&["GET", "{user1}:b"]), Value::bulk("x"));
}

/// A command walnut's table lacks (Redis 7's `PFDEBUG`) goes to the master of its key's
/// slot, by the key spec walnut read from a node; a key-less one is refused.
fn learned_commands_go_to_their_slots_master(cluster: &Cluster, walnut: &ProxyProcess, port: u16) {
    common::wait_until("walnut reads the nodes' COMMAND table", || {
        walnut.log().contains("pool 'cluster': read ").then_some(())
    });
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let keys: Vec<String> = (0..20).map(|i| format!("hll:{i}")).collect();
    let mut masters = std::collections::BTreeSet::new();
    for key in &keys {
        assert_eq!(client.cmd_str(&["PFADD", key, "x"]), Value::Int(1));
        masters.insert(owner_of(cluster, key_slot(key.as_bytes())));
    }
    assert!(masters.len() > 1, "the keys are on several masters");
    let before: u64 = masters.iter().map(|&m| command_calls(m, "pfdebug")).sum();
    for key in &keys {
        assert_eq!(
            client.cmd_str(&["PFDEBUG", "ENCODING", key]),
            Value::Status("sparse".into()),
            "{key}"
        );
    }
    let after: u64 = masters.iter().map(|&m| command_calls(m, "pfdebug")).sum();
    assert_eq!(
        after - before,
        keys.len() as u64,
        "each ran once, on its master"
    );
    assert!(matches!(client.cmd_str(&["PFSELFTEST"]), Value::Error(_)));
}

/// Cluster-aware clients see walnut as one node owning every slot.
fn cluster_commands_describe_walnut_as_one_node(walnut: u16) {
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    let Value::Array(slots) = client.cmd_str(&["CLUSTER", "SLOTS"]) else {
        panic!("CLUSTER SLOTS is an array");
    };
    assert_eq!(slots.len(), 1);
    let Value::Array(range) = &slots[0] else {
        panic!("a range")
    };
    assert_eq!(range[0], Value::Int(0));
    assert_eq!(range[1], Value::Int(16383));
    let Value::Array(node) = &range[2] else {
        panic!("a node")
    };
    assert_eq!(node[0], Value::bulk("127.0.0.1"));
    assert_eq!(node[1], Value::Int(i64::from(walnut)));
    let Value::Bulk(info) = client.cmd_str(&["CLUSTER", "INFO"]) else {
        panic!("CLUSTER INFO is a bulk string");
    };
    assert!(String::from_utf8_lossy(&info).contains("cluster_state:ok"));
    assert_eq!(
        client.cmd_str(&["CLUSTER", "KEYSLOT", "foo"]),
        Value::Int(12182)
    );
    // COMMAND (what cluster clients send at start) comes from a node.
    let Value::Array(commands) = client.cmd_str(&["COMMAND"]) else {
        panic!("COMMAND is an array");
    };
    assert!(commands.len() > 100, "COMMAND lists Redis's commands");
    // In RESP3, INFO and NODES are verbatim text, as Redis sends them.
    let mut resp3 = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    assert!(matches!(resp3.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    for sub in ["INFO", "NODES"] {
        match resp3.cmd_str(&["CLUSTER", sub]) {
            Value::Verbatim(format, text) => {
                assert_eq!(format, "txt");
                assert!(!text.is_empty());
            }
            other => panic!("CLUSTER {sub} in RESP3: {other:?}"),
        }
    }
    let Value::Verbatim(_, info) = resp3.cmd_str(&["CLUSTER", "INFO"]) else {
        unreachable!()
    };
    assert!(String::from_utf8_lossy(&info).contains("cluster_state:ok"));
}

/// Clients pipelining SET/GET pairs on `keys`, each checking every value it reads back,
/// until `stop`. Returns (errors, wrong values, pairs done).
fn start_traffic(
    walnut: u16,
    keys: Arc<Vec<String>>,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(usize, usize, usize)>> {
    (0..clients)
        .map(|c| {
            let keys = keys.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
                let (mut errors, mut wrong, mut done) = (0, 0, 0);
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let batch: Vec<(String, String)> = (0..16)
                        .map(|i| {
                            let key = &keys[(round * 16 + i + c * 7) % keys.len()];
                            (format!("{key}:{c}"), format!("c{c}r{round}i{i}"))
                        })
                        .collect();
                    let mut commands = Vec::new();
                    for (key, value) in &batch {
                        commands.push(vec![
                            b"SET".to_vec(),
                            key.clone().into_bytes(),
                            value.clone().into_bytes(),
                        ]);
                        commands.push(vec![b"GET".to_vec(), key.clone().into_bytes()]);
                    }
                    let replies = client.pipeline(&commands);
                    for (pair, (_, value)) in replies.chunks(2).zip(&batch) {
                        match (&pair[0], &pair[1]) {
                            (Value::Status(ok), got) if ok == "OK" => {
                                if *got != Value::bulk(value) {
                                    if matches!(got, Value::Error(_)) {
                                        errors += 1;
                                        eprintln!("GET error: {got:?}");
                                    } else {
                                        wrong += 1;
                                        eprintln!("wrong value: {got:?}, expected {value}");
                                    }
                                }
                            }
                            (other, _) => {
                                errors += 1;
                                eprintln!("SET error: {other:?}");
                            }
                        }
                        done += 1;
                    }
                }
                (errors, wrong, done)
            })
        })
        .collect()
}

fn stop_traffic(
    stop: &AtomicBool,
    threads: Vec<std::thread::JoinHandle<(usize, usize, usize)>>,
) -> (usize, usize, usize) {
    stop.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .map(|t| t.join().expect("traffic thread"))
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

/// `count` keys served by the master on `port` now, each a hash tag (the traffic appends
/// `:<client>`, which the tag keeps in the same slot).
fn keys_on(cluster: &Cluster, port: u16, count: usize) -> Vec<String> {
    let owners = cluster.slot_owners();
    (0..)
        .map(|i| format!("{{moving:{i}}}"))
        .filter(|key| owners[usize::from(key_slot(key.as_bytes()))] == port)
        .take(count)
        .collect()
}

/// Scenario 3: a live reshard of 3000 slots under pipelined traffic: no error, no wrong value.
fn a_live_reshard_is_invisible_to_clients(cluster: &Cluster, walnut: u16) -> (u16, u16) {
    let mut masters = cluster.master_ports();
    masters.sort_unstable();
    let (from, to) = (masters[0], masters[1]);
    let keys = Arc::new(keys_on(cluster, from, 200));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = start_traffic(walnut, keys.clone(), 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    redis_cli_cluster(&[
        "reshard",
        &format!("127.0.0.1:{from}"),
        "--cluster-from",
        &node_id(from),
        "--cluster-to",
        &node_id(to),
        "--cluster-slots",
        "3000",
        "--cluster-yes",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let (errors, wrong, done) = stop_traffic(&stop, traffic);
    assert!(done > 0);
    assert_eq!(
        (errors, wrong),
        (0, 0),
        "during the reshard ({done} SET/GET pairs)"
    );
    // Keys that moved are now on the new owner.
    let moved = keys
        .iter()
        .filter(|k| owner_of(cluster, key_slot(k.as_bytes())) == to)
        .count();
    assert!(moved > 0, "the reshard moved some of the keys in use");
    (from, to)
}

/// Scenario 6: a node added and given slots serves through walnut without a reload.
fn an_added_node_is_used_without_a_reload(cluster: &mut Cluster, walnut: &ProxyProcess, port: u16) {
    let new_port = cluster.add_empty_node();
    redis_cli_cluster(&[
        "add-node",
        &format!("127.0.0.1:{new_port}"),
        &format!("127.0.0.1:{}", cluster.nodes[0].port),
    ]);
    cluster.wait_ok();
    // Wait until the new node has joined every node's view before giving it slots.
    std::thread::sleep(Duration::from_secs(2));
    let mut masters = cluster.master_ports();
    masters.retain(|&p| p != new_port);
    redis_cli_cluster(&[
        "reshard",
        &format!("127.0.0.1:{}", masters[0]),
        "--cluster-from",
        &node_id(masters[0]),
        "--cluster-to",
        &node_id(new_port),
        "--cluster-slots",
        "500",
        "--cluster-yes",
    ]);
    cluster.wait_ok();
    let keys = keys_on(cluster, new_port, 20);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    for key in &keys {
        assert_eq!(
            client.cmd_str(&["SET", key, "new-node"]),
            Value::Status("OK".into())
        );
    }
    let mut direct = RespClient::connect(&format!("127.0.0.1:{new_port}"));
    for key in &keys {
        assert_eq!(
            direct.cmd_str(&["GET", key]),
            Value::bulk("new-node"),
            "{key} on the new node"
        );
    }
    // The new node shows in the stats once a refresh has seen it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !walnut
        .stats_json()
        .contains(&format!("\"127.0.0.1:{new_port}\""))
    {
        assert!(
            Instant::now() < deadline,
            "the new node never showed in the stats"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Scenario 4: a graceful failover (CLUSTER FAILOVER on a replica) under traffic: 0 errors.
fn a_graceful_failover_is_invisible_to_clients(cluster: &Cluster, walnut: u16) {
    let masters = cluster.master_ports();
    let master = masters[0];
    let replica = cluster.replica_of(master);
    let keys = Arc::new(keys_on(cluster, master, 100));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = start_traffic(walnut, keys, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let mut client = RespClient::connect(&format!("127.0.0.1:{replica}"));
    assert_eq!(
        client.cmd_str(&["CLUSTER", "FAILOVER"]),
        Value::Status("OK".into())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.master_ports().contains(&replica) {
        assert!(Instant::now() < deadline, "the failover never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.wait_ok();
    std::thread::sleep(Duration::from_millis(500));
    let (errors, wrong, done) = stop_traffic(&stop, traffic);
    assert!(done > 0);
    assert_eq!(
        (errors, wrong),
        (0, 0),
        "during the failover ({done} SET/GET pairs)"
    );
}

/// The `calls` of `cmdstat_<command>` in a node's `INFO commandstats`.
fn command_calls(port: u16, command: &str) -> u64 {
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let Value::Bulk(info) = client.cmd_str(&["INFO", "commandstats"]) else {
        panic!("INFO is a bulk string");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Scenario 7: with `read_from: replica`, reads reach replicas and writes reach masters.
fn reads_go_to_replicas_and_writes_to_masters(cluster: &Cluster, walnut: u16) {
    let masters = cluster.master_ports();
    let replicas: Vec<u16> = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| !masters.contains(p))
        .collect();
    let sum = |ports: &[u16], command: &str| -> u64 {
        ports.iter().map(|&p| command_calls(p, command)).sum()
    };
    let (replica_gets, master_gets) = (sum(&replicas, "get"), sum(&masters, "get"));
    let master_sets = sum(&masters, "set");
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    for i in 0..200 {
        let key = format!("read:{i}");
        assert_eq!(
            client.cmd_str(&["SET", &key, "r"]),
            Value::Status("OK".into())
        );
    }
    // A replica may lag its master by a moment: read each key until it is there.
    for i in 0..200 {
        let key = format!("read:{i}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.cmd_str(&["GET", &key]) != Value::bulk("r") {
            assert!(Instant::now() < deadline, "{key} never reached its replica");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        sum(&masters, "set") >= master_sets + 200,
        "writes reach masters"
    );
    assert!(
        sum(&replicas, "get") >= replica_gets + 200,
        "reads reach replicas"
    );
    assert_eq!(
        sum(&masters, "get"),
        master_gets,
        "no read reached a master"
    );
}

/// Scenario 8: redis-py's RedisCluster, pointed at walnut, works through it.
fn redis_py_cluster_client_works_through_walnut(walnut: u16) {
    let script = r#"
import sys
from redis.cluster import RedisCluster
rc = RedisCluster(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=30)
for i in range(300):
    rc.set(f"rpy:{i}", f"value-{i}")
assert [rc.get(f"rpy:{i}") for i in range(300)] == [f"value-{i}".encode() for i in range(300)]
assert rc.mget_nonatomic([f"rpy:{i}" for i in range(50)]) == [f"value-{i}".encode() for i in range(50)]
nodes = rc.get_nodes()
assert len(nodes) == 1 and nodes[0].port == int(sys.argv[1]), nodes
print("ok")
"#;
    assert_eq!(
        common::run_python("redis-py RedisCluster", script, &[&walnut.to_string()]),
        "ok"
    );
}

/// Scenario 5: a master killed with SIGKILL under traffic: errors only on its slots and only
/// until a replica is promoted; afterwards none; never a wrong value.
fn a_killed_master_fails_only_its_slots_until_the_promotion(cluster: &mut Cluster, walnut: u16) {
    let masters = cluster.master_ports();
    let victim = masters[0];
    let replica = cluster.replica_of(victim);
    let survivor = masters[1];
    let victim_keys = keys_on(cluster, victim, 50);
    let survivor_keys = keys_on(cluster, survivor, 50);
    let stop = Arc::new(AtomicBool::new(false));
    let on_survivor = start_traffic(walnut, Arc::new(survivor_keys), 2, stop.clone());
    let on_victim = start_traffic(walnut, Arc::new(victim_keys.clone()), 2, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let index = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim)
        .expect("the victim is a node");
    cluster.nodes[index].process.kill_now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        RespClient::connect(&format!("127.0.0.1:{replica}")).cmd_str(&["ROLE"]),
        Value::Array(role) if role.first() == Some(&Value::bulk("master"))
    ) {
        assert!(Instant::now() < deadline, "the replica was never promoted");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let during = stop_traffic(&stop, on_victim);
    let others = {
        let (errors, wrong, done) = stop_traffic(&stop, on_survivor);
        assert!(done > 0);
        (errors, wrong)
    };
    assert_eq!(others, (0, 0), "keys on other masters never fail");
    assert_eq!(
        during.1, 0,
        "no wrong value, even on the failed master's slots"
    );

    // After the promotion: no error at all on the moved slots.
    let stop = Arc::new(AtomicBool::new(false));
    let after = start_traffic(walnut, Arc::new(victim_keys), 2, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let (errors, wrong, done) = stop_traffic(&stop, after);
    assert!(done > 0);
    assert_eq!(
        (errors, wrong),
        (0, 0),
        "after the promotion ({done} pairs)"
    );
}

/// A seed that is not a cluster node, or none reachable: a clear log line, and clients get
/// `-CLUSTERDOWN` naming the pool and the last error; walnut stays up.
fn a_pool_without_a_cluster_says_so() {
    let plain = common::RedisServer::start();
    let port = free_port();
    let dead = free_port();
    let config = pool_config(port, &[plain.port, dead], "");
    let walnut = ProxyProcess::walnut(&config, &[local(port)]);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = client.cmd_str(&["GET", "k"]);
        let Value::Error(text) = reply else {
            panic!("a pool without a cluster cannot answer GET: {reply:?}");
        };
        assert!(
            text.starts_with("CLUSTERDOWN walnut has no slot map for pool 'cluster' (last error: "),
            "{text}"
        );
        if text.contains("127.0.0.1:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the error never named a node: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !walnut
        .log()
        .contains("pool 'cluster': cannot read the cluster's slot map: ")
    {
        assert!(Instant::now() < deadline, "no log line: {}", walnut.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reload that changes a cluster pool's seeds and options keeps its clients connected.
fn a_reload_keeps_cluster_clients(cluster: &Cluster, walnut: &ProxyProcess, config: &str) {
    let port = walnut_port(config);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        client.cmd_str(&["SET", "reload:k", "before"]),
        Value::Status("OK".into())
    );
    let seeds = format!("127.0.0.1:{}:1", cluster.nodes[0].port);
    let changed = config
        .replacen(&seeds, &format!("127.0.0.1:{}:1", cluster.nodes[3].port), 1)
        .replacen("timeout: 3000", "timeout: 2500", 1);
    assert_ne!(changed, config);
    let before = walnut.log().matches("reload: pools added").count();
    walnut.rewrite_config(&changed);
    walnut.process.signal(nix::sys::signal::Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while walnut.log().matches("reload: pools added").count() == before {
        assert!(
            Instant::now() < deadline,
            "no reload line: {}",
            walnut.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(client.cmd_str(&["GET", "reload:k"]), Value::bulk("before"));
    assert_eq!(
        client.cmd_str(&["SET", "reload:k", "after"]),
        Value::Status("OK".into())
    );
    assert_eq!(client.cmd_str(&["GET", "reload:k"]), Value::bulk("after"));
}

/// The listen port of the first pool in `config`.
fn walnut_port(config: &str) -> u16 {
    let line = config
        .lines()
        .find(|l| l.trim_start().starts_with("listen:"))
        .expect("listen");
    line.rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("a port")
}

#[test]
fn a_cluster_pool_serves_a_live_redis_cluster() {
    let mut cluster = Cluster::start(3);
    let port = free_port();
    let seeds = [cluster.nodes[0].port, cluster.nodes[1].port];
    let replica_port = free_port();
    let config = pool_config(port, &seeds, "")
        + &pool_config(replica_port, &seeds, "  read_from: replica\n").replacen(
            "cluster:",
            "replicas:",
            1,
        );
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &config,
        &[local(port), local(replica_port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    wait_for_slot_map(&mut client);
    wait_for_slot_map(&mut RespClient::connect(&format!(
        "127.0.0.1:{replica_port}"
    )));

    every_key_lands_on_the_master_of_its_slot(&cluster, port);
    multi_key_commands_split_by_slot_and_crossslot_is_refused(port);
    learned_commands_go_to_their_slots_master(&cluster, &walnut, port);
    cluster_commands_describe_walnut_as_one_node(port);
    reads_go_to_replicas_and_writes_to_masters(&cluster, replica_port);
    redis_py_cluster_client_works_through_walnut(port);
    a_live_reshard_is_invisible_to_clients(&cluster, port);
    a_graceful_failover_is_invisible_to_clients(&cluster, port);
    an_added_node_is_used_without_a_reload(&mut cluster, &walnut, port);
    // Every node is a server in the stats, and each topology change was logged.
    let stats = walnut.stats_json();
    for node in &cluster.nodes {
        assert!(
            stats.contains(&format!("\"127.0.0.1:{}\"", node.port)),
            "node {} in {stats}",
            node.port
        );
    }
    assert!(walnut
        .log()
        .contains("pool 'cluster': cluster topology from 127.0.0.1:"));
    // Redirects were followed (and counted), and so were refreshes and topology changes.
    assert!(common::pool_metric(metrics_port, "walnut_pool_cluster_moved", "cluster") > 0);
    assert!(common::pool_metric(metrics_port, "walnut_pool_cluster_refreshes", "cluster") > 0);
    assert!(
        common::pool_metric(
            metrics_port,
            "walnut_pool_cluster_topology_changes",
            "cluster"
        ) >= 3
    );
    a_reload_keeps_cluster_clients(&cluster, &walnut, &config);
    a_killed_master_fails_only_its_slots_until_the_promotion(&mut cluster, port);
    a_pool_without_a_cluster_says_so();
}
