//! Blocking commands (issue 21) on dedicated backend connections, through a ketama pool of
//! three real redis-servers: a blocked client never delays the others, a push wakes it, its
//! own timeout (not the pool's) ends it, what it pipelined behind the blocked command waits
//! for it, and clients killed while blocked leave no dedicated connection in use.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::resp::encode;
use common::{free_port, local, ProxyProcess, RedisServer, RespClient, Value};

struct Setup {
    _backends: Vec<RedisServer>,
    walnut: ProxyProcess,
    port: u16,
    metrics_port: u16,
}

fn setup(extra: &str) -> Setup {
    let backends: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let port = free_port();
    let metrics_port = free_port();
    let config = common::ketama_pool("queues", port, &backends, extra);
    let metrics = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &config,
        &[local(port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    Setup {
        _backends: backends,
        walnut,
        port,
        metrics_port,
    }
}

impl Setup {
    fn client(&self) -> RespClient {
        RespClient::connect(&format!("127.0.0.1:{}", self.port))
    }

    /// The sum over the pool's servers of a server gauge in `/metrics`.
    fn server_gauge(&self, name: &str) -> u64 {
        common::server_metric_sum(self.metrics_port, name)
    }
}

fn pair(list: &str, value: &str) -> Value {
    Value::Array(vec![Value::bulk(list), Value::bulk(value)])
}

#[test]
fn a_blocked_client_delays_nobody_and_is_woken_by_a_push() {
    let s = setup("");
    let port = s.port;
    let blocked = std::thread::spawn(move || {
        let mut c = RespClient::connect(&format!("127.0.0.1:{port}"));
        c.cmd_str(&["BLPOP", "q", "5"])
    });
    // 50 clients run GET/SET while the first is blocked; a count, not a timing.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..50)
        .map(|i| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut c = RespClient::connect(&format!("127.0.0.1:{port}"));
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k:{i}:{n}");
                    assert_eq!(c.cmd_str(&["SET", &key, &key]), Value::Status("OK".into()));
                    assert_eq!(c.cmd_str(&["GET", &key]), Value::bulk(&key));
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < 2_000 {
        assert!(Instant::now() < deadline, "GET/SET stalled behind a BLPOP");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !blocked.is_finished(),
        "BLPOP q 5 answered before anything was pushed"
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a GET/SET client failed");
    }
    assert_eq!(s.client().cmd_str(&["RPUSH", "q", "x"]), Value::Int(1));
    assert_eq!(blocked.join().expect("the blocked client"), pair("q", "x"));

    // Its own timeout ends it (1 s, beyond the pool's 400 ms): a nil array, not an error.
    let mut c = s.client();
    assert_eq!(c.cmd_str(&["BLPOP", "empty", "1"]), Value::NilArray);
    assert_eq!(c.cmd_str(&["PING"]), Value::Status("PONG".into()));
    // Other blocking commands, and XREAD BLOCK.
    c.cmd_str(&["RPUSH", "src", "a"]);
    assert_eq!(
        c.cmd_str(&["BLMOVE", "src", "src", "LEFT", "RIGHT", "1"]),
        Value::bulk("a")
    );
    c.cmd_str(&["ZADD", "z", "1", "m"]);
    assert_eq!(
        c.cmd_str(&["BZPOPMIN", "z", "1"]),
        Value::Array(vec![Value::bulk("z"), Value::bulk("m"), Value::bulk("1")])
    );
    assert_eq!(
        c.cmd_str(&["XREAD", "BLOCK", "100", "STREAMS", "nostream", "$"]),
        Value::NilArray
    );
    assert!(matches!(
        c.cmd_str(&["BLPOP", "q", "-1"]),
        Value::Error(e) if e.contains("timeout is negative")
    ));
}

#[test]
fn requests_pipelined_behind_a_blocked_command_wait_for_it() {
    let s = setup("");
    let mut a = s.client();
    // On Redis the RPUSH behind BLPOP runs only once BLPOP is answered.
    a.send_raw(&encode(&[b"BLPOP", b"ordered", b"0"]));
    a.send_raw(&encode(&[b"RPUSH", b"ordered", b"mine"]));
    std::thread::sleep(Duration::from_millis(300));
    let mut b = s.client();
    assert_eq!(b.cmd_str(&["LLEN", "ordered"]), Value::Int(0));
    assert_eq!(b.cmd_str(&["RPUSH", "ordered", "theirs"]), Value::Int(1));
    assert_eq!(a.read_value(), pair("ordered", "theirs"));
    assert_eq!(a.read_value(), Value::Int(1));
    assert_eq!(
        b.cmd_str(&["LRANGE", "ordered", "0", "-1"]),
        Value::Array(vec![Value::bulk("mine")])
    );
}

#[test]
fn keys_on_two_servers_get_crossslot_and_the_bound_is_enforced() {
    let s = setup("  dedicated_connections: 2\n");
    let mut c = s.client();
    // Find two keys on different servers: BLPOP over them is refused, the connection stays.
    let mut refused = false;
    for i in 0..50 {
        let reply = c.cmd_str(&["BLPOP", "a", &format!("b{i}"), "1"]);
        if let Value::Error(e) = &reply {
            assert_eq!(e, "CROSSSLOT Keys in request don't hash to the same slot");
            refused = true;
            break;
        }
        assert_eq!(reply, Value::NilArray);
    }
    assert!(
        refused,
        "no key among b0..b49 lives on another server than 'a'"
    );
    assert_eq!(c.cmd_str(&["PING"]), Value::Status("PONG".into()));

    // Two clients hold both dedicated connections of 'w''s server; a third is told so.
    let port = s.port;
    let holders: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                RespClient::connect(&format!("127.0.0.1:{port}")).cmd_str(&["BLPOP", "w", "0"])
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.server_gauge("walnut_server_dedicated_connections") < 2 {
        assert!(
            Instant::now() < deadline,
            "the two BLPOPs never held their connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.server_gauge("walnut_server_dedicated_idle_connections") > 0 {
        assert!(
            Instant::now() < deadline,
            "idle dedicated connections stay idle"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    match c.cmd_str(&["BLPOP", "w", "0"]) {
        Value::Error(e) => assert!(e.contains("dedicated connections in use"), "{e}"),
        other => panic!("a third BLPOP past dedicated_connections: 2 got {other:?}"),
    }
    c.cmd_str(&["RPUSH", "w", "1", "2"]);
    for h in holders {
        assert!(matches!(h.join().unwrap(), Value::Array(_)));
    }
}

#[test]
fn clients_killed_while_blocked_leave_no_dedicated_connection_in_use() {
    // 200 blocked clients over 3 servers: more than the default 64 on one of them.
    let s = setup("  dedicated_connections: 200\n");
    let port = s.port;
    // 200 clients block; their sockets are then closed, as a killed process's are.
    let mut blocked = Vec::new();
    for i in 0..200 {
        let mut stream = std::net::TcpStream::connect(local(port)).expect("connect");
        use std::io::Write;
        stream
            .write_all(&encode(&[b"BLPOP", format!("gone:{i}").as_bytes(), b"0"]))
            .unwrap();
        blocked.push(stream);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.server_gauge("walnut_server_dedicated_connections") < 200 {
        assert!(
            Instant::now() < deadline,
            "the 200 BLPOPs never all blocked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Meanwhile another client's pipelined requests are all answered, each its own.
    let mut other = s.client();
    let commands: Vec<Vec<Vec<u8>>> = (0..500)
        .flat_map(|i| {
            let key = format!("live:{i}").into_bytes();
            [
                vec![b"SET".to_vec(), key.clone(), key.clone()],
                vec![b"GET".to_vec(), key],
            ]
        })
        .collect();
    let replies = other.pipeline(&commands);
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair[0], Value::Status("OK".into()));
        assert_eq!(pair[1], Value::bulk(format!("live:{i}")));
    }
    drop(blocked);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = s.server_gauge("walnut_server_dedicated_connections");
        let idle = s.server_gauge("walnut_server_dedicated_idle_connections");
        if open == idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} dedicated connections open, {idle} idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = &s.walnut;
    assert_eq!(s.client().cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn a_redis_py_worker_loop_of_blmove_works_through_walnut() {
    let s = setup("");
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=30)
for i in range(20):
    r.rpush("{jobs}:queue", f"job-{i}")
done = []
while True:
    job = r.blmove("{jobs}:queue", "{jobs}:processing", 1, "LEFT", "RIGHT")
    if job is None:
        break
    r.lrem("{jobs}:processing", 1, job)
    done.append(job.decode())
assert done == [f"job-{i}" for i in range(20)], done
assert r.llen("{jobs}:processing") == 0
print("ok")
"#;
    assert_eq!(
        common::run_python("redis-py", script, &[&s.port.to_string()]),
        "ok"
    );
}
