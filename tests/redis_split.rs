//! Multi-key requests split per server and merged, against 2–4 real redis-servers.

mod common;

use common::{free_port, local, ProxyProcess, RedisServer, RespClient, Value};

fn start(backends: &[RedisServer]) -> (ProxyProcess, RespClient) {
    let port = free_port();
    // md5 spreads the keys; twemproxy's default fnv1a_64 may cluster them.
    let mut conf =
        format!("alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  servers:\n");
    for backend in backends {
        conf.push_str(&format!("   - {}\n", backend.server_line(1, None)));
    }
    let walnut = ProxyProcess::walnut(&conf, &[local(port)]);
    (walnut, RespClient::connect(&format!("127.0.0.1:{port}")))
}

fn arg(s: impl Into<Vec<u8>>) -> Vec<u8> {
    s.into()
}

/// A binary-safe key: CR, LF, NUL and bytes >= 0x80 included.
fn key(i: usize) -> Vec<u8> {
    let mut k = format!("k{i}:").into_bytes();
    k.extend_from_slice(&[b'\r', b'\n', 0, 0xff, (i % 251) as u8]);
    k
}

/// Values of 1 byte to 1 MB, binary.
fn value(i: usize) -> Vec<u8> {
    let len = if i % 2500 == 7 {
        1024 * 1024
    } else {
        1 + (i * 37) % 3000
    };
    (0..len).map(|j| ((i * 31 + j) % 256) as u8).collect()
}

#[test]
fn mset_and_mget_of_10000_binary_keys_over_4_servers_round_trip_in_order() {
    let backends = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let (_walnut, mut client) = start(&backends);
    let mut mset = vec![arg("MSET")];
    for i in 0..10_000 {
        mset.push(key(i));
        mset.push(value(i));
    }
    assert_eq!(client.pipeline(&[mset]), vec![Value::Status("OK".into())]);
    for backend in &backends {
        let Value::Int(n) = backend.client().cmd_str(&["DBSIZE"]) else {
            panic!("DBSIZE")
        };
        assert!(n > 1000, "each server got a share of the keys, one got {n}");
    }
    // Request order, with missing keys and duplicates mixed in.
    let mut mget = vec![arg("MGET")];
    let mut expected = Vec::new();
    for i in (0..10_000).rev() {
        mget.push(key(i));
        expected.push(Value::Bulk(value(i)));
        if i % 1000 == 0 {
            mget.push(arg(format!("missing{i}")));
            expected.push(Value::Nil);
            mget.push(key(i));
            expected.push(Value::Bulk(value(i)));
        }
    }
    let replies = client.pipeline(&[mget]);
    let Value::Array(values) = &replies[0] else {
        panic!("MGET returned {:?}", replies[0])
    };
    assert_eq!(values.len(), expected.len());
    for (n, (got, want)) in values.iter().zip(&expected).enumerate() {
        assert!(got == want, "MGET value #{n} differs");
    }
}

#[test]
fn del_unlink_touch_and_exists_return_the_sum_over_servers() {
    let backends = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let (_walnut, mut client) = start(&backends);
    let keys: Vec<String> = (0..60).map(|i| format!("sum:{i}")).collect();
    for k in &keys[..40] {
        assert_eq!(client.cmd_str(&["SET", k, "v"]), Value::Status("OK".into()));
    }
    let with = |cmd: &str, ks: &[String]| {
        let mut args = vec![cmd.to_string()];
        args.extend(ks.iter().cloned());
        args
    };
    let run = |client: &mut RespClient, args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        client.cmd_str(&refs)
    };
    // 40 exist, 20 do not; a duplicate counts twice, as in Redis.
    let mut probe = keys.clone();
    probe.push(keys[0].clone());
    assert_eq!(run(&mut client, with("EXISTS", &probe)), Value::Int(41));
    assert_eq!(run(&mut client, with("TOUCH", &keys)), Value::Int(40));
    assert_eq!(run(&mut client, with("DEL", &keys[..20])), Value::Int(20));
    assert_eq!(run(&mut client, with("UNLINK", &keys)), Value::Int(20));
    assert_eq!(run(&mut client, with("EXISTS", &keys)), Value::Int(0));
}

#[test]
fn a_failed_part_of_a_split_mget_gives_one_error_and_keeps_the_connection() {
    let live = RedisServer::start();
    let dead_port = free_port();
    let port = free_port();
    let conf = format!(
        // md5 spreads the keys over both servers; fnv1a_64 may put them all on one.
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n  servers:\n   - {}\n   - 127.0.0.1:{dead_port}:1\n",
        live.server_line(1, None)
    );
    let _walnut = ProxyProcess::walnut(&conf, &[local(port)]);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let keys: Vec<String> = (0..100).map(|i| format!("part:{i}")).collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    assert_eq!(
        client.cmd_str(&args),
        Value::Error("ERR Connection refused".into())
    );
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
    args[0] = "DEL";
    assert_eq!(
        client.cmd_str(&args),
        Value::Error("ERR Connection refused".into())
    );
}
