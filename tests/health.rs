//! Backend health under real faults: backends killed, frozen (SIGSTOP) and restarted by PID
//! while clients pipeline; timeouts; ejection compared with nutcracker; fail-fast; limits.
//! Redis pools first, then the same for memcached pools (`redis: false`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mc::{mc_hit, mc_set, mixed_round, text, McClient};
use common::{free_port, local, ok, MemcachedServer, ProxyProcess, RedisServer, RespClient, Value};

fn pool_config(port: u16, backends: &[RedisServer], extra: &str) -> String {
    // md5 spreads short similar keys; twemproxy's default fnv1a_64 clusters them.
    let mut conf = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n{extra}  servers:\n"
    );
    for backend in backends {
        conf.push_str(&format!("   - {}\n", backend.server_line(1, None)));
    }
    conf
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Pipelines SET/GET pairs with unique keys and values until `stop`; every reply must be its
/// own request's reply or an error — never another request's.
fn hammer(
    port: u16,
    client: usize,
    stop: Arc<AtomicBool>,
    checked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pairs: Vec<(String, String)> = (0..100)
            .map(|i| {
                (
                    format!("c{client}:r{round}:k{i}"),
                    format!("c{client}:r{round}:v{i}"),
                )
            })
            .collect();
        let commands: Vec<Vec<Vec<u8>>> = pairs
            .iter()
            .flat_map(|(k, v)| {
                [
                    vec![
                        b"SET".to_vec(),
                        k.clone().into_bytes(),
                        v.clone().into_bytes(),
                    ],
                    vec![b"GET".to_vec(), k.clone().into_bytes()],
                ]
            })
            .collect();
        let replies = conn.pipeline(&commands);
        for (i, (key, value)) in pairs.iter().enumerate() {
            match &replies[2 * i] {
                Value::Status(s) if s == "OK" => {}
                Value::Error(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("crossed reply: SET {key} got {other:?}"),
            }
            match &replies[2 * i + 1] {
                Value::Bulk(v) if v == value.as_bytes() => {}
                // The SET may have failed, or the server restarted empty.
                Value::Nil => {}
                Value::Error(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                other => panic!("crossed reply: GET {key} expected {value} got {other:?}"),
            }
        }
        checked.fetch_add(200, Ordering::Relaxed);
        round += 1;
    }
}

#[test]
fn no_reply_is_ever_crossed_while_backends_are_killed_frozen_and_restarted() {
    hunt_crossed_replies_under_faults(2, &[]);
}

/// The same hunt on 4 threads with 4 connections per server: clients on every worker, each
/// using its own worker's connections, while the faults fail and retry requests.
#[test]
fn no_reply_is_ever_crossed_under_faults_on_four_threads() {
    hunt_crossed_replies_under_faults(4, &["--threads", "4"]);
}

/// 4 clients hammer 3 backends while they are killed, frozen and restarted: every reply must
/// be the request's own (or an error), and everything works again afterwards.
fn hunt_crossed_replies_under_faults(connections: u32, extra: &[&str]) {
    let mut backends = vec![
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let port = free_port();
    let directives = format!("  timeout: 400\n  server_connections: {connections}\n");
    let conf = pool_config(port, &backends, &directives);
    let _walnut = ProxyProcess::walnut_with(&conf, &[local(port)], extra);

    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, checked, errors) = (stop.clone(), checked.clone(), errors.clone());
            std::thread::spawn(move || hammer(port, c, stop, checked, errors))
        })
        .collect();
    let progress = |at_least: u64| {
        let target = checked.load(Ordering::Relaxed) + at_least;
        wait_until("client progress", Duration::from_secs(60), || {
            checked.load(Ordering::Relaxed) >= target
        });
    };

    progress(2000);
    backends[0].kill();
    progress(2000);
    backends[0].restart();
    progress(2000);
    backends[1].pause();
    std::thread::sleep(Duration::from_millis(1500));
    backends[1].resume();
    progress(2000);
    backends[2].kill();
    progress(1000);
    backends[2].restart();
    progress(2000);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("no client saw a crossed reply");
    }
    assert!(checked.load(Ordering::Relaxed) >= 11_000);
    assert!(
        errors.load(Ordering::Relaxed) > 0,
        "the faults were visible as errors"
    );

    // After the faults, everything works again.
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    for i in 0..300 {
        let key = format!("after:{i}");
        assert_eq!(conn.cmd_str(&["SET", &key, "v"]), ok());
        assert_eq!(conn.cmd_str(&["GET", &key]), Value::bulk("v"));
    }
}

#[test]
fn a_request_to_a_frozen_backend_times_out_and_the_next_one_works() {
    let backends = vec![RedisServer::start()];
    let port = free_port();
    let _walnut = ProxyProcess::walnut(
        &pool_config(port, &backends, "  timeout: 300\n"),
        &[local(port)],
    );
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(conn.cmd_str(&["SET", "k", "v"]), ok());
    backends[0].pause();
    let started = Instant::now();
    assert_eq!(
        conn.cmd_str(&["GET", "k"]),
        Value::Error("ERR Connection timed out".into())
    );
    // Generous: the bound only proves the request did not hang.
    assert!(started.elapsed() < Duration::from_secs(10));
    backends[0].resume();
    wait_until(
        "the server to answer again",
        Duration::from_secs(20),
        || conn.cmd_str(&["GET", "k"]) == Value::bulk("v"),
    );
}

#[test]
fn without_auto_eject_a_dead_servers_keys_fail_and_never_move() {
    let mut backends = vec![RedisServer::start(), RedisServer::start()];
    let port = free_port();
    let _walnut = ProxyProcess::walnut(&pool_config(port, &backends, ""), &[local(port)]);
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    for i in 0..100 {
        assert_eq!(conn.cmd_str(&["SET", &format!("k{i}"), "v"]), ok());
    }
    let on_dead: Vec<String> = (0..100)
        .map(|i| format!("k{i}"))
        .filter(|k| backends[1].client().cmd_str(&["EXISTS", k]) == Value::Int(1))
        .collect();
    assert!(!on_dead.is_empty());
    backends[1].kill();
    for _ in 0..3 {
        for key in &on_dead {
            assert_eq!(
                conn.cmd_str(&["SET", key, "w"]),
                Value::Error("ERR Connection refused".into())
            );
        }
    }
}

/// Which backend holds each key, read directly.
fn locations(backends: &[&RedisServer]) -> BTreeMap<Vec<u8>, usize> {
    let mut found = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let Value::Array(keys) = backend.client().cmd_str(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        for key in keys {
            let Value::Bulk(key) = key else { panic!("key") };
            assert!(
                found.insert(key, index).is_none(),
                "a key is on two servers"
            );
        }
    }
    found
}

fn flush(backends: &[&RedisServer]) {
    for b in backends {
        assert_eq!(b.client().cmd_str(&["FLUSHALL"]), ok());
    }
}

fn write_keys(port: u16, n: usize) -> Vec<Value> {
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    let commands: Vec<Vec<Vec<u8>>> = (0..n)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("eject:{i}").into_bytes(),
                b"v".to_vec(),
            ]
        })
        .collect();
    conn.pipeline(&commands)
}

/// Sends GETs until one fails (the dead server is counted as failed and ejected), or until
/// `already_ejected` says the proxy noticed the death by itself (an open connection saw EOF).
fn trigger_ejection(port: u16, already_ejected: impl Fn() -> bool) {
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    for i in 0..500 {
        if let Value::Error(_) = conn.cmd_str(&["GET", &format!("probe:{i}")]) {
            return;
        }
        if already_ejected() {
            return;
        }
    }
    panic!("no request through port {port} reached the dead server");
}

