//! TLS on both sides (issue 20): walnut's `tls:` listener in front of real clients
//! (redis-cli, redis-py, a rustls client), and `server_tls:` to a redis-server that speaks
//! nothing but TLS and asks for walnut's client certificate; memcached likewise.
//! Certificates are made for each test with openssl.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tls::{client_config, connect, peer_common_name, Pki};
use common::{free_port, local, Process, ProxyProcess, RespClient, TempDir, Value};

/// A redis-server listening only on a TLS port, asking clients for a certificate.
struct TlsRedis {
    port: u16,
    _process: Process,
}

impl TlsRedis {
    fn start(pki: &Pki) -> TlsRedis {
        let port = free_port();
        let (cert, key) = pki.pair("server");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--loglevel",
                "warning",
            ])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.crt"))
            .args(["--tls-auth-clients", "yes"])
            .stdout(std::process::Stdio::null());
        let mut process = Process::spawn("redis-server (TLS)", &mut cmd);
        common::wait_for_tcp(local(port), "redis-server (TLS)", &mut process);
        TlsRedis {
            port,
            _process: process,
        }
    }
}

/// A Redis pool listening with `tls` (the pool's `tls:` body) in front of `redis`, reached
/// with walnut's client certificate.
fn secure_pool(pki: &Pki, listen: u16, tls: &str, redis: &TlsRedis) -> String {
    let d = pki.dir.display();
    format!(
        "secure:\n  listen: 127.0.0.1:{listen}\n  redis: true\n  tls:\n{tls}  server_tls:\n    ca_file: {d}/ca.crt\n    cert_file: {d}/client.crt\n    key_file: {d}/client.key\n    server_name: localhost\n  servers:\n   - 127.0.0.1:{}:1\n",
        redis.port
    )
}

fn listen_tls(pki: &Pki, with_ca: bool) -> String {
    let d = pki.dir.display();
    let ca = if with_ca {
        format!("    ca_file: {d}/ca.crt\n")
    } else {
        String::new()
    };
    format!("    cert_file: {d}/server.crt\n    key_file: {d}/server.key\n{ca}")
}

/// walnut with a `tls:` pool in front of `redis` and `/metrics`: (listen port, metrics port).
fn walnut_with_metrics(pki: &Pki, redis: &TlsRedis) -> (u16, u16, ProxyProcess) {
    let listen = free_port();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let walnut = ProxyProcess::walnut_with(
        &secure_pool(pki, listen, &listen_tls(pki, false), redis),
        &[local(listen)],
        &["--metrics", &metrics_addr],
    );
    (listen, metrics_port, walnut)
}

