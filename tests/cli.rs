//! The walnut binary's command line, as operators' init scripts use it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, local, walnut_bin, RedisServer, RespClient, TempDir, Value};

fn walnut(args: &[&str]) -> std::process::Output {
    Command::new(walnut_bin())
        .args(args)
        .output()
        .expect("run walnut")
}

#[test]
fn version_prints_the_version_block_to_stderr() {
    let out = walnut(&["-V"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "This is walnut-{} (nutcracker-0.5.0 compatible)\nasync event backend: tokio\n\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn help_prints_version_and_usage_and_exits_0() {
    let out = walnut(&["--help"]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("This is walnut-"));
    assert!(stderr.contains("Usage: walnut [-?hVdDt] [-v verbosity level] [-o output file]"));
    assert!(
        stderr.contains("  -t, --test-conf        : test configuration for syntax errors and exit")
    );
}

#[test]
fn a_bad_flag_value_prints_the_problem_and_usage_and_exits_1() {
    for (args, message) in [
        (&["-v", "loud"][..], "walnut: option -v requires a number\n"),
        (
            &["-s", "99999"][..],
            "walnut: option -s value 99999 is not a valid port\n",
        ),
        (&["-z"][..], "walnut: invalid option -- 'z'\n"),
    ] {
        let out = walnut(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with(message), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage: walnut"),
            "{args:?} prints the usage"
        );
    }
}

#[test]
fn describe_stats_lists_every_metric() {
    let out = walnut(&["-D"]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(
        "  server_ejected_at   \"timestamp when server was ejected in usec since epoch\""
    ));
    assert!(stderr
        .contains("  fragments           \"# fragments created from a multi-vector request\""));
}

#[test]
fn test_conf_reports_ok_or_every_problem() {
    let dir = TempDir::new("cli-t");
    let good = dir.file("good.yml");
    std::fs::write(
        &good,
        "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .unwrap();
    let out = walnut(&["-t", "-c", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "walnut: configuration file '{}' syntax is ok\n",
            good.display()
        )
    );

    let bad = dir.file("bad.yml");
    std::fs::write(
        &bad,
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: sha1\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .unwrap();
    let out = walnut(&["-t", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("conf: pool 'alpha': directive \"hash\" is not a valid hash: \"sha1\"\n"),
        "{stderr}"
    );
    assert!(stderr.ends_with(&format!(
        "walnut: configuration file '{}' syntax is invalid\n",
        bad.display()
    )));
}

#[test]
fn test_conf_checks_walnut_settings() {
    let dir = TempDir::new("cli-t-walnut");
    let pool = "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n";

    let good = dir.file("good.yml");
    std::fs::write(&good, format!("walnut:\n  threads: 2\n{pool}")).unwrap();
    let out = walnut(&["-t", "-c", good.to_str().unwrap()]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "walnut: configuration file '{}' syntax is ok\n",
            good.display()
        )
    );

    let bad = dir.file("bad.yml");
    std::fs::write(&bad, format!("walnut:\n  threads: 0\n{pool}")).unwrap();
    let out = walnut(&["-t", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("conf: walnut setting \"threads\" is not a number from 1 to 1024: \"0\"\n"),
        "{stderr}"
    );
    assert!(stderr.ends_with(&format!(
        "walnut: configuration file '{}' syntax is invalid\n",
        bad.display()
    )));
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}");
}

fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn daemonized_walnut_writes_its_pidfile_logs_serves_and_stops_cleanly_on_sigterm() {
    let dir = TempDir::new("cli-d");
    let backend = RedisServer::start();
    let port = free_port();
    let conf = dir.file("walnut.yml");
    let sock = dir.file("walnut.sock");
    std::fs::write(
        &conf,
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - {}\nbeta:\n  listen: {}\n  redis: true\n  servers:\n   - {}\n",
            backend.server_line(1, None),
            sock.display(),
            backend.server_line(1, None)
        ),
    )
    .unwrap();
    let pidfile = dir.file("walnut.pid");
    let log = dir.file("walnut.log");
    let out = Command::new(walnut_bin())
        .args([
            "-d",
            "-c",
            conf.to_str().unwrap(),
            "-p",
            pidfile.to_str().unwrap(),
            "-o",
            log.to_str().unwrap(),
        ])
        .args(["-s", &free_port().to_string(), "-a", "127.0.0.1"])
        .output()
        .expect("run walnut -d");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the parent exits 0 once the daemon is started"
    );

    wait_until("the pidfile", || {
        std::fs::read_to_string(&pidfile)
            .map(|s| !s.is_empty())
            .unwrap_or(false)
    });
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .parse()
        .expect("pidfile holds a number");
    assert!(process_alive(pid));
    wait_until("the listener", || {
        std::net::TcpStream::connect(local(port)).is_ok()
    });

    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        client.cmd_str(&["SET", "daemon", "yes"]),
        Value::Status("OK".into())
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains(&format!("started on pid {pid}")));
    assert!(sock.exists());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("the daemon to exit", || !process_alive(pid));
    assert!(!pidfile.exists(), "the pidfile is removed on SIGTERM");
    assert!(!sock.exists(), "the unix socket file is removed on SIGTERM");
}

#[test]
fn startup_on_a_busy_port_fails_with_a_clear_message() {
    let dir = TempDir::new("cli-busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let conf = dir.file("walnut.yml");
    std::fs::write(
        &conf,
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - 127.0.0.1:1:1\n"
        ),
    )
    .unwrap();
    let out = walnut(&[
        "-c",
        conf.to_str().unwrap(),
        "-s",
        &free_port().to_string(),
        "-a",
        "127.0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "bind on p 'alpha' to addr '127.0.0.1:{port}' failed: Address already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight_before_exiting_0() {
    let dir = TempDir::new("cli-drain");
    let backend = RedisServer::start();
    let port = free_port();
    let conf = common::write_redis_conf(&dir, port, &backend);
    let pidfile = dir.file("walnut.pid");
    let mut walnut = Command::new(walnut_bin())
        .args([
            "-c",
            conf.to_str().unwrap(),
            "-p",
            pidfile.to_str().unwrap(),
        ])
        .args([
            "-s",
            &free_port().to_string(),
            "-a",
            "127.0.0.1",
            "-o",
            dir.file("log").to_str().unwrap(),
        ])
        .spawn()
        .expect("start walnut");
    wait_until("the listener", || {
        std::net::TcpStream::connect(local(port)).is_ok()
    });
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(
        client.cmd_str(&["SET", "drain", "yes"]),
        Value::Status("OK".into())
    );

    // Requests stuck in flight: the backend is frozen when they arrive.
    backend.pause();
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend_from_slice(&common::resp::encode(&[b"GET", b"drain"]));
    }
    client.send_raw(&pipeline);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(walnut.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // New clients are refused while walnut drains.
    assert!(std::net::TcpStream::connect(local(port)).is_err());
    backend.resume();
    for i in 0..200 {
        assert_eq!(
            client.read_value(),
            Value::bulk("yes"),
            "reply #{i} arrives during the drain"
        );
    }
    assert!(client.is_closed(), "the drained client is closed");
    let status = walnut.wait().expect("walnut exits");
    assert_eq!(status.code(), Some(0));
    assert!(!pidfile.exists());
}