#[test]
fn ejection_moves_keys_exactly_as_nutcracker_does_and_they_move_back() {
    let mut backends = vec![
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 3000\n  timeout: 1000\n";
    let (nut_port, wal_port) = (free_port(), free_port());
    let nutcracker =
        ProxyProcess::nutcracker(&pool_config(nut_port, &backends, extra), &[local(nut_port)]);
    let walnut = ProxyProcess::walnut(&pool_config(wal_port, &backends, extra), &[local(wal_port)]);

    // All live: the reference placement.
    let all: Vec<&RedisServer> = backends.iter().collect();
    flush(&all);
    assert!(write_keys(wal_port, 1000).iter().all(|r| *r == ok()));
    let all_live = locations(&all);
    drop(all);

    backends[2].kill();
    trigger_ejection(nut_port, || false);
    trigger_ejection(wal_port, || walnut.log().contains("ejecting server"));
    let live: Vec<&RedisServer> = backends[..2].iter().collect();
    flush(&live);
    assert!(
        write_keys(nut_port, 1000).iter().all(|r| *r == ok()),
        "nutcracker rehashed the dead server's keys"
    );
    let under_nutcracker = locations(&live);
    flush(&live);
    assert!(
        write_keys(wal_port, 1000).iter().all(|r| *r == ok()),
        "walnut rehashed the dead server's keys"
    );
    let under_walnut = locations(&live);
    assert_eq!(under_walnut.len(), 1000);
    assert_eq!(
        under_walnut, under_nutcracker,
        "keys move exactly as in nutcracker"
    );
    for (key, server) in &all_live {
        if *server < 2 {
            assert_eq!(
                under_walnut.get(key),
                Some(server),
                "keys of live servers stay put"
            );
        }
    }
    drop(live);

    backends[2].restart();
    wait_until(
        "walnut to probe the server and take it back",
        Duration::from_secs(30),
        || walnut.log().contains("is back in the continuum"),
    );
    let all: Vec<&RedisServer> = backends.iter().collect();
    flush(&all);
    assert!(write_keys(wal_port, 1000).iter().all(|r| *r == ok()));
    assert_eq!(
        locations(&all),
        all_live,
        "keys move back when the server returns"
    );
    drop(nutcracker);
}

#[test]
fn fail_fast_keeps_placement_and_fails_only_the_ejected_servers_keys() {
    let mut backends = vec![RedisServer::start(), RedisServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n  eject_policy: fail_fast\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&pool_config(port, &backends, extra), &[local(port)]);
    let all: Vec<&RedisServer> = backends.iter().collect();
    assert!(write_keys(port, 200).iter().all(|r| *r == ok()));
    let placement = locations(&all);
    drop(all);
    let dead_name = backends[1]
        .server_line(1, None)
        .trim_end_matches(":1")
        .to_string();
    backends[1].kill();
    trigger_ejection(port, || walnut.log().contains("ejecting server"));
    let replies = write_keys(port, 200);
    for (i, reply) in replies.iter().enumerate() {
        let key = format!("eject:{i}").into_bytes();
        match placement[&key] {
            0 => assert_eq!(reply, &ok(), "a live server's key still works"),
            _ => assert_eq!(
                reply,
                &Value::Error(format!("ERR server '{dead_name}' is ejected")),
                "key {i}"
            ),
        }
    }
}

#[test]
fn when_every_server_is_ejected_requests_get_connection_refused() {
    let mut backends = vec![RedisServer::start(), RedisServer::start()];
    let extra =
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n";
    let port = free_port();
    let _walnut = ProxyProcess::walnut(&pool_config(port, &backends, extra), &[local(port)]);
    backends[0].kill();
    backends[1].kill();
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    for i in 0..20 {
        conn.cmd_str(&["GET", &format!("k{i}")]);
    }
    for i in 0..20 {
        assert_eq!(
            conn.cmd_str(&["GET", &format!("k{i}")]),
            Value::Error("ERR Connection refused".into())
        );
    }
    assert_eq!(conn.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn the_client_limit_refuses_new_clients_cleanly_and_keeps_serving_the_others() {
    let backends = vec![RedisServer::start()];
    let port = free_port();
    let _walnut = ProxyProcess::walnut(
        &pool_config(port, &backends, "  client_connections: 2\n"),
        &[],
    );
    wait_until("walnut to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(local(port)).is_ok()
    });
    // The readiness probe above used a slot briefly; wait until it is released.
    let mut first = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(first.cmd_str(&["PING"]), Value::Status("PONG".into()));
    let mut second = None;
    wait_until("a second slot", Duration::from_secs(20), || {
        let mut c = RespClient::connect(&format!("127.0.0.1:{port}"));
        c.send_raw(b"*1\r\n$4\r\nPING\r\n");
        let ok = c.read_value() == Value::Status("PONG".into());
        if ok {
            second = Some(c);
        }
        ok
    });
    let mut third = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        third.read_value(),
        Value::Error("ERR max number of clients reached".into())
    );
    assert!(third.is_closed());
    assert_eq!(first.cmd_str(&["SET", "a", "1"]), ok());
    assert_eq!(
        second.as_mut().unwrap().cmd_str(&["GET", "a"]),
        Value::bulk("1")
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_client_that_never_reads_is_bounded() {
    let backends = vec![RedisServer::start()];
    let port = free_port();
    let walnut = ProxyProcess::walnut(&pool_config(port, &backends, ""), &[local(port)]);
    let value = vec![b'x'; 64 * 1024];
    assert_eq!(
        RespClient::connect(&format!("127.0.0.1:{port}")).cmd(&[b"SET", b"big", &value]),
        ok()
    );
    // 20,000 GETs of a 64 KiB value: 1.3 GB of replies the client never reads.
    let mut request = Vec::new();
    for _ in 0..20_000 {
        request.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    }
    let mut stream = std::net::TcpStream::connect(local(port)).unwrap();
    std::io::Write::write_all(&mut stream, &request).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(walnut.process.pid());
    assert!(
        rss < 512 * 1024,
        "walnut holds {rss} KiB for a client that does not read"
    );
    // Other clients are still served.
    let mut other = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(other.cmd_str(&["PING"]), Value::Status("PONG".into()));
    drop(stream);
}

/// Connections the backend sees, from its own CLIENT LIST, minus the asking one.
fn backend_connections(backend: &RedisServer) -> usize {
    let Value::Bulk(list) = backend.client().cmd_str(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST")
    };
    String::from_utf8_lossy(&list).lines().count() - 1
}

#[test]
fn preconnect_opens_a_connection_to_every_server_at_start() {
    let backends = vec![RedisServer::start(), RedisServer::start()];
    let port = free_port();
    let _walnut = ProxyProcess::walnut(
        &pool_config(port, &backends, "  preconnect: true\n"),
        &[local(port)],
    );
    for backend in &backends {
        wait_until(
            "the preconnected connection",
            Duration::from_secs(20),
            || backend_connections(backend) == 1,
        );
    }
    // Without preconnect nothing connects before the first request.
    let lazy = vec![RedisServer::start()];
    let lazy_port = free_port();
    let _lazy_walnut =
        ProxyProcess::walnut(&pool_config(lazy_port, &lazy, ""), &[local(lazy_port)]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(backend_connections(&lazy[0]), 0);
}

#[test]
fn a_busy_reply_is_passed_on_and_counts_toward_ejection() {
    let backends = vec![RedisServer::start(), RedisServer::start()];
    // Redis answers -BUSY once a script has run longer than this.
    assert_eq!(
        backends[0]
            .client()
            .cmd_str(&["CONFIG", "SET", "lua-time-limit", "50"]),
        ok()
    );
    let extra =
        "  auto_eject_hosts: true\n  server_failure_limit: 2\n  server_retry_timeout: 60000\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&pool_config(port, &backends, extra), &[local(port)]);
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    for i in 0..100 {
        assert_eq!(conn.cmd_str(&["SET", &format!("busy:{i}"), "v"]), ok());
    }
    let on_busy: Vec<String> = (0..100)
        .map(|i| format!("busy:{i}"))
        .filter(|k| backends[0].client().cmd_str(&["EXISTS", k]) == Value::Int(1))
        .collect();
    assert!(on_busy.len() >= 2);
    let mut script_client = backends[0].client();
    script_client.send_raw(&common::resp::encode(&[
        b"EVAL",
        b"while true do end",
        b"0",
    ]));
    std::thread::sleep(Duration::from_millis(200));
    for key in &on_busy[..2] {
        match conn.cmd_str(&["GET", key]) {
            Value::Error(e) => assert!(e.starts_with("BUSY"), "the -BUSY reply is passed on: {e}"),
            other => panic!("expected -BUSY, got {other:?}"),
        }
    }
    wait_until(
        "the busy server's ejection",
        Duration::from_secs(20),
        || walnut.log().contains("ejecting server"),
    );
    let mut killer = backends[0].client();
    assert_eq!(killer.cmd_str(&["SCRIPT", "KILL"]), ok());
}

#[test]
fn a_server_that_stays_dead_fails_its_probe_and_stays_out() {
    let mut backends = vec![RedisServer::start(), RedisServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  timeout: 500\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&pool_config(port, &backends, extra), &[local(port)]);
    backends[1].kill();
    trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("two failed probes", Duration::from_secs(30), || {
        walnut
            .log()
            .matches("is still failing its health probe")
            .count()
            >= 2
    });
    // Every key is served by the live server meanwhile: no burst of errors.
    let replies = write_keys(port, 300);
    assert!(
        replies.iter().all(|r| *r == ok()),
        "keys of the dead server stay moved while it fails its probe"
    );
    backends[1].restart();
    wait_until("the probe to succeed", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
}

#[test]
fn without_the_probe_a_server_rejoins_blindly_as_in_twemproxy() {
    let mut backends = vec![RedisServer::start(), RedisServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  health_probe: false\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&pool_config(port, &backends, extra), &[local(port)]);
    backends[1].kill();
    trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("the blind return", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
    assert!(!walnut.log().contains("health probe"));
}

// ---------------------------------------------------------------------------------------------
// memcached pools (`redis: false`)
// ---------------------------------------------------------------------------------------------

fn mc_pool_config(port: u16, backends: &[MemcachedServer], extra: &str) -> String {
    let mut conf = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: false\n  hash: md5\n{extra}  servers:\n"
    );
    for backend in backends {
        conf.push_str(&format!("   - {}\n", backend.server_line(1, None)));
    }
    conf
}

/// The `(key, value)` pairs of a `VALUE … END` reply (flags 0), or `None` if it is not one.
fn value_pairs(reply: &[u8]) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut rest = reply;
    loop {
        if rest == b"END\r\n" {
            return Some(pairs);
        }
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let words: Vec<&str> = line.split(' ').collect();
        let ["VALUE", key, "0", len] = words.as_slice() else {
            return None;
        };
        let len: usize = len.parse().ok()?;
        let data = rest.get(line_end + 2..line_end + 2 + len)?;
        if rest.get(line_end + 2 + len..line_end + 4 + len)? != b"\r\n" {
            return None;
        }
        pairs.push((key.to_string(), std::str::from_utf8(data).ok()?.to_string()));
        rest = &rest[line_end + 4 + len..];
    }
}

/// Pipelines rounds of `set`/`get` pairs with unique keys and values (every tenth `set` with
/// `noreply`, whose reply walnut must drop), then one multi-get of the round's first ten keys,
/// then a round of meta commands, until `stop`. Every reply must be its own request's reply or a `SERVER_ERROR` — never
/// another request's, never a closed connection.
fn mc_hammer(
    port: u16,
    client: usize,
    stop: Arc<AtomicBool>,
    checked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) {
    let mut conn = McClient::connect(local(port));
    let mut round = 0u64;
    let is_error = |reply: &[u8]| reply.starts_with(b"SERVER_ERROR ") && reply.ends_with(b"\r\n");
    while !stop.load(Ordering::Relaxed) {
        let pairs: Vec<(String, String)> = (0..100)
            .map(|i| {
                (
                    format!("c{client}:r{round}:k{i}"),
                    format!("c{client}:r{round}:v{i}"),
                )
            })
            .collect();
        let (request, expected_replies) = mixed_round(&pairs);
        conn.send(&request);
        let got = conn.read_replies(expected_replies);
        assert_eq!(
            got.replies.len(),
            expected_replies,
            "client {client} round {round}: the connection closed ({}) or went silent ({})",
            got.closed,
            got.timed_out
        );
        let mut replies = got.replies.iter();
        for (i, (key, value)) in pairs.iter().enumerate() {
            if i % 10 != 9 {
                let set = replies.next().unwrap();
                if is_error(set) {
                    errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    assert_eq!(text(set), "STORED\r\n", "crossed reply: set {key}");
                }
            }
            let get = replies.next().unwrap();
            if is_error(get) {
                errors.fetch_add(1, Ordering::Relaxed);
            } else if get.as_slice() != b"END\r\n" {
                // END: the set failed, or the server restarted empty.
                assert_eq!(
                    text(get),
                    text(&mc_hit(key, value)),
                    "crossed reply: get {key}"
                );
            }
        }
        let multi = replies.next().unwrap();
        if is_error(multi) {
            errors.fetch_add(1, Ordering::Relaxed);
        } else {
            // The values found, in request order: a part whose server failed has none.
            let found = value_pairs(multi)
                .unwrap_or_else(|| panic!("crossed reply: multi-get got {}", text(multi)));
            let mut wanted = pairs[..10].iter();
            for pair in &found {
                assert!(
                    wanted.any(|w| w == pair),
                    "crossed reply: multi-get of round {round} got {pair:?} in {}",
                    text(multi)
                );
            }
        }
        checked.fetch_add(expected_replies as u64, Ordering::Relaxed);
        checked.fetch_add(
            mc_meta_round(&mut conn, client, round, &errors),
            Ordering::Relaxed,
        );
        round += 1;
    }
}

/// Reads whole replies up to and including `MN`, whatever their number.
fn read_until_meta_noop(conn: &mut McClient) -> Vec<Vec<u8>> {
    let mut stream = Vec::new();
    let mut replies = Vec::new();
    loop {
        let got = conn.read_replies(1);
        assert!(
            !got.closed && !got.timed_out,
            "the connection closed ({}) or went silent ({}) before MN",
            got.closed,
            got.timed_out
        );
        // McClient hands back what follows the reply too: keep the byte stream whole.
        stream.extend(got.replies.concat());
        stream.extend(got.rest);
        while let Some(len) = common::mc::reply_len(&stream) {
            let reply: Vec<u8> = stream.drain(..len).collect();
            let done = reply == b"MN\r\n";
            replies.push(reply);
            if done {
                assert!(stream.is_empty(), "bytes after MN: {}", text(&stream));
                return replies;
            }
        }
    }
}

/// Meta commands through the same faults: five quiet `ms` (silent when stored), five `mg`,
/// then the client's own `mn`. Returns the number of requests checked.
fn mc_meta_round(conn: &mut McClient, client: usize, round: u64, errors: &AtomicU64) -> u64 {
    let pairs: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("c{client}:r{round}:m{i}"),
                format!("c{client}:r{round}:mv{i}"),
            )
        })
        .collect();
    let mut request = Vec::new();
    for (key, value) in &pairs {
        request.extend(format!("ms {key} {} q\r\n{value}\r\n", value.len()).into_bytes());
    }
    for (key, _) in &pairs {
        request.extend(format!("mg {key} v\r\n").into_bytes());
    }
    request.extend(b"mn\r\n");
    conn.send(&request);
    let replies = read_until_meta_noop(conn);
    let shown = || replies.iter().map(|r| text(r)).collect::<Vec<_>>();
    // A quiet `ms` says something only when it fails.
    let quiet_errors = replies
        .len()
        .checked_sub(pairs.len() + 1)
        .unwrap_or_else(|| panic!("crossed reply: meta round {round} got {:?}", shown()));
    assert!(quiet_errors <= pairs.len(), "{:?}", shown());
    for reply in &replies[..quiet_errors] {
        assert!(
            reply.starts_with(b"SERVER_ERROR "),
            "crossed reply: a quiet ms got {} in {:?}",
            text(reply),
            shown()
        );
        errors.fetch_add(1, Ordering::Relaxed);
    }
    for ((key, value), reply) in pairs.iter().zip(&replies[quiet_errors..]) {
        if reply.starts_with(b"SERVER_ERROR ") {
            errors.fetch_add(1, Ordering::Relaxed);
        } else if reply.as_slice() != b"EN\r\n" {
            assert_eq!(
                text(reply),
                format!("VA {}\r\n{value}\r\n", value.len()),
                "crossed reply: mg {key} in {:?}",
                shown()
            );
        }
    }
    assert_eq!(replies.last().map(Vec::as_slice), Some(&b"MN\r\n"[..]));
    (pairs.len() * 2 + 1) as u64
}

#[test]
fn no_memcached_reply_is_ever_crossed_while_backends_are_killed_frozen_and_restarted() {
    let mut backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let port = free_port();
    let conf = mc_pool_config(port, &backends, "  timeout: 400\n  server_connections: 2\n");
    let _walnut = ProxyProcess::walnut(&conf, &[local(port)]);

    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, checked, errors) = (stop.clone(), checked.clone(), errors.clone());
            std::thread::spawn(move || mc_hammer(port, c, stop, checked, errors))
        })
        .collect();
    let progress = |at_least: u64| {
        let target = checked.load(Ordering::Relaxed) + at_least;
        wait_until("client progress", Duration::from_secs(60), || {
            checked.load(Ordering::Relaxed) >= target
        });
    };

    progress(3000);
    backends[0].kill();
    progress(3000);
    backends[0].restart();
    progress(3000);
    backends[1].pause();
    std::thread::sleep(Duration::from_millis(1500));
    backends[1].resume();
    progress(3000);
    backends[2].kill();
    progress(2000);
    backends[2].restart();
    progress(3000);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("no client saw a crossed reply");
    }
    assert!(checked.load(Ordering::Relaxed) >= 17_000);
    assert!(
        errors.load(Ordering::Relaxed) > 0,
        "the faults were visible as errors"
    );

    // After the faults, everything works again.
    let mut conn = McClient::connect(local(port));
    for i in 0..300 {
        let key = format!("after:{i}");
        assert_eq!(text(&conn.call(&mc_set(&key, "v"))), "STORED\r\n");
        assert_eq!(
            text(&conn.call(format!("get {key}\r\n").as_bytes())),
            text(&mc_hit(&key, "v"))
        );
    }
}

