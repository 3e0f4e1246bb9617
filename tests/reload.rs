//! Config reload without a restart, under continuous pipelined load, against real
//! redis-servers and real memcacheds; placement after each change equals a fresh nutcracker's
//! with the new config.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mc::McClient;
use common::{free_port, local, MemcachedServer, ProxyProcess, RedisServer, RespClient, Value};
use nix::sys::signal::Signal;

fn ok() -> Value {
    Value::Status("OK".into())
}

/// A pool over `servers` given as (backend index, weight).
fn pool(name: &str, port: u16, backends: &[RedisServer], servers: &[(usize, u32)]) -> String {
    let mut conf =
        format!("{name}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  servers:\n");
    for &(index, weight) in servers {
        conf.push_str(&format!(
            "   - {}\n",
            backends[index].server_line(weight, None)
        ));
    }
    conf
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

/// Sends SIGUSR1 and waits until the log shows one more reload line.
fn reload(walnut: &ProxyProcess) {
    let before = walnut.log().matches("reload: pools added").count();
    walnut.process.signal(Signal::SIGUSR1);
    wait_until("the reload", || {
        walnut.log().matches("reload: pools added").count() > before
    });
}

/// Clients pipelining SET/GET with unique keys. A reply that belongs to another request, an
/// error, or a closed connection fails the client; unless `strict`, a GET may find nothing
/// (a reload between the SET and the GET may move the key).
struct Load {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize, strict: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|c| {
                let (stop, rounds, failures) = (stop.clone(), rounds.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let commands: Vec<Vec<Vec<u8>>> = (0..50)
                            .flat_map(|i| {
                                let key = format!("load:{c}:{round}:{i}").into_bytes();
                                let value = format!("v:{c}:{round}:{i}").into_bytes();
                                [
                                    vec![b"SET".to_vec(), key.clone(), value],
                                    vec![b"GET".to_vec(), key],
                                ]
                            })
                            .collect();
                        let replies = conn.pipeline(&commands);
                        for i in 0..50 {
                            let value = format!("v:{c}:{round}:{i}");
                            match (&replies[2 * i], &replies[2 * i + 1]) {
                                (Value::Status(s), Value::Bulk(v))
                                    if s == "OK" && v == value.as_bytes() => {}
                                // A reload between the SET and the GET may move the key.
                                (Value::Status(s), Value::Nil) if s == "OK" && !strict => {}
                                (set, get) => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    assert!(
                                        !strict,
                                        "client {c} round {round} #{i}: {set:?} {get:?}"
                                    );
                                    panic!("crossed reply: client {c} #{i}: {set:?} {get:?}");
                                }
                            }
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                        round += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            rounds,
            failures,
            threads,
        }
    }

    fn wait_rounds(&self, more: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + more;
        wait_until("client rounds", || {
            self.rounds.load(Ordering::Relaxed) >= target
        });
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread
                .join()
                .expect("load client saw a wrong reply or a dropped connection");
        }
        self.failures.load(Ordering::Relaxed)
    }
}

#[test]
fn reloading_an_unchanged_config_20_times_drops_nothing() {
    let backends = vec![RedisServer::start(), RedisServer::start()];
    let port = free_port();
    let walnut = ProxyProcess::walnut(
        &pool("alpha", port, &backends, &[(0, 1), (1, 1)]),
        &[local(port)],
    );
    let load = Load::start(port, 4, true);
    for _ in 0..20 {
        load.wait_rounds(2);
        reload(&walnut);
    }
    load.wait_rounds(4);
    assert_eq!(load.stop(), 0);
    let log = walnut.log();
    assert_eq!(
        log.matches("reload: pools added: none; pools removed: none; pools changed: none")
            .count(),
        20
    );
}

/// Where each key lives, read from the backends directly.
fn locations(backends: &[RedisServer]) -> BTreeMap<Vec<u8>, usize> {
    let mut found = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let Value::Array(keys) = backend.client().cmd_str(&["KEYS", "place:*"]) else {
            panic!("KEYS")
        };
        for key in keys {
            let Value::Bulk(key) = key else { panic!("key") };
            found.insert(key, index);
        }
    }
    found
}

