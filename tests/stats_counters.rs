//! The stats counters and gauges under known traffic, for Redis and memcached pools.
//!
//! Each test drives exactly known requests through a real proxy in front of real backends and
//! checks every figure it touches against an exact value: counts and byte sizes computed from
//! the frames sent and the replies received, where each key lives (asked of the backends
//! directly), what the backends themselves say they read and wrote, and, wherever twemproxy
//! defines a figure the same way, Debian's nutcracker driven with the same traffic over the
//! same kind of backends.
//!
//! Pool and server figures in the stats JSON are aggregated every `-i` ms: every proxy here
//! runs with `-i 100`, and a test polls the JSON until the expected figures appear. Only a
//! generous limit ends the wait, and then the test fails listing every figure that differs.
//!
//! The last tests scrape `/metrics`, parse it strictly (an OpenMetrics grammar check, then
//! prometheus-parse) and check the latency histograms and per-command counts against the
//! requests sent.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mc::McClient;
use common::raw::{escape, RawConn, Stop};
use common::resp::encode;
use common::{free_port, local, MemcachedServer, ProxyProcess, RedisServer, Value};
use serde_json::Value as Json;

/// How long a test waits for the stats to show what it expects. Only a hang or a wrong
/// figure reaches it.
const POLL_LIMIT: Duration = Duration::from_secs(30);
/// The pool name used by every single-pool test.
const POOL: &str = "p";
/// Backend `i` is named `NAMES[i]` (an alias, so walnut and nutcracker place keys alike even
/// though their backends listen on different ports).
const NAMES: [&str; 2] = ["a", "b"];
/// The fixture checks that a proxy is ready by connecting once to each listen address and
/// closing: one client_eof, and one connection in `total_connections`, before any test traffic.
const READINESS_CHECK: u64 = 1;

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Walnut,
    Nutcracker,
}

const BOTH: [Kind; 2] = [Kind::Nutcracker, Kind::Walnut];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Redis,
    Memcache,
}

fn start_proxy(kind: Kind, config: &str, listen: &[u16]) -> ProxyProcess {
    let wait_on: Vec<SocketAddr> = listen.iter().map(|&port| local(port)).collect();
    let extra = ["-i", "100"];
    match kind {
        Kind::Walnut => ProxyProcess::walnut_with(config, &wait_on, &extra),
        Kind::Nutcracker => ProxyProcess::nutcracker_with(config, &wait_on, &extra),
    }
}

/// A real redis-server or memcached.
enum Backend {
    Redis(RedisServer),
    Memcached(MemcachedServer),
}

/// What a backend says it has read and written over the network, with the sizes of the query
/// that asked and of its reply (which the backend counts as well).
#[derive(Clone, Copy, Debug)]
struct NetBytes {
    read: u64,
    written: u64,
    query: u64,
    reply: u64,
}

impl NetBytes {
    /// Bytes read and written between two snapshots, less the snapshots' own queries: the
    /// later query is counted as read before it is answered, and the earlier reply as written
    /// after it was produced.
    fn since(self, before: NetBytes) -> (u64, u64) {
        (
            self.read - before.read - self.query,
            self.written - before.written - before.reply,
        )
    }
}

impl Backend {
    fn start(proto: Proto) -> Backend {
        match proto {
            Proto::Redis => Backend::Redis(RedisServer::start()),
            Proto::Memcache => Backend::Memcached(MemcachedServer::start()),
        }
    }

    fn start_n(proto: Proto, n: usize) -> Vec<Backend> {
        (0..n).map(|_| Backend::start(proto)).collect()
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Backend::Redis(s) => format!("{}:{}", s.host, s.port).parse().unwrap(),
            Backend::Memcached(s) => s.addr(),
        }
    }

    /// Its `servers:` line, named `name`.
    fn line(&self, name: &str) -> String {
        match self {
            Backend::Redis(s) => s.server_line(1, Some(name)),
            Backend::Memcached(s) => s.server_line(1, Some(name)),
        }
    }

    fn kill(&mut self) {
        match self {
            Backend::Redis(s) => s.kill(),
            Backend::Memcached(s) => s.kill(),
        }
    }

    fn pause(&self) {
        match self {
            Backend::Redis(s) => s.pause(),
            Backend::Memcached(s) => s.pause(),
        }
    }

    fn resume(&self) {
        match self {
            Backend::Redis(s) => s.resume(),
            Backend::Memcached(s) => s.resume(),
        }
    }

    /// Deletes `key` directly on the backend (the proxy sees nothing of it).
    fn forget(&self, key: &str) {
        match self {
            Backend::Redis(s) => {
                assert_eq!(s.client().cmd_str(&["DEL", key]), Value::Int(1));
            }
            Backend::Memcached(s) => {
                let reply = s.client().call(format!("delete {key}\r\n").as_bytes());
                assert_eq!(reply, b"DELETED\r\n");
            }
        }
    }

    /// Which of `keys` this backend holds, asked directly (the proxy sees nothing of it).
    fn holds(&self, keys: &[String]) -> Vec<bool> {
        match self {
            Backend::Redis(s) => {
                let commands: Vec<Vec<Vec<u8>>> = keys
                    .iter()
                    .map(|k| vec![b"EXISTS".to_vec(), k.as_bytes().to_vec()])
                    .collect();
                s.client()
                    .pipeline(&commands)
                    .into_iter()
                    .map(|v| v == Value::Int(1))
                    .collect()
            }
            Backend::Memcached(s) => {
                let request: Vec<u8> = keys
                    .iter()
                    .flat_map(|k| format!("get {k}\r\n").into_bytes())
                    .collect();
                s.client()
                    .exchange(&request, keys.len())
                    .into_iter()
                    .map(|r| r.starts_with(b"VALUE "))
                    .collect()
            }
        }
    }

    /// The backend's own network byte counts (`INFO stats` / `stats`), asked directly.
    fn net_bytes(&self) -> NetBytes {
        let (query, reply, read_key, written_key): (&[u8], Vec<u8>, &str, &str) = match self {
            Backend::Redis(_) => {
                let query = b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n";
                let mut conn = RawConn::connect(self.addr());
                assert!(conn.send(query));
                let got = conn.read_replies(1);
                assert_eq!(got.stop, Stop::Complete, "INFO stats from redis");
                (
                    query,
                    got.replies.concat(),
                    "total_net_input_bytes:",
                    "total_net_output_bytes:",
                )
            }
            Backend::Memcached(_) => {
                let query = b"stats\r\n";
                let mut stream = TcpStream::connect(self.addr()).expect("connect to memcached");
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                stream.write_all(query).unwrap();
                let mut reply = Vec::new();
                let mut chunk = [0u8; 4096];
                while !reply.ends_with(b"END\r\n") {
                    let n = stream.read(&mut chunk).expect("read memcached stats");
                    assert!(n > 0, "memcached closed during stats");
                    reply.extend_from_slice(&chunk[..n]);
                }
                (query, reply, "STAT bytes_read ", "STAT bytes_written ")
            }
        };
        let text = String::from_utf8_lossy(&reply).into_owned();
        let field = |prefix: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        };
        NetBytes {
            read: field(read_key),
            written: field(written_key),
            query: query.len() as u64,
            reply: reply.len() as u64,
        }
    }
}

/// For each key, the index of the one backend that holds it (asked directly).
fn holders(backends: &[Backend], keys: &[String]) -> Vec<usize> {
    let held: Vec<Vec<bool>> = backends.iter().map(|b| b.holds(keys)).collect();
    keys.iter()
        .enumerate()
        .map(|(k, key)| {
            let on: Vec<usize> = (0..backends.len()).filter(|&b| held[b][k]).collect();
            assert_eq!(
                on.len(),
                1,
                "key {key} is on backends {on:?}, expected exactly one"
            );
            on[0]
        })
        .collect()
}

/// The indexes of `keys` held by backend `server`.
fn keys_on(holders: &[usize], server: usize) -> Vec<usize> {
    (0..holders.len())
        .filter(|&k| holders[k] == server)
        .collect()
}

/// A `servers:` line for a server nobody listens on.
fn dead_line(name: &str) -> String {
    format!("127.0.0.1:{}:1 {name}", free_port())
}

/// A pool. `hash: md5` spreads the tests' sequential key names over the servers (twemproxy's
/// default `fnv1a_64` puts most of them on one server).
fn pool_config(proto: Proto, pool: &str, listen: u16, lines: &[String], extra: &str) -> String {
    let mut config = format!(
        "{pool}:\n  listen: 127.0.0.1:{listen}\n  redis: {}\n  hash: md5\n{extra}  servers:\n",
        proto == Proto::Redis
    );
    for line in lines {
        config.push_str(&format!("   - {line}\n"));
    }
    config
}

/// The `servers:` lines of `backends`, named `a`, `b`, … in order.
fn lines_of(backends: &[Backend]) -> Vec<String> {
    backends
        .iter()
        .zip(NAMES)
        .map(|(b, name)| b.line(name))
        .collect()
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

// ---------------------------------------------------------------------------------------
// Clients and frames
// ---------------------------------------------------------------------------------------

/// A client connection to a proxy, returning every reply as its exact bytes.
enum Conn {
    Resp(RawConn),
    Text(McClient),
}

impl Conn {
    fn connect(proto: Proto, port: u16) -> Conn {
        match proto {
            Proto::Redis => Conn::Resp(RawConn::connect(local(port))),
            Proto::Memcache => Conn::Text(McClient::connect(local(port))),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Resp(c) => assert!(c.send(bytes), "the proxy closed the connection"),
            Conn::Text(c) => c.send(bytes),
        }
    }

    fn read(&mut self, n: usize) -> Vec<Vec<u8>> {
        match self {
            Conn::Resp(c) => {
                let got = c.read_replies(n);
                assert_eq!(
                    got.stop,
                    Stop::Complete,
                    "expected {n} replies, got {} ({:?}), then {:?} with {}",
                    got.replies.len(),
                    got.replies.iter().map(|r| escape(r)).collect::<Vec<_>>(),
                    got.stop,
                    escape(&got.rest)
                );
                got.replies
            }
            Conn::Text(c) => {
                let got = c.read_replies(n);
                assert_eq!(
                    got.replies.len(),
                    n,
                    "expected {n} replies, got {:?} (closed: {}, rest {})",
                    got.replies.iter().map(|r| escape(r)).collect::<Vec<_>>(),
                    got.closed,
                    escape(&got.rest)
                );
                got.replies
            }
        }
    }

    fn call(&mut self, frame: &[u8]) -> Vec<u8> {
        self.send(frame);
        self.read(1).remove(0)
    }

    /// Every frame in one write, then one reply each.
    fn call_all(&mut self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        self.send(&frames.concat());
        self.read(frames.len())
    }

    /// Reads until the proxy closes the connection; the bytes it sent first.
    fn read_to_close(&mut self) -> Vec<u8> {
        let (bytes, closed) = match self {
            Conn::Resp(c) => c.read_to_close(),
            Conn::Text(c) => c.read_until_quiet(Duration::from_secs(30)),
        };
        assert!(closed, "the proxy kept the connection open");
        bytes
    }
}

fn resp(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

fn set_frame(proto: Proto, key: &str, value: &str) -> Vec<u8> {
    match proto {
        Proto::Redis => resp(&["SET", key, value]),
        Proto::Memcache => format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).into_bytes(),
    }
}

fn get_frame(proto: Proto, key: &str) -> Vec<u8> {
    match proto {
        Proto::Redis => resp(&["GET", key]),
        Proto::Memcache => format!("get {key}\r\n").into_bytes(),
    }
}

fn append_frame(proto: Proto, key: &str, tail: &str) -> Vec<u8> {
    match proto {
        Proto::Redis => resp(&["APPEND", key, tail]),
        Proto::Memcache => format!("append {key} 0 0 {}\r\n{tail}\r\n", tail.len()).into_bytes(),
    }
}

fn delete_frame(proto: Proto, key: &str) -> Vec<u8> {
    match proto {
        Proto::Redis => resp(&["DEL", key]),
        Proto::Memcache => format!("delete {key}\r\n").into_bytes(),
    }
}

fn stored(proto: Proto) -> Vec<u8> {
    match proto {
        Proto::Redis => b"+OK\r\n".to_vec(),
        Proto::Memcache => b"STORED\r\n".to_vec(),
    }
}

fn deleted(proto: Proto) -> Vec<u8> {
    match proto {
        Proto::Redis => b":1\r\n".to_vec(),
        Proto::Memcache => b"DELETED\r\n".to_vec(),
    }
}

/// The reply to an append that made the value `new_len` bytes long.
fn appended(proto: Proto, new_len: usize) -> Vec<u8> {
    match proto {
        Proto::Redis => format!(":{new_len}\r\n").into_bytes(),
        Proto::Memcache => b"STORED\r\n".to_vec(),
    }
}

/// The reply to a single-key get.
fn value_reply(proto: Proto, key: &str, value: Option<&str>) -> Vec<u8> {
    match (proto, value) {
        (Proto::Redis, Some(v)) => format!("${}\r\n{v}\r\n", v.len()).into_bytes(),
        (Proto::Redis, None) => b"$-1\r\n".to_vec(),
        (Proto::Memcache, Some(v)) => {
            format!("VALUE {key} 0 {}\r\n{v}\r\nEND\r\n", v.len()).into_bytes()
        }
        (Proto::Memcache, None) => b"END\r\n".to_vec(),
    }
}

/// An error reply the proxy generates itself.
fn proxy_error(proto: Proto, text: &str) -> Vec<u8> {
    match proto {
        Proto::Redis => format!("-ERR {text}\r\n").into_bytes(),
        Proto::Memcache => format!("SERVER_ERROR {text}\r\n").into_bytes(),
    }
}

fn key_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// Values of different lengths, so byte counts catch an off-by-one anywhere.
fn value_for(i: usize) -> String {
    format!("{i}-{}", "v".repeat(1 + i * 7 % 50))
}

// ---------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------

/// Requests and responses of one server, as the `requests`, `request_bytes`, `responses` and
/// `response_bytes` figures count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Traffic {
    requests: u64,
    request_bytes: u64,
    responses: u64,
    response_bytes: u64,
}

