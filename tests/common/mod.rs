//! The one fixture every integration test uses: real redis-server, nutcracker and walnut
//! processes on free loopback ports, each stopped by its PID when dropped.
#![allow(dead_code)]

pub mod cluster;
pub mod mc;
pub mod raw;
pub mod resp;
pub mod sentinel;
pub mod tls;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use resp::{RespClient, Value};

/// How long a started process may take to accept connections.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// A child process killed (by its PID) and reaped on drop.
pub struct Process {
    pub name: String,
    child: Child,
}

impl Process {
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        let child = command.stdin(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!("cannot start {name}: {e} (is it installed? run scripts/test)")
        });
        Process {
            name: name.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to this process (by its PID).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("signal process");
    }

    /// Freezes the process (SIGSTOP) and returns once every one of its threads is stopped: the
    /// signal alone returns before the kernel has stopped them, and a thread may still answer.
    pub fn stop(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let deadline = Instant::now() + STARTUP_LIMIT;
        while Instant::now() < deadline {
            if self.all_threads_stopped() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "{} (pid {}) did not stop after SIGSTOP",
            self.name,
            self.pid()
        );
    }

    /// Whether every thread of the process is in the stopped state (`T`).
    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // The state follows the command name, which is in parentheses.
                    let after = stat.rsplit_once(") ")?.1;
                    after.chars().next()
                })
                .is_some_and(|state| state == 'T' || state == 't')
        })
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Non-blocking: the exit status if the process has ended.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("walnut-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago, never the same one twice in this process (the
/// kernel may hand a just-released ephemeral port out again).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Waits until `addr` accepts a TCP connection, or panics naming `what`.
pub fn wait_for_tcp(addr: SocketAddr, what: &str, process: &mut Process) {
    let deadline = Instant::now() + STARTUP_LIMIT;
    while Instant::now() < deadline {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // On loopback a connect to a port in the ephemeral range can connect to itself
            // (simultaneous open) while nothing listens: that is not the server.
            let to_itself = stream.local_addr().ok() == stream.peer_addr().ok();
            if !to_itself {
                return;
            }
        }
        if let Some(status) = process.try_exit() {
            panic!("{what} exited during startup: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on {addr}");
}

/// Waits until the unix socket at `path` accepts a connection.
pub fn wait_for_unix(path: &Path, what: &str, process: &mut Process) {
    let deadline = Instant::now() + STARTUP_LIMIT;
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        if let Some(status) = process.try_exit() {
            panic!("{what} exited during startup: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on {}", path.display());
}

/// A real redis-server with no persistence.
pub struct RedisServer {
    pub host: String,
    pub port: u16,
    pub unix_socket: Option<PathBuf>,
    pub process: Process,
}

fn redis_command() -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--protected-mode",
        "no",
    ])
    .stdout(Stdio::null());
    cmd
}

impl RedisServer {
    /// On 127.0.0.1 and a free port.
    pub fn start() -> RedisServer {
        RedisServer::start_on("127.0.0.1", free_port())
    }

    pub fn start_on(host: &str, port: u16) -> RedisServer {
        RedisServer::start_on_with(host, port, &[])
    }

    /// On 127.0.0.1 and a free port, with more command-line arguments (`--loadmodule …`).
    pub fn start_with(args: &[&str]) -> RedisServer {
        RedisServer::start_on_with("127.0.0.1", free_port(), args)
    }

    fn start_on_with(host: &str, port: u16, args: &[&str]) -> RedisServer {
        let mut cmd = redis_command();
        cmd.args(["--bind", host, "--port", &port.to_string()]);
        cmd.args(args);
        let mut process = Process::spawn("redis-server", &mut cmd);
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        wait_for_tcp(addr, "redis-server", &mut process);
        RedisServer {
            host: host.to_string(),
            port,
            unix_socket: None,
            process,
        }
    }