fn place_keys(port: u16, backends: &[RedisServer]) -> BTreeMap<Vec<u8>, usize> {
    for backend in backends {
        assert_eq!(backend.client().cmd_str(&["FLUSHALL"]), ok());
    }
    let mut conn = RespClient::connect(&format!("127.0.0.1:{port}"));
    let commands: Vec<Vec<Vec<u8>>> = (0..600)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("place:{i}").into_bytes(),
                b"v".to_vec(),
            ]
        })
        .collect();
    assert!(conn.pipeline(&commands).iter().all(|r| *r == ok()));
    locations(backends)
}

#[test]
fn adding_removing_and_reweighting_servers_places_keys_like_a_fresh_nutcracker_and_keeps_clients() {
    let backends = vec![
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let port = free_port();
    let walnut = ProxyProcess::walnut(
        &pool("alpha", port, &backends, &[(0, 1), (1, 1), (2, 1)]),
        &[local(port)],
    );
    // One client connection that must survive every reload.
    let mut survivor = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(survivor.cmd_str(&["PING"]), Value::Status("PONG".into()));
    let steps: [(&str, &[(usize, u32)]); 3] = [
        ("add a server", &[(0, 1), (1, 1), (2, 1), (3, 1)]),
        ("remove a server", &[(0, 1), (2, 1), (3, 1)]),
        ("change a weight", &[(0, 1), (2, 3), (3, 1)]),
    ];
    for (step, servers) in steps {
        let load = Load::start(port, 2, false);
        load.wait_rounds(2);
        walnut.rewrite_config(&pool("alpha", port, &backends, servers));
        reload(&walnut);
        load.wait_rounds(2);
        load.stop();
        let under_walnut = place_keys(port, &backends);
        let nut_port = free_port();
        let nutcracker = ProxyProcess::nutcracker(
            &pool("alpha", nut_port, &backends, servers),
            &[local(nut_port)],
        );
        let under_nutcracker = place_keys(nut_port, &backends);
        drop(nutcracker);
        assert_eq!(under_walnut.len(), 600, "{step}");
        assert_eq!(
            under_walnut, under_nutcracker,
            "{step}: placement equals a fresh nutcracker's"
        );
        assert_eq!(
            survivor.cmd_str(&["PING"]),
            Value::Status("PONG".into()),
            "{step}: the client is still connected"
        );
    }
    let log = walnut.log();
    assert!(log.contains("servers added: alpha/127.0.0.1:"), "{log}");
    assert!(log.contains("servers removed: alpha/127.0.0.1:"), "{log}");
}

#[test]
fn a_new_pool_serves_and_a_removed_pools_clients_get_their_replies_before_closing() {
    let backends = vec![RedisServer::start()];
    let (alpha_port, beta_port) = (free_port(), free_port());
    let alpha = pool("alpha", alpha_port, &backends, &[(0, 1)]);
    let beta = pool("beta", beta_port, &backends, &[(0, 1)]);
    let walnut = ProxyProcess::walnut(&alpha, &[local(alpha_port)]);

    walnut.rewrite_config(&format!("{alpha}{beta}"));
    reload(&walnut);
    let mut on_beta = RespClient::connect(&format!("127.0.0.1:{beta_port}"));
    assert_eq!(on_beta.cmd_str(&["SET", "pools", "two"]), ok());

    // Requests in flight on alpha when alpha is removed: the backend is frozen.
    let mut on_alpha = RespClient::connect(&format!("127.0.0.1:{alpha_port}"));
    assert_eq!(on_alpha.cmd_str(&["GET", "pools"]), Value::bulk("two"));
    backends[0].pause();
    let mut pipeline = Vec::new();
    for _ in 0..50 {
        pipeline.extend_from_slice(&common::resp::encode(&[b"GET", b"pools"]));
    }
    on_alpha.send_raw(&pipeline);
    std::thread::sleep(Duration::from_millis(200));
    walnut.rewrite_config(&beta);
    reload(&walnut);
    backends[0].resume();
    for i in 0..50 {
        assert_eq!(
            on_alpha.read_value(),
            Value::bulk("two"),
            "in-flight reply #{i}"
        );
    }
    assert!(
        on_alpha.is_closed(),
        "the removed pool's client is closed after its replies"
    );
    assert!(
        std::net::TcpStream::connect(local(alpha_port)).is_err(),
        "alpha no longer listens"
    );
    assert_eq!(on_beta.cmd_str(&["GET", "pools"]), Value::bulk("two"));
    assert!(walnut
        .log()
        .contains("pools added: none; pools removed: alpha"));
}

#[test]
fn an_invalid_file_changes_nothing_and_the_failure_is_logged() {
    let backends = vec![RedisServer::start()];
    let port = free_port();
    let good = pool("alpha", port, &backends, &[(0, 1)]);
    let walnut = ProxyProcess::walnut(&good, &[local(port)]);
    let load = Load::start(port, 2, true);
    load.wait_rounds(2);
    walnut.rewrite_config(&good.replace("hash: md5", "hash: sha1"));
    walnut.process.signal(Signal::SIGUSR1);
    wait_until("the failed reload", || {
        walnut
            .log()
            .contains("failed: the file is invalid; nothing changed")
    });
    assert!(walnut
        .log()
        .contains("conf: pool 'alpha': directive \"hash\" is not a valid hash: \"sha1\""));
    load.wait_rounds(2);
    assert_eq!(load.stop(), 0, "traffic never noticed");
}

#[test]
fn watch_config_reloads_when_the_file_changes() {
    let backends = vec![RedisServer::start()];
    let (alpha_port, beta_port) = (free_port(), free_port());
    let alpha = pool("alpha", alpha_port, &backends, &[(0, 1)]);
    let walnut = ProxyProcess::walnut_with(&alpha, &[local(alpha_port)], &["--watch-config"]);
    // walnut starts its watcher after its listeners, and the watcher reads the file it
    // compares with only then (see the ignored test below); once walnut has handled a
    // SIGUSR1, its watcher is running.
    reload(&walnut);
    walnut.rewrite_config(&format!(
        "{alpha}{}",
        pool("beta", beta_port, &backends, &[(0, 1)])
    ));
    wait_until("the watcher's reload", || {
        std::net::TcpStream::connect(local(beta_port)).is_ok()
    });
    let mut client = RespClient::connect(&format!("127.0.0.1:{beta_port}"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
    assert!(walnut.log().contains("changed; reloading"));
}

#[test]
fn hammering_reloads_never_crosses_a_reply() {
    let backends = vec![
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let port = free_port();
    let configs = [
        pool("alpha", port, &backends, &[(0, 1), (1, 1), (2, 1)]),
        pool("alpha", port, &backends, &[(0, 2), (1, 1)]),
        pool("alpha", port, &backends, &[(1, 1), (2, 3)]),
    ];
    let walnut = ProxyProcess::walnut(&configs[0], &[local(port)]);
    let load = Load::start(port, 8, false);
    load.wait_rounds(8);
    for i in 0..30 {
        walnut.rewrite_config(&configs[i % 3]);
        reload(&walnut);
    }
    load.wait_rounds(8);
    load.stop();
}

// ---------------------------------------------------------------------------------------------
// memcached pools (`redis: false`)
// ---------------------------------------------------------------------------------------------

/// A memcached pool over `servers` given as (backend index, weight).
fn mc_pool(
    name: &str,
    port: u16,
    backends: &[MemcachedServer],
    servers: &[(usize, u32)],
) -> String {
    let mut conf =
        format!("{name}:\n  listen: 127.0.0.1:{port}\n  redis: false\n  hash: md5\n  servers:\n");
    for &(index, weight) in servers {
        conf.push_str(&format!(
            "   - {}\n",
            backends[index].server_line(weight, None)
        ));
    }
    conf
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mc_set(key: &str, value: &str) -> Vec<u8> {
    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).into_bytes()
}

fn mc_value(key: &str, value: &str) -> Vec<u8> {
    format!("VALUE {key} 0 {}\r\n{value}\r\n", value.len()).into_bytes()
}

fn mc_hit(key: &str, value: &str) -> Vec<u8> {
    [mc_value(key, value), b"END\r\n".to_vec()].concat()
}

/// One round of a memcached load client: 50 `set`/`get` pairs with unique keys and values
/// (every tenth `set` with `noreply`), then a multi-get of the first ten keys. Panics on a
/// reply that belongs to another request, an error, or a closed connection; unless `strict`,
/// a `get` may find nothing (a reload between the `set` and the `get` may move the key).
fn mc_round(conn: &mut McClient, c: usize, round: u64, strict: bool) {
    let pairs: Vec<(String, String)> = (0..50)
        .map(|i| {
            (
                format!("load:{c}:{round}:{i}"),
                format!("v:{c}:{round}:{i}"),
            )
        })
        .collect();
    let mut request = Vec::new();
    let mut expected = 0;
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i % 10 == 9 {
            request.extend(
                format!("set {key} 0 0 {} noreply\r\n{value}\r\n", value.len()).into_bytes(),
            );
        } else {
            request.extend(mc_set(key, value));
            expected += 1;
        }
        request.extend(format!("get {key}\r\n").into_bytes());
        expected += 1;
    }
    request.extend(b"get");
    for (key, _) in &pairs[..10] {
        request.extend(format!(" {key}").into_bytes());
    }
    request.extend(b"\r\n");
    expected += 1;
    conn.send(&request);
    let got = conn.read_replies(expected);
    assert_eq!(
        got.replies.len(),
        expected,
        "client {c} round {round}: the connection closed ({}) or went silent ({}); rest {:?}",
        got.closed,
        got.timed_out,
        text(&got.rest)
    );
    let mut replies = got.replies.iter();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i % 10 != 9 {
            let set = replies.next().unwrap();
            assert_eq!(
                text(set),
                "STORED\r\n",
                "client {c} round {round}: set {key}"
            );
        }
        let get = text(replies.next().unwrap());
        if strict || get != "END\r\n" {
            assert_eq!(
                get,
                text(&mc_hit(key, value)),
                "client {c} round {round}: get {key}"
            );
        }
    }
    let multi = text(replies.next().unwrap());
    let mut all = Vec::new();
    for (key, value) in &pairs[..10] {
        all.extend(mc_value(key, value));
    }
    all.extend(b"END\r\n");
    if strict {
        assert_eq!(multi, text(&all), "client {c} round {round}: multi-get");
    } else {
        // Each value present is its own key's, in request order; a moved key may be missing.
        let mut wanted = pairs[..10].iter();
        let mut rest = multi.as_str();
        while let Some(block) = rest.strip_prefix("VALUE ") {
            let line_end = block.find("\r\n").expect("VALUE line");
            let words: Vec<&str> = block[..line_end].split(' ').collect();
            let len: usize = words[2].parse().expect("length");
            let data = &block[line_end + 2..line_end + 2 + len];
            assert!(
                wanted.any(|(k, v)| k == words[0] && v == data),
                "client {c} round {round}: crossed multi-get reply {multi:?}"
            );
            rest = &block[line_end + 4 + len..];
        }
        assert_eq!(rest, "END\r\n", "client {c} round {round}: {multi:?}");
    }
}

/// memcached clients pipelining rounds of [`mc_round`] until stopped.
struct McLoad {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl McLoad {
    fn start(port: u16, clients: usize, strict: bool) -> McLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|c| {
                let (stop, rounds) = (stop.clone(), rounds.clone());
                std::thread::spawn(move || {
                    let mut conn = McClient::connect(local(port));
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        mc_round(&mut conn, c, round, strict);
                        rounds.fetch_add(1, Ordering::Relaxed);
                        round += 1;
                    }
                    // Still connected and in step at the end.
                    mc_round(&mut conn, c, round, strict);
                    round + 1
                })
            })
            .collect();
        McLoad {
            stop,
            rounds,
            threads,
        }
    }

    fn wait_rounds(&self, more: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + more;
        wait_until("client rounds", || {
            self.rounds.load(Ordering::Relaxed) >= target
        });
    }

    /// Stops the clients; the number of rounds they completed.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .expect("load client saw a wrong reply or a dropped connection")
            })
            .sum()
    }
}

