//! `hash: server_name` + `distribution: server_name`: a key's hash-tag content names its
//! server. Three real redis-servers, six names (two per server).

mod common;

use std::process::Command;

use common::{free_port, local, walnut_bin, ProxyProcess, RedisServer, RespClient, TempDir, Value};

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