impl Traffic {
    /// One request forwarded as `request` and answered with `reply`.
    fn exchange(&mut self, request: &[u8], reply: &[u8]) {
        self.requests += 1;
        self.request_bytes += request.len() as u64;
        self.responses += 1;
        self.response_bytes += reply.len() as u64;
    }

    /// One request sent that never got its reply.
    fn unanswered(&mut self, request: &[u8]) {
        self.requests += 1;
        self.request_bytes += request.len() as u64;
    }
}

fn stats(proxy: &ProxyProcess) -> Json {
    let text = proxy.stats_json();
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: stats JSON does not parse ({e}): {text}",
            proxy.process.name
        )
    })
}

/// A figure by its path: `total_connections`, `p/client_eof`, `p/a/requests`.
fn figure(doc: &Json, path: &str) -> Option<u64> {
    path.split('/')
        .try_fold(doc, |v, k| v.get(k))
        .and_then(Json::as_u64)
}

/// Exact figures a stats document must show, by path.
#[derive(Clone, Debug, Default)]
struct Figures(Vec<(String, u64)>);

impl Figures {
    fn new() -> Figures {
        Figures::default()
    }

    fn at(mut self, path: &str, value: u64) -> Figures {
        self.0.retain(|(p, _)| p != path);
        self.0.push((path.to_string(), value));
        self
    }

    fn pool(self, name: &str, value: u64) -> Figures {
        self.at(&format!("{POOL}/{name}"), value)
    }

    fn server(self, server: &str, name: &str, value: u64) -> Figures {
        self.at(&format!("{POOL}/{server}/{name}"), value)
    }

    fn traffic(self, server: &str, t: Traffic) -> Figures {
        self.server(server, "requests", t.requests)
            .server(server, "request_bytes", t.request_bytes)
            .server(server, "responses", t.responses)
            .server(server, "response_bytes", t.response_bytes)
    }

    /// Nothing queued for the server, nothing awaiting a reply.
    fn idle(self, server: &str) -> Figures {
        self.server(server, "in_queue", 0)
            .server(server, "in_queue_bytes", 0)
            .server(server, "out_queue", 0)
            .server(server, "out_queue_bytes", 0)
    }

    /// No connection closed on the server's side, never ejected.
    fn no_failures(self, server: &str) -> Figures {
        self.server(server, "server_eof", 0)
            .server(server, "server_err", 0)
            .server(server, "server_timedout", 0)
            .server(server, "server_ejected_at", 0)
    }

    /// A pool with one client connected, nothing closed but the readiness check, no errors.
    fn one_quiet_client(self) -> Figures {
        self.pool("client_connections", 1)
            .pool("client_eof", READINESS_CHECK)
            .pool("client_err", 0)
            .pool("server_ejects", 0)
            .pool("forward_error", 0)
    }

    fn mismatches(&self, doc: &Json) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(path, want)| {
                let got = figure(doc, path);
                (got != Some(*want)).then(|| format!("{path}: expected {want}, got {got:?}"))
            })
            .collect()
    }
}

