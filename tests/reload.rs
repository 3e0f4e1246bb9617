//! Config reload without a restart, under continuous pipelined load, against real
//! redis-servers and real memcacheds; placement after each change equals a fresh nutcracker's
//! with the new config.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mc::{mc_hit, mc_set, mc_value, mixed_round, text, McClient};
use common::{
    err, free_port, local, ok, MemcachedServer, ProxyProcess, RedisServer, RespClient, Value,
};
use nix::sys::signal::Signal;

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
    let (request, expected) = mixed_round(&pairs);
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
    // The log is read by another thread: the line may reach it a moment later.
    wait_until("the reload's log line", || {
        log_text.lock().unwrap().contains("changed; reloading")
    });
    drop(walnut);
    reader.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Pool options, stats continuity and reload failures
// ---------------------------------------------------------------------------------------------

use std::io::{Read, Write};

use serde_json::Value as Json;

/// A Redis pool over `servers` given as (backend `servers:` line), with `extra` directives.
fn pool_with(name: &str, port: u16, lines: &[String], extra: &str) -> String {
    let mut conf = format!("{name}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n");
    for directive in extra.lines().filter(|l| !l.trim().is_empty()) {
        conf.push_str(&format!("  {}\n", directive.trim()));
    }
    conf.push_str("  servers:\n");
    for line in lines {
        conf.push_str(&format!("   - {line}\n"));
    }
    conf
}

/// walnut aggregating its stats every 100 ms, with `/metrics` on `metrics_port`.
fn walnut_with_stats(config: &str, port: u16, metrics_port: u16) -> ProxyProcess {
    let metrics = format!("127.0.0.1:{metrics_port}");
    ProxyProcess::walnut_with(
        config,
        &[local(port), local(metrics_port)],
        &["-i", "100", "--metrics", &metrics],
    )
}

fn stats_doc(walnut: &ProxyProcess) -> Json {
    let text = walnut.stats_json();
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the stats JSON does not parse ({e}): {text}"))
}

/// A figure by its path: `alpha/server_ejects`, `alpha/a/requests`.
fn json_figure(doc: &Json, path: &str) -> Option<u64> {
    path.split('/')
        .try_fold(doc, |v, k| v.get(k))
        .and_then(Json::as_u64)
}

/// Polls the stats JSON until every figure shows its value; fails listing the ones that differ.
fn wait_for_figures(walnut: &ProxyProcess, expected: &[(String, u64)]) -> Json {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = stats_doc(walnut);
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(path, want)| {
                let got = json_figure(&doc, path);
                (got != Some(*want)).then(|| format!("{path}: expected {want}, got {got:?}"))
            })
            .collect();
        if wrong.is_empty() {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "figures differ:\n  {}\nlast document: {doc}",
            wrong.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server names of `pool` in a stats document, in document order.
fn json_servers(doc: &Json, pool: &str) -> Vec<String> {
    doc.get(pool)
        .and_then(Json::as_object)
        .unwrap_or_else(|| panic!("pool {pool} in {doc}"))
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k.clone())
        .collect()
}

/// The pools in a stats document.
fn json_pools(doc: &Json) -> Vec<String> {
    doc.as_object()
        .expect("a JSON object")
        .iter()
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| k.clone())
        .collect()
}

/// `GET /metrics`, parsed by prometheus-parse.
fn scrape(metrics_port: u16) -> prometheus_parse::Scrape {
    let mut stream =
        std::net::TcpStream::connect(local(metrics_port)).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .expect("read the HTTP reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition")
}

/// The values of the samples `name` whose labels are exactly `labels`.
fn samples(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == name
                && s.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<BTreeMap<_, _>>()
                    == want
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: prometheus-parse read {other:?}"),
        })
        .collect()
}

/// The values of `names` in the server's `/metrics` series.
fn server_metrics(
    scrape: &prometheus_parse::Scrape,
    server: &str,
    names: &[&str],
) -> Vec<Vec<f64>> {
    names
        .iter()
        .map(|name| samples(scrape, name, &[("pool", "alpha"), ("server", server)]))
        .collect()
}

