//! Sentinel pools (issue 19) against a real setup, started once for this file: two shards of
//! a master and a replica, three sentinels. Keys stay where twemproxy's placement by name puts
//! them; a SIGKILLed master and a graceful `SENTINEL FAILOVER` move a shard's traffic to its
//! new master with no crossed reply; a restarted old master gets no write; replica reads; and
//! with every sentinel stopped traffic goes on, on connections that never dropped.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sentinel::SentinelSetup;
use common::{blocked_clients, free_port, local, ok, ProxyProcess, RespClient, Value};

fn pool(name: &str, listen: u16, setup: &SentinelSetup, extra: &str) -> String {
    format!(
        "{name}:\n  listen: 127.0.0.1:{listen}\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 3000\n{extra}{}{}",
        setup.sentinels_yaml(),
        setup.servers_yaml()
    )
}

/// The `calls` of `cmdstat_<command>` on a node.
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

/// Keys through walnut, sorted by the shard whose initial master holds them.
fn keys_by_shard(setup: &SentinelSetup, walnut: u16) -> (Vec<String>, Vec<String>) {
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    let (mut one, mut two) = (Vec::new(), Vec::new());
    let mut on_one = setup.client(setup.initial_master("shard1"));
    for i in 0..200 {
        let key = format!("ha:{i}");
        assert_eq!(client.cmd_str(&["SET", &key, "seed"]), ok());
        if on_one.cmd_str(&["EXISTS", &key]) == Value::Int(1) {
            one.push(key);
        } else {
            two.push(key);
        }
    }
    assert!(!one.is_empty() && !two.is_empty(), "both shards hold keys");
    (one, two)
}

/// Scenario 1: walnut places keys exactly as nutcracker does for the same config without
/// `sentinels:` (placement by name).
fn keys_land_where_nutcracker_puts_them(setup: &SentinelSetup, walnut: u16) {
    let port = free_port();
    let config = format!(
        "plain:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n{}",
        setup.servers_yaml()
    );
    let _nutcracker = ProxyProcess::nutcracker(&config, &[local(port)]);
    let mut nut = RespClient::connect(&format!("127.0.0.1:{port}"));
    let mut wal = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    for i in 0..300 {
        let key = format!("placed:{i}");
        let value = format!("n{i}");
        assert_eq!(nut.cmd_str(&["SET", &key, &value]), ok());
        assert_eq!(wal.cmd_str(&["GET", &key]), Value::bulk(&value), "{key}");
    }
}

/// Scenario 5: reads reach the replicas, writes the masters.
fn replica_reads(setup: &SentinelSetup, walnut: u16) {
    let masters = [
        setup.initial_master("shard1"),
        setup.initial_master("shard2"),
    ];
    let replicas = [
        setup.initial_replica("shard1"),
        setup.initial_replica("shard2"),
    ];
    let sum = |ports: &[u16], c: &str| -> u64 { ports.iter().map(|&p| command_calls(p, c)).sum() };
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    // The poller must have read the replicas first: wait for a read to reach one.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = sum(&replicas, "get");
    while sum(&replicas, "get") == before {
        assert!(Instant::now() < deadline, "no read ever reached a replica");
        client.cmd_str(&["GET", "ha:0"]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (replica_gets, master_gets, master_sets) = (
        sum(&replicas, "get"),
        sum(&masters, "get"),
        sum(&masters, "set"),
    );
    for i in 0..100 {
        assert_eq!(client.cmd_str(&["SET", &format!("rr:{i}"), "v"]), ok());
        client.cmd_str(&["GET", &format!("rr:{i}")]);
    }
    assert!(
        sum(&replicas, "get") >= replica_gets + 100,
        "reads reach replicas"
    );
    assert_eq!(
        sum(&masters, "get"),
        master_gets,
        "no read reached a master"
    );
    assert!(
        sum(&masters, "set") >= master_sets + 100,
        "writes reach masters"
    );
}

/// Clients pipelining SET+GET pairs on `keys` until `stop`: (errors, wrong values, pairs).
fn traffic(
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
                    let mut commands = Vec::new();
                    let mut values = Vec::new();
                    // Each client has keys of its own (index ≡ c mod clients): a GET can only
                    // see its own SET.
                    let mine: Vec<&String> = keys.iter().skip(c).step_by(clients).collect();
                    for i in 0..8 {
                        let key = mine[(round * 8 + i) % mine.len()].clone();
                        let value = format!("c{c}r{round}i{i}");
                        commands.push(vec![
                            b"SET".to_vec(),
                            key.clone().into_bytes(),
                            value.clone().into_bytes(),
                        ]);
                        commands.push(vec![b"GET".to_vec(), key.into_bytes()]);
                        values.push(value);
                    }
                    let replies = client.pipeline(&commands);
                    for (pair, value) in replies.chunks(2).zip(&values) {
                        match (&pair[0], &pair[1]) {
                            (Value::Status(s), got) if s == "OK" => {
                                if *got != Value::bulk(value) {
                                    if matches!(got, Value::Error(_)) {
                                        errors += 1;
                                    } else {
                                        wrong += 1;
                                        eprintln!("wrong value {got:?} for {value}");
                                    }
                                }
                            }
                            (Value::Error(e), _) => {
                                errors += 1;
                                if errors < 5 {
                                    eprintln!("client {c}: {e}");
                                }
                            }
                            (other, _) => {
                                wrong += 1;
                                eprintln!("a SET answered {other:?}");
                            }
                        }
                        done += 1;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                (errors, wrong, done)
            })
        })
        .collect()
}

