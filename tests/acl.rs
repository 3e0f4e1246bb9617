//! ACL users (issue 20): a pool's `users:` as Redis 6+ names them, with Redis's own errors,
//! in front of a real redis-server; and `redis_username:` to a redis-server whose `default`
//! user is off and whose only user is walnut's. redis-py authenticates with a user.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    err, free_port, local, ok, Process, ProxyProcess, RedisServer, RespClient, TempDir, Value,
};

fn users_pool(listen: u16, backend: &RedisServer) -> String {
    format!(
        "secure:\n  listen: 127.0.0.1:{listen}\n  redis: true\n  users:\n   - name: app\n     password: s3cret\n     commands: readwrite\n     keys: [\"app:*\", \"shared:*\"]\n   - name: reporting\n     password_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n     commands: readonly\n   - name: default\n     password: open-sesame\n     commands: readonly\n     keys: [\"public:*\"]\n  servers:\n   - {}\n",
        backend.server_line(1, None)
    )
}

#[test]
fn users_get_redis_errors_and_keep_their_connection() {
    let backend = RedisServer::start();
    backend.client().cmd_str(&["SET", "public:1", "hello"]);
    let port = free_port();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &users_pool(port, &backend),
        &[local(port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    let mut c = RespClient::connect(&format!("127.0.0.1:{port}"));

    // Before AUTH: NOAUTH, and the connection stays open.
    assert_eq!(
        c.cmd_str(&["GET", "app:1"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(c.cmd_str(&["PING"]), err("NOAUTH Authentication required."));
    // A wrong pair: WRONGPASS, then the right one works on the same connection.
    assert_eq!(
        c.cmd_str(&["AUTH", "app", "wrong"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(
        c.cmd_str(&["AUTH", "nobody", "s3cret"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(c.cmd_str(&["AUTH", "app", "s3cret"]), ok());
    assert_eq!(c.cmd_str(&["SET", "app:1", "one"]), ok());
    assert_eq!(c.cmd_str(&["GET", "app:1"]), Value::bulk("one"));
    // A forbidden key, alone or among allowed ones: the request is refused whole.
    assert_eq!(
        c.cmd_str(&["GET", "other:1"]),
        err("NOPERM No permissions to access a key")
    );
    assert_eq!(
        c.cmd_str(&["MGET", "app:1", "other:1"]),
        err("NOPERM No permissions to access a key")
    );
    assert_eq!(
        c.cmd_str(&["MSET", "app:2", "x", "other:2", "y"]),
        err("NOPERM No permissions to access a key")
    );
    assert_eq!(
        backend.client().cmd_str(&["EXISTS", "app:2"]),
        Value::Int(0)
    );
    assert_eq!(
        c.cmd_str(&["MGET", "app:1", "shared:1"]),
        Value::Array(vec![Value::bulk("one"), Value::Nil])
    );
    // TIME is answered by walnut, for every user.
    assert!(matches!(c.cmd_str(&["TIME"]), Value::Array(parts) if parts.len() == 2));
    // COMMAND is answered from the servers' table, for every user.
    assert!(matches!(c.cmd_str(&["COMMAND", "COUNT"]), Value::Int(n) if n > 100));
    // A failed AUTH later leaves the connection authenticated, as in Redis.
    assert_eq!(
        c.cmd_str(&["AUTH", "app", "wrong"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(c.cmd_str(&["GET", "app:1"]), Value::bulk("one"));

    // A readonly user (its password given as a SHA-256): reads yes, SET no.
    assert_eq!(c.cmd_str(&["AUTH", "reporting", "password"]), ok());
    assert_eq!(c.cmd_str(&["GET", "app:1"]), Value::bulk("one"));
    assert_eq!(
        c.cmd_str(&["SET", "app:1", "two"]),
        err("NOPERM User reporting has no permissions to run the 'set' command")
    );
    assert_eq!(c.cmd_str(&["GET", "app:1"]), Value::bulk("one"));

    // AUTH <password> is the `default` user.
    let mut d = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(d.cmd_str(&["AUTH", "open-sesame"]), ok());
    assert_eq!(d.cmd_str(&["GET", "public:1"]), Value::bulk("hello"));
    assert_eq!(
        d.cmd_str(&["GET", "app:1"]),
        err("NOPERM No permissions to access a key")
    );
    assert_eq!(
        d.cmd_str(&["AUTH", "s3cret"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );

    // Every WRONGPASS and NOPERM was counted.
    assert_eq!(
        common::pool_metric(metrics_port, "walnut_pool_auth_failures", "secure"),
        4
    );
    assert_eq!(
        common::pool_metric(metrics_port, "walnut_pool_acl_denied", "secure"),
        5
    );
    // Passwords never reach the log.
    let log = walnut.log();
    assert!(
        !log.contains("s3cret") && !log.contains("open-sesame"),
        "{log}"
    );
}

/// A redis-server whose `default` user is off and whose one user is `walnut`.
fn acl_redis(dir: &TempDir) -> (u16, Process) {
    let port = free_port();
    let conf = dir.file("redis-acl.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\nprotected-mode no\nloglevel warning\nuser default off\nuser walnut on >secret ~* &* +@all\n"
        ),
    )
    .expect("write redis.conf");
    let mut process = Process::spawn(
        "redis-server (ACL)",
        Command::new("redis-server")
            .arg(&conf)
            .stdout(Stdio::null()),
    );
    common::wait_for_tcp(local(port), "redis-server (ACL)", &mut process);
    (port, process)
}

fn backend_pool(listen: u16, redis: u16, password: &str, extra: &str) -> String {
    format!(
        "acl:\n  listen: 127.0.0.1:{listen}\n  redis: true\n  redis_username: walnut\n  redis_auth: {password}\n{extra}  servers:\n   - 127.0.0.1:{redis}:1\n"
    )
}

#[test]
fn walnut_authenticates_to_servers_with_redis_username() {
    let dir = TempDir::new("acl");
    let (redis, _server) = acl_redis(&dir);
    let port = free_port();
    let _walnut = ProxyProcess::walnut(&backend_pool(port, redis, "secret", ""), &[local(port)]);
    let mut c = RespClient::connect(&format!("127.0.0.1:{port}"));
    // Without `users:`, redis_auth is the clients' password too, as in twemproxy.
    assert_eq!(c.cmd_str(&["AUTH", "secret"]), ok());
    assert_eq!(c.cmd_str(&["SET", "k", "through walnut"]), ok());
    assert_eq!(c.cmd_str(&["GET", "k"]), Value::bulk("through walnut"));
    // Direct, the server refuses everyone but walnut's user.
    let mut direct = RespClient::connect(&format!("127.0.0.1:{redis}"));
    assert!(matches!(direct.cmd_str(&["GET", "k"]), Value::Error(e) if e.starts_with("NOAUTH")));

    // redis-py, as a user of a walnut pool with `users:` in front of the same server.
    let py_port = free_port();
    let config = backend_pool(
        py_port,
        redis,
        "secret",
        "  users:\n   - {name: app, password: pw, commands: readwrite}\n",
    );
    let _py_walnut = ProxyProcess::walnut(&config, &[local(py_port)]);
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), username="app", password="pw", socket_timeout=30)
p = r.pipeline(transaction=False)
for i in range(200):
    p.set(f"py:{i}", f"v{i}")
for i in range(200):
    p.get(f"py:{i}")
replies = p.execute()
assert replies[200:] == [f"v{i}".encode() for i in range(200)], replies[200:205]
try:
    redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), username="app", password="bad").ping()
    raise SystemExit("a wrong password was accepted")
except redis.exceptions.AuthenticationError:
    pass
print("ok")
"#;
    assert_eq!(
        common::run_python("redis-py", script, &[&py_port.to_string()]),
        "ok"
    );
}

#[test]
fn a_server_that_refuses_walnuts_auth_is_logged_and_counts_as_failing() {
    let dir = TempDir::new("acl-refused");
    let (redis, _server) = acl_redis(&dir);
    let port = free_port();
    let config = backend_pool(
        port,
        redis,
        "not-the-password",
        // A short retry: a connection that fails for any other reason first (a refused
        // connect) does not hide the AUTH refusal for the rest of the test.
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 500\n",
    );
    let walnut = ProxyProcess::walnut_with(&config, &[local(port)], &["-i", "100"]);
    let mut c = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(c.cmd_str(&["AUTH", "not-the-password"]), ok());
    let reply = c.cmd_str(&["GET", "k"]);
    assert!(matches!(reply, Value::Error(_)), "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = walnut.log();
        let stats = walnut.stats_json();
        // Each request tries the server again once its retry timeout is over.
        assert!(matches!(c.cmd_str(&["GET", "k"]), Value::Error(_)));
        if log.contains("pool 'acl': server '127.0.0.1:")
            && log.contains("refused walnut's AUTH: WRONGPASS")
            && !stats.contains("\"server_ejects\":0")
        {
            assert!(
                !log.contains("not-the-password"),
                "the password is never logged"
            );
            break;
        }
        if Instant::now() >= deadline {
            let alive = std::net::TcpStream::connect(local(redis)).is_ok();
            panic!("redis-server accepts connections: {alive}\nlog: {log}\nstats: {stats}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