    /// Listening only on the unix socket `path`.
    pub fn start_unix(path: &Path) -> RedisServer {
        let mut cmd = redis_command();
        cmd.args(["--port", "0", "--unixsocket"])
            .arg(path)
            .args(["--unixsocketperm", "700"]);
        let mut process = Process::spawn("redis-server", &mut cmd);
        wait_for_unix(path, "redis-server (unix)", &mut process);
        RedisServer {
            host: String::new(),
            port: 0,
            unix_socket: Some(path.to_path_buf()),
            process,
        }
    }

    /// Kills the server (SIGKILL); its port stops answering.
    pub fn kill(&mut self) {
        self.process.kill_now();
    }

    /// Starts a fresh, empty server on the same address after [`RedisServer::kill`].
    pub fn restart(&mut self) {
        let fresh = match &self.unix_socket {
            Some(path) => RedisServer::start_unix(path),
            None => RedisServer::start_on(&self.host, self.port),
        };
        *self = fresh;
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.process.stop();
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.process.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// A direct client, bypassing every proxy.
    pub fn client(&self) -> RespClient {
        match &self.unix_socket {
            Some(path) => RespClient::connect_unix(path),
            None => RespClient::connect(&format!("{}:{}", self.host, self.port)),
        }
    }

    /// Its `servers:` entry with a weight and an optional alias.
    pub fn server_line(&self, weight: u32, alias: Option<&str>) -> String {
        let base = match &self.unix_socket {
            Some(path) => format!("{}:{weight}", path.display()),
            None => format!("{}:{}:{weight}", self.host, self.port),
        };
        match alias {
            Some(alias) => format!("{base} {alias}"),
            None => base,
        }
    }
}

/// A real memcached (1.6, meta commands included), listening on TCP only.
pub struct MemcachedServer {
    pub host: String,
    pub port: u16,
    pub process: Process,
}

impl MemcachedServer {
    /// On 127.0.0.1 and a free port.
    pub fn start() -> MemcachedServer {
        MemcachedServer::start_on("127.0.0.1", free_port())
    }

    /// On `host:port` (any 127.0.0.0/8 address; port 11211 is fine on 127.0.0.2 and up).
    pub fn start_on(host: &str, port: u16) -> MemcachedServer {
        let mut cmd = Command::new("memcached");
        // -u: memcached refuses to run as root without it. -U 0: no UDP. -I 2m: items up to
        // 2 MiB, so 1 MB values fit. -m 256: room for the large-value and 10,000-key tests.
        cmd.args([
            "-u", "nobody", "-U", "0", "-I", "2m", "-m", "256", "-l", host, "-p",
        ])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let mut process = Process::spawn("memcached", &mut cmd);
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        wait_for_tcp(addr, "memcached", &mut process);
        MemcachedServer {
            host: host.to_string(),
            port,
            process,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        format!("{}:{}", self.host, self.port).parse().unwrap()
    }

    /// Kills the server (SIGKILL); its port stops answering.
    pub fn kill(&mut self) {
        self.process.kill_now();
    }

    /// Starts a fresh, empty server on the same address after [`MemcachedServer::kill`].
    pub fn restart(&mut self) {
        *self = MemcachedServer::start_on(&self.host, self.port);
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.process.stop();
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.process.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// A direct client, bypassing every proxy.
    pub fn client(&self) -> mc::McClient {
        mc::McClient::connect(self.addr())
    }

    /// Its `servers:` entry with a weight and an optional alias.
    pub fn server_line(&self, weight: u32, alias: Option<&str>) -> String {
        let base = format!("{}:{}:{weight}", self.host, self.port);
        match alias {
            Some(alias) => format!("{base} {alias}"),
            None => base,
        }
    }
}

/// Writes `walnut.yml` in `dir`: one Redis pool `alpha` on `port` in front of `backend`.
pub fn write_redis_conf(dir: &TempDir, port: u16, backend: &RedisServer) -> PathBuf {
    let conf = dir.file("walnut.yml");
    std::fs::write(
        &conf,
        format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - {}\n",
            backend.server_line(1, None)
        ),
    )
    .expect("write config");
    conf
}

/// Path of the walnut binary built for this test run.
pub fn walnut_bin() -> &'static str {
    env!("CARGO_BIN_EXE_walnut")
}

/// A proxy process (walnut or nutcracker) running `config`.
pub struct ProxyProcess {
    pub process: Process,
    /// The stats port (`-s`), on 127.0.0.1.
    pub stats_port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    _dir: TempDir,
}

impl ProxyProcess {
    fn start(
        program: &str,
        label: &str,
        config: &str,
        extra: &[&str],
        wait_on: &[SocketAddr],
    ) -> ProxyProcess {
        let dir = TempDir::new(label);
        let config_path = dir.file("proxy.yml");
        let log_path = dir.file("proxy.log");
        std::fs::write(&config_path, config).expect("write config");
        let stats_port = free_port();
        let mut cmd = Command::new(program);
        // scripts/test runs the suite again with WALNUT_TEST_THREADS=1 and =4.
        if program == walnut_bin() {
            if let Ok(threads) = std::env::var("WALNUT_TEST_THREADS") {
                cmd.args(["--threads", &threads]);
            }
        }
        cmd.arg("-c")
            .arg(&config_path)
            .args([
                "-s",
                &stats_port.to_string(),
                "-a",
                "127.0.0.1",
                "-v",
                "6",
                "-o",
            ])
            .arg(&log_path)
            .args(extra)
            .stdout(Stdio::null());
        let mut process = Process::spawn(label, &mut cmd);
        for addr in wait_on {
            wait_for_tcp(*addr, label, &mut process);
        }
        // The stats port opens after the pool listeners: tests read it right away.
        if !wait_on.is_empty() {
            wait_for_tcp(local(stats_port), label, &mut process);
        }
        ProxyProcess {
            process,
            stats_port,
            config_path,
            log_path,
            _dir: dir,
        }
    }

