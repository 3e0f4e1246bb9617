//! The multi-threaded data plane (`--threads`, `walnut: threads:`), against real servers:
//! clients are spread over the workers that run their pool's backend connections, backend
//! connections never multiply per thread, no reply reaches another request, and the stats
//! stay exact.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_port, local, mc::McClient, walnut_bin, MemcachedServer, Process, ProxyProcess,
    RedisServer, RespClient, TempDir, Value,
};

/// A pool named `name` over `servers` lines, with `connections` per server.
fn pool(name: &str, port: u16, redis: bool, connections: u32, servers: &[String]) -> String {
    let mut conf = format!(
        "{name}:\n  listen: 127.0.0.1:{port}\n  redis: {redis}\n  hash: fnv1a_64\n  distribution: ketama\n  server_connections: {connections}\n  servers:\n"
    );
    for line in servers {
        conf.push_str(&format!("   - {line}\n"));
    }
    conf
}

fn redis_lines(backends: &[&RedisServer]) -> Vec<String> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| b.server_line(1, Some(&format!("s{i}"))))
        .collect()
}

/// The workers the log says served clients of `pool` (`… connected to pool 'p' (worker N)`).
fn workers_in_log(log: &str, pool: &str) -> BTreeSet<usize> {
    let marker = format!("connected to pool '{pool}' (worker ");
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&marker)? + marker.len()..];
            rest[..rest.find(')')?].parse().ok()
        })
        .collect()
}

fn stats(proxy: &ProxyProcess) -> serde_json::Value {
    let text = proxy.stats_json();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats JSON ({e}): {text}"))
}

/// Server requests expected for `plain` single-server requests plus `multi` multi-key requests
/// over 2 servers: a split one sends 2 parts (and counts them in `fragments`), one whose keys
/// all hash to one server sends 1.
fn expected_server_requests(doc: &serde_json::Value, pool: &str, plain: u64, multi: u64) -> u64 {
    let fragments = doc[pool]["fragments"].as_u64().unwrap_or(0);
    assert_eq!(fragments % 2, 0, "parts of 2-server splits: {doc}");
    plain + fragments + (multi - fragments / 2)
}

/// The sum of `requests` over a pool's servers.
fn server_requests(doc: &serde_json::Value, pool: &str, servers: &[&str]) -> u64 {
    servers
        .iter()
        .map(|s| doc[pool][s]["requests"].as_u64().unwrap_or(0))
        .sum()
}

/// Polls until `check` holds or 15 s pass (the stats document is refreshed every stats
/// interval); the caller asserts afterwards, so a failure shows the values.
fn wait_until(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !check() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connections a redis-server has from clients other than the one asking.
fn redis_clients(backend: &RedisServer) -> u64 {
    let mut client = backend.client();
    let Value::Bulk(info) = client.cmd_str(&["INFO", "clients"]) else {
        panic!("INFO clients did not answer a bulk string");
    };
    let text = String::from_utf8_lossy(&info).to_string();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap_or_else(|| panic!("no connected_clients in {text}"));
    line.trim().parse::<u64>().expect("a number") - 1
}

#[test]
fn four_threads_with_four_connections_spread_clients_and_never_cross_replies() {
    let backends = [RedisServer::start(), RedisServer::start()];
    let port = free_port();
    let conf = pool(
        "alpha",
        port,
        true,
        4,
        &redis_lines(&backends.iter().collect::<Vec<_>>()),
    );
    let walnut = ProxyProcess::walnut_with(
        &conf,
        &[local(port)],
        &["--threads", "4", "-v", "7", "-i", "100"],
    );

    const CLIENTS: usize = 16;
    const KEYS: usize = 300;
    let runs: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
                let mut commands = Vec::new();
                for i in 0..KEYS {
                    let key = format!("t:{c}:{i}").into_bytes();
                    let value = format!("v:{c}:{i}").into_bytes();
                    commands.push(vec![b"SET".to_vec(), key.clone(), value]);
                    commands.push(vec![b"GET".to_vec(), key]);
                }
                let replies = client.pipeline(&commands);
                for (i, pair) in replies.chunks(2).enumerate() {
                    assert_eq!(pair[0], Value::Status("OK".into()), "client {c} SET {i}");
                    assert_eq!(
                        pair[1],
                        Value::bulk(format!("v:{c}:{i}")),
                        "client {c} GET {i}"
                    );
                }
                // One MGET over both servers: its parts run on the client's worker.
                let mut mget = vec![b"MGET".to_vec()];
                mget.extend((0..20).map(|i| format!("t:{c}:{i}").into_bytes()));
                let replies = client.pipeline(&[mget]);
                let expected: Vec<Value> =
                    (0..20).map(|i| Value::bulk(format!("v:{c}:{i}"))).collect();
                assert_eq!(replies, vec![Value::Array(expected)], "client {c} MGET");
            })
        })
        .collect();
    for run in runs {
        run.join().expect("a client thread failed");
    }

    // Every worker served clients.
    let log = walnut.log();
    assert_eq!(
        workers_in_log(&log, "alpha"),
        BTreeSet::from([0, 1, 2, 3]),
        "clients of a pool with 4 connections per server go to all 4 workers"
    );
    assert!(
        log.contains("pool 'alpha' runs on 4 of 4 threads (server_connections: 4)"),
        "{log}"
    );
    // Exactly `server_connections` per server, not one set per thread.
    for (i, backend) in backends.iter().enumerate() {
        assert_eq!(redis_clients(backend), 4, "connections to backend {i}");
    }
    // The counters of 4 threads add up exactly: 2 requests per key and one MGET per client.
    let plain = (CLIENTS * KEYS * 2) as u64;
    let settled = |doc: &serde_json::Value| {
        server_requests(doc, "alpha", &["s0", "s1"])
            == expected_server_requests(doc, "alpha", plain, CLIENTS as u64)
    };
    wait_until(|| settled(&stats(&walnut)));
    let doc = stats(&walnut);
    assert!(settled(&doc), "{doc}");
    for s in ["s0", "s1"] {
        assert_eq!(doc["alpha"][s]["server_connections"], 4, "{doc}");
    }
}