#[test]
fn reloading_an_unchanged_memcached_config_20_times_drops_nothing() {
    let backends = vec![MemcachedServer::start(), MemcachedServer::start()];
    let port = free_port();
    let walnut = ProxyProcess::walnut(
        &mc_pool("alpha", port, &backends, &[(0, 1), (1, 1)]),
        &[local(port)],
    );
    let load = McLoad::start(port, 4, true);
    for _ in 0..20 {
        load.wait_rounds(2);
        reload(&walnut);
    }
    load.wait_rounds(4);
    assert!(load.stop() >= 44);
    let log = walnut.log();
    assert_eq!(
        log.matches("reload: pools added: none; pools removed: none; pools changed: none")
            .count(),
        20
    );
}

fn place_keys_list() -> Vec<String> {
    (0..600).map(|i| format!("place:{i}")).collect()
}

/// Where each `place:` key lives, read from the memcacheds directly with multi-gets.
fn mc_locations(backends: &[MemcachedServer]) -> BTreeMap<String, usize> {
    let keys = place_keys_list();
    let mut found = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let mut conn = backend.client();
        for chunk in keys.chunks(100) {
            let reply = text(&conn.call(format!("get {}\r\n", chunk.join(" ")).as_bytes()));
            for line in reply.lines().filter(|l| l.starts_with("VALUE ")) {
                let key = line.split(' ').nth(1).unwrap().to_string();
                assert!(
                    found.insert(key.clone(), index).is_none(),
                    "{key} is on two servers"
                );
            }
        }
    }
    found
}

