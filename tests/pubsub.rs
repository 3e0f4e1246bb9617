//! Pub/sub (issue 21, scenario 3) through a ketama pool of three real redis-servers: channels
//! are subscribed on the server their name maps to, patterns on every server, counts and
//! subscribed mode are Redis's, PUBSUB answers merge every server, shard channels work, a
//! subscriber's channels come back after their server restarts and follow a reload that
//! moves them, subscribers that leave leave nothing subscribed and no dedicated connection in
//! use, and redis-py's PubSub works.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::resp::encode;
use common::{free_port, local, wait_until, ProxyProcess, RedisServer, RespClient, Value};
use nix::sys::signal::Signal;

struct Setup {
    backends: Vec<RedisServer>,
    walnut: ProxyProcess,
    port: u16,
    metrics_port: u16,
}

/// The config of one ketama pool over `backends`, named s0, s1, ….
fn config(port: u16, backends: &[RedisServer], extra: &str) -> String {
    common::ketama_pool(
        "news",
        port,
        backends,
        &format!("  hash_tag: \"{{}}\"\n{extra}"),
    )
}

fn setup(extra: &str) -> Setup {
    let backends: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let port = free_port();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &config(port, &backends, extra),
        &[local(port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    Setup {
        backends,
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

    /// (open, idle) dedicated connections over the pool's servers.
    fn dedicated(&self) -> (u64, u64) {
        (
            self.server_gauge("walnut_server_dedicated_connections"),
            self.server_gauge("walnut_server_dedicated_idle_connections"),
        )
    }

    /// The channels each backend has subscribers on, asked of it directly.
    fn channels_by_backend(&self) -> Vec<BTreeSet<String>> {
        self.backends
            .iter()
            .map(|b| texts(&b.client().cmd_str(&["PUBSUB", "CHANNELS"])))
            .collect()
    }

    /// Each backend's `PUBSUB NUMPAT`, asked of it directly.
    fn numpat_by_backend(&self) -> Vec<i64> {
        self.backends
            .iter()
            .map(|b| match b.client().cmd_str(&["PUBSUB", "NUMPAT"]) {
                Value::Int(n) => n,
                other => panic!("PUBSUB NUMPAT: {other:?}"),
            })
            .collect()
    }

    /// Waits until the backends, together, have subscribers on exactly `names`, each on one
    /// backend only; returns the channels of each backend.
    fn wait_for_channels(&self, names: &[String]) -> Vec<BTreeSet<String>> {
        let want: BTreeSet<String> = names.iter().cloned().collect();
        wait_until("the backends to show every channel subscribed once", || {
            let by = self.channels_by_backend();
            let all: BTreeSet<String> = by.iter().flatten().cloned().collect();
            let total: usize = by.iter().map(BTreeSet::len).sum();
            (all == want && total == want.len()).then_some(by)
        })
    }
}

/// Sends SIGUSR1 and waits until the log shows one more reload line (as tests/reload.rs).
fn reload(walnut: &ProxyProcess) {
    let before = walnut.log().matches("reload: pools added").count();
    walnut.process.signal(Signal::SIGUSR1);
    wait_until("the reload", || {
        (walnut.log().matches("reload: pools added").count() > before).then_some(())
    });
}

fn text(value: &Value) -> String {
    match value {
        Value::Bulk(bytes) => String::from_utf8(bytes.clone()).expect("UTF-8"),
        other => panic!("not a bulk string: {other:?}"),
    }
}

/// The bulk strings of an array reply, as a set.
fn texts(value: &Value) -> BTreeSet<String> {
    match value {
        Value::Array(items) => items.iter().map(text).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

fn confirmation(word: &str, name: &str, count: i64) -> Value {
    Value::Array(vec![
        Value::bulk(word),
        Value::bulk(name),
        Value::Int(count),
    ])
}

fn message(channel: &str, payload: &str) -> Value {
    Value::Array(vec![
        Value::bulk("message"),
        Value::bulk(channel),
        Value::bulk(payload),
    ])
}

fn pmessage(pattern: &str, channel: &str, payload: &str) -> Value {
    Value::Array(vec![
        Value::bulk("pmessage"),
        Value::bulk(pattern),
        Value::bulk(channel),
        Value::bulk(payload),
    ])
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}")).collect()
}

/// `c0:feed`, `c1:feed`, …: with fnv1a_64, names that differ only in their last bytes hash
/// close together and land on one server; the suffix after the number spreads them.
fn feeds(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("c{i}:feed")).collect()
}

/// Sends `command` with every name in one request and reads one reply per name.
fn subscribe_all(c: &mut RespClient, command: &str, names: &[String]) -> Vec<Value> {
    let mut args: Vec<&[u8]> = vec![command.as_bytes()];
    args.extend(names.iter().map(|n| n.as_bytes()));
    c.send_raw(&encode(&args));
    names.iter().map(|_| c.read_value()).collect()
}

/// Reads (at most 50 values) until `want` arrives; what came before it is skipped.
fn read_until(c: &mut RespClient, want: &Value) {
    let mut skipped = Vec::new();
    for _ in 0..50 {
        let value = c.read_value();
        if value == *want {
            return;
        }
        skipped.push(value);
    }
    panic!("{want:?} never arrived; read instead: {skipped:?}");
}

/// Reads until every value of `want` has arrived, in any order (at most 50 other values).
fn read_all(c: &mut RespClient, want: &[Value]) {
    let mut missing: Vec<Value> = want.to_vec();
    let mut skipped = Vec::new();
    while !missing.is_empty() {
        let value = c.read_value();
        match missing.iter().position(|m| *m == value) {
            Some(i) => {
                missing.swap_remove(i);
            }
            None => {
                skipped.push(value);
                assert!(
                    skipped.len() <= 50,
                    "still missing {missing:?}; read instead: {skipped:?}"
                );
            }
        }
    }
}

/// Publishes to `channel` through walnut (a fresh payload each time) until one subscriber
/// receives it; returns that payload. Up to 20 s; errors and 0 mean "not yet".
fn publish_until_delivered(publisher: &mut RespClient, channel: &str, label: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    loop {
        let payload = format!("{label}-{attempt}");
        match publisher.cmd_str(&["PUBLISH", channel, &payload]) {
            Value::Int(1) => return payload,
            Value::Int(0) | Value::Error(_) => {}
            other => panic!("PUBLISH {channel}: {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "PUBLISH {channel} never reached its subscriber again"
        );
        attempt += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_published_message_reaches_a_subscriber_on_another_connection() {
    let s = setup("");
    let mut sub = s.client();
    let mut publisher = s.client();
    assert_eq!(
        sub.cmd_str(&["SUBSCRIBE", "news"]),
        confirmation("subscribe", "news", 1)
    );
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "news", "hello"]),
        Value::Int(1)
    );
    assert_eq!(sub.read_value(), message("news", "hello"));
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "news", "again"]),
        Value::Int(1)
    );
    assert_eq!(sub.read_value(), message("news", "again"));
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "nobody", "x"]),
        Value::Int(0)
    );
    // A subscriber quiet for longer than walnut takes to release an idle session's buffers
    // (500 ms) still gets what is published: its reply channel outlives the idle period.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "news", "after-a-quiet-while"]),
        Value::Int(1)
    );
    assert_eq!(sub.read_value(), message("news", "after-a-quiet-while"));
}