#[test]
fn one_connection_per_server_keeps_a_pool_on_one_thread_and_pools_take_turns() {
    let backend = RedisServer::start();
    let ports = [free_port(), free_port(), free_port()];
    let lines = redis_lines(&[&backend]);
    let conf: String = ["a", "b", "c"]
        .iter()
        .zip(ports)
        .map(|(name, port)| pool(name, port, true, 1, &lines))
        .collect();
    let wait: Vec<SocketAddr> = ports.iter().map(|&p| local(p)).collect();
    let walnut = ProxyProcess::walnut_with(&conf, &wait, &["--threads", "3", "-v", "7"]);

    for port in ports {
        for c in 0..6 {
            let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
            let key = format!("k:{port}:{c}");
            assert_eq!(
                client.cmd_str(&["SET", &key, "x"]),
                Value::Status("OK".into())
            );
            assert_eq!(client.cmd_str(&["GET", &key]), Value::bulk("x"));
        }
    }
    let log = walnut.log();
    let mut used = BTreeSet::new();
    for name in ["a", "b", "c"] {
        let workers = workers_in_log(&log, name);
        assert_eq!(
            workers.len(),
            1,
            "pool {name}'s clients share one worker: {workers:?}"
        );
        used.extend(workers);
        assert!(
            log.contains(&format!(
                "pool '{name}' runs on 1 of 3 threads (server_connections: 1); server_connections: 3 would spread it over all 3"
            )),
            "{log}"
        );
    }
    assert_eq!(used, BTreeSet::from([0, 1, 2]), "the pools take turns");
    // Three pools with one connection each: three connections, whatever the thread count.
    assert_eq!(redis_clients(&backend), 3);
}