fn mc_place_keys(port: u16, backends: &[MemcachedServer]) -> BTreeMap<String, usize> {
    for backend in backends {
        assert_eq!(text(&backend.client().call(b"flush_all\r\n")), "OK\r\n");
    }
    let mut conn = McClient::connect(local(port));
    let mut request = Vec::new();
    for key in place_keys_list() {
        request.extend(mc_set(&key, "v"));
    }
    let replies = conn.exchange(&request, 600);
    assert!(replies.iter().all(|r| r == b"STORED\r\n"));
    mc_locations(backends)
}

#[test]
fn adding_removing_and_reweighting_memcacheds_places_keys_like_a_fresh_nutcracker_and_keeps_clients(
) {
    let backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let port = free_port();
    let walnut = ProxyProcess::walnut(
        &mc_pool("alpha", port, &backends, &[(0, 1), (1, 1), (2, 1)]),
        &[local(port)],
    );
    // One client connection that must survive every reload.
    let mut survivor = McClient::connect(local(port));
    assert_eq!(text(&survivor.call(&mc_set("survivor", "0"))), "STORED\r\n");
    let steps: [(&str, &[(usize, u32)]); 4] = [
        ("add a server", &[(0, 1), (1, 1), (2, 1), (3, 1)]),
        ("remove a server", &[(0, 1), (2, 1), (3, 1)]),
        ("change a weight", &[(0, 1), (2, 3), (3, 1)]),
        ("add and remove at once", &[(1, 2), (2, 3), (3, 1)]),
    ];
    for (n, (step, servers)) in steps.into_iter().enumerate() {
        let load = McLoad::start(port, 2, false);
        load.wait_rounds(2);
        walnut.rewrite_config(&mc_pool("alpha", port, &backends, servers));
        reload(&walnut);
        load.wait_rounds(2);
        load.stop();
        let under_walnut = mc_place_keys(port, &backends);
        let nut_port = free_port();
        let nutcracker = ProxyProcess::nutcracker(
            &mc_pool("alpha", nut_port, &backends, servers),
            &[local(nut_port)],
        );
        let under_nutcracker = mc_place_keys(nut_port, &backends);
        drop(nutcracker);
        assert_eq!(under_walnut.len(), 600, "{step}");
        assert_eq!(
            under_walnut, under_nutcracker,
            "{step}: placement equals a fresh nutcracker's"
        );
        let used: std::collections::BTreeSet<usize> = under_walnut.values().copied().collect();
        let configured: std::collections::BTreeSet<usize> =
            servers.iter().map(|&(index, _)| index).collect();
        assert_eq!(
            used, configured,
            "{step}: every configured server holds keys"
        );
        let value = n.to_string();
        assert_eq!(
            text(&survivor.call(&mc_set("survivor", &value))),
            "STORED\r\n",
            "{step}: the client is still connected"
        );
        assert_eq!(
            text(&survivor.call(b"get survivor\r\n")),
            text(&mc_hit("survivor", &value)),
            "{step}"
        );
    }
    let log = walnut.log();
    assert!(log.contains("servers added: alpha/127.0.0.1:"), "{log}");
    assert!(log.contains("servers removed: alpha/127.0.0.1:"), "{log}");
}