/// Polls the stats until `done` holds.
fn wait_until(proxy: &ProxyProcess, what: &str, mut done: impl FnMut(&Json) -> bool) -> Json {
    let deadline = Instant::now() + POLL_LIMIT;
    loop {
        let doc = stats(proxy);
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the stats never showed {what}; last document: {doc}",
            proxy.process.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the stats until every figure in `expected` shows its value; fails listing every
/// figure that differs.
fn wait_for(proxy: &ProxyProcess, expected: &Figures) -> Json {
    let deadline = Instant::now() + POLL_LIMIT;
    loop {
        let doc = stats(proxy);
        let wrong = expected.mismatches(&doc);
        if wrong.is_empty() {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "{}: figures differ:\n  {}\nlast document: {doc}",
            proxy.process.name,
            wrong.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every numeric figure of one server (or pool, without its servers) in a document.
fn figures_of(doc: &Json, path: &[&str]) -> BTreeMap<String, u64> {
    let object = path
        .iter()
        .try_fold(doc, |v, k| v.get(k))
        .and_then(Json::as_object)
        .unwrap_or_else(|| panic!("no {path:?} in {doc}"));
    object
        .iter()
        .filter_map(|(k, v)| v.as_u64().map(|v| (k.clone(), v)))
        .collect()
}

/// Sums one server figure over the servers `names` of the pool.
fn sum_over(doc: &Json, names: &[&str], field: &str) -> u64 {
    names
        .iter()
        .map(|s| figure(doc, &format!("{POOL}/{s}/{field}")).unwrap_or(0))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Requests, responses and bytes per server
// ---------------------------------------------------------------------------------------

/// Each key is set one request at a time, then read, appended to and read again in one
/// pipelined write, then deleted: every figure of both servers is exact.
fn counted_per_server(proto: Proto) {
    let backends = Backend::start_n(proto, 2);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    let mut conn = Conn::connect(proto, port);
    let keys = key_names("user", 24);
    let mut traffic = [Traffic::default(); 2];
    let mut sets = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let frame = set_frame(proto, key, &value_for(i));
        let reply = conn.call(&frame);
        assert_eq!(reply, stored(proto));
        sets.push((frame, reply));
    }
    let holders = holders(&backends, &keys);
    for (k, (frame, reply)) in sets.iter().enumerate() {
        traffic[holders[k]].exchange(frame, reply);
    }

    let mut frames = Vec::new();
    let mut expected_replies = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let value = value_for(i);
        let longer = format!("{value}tail");
        frames.push(get_frame(proto, key));
        expected_replies.push(value_reply(proto, key, Some(&value)));
        frames.push(append_frame(proto, key, "tail"));
        expected_replies.push(appended(proto, longer.len()));
        frames.push(get_frame(proto, key));
        expected_replies.push(value_reply(proto, key, Some(&longer)));
    }
    let replies = conn.call_all(&frames);
    for (j, (frame, reply)) in frames.iter().zip(&replies).enumerate() {
        assert_eq!(
            escape(reply),
            escape(&expected_replies[j]),
            "reply to {}",
            escape(frame)
        );
        traffic[holders[j / 3]].exchange(frame, reply);
    }
    for (k, key) in keys.iter().enumerate() {
        let frame = delete_frame(proto, key);
        let reply = conn.call(&frame);
        assert_eq!(reply, deleted(proto));
        traffic[holders[k]].exchange(&frame, &reply);
    }
    for (s, name) in NAMES.iter().enumerate() {
        assert!(
            traffic[s].requests > 0,
            "no key of {keys:?} lives on server {name}: the test needs both"
        );
    }

    let mut expected = Figures::new().one_quiet_client().pool("fragments", 0);
    for (s, name) in NAMES.iter().enumerate() {
        expected = expected
            .traffic(name, traffic[s])
            .idle(name)
            .no_failures(name)
            .server(name, "server_connections", 1);
    }
    wait_for(&proxy, &expected);
}

#[test]
fn redis_requests_responses_and_bytes_are_counted_per_server() {
    counted_per_server(Proto::Redis);
}

#[test]
fn memcached_requests_responses_and_bytes_are_counted_per_server() {
    counted_per_server(Proto::Memcache);
}

/// Which multi-key requests a traffic mix sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MultiKey {
    None,
    /// MGET and DEL (Redis), multi-key get (memcached).
    ExceptMset,
    /// And MSET (Redis).
    All,
}

/// A fixed mix of requests: single-key reads and writes, misses, pipelining, a request the
/// proxy answers itself, and multi-key requests over both servers. `locate` says which
/// backend holds each key. Returns the replies and how many requests the servers get in all
/// (the same for walnut and twemproxy: a multi-key request is one request per server holding
/// some of its keys) and how many of those are parts of a split request.
fn mixed_traffic(
    proto: Proto,
    conn: &mut Conn,
    locate: &mut dyn FnMut(&[String]) -> Vec<usize>,
    multi_key: MultiKey,
) -> (Vec<Vec<u8>>, u64, u64) {
    let keys = key_names("mix", 12);
    let mut replies = Vec::new();
    let mut server_requests = 0u64;
    let mut parts = 0u64;
    for (i, key) in keys.iter().enumerate() {
        let reply = conn.call(&set_frame(proto, key, &value_for(i)));
        assert_eq!(reply, stored(proto));
        replies.push(reply);
        server_requests += 1;
    }
    let counters = key_names("counter", 3);
    for key in &counters {
        replies.push(conn.call(&set_frame(proto, key, "10")));
        server_requests += 1;
    }
    let holders = locate(&keys);
    let servers_of = |indexes: &[usize]| -> u64 {
        indexes
            .iter()
            .map(|&i| holders[i])
            .collect::<BTreeSet<_>>()
            .len() as u64
    };

    // One pipelined write.
    let mut frames: Vec<Vec<u8>> = keys.iter().map(|k| get_frame(proto, k)).collect();
    frames.extend((0..4).map(|i| get_frame(proto, &format!("missing:{i}"))));
    frames.push(append_frame(proto, &keys[0], "+more"));
    server_requests += frames.len() as u64;
    match proto {
        Proto::Redis => {
            frames.extend(counters.iter().map(|k| resp(&["INCRBY", k, "5"])));
            frames.push(resp(&["STRLEN", &keys[1]]));
            server_requests += 4;
            // Answered by the proxy itself: no server sees it.
            frames.push(resp(&["PING"]));
        }
        Proto::Memcache => {
            frames.extend(
                counters
                    .iter()
                    .map(|k| format!("incr {k} 5\r\n").into_bytes()),
            );
            frames.push(format!("touch {} 100\r\n", keys[1]).into_bytes());
            // Sent to the server of the key `placeholder`.
            frames.push(b"version\r\n".to_vec());
            server_requests += 5;
        }
    }
    replies.extend(conn.call_all(&frames));

    if multi_key != MultiKey::None {
        let multi: [&[usize]; 3] = [&[0, 1, 2, 3, 4, 5], &[6, 7], &[2, 9, 4, 11]];
        for indexes in multi {
            let names: Vec<&str> = indexes.iter().map(|&i| keys[i].as_str()).collect();
            let frame = match proto {
                Proto::Redis => resp(&[&["MGET"], names.as_slice()].concat()),
                Proto::Memcache => format!("get {}\r\n", names.join(" ")).into_bytes(),
            };
            replies.push(conn.call(&frame));
            let n = servers_of(indexes);
            server_requests += n;
            if n > 1 {
                parts += n;
            }
        }
        if proto == Proto::Redis {
            let frame = resp(&["DEL", &keys[8], &keys[9], &keys[10]]);
            replies.push(conn.call(&frame));
            let mut split: Vec<&[usize]> = vec![&[8, 9, 10]];
            if multi_key == MultiKey::All {
                let mset = resp(&["MSET", &keys[8], "x", &keys[10], "yy", &keys[11], "zzz"]);
                assert_eq!(conn.call(&mset), b"+OK\r\n");
                split.push(&[8, 10, 11]);
            }
            for indexes in split {
                let n = servers_of(indexes);
                server_requests += n;
                if n > 1 {
                    parts += n;
                }
            }
        }
    }
    let reply = conn.call(&delete_frame(proto, &keys[5]));
    assert_eq!(reply, deleted(proto));
    replies.push(reply);
    server_requests += 1;
    (replies, server_requests, parts)
}

/// The stats of a proxy that has forwarded `server_requests` requests and had them all
/// answered.
fn settled(proxy: &ProxyProcess, servers: &[&str], server_requests: u64) -> Json {
    wait_until(
        proxy,
        &format!("{server_requests} requests answered and every queue empty"),
        |doc| {
            sum_over(doc, servers, "requests") == server_requests
                && sum_over(doc, servers, "responses") == server_requests
                && ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"]
                    .iter()
                    .all(|f| sum_over(doc, servers, f) == 0)
        },
    )
}

/// The same mixed traffic through nutcracker and walnut, each over its own fresh backends:
/// every server figure, every pool figure but `fragments`, and the connection counts agree.
fn agrees_with_nutcracker(proto: Proto, multi_key: MultiKey) {
    let mut docs = Vec::new();
    let mut all_replies = Vec::new();
    for kind in BOTH {
        let backends = Backend::start_n(proto, 2);
        let port = free_port();
        let proxy = start_proxy(
            kind,
            &pool_config(proto, POOL, port, &lines_of(&backends), ""),
            &[port],
        );
        let mut conn = Conn::connect(proto, port);
        let (replies, server_requests, parts) = mixed_traffic(
            proto,
            &mut conn,
            &mut |keys| holders(&backends, keys),
            multi_key,
        );
        let open = settled(&proxy, &NAMES, server_requests);
        drop(conn);
        let closed = wait_for(
            &proxy,
            &Figures::new()
                .pool("client_connections", 0)
                .pool("client_eof", READINESS_CHECK + 1),
        );
        // fragments: twemproxy never counts them; walnut counts the parts of split requests.
        let fragments = match kind {
            Kind::Nutcracker => 0,
            Kind::Walnut => parts,
        };
        assert_eq!(figure(&closed, "p/fragments"), Some(fragments), "{kind:?}");
        docs.push((kind, open, closed));
        all_replies.push(replies);
    }
    assert_eq!(
        all_replies[0].iter().map(|r| escape(r)).collect::<Vec<_>>(),
        all_replies[1].iter().map(|r| escape(r)).collect::<Vec<_>>(),
        "nutcracker's replies, then walnut's"
    );
    let (_, nc_open, nc_closed) = &docs[0];
    let (_, wn_open, wn_closed) = &docs[1];
    for name in &NAMES {
        let theirs = figures_of(nc_closed, &[POOL, name]);
        let ours = figures_of(wn_closed, &[POOL, name]);
        assert_eq!(ours, theirs, "server {name}: walnut, then nutcracker");
        assert!(ours["requests"] > 0, "server {name} got no traffic");
    }
    for (label, nc, wn) in [
        ("client open", nc_open, wn_open),
        ("client closed", nc_closed, wn_closed),
    ] {
        let mut theirs = figures_of(nc, &[POOL]);
        let mut ours = figures_of(wn, &[POOL]);
        theirs.remove("fragments");
        ours.remove("fragments");
        assert_eq!(
            ours, theirs,
            "pool figures with the {label}: walnut, then nutcracker"
        );
        for header in ["total_connections", "curr_connections"] {
            assert_eq!(
                figure(wn, header),
                figure(nc, header),
                "{header} with the {label}: walnut, then nutcracker"
            );
        }
    }
}

/// Without MSET: twemproxy's `request_bytes` for an MSET fragment is larger than the fragment
/// it sends (seen here: fragments of 55 and 32 bytes, as the backends read them, counted 63
/// and 39, each its first key's length + 2 too many), so the figures cannot agree. walnut counts the bytes it sends, which the backends confirm in
/// `redis_request_and_response_bytes_equal_what_the_backends_read_and_wrote`.
#[test]
fn redis_per_server_counters_agree_with_nutcracker() {
    agrees_with_nutcracker(Proto::Redis, MultiKey::ExceptMset);
}

/// Without multi-gets: twemproxy rebuilds every multi-get as `get k1 k2 \r\n` (a space before
/// CRLF) where walnut sends `get k1 k2\r\n` or the client's own line (docs/COMPATIBILITY.md),
/// so their request bytes differ by design.
#[test]
fn memcached_per_server_counters_agree_with_nutcracker() {
    agrees_with_nutcracker(Proto::Memcache, MultiKey::None);
}

/// `request_bytes` and `response_bytes` of each server are exactly what that server says it
/// read and wrote (redis `INFO stats`, memcached `stats`), split requests included.
fn bytes_match_the_backends(proto: Proto) {
    let backends = Backend::start_n(proto, 2);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    let snapshot = || -> Vec<NetBytes> { backends.iter().map(Backend::net_bytes).collect() };
    // Snapshots around the proxy's traffic; the test's own placement lookups (asked of the
    // backends directly) fall between two others and are left out.
    let mut marks = vec![snapshot()];
    let mut conn = Conn::connect(proto, port);
    let (_, server_requests, parts) = mixed_traffic(
        proto,
        &mut conn,
        &mut |keys| {
            marks.push(snapshot());
            let found = holders(&backends, keys);
            marks.push(snapshot());
            found
        },
        MultiKey::All,
    );
    assert!(parts > 0, "the mix split no request over both servers");
    let doc = settled(&proxy, &NAMES, server_requests);
    marks.push(snapshot());
    assert_eq!(marks.len(), 4);
    for (s, name) in NAMES.iter().enumerate() {
        let (read_1, written_1) = marks[1][s].since(marks[0][s]);
        let (read_2, written_2) = marks[3][s].since(marks[2][s]);
        assert_eq!(
            (
                figure(&doc, &format!("p/{name}/request_bytes")),
                figure(&doc, &format!("p/{name}/response_bytes"))
            ),
            (Some(read_1 + read_2), Some(written_1 + written_2)),
            "server {name}: (request_bytes, response_bytes) against what the backend read and wrote"
        );
    }
}

#[test]
fn redis_request_and_response_bytes_equal_what_the_backends_read_and_wrote() {
    bytes_match_the_backends(Proto::Redis);
}

#[test]
fn memcached_request_and_response_bytes_equal_what_the_backends_read_and_wrote() {
    bytes_match_the_backends(Proto::Memcache);
}

// ---------------------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------------------

/// Keys set through the proxy, with where each one lives: at least three on each of the two
/// servers.
fn spread_keys(
    proto: Proto,
    conn: &mut Conn,
    backends: &[Backend],
    traffic: &mut [Traffic],
) -> (Vec<String>, Vec<usize>) {
    let keys = key_names("frag", 16);
    let mut sets = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let frame = set_frame(proto, key, &value_for(i));
        let reply = conn.call(&frame);
        assert_eq!(reply, stored(proto));
        sets.push((frame, reply));
    }
    let holders = holders(backends, &keys);
    for (k, (frame, reply)) in sets.iter().enumerate() {
        traffic[holders[k]].exchange(frame, reply);
    }
    for (s, name) in NAMES.iter().enumerate() {
        assert!(
            keys_on(&holders, s).len() >= 3,
            "fewer than 3 of {keys:?} live on server {name}"
        );
    }
    (keys, holders)
}

/// A RESP multi-bulk reply of these values.
fn resp_array(values: &[Option<String>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", values.len()).into_bytes();
    for v in values {
        match v {
            Some(v) => out.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes()),
            None => out.extend_from_slice(b"$-1\r\n"),
        }
    }
    out
}

#[test]
fn redis_split_requests_count_one_fragment_per_server_part() {
    let proto = Proto::Redis;
    let backends = Backend::start_n(proto, 2);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    let mut conn = Conn::connect(proto, port);
    let mut traffic = [Traffic::default(); 2];
    let (keys, holders) = spread_keys(proto, &mut conn, &backends, &mut traffic);
    let on_a = keys_on(&holders, 0);
    let on_b = keys_on(&holders, 1);
    let (a1, a2, a3) = (on_a[0], on_a[1], on_a[2]);
    let (b1, b2, b3) = (on_b[0], on_b[1], on_b[2]);
    let k = |i: usize| keys[i].as_str();
    let v = |i: usize| Some(value_for(i));
    let mut fragments = 0;

    // MGET over both servers: one `mget` part per server, with its keys in request order.
    let reply = conn.call(&resp(&["MGET", k(a1), k(b1), k(a2)]));
    assert_eq!(escape(&reply), escape(&resp_array(&[v(a1), v(b1), v(a2)])));
    traffic[0].exchange(&resp(&["mget", k(a1), k(a2)]), &resp_array(&[v(a1), v(a2)]));
    traffic[1].exchange(&resp(&["mget", k(b1)]), &resp_array(&[v(b1)]));
    fragments += 2;

    // Every key on one server: forwarded whole, no fragment.
    let frame = resp(&["MGET", k(b2), k(b1)]);
    let reply = conn.call(&frame);
    assert_eq!(escape(&reply), escape(&resp_array(&[v(b2), v(b1)])));
    traffic[1].exchange(&frame, &reply);

    // EXISTS (split by walnut) and DEL over both servers.
    let reply = conn.call(&resp(&["EXISTS", k(b2), k(a3), k(b3)]));
    assert_eq!(reply, b":3\r\n");
    traffic[0].exchange(&resp(&["exists", k(a3)]), b":1\r\n");
    traffic[1].exchange(&resp(&["exists", k(b2), k(b3)]), b":2\r\n");
    fragments += 2;
    let reply = conn.call(&resp(&["DEL", k(a3), k(b3), k(b2)]));
    assert_eq!(reply, b":3\r\n");
    traffic[0].exchange(&resp(&["del", k(a3)]), b":1\r\n");
    traffic[1].exchange(&resp(&["del", k(b3), k(b2)]), b":2\r\n");
    fragments += 2;

    // MSET over both servers: pairs grouped per server.
    let reply = conn.call(&resp(&["MSET", k(b3), "x", k(a3), "yy", k(b2), "zzz"]));
    assert_eq!(reply, b"+OK\r\n");
    traffic[0].exchange(&resp(&["mset", k(a3), "yy"]), b"+OK\r\n");
    traffic[1].exchange(&resp(&["mset", k(b3), "x", k(b2), "zzz"]), b"+OK\r\n");
    fragments += 2;

    let mut expected = Figures::new()
        .one_quiet_client()
        .pool("fragments", fragments);
    for (s, name) in NAMES.iter().enumerate() {
        expected = expected
            .traffic(name, traffic[s])
            .idle(name)
            .no_failures(name);
    }
    wait_for(&proxy, &expected);
}

#[test]
fn memcached_multi_get_counts_one_fragment_per_server_part() {
    let proto = Proto::Memcache;
    let backends = Backend::start_n(proto, 2);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    let mut conn = Conn::connect(proto, port);
    let mut traffic = [Traffic::default(); 2];
    let (keys, holders) = spread_keys(proto, &mut conn, &backends, &mut traffic);
    let on_a = keys_on(&holders, 0);
    let on_b = keys_on(&holders, 1);
    let k = |i: usize| keys[i].as_str();
    let block = |i: usize| {
        let v = value_for(i);
        format!("VALUE {} 0 {}\r\n{v}\r\n", keys[i], v.len())
    };
    let mut fragments = 0;

    // get over both servers: one `get` line per server, keys in request order (walnut's
    // line has no space before CRLF, docs/COMPATIBILITY.md).
    let order = [on_b[0], on_a[0], on_b[1], on_a[1], on_a[2]];
    let names: Vec<&str> = order.iter().map(|&i| k(i)).collect();
    let reply = conn.call(format!("get {}\r\n", names.join(" ")).as_bytes());
    let all: String = order.iter().map(|&i| block(i)).collect();
    assert_eq!(escape(&reply), escape(format!("{all}END\r\n").as_bytes()));
    let part = |indexes: &[usize]| -> (Vec<u8>, Vec<u8>) {
        let names: Vec<&str> = indexes.iter().map(|&i| k(i)).collect();
        let blocks: String = indexes.iter().map(|&i| block(i)).collect();
        (
            format!("get {}\r\n", names.join(" ")).into_bytes(),
            format!("{blocks}END\r\n").into_bytes(),
        )
    };
    let (frame, reply_a) = part(&[on_a[0], on_a[1], on_a[2]]);
    traffic[0].exchange(&frame, &reply_a);
    let (frame, reply_b) = part(&[on_b[0], on_b[1]]);
    traffic[1].exchange(&frame, &reply_b);
    fragments += 2;

    // Every key on one server: forwarded whole, no fragment.
    let frame = format!("get {} {}\r\n", k(on_a[1]), k(on_a[0])).into_bytes();
    let reply = conn.call(&frame);
    assert_eq!(
        escape(&reply),
        escape(format!("{}{}END\r\n", block(on_a[1]), block(on_a[0])).as_bytes())
    );
    traffic[0].exchange(&frame, &reply);

    // A key missing from one server (deleted there directly): that part answers just END.
    backends[1].forget(k(on_b[2]));
    let reply = conn.call(format!("get {} {}\r\n", k(on_a[2]), k(on_b[2])).as_bytes());
    assert_eq!(
        escape(&reply),
        escape(format!("{}END\r\n", block(on_a[2])).as_bytes())
    );
    let (frame, reply_a) = part(&[on_a[2]]);
    traffic[0].exchange(&frame, &reply_a);
    traffic[1].exchange(format!("get {}\r\n", k(on_b[2])).as_bytes(), b"END\r\n");
    fragments += 2;

    let mut expected = Figures::new()
        .one_quiet_client()
        .pool("fragments", fragments);
    for (s, name) in NAMES.iter().enumerate() {
        expected = expected
            .traffic(name, traffic[s])
            .idle(name)
            .no_failures(name);
    }
    wait_for(&proxy, &expected);
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// Three clients connect (client_connections 3); one closes normally, one sends QUIT (both
/// client_eof), one sends malformed framing (client_err). `total_connections` and
/// `curr_connections` count the listener, the clients and the server connection. nutcracker
/// shows the same figures at every step.
#[test]
fn redis_client_figures_follow_clients_as_in_nutcracker() {
    let proto = Proto::Redis;
    for kind in BOTH {
        let backends = Backend::start_n(proto, 1);
        let port = free_port();
        let proxy = start_proxy(
            kind,
            &pool_config(proto, POOL, port, &lines_of(&backends), ""),
            &[port],
        );
        // The listener, and the readiness check that has come and gone.
        let mut expected = Figures::new()
            .at("total_connections", 1 + READINESS_CHECK)
            .at("curr_connections", 1)
            .pool("client_connections", 0)
            .pool("client_eof", READINESS_CHECK)
            .pool("client_err", 0)
            .pool("forward_error", 0)
            .server("a", "server_connections", 0);
        wait_for(&proxy, &expected);

        let mut c1 = Conn::connect(proto, port);
        let mut c2 = Conn::connect(proto, port);
        let mut c3 = Conn::connect(proto, port);
        expected = expected
            .at("total_connections", 4 + READINESS_CHECK)
            .at("curr_connections", 4)
            .pool("client_connections", 3);
        wait_for(&proxy, &expected);

        let frame = set_frame(proto, "client", "v");
        assert_eq!(c1.call(&frame), stored(proto));
        let mut traffic = Traffic::default();
        traffic.exchange(&frame, &stored(proto));
        expected = expected
            .at("total_connections", 5 + READINESS_CHECK)
            .at("curr_connections", 5)
            .server("a", "server_connections", 1)
            .traffic("a", traffic);
        wait_for(&proxy, &expected);

        drop(c1);
        expected = expected
            .at("curr_connections", 4)
            .pool("client_connections", 2)
            .pool("client_eof", READINESS_CHECK + 1);
        wait_for(&proxy, &expected);

        c2.send(&resp(&["QUIT"]));
        assert_eq!(escape(&c2.read_to_close()), escape(b""), "{kind:?}: QUIT");
        expected = expected
            .at("curr_connections", 3)
            .pool("client_connections", 1)
            .pool("client_eof", READINESS_CHECK + 2);
        wait_for(&proxy, &expected);

        c3.send(b"*1\r\n$x\r\n");
        c3.read_to_close();
        expected = expected
            .at("curr_connections", 2)
            .pool("client_connections", 0)
            .pool("client_err", 1);
        wait_for(&proxy, &expected);
    }
}

/// memcached clients: closing and `quit` are client_eof; a line that can never end (walnut
/// answers `CLIENT_ERROR line too long` and closes) is client_err; an unknown command is
/// answered `ERROR` and the client stays.
#[test]
fn memcached_client_figures_follow_clients() {
    let proto = Proto::Memcache;
    let backends = Backend::start_n(proto, 1);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    let mut clients: Vec<Conn> = (0..4).map(|_| Conn::connect(proto, port)).collect();
    // The listener and four clients, and the readiness check that has come and gone.
    let mut expected = Figures::new()
        .at("total_connections", 5 + READINESS_CHECK)
        .at("curr_connections", 5)
        .pool("client_connections", 4)
        .pool("client_eof", READINESS_CHECK)
        .pool("client_err", 0)
        .pool("forward_error", 0);
    wait_for(&proxy, &expected);

    let frame = set_frame(proto, "client", "v");
    assert_eq!(clients[0].call(&frame), stored(proto));
    let mut traffic = Traffic::default();
    traffic.exchange(&frame, &stored(proto));
    assert_eq!(clients[3].call(b"bogus\r\n"), b"ERROR\r\n");
    expected = expected
        .at("total_connections", 6 + READINESS_CHECK)
        .at("curr_connections", 6)
        .traffic("a", traffic);
    wait_for(&proxy, &expected);

    let mut c3 = clients.pop().unwrap();
    let mut c2 = clients.pop().unwrap();
    let mut c1 = clients.pop().unwrap();
    drop(clients);
    c1.send(b"quit\r\n");
    assert_eq!(escape(&c1.read_to_close()), escape(b""));
    expected = expected
        .at("curr_connections", 4)
        .pool("client_connections", 2)
        .pool("client_eof", READINESS_CHECK + 2);
    wait_for(&proxy, &expected);

    c2.send(format!("set {}", "k".repeat(4000)).as_bytes());
    assert_eq!(
        escape(&c2.read_to_close()),
        escape(b"CLIENT_ERROR line too long\r\n")
    );
    expected = expected
        .at("curr_connections", 3)
        .pool("client_connections", 1)
        .pool("client_err", 1);
    wait_for(&proxy, &expected);

    c3.send(b"quit\r\n");
    c3.read_to_close();
    expected = expected
        .at("curr_connections", 2)
        .pool("client_connections", 0)
        .pool("client_eof", READINESS_CHECK + 3);
    wait_for(&proxy, &expected);
}

// ---------------------------------------------------------------------------------------
// Server failures
// ---------------------------------------------------------------------------------------

/// Server b is killed: its open connection reads EOF (server_eof 1, server_connections 0).
/// Each of three requests for b's keys then meets a refused connect: server_err +1 and a
/// proxy-generated error reply (forward_error +1) each. nutcracker shows the same figures.
/// With `count_refused`, the refused requests must also count in b's `requests` and
/// `request_bytes`, as nutcracker counts them (it counts a request when it forwards it).
fn killed_backend(proto: Proto, count_refused: bool) {
    for kind in BOTH {
        let mut backends = Backend::start_n(proto, 2);
        let port = free_port();
        let proxy = start_proxy(
            kind,
            &pool_config(proto, POOL, port, &lines_of(&backends), ""),
            &[port],
        );
        let mut conn = Conn::connect(proto, port);
        let mut traffic = [Traffic::default(); 2];
        let (keys, holders) = spread_keys(proto, &mut conn, &backends, &mut traffic);
        let mut expected = Figures::new().one_quiet_client();
        for (s, name) in NAMES.iter().enumerate() {
            expected = expected
                .traffic(name, traffic[s])
                .idle(name)
                .no_failures(name)
                .server(name, "server_connections", 1);
        }
        wait_for(&proxy, &expected);

        backends[1].kill();
        expected = expected
            .server("b", "server_eof", 1)
            .server("b", "server_connections", 0);
        wait_for(&proxy, &expected);

        for &i in keys_on(&holders, 1).iter().take(3) {
            let frame = get_frame(proto, &keys[i]);
            let reply = conn.call(&frame);
            assert_eq!(
                escape(&reply),
                escape(&proxy_error(proto, "Connection refused")),
                "{kind:?}"
            );
            traffic[1].unanswered(&frame);
        }
        expected = expected
            .server("b", "server_err", 3)
            .pool("forward_error", 3)
            .traffic("b", traffic[1]);
        if !count_refused {
            expected
                .0
                .retain(|(path, _)| path != "p/b/requests" && path != "p/b/request_bytes");
        }
        wait_for(&proxy, &expected);
    }
}

#[test]
fn redis_a_killed_backend_counts_server_eof_then_server_err_as_nutcracker_does() {
    killed_backend(Proto::Redis, false);
}

#[test]
fn memcached_a_killed_backend_counts_server_eof_then_server_err_as_nutcracker_does() {
    killed_backend(Proto::Memcache, false);
}

#[test]
fn redis_requests_refused_by_a_dead_backend_count_as_requests_as_in_nutcracker() {
    killed_backend(Proto::Redis, true);
}

#[test]
fn memcached_requests_refused_by_a_dead_backend_count_as_requests_as_in_nutcracker() {
    killed_backend(Proto::Memcache, true);
}

/// A SIGSTOPped backend with `timeout:`: the request is sent, times out, and the connection
/// closes: server_timedout 1, forward_error 1, requests one more than responses, queues
/// empty. The next request reconnects and is answered. nutcracker shows the same figures.
fn timed_out(proto: Proto) {
    for kind in BOTH {
        let backends = Backend::start_n(proto, 1);
        let port = free_port();
        let proxy = start_proxy(
            kind,
            &pool_config(proto, POOL, port, &lines_of(&backends), "  timeout: 2500\n"),
            &[port],
        );
        let mut conn = Conn::connect(proto, port);
        let mut traffic = Traffic::default();
        let set = set_frame(proto, "slow", "value");
        let reply = conn.call(&set);
        assert_eq!(reply, stored(proto));
        traffic.exchange(&set, &reply);
        let mut expected = Figures::new()
            .one_quiet_client()
            .traffic("a", traffic)
            .idle("a")
            .no_failures("a")
            .server("a", "server_connections", 1);
        wait_for(&proxy, &expected);

        backends[0].pause();
        let get = get_frame(proto, "slow");
        let reply = conn.call(&get);
        backends[0].resume();
        assert_eq!(
            escape(&reply),
            escape(&proxy_error(proto, "Connection timed out")),
            "{kind:?}"
        );
        traffic.unanswered(&get);
        expected = expected
            .traffic("a", traffic)
            .server("a", "server_timedout", 1)
            .server("a", "server_connections", 0)
            .pool("forward_error", 1);
        wait_for(&proxy, &expected);

        let reply = conn.call(&get);
        assert_eq!(
            escape(&reply),
            escape(&value_reply(proto, "slow", Some("value")))
        );
        traffic.exchange(&get, &reply);
        expected = expected
            .traffic("a", traffic)
            .server("a", "server_connections", 1);
        wait_for(&proxy, &expected);
    }
}

#[test]
fn redis_a_frozen_backend_past_its_timeout_counts_server_timedout_as_nutcracker_does() {
    timed_out(Proto::Redis);
}

#[test]
fn memcached_a_frozen_backend_past_its_timeout_counts_server_timedout_as_nutcracker_does() {
    timed_out(Proto::Memcache);
}

/// With `auto_eject_hosts` and `server_failure_limit: 1`, killing server b ejects it once:
/// server_ejects 1 and server_ejected_at a µs timestamp between the kill and the moment the
/// stats showed it. b's keys then go to a. nutcracker shows the same figures.
fn ejected(proto: Proto) {
    let extra =
        "  auto_eject_hosts: true\n  server_failure_limit: 1\n  server_retry_timeout: 60000\n";
    for kind in BOTH {
        let mut backends = Backend::start_n(proto, 2);
        let port = free_port();
        let proxy = start_proxy(
            kind,
            &pool_config(proto, POOL, port, &lines_of(&backends), extra),
            &[port],
        );
        let mut conn = Conn::connect(proto, port);
        let mut traffic = [Traffic::default(); 2];
        let (keys, holders) = spread_keys(proto, &mut conn, &backends, &mut traffic);
        let mut expected = Figures::new().one_quiet_client();
        for (s, name) in NAMES.iter().enumerate() {
            expected = expected
                .traffic(name, traffic[s])
                .idle(name)
                .no_failures(name)
                .server(name, "server_connections", 1);
        }
        wait_for(&proxy, &expected);

        let before = now_micros();
        backends[1].kill();
        let doc = wait_until(&proxy, "server b ejected", |doc| {
            figure(doc, "p/b/server_ejected_at").is_some_and(|at| at > 0)
        });
        let after = now_micros();
        let at = figure(&doc, "p/b/server_ejected_at").unwrap();
        assert!(
            before <= at && at <= after,
            "{kind:?}: server_ejected_at {at} is not between the kill ({before}) and now ({after})"
        );

        for &i in keys_on(&holders, 1).iter().take(2) {
            let frame = get_frame(proto, &keys[i]);
            let reply = conn.call(&frame);
            assert_eq!(
                escape(&reply),
                escape(&value_reply(proto, &keys[i], None)),
                "{kind:?}: b's key {} now lives on a",
                keys[i]
            );
            traffic[0].exchange(&frame, &reply);
        }
        expected = expected
            .pool("server_ejects", 1)
            .traffic("a", traffic[0])
            .server("b", "server_eof", 1)
            .server("b", "server_connections", 0)
            .server("b", "server_ejected_at", at);
        wait_for(&proxy, &expected);
    }
}

#[test]
fn redis_auto_eject_counts_server_ejects_and_stamps_server_ejected_at_as_nutcracker_does() {
    ejected(Proto::Redis);
}

#[test]
fn memcached_auto_eject_counts_server_ejects_and_stamps_server_ejected_at_as_nutcracker_does() {
    ejected(Proto::Memcache);
}

/// Each request for a key on a server nobody listens on gets a proxy-generated error:
/// forward_error counts them, the dead server's server_err counts the refused connects.
/// nutcracker shows the same figures.
fn forward_errors(proto: Proto) {
    for kind in BOTH {
        let backends = Backend::start_n(proto, 1);
        let port = free_port();
        let lines = vec![backends[0].line("a"), dead_line("b")];
        let proxy = start_proxy(kind, &pool_config(proto, POOL, port, &lines, ""), &[port]);
        let mut conn = Conn::connect(proto, port);
        let mut traffic = Traffic::default();
        let mut errors = 0;
        for (i, key) in key_names("fe", 12).iter().enumerate() {
            let frame = set_frame(proto, key, &value_for(i));
            let reply = conn.call(&frame);
            if reply == stored(proto) {
                traffic.exchange(&frame, &reply);
            } else {
                assert_eq!(
                    escape(&reply),
                    escape(&proxy_error(proto, "Connection refused"))
                );
                errors += 1;
            }
        }
        assert!(
            errors > 0 && traffic.requests > 0,
            "the keys must live on both servers"
        );
        let expected = Figures::new()
            .one_quiet_client()
            .pool("forward_error", errors)
            .traffic("a", traffic)
            .idle("a")
            .no_failures("a")
            .server("a", "server_connections", 1)
            .idle("b")
            .server("b", "server_err", errors)
            .server("b", "server_eof", 0)
            .server("b", "server_timedout", 0)
            .server("b", "server_connections", 0)
            .server("b", "responses", 0)
            .server("b", "response_bytes", 0);
        wait_for(&proxy, &expected);
    }
}

#[test]
fn redis_forward_error_counts_each_proxy_generated_error_as_nutcracker_does() {
    forward_errors(Proto::Redis);
}

#[test]
fn memcached_forward_error_counts_each_proxy_generated_error_as_nutcracker_does() {
    forward_errors(Proto::Memcache);
}

/// Multi-key requests over two servers nobody listens on: every part fails, the client gets
/// one proxy-generated error per request, and forward_error counts each, as nutcracker does.
fn split_forward_errors(proto: Proto) {
    let keys = key_names("split", 8);
    let frames: Vec<Vec<u8>> = match proto {
        // nutcracker closes the client after a failed MGET, so it goes last.
        Proto::Redis => vec![
            resp(
                &[
                    &["DEL"],
                    keys.iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice(),
                ]
                .concat(),
            ),
            resp(
                &[
                    &["MGET"],
                    keys.iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice(),
                ]
                .concat(),
            ),
        ],
        Proto::Memcache => vec![format!("get {}\r\n", keys.join(" ")).into_bytes()],
    };
    for kind in BOTH {
        let port = free_port();
        let lines = vec![dead_line("a"), dead_line("b")];
        let proxy = start_proxy(kind, &pool_config(proto, POOL, port, &lines, ""), &[port]);
        let mut conn = Conn::connect(proto, port);
        for frame in &frames {
            let reply = conn.call(frame);
            assert_eq!(
                escape(&reply),
                escape(&proxy_error(proto, "Connection refused")),
                "{kind:?}: reply to {}",
                escape(frame)
            );
        }
        let n = frames.len() as u64;
        // Every request met a refused connect on each server: it was split over both.
        let expected = Figures::new()
            .pool("forward_error", n)
            .server("a", "server_err", n)
            .server("b", "server_err", n);
        wait_for(&proxy, &expected);
    }
}

#[test]
fn redis_forward_error_counts_a_failed_split_request_as_nutcracker_does() {
    split_forward_errors(Proto::Redis);
}

#[test]
fn memcached_forward_error_counts_a_failed_multi_get_as_nutcracker_does() {
    split_forward_errors(Proto::Memcache);
}

// ---------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------

/// Requests to a SIGSTOPped backend (no timeout) sit in out_queue with their exact bytes;
/// once it resumes and answers, every queue gauge is back to 0. nutcracker shows the same
/// figures.
fn frozen_queues(proto: Proto) {
    for kind in BOTH {
        let backends = Backend::start_n(proto, 1);
        let port = free_port();
        let proxy = start_proxy(
            kind,
            &pool_config(proto, POOL, port, &lines_of(&backends), ""),
            &[port],
        );
        let mut c1 = Conn::connect(proto, port);
        let mut c2 = Conn::connect(proto, port);
        let mut traffic = Traffic::default();
        let set = set_frame(proto, "queued", "value");
        let reply = c1.call(&set);
        assert_eq!(reply, stored(proto));
        traffic.exchange(&set, &reply);
        let mut expected = Figures::new()
            .pool("client_connections", 2)
            .traffic("a", traffic)
            .idle("a")
            .no_failures("a");
        wait_for(&proxy, &expected);

        backends[0].pause();
        let gets: Vec<Vec<u8>> = (0..16).map(|_| get_frame(proto, "queued")).collect();
        let sets: Vec<Vec<u8>> = (0..4)
            .map(|i| set_frame(proto, &format!("queued:{i}"), &value_for(i)))
            .collect();
        c1.send(&gets.concat());
        c2.send(&sets.concat());
        let waiting: u64 = gets.iter().chain(&sets).map(|f| f.len() as u64).sum();
        expected = expected
            .server("a", "requests", 21)
            .server("a", "request_bytes", traffic.request_bytes + waiting)
            .server("a", "out_queue", 20)
            .server("a", "out_queue_bytes", waiting);
        wait_for(&proxy, &expected);

        backends[0].resume();
        for (frame, reply) in gets.iter().zip(c1.read(gets.len())) {
            assert_eq!(reply, value_reply(proto, "queued", Some("value")));
            traffic.exchange(frame, &reply);
        }
        for (frame, reply) in sets.iter().zip(c2.read(sets.len())) {
            assert_eq!(reply, stored(proto));
            traffic.exchange(frame, &reply);
        }
        expected = expected.traffic("a", traffic).idle("a");
        wait_for(&proxy, &expected);
    }
}

#[test]
fn redis_queue_gauges_hold_requests_to_a_frozen_backend_and_return_to_zero() {
    frozen_queues(Proto::Redis);
}

#[test]
fn memcached_queue_gauges_hold_requests_to_a_frozen_backend_and_return_to_zero() {
    frozen_queues(Proto::Memcache);
}

/// Four clients pipeline sets and gets at once over two servers: afterwards every queue gauge
/// is 0 and each server's figures are exactly its share of the traffic.
fn concurrent_traffic(proto: Proto) {
    let backends = Backend::start_n(proto, 2);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 100;
    let keys = key_names("busy", CLIENTS * PER_CLIENT);
    // (key index, request, reply)
    let exchanges: Vec<(usize, Vec<u8>, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let keys = &keys;
                scope.spawn(move || {
                    let mut conn = Conn::connect(proto, port);
                    let mine: Vec<usize> = (c * PER_CLIENT..(c + 1) * PER_CLIENT).collect();
                    let mut out = Vec::new();
                    for batch in mine.chunks(25) {
                        let frames: Vec<Vec<u8>> = batch
                            .iter()
                            .map(|&i| set_frame(proto, &keys[i], &value_for(i)))
                            .collect();
                        for ((&i, frame), reply) in
                            batch.iter().zip(&frames).zip(conn.call_all(&frames))
                        {
                            assert_eq!(reply, stored(proto));
                            out.push((i, frame.clone(), reply));
                        }
                    }
                    for batch in mine.chunks(25) {
                        let frames: Vec<Vec<u8>> =
                            batch.iter().map(|&i| get_frame(proto, &keys[i])).collect();
                        for ((&i, frame), reply) in
                            batch.iter().zip(&frames).zip(conn.call_all(&frames))
                        {
                            assert_eq!(reply, value_reply(proto, &keys[i], Some(&value_for(i))));
                            out.push((i, frame.clone(), reply));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let holders = holders(&backends, &keys);
    let mut traffic = [Traffic::default(); 2];
    for (i, frame, reply) in &exchanges {
        traffic[holders[*i]].exchange(frame, reply);
    }
    let mut expected = Figures::new()
        .pool("client_connections", 0)
        .pool("client_eof", READINESS_CHECK + CLIENTS as u64)
        .pool("client_err", 0)
        .pool("forward_error", 0)
        .pool("fragments", 0);
    for (s, name) in NAMES.iter().enumerate() {
        expected = expected
            .traffic(name, traffic[s])
            .idle(name)
            .no_failures(name);
    }
    wait_for(&proxy, &expected);
}

#[test]
fn redis_queue_gauges_return_to_zero_after_concurrent_pipelined_traffic() {
    concurrent_traffic(Proto::Redis);
}

#[test]
fn memcached_queue_gauges_return_to_zero_after_concurrent_pipelined_traffic() {
    concurrent_traffic(Proto::Memcache);
}

/// A `noreply` request is sent without `noreply` and its reply dropped
/// (docs/COMPATIBILITY.md), so it counts as a request with the bytes sent and a response with
/// the bytes dropped, and leaves nothing in the queues.
#[test]
fn memcached_noreply_requests_are_counted_as_sent_and_leave_the_queues_empty() {
    let proto = Proto::Memcache;
    let backends = Backend::start_n(proto, 1);
    let port = free_port();
    let proxy = start_proxy(
        Kind::Walnut,
        &pool_config(proto, POOL, port, &lines_of(&backends), ""),
        &[port],
    );
    let mut conn = Conn::connect(proto, port);
    let mut traffic = Traffic::default();
    let mut request = Vec::new();
    for i in 0..3 {
        let (key, value) = (format!("quiet:{i}"), value_for(i));
        request.extend_from_slice(
            format!("set {key} 0 0 {} noreply\r\n{value}\r\n", value.len()).as_bytes(),
        );
        traffic.exchange(&set_frame(proto, &key, &value), b"STORED\r\n");
    }
    let get = get_frame(proto, "quiet:2");
    request.extend_from_slice(&get);
    conn.send(&request);
    let reply = conn.read(1).remove(0);
    assert_eq!(
        escape(&reply),
        escape(&value_reply(proto, "quiet:2", Some(&value_for(2))))
    );
    traffic.exchange(&get, &reply);
    let expected = Figures::new()
        .one_quiet_client()
        .traffic("a", traffic)
        .idle("a")
        .no_failures("a");
    wait_for(&proxy, &expected);
}

// ---------------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------------

/// One sample line of an exposition.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The documented histogram buckets (`le`), +Inf last.
const BUCKETS: [f64; 18] = [
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name{label="value",…} value`, with OpenMetrics' escapes in label values and no timestamp.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').ok_or("a label without '='")?;
            let label = &inner[..eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            inner = inner[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            let mut value = String::new();
            let mut chars = inner.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("an unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("a bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            inner = &inner[end + 1..];
            if let Some(after) = inner.strip_prefix(',') {
                if after.starts_with('}') {
                    return Err("a trailing ','".into());
                }
                inner = after;
            } else if !inner.starts_with('}') {
                return Err("expected ',' or '}' after a label".into());
            }
        }
    }
    let text = rest
        .strip_prefix(' ')
        .ok_or("no single space before the value")?;
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ if !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            text.parse()
                .map_err(|e| format!("bad value {text:?}: {e}"))?
        }
        _ => {
            return Err(format!(
                "bad value {text:?} (no timestamps or exemplars expected)"
            ))
        }
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Checks an OpenMetrics text exposition line by line: descriptors (`# HELP`, `# TYPE`,
/// `# UNIT`) before their family's samples, one TYPE per family, families contiguous, every
/// sample named as its family's type allows, well-formed labels and values, no duplicate
/// series, `# EOF` last. Histograms: the documented buckets in order, cumulative counts,
/// `+Inf` equal to `_count`, a `_sum`. Returns each family's type and every sample.
fn parse_strictly(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("the exposition does not end with \"# EOF\\n\":\n{text}"));
    assert!(!body.contains('\r'), "a carriage return in the exposition");
    #[derive(Default)]
    struct Family {
        kind: Option<String>,
        help: bool,
        unit: bool,
        samples: usize,
    }
    let mut families: Vec<(String, Family)> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut series = BTreeSet::new();
    for (n, line) in body.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        assert!(!line.is_empty(), "{at}: an empty line");
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest
                .strip_prefix(' ')
                .unwrap_or_else(|| panic!("{at}: '#' must be followed by one space"));
            let mut words = rest.splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            let name = words
                .next()
                .unwrap_or_else(|| panic!("{at}: no metric name"));
            let arg = words
                .next()
                .unwrap_or_else(|| panic!("{at}: nothing after the name"));
            assert!(is_metric_name(name), "{at}: bad family name");
            if families.last().map(|(f, _)| f.as_str()) != Some(name) {
                assert!(
                    families.iter().all(|(f, _)| f != name),
                    "{at}: family {name} described twice (or its lines are not together)"
                );
                families.push((name.to_string(), Family::default()));
            }
            let family = &mut families.last_mut().unwrap().1;
            assert_eq!(
                family.samples, 0,
                "{at}: a descriptor after the family's samples"
            );
            match keyword {
                "TYPE" => {
                    assert!(family.kind.is_none(), "{at}: a second TYPE");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "gaugehistogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&arg),
                        "{at}: unknown type"
                    );
                    family.kind = Some(arg.to_string());
                }
                "HELP" => {
                    assert!(!family.help, "{at}: a second HELP");
                    family.help = true;
                }
                "UNIT" => {
                    assert!(!family.unit, "{at}: a second UNIT");
                    assert!(
                        name.ends_with(&format!("_{arg}")),
                        "{at}: a family with unit {arg} must be named …_{arg}"
                    );
                    family.unit = true;
                }
                other => panic!("{at}: unknown descriptor {other:?}"),
            }
            continue;
        }
        let (family_name, family) = families
            .last_mut()
            .unwrap_or_else(|| panic!("{at}: a sample before any family"));
        let kind = family
            .kind
            .clone()
            .unwrap_or_else(|| panic!("{at}: family {family_name} has no TYPE"));
        let sample = parse_sample(line).unwrap_or_else(|e| panic!("{at}: {e}"));
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" | "unknown" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            other => panic!("{at}: walnut has no {other} metrics"),
        };
        assert!(
            suffixes
                .iter()
                .any(|s| sample.name == format!("{family_name}{s}")),
            "{at}: sample {} does not belong to {kind} family {family_name}",
            sample.name
        );
        assert_eq!(
            sample.labels.contains_key("le"),
            sample.name.ends_with("_bucket"),
            "{at}: `le` belongs to buckets only"
        );
        if kind != "gauge" {
            assert!(
                sample.value.is_finite() && sample.value >= 0.0,
                "{at}: a {kind} value must be finite and not negative"
            );
        }
        assert!(
            series.insert((sample.name.clone(), format!("{:?}", sample.labels))),
            "{at}: the same series twice"
        );
        family.samples += 1;
        samples.push(sample);
    }
    let kinds: BTreeMap<String, String> = families
        .into_iter()
        .map(|(name, family)| {
            let kind = family
                .kind
                .unwrap_or_else(|| panic!("family {name} has no TYPE"));
            (name, kind)
        })
        .collect();
    for (family, _) in kinds.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket_name = format!("{family}_bucket");
        let mut by_series: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| s.name == bucket_name) {
            let mut labels = sample.labels.clone();
            labels.remove("le");
            by_series
                .entry(format!("{labels:?}"))
                .or_default()
                .push(sample);
        }
        for (labels, buckets) in &by_series {
            let bounds: Vec<f64> = buckets
                .iter()
                .map(|s| {
                    let le = &s.labels["le"];
                    if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()
                            .unwrap_or_else(|e| panic!("{family}{labels}: le {le:?}: {e}"))
                    }
                })
                .collect();
            assert_eq!(bounds, BUCKETS, "{family}{labels}: the buckets");
            let counts: Vec<f64> = buckets.iter().map(|s| s.value).collect();
            assert!(
                counts.windows(2).all(|w| w[0] <= w[1]),
                "{family}{labels}: bucket counts are not cumulative: {counts:?}"
            );
            let with = |suffix: &str| -> f64 {
                let name = format!("{family}{suffix}");
                let found: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| {
                        let mut labels = buckets[0].labels.clone();
                        labels.remove("le");
                        s.name == name && s.labels == labels
                    })
                    .collect();
                assert_eq!(found.len(), 1, "{name}{labels}: expected one sample");
                found[0].value
            };
            assert_eq!(
                with("_count"),
                counts[counts.len() - 1],
                "{family}{labels}: _count against the +Inf bucket"
            );
            assert!(with("_sum") >= 0.0);
        }
    }
    (kinds, samples)
}