#[test]
fn a_timeout_set_by_a_reload_times_out_the_next_request_of_a_client_connected_before() {
    let backend = RedisServer::start();
    let (port, metrics_port) = (free_port(), free_port());
    let lines = [backend.server_line(1, Some("r"))];
    let walnut = walnut_with_stats(&pool_with("alpha", port, &lines, ""), port, metrics_port);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["SET", "k", "v"]), ok());

    walnut.rewrite_config(&pool_with("alpha", port, &lines, "timeout: 200"));
    reload(&walnut);
    assert!(walnut
        .log()
        .contains("reload: pools added: none; pools removed: none; pools changed: alpha; servers added: none; servers removed: none"));
    backend.pause();
    assert_eq!(
        client.cmd_str(&["GET", "k"]),
        err("ERR Connection timed out")
    );
    backend.resume();
    // The connection was closed on the timeout; the next request gets a fresh one.
    assert_eq!(client.cmd_str(&["GET", "k"]), Value::bulk("v"));
    wait_for_figures(
        &walnut,
        &[
            ("alpha/forward_error".into(), 1),
            ("alpha/r/server_timedout".into(), 1),
            ("alpha/r/server_err".into(), 0),
            ("alpha/r/server_eof".into(), 0),
            ("alpha/r/requests".into(), 3),
            ("alpha/r/responses".into(), 2),
            ("alpha/r/server_connections".into(), 1),
        ],
    );
}

#[test]
fn redis_auth_and_redis_db_set_by_a_reload_are_used_by_new_backend_connections() {
    let backend = RedisServer::start();
    // One direct connection for the whole test, so CLIENT KILL finds only walnut's.
    let mut admin = backend.client();
    let (port, metrics_port) = (free_port(), free_port());
    let lines = [backend.server_line(1, Some("r"))];
    let walnut = walnut_with_stats(&pool_with("alpha", port, &lines, ""), port, metrics_port);
    let mut before = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(before.cmd_str(&["SET", "before", "0"]), ok());
    assert_eq!(admin.cmd_str(&["GET", "before"]), Value::bulk("0"));

    assert_eq!(
        admin.cmd_str(&["CONFIG", "SET", "requirepass", "secret"]),
        ok()
    );
    walnut.rewrite_config(&pool_with(
        "alpha",
        port,
        &lines,
        "redis_auth: secret\nredis_db: 3",
    ));
    reload(&walnut);

    // Clients connecting now must AUTH with the new password.
    let mut after = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        after.cmd_str(&["GET", "before"]),
        err("NOAUTH Authentication required")
    );
    assert_eq!(
        after.cmd_str(&["AUTH", "wrong"]),
        err("ERR invalid password")
    );
    assert_eq!(after.cmd_str(&["AUTH", "secret"]), ok());

    // walnut's backend connection (made before the reload) is closed by the backend.
    assert_eq!(
        admin.cmd_str(&["CLIENT", "KILL", "TYPE", "normal"]),
        Value::Int(1)
    );
    wait_for_figures(
        &walnut,
        &[
            ("alpha/r/server_connections".into(), 0),
            ("alpha/r/server_eof".into(), 1),
        ],
    );
    // The new connection AUTHs (the backend requires it now) and SELECTs db 3.
    assert_eq!(after.cmd_str(&["SET", "after", "1"]), ok());
    assert_eq!(after.cmd_str(&["GET", "after"]), Value::bulk("1"));
    assert_eq!(after.cmd_str(&["GET", "before"]), Value::Nil);
    assert_eq!(admin.cmd_str(&["SELECT", "3"]), ok());
    assert_eq!(admin.cmd_str(&["GET", "after"]), Value::bulk("1"));
    assert_eq!(admin.cmd_str(&["GET", "before"]), Value::Nil);
    assert_eq!(admin.cmd_str(&["SELECT", "0"]), ok());
    assert_eq!(admin.cmd_str(&["GET", "after"]), Value::Nil);
    assert_eq!(admin.cmd_str(&["GET", "before"]), Value::bulk("0"));
    let Value::Bulk(list) = admin.cmd_str(&["CLIENT", "LIST", "TYPE", "normal"]) else {
        panic!("CLIENT LIST")
    };
    let list = text(&list);
    assert_eq!(
        list.lines().filter(|l| l.contains(" db=3 ")).count(),
        1,
        "{list}"
    );
    assert!(
        !walnut.log().contains("ERROR"),
        "no handshake failed: {}",
        walnut.log()
    );
}