#[test]
fn a_removed_memcached_pools_clients_get_their_in_flight_replies_before_closing() {
    let backends = vec![MemcachedServer::start()];
    let (alpha_port, beta_port) = (free_port(), free_port());
    let alpha = mc_pool("alpha", alpha_port, &backends, &[(0, 1)]);
    let beta = mc_pool("beta", beta_port, &backends, &[(0, 1)]);
    let walnut = ProxyProcess::walnut(&alpha, &[local(alpha_port)]);

    walnut.rewrite_config(&format!("{alpha}{beta}"));
    reload(&walnut);
    let mut on_beta = McClient::connect(local(beta_port));
    assert_eq!(text(&on_beta.call(&mc_set("pools", "two"))), "STORED\r\n");

    // Requests in flight on alpha when alpha is removed: the backend is frozen.
    let mut on_alpha = McClient::connect(local(alpha_port));
    assert_eq!(
        text(&on_alpha.call(b"get pools\r\n")),
        text(&mc_hit("pools", "two"))
    );
    backends[0].pause();
    on_alpha.send(&b"get pools\r\n".repeat(50));
    std::thread::sleep(Duration::from_millis(200));
    walnut.rewrite_config(&beta);
    reload(&walnut);
    backends[0].resume();
    let got = on_alpha.read_replies(51);
    assert_eq!(got.replies.len(), 50, "closed: {}", got.closed);
    for (i, reply) in got.replies.iter().enumerate() {
        assert_eq!(
            text(reply),
            text(&mc_hit("pools", "two")),
            "in-flight reply #{i}"
        );
    }
    assert!(
        got.closed,
        "the removed pool's client is closed after its replies"
    );
    assert!(
        std::net::TcpStream::connect(local(alpha_port)).is_err(),
        "alpha no longer listens"
    );
    assert_eq!(
        text(&on_beta.call(b"get pools\r\n")),
        text(&mc_hit("pools", "two"))
    );
    assert!(walnut
        .log()
        .contains("pools added: none; pools removed: alpha"));
}