/// The same exposition through prometheus-parse: every sample the strict check found is
/// there with the same value, histograms with the same buckets.
fn cross_check_with_prometheus_parse(
    text: &str,
    samples: &[Sample],
    kinds: &BTreeMap<String, String>,
) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition");
    let labels_of = |s: &prometheus_parse::Sample| -> BTreeMap<String, String> {
        s.labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut expected_samples = 0;
    for sample in samples.iter().filter(|s| !s.name.ends_with("_bucket")) {
        expected_samples += 1;
        let found: Vec<f64> = scrape
            .samples
            .iter()
            .filter(|p| p.metric == sample.name && labels_of(p) == sample.labels)
            .map(|p| match p.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{}: prometheus-parse read {other:?}", sample.name),
            })
            .collect();
        assert_eq!(
            found,
            vec![sample.value],
            "{} {:?} in prometheus-parse",
            sample.name,
            sample.labels
        );
    }
    for (family, _) in kinds.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket_name = format!("{family}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket_name) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            series.entry(labels).or_default().push((bound, s.value));
        }
        for (labels, buckets) in series {
            expected_samples += 1;
            let found: Vec<Vec<(f64, f64)>> = scrape
                .samples
                .iter()
                .filter(|p| p.metric == *family && labels_of(p) == labels)
                .map(|p| match &p.value {
                    prometheus_parse::Value::Histogram(h) => {
                        h.iter().map(|b| (b.less_than, b.count)).collect()
                    }
                    other => panic!("{family}: prometheus-parse read {other:?}"),
                })
                .collect();
            assert_eq!(
                found,
                vec![buckets],
                "{family} {labels:?} in prometheus-parse"
            );
        }
    }
    assert_eq!(
        scrape.samples.len(),
        expected_samples,
        "prometheus-parse found other samples than the strict check"
    );
}