#[test]
fn a_request_to_a_frozen_memcached_times_out_like_nutcrackers_and_the_next_one_works() {
    let backends = vec![MemcachedServer::start()];
    let (port, nut_port) = (free_port(), free_port());
    let conf = |port| mc_pool_config(port, &backends, "  timeout: 300\n");
    let _walnut = ProxyProcess::walnut(&conf(port), &[local(port)]);
    let _nutcracker = ProxyProcess::nutcracker(&conf(nut_port), &[local(nut_port)]);
    let mut conn = McClient::connect(local(port));
    let mut nut = McClient::connect(local(nut_port));
    assert_eq!(text(&conn.call(&mc_set("k", "v"))), "STORED\r\n");
    assert_eq!(text(&nut.call(b"get k\r\n")), text(&mc_hit("k", "v")));
    backends[0].pause();
    let started = Instant::now();
    assert_eq!(
        text(&conn.call(b"get k\r\n")),
        "SERVER_ERROR Connection timed out\r\n"
    );
    // Generous: the bound only proves the request did not hang.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        text(&nut.call(b"get k\r\n")),
        "SERVER_ERROR Connection timed out\r\n",
        "nutcracker answers the same"
    );
    // A multi-get whose only server is frozen: the same error, and the connection stays.
    assert_eq!(
        text(&conn.call(b"get k k2 k3\r\n")),
        "SERVER_ERROR Connection timed out\r\n"
    );
    backends[0].resume();
    wait_until(
        "the server to answer again",
        Duration::from_secs(20),
        || conn.call(b"get k\r\n") == mc_hit("k", "v"),
    );
}

