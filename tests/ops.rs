//! Production operations, with the real binary and real backends: log reopening, run-time log
//! levels, JSON logs, reuseport, systemd readiness, the open-file client limit, and config
//! errors in the log file.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    free_port, local, wait_for_tcp, walnut_bin, Process, RedisServer, RespClient, TempDir, Value,
};
use nix::sys::signal::Signal;

/// A walnut process started with extra flags, logging to its own file.
struct Walnut {
    process: Process,
    log_path: PathBuf,
    port: u16,
    _dir: TempDir,
}

impl Walnut {
    /// One redis pool `alpha` on `port` in front of `backend`, plus `extra_conf` lines for
    /// the pool, started with `args` (after `-c -s -a -o`).
    fn start(
        label: &str,
        backend: &RedisServer,
        port: u16,
        extra_conf: &str,
        args: &[&str],
        env: &[(&str, &str)],
        wrapper: Option<&[&str]>,
    ) -> Walnut {
        let dir = TempDir::new(label);
        let conf = dir.file("walnut.yml");
        std::fs::write(
            &conf,
            format!(
                "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n{extra_conf}  servers:\n   - {}\n",
                backend.server_line(1, None)
            ),
        )
        .unwrap();
        let log_path = dir.file("walnut.log");
        let mut cmd = match wrapper {
            Some(words) => {
                let mut cmd = Command::new(words[0]);
                cmd.args(&words[1..]).arg(walnut_bin());
                cmd
            }
            None => Command::new(walnut_bin()),
        };
        cmd.arg("-c")
            .arg(&conf)
            .args(["-s", &free_port().to_string(), "-a", "127.0.0.1", "-o"])
            .arg(&log_path)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Process::spawn(label, &mut cmd);
        wait_for_tcp(local(port), label, &mut process);
        Walnut {
            process,
            log_path,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn client(&self) -> RespClient {
        RespClient::connect(&format!("127.0.0.1:{}", self.port))
    }

    /// Sends `signal` and waits until the log shows `expect`.
    fn signal_and_wait(&self, signal: Signal, expect: &str) {
        let before = self.log().matches(expect).count();
        self.process.signal(signal);
        wait_until(expect, || self.log().matches(expect).count() > before);
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn ping(client: &mut RespClient) {
    assert_eq!(client.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

/// A client connects, is served, and leaves.
fn one_client(walnut: &Walnut) {
    let mut client = walnut.client();
    assert_eq!(
        client.cmd_str(&["SET", "ops", "1"]),
        Value::Status("OK".into())
    );
}

fn count_connected(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("DEBUG client ") && l.contains(" connected to pool 'alpha'"))
        .count()
}

#[test]
fn sighup_after_a_rename_reopens_the_log_file() {
    let backend = RedisServer::start();
    let walnut = Walnut::start("ops-hup", &backend, free_port(), "", &[], &[], None);
    wait_until("the startup line", || {
        walnut.log().contains("started on pid")
    });
    let rotated = walnut.log_path.with_extension("log.1");
    std::fs::rename(&walnut.log_path, &rotated).unwrap();
    walnut.process.signal(Signal::SIGHUP);
    wait_until("a new log file", || walnut.log_path.exists());
    walnut.signal_and_wait(Signal::SIGUSR1, "signal 10 (SIGUSR1) received");

    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("started on pid"), "{old}");
    assert!(
        old.contains("INFO signal 1 (SIGHUP) received, reopening log file"),
        "the reopening line goes to the old file: {old}"
    );
    assert!(!old.contains("SIGUSR1"), "{old}");
    let new = walnut.log();
    assert!(new.contains("signal 10 (SIGUSR1) received"), "{new}");
    assert!(!new.contains("started on pid"), "{new}");
    // SIGUSR1 is reserved for reload: walnut keeps serving.
    ping(&mut walnut.client());
}

#[test]
fn sigttin_and_sigttou_change_what_is_logged() {
    let backend = RedisServer::start();
    let walnut = Walnut::start(
        "ops-level",
        &backend,
        free_port(),
        "",
        &["-v", "5"],
        &[],
        None,
    );
    one_client(&walnut);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count_connected(&walnut.log()), 0, "no debug lines at -v 5");

    walnut.signal_and_wait(Signal::SIGTTIN, "up log level to 6");
    walnut.signal_and_wait(Signal::SIGTTIN, "up log level to 7");
    let log = walnut.log();
    assert!(
        log.contains("INFO signal 21 (SIGTTIN) received, up logging level"),
        "{log}"
    );
    one_client(&walnut);
    wait_until("a debug line at -v 7", || {
        count_connected(&walnut.log()) == 1
    });
    wait_until("the close line", || {
        walnut
            .log()
            .lines()
            .any(|l| l.contains("DEBUG client ") && l.ends_with(" closed"))
    });

    walnut.signal_and_wait(Signal::SIGTTOU, "down log level to 6");
    assert!(walnut
        .log()
        .contains("INFO signal 22 (SIGTTOU) received, down logging level"));
    one_client(&walnut);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        count_connected(&walnut.log()),
        1,
        "no new debug lines after SIGTTOU"
    );

    // The level stays within 0..=11, and the signal lines are written at every level.
    for _ in 0..7 {
        walnut.signal_and_wait(Signal::SIGTTOU, "SIGTTOU) received");
    }
    let log = walnut.log();
    assert!(log.contains("down log level to 0"), "{log}");
    assert!(!log.contains("down log level to -"), "{log}");
    assert!(log.ends_with("INFO signal 22 (SIGTTOU) received, down logging level\n"));
}

#[test]
fn two_processes_with_reuseport_share_a_port() {
    let backend = RedisServer::start();
    let port = free_port();
    let extra = "  reuseport: true\n";
    let first = Walnut::start("ops-rp1", &backend, port, extra, &["-v", "7"], &[], None);
    let second = Walnut::start("ops-rp2", &backend, port, extra, &["-v", "7"], &[], None);
    // The startup probes (wait_for_tcp) connected too: count from here.
    std::thread::sleep(Duration::from_millis(200));
    let before = (
        count_connected(&first.log()),
        count_connected(&second.log()),
    );
    for _ in 0..64 {
        one_client(&first);
    }
    wait_until("64 connections logged", || {
        count_connected(&first.log()) + count_connected(&second.log()) == before.0 + before.1 + 64
    });
    let (a, b) = (
        count_connected(&first.log()) - before.0,
        count_connected(&second.log()) - before.1,
    );
    assert!(
        a > 0 && b > 0,
        "both processes accepted clients: {a} and {b}"
    );
}

/// A strict JSON value, parsed by hand (no JSON crate in the dependency tree).
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn parse_document(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> Result<(), String> {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(format!("expected {lit} at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => self.object(),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("bad array at {}", self.i)),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.eat("true").map(|_| Json::Bool(true)),
            Some(b'f') => self.eat("false").map(|_| Json::Bool(false)),
            Some(b'n') => self.eat("null").map(|_| Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(format!("unexpected byte at {}", self.i)),
        }
    }

    fn object(&mut self) -> Result<Json, String> {
        self.i += 1;
        let mut members: Vec<(String, Json)> = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Json::Obj(members));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(format!("expected a key at {}", self.i));
            }
            let key = self.string()?;
            if members.iter().any(|(k, _)| *k == key) {
                return Err(format!("duplicate key {key}"));
            }
            self.ws();
            self.eat(":")?;
            let value = self.value()?;
            members.push((key, value));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                _ => return Err(format!("bad object at {}", self.i)),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return Err("unterminated string".into());
            };
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err("bad escape".into());
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = std::str::from_utf8(
                                self.s.get(self.i..self.i + 4).ok_or("short \\u")?,
                            )
                            .map_err(|e| e.to_string())?;
                            self.i += 4;
                            let code = u32::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
                            char::from_u32(code).ok_or("surrogate escape")?
                        }
                        _ => return Err(format!("bad escape \\{}", e as char)),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return Err(format!("raw control byte {b:#x} in a string")),
                _ => out.push(b),
            }
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.i < p.s.len() && p.s[p.i].is_ascii_digit() {
                p.i += 1;
            }
            p.i - s
        };
        let int_start = self.i;
        if digits(self) == 0 || (self.s[int_start] == b'0' && self.i - int_start > 1) {
            return Err(format!("bad number at {start}"));
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(format!("bad fraction at {start}"));
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(format!("bad exponent at {start}"));
            }
        }
        Ok(Json::Num(
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
        ))
    }
}

