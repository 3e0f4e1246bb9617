//! Fatal signals, as twemproxy: SIGSEGV, SIGBUS, SIGFPE and SIGABRT sent to walnut are logged
//! (`signal 11 (SIGSEGV) received, core dumping`), then walnut dies of that very signal.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_port, local, wait_for_tcp, walnut_bin, write_redis_conf, Process, RedisServer, RespClient,
    TempDir, Value,
};
use nix::sys::signal::Signal;

/// Starts walnut (with cores disabled: the test only needs the exit status), sends it
/// `signal`, and returns how it ended and what it logged.
fn kill_walnut_with(signal: Signal) -> (std::process::ExitStatus, String) {
    let backend = RedisServer::start();
    let dir = TempDir::new("fatal");
    let port = free_port();
    let conf = write_redis_conf(&dir, port, &backend);
    let log = dir.file("walnut.log");
    let mut cmd = Command::new("sh");
    // `exec` keeps the PID: the signal goes to walnut itself.
    cmd.args(["-c", "ulimit -c 0 && exec \"$0\" \"$@\"", walnut_bin()])
        .arg("-c")
        .arg(&conf)
        .args(["-s", &free_port().to_string(), "-a", "127.0.0.1", "-o"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Ok(threads) = std::env::var("WALNUT_TEST_THREADS") {
        cmd.args(["--threads", &threads]);
    }
    let mut walnut = Process::spawn("walnut", &mut cmd);
    wait_for_tcp(local(port), "walnut", &mut walnut);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
    walnut.signal(signal);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = walnut.try_exit() {
            break status;
        }
        assert!(Instant::now() < deadline, "walnut ignored {signal}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn fatal_signals_are_logged_then_kill_walnut_with_that_signal() {
    let signals = [
        (Signal::SIGSEGV, 11, "SIGSEGV"),
        (Signal::SIGBUS, 7, "SIGBUS"),
        (Signal::SIGFPE, 8, "SIGFPE"),
        (Signal::SIGABRT, 6, "SIGABRT"),
    ];
    for (signal, number, name) in signals {
        let (status, log) = kill_walnut_with(signal);
        assert_eq!(status.signal(), Some(number), "{status}\n{log}");
        let expected = format!(" INFO signal {number} ({name}) received, core dumping");
        let last = log.lines().last().unwrap_or_default();
        assert!(last.ends_with(&expected), "last line {last:?}\n{log}");
    }
}