#[test]
fn hammering_reloads_never_crosses_a_memcached_reply() {
    let backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let port = free_port();
    let configs = [
        mc_pool("alpha", port, &backends, &[(0, 1), (1, 1), (2, 1)]),
        mc_pool("alpha", port, &backends, &[(0, 2), (1, 1)]),
        mc_pool("alpha", port, &backends, &[(1, 1), (2, 3)]),
    ];
    let walnut = ProxyProcess::walnut(&configs[0], &[local(port)]);
    let load = McLoad::start(port, 8, false);
    load.wait_rounds(8);
    for i in 0..30 {
        walnut.rewrite_config(&configs[i % 3]);
        reload(&walnut);
        if i % 5 == 4 {
            // Traffic runs between the bursts of reloads, not only around them.
            load.wait_rounds(1);
        }
    }
    load.wait_rounds(8);
    assert!(load.stop() >= 16);
    assert_eq!(walnut.log().matches("pools changed: alpha").count(), 29);
}

/// A memcached-protocol reply to `set` or `get`: what an old client of a pool may see.
fn is_memcached_reply(reply: &[u8]) -> bool {
    [&b"STORED\r\n"[..], b"END\r\n", b"VALUE ", b"SERVER_ERROR "]
        .iter()
        .any(|start| reply.starts_with(start))
}

