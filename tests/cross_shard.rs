//! Cross-shard commands (issue 22) on 3 real redis-servers behind a ketama pool: SCAN walks
//! every server with one cursor, KEYS merges, DBSIZE sums, RANDOMKEY finds a key wherever it
//! is, FLUSHDB/FLUSHALL reach every server, SCRIPT LOAD/EXISTS/FLUSH keep the servers' script
//! caches in step, and TIME answers.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{err, ok, RespClient, Value};

use common::Shards as Setup;

fn setup() -> Setup {
    setup_with("")
}

fn setup_with(extra: &str) -> Setup {
    Setup::start("shards", 3, extra)
}

/// What these tests ask of their servers.
trait Fill {
    fn fill(&self, count: usize) -> BTreeSet<String>;
    fn sizes(&self) -> Vec<i64>;
}

impl Fill for Setup {
    /// `count` keys `k:0…`, written through walnut with pipelined SETs.
    fn fill(&self, count: usize) -> BTreeSet<String> {
        let mut client = self.client();
        let keys: Vec<String> = (0..count).map(|i| format!("k:{i}")).collect();
        for chunk in keys.chunks(500) {
            let commands: Vec<Vec<Vec<u8>>> = chunk
                .iter()
                .map(|key| vec![b"SET".to_vec(), key.clone().into_bytes(), b"v".to_vec()])
                .collect();
            for reply in client.pipeline(&commands) {
                assert_eq!(reply, ok());
            }
        }
        keys.into_iter().collect()
    }

    /// Each backend's own DBSIZE.
    fn sizes(&self) -> Vec<i64> {
        self.backends
            .iter()
            .map(|b| match b.client().cmd_str(&["DBSIZE"]) {
                Value::Int(n) => n,
                other => panic!("DBSIZE answered {other:?}"),
            })
            .collect()
    }
}