#[test]
fn ten_channels_on_one_connection_count_up_in_order_and_spread_over_the_servers() {
    let s = setup("");
    let mut sub = s.client();
    let channels = feeds(10);
    let replies = subscribe_all(&mut sub, "SUBSCRIBE", &channels);
    let want: Vec<Value> = channels
        .iter()
        .enumerate()
        .map(|(i, name)| confirmation("subscribe", name, i as i64 + 1))
        .collect();
    assert_eq!(replies, want);
    // Each channel on one backend, and more than one backend in use.
    let by = s.wait_for_channels(&channels);
    assert!(
        by.iter().filter(|set| !set.is_empty()).count() >= 2,
        "c0:feed..c9:feed all on one backend: {by:?}"
    );
    let mut publisher = s.client();
    for name in &channels {
        assert_eq!(
            publisher.cmd_str(&["PUBLISH", name, &format!("to-{name}")]),
            Value::Int(1)
        );
    }
    let got: BTreeSet<(String, String)> = (0..10)
        .map(|_| match sub.read_value() {
            Value::Array(parts) if parts.len() == 3 && parts[0] == Value::bulk("message") => {
                (text(&parts[1]), text(&parts[2]))
            }
            other => panic!("not a message: {other:?}"),
        })
        .collect();
    let want: BTreeSet<(String, String)> = channels
        .iter()
        .map(|n| (n.clone(), format!("to-{n}")))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_pattern_is_subscribed_on_every_server_and_matches_channels_on_all_of_them() {
    let s = setup("");
    let mut sub = s.client();
    assert_eq!(
        sub.cmd_str(&["PSUBSCRIBE", "n*"]),
        confirmation("psubscribe", "n*", 1)
    );
    wait_until("every backend to have the pattern", || {
        (s.numpat_by_backend() == vec![1, 1, 1]).then_some(())
    });
    let mut publisher = s.client();
    let channels = names("n", 30);
    for name in &channels {
        assert_eq!(
            publisher.cmd_str(&["PUBLISH", name, &format!("p-{name}")]),
            Value::Int(1),
            "PUBLISH {name}"
        );
    }
    let want: Vec<Value> = channels
        .iter()
        .map(|n| pmessage("n*", n, &format!("p-{n}")))
        .collect();
    let got: Vec<Value> = (0..30).map(|_| sub.read_value()).collect();
    for value in &want {
        assert!(got.contains(value), "{value:?} missing from {got:?}");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn subscribed_mode_refuses_other_commands_answers_ping_and_ends_with_the_last_unsubscribe() {
    let s = setup("");
    let mut c = s.client();
    assert_eq!(
        subscribe_all(&mut c, "SUBSCRIBE", &["a".to_string(), "b".to_string()]),
        vec![
            confirmation("subscribe", "a", 1),
            confirmation("subscribe", "b", 2)
        ]
    );
    assert_eq!(
        c.cmd_str(&["GET", "a"]),
        Value::Error(
            "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                .into()
        )
    );
    assert_eq!(
        c.cmd_str(&["PING"]),
        Value::Array(vec![Value::bulk("pong"), Value::bulk("")])
    );
    assert_eq!(
        c.cmd_str(&["PING", "hi"]),
        Value::Array(vec![Value::bulk("pong"), Value::bulk("hi")])
    );
    // UNSUBSCRIBE with no arguments: one reply per channel, counting down to 0.
    c.send_raw(&encode(&[b"UNSUBSCRIBE"]));
    let replies = [c.read_value(), c.read_value()];
    let mut seen = BTreeSet::new();
    for (reply, count) in replies.iter().zip([1, 0]) {
        match reply {
            Value::Array(parts) if parts.len() == 3 => {
                assert_eq!(parts[0], Value::bulk("unsubscribe"), "{reply:?}");
                assert_eq!(parts[2], Value::Int(count), "{reply:?}");
                seen.insert(text(&parts[1]));
            }
            other => panic!("not an unsubscribe reply: {other:?}"),
        }
    }
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "b".to_string()]));
    // Out of subscribed mode: commands run again.
    assert_eq!(c.cmd_str(&["GET", "a"]), Value::Nil);
    assert_eq!(c.cmd_str(&["SET", "a", "1"]), Value::Status("OK".into()));
    assert_eq!(c.cmd_str(&["GET", "a"]), Value::bulk("1"));
    assert_eq!(
        c.cmd_str(&["UNSUBSCRIBE"]),
        Value::Array(vec![Value::bulk("unsubscribe"), Value::Nil, Value::Int(0)])
    );
    assert_eq!(c.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn subscription_counts_add_channels_and_patterns() {
    let s = setup("");
    let mut c = s.client();
    assert_eq!(
        c.cmd_str(&["SUBSCRIBE", "a"]),
        confirmation("subscribe", "a", 1)
    );
    assert_eq!(
        c.cmd_str(&["PSUBSCRIBE", "p*"]),
        confirmation("psubscribe", "p*", 2)
    );
    assert_eq!(
        c.cmd_str(&["SUBSCRIBE", "b"]),
        confirmation("subscribe", "b", 3)
    );
    assert_eq!(
        c.cmd_str(&["PUNSUBSCRIBE", "p*"]),
        confirmation("punsubscribe", "p*", 2)
    );
}

#[test]
fn pubsub_introspection_through_walnut_merges_every_server() {
    let s = setup("");
    let mut sub = s.client();
    let channels = feeds(10);
    assert_eq!(subscribe_all(&mut sub, "SUBSCRIBE", &channels).len(), 10);
    let by = s.wait_for_channels(&channels);
    assert!(
        by.iter().filter(|set| !set.is_empty()).count() >= 2,
        "c0:feed..c9:feed all on one backend: {by:?}"
    );
    let mut q = s.client();
    assert_eq!(
        texts(&q.cmd_str(&["PUBSUB", "CHANNELS"])),
        channels.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        q.cmd_str(&["PUBSUB", "CHANNELS", "c1*"]),
        Value::Array(vec![Value::bulk("c1:feed")])
    );
    assert_eq!(
        q.cmd_str(&["PUBSUB", "NUMSUB", "c0:feed", "c1:feed", "zz"]),
        Value::Array(vec![
            Value::bulk("c0:feed"),
            Value::Int(1),
            Value::bulk("c1:feed"),
            Value::Int(1),
            Value::bulk("zz"),
            Value::Int(0),
        ])
    );
    // A second subscriber of c0 counts.
    let mut second = s.client();
    assert_eq!(
        second.cmd_str(&["SUBSCRIBE", "c0:feed"]),
        confirmation("subscribe", "c0:feed", 1)
    );
    assert_eq!(
        q.cmd_str(&["PUBSUB", "NUMSUB", "c0:feed"]),
        Value::Array(vec![Value::bulk("c0:feed"), Value::Int(2)])
    );
    // Patterns: one client, every server has it, walnut counts it once.
    assert_eq!(q.cmd_str(&["PUBSUB", "NUMPAT"]), Value::Int(0));
    let mut psub = s.client();
    assert_eq!(
        psub.cmd_str(&["PSUBSCRIBE", "n*"]),
        confirmation("psubscribe", "n*", 1)
    );
    wait_until("every backend to have the pattern", || {
        (s.numpat_by_backend() == vec![1, 1, 1]).then_some(())
    });
    assert_eq!(q.cmd_str(&["PUBSUB", "NUMPAT"]), Value::Int(1));
}

#[test]
fn shard_channels_work_with_ssubscribe_and_spublish() {
    let s = setup("");
    let mut sub = s.client();
    assert_eq!(
        sub.cmd_str(&["SSUBSCRIBE", "s1"]),
        confirmation("ssubscribe", "s1", 1)
    );
    let mut publisher = s.client();
    assert_eq!(publisher.cmd_str(&["SPUBLISH", "s1", "x"]), Value::Int(1));
    assert_eq!(
        sub.read_value(),
        Value::Array(vec![
            Value::bulk("smessage"),
            Value::bulk("s1"),
            Value::bulk("x")
        ])
    );
    assert_eq!(
        sub.cmd_str(&["SUNSUBSCRIBE"]),
        confirmation("sunsubscribe", "s1", 0)
    );
    assert_eq!(publisher.cmd_str(&["SPUBLISH", "s1", "y"]), Value::Int(0));
    assert_eq!(sub.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn subscriptions_come_back_after_their_server_restarts() {
    let mut s = setup("");
    let mut sub = s.client();
    let channels = feeds(10);
    assert_eq!(subscribe_all(&mut sub, "SUBSCRIBE", &channels).len(), 10);
    let by = s.wait_for_channels(&channels);
    let used: Vec<usize> = (0..by.len()).filter(|&i| !by[i].is_empty()).collect();
    assert!(
        used.len() >= 2,
        "c0:feed..c9:feed all on one backend: {by:?}"
    );
    let (k, j) = (used[0], used[1]);
    let victim = by[k].iter().next().unwrap().clone();
    let other = by[j].iter().next().unwrap().clone();
    let mut publisher = s.client();

    s.backends[k].kill();
    // Channels on the other servers keep working while it is down.
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", &other, "while-down"]),
        Value::Int(1)
    );
    read_until(&mut sub, &message(&other, "while-down"));

    s.backends[k].restart();
    let payload = publish_until_delivered(&mut publisher, &victim, "after-restart");
    read_until(&mut sub, &message(&victim, &payload));
    // Every channel of the restarted server is subscribed there again.
    wait_until("the restarted backend to have its channels again", || {
        (texts(&s.backends[k].client().cmd_str(&["PUBSUB", "CHANNELS"])) == by[k]).then_some(())
    });
    for name in &channels {
        assert_eq!(
            publisher.cmd_str(&["PUBLISH", name, &format!("final-{name}")]),
            Value::Int(1),
            "PUBLISH {name}"
        );
    }
    let want: Vec<Value> = channels
        .iter()
        .map(|n| message(n, &format!("final-{n}")))
        .collect();
    read_all(&mut sub, &want);
}

#[test]
fn subscriptions_follow_their_channels_to_a_server_added_by_a_reload() {
    let mut s = setup("");
    let mut sub = s.client();
    let channels = feeds(20);
    assert_eq!(subscribe_all(&mut sub, "SUBSCRIBE", &channels).len(), 20);
    s.wait_for_channels(&channels);
    let mut publisher = s.client();
    for name in &channels {
        assert_eq!(
            publisher.cmd_str(&["PUBLISH", name, &format!("before-{name}")]),
            Value::Int(1)
        );
    }
    let want: Vec<Value> = channels
        .iter()
        .map(|n| message(n, &format!("before-{n}")))
        .collect();
    read_all(&mut sub, &want);

    // A fourth server joins: some channels now map to it.
    s.backends.push(RedisServer::start());
    s.walnut.rewrite_config(&config(s.port, &s.backends, ""));
    reload(&s.walnut);
    // Each channel still subscribed on one server only, some of them now on the new one.
    let want_all: BTreeSet<String> = channels.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = s.channels_by_backend();
        let all: BTreeSet<String> = last.iter().flatten().cloned().collect();
        let total: usize = last.iter().map(BTreeSet::len).sum();
        if all == want_all && total == channels.len() && !last[3].is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the channels never moved to the new server: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let want: Vec<Value> = channels
        .iter()
        .map(|n| {
            let payload = publish_until_delivered(&mut publisher, n, &format!("after-{n}"));
            message(n, &payload)
        })
        .collect();
    read_all(&mut sub, &want);
}

#[test]
fn subscribers_that_leave_leave_no_subscription_or_dedicated_connection_behind() {
    let s = setup("  dedicated_connections: 200\n");
    let subscribers: Vec<RespClient> = (0..100)
        .map(|i| {
            let mut c = s.client();
            let channel = format!("gone:{i}");
            assert_eq!(
                c.cmd_str(&["SUBSCRIBE", &channel]),
                confirmation("subscribe", &channel, 1)
            );
            assert_eq!(
                c.cmd_str(&["PSUBSCRIBE", "x*"]),
                confirmation("psubscribe", "x*", 2)
            );
            c
        })
        .collect();
    s.wait_for_channels(&names("gone:", 100));
    wait_until("every backend to have the pattern x* once", || {
        (s.numpat_by_backend() == vec![1, 1, 1]).then_some(())
    });
    drop(subscribers);
    wait_until("the subscriptions to be gone", || {
        let (open, idle) = s.dedicated();
        let gone = open == idle
            && s.numpat_by_backend() == vec![0, 0, 0]
            && s.channels_by_backend().iter().all(BTreeSet::is_empty);
        gone.then_some(())
    });
    // A new subscriber (on a reused connection, maybe) gets only what it subscribed to.
    let mut sub = s.client();
    assert_eq!(
        sub.cmd_str(&["SUBSCRIBE", "news"]),
        confirmation("subscribe", "news", 1)
    );
    let mut publisher = s.client();
    assert_eq!(publisher.cmd_str(&["PUBLISH", "xyz", "old"]), Value::Int(0));
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "gone:0", "old"]),
        Value::Int(0)
    );
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "news", "new"]),
        Value::Int(1)
    );
    assert_eq!(sub.read_value(), message("news", "new"));
}