#[test]
fn the_json_test_parser_is_strict() {
    assert!(JsonParser::parse_document(r#"{"a":[1,-2.5e3,true,null,"x\n\u00e9"]}"#).is_ok());
    for bad in [
        "{\"a\":1,}",
        "{\"a\":01}",
        "{\"a\":\"x\ny\"}",
        "{\"a\":1}{",
        "{'a':1}",
        "{\"a\":1,\"a\":2}",
        "{\"a\":NaN}",
        "{\"a\":\"\\x\"}",
    ] {
        assert!(JsonParser::parse_document(bad).is_err(), "{bad}");
    }
}

#[test]
fn json_log_lines_are_strict_json_objects() {
    let backend = RedisServer::start();
    let walnut = Walnut::start(
        "ops-json",
        &backend,
        free_port(),
        "",
        &["--log-format", "json", "-v", "11"],
        &[],
        None,
    );
    one_client(&walnut);
    walnut.signal_and_wait(Signal::SIGTTOU, "down log level to 10");
    wait_until("the client lines", || walnut.log().contains("closed\""));
    let log = walnut.log();
    assert!(log.ends_with('\n'));
    let mut messages = Vec::new();
    for line in log.lines() {
        let value = JsonParser::parse_document(line)
            .unwrap_or_else(|e| panic!("not strict JSON ({e}): {line}"));
        let Json::Obj(members) = value else {
            panic!("not an object: {line}");
        };
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&keys[..3], &["ts", "level", "msg"], "{line}");
        let Json::Str(ts) = &members[0].1 else {
            panic!("ts is a string: {line}")
        };
        // 2026-11-21T10:00:00.123Z
        let b = ts.as_bytes();
        assert_eq!(ts.len(), 24, "{ts}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19], b[23]),
            (b'-', b'-', b'T', b':', b':', b'.', b'Z'),
            "{ts}"
        );
        let Json::Str(level) = &members[1].1 else {
            panic!("level is a string: {line}")
        };
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.as_str()),
            "{line}"
        );
        let Json::Str(msg) = &members[2].1 else {
            panic!("msg is a string: {line}")
        };
        messages.push((level.clone(), msg.clone()));
    }
    let has = |level: &str, start: &str| {
        messages
            .iter()
            .any(|(l, m)| l == level && m.starts_with(start))
    };
    assert!(has("INFO", "walnut-"), "{log}");
    assert!(has("INFO", "pool 'alpha' listening on 127.0.0.1:"), "{log}");
    assert!(has("DEBUG", "client "), "{log}");
    assert!(
        has("INFO", "signal 22 (SIGTTOU) received, down logging level"),
        "{log}"
    );
}