/// The keys among `keys` that `backend` holds, read directly with multi-gets.
fn mc_held(backend: &MemcachedServer, keys: &[String]) -> Vec<String> {
    let mut conn = backend.client();
    let mut held = Vec::new();
    for chunk in keys.chunks(100) {
        let request = format!("get {}\r\n", chunk.join(" "));
        let reply = conn.call(request.as_bytes());
        let pairs = value_pairs(&reply).unwrap_or_else(|| panic!("direct get: {}", text(&reply)));
        held.extend(pairs.into_iter().map(|(key, _)| key));
    }
    held
}

#[test]
fn without_auto_eject_a_dead_memcacheds_keys_fail_like_nutcrackers_and_never_move() {
    let mut backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let (port, nut_port) = (free_port(), free_port());
    let _walnut = ProxyProcess::walnut(&mc_pool_config(port, &backends, ""), &[local(port)]);
    let _nutcracker =
        ProxyProcess::nutcracker(&mc_pool_config(nut_port, &backends, ""), &[local(nut_port)]);
    let mut conn = McClient::connect(local(port));
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(text(&conn.call(&mc_set(key, "v"))), "STORED\r\n");
    }
    let on_dead = mc_held(&backends[1], &keys);
    let on_live = mc_held(&backends[0], &keys);
    assert!(!on_dead.is_empty() && !on_live.is_empty());
    backends[1].kill();
    // The first request may meet walnut's old connection to it (reset) or a refused connect.
    let first = conn.call(format!("get {}\r\n", on_dead[0]).as_bytes());
    assert!(first.starts_with(b"SERVER_ERROR "), "{}", text(&first));
    let mut nut = McClient::connect(local(nut_port));
    for _ in 0..3 {
        for key in &on_dead {
            assert_eq!(
                text(&conn.call(&mc_set(key, "w"))),
                "SERVER_ERROR Connection refused\r\n"
            );
            let got = conn.call(format!("get {key}\r\n").as_bytes());
            assert_eq!(text(&got), "SERVER_ERROR Connection refused\r\n");
            assert_eq!(
                text(&nut.call(format!("get {key}\r\n").as_bytes())),
                text(&got),
                "the same reply as nutcracker's"
            );
        }
    }
    // A multi-get over both servers: walnut answers the live server's values and keeps the
    // connection open (twemproxy answers SERVER_ERROR and closes it).
    let request = format!("get {} {}\r\n", on_dead[0], on_live[0]);
    assert_eq!(
        text(&conn.call(request.as_bytes())),
        text(&mc_hit(&on_live[0], "v"))
    );
    assert_eq!(
        text(&conn.call(format!("get {}\r\n", on_live[1]).as_bytes())),
        text(&mc_hit(&on_live[1], "v"))
    );
}