#[test]
fn redis_py_pubsub_works_through_walnut() {
    let s = setup("");
    let script = r#"
import sys, time, redis
port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
p = r.pubsub()

def wait_for(kind, check):
    deadline = time.time() + 20
    seen = []
    while time.time() < deadline:
        m = p.get_message(timeout=1.0)
        if m is None:
            continue
        if m["type"] == kind and check(m):
            return m
        seen.append(m)
    raise AssertionError(f"no {kind} message; saw {seen}")

p.subscribe("news")
wait_for("subscribe", lambda m: m["channel"] == b"news" and m["data"] == 1)
assert r.publish("news", "hi") == 1
wait_for("message", lambda m: m["channel"] == b"news" and m["data"] == b"hi")

p.psubscribe("n*")
wait_for("psubscribe", lambda m: m["channel"] == b"n*" and m["data"] == 2)
assert r.publish("n1", "there") == 1
wait_for("pmessage", lambda m: m["pattern"] == b"n*" and m["channel"] == b"n1" and m["data"] == b"there")

p.unsubscribe("news")
wait_for("unsubscribe", lambda m: m["channel"] == b"news" and m["data"] == 1)
p.punsubscribe("n*")
wait_for("punsubscribe", lambda m: m["channel"] == b"n*" and m["data"] == 0)
assert r.publish("news", "late") == 0
assert r.get("after") is None
p.close()
print("ok")
"#;
    assert_eq!(
        common::run_python("redis-py", script, &[&s.port.to_string()]),
        "ok"
    );
    wait_until("the subscriber's connections to be idle", || {
        let (open, idle) = s.dedicated();
        (open == idle).then_some(())
    });
}
