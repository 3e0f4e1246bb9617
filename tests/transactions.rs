//! Transactions (issue 21, scenarios 2 and 5) through a ketama pool of three real
//! redis-servers: MULTI/EXEC runs on the one server of the transaction's keys, WATCH
//! conflicts abort EXEC, a key on another server aborts the transaction with CROSSSLOT,
//! walnut's own errors carry Redis's texts, a pipelined transaction keeps its place among the
//! requests around it, multi-key commands are not split inside MULTI, clients that leave
//! mid-transaction leave no dedicated connection in use, and redis-py's transactions,
//! optimistic locking and a Sidekiq/BullMQ-style worker loop work.

mod common;

use std::time::{Duration, Instant};

use common::{err, free_port, local, ok, queued, ProxyProcess, RedisServer, RespClient, Value};

struct Setup {
    backends: Vec<RedisServer>,
    _walnut: ProxyProcess,
    port: u16,
    metrics_port: u16,
}

/// Three redis-servers s0..s2 behind one ketama pool; `{...}` hash tags keep keys together.
fn setup(extra: &str) -> Setup {
    let backends: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let port = free_port();
    let metrics_port = free_port();
    let config = common::ketama_pool(
        "queues",
        port,
        &backends,
        &format!("  hash_tag: \"{{}}\"\n{extra}"),
    );
    let metrics = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &config,
        &[local(port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    Setup {
        backends,
        _walnut: walnut,
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

    /// (open, idle) dedicated connections over the pool's servers.
    fn dedicated(&self) -> (u64, u64) {
        (
            self.server_gauge("walnut_server_dedicated_connections"),
            self.server_gauge("walnut_server_dedicated_idle_connections"),
        )
    }

    /// Waits (up to 10 s) until every open dedicated connection is idle.
    fn wait_until_dedicated_idle(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (open, idle) = self.dedicated();
            if open == idle {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{after}: {open} dedicated connections open, only {idle} idle"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The backends that hold `key`, asked directly.
    fn holders(&self, key: &str) -> Vec<usize> {
        (0..self.backends.len())
            .filter(|&i| self.backends[i].client().cmd_str(&["EXISTS", key]) == Value::Int(1))
            .collect()
    }

    /// The backend walnut writes `key` to: a probe SET through walnut, found directly, then
    /// deleted again through walnut.
    fn owner(&self, key: &str) -> usize {
        let mut c = self.client();
        assert_eq!(c.cmd_str(&["SET", key, "probe"]), ok());
        let holders = self.holders(key);
        assert_eq!(holders.len(), 1, "{key} is on backends {holders:?}");
        assert_eq!(c.cmd_str(&["DEL", key]), Value::Int(1));
        holders[0]
    }

    /// Two keys (no hash tag) that walnut puts on different backends; neither exists. (With
    /// fnv1a_64, keys that differ only in their last bytes hash close together and share a
    /// server: the number comes before a suffix.)
    fn keys_on_two_servers(&self) -> (String, String) {
        let first = self.owner("x0:probe");
        for i in 1..100 {
            let key = format!("x{i}:probe");
            if self.owner(&key) != first {
                return ("x0:probe".into(), key);
            }
        }
        panic!("x1:probe..x99:probe all live with x0:probe");
    }
}

fn words(line: &str) -> Vec<Vec<u8>> {
    line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
}

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

#[test]
fn multi_exec_runs_the_queued_commands_on_the_server_of_their_hash_tag() {
    let s = setup("");
    let mut c = s.client();
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(c.cmd_str(&["INCR", "{u}:b"]), queued());
    assert_eq!(
        c.cmd_str(&["EXEC"]),
        Value::Array(vec![Value::Int(1), Value::Int(1)])
    );
    // Both keys on one backend, the same one, and nowhere else.
    let a = s.holders("{u}:a");
    assert_eq!(a.len(), 1, "{{u}}:a is on backends {a:?}");
    assert_eq!(s.holders("{u}:b"), a);
    let mut direct = s.backends[a[0]].client();
    assert_eq!(direct.cmd_str(&["GET", "{u}:a"]), Value::bulk("1"));
    assert_eq!(direct.cmd_str(&["GET", "{u}:b"]), Value::bulk("1"));
    // The connection is out of MULTI: commands run at once again.
    assert_eq!(c.cmd_str(&["INCR", "{u}:a"]), Value::Int(2));
    assert_eq!(c.cmd_str(&["GET", "{u}:b"]), Value::bulk("1"));
}

#[test]
fn watch_aborts_exec_when_another_client_changed_the_key_and_not_otherwise() {
    let s = setup("");
    let mut a = s.client();
    let mut b = s.client();
    // B changes the watched key between A's WATCH and A's EXEC: EXEC returns a nil array.
    assert_eq!(a.cmd_str(&["WATCH", "{u}:a"]), ok());
    assert_eq!(a.cmd_str(&["GET", "{u}:a"]), Value::Nil);
    assert_eq!(b.cmd_str(&["INCR", "{u}:a"]), Value::Int(1));
    assert_eq!(a.cmd_str(&["MULTI"]), ok());
    assert_eq!(a.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(a.cmd_str(&["EXEC"]), Value::NilArray);
    assert_eq!(a.cmd_str(&["GET", "{u}:a"]), Value::bulk("1"));

    // Untouched, the same sequence runs.
    assert_eq!(a.cmd_str(&["WATCH", "{u}:a"]), ok());
    assert_eq!(a.cmd_str(&["GET", "{u}:a"]), Value::bulk("1"));
    assert_eq!(a.cmd_str(&["MULTI"]), ok());
    assert_eq!(a.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(a.cmd_str(&["EXEC"]), Value::Array(vec![Value::Int(2)]));

    // UNWATCH lets go: B's change no longer aborts A's transaction.
    assert_eq!(a.cmd_str(&["WATCH", "{u}:a"]), ok());
    assert_eq!(a.cmd_str(&["UNWATCH"]), ok());
    assert_eq!(b.cmd_str(&["INCR", "{u}:a"]), Value::Int(3));
    assert_eq!(a.cmd_str(&["MULTI"]), ok());
    assert_eq!(a.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(a.cmd_str(&["EXEC"]), Value::Array(vec![Value::Int(4)]));

    let holders = s.holders("{u}:a");
    assert_eq!(holders.len(), 1, "{{u}}:a is on backends {holders:?}");
    assert_eq!(
        s.backends[holders[0]].client().cmd_str(&["GET", "{u}:a"]),
        Value::bulk("4")
    );
}

#[test]
fn a_key_on_another_server_inside_multi_gets_crossslot_and_exec_aborts() {
    let s = setup("");
    let (x, y) = s.keys_on_two_servers();
    let mut c = s.client();
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["SET", &x, "written"]), queued());
    assert_eq!(c.cmd_str(&["SET", &y, "written"]), err(CROSSSLOT));
    assert_eq!(c.cmd_str(&["EXEC"]), err(EXECABORT));
    // Neither key was written, on any backend.
    assert_eq!(s.holders(&x), Vec::<usize>::new());
    assert_eq!(s.holders(&y), Vec::<usize>::new());
    // The transaction is over and the connection works normally.
    assert_eq!(c.cmd_str(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd_str(&["SET", &x, "vx"]), ok());
    assert_eq!(c.cmd_str(&["SET", &y, "vy"]), ok());
    assert_eq!(c.cmd_str(&["GET", &x]), Value::bulk("vx"));
    assert_eq!(c.cmd_str(&["GET", &y]), Value::bulk("vy"));
    assert_ne!(s.holders(&x), s.holders(&y));
}

#[test]
fn walnuts_own_transaction_errors_have_redis_texts() {
    let s = setup("");
    let mut c = s.client();
    assert_eq!(c.cmd_str(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd_str(&["DISCARD"]), err("ERR DISCARD without MULTI"));

    // A nested MULTI is refused; the transaction stays open and DISCARD drops what it queued.
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        c.cmd_str(&["MULTI"]),
        err("ERR MULTI calls can not be nested")
    );
    assert_eq!(c.cmd_str(&["SET", "{u}:k", "v"]), queued());
    assert_eq!(c.cmd_str(&["DISCARD"]), ok());
    assert_eq!(c.cmd_str(&["EXISTS", "{u}:k"]), Value::Int(0));
    assert_eq!(s.holders("{u}:k"), Vec::<usize>::new());

    // WATCH inside MULTI is refused without spoiling the transaction (as on Redis).
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        c.cmd_str(&["WATCH", "{u}:k"]),
        err("ERR WATCH inside MULTI is not allowed")
    );
    assert_eq!(c.cmd_str(&["SET", "{u}:w", "1"]), queued());
    assert_eq!(c.cmd_str(&["EXEC"]), Value::Array(vec![ok()]));
    assert_eq!(c.cmd_str(&["GET", "{u}:w"]), Value::bulk("1"));

    // A command with the wrong arity is refused and EXEC then aborts.
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        c.cmd_str(&["SET", "a"]),
        err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(c.cmd_str(&["EXEC"]), err(EXECABORT));

    // DISCARD after a queued SET: the key is not set.
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["SET", "{u}:d", "v"]), queued());
    assert_eq!(c.cmd_str(&["DISCARD"]), ok());
    assert_eq!(c.cmd_str(&["GET", "{u}:d"]), Value::Nil);
    assert_eq!(s.holders("{u}:d"), Vec::<usize>::new());
    assert_eq!(c.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn a_pipelined_transaction_keeps_its_place_among_the_requests_around_it() {
    let s = setup("");
    let mut c = s.client();
    for round in 0..10 {
        let replies = c.pipeline(&[
            words(&format!("SET k0 v{round}")),
            words("MULTI"),
            words("SET {t}:x 1"),
            words("INCR {t}:x"),
            words("EXEC"),
            words("GET {t}:x"),
        ]);
        assert_eq!(
            replies,
            vec![
                ok(),
                ok(),
                queued(),
                queued(),
                Value::Array(vec![ok(), Value::Int(2)]),
                Value::bulk("2"),
            ],
            "round {round}"
        );
        assert_eq!(c.cmd_str(&["GET", "k0"]), Value::bulk(format!("v{round}")));
    }
}

#[test]
fn multi_key_commands_inside_multi_are_not_split() {
    let s = setup("");
    let mut c = s.client();
    assert_eq!(c.cmd_str(&["MSET", "{u}:a", "1", "{u}:b", "2"]), ok());
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["MGET", "{u}:a", "{u}:b"]), queued());
    assert_eq!(
        c.cmd_str(&["EXEC"]),
        Value::Array(vec![Value::Array(vec![Value::bulk("1"), Value::bulk("2")])])
    );

    // Keys on two servers: refused inside MULTI, which then aborts.
    let (x, y) = s.keys_on_two_servers();
    assert_eq!(c.cmd_str(&["SET", &x, "vx"]), ok());
    assert_eq!(c.cmd_str(&["SET", &y, "vy"]), ok());
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["MGET", &x, &y]), err(CROSSSLOT));
    assert_eq!(c.cmd_str(&["EXEC"]), err(EXECABORT));
    // Outside MULTI the same MGET is split over the servers as usual.
    assert_eq!(
        c.cmd_str(&["MGET", &x, &y]),
        Value::Array(vec![Value::bulk("vx"), Value::bulk("vy")])
    );
}

#[test]
fn dedicated_connections_come_back_after_transactions_and_abandoned_multis() {
    let s = setup("");
    let mut c = s.client();
    for i in 0..3 {
        assert_eq!(c.cmd_str(&["MULTI"]), ok());
        assert_eq!(c.cmd_str(&["INCR", "{r}:n"]), queued());
        assert_eq!(c.cmd_str(&["EXEC"]), Value::Array(vec![Value::Int(i + 1)]));
    }
    assert_eq!(c.cmd_str(&["WATCH", "{r}:n"]), ok());
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["INCR", "{r}:n"]), queued());
    assert_eq!(c.cmd_str(&["DISCARD"]), ok());
    assert_eq!(c.cmd_str(&["GET", "{r}:n"]), Value::bulk("3"));
    s.wait_until_dedicated_idle("after three transactions and a DISCARD");

    // 50 clients open a transaction, queue a SET and vanish without EXEC.
    let clients: Vec<RespClient> = (0..50)
        .map(|i| {
            let mut c = s.client();
            assert_eq!(c.cmd_str(&["MULTI"]), ok());
            assert_eq!(c.cmd_str(&["SET", &format!("{{c}}:{i}"), "v"]), queued());
            c
        })
        .collect();
    // Each open transaction holds a dedicated connection of {c}'s server meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (open, idle) = s.dedicated();
        if open.saturating_sub(idle) >= 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "50 open transactions: {open} dedicated connections open, {idle} idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(clients);
    s.wait_until_dedicated_idle("after 50 clients left mid-transaction");
    for i in 0..50 {
        let key = format!("{{c}}:{i}");
        assert_eq!(s.holders(&key), Vec::<usize>::new(), "{key} was written");
    }
    assert_eq!(c.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn redis_py_transactions_optimistic_locking_and_a_job_worker_loop_work_through_walnut() {
    let s = setup("");
    let script = r#"
import sys, threading, redis
port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)

# MULTI/EXEC from a transactional pipeline.
pipe = r.pipeline(transaction=True)
pipe.incr("{p}:a")
pipe.incr("{p}:b")
assert pipe.execute() == [1, 1]

# WATCH/MULTI/EXEC optimistic locking from 4 threads, 50 increments each.
def bump(pipe):
    value = int(pipe.get("{p}:a"))
    pipe.multi()
    pipe.set("{p}:a", value + 1)

failures = []
def locker():
    try:
        mine = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        for _ in range(50):
            mine.transaction(bump, "{p}:a")
    except Exception as e:
        failures.append(repr(e))
threads = [threading.Thread(target=locker) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert not failures, failures
assert int(r.get("{p}:a")) == 50 * 4 + 1, r.get("{p}:a")
assert int(r.get("{p}:b")) == 1

# Sidekiq/BullMQ style: a producer pushes 200 jobs; two workers BLMOVE each job to the active
# list and acknowledge it in a MULTI/EXEC.
def producer():
    mine = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    for i in range(200):
        mine.lpush("{q}:wait", f"job-{i}")

processed = [[], []]
def worker(n):
    try:
        mine = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
        idle = 0
        while int(mine.get("{q}:done") or 0) < 200 and idle < 30:
            job = mine.blmove("{q}:wait", "{q}:active", 1, "RIGHT", "LEFT")
            if job is None:
                idle += 1
                continue
            ack = mine.pipeline(transaction=True)
            ack.lrem("{q}:active", 1, job)
            ack.incr("{q}:done")
            ack.hset("{q}:results", job, 1)
            removed, _, added = ack.execute()
            assert removed == 1 and added == 1, (removed, added)
            processed[n].append(job.decode())
    except Exception as e:
        failures.append(repr(e))
threads = [threading.Thread(target=producer)]
threads += [threading.Thread(target=worker, args=(n,)) for n in range(2)]
for t in threads: t.start()
for t in threads: t.join()
assert not failures, failures
assert int(r.get("{q}:done")) == 200, r.get("{q}:done")
assert r.hlen("{q}:results") == 200
assert r.llen("{q}:active") == 0
assert r.llen("{q}:wait") == 0
assert sorted(processed[0] + processed[1]) == sorted(f"job-{i}" for i in range(200))
print("ok")
"#;
    assert_eq!(
        common::run_python("redis-py", script, &[&s.port.to_string()]),
        "ok"
    );
    s.wait_until_dedicated_idle("after the redis-py script");
}
