//! The Redis data path end to end, against real redis-servers: routing, pipelining order,
//! local replies, AUTH and db, unix listeners, dead backends and hostile input.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{err, free_port, local, ok, ProxyProcess, RedisServer, RespClient, TempDir, Value};

/// A redis pool on a free port over `backends`, with extra directives.
fn pool_config(port: u16, backends: &[&RedisServer], extra: &str) -> String {
    let mut conf = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: md5\n{extra}  servers:\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        conf.push_str(&format!(
            "   - {}\n",
            backend.server_line(1, Some(&format!("s{i}")))
        ));
    }
    conf
}

fn start_walnut(backends: &[&RedisServer], extra: &str) -> (ProxyProcess, RespClient, u16) {
    let port = free_port();
    let walnut = ProxyProcess::walnut(&pool_config(port, backends, extra), &[local(port)]);
    let client = RespClient::connect(&format!("127.0.0.1:{port}"));
    (walnut, client, port)
}

#[test]
fn pipelined_replies_match_their_requests_in_order() {
    let backends = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let (_walnut, mut client, _) = start_walnut(&backends.iter().collect::<Vec<_>>(), "");
    let mut commands = Vec::new();
    for i in 0..3000 {
        commands.push(vec![
            b"SET".to_vec(),
            format!("key:{i}").into_bytes(),
            format!("value:{i}").into_bytes(),
        ]);
        commands.push(vec![b"GET".to_vec(), format!("key:{}", i / 2).into_bytes()]);
        commands.push(vec![
            b"INCR".to_vec(),
            format!("counter:{}", i % 7).into_bytes(),
        ]);
    }
    let replies = client.pipeline(&commands);
    let mut counters = [0i64; 7];
    for i in 0..3000 {
        assert_eq!(replies[3 * i], ok(), "SET #{i}");
        assert_eq!(
            replies[3 * i + 1],
            Value::bulk(format!("value:{}", i / 2)),
            "GET #{i}"
        );
        counters[i % 7] += 1;
        assert_eq!(replies[3 * i + 2], Value::Int(counters[i % 7]), "INCR #{i}");
    }
    // The keys really are spread over the backends.
    for backend in &backends {
        let Value::Int(n) = backend.client().cmd_str(&["DBSIZE"]) else {
            panic!("DBSIZE")
        };
        assert!(n > 100, "every backend holds keys, one holds {n}");
    }
}