    /// walnut with `config`, ready once every address in `wait_on` accepts connections.
    pub fn walnut(config: &str, wait_on: &[SocketAddr]) -> ProxyProcess {
        ProxyProcess::start(walnut_bin(), "walnut", config, &[], wait_on)
    }

    /// walnut with extra command-line arguments.
    pub fn walnut_with(config: &str, wait_on: &[SocketAddr], extra: &[&str]) -> ProxyProcess {
        ProxyProcess::start(walnut_bin(), "walnut", config, extra, wait_on)
    }

    /// nutcracker with extra command-line arguments.
    pub fn nutcracker_with(config: &str, wait_on: &[SocketAddr], extra: &[&str]) -> ProxyProcess {
        ProxyProcess::start("nutcracker", "nutcracker", config, extra, wait_on)
    }

    /// One stats document from the stats port, as raw text.
    pub fn stats_json(&self) -> String {
        use std::io::Read;
        // A test that waited on nothing (so as not to take a client place) may ask before
        // the stats port, which opens after the pool listeners, is up.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match TcpStream::connect(("127.0.0.1", self.stats_port)) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect to the stats port: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .expect("read the stats document");
        text
    }

    /// Replaces the config file (for reload tests).
    pub fn rewrite_config(&self, config: &str) {
        // Write then rename, so a watcher never sees a half-written file.
        let fresh = self.config_path.with_extension("new");
        std::fs::write(&fresh, config).expect("write config");
        std::fs::rename(&fresh, &self.config_path).expect("replace config");
    }