/// SETs `key` through walnut; the reply.
fn set(client: &mut RespClient, key: &str) -> Value {
    client.cmd_str(&["SET", key, "v"])
}

/// The first of `eject:0`, `eject:1`, … that walnut sends to the dead server (its SET is
/// refused); the keys before it went to the live one. Only with `auto_eject_hosts: false`
/// (the refusals must not eject the server). Returns the key and the refusals seen.
fn key_on_dead_server(client: &mut RespClient) -> (String, u64) {
    for i in 0..1000 {
        let key = format!("eject:{i}");
        match set(client, &key) {
            Value::Status(s) if s == "OK" => continue,
            reply => {
                assert_eq!(reply, err("ERR Connection refused"), "{key}");
                return (key, 1);
            }
        }
    }
    panic!("no key routes to the dead server");
}

fn ejection_pool(port: u16, live: &RedisServer, dead_port: u16, options: &str) -> String {
    let lines = [
        live.server_line(1, Some("live")),
        format!("127.0.0.1:{dead_port}:1 dead"),
    ];
    pool_with(
        "alpha",
        port,
        &lines,
        &format!("{options}\nserver_retry_timeout: 600000"),
    )
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn auto_eject_hosts_and_server_failure_limit_set_by_a_reload_decide_when_a_failing_server_is_ejected(
) {
    let live = RedisServer::start();
    let mut admin = live.client();
    // Nothing listens on the dead server's port: every connect is refused.
    let (port, metrics_port, dead_port) = (free_port(), free_port(), free_port());
    let walnut = walnut_with_stats(
        &ejection_pool(
            port,
            &live,
            dead_port,
            "auto_eject_hosts: false\nserver_failure_limit: 1",
        ),
        port,
        metrics_port,
    );
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let (dead_key, mut refused) = key_on_dead_server(&mut client);
    for _ in 0..5 {
        assert_eq!(set(&mut client, &dead_key), err("ERR Connection refused"));
        refused += 1;
    }
    wait_for_figures(
        &walnut,
        &[
            ("alpha/server_ejects".into(), 0),
            ("alpha/forward_error".into(), refused),
            ("alpha/dead/requests".into(), refused),
            ("alpha/dead/server_err".into(), refused),
            ("alpha/dead/server_ejected_at".into(), 0),
        ],
    );

    walnut.rewrite_config(&ejection_pool(
        port,
        &live,
        dead_port,
        "auto_eject_hosts: true\nserver_failure_limit: 3",
    ));
    reload(&walnut);
    let not_before = now_micros();
    // Three consecutive failures eject the server (its earlier refusals did not count:
    // auto_eject_hosts was off); then its keys go to the live server.
    for i in 0..3 {
        assert_eq!(
            set(&mut client, &dead_key),
            err("ERR Connection refused"),
            "failure #{}",
            i + 1
        );
        refused += 1;
    }
    assert_eq!(set(&mut client, &dead_key), ok());
    assert_eq!(admin.cmd_str(&["GET", &dead_key]), Value::bulk("v"));
    let not_after = now_micros();
    let doc = wait_for_figures(
        &walnut,
        &[
            ("alpha/server_ejects".into(), 1),
            ("alpha/forward_error".into(), refused),
            ("alpha/dead/requests".into(), refused),
            ("alpha/dead/server_err".into(), refused),
        ],
    );
    let ejected_at = json_figure(&doc, "alpha/dead/server_ejected_at").unwrap();
    assert!(
        (not_before..=not_after).contains(&ejected_at),
        "server_ejected_at {ejected_at} is not between {not_before} and {not_after}"
    );
    let log = walnut.log();
    assert_eq!(
        log.matches("pool 'alpha': ejecting server 'dead' for 600000 ms after 3 consecutive failures (last: Connection refused)")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn turning_auto_eject_hosts_off_by_a_reload_routes_to_an_ejected_server_again_like_a_fresh_nutcracker(
) {
    let live = RedisServer::start();
    let (port, metrics_port, dead_port) = (free_port(), free_port(), free_port());
    let off = ejection_pool(port, &live, dead_port, "auto_eject_hosts: false");
    // First find, with ejection off, a key of the dead server.
    let walnut = walnut_with_stats(&off, port, metrics_port);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let (dead_key, _) = key_on_dead_server(&mut client);

    // With ejection on, one failure ejects the server and its key goes to the live one.
    walnut.rewrite_config(&ejection_pool(
        port,
        &live,
        dead_port,
        "auto_eject_hosts: true\nserver_failure_limit: 1",
    ));
    reload(&walnut);
    assert_eq!(set(&mut client, &dead_key), err("ERR Connection refused"));
    assert_eq!(set(&mut client, &dead_key), ok());
    wait_for_figures(&walnut, &[("alpha/server_ejects".into(), 1)]);

    // Ejection off again: every server is in the continuum, as in a fresh nutcracker.
    walnut.rewrite_config(&off);
    reload(&walnut);
    let nut_port = free_port();
    let nutcracker = ProxyProcess::nutcracker(
        &ejection_pool(nut_port, &live, dead_port, "auto_eject_hosts: false"),
        &[local(nut_port)],
    );
    let mut via_nutcracker = RespClient::connect(&format!("127.0.0.1:{nut_port}"));
    assert_eq!(
        set(&mut via_nutcracker, &dead_key),
        err("ERR Connection refused")
    );
    drop(nutcracker);
    assert_eq!(set(&mut client, &dead_key), err("ERR Connection refused"));
}

/// The frame walnut forwards for `SET key value`, byte for byte.
fn set_frame(key: &str, value: &str) -> Vec<u8> {
    common::resp::encode(&[b"SET", key.as_bytes(), value.as_bytes()])
}

/// The request/response figures of one server after `sets` SETs of `(key, value)`.
fn traffic(server: &str, sets: &[(String, String)]) -> Vec<(String, u64)> {
    let bytes: u64 = sets.iter().map(|(k, v)| set_frame(k, v).len() as u64).sum();
    let n = sets.len() as u64;
    [
        ("requests", n),
        ("request_bytes", bytes),
        ("responses", n),
        ("response_bytes", n * b"+OK\r\n".len() as u64),
    ]
    .into_iter()
    .map(|(name, value)| (format!("alpha/{server}/{name}"), value))
    .collect()
}

const SERVER_COUNTERS: [&str; 4] = [
    "walnut_server_requests_total",
    "walnut_server_request_bytes_total",
    "walnut_server_responses_total",
    "walnut_server_response_bytes_total",
];

/// The figures of [`traffic`] as `/metrics` values, in [`SERVER_COUNTERS`] order.
fn as_metrics(figures: &[(String, u64)]) -> Vec<Vec<f64>> {
    figures.iter().map(|(_, v)| vec![*v as f64]).collect()
}

#[test]
fn after_a_reload_that_adds_a_server_the_stats_list_it_and_the_servers_that_stay_keep_counting() {
    let backends = [RedisServer::start(), RedisServer::start()];
    let (port, metrics_port) = (free_port(), free_port());
    let a = backends[0].server_line(1, Some("a"));
    let b = backends[1].server_line(1, Some("b"));
    let walnut = walnut_with_stats(
        &pool_with("alpha", port, std::slice::from_ref(&a), ""),
        port,
        metrics_port,
    );
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let first: Vec<(String, String)> = (0..10)
        .map(|i| (format!("first:{i}"), format!("value-{i}")))
        .collect();
    for (key, value) in &first {
        assert_eq!(client.cmd_str(&["SET", key, value]), ok());
    }
    let on_a_before = traffic("a", &first);
    wait_for_figures(&walnut, &on_a_before);

    walnut.rewrite_config(&pool_with("alpha", port, &[a.clone(), b], ""));
    reload(&walnut);
    assert!(walnut
        .log()
        .contains("pools changed: alpha; servers added: alpha/b; servers removed: none"));
    // Listed at once with zeros; `a` keeps its counts.
    let mut expected = on_a_before.clone();
    expected.extend(traffic("b", &[]));
    let doc = wait_for_figures(&walnut, &expected);
    assert_eq!(json_servers(&doc, "alpha"), ["a", "b"]);
    let metrics = scrape(metrics_port);
    assert_eq!(
        server_metrics(&metrics, "a", &SERVER_COUNTERS),
        as_metrics(&on_a_before)
    );
    assert_eq!(
        server_metrics(&metrics, "b", &SERVER_COUNTERS),
        as_metrics(&traffic("b", &[]))
    );

    // More traffic: each server counts what it got, `a` on top of its old counts.
    let second: Vec<(String, String)> = (0..40)
        .map(|i| (format!("second:{i}"), format!("v{i}")))
        .collect();
    for (key, value) in &second {
        assert_eq!(client.cmd_str(&["SET", key, value]), ok());
    }
    let mut on = [Vec::new(), Vec::new()];
    for (key, value) in &second {
        let holders: Vec<usize> = (0..2)
            .filter(|&i| backends[i].client().cmd_str(&["GET", key]) == Value::bulk(value))
            .collect();
        assert_eq!(holders.len(), 1, "{key} is on one server");
        on[holders[0]].push((key.clone(), value.clone()));
    }
    assert!(
        !on[0].is_empty() && !on[1].is_empty(),
        "both servers got keys"
    );
    let on_a = traffic("a", &[first.clone(), on[0].clone()].concat());
    let on_b = traffic("b", &on[1]);
    let doc = wait_for_figures(&walnut, &[on_a.clone(), on_b.clone()].concat());
    assert_eq!(json_servers(&doc, "alpha"), ["a", "b"]);
    let metrics = scrape(metrics_port);
    assert_eq!(
        server_metrics(&metrics, "a", &SERVER_COUNTERS),
        as_metrics(&on_a)
    );
    assert_eq!(
        server_metrics(&metrics, "b", &SERVER_COUNTERS),
        as_metrics(&on_b)
    );
    assert_eq!(
        samples(
            &metrics,
            "walnut_pool_client_connections",
            &[("pool", "alpha")]
        ),
        [1.0]
    );
    assert_eq!(samples(&metrics, "walnut_reloads_total", &[]), [1.0]);

    // Removing `b`: it leaves the stats, `a` still keeps its counts.
    walnut.rewrite_config(&pool_with("alpha", port, std::slice::from_ref(&a), ""));
    reload(&walnut);
    let doc = wait_for_figures(&walnut, &on_a);
    assert_eq!(json_servers(&doc, "alpha"), ["a"]);
    let metrics = scrape(metrics_port);
    assert_eq!(
        server_metrics(&metrics, "a", &SERVER_COUNTERS),
        as_metrics(&on_a)
    );
    assert_eq!(
        server_metrics(&metrics, "b", &SERVER_COUNTERS),
        vec![Vec::<f64>::new(); 4]
    );
    assert_eq!(client.cmd_str(&["SET", "third", "x"]), ok());
    let third = [("third".to_string(), "x".to_string())];
    wait_for_figures(
        &walnut,
        &traffic("a", &[first, on[0].clone(), third.to_vec()].concat()),
    );
}

#[test]
fn an_invalid_file_changes_nothing_counts_one_reload_failure_in_metrics_and_logs_every_problem() {
    let backends = [RedisServer::start(), RedisServer::start()];
    let (port, beta_port, metrics_port) = (free_port(), free_port(), free_port());
    let r = backends[0].server_line(1, Some("r"));
    let good = pool_with("alpha", port, std::slice::from_ref(&r), "");
    let walnut = walnut_with_stats(&good, port, metrics_port);
    let reload_counts = || {
        let metrics = scrape(metrics_port);
        (
            samples(&metrics, "walnut_reloads_total", &[]),
            samples(&metrics, "walnut_reload_failures_total", &[]),
        )
    };
    assert_eq!(reload_counts(), (vec![0.0], vec![0.0]));
    reload(&walnut);
    assert_eq!(reload_counts(), (vec![1.0], vec![0.0]));
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["SET", "k", "1"]), ok());

    // A second server and a new pool, but two invalid directives: nothing of it applies.
    let s = backends[1].server_line(1, Some("s"));
    let beta = pool_with("beta", beta_port, std::slice::from_ref(&s), "");
    let invalid = format!(
        "{}{}",
        pool_with("alpha", port, &[r.clone(), s.clone()], "timeout: 1").replace("md5", "sha1"),
        beta.replace("hash: md5", "distribution: nope")
    );
    walnut.rewrite_config(&invalid);
    walnut.process.signal(Signal::SIGUSR1);
    let failed = format!(
        "reload of '{}' failed: the file is invalid; nothing changed",
        walnut.config_path.display()
    );
    wait_until("the failed reload", || walnut.log().contains(&failed));
    let log = walnut.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR "))
        .map(|l| l.split_once(" ERROR ").unwrap().1)
        .collect();
    assert_eq!(
        errors,
        [
            "reload: conf: pool 'alpha': directive \"hash\" is not a valid hash: \"sha1\"",
            "reload: conf: pool 'beta': directive \"distribution\" is not a valid distribution: \"nope\"",
            failed.as_str(),
        ],
        "{log}"
    );
    assert_eq!(reload_counts(), (vec![1.0], vec![1.0]));
    // Nothing changed: the same pool and server, no new listener, and traffic goes on.
    assert!(std::net::TcpStream::connect(local(beta_port)).is_err());
    assert_eq!(client.cmd_str(&["GET", "k"]), Value::bulk("1"));
    for i in 0..20 {
        assert_eq!(client.cmd_str(&["SET", &format!("k{i}"), "v"]), ok());
    }
    assert_eq!(
        backends[0].client().cmd_str(&["DBSIZE"]),
        Value::Int(21),
        "every key is still on the one server"
    );
    let doc = wait_for_figures(&walnut, &[("alpha/r/requests".into(), 22)]);
    assert_eq!(json_pools(&doc), ["alpha"]);
    assert_eq!(json_servers(&doc, "alpha"), ["r"]);

    // A valid file applies, and counts as an applied reload.
    walnut.rewrite_config(&format!("{good}{beta}"));
    reload(&walnut);
    assert_eq!(reload_counts(), (vec![2.0], vec![1.0]));
    let mut on_beta = RespClient::connect(&format!("127.0.0.1:{beta_port}"));
    assert_eq!(on_beta.cmd_str(&["GET", "k"]), Value::Nil);
    let doc = wait_for_figures(&walnut, &[("beta/s/requests".into(), 1)]);
    assert_eq!(json_pools(&doc), ["alpha", "beta"]);
}

/// walnut's `reload_counts` from `/metrics`: (applied, failed).
fn reload_counts(metrics_port: u16) -> (Vec<f64>, Vec<f64>) {
    let metrics = scrape(metrics_port);
    (
        samples(&metrics, "walnut_reloads_total", &[]),
        samples(&metrics, "walnut_reload_failures_total", &[]),
    )
}

/// Sends SIGUSR1 and waits until the log shows one more `reload of '…' failed` line.
fn failed_reload(walnut: &ProxyProcess) {
    let before = walnut.log().matches("reload of '").count();
    walnut.process.signal(Signal::SIGUSR1);
    wait_until("the failed reload", || {
        walnut.log().matches("reload of '").count() > before
    });
}

#[test]
fn a_new_pools_listen_address_in_use_fails_the_reload_and_changes_nothing() {
    let backend = RedisServer::start();
    let (port, beta_port, metrics_port) = (free_port(), free_port(), free_port());
    let r = backend.server_line(1, Some("r"));
    let alpha = pool_with("alpha", port, std::slice::from_ref(&r), "");
    let walnut = walnut_with_stats(&alpha, port, metrics_port);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["SET", "k", "1"]), ok());
    // Another process holds beta's address.
    let _taken = std::net::TcpListener::bind(local(beta_port)).unwrap();

    walnut.rewrite_config(&format!(
        "{}{}",
        pool_with("alpha", port, std::slice::from_ref(&r), "timeout: 1000"),
        pool_with("beta", beta_port, std::slice::from_ref(&r), "")
    ));
    failed_reload(&walnut);
    let log = walnut.log();
    assert!(
        log.contains(&format!(
            "reload of '{}' failed: bind on p 'beta' to addr '127.0.0.1:{beta_port}' failed: Address already in use",
            walnut.config_path.display()
        )),
        "{log}"
    );
    assert_eq!(reload_counts(metrics_port), (vec![0.0], vec![1.0]));
    assert_eq!(client.cmd_str(&["GET", "k"]), Value::bulk("1"));
    let mut fresh = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(fresh.cmd_str(&["GET", "k"]), Value::bulk("1"));
    let doc = wait_for_figures(&walnut, &[("alpha/r/requests".into(), 3)]);
    assert_eq!(json_pools(&doc), ["alpha"]);
}

