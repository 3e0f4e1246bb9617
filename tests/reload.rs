//! Config reload without a restart, under continuous pipelined load, against real
//! redis-servers; placement after each change equals a fresh nutcracker's with the new config.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, local, ProxyProcess, RedisServer, RespClient, Value};
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