    /// Debian's nutcracker (twemproxy 0.5.0), the reference implementation.
    pub fn nutcracker(config: &str, wait_on: &[SocketAddr]) -> ProxyProcess {
        ProxyProcess::start("nutcracker", "nutcracker", config, &[], wait_on)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Polls `done` (up to 30 s) until it gives a value.
pub fn wait_until<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `+OK`.
pub fn ok() -> Value {
    Value::Status("OK".into())
}

/// `+QUEUED`, a command queued in a transaction.
pub fn queued() -> Value {
    Value::Status("QUEUED".into())
}

/// An error reply with `text`.
pub fn err(text: &str) -> Value {
    Value::Error(text.into())
}

/// `blocked_clients` in `INFO clients` of the redis-server on `port`, asked directly.
pub fn blocked_clients(port: u16) -> u64 {
    let Value::Bulk(info) =
        RespClient::connect(&format!("127.0.0.1:{port}")).cmd_str(&["INFO", "clients"])
    else {
        panic!("INFO is a bulk string");
    };
    String::from_utf8_lossy(&info)
        .lines()
        .find_map(|line| line.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("blocked_clients in INFO clients")
}

/// walnut's `/metrics` page, as text.
pub fn metrics_text(metrics_port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(local(metrics_port)).expect("connect /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: walnut\r\n\r\n")
        .expect("send the request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    text
}

/// The sum over every server of the per-server metric `name` in `/metrics`.
pub fn server_metric_sum(metrics_port: u16, name: &str) -> u64 {
    metrics_text(metrics_port)
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The config of a ketama (`fnv1a_64`, `timeout: 400`) Redis pool `pool` listening on `port`
/// over `backends`, aliased s0, s1, …; `extra` lines go before `servers:`.
pub fn ketama_pool(pool: &str, port: u16, backends: &[RedisServer], extra: &str) -> String {
    let mut config = format!(
        "{pool}:\n  listen: 127.0.0.1:{port}\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 400\n{extra}  servers:\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        config.push_str(&format!(
            "   - {}\n",
            backend.server_line(1, Some(&format!("s{i}")))
        ));
    }
    config
}

/// The value of a pool's metric in `/metrics` (the sample whose name starts with `name`).
pub fn pool_metric(metrics_port: u16, name: &str, pool: &str) -> u64 {
    let text = metrics_text(metrics_port);
    let label = format!("pool=\"{pool}\"");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(&label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {pool} in {text}"))
}

/// A `host:port` socket address on 127.0.0.1.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Runs a Python `script` with `args` (`sys.argv[1:]`), asserts it succeeded, and returns
/// what it printed, trimmed.
#[allow(dead_code)]
pub fn run_python(what: &str, script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    output_of(what, "python3", &mut cmd)
}

/// Where scripts/install-node-deps installs the Node.js client libraries (ioredis 5).
pub fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/node/node_modules")
}

/// Runs a Node.js `script` (`node -e`) with `args` (`process.argv.slice(1)`) and
/// [`node_modules`] as `NODE_PATH`, asserts it succeeded, and returns what it printed, trimmed.
/// Fails, saying so, when scripts/install-node-deps has not been run.
pub fn run_node(what: &str, script: &str, args: &[&str]) -> String {
    let modules = node_modules();
    assert!(
        modules.join("ioredis").join("package.json").is_file(),
        "{what}: ioredis is not installed in {}: run scripts/install-node-deps",
        modules.display()
    );
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", &modules)
        .arg("-e")
        .arg(script)
        .arg("--")
        .args(args);
    output_of(what, "node (run scripts/install-node-deps)", &mut cmd)
}

/// Runs `cmd` (the `program` named in a failure), asserts it succeeded, and returns what it
/// printed, trimmed.
fn output_of(what: &str, program: &str, cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Real redis-servers behind one walnut ketama pool ([`ketama_pool`]), stopped on drop.
#[allow(dead_code)]
pub struct Shards {
    pub backends: Vec<RedisServer>,
    pub walnut: ProxyProcess,
    pub port: u16,
}

#[allow(dead_code)]
impl Shards {
    /// `servers` redis-servers and walnut in front as pool `pool`, with `extra` directives.
    pub fn start(pool: &str, servers: usize, extra: &str) -> Shards {
        let backends: Vec<RedisServer> = (0..servers).map(|_| RedisServer::start()).collect();
        Shards::over(pool, backends, extra)
    }

    /// walnut in front of `backends` as pool `pool`, with `extra` directives.
    pub fn over(pool: &str, backends: Vec<RedisServer>, extra: &str) -> Shards {
        let port = free_port();
        let config = ketama_pool(pool, port, &backends, extra);
        let walnut = ProxyProcess::walnut(&config, &[local(port)]);
        Shards {
            backends,
            walnut,
            port,
        }
    }

    /// A new client of walnut.
    pub fn client(&self) -> RespClient {
        RespClient::connect(&format!("127.0.0.1:{}", self.port))
    }
}