#[test]
fn a_listen_address_in_use_fails_the_reload_without_closing_a_pool_whose_listener_would_be_handed_over(
) {
    let backend = RedisServer::start();
    let memcached = MemcachedServer::start();
    let (port, beta_port, metrics_port) = (free_port(), free_port(), free_port());
    let alpha = pool_with("alpha", port, &[backend.server_line(1, Some("r"))], "");
    let walnut = walnut_with_stats(&alpha, port, metrics_port);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["SET", "k", "1"]), ok());
    let _taken = std::net::TcpListener::bind(local(beta_port)).unwrap();

    // alpha switches to memcached on the same address (its listener would be handed over to
    // the new alpha), and "blocked" cannot bind: the reload fails, so alpha must stay as it
    // was. (Pools are handled in twemproxy's order, shorter names first: alpha, then blocked.)
    walnut.rewrite_config(&format!(
        "{}{}",
        mc_pool("alpha", port, std::slice::from_ref(&memcached), &[(0, 1)]),
        pool_with(
            "blocked",
            beta_port,
            &[backend.server_line(1, Some("r"))],
            ""
        )
    ));
    failed_reload(&walnut);
    assert_eq!(reload_counts(metrics_port), (vec![0.0], vec![1.0]));
    assert_eq!(
        client.cmd_str(&["GET", "k"]),
        Value::bulk("1"),
        "alpha's client is still served"
    );
    let fresh = std::net::TcpStream::connect(local(port));
    assert!(fresh.is_ok(), "alpha still listens: {fresh:?}");
    let mut fresh = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(fresh.cmd_str(&["GET", "k"]), Value::bulk("1"));
    let doc = wait_for_figures(&walnut, &[("alpha/r/requests".into(), 3)]);
    assert_eq!(json_pools(&doc), ["alpha"]);
}