/// `GET path` over HTTP/1.1; the status line, the headers (lower-case names) and the body.
fn http_get(port: u16, path: &str) -> (String, BTreeMap<String, String>, String) {
    let mut stream = TcpStream::connect(local(port)).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the HTTP reply");
    let text = String::from_utf8(raw).expect("the HTTP reply is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers: BTreeMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("a header line");
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    if let Some(length) = headers.get("content-length") {
        assert_eq!(
            length.parse::<usize>().unwrap(),
            body.len(),
            "Content-Length"
        );
    }
    (status, headers, body.to_string())
}

/// The scraped metrics: strictly parsed, cross-checked, indexed.
struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    fn scrape(port: u16) -> Metrics {
        let (status, headers, body) = http_get(port, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let (kinds, samples) = parse_strictly(&body);
        cross_check_with_prometheus_parse(&body, &samples, &kinds);
        Metrics { samples }
    }

    /// The value of the one sample `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == labels)
            .map(|s| s.value)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{name} {labels:?}: expected one sample, found {found:?}"
        );
        found[0]
    }

    /// `walnut_pool_commands_total` of `pool`, by command.
    fn commands(&self, pool: &str) -> BTreeMap<String, u64> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == "walnut_pool_commands_total"
                    && s.labels.get("pool").map(String::as_str) == Some(pool)
            })
            .map(|s| {
                assert_eq!(s.labels.len(), 2, "{s:?}: pool and command labels only");
                (s.labels["command"].clone(), s.value as u64)
            })
            .collect()
    }
}