fn mc_flush(backends: &[&MemcachedServer]) {
    for b in backends {
        assert_eq!(text(&b.client().call(b"flush_all\r\n")), "OK\r\n");
    }
}

fn eject_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("eject:{i}")).collect()
}

/// Which backend holds each of `keys`, read directly; no key may be on two.
fn mc_locations(backends: &[&MemcachedServer], keys: &[String]) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        for key in mc_held(backend, keys) {
            assert!(
                found.insert(key.clone(), index).is_none(),
                "{key} is on two servers"
            );
        }
    }
    found
}

/// Pipelines `set eject:<i>` for `n` keys; the replies.
fn mc_write_keys(port: u16, n: usize) -> Vec<String> {
    let mut conn = McClient::connect(local(port));
    let mut request = Vec::new();
    for key in eject_keys(n) {
        request.extend(mc_set(&key, "v"));
    }
    conn.exchange(&request, n).iter().map(|r| text(r)).collect()
}

fn all_stored(replies: &[String]) -> bool {
    replies.iter().all(|r| r == "STORED\r\n")
}

/// Sends `get`s until one fails (the dead server is counted as failed and ejected), or until
/// `already_ejected` says the proxy noticed the death by itself (an open connection saw EOF).
fn mc_trigger_ejection(port: u16, already_ejected: impl Fn() -> bool) {
    let mut conn = McClient::connect(local(port));
    for i in 0..500 {
        if conn
            .call(format!("get probe:{i}\r\n").as_bytes())
            .starts_with(b"SERVER_ERROR ")
        {
            return;
        }
        if already_ejected() {
            return;
        }
    }
    panic!("no request through port {port} reached the dead server");
}

#[test]
fn memcached_ejection_moves_keys_exactly_as_nutcracker_does_and_they_move_back() {
    let mut backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 5000\n  timeout: 1000\n";
    let wal_port = free_port();
    let walnut = ProxyProcess::walnut(
        &mc_pool_config(wal_port, &backends, extra),
        &[local(wal_port)],
    );
    let keys = eject_keys(1000);
    // A fresh nutcracker for each comparison: it has no connection to a server yet, so it
    // ejects a dead one on the first request that fails, and takes it back blindly
    // server_retry_timeout later.
    let nutcracker = |backends: &[MemcachedServer]| {
        let port = free_port();
        let process =
            ProxyProcess::nutcracker(&mc_pool_config(port, backends, extra), &[local(port)]);
        (port, process)
    };

    // All live: the reference placement, the same in both.
    let all: Vec<&MemcachedServer> = backends.iter().collect();
    mc_flush(&all);
    assert!(all_stored(&mc_write_keys(wal_port, 1000)));
    let all_live = mc_locations(&all, &keys);
    assert_eq!(all_live.len(), 1000);
    {
        let (nut_port, _nut) = nutcracker(&backends);
        mc_flush(&all);
        assert!(all_stored(&mc_write_keys(nut_port, 1000)));
        assert_eq!(
            mc_locations(&all, &keys),
            all_live,
            "all live: the same placement as nutcracker's"
        );
    }
    drop(all);

    backends[2].kill();
    // walnut's open connection sees the EOF, or a request fails: either ejects it.
    mc_trigger_ejection(wal_port, || walnut.log().contains("ejecting server"));
    let live: Vec<&MemcachedServer> = backends[..2].iter().collect();
    mc_flush(&live);
    assert!(
        all_stored(&mc_write_keys(wal_port, 1000)),
        "walnut rehashed the dead server's keys"
    );
    let under_walnut = mc_locations(&live, &keys);
    let (nut_port, nut) = nutcracker(&backends);
    mc_flush(&live);
    mc_trigger_ejection(nut_port, || false);
    assert!(
        all_stored(&mc_write_keys(nut_port, 1000)),
        "nutcracker rehashed the dead server's keys"
    );
    let under_nutcracker = mc_locations(&live, &keys);
    drop(nut);
    assert_eq!(under_walnut.len(), 1000);
    assert_eq!(
        under_walnut, under_nutcracker,
        "keys move exactly as in nutcracker"
    );
    for (key, server) in &all_live {
        if *server < 2 {
            assert_eq!(
                under_walnut.get(key),
                Some(server),
                "keys of live servers stay put"
            );
        }
    }
    drop(live);

    backends[2].restart();
    wait_until(
        "walnut to probe the server and take it back",
        Duration::from_secs(30),
        || walnut.log().contains("is back in the continuum"),
    );
    let all: Vec<&MemcachedServer> = backends.iter().collect();
    mc_flush(&all);
    assert!(all_stored(&mc_write_keys(wal_port, 1000)));
    assert_eq!(
        mc_locations(&all, &keys),
        all_live,
        "keys move back when the server returns"
    );
}

#[test]
fn memcached_fail_fast_keeps_placement_and_fails_only_the_ejected_servers_keys() {
    let mut backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n  eject_policy: fail_fast\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&mc_pool_config(port, &backends, extra), &[local(port)]);
    let keys = eject_keys(200);
    let all: Vec<&MemcachedServer> = backends.iter().collect();
    assert!(all_stored(&mc_write_keys(port, 200)));
    let placement = mc_locations(&all, &keys);
    assert_eq!(placement.len(), 200);
    drop(all);
    let dead_name = format!("{}:{}", backends[1].host, backends[1].port);
    backends[1].kill();
    mc_trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("the ejection", Duration::from_secs(20), || {
        walnut.log().contains("ejecting server")
    });
    for _ in 0..2 {
        let replies = mc_write_keys(port, 200);
        for (key, reply) in keys.iter().zip(&replies) {
            match placement[key] {
                0 => assert_eq!(reply, "STORED\r\n", "a live server's key still works"),
                _ => assert_eq!(
                    reply,
                    &format!("SERVER_ERROR server '{dead_name}' is ejected\r\n"),
                    "{key}"
                ),
            }
        }
    }
    // The live server holds only its own keys: nothing moved to it.
    let on_live = mc_held(&backends[0], &keys);
    assert!(on_live.iter().all(|k| placement[k] == 0));
    assert_eq!(
        on_live.len(),
        placement.values().filter(|&&s| s == 0).count()
    );
}

#[test]
fn when_every_memcached_is_ejected_requests_get_connection_refused() {
    let mut backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let extra =
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n";
    let port = free_port();
    let _walnut = ProxyProcess::walnut(&mc_pool_config(port, &backends, extra), &[local(port)]);
    backends[0].kill();
    backends[1].kill();
    let mut conn = McClient::connect(local(port));
    for i in 0..20 {
        conn.call(format!("get k{i}\r\n").as_bytes());
    }
    for i in 0..20 {
        assert_eq!(
            text(&conn.call(format!("get k{i}\r\n").as_bytes())),
            "SERVER_ERROR Connection refused\r\n"
        );
        assert_eq!(
            text(&conn.call(&mc_set(&format!("k{i}"), "v"))),
            "SERVER_ERROR Connection refused\r\n"
        );
    }
    assert_eq!(
        text(&conn.call(b"get a b c\r\n")),
        "SERVER_ERROR Connection refused\r\n"
    );
}