fn recv_datagram(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notify datagram");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn check_notify(walnut: &mut Walnut, socket: &UnixDatagram) {
    assert_eq!(recv_datagram(socket), "READY=1");
    // READY comes after every listener is bound.
    ping(&mut walnut.client());
    walnut.process.signal(Signal::SIGTERM);
    assert_eq!(recv_datagram(socket), "STOPPING=1");
    wait_until("walnut to exit", || walnut.process.try_exit().is_some());
}

#[test]
fn sd_notify_sends_ready_and_stopping_to_a_path_socket() {
    let backend = RedisServer::start();
    let dir = TempDir::new("ops-notify");
    let path = dir.file("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut walnut = Walnut::start(
        "ops-notify",
        &backend,
        free_port(),
        "",
        &[],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
        None,
    );
    check_notify(&mut walnut, &socket);
}

#[test]
fn sd_notify_supports_the_abstract_namespace() {
    use std::os::linux::net::SocketAddrExt;
    let backend = RedisServer::start();
    let name = format!("walnut-ops-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let at_name = format!("@{name}");
    let mut walnut = Walnut::start(
        "ops-notify-abs",
        &backend,
        free_port(),
        "",
        &[],
        &[("NOTIFY_SOCKET", &at_name)],
        None,
    );
    check_notify(&mut walnut, &socket);
}

#[test]
fn without_notify_socket_nothing_is_sent_and_walnut_runs() {
    let backend = RedisServer::start();
    let walnut = Walnut::start("ops-plain", &backend, free_port(), "", &[], &[], None);
    ping(&mut walnut.client());
    assert!(!walnut.log().contains("sd_notify"));
}

#[test]
fn the_open_file_limit_bounds_clients() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit (util-linux) is not installed; skipping");
        return;
    }
    let backend = RedisServer::start();
    // 64 descriptors − (1 server connection + 1 listener) − 32 reserved = 30 clients.
    let walnut = Walnut::start(
        "ops-nofile",
        &backend,
        free_port(),
        "",
        &["--threads", "2"],
        &[],
        Some(&["prlimit", "--nofile=64:64", "--"]),
    );
    let log = walnut.log();
    assert!(
        log.contains(
            "open-file limit 64: max client connections 30, max server connections 2 (32 reserved)"
        ),
        "{log}"
    );
    let mut clients: Vec<RespClient> = (0..30)
        .map(|_| {
            let mut c = walnut.client();
            ping(&mut c);
            c
        })
        .collect();
    let mut refused = walnut.client();
    assert_eq!(
        refused.read_value(),
        Value::Error("ERR max number of clients reached".into())
    );
    assert!(refused.is_closed());
    // The clients inside the limit are still served; one leaving makes room for another.
    ping(&mut clients[29]);
    drop(clients.pop());
    wait_until("a free slot", || {
        let mut c = walnut.client();
        c.send_raw(&common::resp::encode(&[b"PING"]));
        c.read_value() == Value::Status("PONG".into())
    });
}

