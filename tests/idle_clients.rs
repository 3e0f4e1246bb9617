//! Clients that connect and send nothing wait in the doorman (`proxy::doorman`) as bare
//! sockets, not as sessions. They still count as connected and against `client_connections`,
//! wake up on their first byte or their hang-up, and close when their pool drains or goes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, local, MemcachedServer, ProxyProcess, RedisServer, RespClient, Value};

fn redis_pool(name: &str, port: u16, backend: &RedisServer, extra: &str) -> String {
    format!(
        "{name}:\n  listen: 127.0.0.1:{port}\n  redis: true\n{extra}  servers:\n   - {}\n",
        backend.server_line(1, None)
    )
}

fn stats(walnut: &ProxyProcess) -> serde_json::Value {
    let text = walnut.stats_json();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats JSON ({e}): {text}"))
}

/// Polls the stats (refreshed every 100 ms) until `check` holds or 15 s pass; returns the
/// last document for the caller to assert on.
fn settled_stats(
    walnut: &ProxyProcess,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let doc = stats(walnut);
        if check(&doc) || Instant::now() > deadline {
            return doc;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects without sending anything.
fn idle(port: u16) -> TcpStream {
    let stream = TcpStream::connect(local(port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// True when the peer closed the connection (a read returns 0 bytes or a reset).
fn closed_by_walnut(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn idle_clients_count_as_connected_and_each_answers_its_first_request() {
    let backend = RedisServer::start();
    let port = free_port();
    let walnut = ProxyProcess::walnut_with(
        &redis_pool("alpha", port, &backend, ""),
        &[local(port)],
        &["-i", "100"],
    );
    // The fixture's readiness probe connected and hung up once: count from after it.
    let base = settled_stats(&walnut, |d| {
        d["alpha"]["client_connections"] == 0 && d["alpha"]["client_eof"] == 1
    });
    assert_eq!(base["alpha"]["client_eof"], 1, "{base}");
    let eof_before = 1;

    let mut clients: Vec<TcpStream> = (0..300).map(|_| idle(port)).collect();
    let doc = settled_stats(&walnut, |d| d["alpha"]["client_connections"] == 300);
    assert_eq!(doc["alpha"]["client_connections"], 300, "{doc}");

    // Every other client asks something; the rest hang up without a word.
    let mut asked = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            client.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
            let mut reply = [0u8; 7];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"+PONG\r\n", "client {i}");
            asked += 1;
        }
    }
    assert_eq!(asked, 150);
    drop(clients);
    let doc = settled_stats(&walnut, |d| {
        d["alpha"]["client_connections"] == 0 && d["alpha"]["client_eof"] == eof_before + 300
    });
    assert_eq!(doc["alpha"]["client_connections"], 0, "{doc}");
    assert_eq!(
        doc["alpha"]["client_eof"].as_u64(),
        Some(eof_before + 300),
        "a hang-up before the first byte is a client_eof too: {doc}"
    );
}

#[test]
fn waiting_clients_hold_their_places_under_client_connections() {
    let backend = RedisServer::start();
    let port = free_port();
    let walnut = ProxyProcess::walnut_with(
        &redis_pool("alpha", port, &backend, "  client_connections: 2\n"),
        &[],
        &["-i", "100"],
    );
    // Wait for the listener without taking a place for good.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(local(port)).is_err() {
        assert!(Instant::now() < deadline, "walnut did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The probe connection that found the listener must be gone before the limit is tested.
    let base = settled_stats(&walnut, |d| {
        d["alpha"]["client_connections"] == 0 && d["alpha"]["client_eof"] == 1
    });
    assert_eq!(base["alpha"]["client_eof"], 1, "{base}");

    let mut first = idle(port);
    let _second = idle(port);
    let doc = settled_stats(&walnut, |d| d["alpha"]["client_connections"] == 2);
    assert_eq!(doc["alpha"]["client_connections"], 2, "{doc}");
    let mut third = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        third.read_value(),
        Value::Error("ERR max number of clients reached".into()),
        "two clients that sent nothing still fill the limit"
    );
    first.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0u8; 7];
    first.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
}

#[test]
fn sigterm_closes_waiting_clients_at_once_and_exits_0() {
    let backend = RedisServer::start();
    let port = free_port();
    let mut walnut = ProxyProcess::walnut_with(
        &redis_pool("alpha", port, &backend, ""),
        &[local(port)],
        &["--drain-timeout", "60000", "-i", "100"],
    );
    let mut clients: Vec<TcpStream> = (0..50).map(|_| idle(port)).collect();
    settled_stats(&walnut, |d| d["alpha"]["client_connections"] == 50);
    walnut.process.signal(nix::sys::signal::Signal::SIGTERM);
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(closed_by_walnut(client), "waiting client {i} is closed");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = walnut.process.try_exit() {
            break status;
        }
        assert!(Instant::now() < deadline, "walnut did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let log = walnut.log();
    assert!(
        !log.contains("drain timeout"),
        "waiting clients have nothing in flight: the drain must not wait for them: {log}"
    );
}

#[test]
fn a_reload_that_removes_a_pool_closes_its_waiting_clients() {
    let backend = RedisServer::start();
    let (gone, kept) = (free_port(), free_port());
    let both = redis_pool("gone", gone, &backend, "") + &redis_pool("kept", kept, &backend, "");
    let walnut = ProxyProcess::walnut_with(&both, &[local(gone), local(kept)], &["-i", "100"]);
    let mut waiting: Vec<TcpStream> = (0..20).map(|_| idle(gone)).collect();
    let mut staying = idle(kept);
    settled_stats(&walnut, |d| d["gone"]["client_connections"] == 20);

    walnut.rewrite_config(&redis_pool("kept", kept, &backend, ""));
    walnut.process.signal(nix::sys::signal::Signal::SIGUSR1);
    for (i, client) in waiting.iter_mut().enumerate() {
        assert!(
            closed_by_walnut(client),
            "waiting client {i} of the removed pool"
        );
    }
    // The other pool's waiting client is untouched and answers.
    staying.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0u8; 7];
    staying.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
}

#[test]
fn memcached_idle_clients_wake_on_their_first_request() {
    let backend = MemcachedServer::start();
    let port = free_port();
    let conf = format!(
        "beta:\n  listen: 127.0.0.1:{port}\n  servers:\n   - {}\n",
        backend.server_line(1, None)
    );
    let _walnut = ProxyProcess::walnut(&conf, &[local(port)]);
    let mut clients: Vec<TcpStream> = (0..100).map(|_| idle(port)).collect();
    for (i, client) in clients.iter_mut().enumerate().rev() {
        let value = format!("v{i}");
        let request = format!("set k{i} 0 0 {}\r\n{value}\r\nget k{i}\r\n", value.len());
        client.write_all(request.as_bytes()).unwrap();
        let expected = format!(
            "STORED\r\nVALUE k{i} 0 {}\r\n{value}\r\nEND\r\n",
            value.len()
        );
        let mut reply = vec![0u8; expected.len()];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(String::from_utf8_lossy(&reply), expected, "client {i}");
    }
}