#[test]
fn switching_a_pools_protocol_on_reload_never_crosses_a_reply() {
    let memcached = vec![MemcachedServer::start()];
    let redis = vec![RedisServer::start()];
    let port = free_port();
    let as_memcached = mc_pool("alpha", port, &memcached, &[(0, 1)]);
    let as_redis = pool("alpha", port, &redis, &[(0, 1)]);
    let walnut = ProxyProcess::walnut(&as_memcached, &[local(port)]);
    let mut a = McClient::connect(local(port));
    let mut b = McClient::connect(local(port));
    assert_eq!(text(&a.call(&mc_set("k", "v"))), "STORED\r\n");
    assert_eq!(text(&b.call(b"get k\r\n")), text(&mc_hit("k", "v")));

    walnut.rewrite_config(&as_redis);
    reload(&walnut);
    // The old clients speak memcached. Whatever walnut does with them (close them, or answer
    // SERVER_ERROR), it must never hand them a Redis reply, or one client another's reply.
    a.send(b"set a 0 0 1\r\nx\r\nget b\r\n");
    let from_a = a.read_replies(2);
    b.send(b"get k\r\n");
    let from_b = b.read_replies(1);
    for (who, got) in [("a", &from_a), ("b", &from_b)] {
        assert!(!got.timed_out, "client {who} got no answer and no close");
        for reply in &got.replies {
            assert!(
                is_memcached_reply(reply),
                "client {who} got {:?}",
                text(reply)
            );
        }
        assert!(
            got.rest.is_empty() || got.closed,
            "client {who}: {:?}",
            text(&got.rest)
        );
    }
    // New clients speak the new protocol.
    let mut fresh = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(fresh.cmd_str(&["SET", "k", "redis"]), ok());
    assert_eq!(fresh.cmd_str(&["GET", "k"]), Value::bulk("redis"));
}

#[test]
fn watch_config_notices_a_change_made_while_walnut_was_starting() {
    use std::io::Read;
    let backends = vec![RedisServer::start()];
    let (alpha_port, beta_port) = (free_port(), free_port());
    let alpha = pool("alpha", alpha_port, &backends, &[(0, 1)]);
    let beta = pool("beta", beta_port, &backends, &[(0, 1)]);
    // The log and the pid file are FIFOs, so walnut's start can be held at two points: it
    // opens the log once it has read the config, then writes the pid file, then starts
    // listening and watching.
    let dir = common::TempDir::new("watch-race");
    let config = dir.file("walnut.yml");
    std::fs::write(&config, &alpha).unwrap();
    let (log_fifo, pid_fifo) = (dir.file("log.fifo"), dir.file("pid.fifo"));
    for fifo in [&log_fifo, &pid_fifo] {
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }
    let stats_port = free_port().to_string();
    let walnut = common::Process::spawn(
        "walnut",
        std::process::Command::new(common::walnut_bin())
            .arg("-c")
            .arg(&config)
            .args(["-s", &stats_port, "-a", "127.0.0.1", "-v", "6", "-o"])
            .arg(&log_fifo)
            .arg("-p")
            .arg(&pid_fifo)
            .arg("--watch-config"),
    );
    // Returns once walnut has opened its log: it has read the config.
    let mut log = std::fs::File::open(&log_fifo).unwrap();
    let log_text = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log_text = log_text.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = log.read(&mut chunk) {
                log_text
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    };
    // The config changes while walnut waits to write its pid file.
    let fresh = dir.file("walnut.yml.new");
    std::fs::write(&fresh, format!("{alpha}{beta}")).unwrap();
    std::fs::rename(&fresh, &config).unwrap();
    let mut pid = String::new();
    std::fs::File::open(&pid_fifo)
        .unwrap()
        .read_to_string(&mut pid)
        .unwrap();
    assert_eq!(pid, walnut.pid().to_string());
    wait_until("walnut to listen", || {
        std::net::TcpStream::connect(local(alpha_port)).is_ok()
    });
    // The running config is the old one; the watcher must bring the file's in.
    wait_until("the watcher to reload the change", || {
        std::net::TcpStream::connect(local(beta_port)).is_ok()
    });
    assert!(log_text.lock().unwrap().contains("changed; reloading"));
    drop(walnut);
    reader.join().unwrap();
}