#[test]
fn walnut_raises_its_soft_open_file_limit_to_the_hard_limit() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit (util-linux) is not installed; skipping");
        return;
    }
    let backend = RedisServer::start();
    let walnut = Walnut::start(
        "ops-raise",
        &backend,
        free_port(),
        "",
        &[],
        &[],
        Some(&["prlimit", "--nofile=100:200", "--"]),
    );
    let log = walnut.log();
    assert!(
        log.contains("raised the open-file limit from 100 to 200"),
        "{log}"
    );
    assert!(
        log.contains("open-file limit 200: max client connections 166,"),
        "{log}"
    );
}

fn run_with_bad_config(dir: &TempDir, extra: &[&str]) -> (std::process::Output, PathBuf) {
    let conf = dir.file("bad.yml");
    std::fs::write(
        &conf,
        "alpha:\n  listen: 127.0.0.1:22121\n  hash: sha1\n  servers:\n   - 127.0.0.1:6379:1\n",
    )
    .unwrap();
    let log = dir.file("walnut.log");
    let out = Command::new(walnut_bin())
        .arg("-c")
        .arg(&conf)
        .arg("-o")
        .arg(&log)
        .args(extra)
        .output()
        .expect("run walnut");
    (out, log)
}

fn assert_logged_config_error(log: &Path) {
    let text = std::fs::read_to_string(log).expect("the log file exists");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with('['), "{text}");
    assert!(
        lines[0].ends_with(
            "] ERROR conf: pool 'alpha': directive \"hash\" is not a valid hash: \"sha1\""
        ),
        "{text}"
    );
    assert!(
        lines[1].ends_with("' syntax is invalid")
            && lines[1].contains("] ERROR walnut: configuration file '"),
        "{text}"
    );
}