#[test]
fn memcached_clients_spread_over_two_threads_and_keep_their_replies() {
    let backends = [MemcachedServer::start(), MemcachedServer::start()];
    let port = free_port();
    let lines: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| b.server_line(1, Some(&format!("m{i}"))))
        .collect();
    let conf = pool("beta", port, false, 2, &lines);
    let walnut = ProxyProcess::walnut_with(
        &conf,
        &[local(port)],
        &["--threads", "2", "-v", "7", "-i", "100"],
    );

    let runs: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = McClient::connect(local(port));
                let mut batch = Vec::new();
                for i in 0..200 {
                    let value = format!("v{c}-{i}");
                    batch.extend(
                        format!("set k{c}-{i} 0 0 {}\r\n{value}\r\n", value.len()).into_bytes(),
                    );
                }
                let replies = client.exchange(&batch, 200);
                assert!(replies.iter().all(|r| r == b"STORED\r\n"), "client {c}");
                let keys: Vec<String> = (0..200).map(|i| format!("k{c}-{i}")).collect();
                let reply = client.call(format!("get {}\r\n", keys.join(" ")).as_bytes());
                let mut expected = Vec::new();
                for i in 0..200 {
                    let value = format!("v{c}-{i}");
                    expected.extend(
                        format!("VALUE k{c}-{i} 0 {}\r\n{value}\r\n", value.len()).into_bytes(),
                    );
                }
                expected.extend_from_slice(b"END\r\n");
                assert_eq!(
                    String::from_utf8_lossy(&reply),
                    String::from_utf8_lossy(&expected),
                    "client {c}"
                );
            })
        })
        .collect();
    for run in runs {
        run.join().expect("a client thread failed");
    }
    assert_eq!(
        workers_in_log(&walnut.log(), "beta"),
        BTreeSet::from([0, 1])
    );
    // 200 sets and one multi-key get per client.
    let settled = |doc: &serde_json::Value| {
        server_requests(doc, "beta", &["m0", "m1"])
            == expected_server_requests(doc, "beta", 8 * 200, 8)
    };
    wait_until(|| settled(&stats(&walnut)));
    let doc = stats(&walnut);
    assert!(settled(&doc), "{doc}");
}

/// walnut started by hand: the suite's `WALNUT_TEST_THREADS` must not add a `--threads`.
struct HandStarted {
    process: Process,
    log: std::path::PathBuf,
    config: std::path::PathBuf,
    _dir: TempDir,
}

fn start_by_hand(config: &str, port: u16, extra: &[&str]) -> HandStarted {
    let dir = TempDir::new("threads");
    let config_path = dir.file("walnut.yml");
    let log = dir.file("walnut.log");
    std::fs::write(&config_path, config).expect("write config");
    let stats_port = free_port().to_string();
    let mut cmd = Command::new(walnut_bin());
    cmd.arg("-c")
        .arg(&config_path)
        .args(["-s", &stats_port, "-a", "127.0.0.1", "-o"])
        .arg(&log)
        .args(extra)
        .stdout(Stdio::null());
    let mut process = Process::spawn("walnut", &mut cmd);
    common::wait_for_tcp(local(port), "walnut", &mut process);
    HandStarted {
        process,
        log,
        config: config_path,
        _dir: dir,
    }
}

fn wait_for_log(walnut: &HandStarted, text: &str) -> String {
    let mut log = String::new();
    wait_until(|| {
        log = std::fs::read_to_string(&walnut.log).unwrap_or_default();
        log.contains(text)
    });
    assert!(log.contains(text), "no '{text}' in the log: {log}");
    log
}

#[test]
fn the_config_file_sets_the_threads_and_the_flag_wins() {
    let backend = RedisServer::start();
    let port = free_port();
    let conf = format!(
        "walnut:\n  threads: 3\n{}",
        pool("alpha", port, true, 3, &redis_lines(&[&backend]))
    );
    let from_file = start_by_hand(&conf, port, &[]);
    wait_for_log(&from_file, "data-plane threads: 3");
    let threads = std::fs::read_dir(format!("/proc/{}/task", from_file.process.pid()))
        .expect("the process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("walnut-worker-"))
        .count();
    assert_eq!(threads, 2, "workers 1 and 2 (worker 0 is the main thread)");
    drop(from_file);

    let port = free_port();
    let conf = format!(
        "walnut:\n  threads: 3\n{}",
        pool("alpha", port, true, 3, &redis_lines(&[&backend]))
    );
    let flagged = start_by_hand(&conf, port, &["--threads", "2", "-v", "7", "-i", "100"]);
    let log = wait_for_log(&flagged, "data-plane threads: 2");
    assert!(!log.contains("data-plane threads: 3"), "{log}");
}

#[test]
fn a_reload_that_changes_the_threads_says_a_restart_is_needed() {
    let backend = RedisServer::start();
    let port = free_port();
    let pool_text = pool("alpha", port, true, 1, &redis_lines(&[&backend]));
    let walnut = start_by_hand(&format!("walnut:\n  threads: 2\n{pool_text}"), port, &[]);
    wait_for_log(&walnut, "data-plane threads: 2");
    std::fs::write(
        &walnut.config,
        format!("walnut:\n  threads: 4\n{pool_text}"),
    )
    .unwrap();
    walnut.process.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for_log(
        &walnut,
        "reload: threads: 4 takes effect only on a restart (running 2 threads",
    );
    // The pool still serves.
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}