fn metrics(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(local(port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The metrics once `series` has reached `at_least` (each failure is counted by walnut's
/// handshake thread a moment after the client gave up), or after 30 s.
fn metrics_once(port: u16, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(port);
        if sample(&text, series).unwrap_or(0.0) >= at_least || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the sample line that starts with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn redis_cli(pki: &Pki, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(pki.path("ca.crt"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_cli_and_redis_py_reach_a_tls_only_redis_through_walnut_over_tls() {
    let dir = TempDir::new("tls-clients");
    let pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let listen = free_port();
    let walnut = ProxyProcess::walnut(
        &secure_pool(&pki, listen, &listen_tls(&pki, false), &redis),
        &[local(listen)],
    );
    assert_eq!(
        redis_cli(&pki, listen, &["SET", "tls:key", "through walnut"]),
        "OK"
    );
    assert_eq!(
        redis_cli(&pki, listen, &["GET", "tls:key"]),
        "through walnut"
    );

    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), ssl=True, ssl_ca_certs=sys.argv[2],
                ssl_cert_reqs="required", socket_timeout=30)
p = r.pipeline(transaction=False)
for i in range(500):
    p.set(f"py:{i}", f"value-{i}")
for i in range(500):
    p.get(f"py:{i}")
replies = p.execute()
assert replies[:500] == [True] * 500, replies[:5]
assert replies[500:] == [f"value-{i}".encode() for i in range(500)], replies[500:505]
print("ok", len(replies))
"#;
    let ca = pki.path("ca.crt");
    let ca = ca.to_str().expect("a UTF-8 temp path");
    assert_eq!(
        common::run_python("redis-py", script, &[&listen.to_string(), ca]),
        "ok 1000"
    );
    // The values went through walnut's TLS connection to the TLS-only server.
    let config = client_config(
        &pki.path("ca.crt"),
        Some((&pki.pair("client").0, &pki.pair("client").1)),
    );
    let mut direct = RespClient::over(connect(redis.port, &config).expect("TLS to redis-server"));
    assert_eq!(direct.cmd_str(&["GET", "py:499"]), Value::bulk("value-499"));
    drop(walnut);
}

#[test]
fn clients_that_fail_tls_get_nothing_and_the_next_client_is_served() {
    let dir = TempDir::new("tls-refused");
    let pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let (listen, metrics_port, _walnut) = walnut_with_metrics(&pki, &redis);
    let trusted = client_config(&pki.path("ca.crt"), None);
    let failures = "walnut_pool_tls_handshake_failures_total{pool=\"secure\"}";

    // A plaintext client: not one byte back, and the connection closes.
    let mut plain = std::net::TcpStream::connect(local(listen)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert_eq!(got, b"", "a plaintext client on a TLS port is sent nothing");
    let mut served = RespClient::over(connect(listen, &trusted).expect("handshake"));
    assert_eq!(served.cmd_str(&["PING"]), Value::Status("PONG".into()));

    // A client that trusts another CA refuses walnut's certificate.
    let stranger = client_config(&pki.path("other-ca.crt"), None);
    let refused = connect(listen, &stranger).expect_err("the handshake fails");
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );
    let mut served = RespClient::over(connect(listen, &trusted).expect("handshake"));
    assert_eq!(
        served.cmd_str(&["SET", "k", "v"]),
        Value::Status("OK".into())
    );
    assert_eq!(served.cmd_str(&["GET", "k"]), Value::bulk("v"));

    let text = metrics_once(metrics_port, failures, 3.0);
    // The fixture's readiness check (one bare connect that closes) is the third failure.
    assert_eq!(sample(&text, failures), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, "walnut_pool_tls_handshakes_total{pool=\"secure\"}"),
        Some(2.0),
        "{text}"
    );
}

/// Reads what a client whose certificate walnut refused gets back: an error, or EOF.
fn refused_after_handshake(client: std::io::Result<common::tls::TlsClient>) -> bool {
    let Ok(mut client) = client else { return true };
    if client.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return true;
    }
    let mut reply = [0u8; 64];
    !matches!(client.read(&mut reply), Ok(n) if n > 0)
}

#[test]
fn with_ca_file_only_clients_with_a_certificate_from_that_ca_are_served() {
    let dir = TempDir::new("tls-mutual");
    let pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let listen = free_port();
    let _walnut = ProxyProcess::walnut(
        &secure_pool(&pki, listen, &listen_tls(&pki, true), &redis),
        &[local(listen)],
    );
    let ca = pki.path("ca.crt");
    let anonymous = client_config(&ca, None);
    assert!(refused_after_handshake(connect(listen, &anonymous)));
    let (cert, key) = pki.pair("other-client");
    let stranger = client_config(&ca, Some((&cert, &key)));
    assert!(refused_after_handshake(connect(listen, &stranger)));
    let (cert, key) = pki.pair("client");
    let member = client_config(&ca, Some((&cert, &key)));
    let mut client = RespClient::over(connect(listen, &member).expect("handshake"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn rotated_certificates_reach_new_handshakes_while_open_sessions_keep_working() {
    let dir = TempDir::new("tls-rotation");
    let mut pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let listen = free_port();
    let walnut = ProxyProcess::walnut(
        &secure_pool(&pki, listen, &listen_tls(&pki, false), &redis),
        &[local(listen)],
    );
    let trusted = client_config(&pki.path("ca.crt"), None);
    let before = connect(listen, &trusted).expect("handshake");
    assert_eq!(peer_common_name(&before), "walnut-test-server-1");
    let mut before = RespClient::over(before);
    assert_eq!(
        before.cmd_str(&["SET", "r", "1"]),
        Value::Status("OK".into())
    );

    pki.rotate("ca", "server", "walnut-test-server-2");
    // walnut notices the new files by itself; wait for a handshake that shows them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let client = connect(listen, &trusted).expect("handshake");
        if peer_common_name(&client) == "walnut-test-server-2" {
            break client;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never shown"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut after = RespClient::over(after);
    assert_eq!(after.cmd_str(&["GET", "r"]), Value::bulk("1"));
    // The session opened before the rotation goes on.
    assert_eq!(before.cmd_str(&["INCR", "r"]), Value::Int(2));
    assert!(walnut
        .log()
        .contains("the tls files changed; new TLS sessions use them"));

    // A reload (SIGUSR1) re-reads them too, and a broken file changes nothing.
    std::fs::write(pki.path("server.key"), b"not a key").unwrap();
    walnut.process.signal(nix::sys::signal::Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !walnut.log().contains("cannot be used") && !walnut.log().contains("reload failed") {
        assert!(Instant::now() < deadline, "{}", walnut.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut still = RespClient::over(connect(listen, &trusted).expect("handshake"));
    assert_eq!(still.cmd_str(&["GET", "r"]), Value::bulk("2"));
    assert_eq!(before.cmd_str(&["GET", "r"]), Value::bulk("2"));
}

#[test]
fn a_server_certificate_from_an_untrusted_ca_fails_the_request_with_a_clear_error() {
    let dir = TempDir::new("tls-untrusted-server");
    let pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let listen = free_port();
    let d = pki.dir.display();
    let config = format!(
        "secure:\n  listen: 127.0.0.1:{listen}\n  redis: true\n  server_tls:\n    ca_file: {d}/other-ca.crt\n  servers:\n   - 127.0.0.1:{}:1\n",
        redis.port
    );
    let _walnut = ProxyProcess::walnut(&config, &[local(listen)]);
    let mut client = RespClient::connect(&local(listen).to_string());
    assert_eq!(
        client.cmd_str(&["GET", "k"]),
        Value::Error(
            "ERR TLS with the server failed: invalid peer certificate: UnknownIssuer".into()
        )
    );
    // The connection stays usable for the next request.
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

/// memcached with `-Z` (TLS only on its port), its certificate from the test CA.
fn tls_memcached(pki: &Pki) -> (u16, Process) {
    let port = free_port();
    let (cert, key) = pki.pair("server");
    let options = format!(
        "ssl_chain_cert={},ssl_key={}",
        cert.display(),
        key.display()
    );
    // -u: memcached refuses to run as root without it; as this user, it can read the key.
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| "root".to_string(), |u| u.name);
    let mut cmd = Command::new("memcached");
    cmd.args([
        "-u",
        &user,
        "-U",
        "0",
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-Z",
        "-o",
        &options,
    ]);
    let mut process = Process::spawn("memcached (TLS)", &mut cmd);
    common::wait_for_tcp(local(port), "memcached (TLS)", &mut process);
    (port, process)
}

#[test]
fn memcached_pools_take_tls_on_both_sides() {
    let dir = TempDir::new("tls-memcached");
    let pki = Pki::new(&dir.path);
    let (memcached, _server) = tls_memcached(&pki);
    let listen = free_port();
    let d = pki.dir.display();
    let config = format!(
        "cache:\n  listen: 127.0.0.1:{listen}\n  tls:\n{}  server_tls:\n    ca_file: {d}/ca.crt\n    server_name: localhost\n  servers:\n   - 127.0.0.1:{memcached}:1\n",
        listen_tls(&pki, false)
    );
    let _walnut = ProxyProcess::walnut(&config, &[local(listen)]);
    let trusted = client_config(&pki.path("ca.crt"), None);
    let mut client = connect(listen, &trusted).expect("handshake");
    client
        .write_all(b"set tls 0 0 5\r\nhello\r\nget tls\r\n")
        .unwrap();
    let expected = b"STORED\r\nVALUE tls 0 5\r\nhello\r\nEND\r\n";
    let mut got = vec![0u8; expected.len()];
    client.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

fn test_conf(config: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("check.yml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::walnut_bin())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn dash_t_checks_that_tls_files_exist_parse_and_match() {
    let dir = TempDir::new("tls-check");
    let pki = Pki::new(&dir.path);
    let d = pki.dir.display();
    let pool = |tls: &str| {
        format!("p:\n  listen: 127.0.0.1:1\n  tls:\n{tls}  servers:\n   - 127.0.0.1:6379:1\n")
    };
    let (ok, text) = test_conf(&pool(&listen_tls(&pki, true)), &pki.dir);
    assert!(ok, "{text}");

    std::fs::write(pki.path("junk.pem"), b"no PEM here\n").unwrap();
    let refused = [
        (
            format!("    cert_file: {d}/server.crt\n    key_file: {d}/client.key\n"),
            format!("conf: pool 'p': directive \"tls\" cannot be used: the key in '{d}/client.key' does not match the certificate in '{d}/server.crt'"),
        ),
        (
            format!("    cert_file: {d}/nope.crt\n    key_file: {d}/server.key\n"),
            format!("cannot read certificate file '{d}/nope.crt'"),
        ),
        (
            format!("    cert_file: {d}/junk.pem\n    key_file: {d}/server.key\n"),
            format!("certificate file '{d}/junk.pem' holds no PEM certificate"),
        ),
        (
            format!("    cert_file: {d}/server.crt\n"),
            "conf: pool 'p': directive \"tls\" needs \"key_file\"".to_string(),
        ),
    ];
    for (tls, expected) in refused {
        let (ok, text) = test_conf(&pool(&tls), &pki.dir);
        assert!(!ok, "{tls}");
        assert!(text.contains(&expected), "{text}");
    }
}

#[test]
fn a_client_that_never_starts_its_handshake_is_closed_and_counted() {
    let dir = TempDir::new("tls-silent");
    let pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let (listen, metrics_port, _walnut) = walnut_with_metrics(&pki, &redis);
    let mut silent = std::net::TcpStream::connect(local(listen)).unwrap();
    // Longer than walnut's handshake limit (10 s): the read ends with walnut's close.
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let read = silent.read_to_end(&mut got);
    assert!(read.is_ok(), "walnut closed the connection: {read:?}");
    assert_eq!(got, b"");
    let text = metrics(metrics_port);
    // The fixture's readiness check and this client.
    assert_eq!(
        sample(
            &text,
            "walnut_pool_tls_handshake_failures_total{pool=\"secure\"}"
        ),
        Some(2.0),
        "{text}"
    );
    // Others are still served.
    let trusted = client_config(&pki.path("ca.crt"), None);
    let mut client = RespClient::over(connect(listen, &trusted).expect("handshake"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

/// Plaintext rustls already holds when the session starts (a request that came in the same
/// flight as the client's Finished), and a pipeline larger than one read of walnut's, must be
/// read without waiting for the socket to bring more: both are answered whole.
#[test]
fn requests_rustls_holds_with_nothing_left_in_the_socket_are_answered() {
    let dir = TempDir::new("tls-held-plaintext");
    let pki = Pki::new(&dir.path);
    let redis = TlsRedis::start(&pki);
    let listen = free_port();
    let _walnut = ProxyProcess::walnut(
        &secure_pool(&pki, listen, &listen_tls(&pki, false), &redis),
        &[local(listen)],
    );
    let trusted = client_config(&pki.path("ca.crt"), None);

    // Written before the handshake: rustls sends it right behind the client's Finished.
    let mut socket = std::net::TcpStream::connect(local(listen)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(trusted.clone(), name).unwrap();
    conn.writer().write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut socket).unwrap();
    }
    let mut early = rustls::StreamOwned::new(conn, socket);
    early.flush().unwrap();
    let mut reply = [0u8; 7];
    early.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");

    // 1,024 GETs of 32 bytes each (32 KiB: two full TLS records) in one write.
    let mut client = connect(listen, &trusted).expect("handshake");
    let get = b"*2\r\n$3\r\nGET\r\n$12\r\nheld:missing\r\n";
    assert_eq!(get.len(), 32);
    client.write_all(&get.repeat(1024)).unwrap();
    client.flush().unwrap();
    let mut replies = vec![0u8; 5 * 1024];
    client.read_exact(&mut replies).unwrap();
    assert_eq!(replies, b"$-1\r\n".repeat(1024));
}