#[test]
fn config_errors_reach_stderr_and_the_log_file() {
    let dir = TempDir::new("ops-conf");
    let (out, log) = run_with_bad_config(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("directive \"hash\" is not a valid hash"),
        "{stderr}"
    );
    assert_logged_config_error(&log);

    // Also with -d: the parent checks the config before detaching, and logs it.
    let dir = TempDir::new("ops-conf-d");
    let (out, log) = run_with_bad_config(&dir, &["-d"]);
    assert_eq!(out.status.code(), Some(1));
    assert_logged_config_error(&log);

    // JSON logs carry the same lines.
    let dir = TempDir::new("ops-conf-json");
    let (_, log) = run_with_bad_config(&dir, &["--log-format", "json"]);
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        assert!(JsonParser::parse_document(line).is_ok(), "{line}");
    }
    assert!(text.contains("\"level\":\"ERROR\",\"msg\":\"conf: pool 'alpha': directive \\\"hash\\\" is not a valid hash: \\\"sha1\\\"\"}"), "{text}");

    // -t only tests: nothing is logged (as nutcracker -t).
    let dir = TempDir::new("ops-conf-t");
    let (out, log) = run_with_bad_config(&dir, &["-t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!log.exists());
}

#[test]
fn drain_timeout_bounds_the_stop() {
    let backend = RedisServer::start();
    let walnut = Walnut::start(
        "ops-drain",
        &backend,
        free_port(),
        "",
        &["--drain-timeout", "300"],
        &[],
        None,
    );
    let mut client = walnut.client();
    ping(&mut client);
    backend.pause();
    client.send_raw(&common::resp::encode(&[b"GET", b"stuck"]));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut walnut = walnut;
    walnut.process.signal(Signal::SIGTERM);
    wait_until("walnut to exit", || walnut.process.try_exit().is_some());
    let took = started.elapsed();
    backend.resume();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let log = walnut.log();
    assert!(
        log.contains("answering what clients send until they are quiet (up to 300 ms)"),
        "{log}"
    );
    assert!(
        log.contains("drain timeout: closed 1 clients with 1 requests they had sent unanswered"),
        "{log}"
    );
}

/// The non-comment lines of a file in contrib/.
fn contrib(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_systemd_unit_fits_walnut() {
    let unit = contrib("walnut.service");
    let value = |key: &str| {
        unit.iter()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("walnut.service has no {key}="))
            .to_string()
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert_eq!(value("ExecReload"), "/bin/kill -USR1 $MAINPID");
    let exec = value("ExecStart");
    assert!(!exec.split_whitespace().any(|w| w == "-d"), "{exec}");
    let stop: u64 = value("TimeoutStopSec").parse().unwrap();
    assert!(
        stop * 1000 > walnut::cli::DEFAULT_DRAIN_TIMEOUT_MS,
        "TimeoutStopSec {stop}"
    );
    assert!(value("LimitNOFILE").parse::<u64>().unwrap() > 1024);
    assert!(value("RestrictAddressFamilies").contains("AF_UNIX"));
    assert!(!unit.iter().any(|l| l == "PrivateTmp=yes"));
    // Every flag in ExecStart parses.
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert!(matches!(
        walnut::cli::parse(args),
        Ok(walnut::cli::Command::Run(_))
    ));
}

#[test]
fn the_logrotate_postrotate_script_makes_walnut_reopen_its_log() {
    let rules = contrib("walnut.logrotate");
    assert!(!rules.iter().any(|l| l == "copytruncate"));
    let start = rules.iter().position(|l| l == "postrotate").unwrap();
    let end = rules.iter().position(|l| l == "endscript").unwrap();
    let script = rules[start + 1..end].join("\n");
    assert!(script.contains("kill -HUP"), "{script}");

    let backend = RedisServer::start();
    let dir = TempDir::new("ops-logrotate");
    let pidfile = dir.file("walnut.pid");
    let walnut = Walnut::start(
        "ops-logrotate",
        &backend,
        free_port(),
        "",
        &["-p", pidfile.to_str().unwrap()],
        &[],
        None,
    );
    wait_until("the pidfile", || pidfile.exists());
    let rotated = walnut.log_path.with_extension("log.1");
    std::fs::rename(&walnut.log_path, &rotated).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(script.replace("/run/walnut/walnut.pid", pidfile.to_str().unwrap()))
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the reopened log file", || walnut.log_path.exists());
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("reopening log file"), "{old}");
}