#[test]
fn a_memcached_that_stays_dead_fails_its_version_probe_and_stays_out() {
    let mut backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  timeout: 500\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&mc_pool_config(port, &backends, extra), &[local(port)]);
    backends[1].kill();
    mc_trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("two failed probes", Duration::from_secs(30), || {
        walnut
            .log()
            .matches("is still failing its health probe")
            .count()
            >= 2
    });
    // Every key is served by the live server meanwhile: no burst of errors.
    for _ in 0..3 {
        assert!(
            all_stored(&mc_write_keys(port, 300)),
            "keys of the dead server stay moved while it fails its probe"
        );
    }
    assert_eq!(mc_held(&backends[0], &eject_keys(300)).len(), 300);
    backends[1].restart();
    wait_until("the probe to succeed", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
    // Back in the continuum: some keys live on it again.
    mc_flush(&[&backends[0], &backends[1]]);
    assert!(all_stored(&mc_write_keys(port, 300)));
    assert!(!mc_held(&backends[1], &eject_keys(300)).is_empty());
}

#[test]
fn a_memcached_probe_that_gets_no_answer_keeps_a_frozen_server_out() {
    let backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  timeout: 300\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&mc_pool_config(port, &backends, extra), &[local(port)]);
    // Frozen: connections are accepted by the kernel, but `version` is never answered.
    backends[1].pause();
    mc_trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("two failed probes", Duration::from_secs(30), || {
        walnut
            .log()
            .matches("is still failing its health probe")
            .count()
            >= 2
    });
    for _ in 0..3 {
        assert!(
            all_stored(&mc_write_keys(port, 300)),
            "a frozen server stays out while it fails its probe"
        );
    }
    backends[1].resume();
    wait_until("the probe to succeed", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
}

#[test]
fn without_the_probe_a_memcached_rejoins_blindly_as_in_twemproxy() {
    let mut backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let extra = "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 300\n  health_probe: false\n";
    let port = free_port();
    let walnut = ProxyProcess::walnut(&mc_pool_config(port, &backends, extra), &[local(port)]);
    backends[1].kill();
    mc_trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("the blind return", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
    assert!(!walnut.log().contains("health probe"));
}

#[test]
fn the_client_limit_refuses_new_memcached_clients_cleanly() {
    let backends = vec![MemcachedServer::start()];
    let port = free_port();
    let _walnut = ProxyProcess::walnut(
        &mc_pool_config(port, &backends, "  client_connections: 2\n"),
        &[],
    );
    wait_until("walnut to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(local(port)).is_ok()
    });
    let mut first = McClient::connect(local(port));
    assert_eq!(text(&first.call(&mc_set("a", "1"))), "STORED\r\n");
    // The readiness probe above used a slot briefly; wait until it is released.
    let mut second = None;
    wait_until("a second slot", Duration::from_secs(20), || {
        let mut c = McClient::connect(local(port));
        c.send(b"get a\r\n");
        let got = c.read_replies(1);
        let ok = got.replies.first().map(Vec::as_slice) == Some(mc_hit("a", "1").as_slice());
        if ok {
            second = Some(c);
        }
        ok
    });
    let mut third = McClient::connect(local(port));
    let got = third.read_replies(2);
    assert_eq!(
        got.replies.iter().map(|r| text(r)).collect::<Vec<_>>(),
        vec!["SERVER_ERROR max number of clients reached\r\n".to_string()]
    );
    assert!(got.closed);
    assert_eq!(
        text(&second.as_mut().unwrap().call(b"get a\r\n")),
        text(&mc_hit("a", "1"))
    );
}

// ---------------------------------------------------------------------------------------------
// Clients that disconnect with requests in flight
// ---------------------------------------------------------------------------------------------

/// File descriptors a process has open now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd")
        .count()
}

/// The process's open descriptors once the count has held still for a few readings (a stats
/// connection just read may still be closing on walnut's side).
fn settled_fds(pid: u32) -> usize {
    let mut last = open_fds(pid);
    let mut same = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while same < 4 {
        assert!(
            Instant::now() < deadline,
            "walnut's descriptors never settled"
        );
        std::thread::sleep(Duration::from_millis(100));
        let now = open_fds(pid);
        if now == last {
            same += 1;
        } else {
            (last, same) = (now, 0);
        }
    }
    last
}

fn stats_doc(walnut: &ProxyProcess) -> serde_json::Value {
    let text = walnut.stats_json();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats JSON ({e}): {text}"))
}

/// A figure by its path: `curr_connections`, `r/client_eof`, `r/127.0.0.1:6379/requests`.
fn stat(doc: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(doc, |v, k| v.get(*k))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no figure {path:?} in {doc}"))
}

/// Sums one server figure over every server of `pool`.
fn pool_sum(doc: &serde_json::Value, pool: &str, servers: &[String], field: &str) -> u64 {
    servers.iter().map(|s| stat(doc, &[pool, s, field])).sum()
}

/// Polls the stats until `done` holds; fails with `what` and the last document.
fn wait_for_stats(
    walnut: &ProxyProcess,
    what: &str,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let doc = stats_doc(walnut);
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "the stats never showed {what}; last document: {doc}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis pool `r` and a memcached pool `m` in one config, no timeout.
fn two_pool_config(
    redis_port: u16,
    redis: &[RedisServer],
    mc_port: u16,
    memcached: &[MemcachedServer],
) -> String {
    let mut conf = format!(
        "r:\n  listen: 127.0.0.1:{redis_port}\n  redis: true\n  hash: md5\n  preconnect: true\n  servers:\n"
    );
    for backend in redis {
        conf.push_str(&format!("   - {}\n", backend.server_line(1, None)));
    }
    conf.push_str(&format!(
        "m:\n  listen: 127.0.0.1:{mc_port}\n  redis: false\n  hash: md5\n  preconnect: true\n  servers:\n"
    ));
    for backend in memcached {
        conf.push_str(&format!("   - {}\n", backend.server_line(1, None)));
    }
    conf
}

const LEAK_CLIENTS_PER_POOL: usize = 100;
/// Each client pipelines this many sets, then as many gets of the same keys.
const LEAK_SETS_PER_CLIENT: usize = 10;
const LEAK_VALUE_BYTES: usize = 4096;
const LEAK_ROUNDS: usize = 5;

/// Waits until every thread of `pid` is stopped (SIGSTOP takes effect asynchronously: a
/// thread already running keeps running until it next enters the kernel).
fn wait_stopped(pid: u32) {
    wait_until("the server to stop", Duration::from_secs(30), || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // `pid (comm) S …`: the state follows the last ')'.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
        })
    });
}

/// The pipeline one client sends: sets of 4 KiB values, then gets of the same keys.
fn leak_pipeline(redis: bool, round: usize, client: usize) -> Vec<u8> {
    let value = "x".repeat(LEAK_VALUE_BYTES);
    let mut out = Vec::new();
    for i in 0..LEAK_SETS_PER_CLIENT {
        let key = format!("gone:r{round}:c{client}:k{i}");
        if redis {
            out.extend(common::resp::encode(&[
                b"SET",
                key.as_bytes(),
                value.as_bytes(),
            ]));
        } else {
            out.extend(format!("set {key} 0 0 {LEAK_VALUE_BYTES}\r\n{value}\r\n").into_bytes());
        }
    }
    for i in 0..LEAK_SETS_PER_CLIENT {
        let key = format!("gone:r{round}:c{client}:k{i}");
        if redis {
            out.extend(common::resp::encode(&[b"GET", key.as_bytes()]));
        } else {
            out.extend(format!("get {key}\r\n").into_bytes());
        }
    }
    out
}

