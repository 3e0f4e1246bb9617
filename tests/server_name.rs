//! `hash: server_name` + `distribution: server_name`: a key's hash-tag content names its
//! server. Three real redis-servers (or three real memcacheds), six names (two per server).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::mc::{mc_hit, mc_set, mc_value, text, McClient};
use common::{
    free_port, local, walnut_bin, MemcachedServer, ProxyProcess, RedisServer, RespClient, TempDir,
    Value,
};

const NAMES: [&str; 6] = ["r1", "r2", "r3", "r4", "r5", "r6"];

/// Name `NAMES[i]` lives on backend `i / 2`.
fn config(port: u16, backends: &[RedisServer], extra: &str) -> String {
    let mut conf = format!(
        "named:\n  listen: 127.0.0.1:{port}\n  hash: server_name\n  distribution: server_name\n  hash_tag: \"{{}}\"\n  redis: true\n{extra}  servers:\n"
    );
    for (i, name) in NAMES.iter().enumerate() {
        conf.push_str(&format!(
            "   - {}\n",
            backends[i / 2].server_line(1, Some(name))
        ));
    }
    conf
}

fn start(extra: &str) -> (Vec<RedisServer>, ProxyProcess, RespClient) {
    let backends = vec![
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let port = free_port();
    let walnut = ProxyProcess::walnut(&config(port, &backends, extra), &[local(port)]);
    let client = RespClient::connect(&format!("127.0.0.1:{port}"));
    (backends, walnut, client)
}

#[test]
fn keys_land_on_the_server_they_name() {
    let (backends, _walnut, mut client) = start("");
    for (i, name) in NAMES.iter().enumerate() {
        for user in 0..20 {
            let key = format!("{{{name}}}:user:{user}");
            assert_eq!(
                client.cmd_str(&["SET", &key, name]),
                Value::Status("OK".into())
            );
            for (b, backend) in backends.iter().enumerate() {
                let expected = if b == i / 2 {
                    Value::bulk(*name)
                } else {
                    Value::Nil
                };
                assert_eq!(
                    backend.client().cmd_str(&["GET", &key]),
                    expected,
                    "{key} on backend {b}"
                );
            }
        }
    }
}

#[test]
fn mget_across_names_is_split_and_merged_in_request_order() {
    let (_backends, _walnut, mut client) = start("");
    let keys: Vec<String> = (0..30)
        .map(|i| format!("{{{}}}:k{i}", NAMES[(i * 5) % 6]))
        .collect();
    for key in &keys {
        assert_eq!(
            client.cmd_str(&["SET", key, &format!("v-{key}")]),
            Value::Status("OK".into())
        );
    }
    let mut args = vec!["MGET"];
    args.extend(keys.iter().rev().map(String::as_str));
    args.push("{r3}:missing");
    let mut expected: Vec<Value> = keys
        .iter()
        .rev()
        .map(|k| Value::bulk(format!("v-{k}")))
        .collect();
    expected.push(Value::Nil);
    assert_eq!(client.cmd_str(&args), Value::Array(expected));
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(client.cmd_str(&del), Value::Int(30));
}

#[test]
fn a_key_that_names_no_server_gets_an_error_and_the_connection_stays_open() {
    let (_backends, _walnut, mut client) = start("");
    assert_eq!(
        client.cmd_str(&["GET", "{r9}:x"]),
        Value::Error("ERR key '{r9}:x' names no server in pool 'named'".into())
    );
    // Without a hash tag the whole key is the name.
    assert_eq!(
        client.cmd_str(&["SET", "plain", "1"]),
        Value::Error("ERR key 'plain' names no server in pool 'named'".into())
    );
    assert_eq!(
        client.cmd_str(&["MGET", "{r1}:a", "{nope}:b"]),
        Value::Error("ERR key '{nope}:b' names no server in pool 'named'".into())
    );
    assert_eq!(
        client.cmd_str(&["SET", "{r1}:still", "open"]),
        Value::Status("OK".into())
    );
}

#[test]
fn an_ejected_named_server_fails_fast_and_its_keys_never_move() {
    let (mut backends, walnut, mut client) = start(
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n",
    );
    assert_eq!(
        client.cmd_str(&["SET", "{r3}:k", "v"]),
        Value::Status("OK".into())
    );
    backends[1].kill();
    // r3 and r4 live on the killed server.
    let first = client.cmd_str(&["GET", "{r3}:k"]);
    assert!(matches!(first, Value::Error(_)), "{first:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !walnut.log().contains("ejecting server 'r3'") {
        assert!(std::time::Instant::now() < deadline, "r3 was not ejected");
        client.cmd_str(&["GET", "{r3}:k"]);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for _ in 0..5 {
        assert_eq!(
            client.cmd_str(&["GET", "{r3}:k"]),
            Value::Error("ERR server 'r3' is ejected".into())
        );
    }
    assert_eq!(
        client.cmd_str(&["SET", "{r1}:ok", "1"]),
        Value::Status("OK".into())
    );
    assert_eq!(
        backends[0].client().cmd_str(&["GET", "{r1}:ok"]),
        Value::bulk("1")
    );
}

#[test]
fn test_conf_explains_server_name_mistakes() {
    let dir = TempDir::new("server-name-t");
    let cases = [
        (
            "p:\n  listen: 127.0.0.1:22121\n  hash: server_name\n  servers:\n   - 127.0.0.1:6379:1 a\n",
            "conf: pool 'p': directive \"hash\" is \"server_name\", which needs \"distribution: server_name\" too",
        ),
        (
            "p:\n  listen: 127.0.0.1:22121\n  distribution: server_name\n  servers:\n   - 127.0.0.1:6379:1 a\n",
            "conf: pool 'p': directive \"distribution\" is \"server_name\", which needs \"hash: server_name\" too",
        ),
        (
            "p:\n  listen: 127.0.0.1:22121\n  hash: server_name\n  distribution: server_name\n  servers:\n   - 127.0.0.1:6379:1 a\n   - 127.0.0.1:6380:1\n",
            "conf: pool 'p': directive \"servers\" needs a name on every server with \"distribution: server_name\": \"127.0.0.1:6380:1\"",
        ),
        (
            "p:\n  listen: 127.0.0.1:22121\n  hash: server_name\n  distribution: server_name\n  servers:\n   - 127.0.0.1:6379:1 a\n   - 127.0.0.1:6380:1 a\n",
            "conf: pool 'p' has servers with same name 'a'",
        ),
    ];
    for (i, (yaml, message)) in cases.iter().enumerate() {
        let path = dir.file(&format!("case{i}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(walnut_bin())
            .args(["-t", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "case {i}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(message), "case {i}: {stderr}");
    }
    let good = dir.file("good.yml");
    std::fs::write(
        &good,
        "p:\n  listen: 127.0.0.1:22121\n  hash: server_name\n  distribution: server_name\n  hash_tag: \"{}\"\n  servers:\n   - 127.0.0.1:6379:1 r1\n   - 127.0.0.1:6379:1 r2\n",
    )
    .unwrap();
    let out = Command::new(walnut_bin())
        .args(["-t", "-c", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// memcached pools (`redis: false`)
// ---------------------------------------------------------------------------------------------

/// Name `NAMES[i]` lives on memcached `i / 2`.
fn mc_config(port: u16, backends: &[MemcachedServer], extra: &str) -> String {
    let mut conf = format!(
        "named:\n  listen: 127.0.0.1:{port}\n  hash: server_name\n  distribution: server_name\n  hash_tag: \"{{}}\"\n  redis: false\n{extra}  servers:\n"
    );
    for (i, name) in NAMES.iter().enumerate() {
        conf.push_str(&format!(
            "   - {}\n",
            backends[i / 2].server_line(1, Some(name))
        ));
    }
    conf
}

fn start_mc(extra: &str) -> (Vec<MemcachedServer>, ProxyProcess, McClient) {
    let backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let port = free_port();
    let walnut = ProxyProcess::walnut(&mc_config(port, &backends, extra), &[local(port)]);
    let client = McClient::connect(local(port));
    (backends, walnut, client)
}

#[test]
fn memcached_keys_land_on_the_server_they_name() {
    let (backends, _walnut, mut client) = start_mc("");
    for (i, name) in NAMES.iter().enumerate() {
        for user in 0..20 {
            let key = format!("{{{name}}}:user:{user}");
            let value = format!("{name}-{user}");
            assert_eq!(text(&client.call(&mc_set(&key, &value))), "STORED\r\n");
            for (b, backend) in backends.iter().enumerate() {
                let expected = if b == i / 2 {
                    mc_hit(&key, &value)
                } else {
                    b"END\r\n".to_vec()
                };
                assert_eq!(
                    text(&backend.client().call(format!("get {key}\r\n").as_bytes())),
                    text(&expected),
                    "{key} on memcached {b}"
                );
            }
            // And it reads back through walnut.
            assert_eq!(
                text(&client.call(format!("get {key}\r\n").as_bytes())),
                text(&mc_hit(&key, &value))
            );
        }
    }
    // The two names of one server share its data: `{r1}:x` and `{r2}:x` are different keys
    // on the same memcached.
    assert_eq!(text(&client.call(&mc_set("{r1}:x", "one"))), "STORED\r\n");
    assert_eq!(text(&client.call(&mc_set("{r2}:x", "two"))), "STORED\r\n");
    assert_eq!(
        text(&backends[0].client().call(b"get {r1}:x {r2}:x\r\n")),
        text(&[mc_value("{r1}:x", "one"), mc_hit("{r2}:x", "two")].concat())
    );
}

#[test]
fn memcached_get_across_names_is_split_and_merged_in_request_order() {
    let (backends, _walnut, mut client) = start_mc("");
    let keys: Vec<String> = (0..30)
        .map(|i| format!("{{{}}}:k{i}", NAMES[(i * 5) % 6]))
        .collect();
    let mut sets = Vec::new();
    for key in &keys {
        sets.extend(mc_set(key, &format!("v-{key}")));
    }
    let stored = client.exchange(&sets, keys.len());
    assert!(stored.iter().all(|r| r == b"STORED\r\n"), "{stored:?}");

    // Reversed, with a missing key at the end: every value in request order, then one END.
    let mut request = b"get".to_vec();
    for key in keys.iter().rev() {
        request.extend(format!(" {key}").into_bytes());
    }
    request.extend(b" {r3}:missing\r\n");
    let mut expected = Vec::new();
    for key in keys.iter().rev() {
        expected.extend(mc_value(key, &format!("v-{key}")));
    }
    expected.extend(b"END\r\n");
    assert_eq!(text(&client.call(&request)), text(&expected));

    // `gets` too: the cas unique of each value is its own server's, read directly.
    let mut gets = b"gets".to_vec();
    let mut expected = Vec::new();
    for key in keys.iter().take(12) {
        gets.extend(format!(" {key}").into_bytes());
        let b = NAMES
            .iter()
            .position(|n| key.starts_with(&format!("{{{n}}}")))
            .unwrap()
            / 2;
        let direct = backends[b]
            .client()
            .call(format!("gets {key}\r\n").as_bytes());
        let block = direct.strip_suffix(b"END\r\n".as_slice()).unwrap();
        assert!(block.starts_with(b"VALUE "), "{}", text(&direct));
        expected.extend_from_slice(block);
    }
    gets.extend(b"\r\n");
    expected.extend(b"END\r\n");
    assert_eq!(text(&client.call(&gets)), text(&expected));

    // Keys that all name one memcached (r1 and r2) go there in one piece.
    assert_eq!(
        text(&client.call(format!("get {} {}\r\n", keys[0], keys[3]).as_bytes())),
        text(
            &[
                mc_value(&keys[0], &format!("v-{}", keys[0])),
                mc_hit(&keys[3], &format!("v-{}", keys[3]))
            ]
            .concat()
        )
    );
}

#[test]
fn a_memcached_key_that_names_no_server_gets_an_error_and_the_connection_stays_open() {
    let (backends, _walnut, mut client) = start_mc("");
    assert_eq!(
        text(&client.call(b"get {r9}:x\r\n")),
        "SERVER_ERROR key '{r9}:x' names no server in pool 'named'\r\n"
    );
    // Without a hash tag the whole key is the name. The data block is consumed with its
    // command, never read as a command of its own.
    assert_eq!(
        text(&client.call(b"set plain 0 0 6\r\nget r1\r\n")),
        "SERVER_ERROR key 'plain' names no server in pool 'named'\r\n"
    );
    // In a multi-get, the key that names no server fails the whole request.
    assert_eq!(
        text(&client.call(b"get {r1}:a {nope}:b {r5}:c\r\n")),
        "SERVER_ERROR key '{nope}:b' names no server in pool 'named'\r\n"
    );
    for (request, reason) in [
        (&b"delete {zz}:k\r\n"[..], "{zz}:k"),
        (b"incr {r7}:n 1\r\n", "{r7}:n"),
        (b"touch {}:k 10\r\n", "{}:k"),
        (b"add {R1}:k 0 0 1\r\nv\r\n", "{R1}:k"),
    ] {
        assert_eq!(
            text(&client.call(request)),
            format!("SERVER_ERROR key '{reason}' names no server in pool 'named'\r\n"),
            "{}",
            text(request)
        );
    }
    // noreply asks for no reply, so it gets none, and nothing reaches any server.
    client.send(b"set {r9}:quiet 0 0 1 noreply\r\nq\r\n");
    // The connection is still open and in step: the next reply is the next request's.
    assert_eq!(
        text(&client.call(&mc_set("{r1}:still", "open"))),
        "STORED\r\n"
    );
    assert_eq!(
        text(&backends[0].client().call(b"get {r1}:still\r\n")),
        text(&mc_hit("{r1}:still", "open"))
    );
    // Pipelined with good requests, each error sits in its own place.
    let replies = client.exchange(
        b"get {r1}:still\r\nget {r0}:x\r\nget {r6}:none\r\nget {r1}:still {r66}:x\r\n",
        4,
    );
    assert_eq!(
        replies.iter().map(|r| text(r)).collect::<Vec<_>>(),
        vec![
            text(&mc_hit("{r1}:still", "open")),
            "SERVER_ERROR key '{r0}:x' names no server in pool 'named'\r\n".to_string(),
            "END\r\n".to_string(),
            "SERVER_ERROR key '{r66}:x' names no server in pool 'named'\r\n".to_string(),
        ]
    );
    for backend in &backends {
        assert_eq!(
            text(&backend.client().call(b"get {r9}:quiet plain\r\n")),
            "END\r\n"
        );
    }
}

#[test]
fn memcached_version_in_a_named_pool_is_answered_by_a_server() {
    let (backends, _walnut, mut client) = start_mc("");
    let direct = backends[0].client().call(b"version\r\n");
    assert!(direct.starts_with(b"VERSION "), "{}", text(&direct));
    assert_eq!(text(&client.call(b"version\r\n")), text(&direct));
}

#[test]
fn an_ejected_named_memcached_fails_fast_and_its_keys_never_move() {
    let (mut backends, walnut, mut client) = start_mc(
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n",
    );
    assert_eq!(text(&client.call(&mc_set("{r3}:k", "v"))), "STORED\r\n");
    backends[1].kill();
    // r3 and r4 live on the killed server.
    let first = client.call(b"get {r3}:k\r\n");
    assert!(first.starts_with(b"SERVER_ERROR "), "{}", text(&first));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !walnut.log().contains("ejecting server 'r3'") {
        assert!(Instant::now() < deadline, "r3 was not ejected");
        client.call(b"get {r3}:k\r\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        assert_eq!(
            text(&client.call(b"get {r3}:k\r\n")),
            "SERVER_ERROR server 'r3' is ejected\r\n"
        );
        assert_eq!(
            text(&client.call(&mc_set("{r3}:new", "x"))),
            "SERVER_ERROR server 'r3' is ejected\r\n"
        );
    }
    // The other names keep their servers.
    assert_eq!(text(&client.call(&mc_set("{r1}:ok", "1"))), "STORED\r\n");
    assert_eq!(text(&client.call(&mc_set("{r6}:ok", "6"))), "STORED\r\n");
    assert_eq!(
        text(&backends[0].client().call(b"get {r1}:ok\r\n")),
        text(&mc_hit("{r1}:ok", "1"))
    );
    assert_eq!(
        text(&backends[2].client().call(b"get {r6}:ok\r\n")),
        text(&mc_hit("{r6}:ok", "6"))
    );
    // A multi-get over a live and an ejected name: the live part answers, the ejected
    // name's keys are missing.
    assert_eq!(
        text(&client.call(b"get {r3}:k {r1}:ok\r\n")),
        text(&mc_hit("{r1}:ok", "1"))
    );
}