/// JSON pool figure → Prometheus name.
const POOL_METRICS: [(&str, &str); 6] = [
    ("client_eof", "walnut_pool_client_eof_total"),
    ("client_err", "walnut_pool_client_err_total"),
    ("client_connections", "walnut_pool_client_connections"),
    ("server_ejects", "walnut_pool_server_ejects_total"),
    ("forward_error", "walnut_pool_forward_error_total"),
    ("fragments", "walnut_pool_fragments_total"),
];

/// JSON server figure → Prometheus name (`server_ejected_at` is in seconds there).
const SERVER_METRICS: [(&str, &str); 12] = [
    ("server_eof", "walnut_server_eof_total"),
    ("server_err", "walnut_server_err_total"),
    ("server_timedout", "walnut_server_timedout_total"),
    ("server_connections", "walnut_server_connections"),
    ("requests", "walnut_server_requests_total"),
    ("request_bytes", "walnut_server_request_bytes_total"),
    ("responses", "walnut_server_responses_total"),
    ("response_bytes", "walnut_server_response_bytes_total"),
    ("in_queue", "walnut_server_in_queue"),
    ("in_queue_bytes", "walnut_server_in_queue_bytes"),
    ("out_queue", "walnut_server_out_queue"),
    ("out_queue_bytes", "walnut_server_out_queue_bytes"),
];