#[test]
fn several_clients_pipelining_at_once_never_get_each_others_replies() {
    let backends = [RedisServer::start(), RedisServer::start()];
    let (_walnut, _, port) = start_walnut(
        &backends.iter().collect::<Vec<_>>(),
        "  server_connections: 2\n",
    );
    let handles: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
                for round in 0..5 {
                    let commands: Vec<Vec<Vec<u8>>> = (0..400)
                        .flat_map(|i| {
                            let key = format!("c{c}:r{round}:k{i}").into_bytes();
                            let value = format!("c{c}-r{round}-v{i}").into_bytes();
                            [
                                vec![b"SET".to_vec(), key.clone(), value],
                                vec![b"GET".to_vec(), key],
                            ]
                        })
                        .collect();
                    let replies = client.pipeline(&commands);
                    for i in 0..400 {
                        assert_eq!(replies[2 * i], ok());
                        assert_eq!(
                            replies[2 * i + 1],
                            Value::bulk(format!("c{c}-r{round}-v{i}"))
                        );
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("client thread");
    }
}

#[test]
fn binary_and_large_values_pass_through_unchanged() {
    let backend = RedisServer::start();
    let (_walnut, mut client, _) = start_walnut(&[&backend], "");
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    assert_eq!(client.cmd(&[b"SET", b"bin\r\n\0key", &binary]), ok());
    assert_eq!(client.cmd(&[b"GET", b"bin\r\n\0key"]), Value::Bulk(binary));
    let big = vec![b'x'; 1024 * 1024];
    assert_eq!(client.cmd(&[b"SET", b"big", &big]), ok());
    assert_eq!(client.cmd(&[b"GET", b"big"]), Value::Bulk(big));
    assert_eq!(client.cmd(&[b"GET", b""]), Value::Nil);
    assert_eq!(client.cmd(&[b"HSET", b"h", b"f", b"v"]), Value::Int(1));
    assert_eq!(
        client.cmd(&[b"HGETALL", b"h"]),
        Value::Array(vec![Value::bulk("f"), Value::bulk("v")])
    );
}

#[test]
fn ping_and_quit_are_answered_by_walnut() {
    let backend = RedisServer::start();
    let (_walnut, mut client, _) = start_walnut(&[&backend], "");
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
    assert_eq!(client.cmd_str(&["ping", "hello"]), Value::bulk("hello"));
    // Replies before QUIT are written; what follows QUIT is discarded; then the close.
    client.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nq\r\n$1\r\n1\r\n*1\r\n$4\r\nQUIT\r\n*2\r\n$3\r\nGET\r\n$1\r\nq\r\n");
    assert_eq!(client.read_value(), ok());
    assert!(client.is_closed(), "QUIT closes the connection");
}

#[test]
fn client_id_and_flags_are_answered_with_the_sessions_own_state() {
    let backend = RedisServer::start();
    let (_walnut, mut client, port) = start_walnut(&[&backend], "");
    let mut other = RespClient::connect(&format!("127.0.0.1:{port}"));
    let (Value::Int(one), Value::Int(two)) = (
        client.cmd_str(&["CLIENT", "ID"]),
        other.cmd_str(&["CLIENT", "ID"]),
    ) else {
        panic!("CLIENT ID answers an integer");
    };
    assert_ne!(one, two, "each session has its own id");
    assert_eq!(client.cmd_str(&["CLIENT", "ID"]), Value::Int(one), "stable");
    assert_eq!(client.cmd_str(&["CLIENT", "NO-EVICT", "on"]), ok());
    assert_eq!(client.cmd_str(&["CLIENT", "NO-TOUCH", "off"]), ok());
    assert_eq!(client.cmd_str(&["CLIENT", "SETNAME", "worker-1"]), ok());
    assert_eq!(
        client.cmd_str(&["CLIENT", "GETNAME"]),
        Value::bulk("worker-1")
    );
    assert_eq!(other.cmd_str(&["CLIENT", "GETNAME"]), Value::Nil);
}

#[test]
fn unknown_commands_and_bad_arity_get_errors_and_keep_the_connection() {
    let backend = RedisServer::start();
    let (_walnut, mut client, _) = start_walnut(&[&backend], "");
    assert_eq!(
        client.cmd_str(&["FROBNICATE", "x"]),
        err("ERR unknown command 'FROBNICATE'")
    );
    assert_eq!(
        client.cmd_str(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        client.cmd_str(&["GET", "a", "b"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(client.cmd_str(&["SET", "still", "open"]), ok());
}

#[test]
fn malformed_framing_answers_earlier_requests_then_a_protocol_error_then_closes() {
    let backend = RedisServer::start();
    let (_walnut, mut client, _) = start_walnut(&[&backend], "");
    client.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nm\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$x\r\n");
    assert_eq!(client.read_value(), ok());
    assert_eq!(
        client.read_value(),
        err("ERR Protocol error: invalid bulk length")
    );
    assert!(client.is_closed());
}

#[test]
fn absurd_declared_sizes_are_refused_at_once() {
    let backend = RedisServer::start();
    let (_walnut, _, port) = start_walnut(&[&backend], "");
    let cases: [(&[u8], &str); 3] = [
        (
            b"*2\r\n$3\r\nSET\r\n$99999999999\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"*99999999999\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (b"GET x\r\n", "ERR Protocol error: expected '*', got 'G'"),
    ];
    for (input, expected) in cases {
        let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
        client.send_raw(input);
        assert_eq!(client.read_value(), err(expected));
        assert!(client.is_closed());
    }
    // walnut is still serving.
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn a_dead_backend_gives_connection_refused_and_the_connection_stays_open() {
    let port = free_port();
    let dead = free_port();
    let conf = format!(
        "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:{dead}:1\n"
    );
    let _walnut = ProxyProcess::walnut(&conf, &[local(port)]);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["GET", "k"]), err("ERR Connection refused"));
    assert_eq!(client.cmd_str(&["GET", "k"]), err("ERR Connection refused"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn redis_auth_guards_the_pool_and_authenticates_backends_before_select() {
    let backend = RedisServer::start();
    assert_eq!(
        backend
            .client()
            .cmd_str(&["CONFIG", "SET", "requirepass", "s3cret"]),
        ok()
    );
    let (_walnut, mut client, _) =
        start_walnut(&[&backend], "  redis_auth: s3cret\n  redis_db: 3\n");
    assert_eq!(
        client.cmd_str(&["GET", "k"]),
        err("NOAUTH Authentication required")
    );
    assert_eq!(
        client.cmd_str(&["PING"]),
        err("NOAUTH Authentication required")
    );
    assert_eq!(
        client.cmd_str(&["AUTH", "wrong"]),
        err("ERR invalid password")
    );
    assert_eq!(client.cmd_str(&["AUTH", "s3cret"]), ok());
    assert_eq!(client.cmd_str(&["SET", "authed", "yes"]), ok());
    // The key is in db 3 of the backend: AUTH came before SELECT.
    let mut direct = backend.client();
    assert_eq!(direct.cmd_str(&["AUTH", "s3cret"]), ok());
    assert_eq!(direct.cmd_str(&["SELECT", "3"]), ok());
    assert_eq!(direct.cmd_str(&["GET", "authed"]), Value::bulk("yes"));
    // A wrong password unauthenticates the connection again.
    assert_eq!(
        client.cmd_str(&["AUTH", "nope"]),
        err("ERR invalid password")
    );
    assert_eq!(
        client.cmd_str(&["GET", "authed"]),
        err("NOAUTH Authentication required")
    );
}

#[test]
fn auth_without_a_pool_password_is_an_error() {
    let backend = RedisServer::start();
    let (_walnut, mut client, _) = start_walnut(&[&backend], "");
    assert_eq!(
        client.cmd_str(&["AUTH", "x"]),
        err("ERR Client sent AUTH, but no password is set")
    );
}

#[test]
fn unix_socket_listener_gets_its_permissions_and_unix_backends_work() {
    let dir = TempDir::new("unix");
    let backend = RedisServer::start_unix(&dir.file("backend.sock"));
    let listen = dir.file("walnut.sock");
    let conf = format!(
        "alpha:\n  listen: {} 0666\n  redis: true\n  servers:\n   - {}\n",
        listen.display(),
        backend.server_line(1, None)
    );
    let mut walnut = ProxyProcess::walnut(&conf, &[]);
    common::wait_for_unix(&listen, "walnut", &mut walnut.process);
    let mode = std::fs::metadata(&listen).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    // The socket was bound under a temporary name and renamed into place: nothing is left.
    let leftovers: Vec<String> = std::fs::read_dir(listen.parent().unwrap())
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".binding"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let mut client = RespClient::connect_unix(&listen);
    assert_eq!(client.cmd_str(&["SET", "u", "1"]), ok());
    assert_eq!(backend.client().cmd_str(&["GET", "u"]), Value::bulk("1"));
}

#[test]
fn multi_key_scripts_run_when_their_keys_share_a_server_and_are_refused_otherwise() {
    let backends = [RedisServer::start(), RedisServer::start()];
    let (_walnut, mut client, _) =
        start_walnut(&backends.iter().collect::<Vec<_>>(), "  hash_tag: \"{}\"\n");
    let script = "return redis.call('MGET', KEYS[1], KEYS[2])";
    assert_eq!(
        client.cmd_str(&["MSET", "{u1}:a", "1", "{u1}:b", "2"]),
        ok()
    );
    assert_eq!(
        client.cmd_str(&["EVAL", script, "2", "{u1}:a", "{u1}:b"]),
        Value::Array(vec![Value::bulk("1"), Value::bulk("2")])
    );
    // Find a key on the other server than {u1}.
    let u1_on_first = backends[0].client().cmd_str(&["EXISTS", "{u1}:a"]) == Value::Int(1);
    let far = (0..200)
        .map(|i| format!("other{i}"))
        .find(|key| {
            client.cmd_str(&["SET", key, "x"]);
            (backends[0].client().cmd_str(&["EXISTS", key]) == Value::Int(1)) != u1_on_first
        })
        .expect("some key lands on the other server");
    assert_eq!(
        client.cmd_str(&["EVAL", script, "2", "{u1}:a", &far]),
        err("ERR keys in request don't hash to the same server")
    );
    assert_eq!(client.cmd_str(&["GET", "{u1}:a"]), Value::bulk("1"));
}