fn bulk_text(value: &Value) -> String {
    match value {
        Value::Bulk(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn texts(value: Value) -> BTreeSet<String> {
    match value {
        Value::Array(items) => items.iter().map(bulk_text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// Every key SCAN gives, iterating from cursor 0 until it comes back to 0; and the number of
/// calls it took.
fn scan_all(client: &mut RespClient, extra: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    let mut calls = 0;
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(extra);
        let Value::Array(mut reply) = client.cmd_str(&args) else {
            panic!("SCAN answers an array");
        };
        calls += 1;
        assert_eq!(reply.len(), 2, "SCAN answers [cursor, keys]");
        let batch = reply.pop().expect("keys");
        cursor = bulk_text(&reply[0]);
        let Value::Array(batch) = batch else {
            panic!("SCAN's keys are an array");
        };
        keys.extend(batch.iter().map(bulk_text));
        if cursor == "0" {
            return (keys, calls);
        }
        assert!(calls < 100_000, "SCAN never ended");
    }
}

#[test]
fn scan_returns_every_key_of_every_server_and_matches_keys() {
    let s = setup();
    let written = s.fill(10_000);
    let sizes = s.sizes();
    assert!(
        sizes.iter().all(|&n| n > 0),
        "keys on every server: {sizes:?}"
    );
    let mut client = s.client();
    // DBSIZE is the servers' sum.
    assert_eq!(
        client.cmd_str(&["DBSIZE"]),
        Value::Int(sizes.iter().sum::<i64>())
    );
    assert_eq!(sizes.iter().sum::<i64>(), 10_000);
    // A full iteration gives each key at least once.
    let (keys, calls) = scan_all(&mut client, &["COUNT", "1000"]);
    let seen: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(seen, written);
    assert!(calls >= 3, "one call at least per server ({calls})");
    // MATCH and TYPE go through to the servers.
    let (matched, _) = scan_all(
        &mut client,
        &["MATCH", "k:1*", "COUNT", "500", "TYPE", "string"],
    );
    let matched: BTreeSet<String> = matched.into_iter().collect();
    let from_keys = texts(client.cmd_str(&["KEYS", "k:1*"]));
    assert_eq!(matched, from_keys);
    let expected: BTreeSet<String> = written
        .iter()
        .filter(|k| k.starts_with("k:1"))
        .cloned()
        .collect();
    assert_eq!(from_keys, expected);
    let (lists, _) = scan_all(&mut client, &["TYPE", "list"]);
    assert!(lists.is_empty());
    // redis-cli --scan, a real tool, gives the same set.
    let out = Command::new("redis-cli")
        .args(["-p", &s.port.to_string(), "--scan", "--pattern", "k:1*"])
        .output()
        .expect("run redis-cli");
    assert!(out.status.success());
    let scanned: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(scanned, expected);
    // A cursor that is not a number gets Redis's error; the connection goes on.
    assert_eq!(client.cmd_str(&["SCAN", "nope"]), err("ERR invalid cursor"));
    assert_eq!(
        client.cmd_str(&["SCAN"]),
        err("ERR wrong number of arguments for 'scan' command")
    );
    assert_eq!(client.cmd_str(&["DBSIZE"]), Value::Int(10_000));
}

#[test]
fn randomkey_finds_a_key_wherever_it_lives_and_nil_when_there_is_none() {
    let s = setup();
    let mut client = s.client();
    assert_eq!(client.cmd_str(&["RANDOMKEY"]), Value::Nil);
    // One key, on one of the three servers: RANDOMKEY always finds it.
    assert_eq!(client.cmd_str(&["SET", "only", "1"]), ok());
    for _ in 0..20 {
        assert_eq!(client.cmd_str(&["RANDOMKEY"]), Value::bulk("only"));
    }
    let written = s.fill(300);
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let key = bulk_text(&client.cmd_str(&["RANDOMKEY"]));
        assert!(key == "only" || written.contains(&key), "{key}");
        seen.insert(key);
    }
    assert!(seen.len() > 10, "random keys spread: {}", seen.len());
}

#[test]
fn flushdb_and_flushall_empty_every_server() {
    let s = setup();
    s.fill(600);
    let mut client = s.client();
    assert_eq!(client.cmd_str(&["FLUSHDB"]), ok());
    assert_eq!(s.sizes(), vec![0, 0, 0]);
    assert_eq!(client.cmd_str(&["DBSIZE"]), Value::Int(0));
    s.fill(600);
    assert_eq!(client.cmd_str(&["FLUSHALL", "ASYNC"]), ok());
    assert_eq!(client.cmd_str(&["FLUSHALL", "SYNC"]), ok());
    assert_eq!(s.sizes(), vec![0, 0, 0]);
    // Redis's own error for a bad argument, once.
    assert_eq!(
        client.cmd_str(&["FLUSHDB", "SOMETIMES"]),
        err("ERR syntax error")
    );
}

#[test]
fn allow_flush_false_refuses_flushdb_and_flushall_and_nothing_is_flushed() {
    let s = setup_with("  allow_flush: false\n");
    s.fill(300);
    let mut client = s.client();
    assert_eq!(
        client.cmd_str(&["FLUSHDB"]),
        err("ERR command 'flushdb' is disabled in pool 'shards' (allow_flush: false)")
    );
    assert_eq!(
        client.cmd_str(&["FLUSHALL", "ASYNC"]),
        err("ERR command 'flushall' is disabled in pool 'shards' (allow_flush: false)")
    );
    assert_eq!(s.sizes().iter().sum::<i64>(), 300);
    assert_eq!(client.cmd_str(&["DBSIZE"]), Value::Int(300));
}

#[test]
fn script_load_exists_and_flush_keep_every_server_in_step() {
    let s = setup();
    let mut client = s.client();
    let sha = bulk_text(&client.cmd_str(&["SCRIPT", "LOAD", "return KEYS[1]"]));
    assert_eq!(sha.len(), 40);
    // Every server has it, so EVALSHA works whatever server the key maps to.
    for backend in &s.backends {
        assert_eq!(
            backend.client().cmd_str(&["SCRIPT", "EXISTS", &sha]),
            Value::Array(vec![Value::Int(1)])
        );
    }
    for i in 0..30 {
        let key = format!("script:{i}");
        assert_eq!(
            client.cmd_str(&["EVALSHA", &sha, "1", &key]),
            Value::bulk(&key)
        );
    }
    let missing = "0000000000000000000000000000000000000000";
    assert_eq!(
        client.cmd_str(&["SCRIPT", "EXISTS", &sha, missing]),
        Value::Array(vec![Value::Int(1), Value::Int(0)])
    );
    // A script on one server only is not "existing" for the pool.
    let one = bulk_text(
        &s.backends[0]
            .client()
            .cmd_str(&["SCRIPT", "LOAD", "return 7"]),
    );
    assert_eq!(
        client.cmd_str(&["SCRIPT", "EXISTS", &one]),
        Value::Array(vec![Value::Int(0)])
    );
    assert_eq!(client.cmd_str(&["SCRIPT", "FLUSH"]), ok());
    assert_eq!(
        client.cmd_str(&["SCRIPT", "EXISTS", &sha]),
        Value::Array(vec![Value::Int(0)])
    );
    assert_eq!(
        client.cmd_str(&["SCRIPT", "KILL"]),
        err("ERR command 'script|kill' is not supported by walnut")
    );
    let compile = client.cmd_str(&["SCRIPT", "LOAD", "return 1 +"]);
    assert!(
        matches!(&compile, Value::Error(e) if e.starts_with("ERR")),
        "{compile:?}"
    );
}

#[test]
fn time_answers_seconds_and_microseconds_from_walnuts_clock() {
    let mut s = setup();
    let mut client = s.client();
    let seconds_of = |reply: &Value| -> u64 {
        let Value::Array(parts) = reply else {
            panic!("TIME answers an array: {reply:?}");
        };
        assert_eq!(parts.len(), 2);
        let micros: u64 = bulk_text(&parts[1]).parse().expect("microseconds");
        assert!(micros < 1_000_000);
        bulk_text(&parts[0]).parse().expect("seconds")
    };
    let clock = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let before = clock();
    let seconds = seconds_of(&client.cmd_str(&["TIME"]));
    assert!(
        (before..=clock()).contains(&seconds),
        "{seconds} is walnut's clock"
    );
    // Queued in a transaction, it runs there (EXEC's array holds the server's answer).
    assert_eq!(client.cmd_str(&["MULTI"]), ok());
    assert_eq!(client.cmd_str(&["TIME"]), common::queued());
    let Value::Array(results) = client.cmd_str(&["EXEC"]) else {
        panic!("EXEC answers an array");
    };
    assert_eq!(results.len(), 1);
    seconds_of(&results[0]);
    // walnut answers it with every server down.
    for backend in &mut s.backends {
        backend.kill();
    }
    let mut client = s.client();
    seconds_of(&client.cmd_str(&["TIME"]));
}

#[test]
fn info_has_walnuts_sections_and_the_keyspace_summed() {
    let s = setup();
    s.fill(900);
    let mut client = s.client();
    let info = bulk_text(&client.cmd_str(&["INFO"]));
    let version = bulk_text(&s.backends[0].client().cmd_str(&["INFO", "server"]))
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_string))
        .expect("redis_version");
    assert!(
        info.contains(&format!("redis_version:{version}\r\n")),
        "{info}"
    );
    assert!(info.contains("walnut_version:"), "{info}");
    assert!(info.contains(&format!("tcp_port:{}\r\n", s.port)), "{info}");
    assert!(info.contains("connected_clients:1\r\n"), "{info}");
    assert!(info.contains("loading:0\r\n"), "{info}");
    assert!(
        info.ends_with("# Keyspace\r\ndb0:keys=900,expires=0,avg_ttl=0\r\n"),
        "{info}"
    );
    let keyspace = bulk_text(&client.cmd_str(&["INFO", "keyspace"]));
    assert_eq!(
        keyspace,
        "# Keyspace\r\ndb0:keys=900,expires=0,avg_ttl=0\r\n"
    );
}