/// walnut with a Redis pool `r` (servers ra, rb) and a memcached pool `m` (ma, mb), its
/// metrics on the returned port.
fn walnut_with_metrics(redis: &[Backend], memcached: &[Backend]) -> (ProxyProcess, u16, u16, u16) {
    let (redis_port, memcached_port, metrics_port) = (free_port(), free_port(), free_port());
    let config = format!(
        "{}{}",
        pool_config(
            Proto::Redis,
            "r",
            redis_port,
            &[redis[0].line("ra"), redis[1].line("rb")],
            ""
        ),
        pool_config(
            Proto::Memcache,
            "m",
            memcached_port,
            &[memcached[0].line("ma"), memcached[1].line("mb")],
            ""
        ),
    );
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let proxy = ProxyProcess::walnut_with(
        &config,
        &[
            local(redis_port),
            local(memcached_port),
            local(metrics_port),
        ],
        &["-i", "100", "--metrics", &metrics_addr],
    );
    (proxy, redis_port, memcached_port, metrics_port)
}

/// Known traffic through a Redis pool and a memcached pool, then one scrape: the text parses
/// strictly; each server's latency histogram counts exactly the requests it answered, each
/// pool's counts exactly the client requests (local replies included), the per-command counts
/// are exact, and every figure equals the stats JSON's.
#[test]
fn metrics_parse_strictly_and_histograms_count_the_requests_sent() {
    let redis = Backend::start_n(Proto::Redis, 2);
    let memcached = Backend::start_n(Proto::Memcache, 2);
    let (proxy, redis_port, memcached_port, metrics_port) = walnut_with_metrics(&redis, &memcached);
    let servers = [("r", ["ra", "rb"]), ("m", ["ma", "mb"])];
    let mut server_requests: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut client_requests: BTreeMap<&str, u64> = BTreeMap::new();
    let mut commands: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let mut count = |pool: &'static str, command: &str, n: u64| {
        *client_requests.entry(pool).or_default() += n;
        *commands
            .entry(pool)
            .or_default()
            .entry(command.to_string())
            .or_default() += n;
    };

    // Redis: SET and GET of 10 keys, 3 PINGs answered by walnut, one MGET of all 10 keys.
    let mut conn = Conn::connect(Proto::Redis, redis_port);
    let keys = key_names("prom", 10);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            conn.call(&set_frame(Proto::Redis, key, &value_for(i))),
            b"+OK\r\n"
        );
    }
    let gets: Vec<Vec<u8>> = keys.iter().map(|k| get_frame(Proto::Redis, k)).collect();
    conn.call_all(&gets);
    for _ in 0..3 {
        assert_eq!(conn.call(&resp(&["PING"])), b"+PONG\r\n");
    }
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values: Vec<Option<String>> = (0..keys.len()).map(|i| Some(value_for(i))).collect();
    assert_eq!(
        escape(&conn.call(&resp(&[&["MGET"], names.as_slice()].concat()))),
        escape(&resp_array(&values))
    );
    count("r", "set", 10);
    count("r", "get", 10);
    count("r", "ping", 3);
    count("r", "mget", 1);
    let holders_r = holders(&redis, &keys);
    for &h in &holders_r {
        *server_requests.entry(("r", ["ra", "rb"][h])).or_default() += 2;
    }
    for s in holders_r.iter().collect::<BTreeSet<_>>() {
        *server_requests.entry(("r", ["ra", "rb"][*s])).or_default() += 1;
    }

    // memcached: set and get of 8 keys, touch of 2, one multi-key get of all 8.
    let mut conn_m = Conn::connect(Proto::Memcache, memcached_port);
    let keys = key_names("prom", 8);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            conn_m.call(&set_frame(Proto::Memcache, key, &value_for(i))),
            b"STORED\r\n"
        );
    }
    let gets: Vec<Vec<u8>> = keys.iter().map(|k| get_frame(Proto::Memcache, k)).collect();
    conn_m.call_all(&gets);
    for key in &keys[..2] {
        assert_eq!(
            conn_m.call(format!("touch {key} 100\r\n").as_bytes()),
            b"TOUCHED\r\n"
        );
    }
    conn_m.call(format!("get {}\r\n", keys.join(" ")).as_bytes());
    count("m", "set", 8);
    count("m", "get", 9);
    count("m", "touch", 2);
    let holders_m = holders(&memcached, &keys);
    for (k, &h) in holders_m.iter().enumerate() {
        let touches = u64::from(k < 2);
        *server_requests.entry(("m", ["ma", "mb"][h])).or_default() += 2 + touches;
    }
    for s in holders_m.iter().collect::<BTreeSet<_>>() {
        *server_requests.entry(("m", ["ma", "mb"][*s])).or_default() += 1;
    }

    let mut expected = Figures::new();
    for ((pool, server), n) in &server_requests {
        for figure in ["requests", "responses"] {
            expected = expected.at(&format!("{pool}/{server}/{figure}"), *n);
        }
        for figure in ["in_queue", "in_queue_bytes", "out_queue", "out_queue_bytes"] {
            expected = expected.at(&format!("{pool}/{server}/{figure}"), 0);
        }
    }
    assert_eq!(server_requests.len(), 4, "every server got traffic");
    let doc = wait_for(&proxy, &expected);
    let metrics = Metrics::scrape(metrics_port);

    for (pool, names) in servers {
        let pool_labels = [("pool", pool)];
        assert_eq!(
            metrics.get("walnut_pool_request_latency_seconds_count", &pool_labels),
            client_requests[pool] as f64,
            "pool {pool}: requests in the pool latency histogram"
        );
        assert_eq!(
            metrics.commands(pool),
            commands[pool],
            "pool {pool}: requests by command"
        );
        for (figure_name, metric) in POOL_METRICS {
            assert_eq!(
                metrics.get(metric, &pool_labels),
                figure(&doc, &format!("{pool}/{figure_name}")).unwrap() as f64,
                "{metric} of pool {pool} against the JSON"
            );
        }
        for server in names {
            let labels = [("pool", pool), ("server", server)];
            let n = server_requests[&(pool, server)] as f64;
            assert_eq!(
                metrics.get("walnut_server_latency_seconds_count", &labels),
                n,
                "{pool}/{server}: requests in the server latency histogram"
            );
            for (figure_name, metric) in SERVER_METRICS {
                assert_eq!(
                    metrics.get(metric, &labels),
                    figure(&doc, &format!("{pool}/{server}/{figure_name}")).unwrap() as f64,
                    "{metric} of {pool}/{server} against the JSON"
                );
            }
            assert_eq!(
                metrics.get("walnut_server_ejected_at_seconds", &labels),
                0.0
            );
        }
    }
    assert_eq!(
        metrics.get("walnut_connections_created_total", &[]),
        figure(&doc, "total_connections").unwrap() as f64
    );
    assert_eq!(
        metrics.get("walnut_connections_current", &[]),
        figure(&doc, "curr_connections").unwrap() as f64
    );
    assert_eq!(
        metrics.get(
            "walnut_build_info",
            &[("service", "nutcracker"), ("version", "0.5.0")]
        ),
        1.0
    );
}

/// memcached requests are counted under their own command names.
#[test]
fn metrics_count_memcached_requests_under_their_own_command_names() {
    let redis = Backend::start_n(Proto::Redis, 2);
    let memcached = Backend::start_n(Proto::Memcache, 2);
    let (proxy, _, memcached_port, metrics_port) = walnut_with_metrics(&redis, &memcached);
    let mut conn = Conn::connect(Proto::Memcache, memcached_port);
    let requests: [(&str, &[u8], &[u8]); 13] = [
        ("set", b"set k 0 0 1\r\na\r\n", b"STORED\r\n"),
        ("add", b"add k2 0 0 1\r\nb\r\n", b"STORED\r\n"),
        ("replace", b"replace k 0 0 1\r\nc\r\n", b"STORED\r\n"),
        ("append", b"append k 0 0 1\r\nd\r\n", b"STORED\r\n"),
        ("prepend", b"prepend k 0 0 1\r\ne\r\n", b"STORED\r\n"),
        ("get", b"get k\r\n", b"VALUE k 0 3\r\necd\r\nEND\r\n"),
        ("delete", b"delete k2\r\n", b"DELETED\r\n"),
        ("set", b"set n 0 0 2\r\n10\r\n", b"STORED\r\n"),
        ("incr", b"incr n 5\r\n", b"15\r\n"),
        ("decr", b"decr n 3\r\n", b"12\r\n"),
        ("touch", b"touch n 100\r\n", b"TOUCHED\r\n"),
        ("gat", b"gat 100 n\r\n", b"VALUE n 0 2\r\n12\r\nEND\r\n"),
        ("version", b"version\r\n", b"VERSION "),
    ];
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (command, request, reply) in requests {
        let got = conn.call(request);
        assert!(
            got.starts_with(reply),
            "{command}: {} to {}",
            escape(&got),
            escape(request)
        );
        *expected.entry(command.to_string()).or_default() += 1;
    }
    let gets = conn.call(b"gets n\r\n");
    assert!(gets.starts_with(b"VALUE n 0 2 "), "{}", escape(&gets));
    *expected.entry("gets".to_string()).or_default() += 1;
    conn.send(b"quit\r\n");
    conn.read_to_close();
    *expected.entry("quit".to_string()).or_default() += 1;
    wait_for(
        &proxy,
        &Figures::new()
            .at("m/client_eof", READINESS_CHECK + 1)
            .at("m/client_connections", 0),
    );
    let metrics = Metrics::scrape(metrics_port);
    assert_eq!(
        metrics.get(
            "walnut_pool_request_latency_seconds_count",
            &[("pool", "m")]
        ),
        14.0,
        "every request but quit has a reply"
    );
    assert_eq!(
        metrics.commands("m"),
        expected,
        "walnut, then the commands sent"
    );
}

// ---------------------------------------------------------------------------------------
// Many readers at once
// ---------------------------------------------------------------------------------------

const STATS_READERS: usize = 32;
const READS_PER_READER: usize = 50;
/// Clients 0 and 2 use the Redis pool `r`, clients 1 and 3 the memcached pool `m`.
const LOAD_CLIENTS: usize = 4;
/// Each client sends at least this many batches, and goes on until every reader is done.
const LOAD_MIN_BATCHES: usize = 20;
/// Each batch is one write of this many sets, then as many gets of the same keys.
const LOAD_KEYS_PER_BATCH: usize = 25;