/// The server keys of `pool` in a stats document (the entries that are objects).
fn server_names(doc: &serde_json::Value, pool: &str) -> Vec<String> {
    doc[pool]
        .as_object()
        .unwrap_or_else(|| panic!("no pool {pool} in {doc}"))
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn clients_that_disconnect_with_requests_in_flight_leak_no_connection_descriptor_queue_or_memory() {
    use std::io::Write;

    let redis = vec![RedisServer::start(), RedisServer::start()];
    let memcached = vec![MemcachedServer::start(), MemcachedServer::start()];
    let (redis_port, mc_port) = (free_port(), free_port());
    let walnut = ProxyProcess::walnut_with(
        &two_pool_config(redis_port, &redis, mc_port, &memcached),
        &[local(redis_port), local(mc_port)],
        &["-i", "100"],
    );
    let pid = walnut.process.pid();
    let pools = ["r", "m"];
    // walnut binds its stats port after the pools' listeners, which is all the fixture waits on.
    wait_until("the stats port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(local(walnut.stats_port)).is_ok()
    });

    // Warm up: one request to every server through a client that reads its replies.
    let mut conn = RespClient::connect(&format!("127.0.0.1:{redis_port}"));
    for i in 0..20 {
        assert_eq!(conn.cmd_str(&["SET", &format!("warm:{i}"), "v"]), ok());
    }
    drop(conn);
    let mut conn = McClient::connect(local(mc_port));
    for i in 0..20 {
        assert_eq!(
            text(&conn.call(&mc_set(&format!("warm:{i}"), "v"))),
            "STORED\r\n"
        );
    }
    drop(conn);
    // The readiness check (one per listener) and the two warm-up clients have closed.
    let servers_of = |doc: &serde_json::Value| -> Vec<Vec<String>> {
        pools.iter().map(|p| server_names(doc, p)).collect()
    };
    let before = wait_for_stats(&walnut, "the warm-up clients closed", |doc| {
        pools.iter().all(|p| {
            stat(doc, &[p, "client_connections"]) == 0
                && stat(doc, &[p, "client_eof"]) + stat(doc, &[p, "client_err"]) == 2
        })
    });
    let servers = servers_of(&before);
    assert_eq!(servers.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
    for (p, pool) in pools.iter().enumerate() {
        for server in &servers[p] {
            assert_eq!(stat(&before, &[pool, server, "server_connections"]), 1);
            assert!(
                stat(&before, &[pool, server, "requests"]) > 0,
                "{pool}/{server} warmed up"
            );
        }
    }
    let curr_before = stat(&before, &["curr_connections"]);
    let total_before = stat(&before, &["total_connections"]);
    // 2 listeners, 4 server connections.
    assert_eq!(curr_before, 6);
    let fds_before = settled_fds(pid);

    let requests_per_pool = (LEAK_CLIENTS_PER_POOL * LEAK_SETS_PER_CLIENT * 2) as u64;
    let mut rss_after = Vec::new();
    for round in 0..LEAK_ROUNDS {
        let start = stats_doc(&walnut);
        let requests_at_start: Vec<u64> = pools
            .iter()
            .zip(&servers)
            .map(|(p, s)| pool_sum(&start, p, s, "requests"))
            .collect();
        for backend in &redis {
            backend.pause();
            wait_stopped(backend.process.pid());
        }
        for backend in &memcached {
            backend.pause();
            wait_stopped(backend.process.pid());
        }
        let mut sockets = Vec::new();
        for client in 0..LEAK_CLIENTS_PER_POOL {
            for (port, is_redis) in [(redis_port, true), (mc_port, false)] {
                let mut socket = std::net::TcpStream::connect(local(port)).expect("connect");
                socket
                    .write_all(&leak_pipeline(is_redis, round, client))
                    .expect("write the pipeline");
                sockets.push(socket);
            }
        }
        // Every request has reached walnut and waits on a frozen server.
        wait_for_stats(&walnut, "every request in flight", |doc| {
            pools.iter().enumerate().all(|(p, pool)| {
                let queued = pool_sum(doc, pool, &servers[p], "in_queue")
                    + pool_sum(doc, pool, &servers[p], "out_queue");
                stat(doc, &[pool, "client_connections"]) == LEAK_CLIENTS_PER_POOL as u64
                    && pool_sum(doc, pool, &servers[p], "requests")
                        == requests_at_start[p] + requests_per_pool
                    && queued == requests_per_pool
            })
        });
        wait_until(
            "one more descriptor per client",
            Duration::from_secs(30),
            || open_fds(pid) == fds_before + 2 * LEAK_CLIENTS_PER_POOL,
        );
        // Every client goes away without reading a byte; then the servers wake up.
        drop(sockets);
        // Not a bound on anything: a moment for walnut to read the EOFs while the servers
        // are still frozen, so the sessions close with their requests in flight.
        std::thread::sleep(Duration::from_millis(300));
        for backend in &redis {
            backend.resume();
        }
        for backend in &memcached {
            backend.resume();
        }

        let clients_so_far = 2 + (round as u64 + 1) * LEAK_CLIENTS_PER_POOL as u64;
        let after = wait_for_stats(&walnut, "every client gone and every queue empty", |doc| {
            stat(doc, &["curr_connections"]) == curr_before
                && pools.iter().enumerate().all(|(p, pool)| {
                    stat(doc, &[pool, "client_connections"]) == 0
                        && stat(doc, &[pool, "client_eof"]) + stat(doc, &[pool, "client_err"])
                            == clients_so_far
                        && servers[p].iter().all(|s| {
                            ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"]
                                .iter()
                                .all(|f| stat(doc, &[pool, s, f]) == 0)
                                && stat(doc, &[pool, s, "requests"])
                                    == stat(doc, &[pool, s, "responses"])
                        })
                })
        });
        assert_eq!(
            stat(&after, &["total_connections"]),
            total_before + 2 * (round as u64 + 1) * LEAK_CLIENTS_PER_POOL as u64,
            "only the clients opened connections: no server connection was replaced"
        );
        for (p, pool) in pools.iter().enumerate() {
            assert_eq!(
                pool_sum(&after, pool, &servers[p], "requests"),
                requests_at_start[p] + requests_per_pool,
                "{pool}: every request was forwarded once"
            );
            for server in &servers[p] {
                assert_eq!(stat(&after, &[pool, server, "server_connections"]), 1);
                for figure in ["server_eof", "server_err", "server_timedout"] {
                    assert_eq!(stat(&after, &[pool, server, figure]), 0, "{pool}/{server}");
                }
            }
            assert_eq!(stat(&after, &[pool, "forward_error"]), 0);
        }
        wait_until(
            "walnut's descriptors back to the baseline",
            Duration::from_secs(30),
            || open_fds(pid) == fds_before,
        );
        rss_after.push(rss_kib(pid));
    }

    // The servers got every request: the last round's keys are there.
    let key = format!("gone:r{}:c0:k0", LEAK_ROUNDS - 1);
    let on_redis = redis
        .iter()
        .filter(|b| b.client().cmd_str(&["EXISTS", &key]) == Value::Int(1))
        .count();
    assert_eq!(on_redis, 1);
    let on_memcached = memcached
        .iter()
        .filter(|b| b.client().call(format!("get {key}\r\n").as_bytes()) != b"END\r\n")
        .count();
    assert_eq!(on_memcached, 1);
    // Memory: a round moves about 16 MiB through walnut (4 KiB values out, the same back);
    // the allocator's own slack wanders by a few MiB (up to 7 MiB above the first round over
    // 40 rounds, never climbing), so a leak of even a quarter of each round shows.
    let growth = rss_after[LEAK_ROUNDS - 1].saturating_sub(rss_after[0]);
    assert!(
        growth < 16 * 1024,
        "walnut's RSS grew by {growth} KiB over {} more rounds: {rss_after:?} KiB",
        LEAK_ROUNDS - 1
    );
    assert!(
        rss_after.iter().all(|&kib| kib < 256 * 1024),
        "walnut's RSS after each round: {rss_after:?} KiB"
    );
    // Still serving.
    let mut conn = RespClient::connect(&format!("127.0.0.1:{redis_port}"));
    assert_eq!(conn.cmd_str(&["GET", "warm:0"]), Value::bulk("v"));
}

// ---------------------------------------------------------------------------------------------
// Ejection, return and failed probes in the log
// ---------------------------------------------------------------------------------------------

/// walnut's text log as `(level, message)` pairs (`[timestamp] LEVEL message`).
fn log_entries(log: &str) -> Vec<(String, String)> {
    log.lines()
        .map(|line| {
            let (_, rest) = line
                .strip_prefix('[')
                .and_then(|l| l.split_once("] "))
                .unwrap_or_else(|| panic!("a log line without its timestamp: {line:?}"));
            let (level, message) = rest
                .trim_start()
                .split_once(' ')
                .unwrap_or_else(|| panic!("a log line without a level: {line:?}"));
            (level.to_string(), message.to_string())
        })
        .collect()
}

const LOG_RETRY_MS: u64 = 300;

/// A server killed, ejected, failing its probe while dead, restarted and taken back: walnut's
/// log entries about it, in order, with the server's name.
struct HealthLog {
    server: String,
    entries: Vec<(String, String)>,
}

impl HealthLog {
    /// The entries whose message contains `what`, in order.
    fn about(&self, what: &str) -> Vec<&(String, String)> {
        self.entries
            .iter()
            .filter(|(_, message)| message.contains(what))
            .collect()
    }

    /// Index of the first entry containing `what`.
    fn position(&self, what: &str) -> usize {
        self.entries
            .iter()
            .position(|(_, message)| message.contains(what))
            .unwrap_or_else(|| panic!("no log entry contains {what:?}"))
    }
}

fn health_extra() -> String {
    format!(
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: {LOG_RETRY_MS}\n  timeout: 500\n"
    )
}

fn redis_health_log() -> HealthLog {
    let mut backends = vec![RedisServer::start(), RedisServer::start()];
    let port = free_port();
    let walnut = ProxyProcess::walnut(
        &pool_config(port, &backends, &health_extra()),
        &[local(port)],
    );
    let server = format!("127.0.0.1:{}", backends[1].port);
    // Connections to both servers exist before the kill.
    assert!(write_keys(port, 100).iter().all(|r| *r == ok()));
    backends[1].kill();
    trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("a failed probe", Duration::from_secs(30), || {
        walnut.log().contains("is still failing its health probe")
    });
    backends[1].restart();
    wait_until("the return", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
    // Traffic to both servers again, then the log is read.
    assert_eq!(backends[1].client().cmd_str(&["FLUSHALL"]), ok());
    assert!(write_keys(port, 100).iter().all(|r| *r == ok()));
    assert!(backend_keys(&backends[1]) > 0, "the server is back in use");
    HealthLog {
        server,
        entries: log_entries(&walnut.log()),
    }
}

fn backend_keys(backend: &RedisServer) -> i64 {
    match backend.client().cmd_str(&["DBSIZE"]) {
        Value::Int(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}

fn memcached_health_log() -> HealthLog {
    let mut backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let port = free_port();
    let walnut = ProxyProcess::walnut(
        &mc_pool_config(port, &backends, &health_extra()),
        &[local(port)],
    );
    let server = format!("127.0.0.1:{}", backends[1].port);
    assert!(all_stored(&mc_write_keys(port, 100)));
    backends[1].kill();
    mc_trigger_ejection(port, || walnut.log().contains("ejecting server"));
    wait_until("a failed probe", Duration::from_secs(30), || {
        walnut.log().contains("is still failing its health probe")
    });
    backends[1].restart();
    wait_until("the return", Duration::from_secs(30), || {
        walnut.log().contains("is back in the continuum")
    });
    assert!(all_stored(&mc_write_keys(port, 100)));
    assert!(
        !mc_held(&backends[1], &eject_keys(100)).is_empty(),
        "the server is back in use"
    );
    HealthLog {
        server,
        entries: log_entries(&walnut.log()),
    }
}

/// Exactly one ejection entry, one return entry and at least one failed-probe entry, each at
/// WARN, naming the pool and the server; the ejection and the failed probes give their
/// reason. In order: ejection, failed probes, return.
fn ejection_probe_and_return_are_each_logged_once(log: &HealthLog) {
    let (pool, server) = ("alpha", &log.server);
    let all = || {
        log.entries
            .iter()
            .map(|(l, m)| format!("{l} {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let ejections = log.about("ejecting server");
    assert_eq!(ejections.len(), 1, "one ejection entry in:\n{}", all());
    let (level, message) = ejections[0];
    assert_eq!(level, "WARN", "{message}");
    let prefix = format!(
        "pool '{pool}': ejecting server '{server}' for {LOG_RETRY_MS} ms after 1 consecutive failures (last: "
    );
    let reason = message
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("the ejection entry {message:?} is not {prefix}…)"));
    // A killed server: its open connection is reset or sees EOF, or a connect is refused.
    assert!(
        ["Connection reset by peer", "Connection refused"].contains(&reason),
        "the ejection's reason: {reason:?}"
    );

    let probes = log.about("is still failing its health probe");
    assert!(!probes.is_empty(), "a failed-probe entry in:\n{}", all());
    for (level, message) in &probes {
        assert_eq!(level, "WARN", "{message}");
        assert_eq!(
            message,
            &format!(
                "pool '{pool}': server '{server}' is still failing its health probe (Connection refused); retrying in {LOG_RETRY_MS} ms"
            )
        );
    }

    let returns = log.about("back in the continuum");
    assert_eq!(returns.len(), 1, "one return entry in:\n{}", all());
    let (level, message) = returns[0];
    assert_eq!(level, "WARN", "{message}");
    assert!(
        message.starts_with(&format!("pool '{pool}': server '{server}' ")),
        "the return entry names the pool and the server: {message}"
    );

    let (ejected, probed, returned) = (
        log.position("ejecting server"),
        log.position("health probe"),
        log.position("back in the continuum"),
    );
    assert!(
        ejected < probed && probed < returned,
        "ejection, failed probe, return, in that order:\n{}",
        all()
    );
    // Nothing else about the server at WARN: each event has exactly one entry.
    let warnings = log
        .entries
        .iter()
        .filter(|(level, message)| level == "WARN" && message.contains(server.as_str()))
        .count();
    assert_eq!(
        warnings,
        2 + probes.len(),
        "warnings about {server}:\n{}",
        all()
    );
}

#[test]
fn every_ejection_return_and_failed_probe_is_logged_once_at_warn_with_pool_and_server() {
    ejection_probe_and_return_are_each_logged_once(&redis_health_log());
}

#[test]
fn every_memcached_ejection_return_and_failed_probe_is_logged_once_at_warn_with_pool_and_server() {
    ejection_probe_and_return_are_each_logged_once(&memcached_health_log());
}

/// docs/COMPATIBILITY.md: ejection, return and failed probe are each logged "with pool, server
/// and reason". The ejection says why (`after N consecutive failures (last: …)`), a failed
/// probe says why (`(Connection refused)`), but the return says only that the server
/// `is back in the continuum`: not that it answered its health probe (or, with
/// `health_probe: false`, that its retry timeout passed).
#[test]
fn a_servers_return_is_logged_with_its_reason() {
    for log in [redis_health_log(), memcached_health_log()] {
        let returns = log.about("back in the continuum");
        assert_eq!(returns.len(), 1);
        let (_, message) = returns[0];
        assert!(
            message.contains("health probe"),
            "the return entry says why the server is back (it answered its health probe): {message}"
        );
    }
}