fn stop(
    flag: &AtomicBool,
    threads: Vec<std::thread::JoinHandle<(usize, usize, usize)>>,
) -> (usize, usize, usize) {
    flag.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .map(|t| t.join().expect("traffic thread"))
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
}

/// Waits until `key` can be written through walnut again.
fn wait_writable(walnut: u16, key: &str) {
    let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.cmd_str(&["SET", key, "probe"]) != ok() {
        assert!(Instant::now() < deadline, "{key} never became writable");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client through walnut blocked in `BLPOP key 0` on the master on `master`; its thread
/// returns the reply.
fn blocked_pop(walnut: u16, master: u16, key: &str) -> std::thread::JoinHandle<Value> {
    let before = blocked_clients(master);
    let key = key.to_string();
    let thread = std::thread::spawn(move || {
        let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
        client.cmd_str(&["BLPOP", &key, "0"])
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while blocked_clients(master) <= before {
        assert!(
            Instant::now() < deadline,
            "the BLPOP never blocked on {master}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    thread
}

/// `RPUSH queue value` through `client` wakes the client `blocked` in `BLPOP queue 0`.
fn wakes(
    blocked: std::thread::JoinHandle<Value>,
    client: &mut RespClient,
    queue: &str,
    value: &str,
) {
    assert_eq!(client.cmd_str(&["RPUSH", queue, value]), Value::Int(1));
    assert_eq!(
        blocked.join().expect("the blocked client"),
        Value::Array(vec![Value::bulk(queue), Value::bulk(value)])
    );
}

/// The subscribers the node on `port` has for `channel`, asked directly.
fn subscribers(setup: &SentinelSetup, port: u16, channel: &str) -> Value {
    match setup.client(port).cmd_str(&["PUBSUB", "NUMSUB", channel]) {
        Value::Array(mut items) if items.len() == 2 => items.remove(1),
        other => panic!("PUBSUB NUMSUB answered {other:?}"),
    }
}

/// A client through walnut subscribed to a channel that lives on the master on `master`.
fn subscriber_on(setup: &SentinelSetup, walnut: u16, master: u16) -> (RespClient, String) {
    // The number first: fnv1a_64 puts names that differ only at the end close together.
    for i in 0..100 {
        let channel = format!("{i}:{master}:news");
        let mut client = RespClient::connect(&format!("127.0.0.1:{walnut}"));
        let confirmed = client.cmd_str(&["SUBSCRIBE", &channel]);
        assert_eq!(
            confirmed,
            Value::Array(vec![
                Value::bulk("subscribe"),
                Value::bulk(&channel),
                Value::Int(1)
            ])
        );
        if subscribers(setup, master, &channel) == Value::Int(1) {
            return (client, channel);
        }
    }
    panic!("no channel of 100 lives on {master}");
}

/// The subscription of `subscriber` to `channel` moved to the master on `master` (asked
/// directly), and a message published there through walnut reaches it.
fn subscription_followed(
    setup: &SentinelSetup,
    walnut: u16,
    subscriber: &mut RespClient,
    channel: &str,
    master: u16,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscribers(setup, master, channel) != Value::Int(1) {
        assert!(
            Instant::now() < deadline,
            "{channel} was never subscribed on the new master {master}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut publisher = RespClient::connect(&format!("127.0.0.1:{walnut}"));
    let payload = format!("after-failover-to-{master}");
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", channel, &payload]),
        Value::Int(1)
    );
    let expected = Value::Array(vec![
        Value::bulk("message"),
        Value::bulk(channel),
        Value::bulk(&payload),
    ]);
    // Messages published before the move may arrive first (once from each side).
    for _ in 0..100 {
        let message = subscriber.read_value();
        if message == expected {
            return;
        }
        assert!(
            matches!(&message, Value::Array(items) if items.first() == Some(&Value::bulk("message"))),
            "a subscriber got {message:?}"
        );
    }
    panic!("{payload} never reached the subscriber");
}

fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(local(port)).expect("connect /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: walnut\r\n\r\n")
        .expect("send the request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text
}

#[test]
fn a_sentinel_pool_follows_failovers_without_moving_a_key() {
    let mut setup = SentinelSetup::start(&["shard1", "shard2"]);
    let (port, replica_port) = (free_port(), free_port());
    let config = pool("ha", port, &setup, "")
        + &pool("ha_reads", replica_port, &setup, "  read_from: replica\n");
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &config,
        &[local(port), local(replica_port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    // A client connected before anything happens, used again at the end.
    let mut early = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(early.cmd_str(&["SET", "early", "1"]), ok());

    keys_land_where_nutcracker_puts_them(&setup, port);
    let (mut one, mut two) = keys_by_shard(&setup, port);
    replica_reads(&setup, replica_port);
    // Lists for the blocked clients, one per shard, out of the traffic's way.
    let (queue_one, queue_two) = (one.pop().expect("a key"), two.pop().expect("a key"));
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        client.cmd_str(&["DEL", &queue_one, &queue_two]),
        Value::Int(2)
    );

    // Scenario 2: SIGKILL shard1's master under traffic on both shards.
    let flag = Arc::new(AtomicBool::new(false));
    let on_one = traffic(port, Arc::new(one.clone()), 2, flag.clone());
    let on_two = traffic(port, Arc::new(two.clone()), 2, flag.clone());
    // Issue 21: a client blocked on shard1, a subscriber of a shard1 channel, and one in
    // the middle of a transaction there.
    let first_master = setup.initial_master("shard1");
    let blocked_one = blocked_pop(port, first_master, &queue_one);
    let (mut subscriber_one, channel_one) = subscriber_on(&setup, port, first_master);
    let mut in_multi = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(in_multi.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        in_multi.cmd_str(&["SET", &one[0], "in-multi"]),
        Value::Status("QUEUED".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    let old_master = setup.kill_master("shard1");
    let new_master = setup.wait_master_change("shard1", old_master);
    wait_writable(port, &one[0]);
    std::thread::sleep(Duration::from_millis(500));
    let (_, wrong_one, done_one) = stop(&flag, on_one);
    let (errors_two, wrong_two, done_two) = stop(&flag, on_two);
    assert!(done_one > 0 && done_two > 0);
    assert_eq!((errors_two, wrong_two), (0, 0), "shard2 never fails");
    assert_eq!(wrong_one, 0, "no crossed reply on shard1");
    // The BLPOP the kill cut off waits on the new master now, and wakes with what is pushed.
    wakes(blocked_one, &mut client, &queue_one, "after-kill");
    // The transaction's server died under it: EXEC fails, and the next one runs on the
    // new master.
    let exec = in_multi.cmd_str(&["EXEC"]);
    assert!(matches!(exec, Value::Error(_)), "EXEC answered {exec:?}");
    assert_eq!(in_multi.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        in_multi.cmd_str(&["INCR", &queue_one]),
        Value::Status("QUEUED".into())
    );
    assert_eq!(
        in_multi.cmd_str(&["EXEC"]),
        Value::Array(vec![Value::Int(1)])
    );
    assert_eq!(
        setup.client(new_master).cmd_str(&["GET", &queue_one]),
        Value::bulk("1")
    );
    subscription_followed(&setup, port, &mut subscriber_one, &channel_one, new_master);
    // Writes acknowledged after the switch are on the new master.
    for key in &one {
        assert_eq!(client.cmd_str(&["SET", key, "after-switch"]), ok());
    }
    let mut direct = setup.client(new_master);
    for key in &one {
        assert_eq!(
            direct.cmd_str(&["GET", key]),
            Value::bulk("after-switch"),
            "{key}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !walnut.log().contains(&format!(
        "shard 'shard1' switched from 127.0.0.1:{old_master} to 127.0.0.1:{new_master}"
    )) {
        assert!(
            Instant::now() < deadline,
            "no switch line: {}",
            walnut.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A reload (the config still names the first masters) keeps each shard's current master.
    let before = walnut.log().matches("reload: pools added").count();
    walnut.rewrite_config(&config.replace("timeout: 3000", "timeout: 2500"));
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
    for key in &one {
        assert_eq!(client.cmd_str(&["SET", key, "after-reload"]), ok());
    }
    for key in &one {
        assert_eq!(
            direct.cmd_str(&["GET", key]),
            Value::bulk("after-reload"),
            "{key}"
        );
    }

    // /metrics counts the switch and labels shard1 with its new address.
    assert!(common::pool_metric(metrics_port, "walnut_pool_sentinel_switches", "ha") >= 1);
    let text = metrics_text(metrics_port);
    let address = format!(
        "walnut_server_address{{pool=\"ha\",server=\"shard1\",address=\"127.0.0.1:{new_master}\"}} 1"
    );
    assert!(text.contains(&address), "{address} in {text}");

    // Scenario 3: a graceful failover of shard2 under traffic: no error at all.
    let flag = Arc::new(AtomicBool::new(false));
    let on_two = traffic(port, Arc::new(two.clone()), 4, flag.clone());
    let blocked_two = blocked_pop(port, setup.current_master("shard2"), &queue_two);
    let (mut subscriber_two, channel_two) =
        subscriber_on(&setup, port, setup.current_master("shard2"));
    std::thread::sleep(Duration::from_millis(300));
    let promoted = setup.failover("shard2");
    std::thread::sleep(Duration::from_millis(1500));
    let (errors, wrong, done) = stop(&flag, on_two);
    assert!(done > 0);
    assert_eq!(
        (errors, wrong),
        (0, 0),
        "a graceful failover ({done} pairs)"
    );
    // The demoted master unblocked the BLPOP (-UNBLOCKED); walnut ran it again on the new
    // master, where it wakes with what is pushed.
    wakes(blocked_two, &mut client, &queue_two, "after-failover");
    subscription_followed(&setup, port, &mut subscriber_two, &channel_two, promoted);
    let mut direct = setup.client(promoted);
    assert_eq!(client.cmd_str(&["SET", &two[0], "graceful"]), ok());
    assert_eq!(direct.cmd_str(&["GET", &two[0]]), Value::bulk("graceful"));

    // Scenario 4: the old shard1 master comes back; it gets no write from walnut.
    setup.restart_node(old_master);
    setup.wait_replica_of_current("shard1", old_master);
    for key in &one {
        assert_eq!(client.cmd_str(&["SET", key, "after-restart"]), ok());
    }
    let mut back = setup.client(old_master);
    let Value::Bulk(clients) = back.cmd_str(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST is a bulk string");
    };
    let clients = String::from_utf8_lossy(&clients).into_owned();
    for line in clients.lines() {
        // Its master's replication link (flags=M) carries the writes; no client sends any.
        if !line.contains(" flags=M ") {
            assert!(
                !line.contains(" cmd=set "),
                "a client wrote to the old master: {line}"
            );
        }
    }

    // Scenario 6: every sentinel stopped: traffic goes on, and the first client is still
    // connected.
    setup.stop_sentinels();
    std::thread::sleep(Duration::from_millis(500));
    for key in one.iter().chain(&two).take(50) {
        assert_eq!(client.cmd_str(&["SET", key, "no-sentinels"]), ok());
        assert_eq!(client.cmd_str(&["GET", key]), Value::bulk("no-sentinels"));
    }
    assert_eq!(early.cmd_str(&["GET", "early"]), Value::bulk("1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !walnut.log().contains("pool 'ha': no sentinel answered") {
        assert!(
            Instant::now() < deadline,
            "no log line about the sentinels: {}",
            walnut.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // One stats entry per name.
    let stats = walnut.stats_json();
    assert!(
        stats.contains("\"shard1\"") && stats.contains("\"shard2\""),
        "{stats}"
    );
}