const HEADER_KEYS: [&str; 7] = [
    "service",
    "source",
    "version",
    "uptime",
    "timestamp",
    "total_connections",
    "curr_connections",
];
const POOL_KEYS: [&str; 6] = [
    "client_eof",
    "client_err",
    "client_connections",
    "server_ejects",
    "forward_error",
    "fragments",
];
const SERVER_KEYS: [&str; 13] = [
    "server_eof",
    "server_err",
    "server_timedout",
    "server_connections",
    "server_ejected_at",
    "requests",
    "request_bytes",
    "responses",
    "response_bytes",
    "in_queue",
    "in_queue_bytes",
    "out_queue",
    "out_queue_bytes",
];
/// The pools of [`walnut_with_metrics`] and their servers.
const LOAD_POOLS: [(&str, [&str; 2]); 2] = [("r", ["ra", "rb"]), ("m", ["ma", "mb"])];

/// Client `client`'s pool: its protocol and its index in [`LOAD_POOLS`].
fn load_pool(client: usize) -> (Proto, usize) {
    if client % 2 == 0 {
        (Proto::Redis, 0)
    } else {
        (Proto::Memcache, 1)
    }
}

/// One request a load client sent: its key's index, its frame and its reply.
type Exchange = (usize, Vec<u8>, Vec<u8>);

fn load_key(client: usize, i: usize) -> String {
    format!("load:c{client}:{i}")
}

/// One stats document, checked: one line of strict JSON with exactly the documented keys,
/// every figure a number. Returns each pool's `(requests, responses)` summed over its servers.
fn checked_document(text: &str) -> [(u64, u64); 2] {
    assert!(
        text.starts_with("{\"service\":") && text.ends_with("}}}\n"),
        "the document's frame: {text}"
    );
    assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
    let doc: Json = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the stats document is not JSON ({e}): {text}"));
    let keys = |value: &Json| -> BTreeSet<String> {
        value
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {value}"))
            .keys()
            .cloned()
            .collect()
    };
    let mut header: BTreeSet<String> = HEADER_KEYS.iter().map(|k| k.to_string()).collect();
    header.extend(LOAD_POOLS.iter().map(|(pool, _)| pool.to_string()));
    assert_eq!(keys(&doc), header, "{text}");
    for key in ["service", "source", "version"] {
        assert!(doc[key].is_string(), "{key}: {text}");
    }
    for key in &HEADER_KEYS[3..] {
        assert!(doc[key].is_u64(), "{key}: {text}");
    }
    let mut sums = [(0, 0); 2];
    for (p, (pool, servers)) in LOAD_POOLS.iter().enumerate() {
        let mut expected: BTreeSet<String> = POOL_KEYS.iter().map(|k| k.to_string()).collect();
        expected.extend(servers.iter().map(|s| s.to_string()));
        assert_eq!(keys(&doc[pool]), expected, "pool {pool}: {text}");
        for key in POOL_KEYS {
            assert!(doc[pool][key].is_u64(), "{pool}/{key}: {text}");
        }
        for server in servers {
            let entry = &doc[pool][server];
            assert_eq!(
                keys(entry),
                SERVER_KEYS.iter().map(|k| k.to_string()).collect(),
                "{pool}/{server}: {text}"
            );
            for key in SERVER_KEYS {
                assert!(entry[key].is_u64(), "{pool}/{server}/{key}: {text}");
            }
            sums[p].0 += entry["requests"].as_u64().unwrap();
            sums[p].1 += entry["responses"].as_u64().unwrap();
        }
    }
    sums
}

/// Reads the stats port and scrapes `/metrics` [`READS_PER_READER`] times each, checking every
/// document and exposition. A pool's `requests` and `responses` never go back, and never
/// exceed what its clients had sent when the read ended (`sent`, counted before each write).
fn stats_reader(stats_port: u16, metrics_port: u16, sent: &[AtomicU64; 2]) {
    let mut last_json = [(0, 0); 2];
    let mut last_metrics = [(0.0, 0.0); 2];
    for _ in 0..READS_PER_READER {
        let mut stream = TcpStream::connect(local(stats_port)).expect("connect to the stats port");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .expect("read the stats document");
        let sums = checked_document(&text);
        for (p, (pool, _)) in LOAD_POOLS.iter().enumerate() {
            let most = sent[p].load(Ordering::SeqCst);
            let (requests, responses) = sums[p];
            assert!(
                requests <= most && responses <= most,
                "pool {pool}: {requests} requests and {responses} responses of {most} sent"
            );
            assert!(
                requests >= last_json[p].0 && responses >= last_json[p].1,
                "pool {pool} went back: {:?} then {:?}",
                last_json[p],
                sums[p]
            );
        }
        last_json = sums;

        let metrics = Metrics::scrape(metrics_port);
        for (p, (pool, servers)) in LOAD_POOLS.iter().enumerate() {
            let most = sent[p].load(Ordering::SeqCst) as f64;
            let mut now = (0.0, 0.0);
            for server in servers {
                let labels = [("pool", *pool), ("server", *server)];
                now.0 += metrics.get("walnut_server_requests_total", &labels);
                now.1 += metrics.get("walnut_server_responses_total", &labels);
            }
            assert!(
                now.0 <= most && now.1 <= most,
                "pool {pool}: {now:?} of {most} sent"
            );
            assert!(
                now.0 >= last_metrics[p].0 && now.1 >= last_metrics[p].1,
                "pool {pool} went back: {:?} then {now:?}",
                last_metrics[p]
            );
            last_metrics[p] = now;
        }
    }
}

/// One client's traffic: pipelined batches of sets then gets of fresh keys, every reply
/// checked, until `done` (and at least [`LOAD_MIN_BATCHES`]); `sent` counts each request
/// before it is written. Returns `(key index, request, reply)` for each request.
fn load_client(client: usize, port: u16, sent: &AtomicU64, done: &AtomicBool) -> Vec<Exchange> {
    let (proto, _) = load_pool(client);
    let mut conn = Conn::connect(proto, port);
    let mut out = Vec::new();
    let mut batch = 0;
    while batch < LOAD_MIN_BATCHES || !done.load(Ordering::SeqCst) {
        let indexes = batch * LOAD_KEYS_PER_BATCH..(batch + 1) * LOAD_KEYS_PER_BATCH;
        let mut frames: Vec<Exchange> = indexes
            .clone()
            .map(|i| {
                let key = load_key(client, i);
                (i, set_frame(proto, &key, &value_for(i)), stored(proto))
            })
            .collect();
        frames.extend(indexes.map(|i| {
            let key = load_key(client, i);
            (
                i,
                get_frame(proto, &key),
                value_reply(proto, &key, Some(&value_for(i))),
            )
        }));
        let requests: Vec<Vec<u8>> = frames.iter().map(|(_, f, _)| f.clone()).collect();
        sent.fetch_add(requests.len() as u64, Ordering::SeqCst);
        let replies = conn.call_all(&requests);
        for ((i, frame, expected), reply) in frames.into_iter().zip(replies) {
            assert_eq!(
                escape(&reply),
                escape(&expected),
                "client {client}: the reply to {}",
                escape(&frame)
            );
            out.push((i, frame, reply));
        }
        batch += 1;
    }
    out
}

/// 32 threads read the stats port and scrape `/metrics` 50 times each while 4 clients pipeline
/// sets and gets: every document is strict JSON with the documented keys, every exposition
/// parses strictly, no counter goes back or runs ahead of the requests sent, every request
/// gets its own reply, and the final per-server figures are exactly the requests sent, their
/// replies and their bytes.
#[test]
fn many_concurrent_stats_and_metrics_readers_all_get_whole_documents_while_every_request_is_counted(
) {
    let redis = Backend::start_n(Proto::Redis, 2);
    let memcached = Backend::start_n(Proto::Memcache, 2);
    let (proxy, redis_port, memcached_port, metrics_port) = walnut_with_metrics(&redis, &memcached);
    let stats_port = proxy.stats_port;
    let sent = [AtomicU64::new(0), AtomicU64::new(0)];
    let readers_done = AtomicBool::new(false);
    let start = std::sync::Barrier::new(STATS_READERS + LOAD_CLIENTS);
    let exchanges: Vec<Vec<Exchange>> = std::thread::scope(|scope| {
        let (start, sent, readers_done) = (&start, &sent, &readers_done);
        let clients: Vec<_> = (0..LOAD_CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    let (proto, p) = load_pool(client);
                    let port = match proto {
                        Proto::Redis => redis_port,
                        Proto::Memcache => memcached_port,
                    };
                    start.wait();
                    load_client(client, port, &sent[p], readers_done)
                })
            })
            .collect();
        let readers: Vec<_> = (0..STATS_READERS)
            .map(|_| {
                scope.spawn(move || {
                    start.wait();
                    stats_reader(stats_port, metrics_port, sent);
                })
            })
            .collect();
        let read = readers.into_iter().map(|r| r.join()).collect::<Vec<_>>();
        readers_done.store(true, Ordering::SeqCst);
        let clients: Vec<_> = clients.into_iter().map(|c| c.join()).collect();
        for result in read {
            result.expect("a stats reader failed");
        }
        clients
            .into_iter()
            .map(|c| c.expect("a client failed"))
            .collect()
    });

    let mut expected = Figures::new();
    for (p, (pool, servers)) in LOAD_POOLS.iter().enumerate() {
        let backends = if p == 0 { &redis } else { &memcached };
        let mut traffic = [Traffic::default(); 2];
        for (client, exchanged) in exchanges.iter().enumerate() {
            if load_pool(client).1 != p {
                continue;
            }
            let keys: Vec<String> = (0..exchanged.len() / 2)
                .map(|i| load_key(client, i))
                .collect();
            let holders = holders(backends, &keys);
            for (i, frame, reply) in exchanged {
                traffic[holders[*i]].exchange(frame, reply);
            }
        }
        assert_eq!(
            traffic[0].requests + traffic[1].requests,
            sent[p].load(Ordering::SeqCst),
            "pool {pool}: every request sent was answered"
        );
        for (s, server) in servers.iter().enumerate() {
            assert!(traffic[s].requests > 0, "{pool}/{server} got no key");
            for (figure, value) in [
                ("requests", traffic[s].requests),
                ("request_bytes", traffic[s].request_bytes),
                ("responses", traffic[s].responses),
                ("response_bytes", traffic[s].response_bytes),
                ("in_queue", 0),
                ("in_queue_bytes", 0),
                ("out_queue", 0),
                ("out_queue_bytes", 0),
                ("server_eof", 0),
                ("server_err", 0),
                ("server_timedout", 0),
                ("server_connections", 1),
            ] {
                expected = expected.at(&format!("{pool}/{server}/{figure}"), value);
            }
        }
        expected = expected
            .at(&format!("{pool}/client_connections"), 0)
            .at(
                &format!("{pool}/client_eof"),
                READINESS_CHECK + (LOAD_CLIENTS / 2) as u64,
            )
            .at(&format!("{pool}/client_err"), 0)
            .at(&format!("{pool}/forward_error"), 0)
            .at(&format!("{pool}/server_ejects"), 0);
    }
    let doc = wait_for(&proxy, &expected);
    // And /metrics says the same.
    let metrics = Metrics::scrape(metrics_port);
    for (p, (pool, servers)) in LOAD_POOLS.iter().enumerate() {
        for server in servers {
            let labels = [("pool", *pool), ("server", *server)];
            for (figure_name, metric) in SERVER_METRICS {
                assert_eq!(
                    metrics.get(metric, &labels),
                    figure(&doc, &format!("{pool}/{server}/{figure_name}")).unwrap() as f64,
                    "{metric} of {pool}/{server} against the JSON"
                );
            }
            assert_eq!(
                metrics.get("walnut_server_latency_seconds_count", &labels),
                figure(&doc, &format!("{pool}/{server}/responses")).unwrap() as f64,
                "{pool}/{server}: one latency sample per response"
            );
        }
        assert_eq!(
            metrics.get(
                "walnut_pool_request_latency_seconds_count",
                &[("pool", *pool)]
            ),
            sent[p].load(Ordering::SeqCst) as f64,
            "pool {pool}: one latency sample per client request"
        );
    }
}
