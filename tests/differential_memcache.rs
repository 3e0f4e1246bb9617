//! Differential tests for memcached pools: the same request bytes go to Debian's `nutcracker`
//! (twemproxy 0.5.0) and to walnut, both running the same pool over the same real memcached
//! servers, and the raw reply bytes are compared. Before each run every memcached is flushed
//! directly (`flush_all`), then the sentinel key and the case's seed are written again through
//! nutcracker (the reference placement).
//!
//! Each case is sent in ONE write on a fresh connection, followed in the same write by the
//! sentinel request `get <sentinel key>`. Its reply (a value no case touches) marks the end of
//! the case's replies, so no reply count is guessed and nothing depends on timing; EOF before
//! it means the proxy closed the connection.
//!
//! cas unique values come from memcached's global counter, which every run advances, so
//! replies are compared with each distinct cas value renamed `cas#1`, `cas#2`, … in order of
//! appearance (meta `c<cas>` flags likewise). `identical_gets_cas_values_pass_through_unchanged`
//! compares the raw numbers.
//!
//! A documented difference (docs/COMPATIBILITY.md) asserts walnut's exact bytes and
//! nutcracker's exact behaviour instead. Input nutcracker cannot parse (it closes the
//! connection without a reply) is sent to memcached itself and to walnut in front of that same
//! memcached, and walnut must answer exactly as memcached does.

// The fixture re-exports RESP helpers this file does not use.
#[allow(unused_imports)]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::mc::{reply_len, READ_TIMEOUT};
use common::raw::escape;
use common::{free_port, local, MemcachedServer, ProxyProcess};

// ------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------

const SENTINEL_VALUE: &[u8] = b"sentinel";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Nutcracker,
    Walnut,
    /// The (only) memcached of the pool, directly.
    Memcached,
}

/// One pool, listening on one port per proxy.
struct PoolPorts {
    name: &'static str,
    nutcracker: u16,
    walnut: u16,
}

struct Harness {
    backends: Vec<MemcachedServer>,
    pools: Vec<PoolPorts>,
    /// The key whose value marks the end of a case's replies.
    sentinel: Vec<u8>,
    _nutcracker: ProxyProcess,
    _walnut: ProxyProcess,
}

impl Harness {
    /// Both proxies with the same `pools` (name, extra directives) over `backends`, which are
    /// named s0, s1, … in order (so backend i is server index i after twemproxy's name sort).
    fn start(backends: Vec<MemcachedServer>, pools: &[(&'static str, &str)]) -> Harness {
        assert!(backends.len() <= 10, "server names must sort like indices");
        let ports: Vec<PoolPorts> = pools
            .iter()
            .map(|(name, _)| PoolPorts {
                name,
                nutcracker: free_port(),
                walnut: free_port(),
            })
            .collect();
        let config = |walnut: bool| {
            let mut conf = String::new();
            for ((name, extra), port) in pools.iter().zip(&ports) {
                let listen = if walnut { port.walnut } else { port.nutcracker };
                conf.push_str(&format!(
                    "{name}:\n  listen: 127.0.0.1:{listen}\n  redis: false\n  hash: fnv1a_64\n  distribution: ketama\n{extra}  servers:\n"
                ));
                for (i, backend) in backends.iter().enumerate() {
                    conf.push_str(&format!(
                        "   - {}\n",
                        backend.server_line(1, Some(&format!("s{i}")))
                    ));
                }
            }
            conf
        };
        let nut_addrs: Vec<_> = ports.iter().map(|p| local(p.nutcracker)).collect();
        let wal_addrs: Vec<_> = ports.iter().map(|p| local(p.walnut)).collect();
        let nutcracker = ProxyProcess::nutcracker(&config(false), &nut_addrs);
        let walnut = ProxyProcess::walnut(&config(true), &wal_addrs);
        Harness {
            backends,
            pools: ports,
            sentinel: b"__sentinel__".to_vec(),
            _nutcracker: nutcracker,
            _walnut: walnut,
        }
    }

    fn addr(&self, pool: &str, target: Target) -> SocketAddr {
        let p = self
            .pools
            .iter()
            .find(|p| p.name == pool)
            .unwrap_or_else(|| panic!("no pool {pool}"));
        match target {
            Target::Nutcracker => local(p.nutcracker),
            Target::Walnut => local(p.walnut),
            Target::Memcached => {
                assert_eq!(
                    self.backends.len(),
                    1,
                    "memcached is compared directly only behind a one-server pool"
                );
                self.backends[0].addr()
            }
        }
    }

    /// `flush_all` on every backend, directly.
    fn reset(&self) {
        for backend in &self.backends {
            assert_eq!(
                escape(&backend.client().call(b"flush_all\r\n")),
                escape(b"OK\r\n"),
                "flush_all on {}",
                backend.addr()
            );
        }
    }

    fn probe(&self) -> Vec<u8> {
        [b"get ", self.sentinel.as_slice(), b"\r\n"].concat()
    }

    fn sentinel_reply(&self) -> Vec<u8> {
        [
            b"VALUE ",
            self.sentinel.as_slice(),
            format!(" 0 {}\r\n", SENTINEL_VALUE.len()).as_bytes(),
            SENTINEL_VALUE,
            b"\r\nEND\r\n",
        ]
        .concat()
    }

    /// Flushes, writes the sentinel, then `seed` through nutcracker; no seed reply may be an
    /// error.
    fn prepare(&self, pool: &str, seed: &[u8]) {
        self.reset();
        let mut conn = Conn::connect(self.addr(pool, Target::Nutcracker));
        let store_sentinel = [
            b"set ",
            self.sentinel.as_slice(),
            format!(" 0 0 {}\r\n", SENTINEL_VALUE.len()).as_bytes(),
            SENTINEL_VALUE,
            b"\r\n",
        ]
        .concat();
        assert!(conn.send(&store_sentinel));
        assert_eq!(
            conn.next_reply().map(|r| escape(&r)),
            Ok(escape(b"STORED\r\n")),
            "storing the sentinel through nutcracker"
        );
        let observed = self.observe_on(conn, seed);
        assert_eq!(observed.end, End::Open, "seed {}: {observed}", escape(seed));
        let mut at = 0;
        while at < observed.bytes.len() {
            let len = reply_len(&observed.bytes[at..]).expect("whole replies");
            let reply = &observed.bytes[at..at + len];
            assert!(
                !(reply.starts_with(b"ERROR")
                    || reply.starts_with(b"CLIENT_ERROR")
                    || reply.starts_with(b"SERVER_ERROR")),
                "seed {} failed: {}",
                escape(seed),
                escape(reply)
            );
            at += len;
        }
    }

    /// The cas unique value of `key` now, read through nutcracker.
    fn cas_of(&self, pool: &str, key: &[u8]) -> Vec<u8> {
        let mut conn = Conn::connect(self.addr(pool, Target::Nutcracker));
        assert!(conn.send(&[b"gets ", key, b"\r\n"].concat()));
        let reply = conn.next_reply().expect("a gets reply");
        let line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        assert!(
            words.len() == 5 && words[0] == b"VALUE",
            "gets {} returned {}",
            escape(key),
            escape(&reply)
        );
        words[4].to_vec()
    }

    /// Sends `input` then the probe in one write on a fresh connection to `addr`.
    fn observe(&self, addr: SocketAddr, input: &[u8]) -> Observed {
        self.observe_on(Conn::connect(addr), input)
    }

    /// Sends `input` alone on a fresh connection and reads every reply until the peer closes
    /// (or goes quiet for [`READ_TIMEOUT`]).
    fn observe_until_closed(&self, addr: SocketAddr, input: &[u8]) -> Observed {
        let mut conn = Conn::connect(addr);
        let mut bytes = Vec::new();
        if !conn.send(input) {
            return Observed {
                bytes,
                end: End::Closed,
            };
        }
        loop {
            match conn.next_reply() {
                Ok(reply) => bytes.extend_from_slice(&reply),
                Err(end) => return Observed { bytes, end },
            }
        }
    }

    fn observe_on(&self, mut conn: Conn, input: &[u8]) -> Observed {
        let sentinel = self.sentinel_reply();
        let mut bytes = Vec::new();
        if !conn.send(&[input, &self.probe()].concat()) {
            return Observed {
                bytes,
                end: End::Closed,
            };
        }
        loop {
            match conn.next_reply() {
                Ok(reply) if reply == sentinel => {
                    return Observed {
                        bytes,
                        end: End::Open,
                    }
                }
                Ok(reply) => bytes.extend_from_slice(&reply),
                Err(end) => return Observed { bytes, end },
            }
        }
    }

    /// Flush, seed, send the case to `target`; cas values renamed.
    fn run(&self, case: &Case, target: Target) -> Observed {
        self.prepare(case.pool, &case.seed);
        let mut input = Vec::new();
        for part in &case.input {
            match part {
                Part::Bytes(bytes) => input.extend_from_slice(bytes),
                Part::CasOf(key) => input.extend(self.cas_of(case.pool, key)),
            }
        }
        let observed = self.observe(self.addr(case.pool, target), &input);
        Observed {
            bytes: canonical_cas(&observed.bytes),
            end: observed.end,
        }
    }

    /// Runs one case; `Err` describes a failure.
    fn check(&self, case: &Case) -> Result<(), String> {
        let compare = |left: Target, right: Target| -> Result<(), String> {
            let l = self.run(case, left);
            let r = self.run(case, right);
            if l == r {
                Ok(())
            } else {
                Err(format!(
                    "case `{}` ({} pool): walnut differs from {left:?}\n    {left:?}: {l}\n    {right:?}: {r}",
                    case.name, case.pool
                ))
            }
        };
        let expect = |target: Target, expected: &Observed| -> Option<String> {
            let got = self.run(case, target);
            (&got != expected).then(|| {
                format!("    {target:?} expected: {expected}\n    {target:?} got:      {got}")
            })
        };
        match &case.expect {
            Expect::Same => compare(Target::Nutcracker, Target::Walnut),
            Expect::Differs { nutcracker, walnut } => {
                let problems: Vec<String> = [
                    expect(Target::Nutcracker, nutcracker),
                    expect(Target::Walnut, walnut),
                ]
                .into_iter()
                .flatten()
                .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "case `{}` ({} pool, documented difference):\n{}",
                        case.name,
                        case.pool,
                        problems.join("\n")
                    ))
                }
            }
            Expect::LikeMemcached { nutcracker } => {
                let mut problems = Vec::new();
                if let Some(problem) = expect(Target::Nutcracker, nutcracker) {
                    problems.push(format!(
                        "case `{}` ({} pool): nutcracker\n{problem}",
                        case.name, case.pool
                    ));
                }
                if let Err(problem) = compare(Target::Memcached, Target::Walnut) {
                    problems.push(problem);
                }
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("\n"))
                }
            }
        }
    }

    /// Runs every case and fails once, listing every failing case.
    fn run_all(&self, cases: Vec<Case>) {
        let mut names = std::collections::HashSet::new();
        for case in &cases {
            assert!(
                names.insert(&case.name),
                "duplicate case name {}",
                case.name
            );
        }
        let failures: Vec<String> = cases.iter().filter_map(|c| self.check(c).err()).collect();
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n\n{}\n",
            failures.len(),
            cases.len(),
            failures.join("\n\n")
        );
    }
}

/// A TCP connection read reply by reply (memcached framing), written as raw bytes.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
    closed: bool,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            pending: Vec::new(),
            closed: false,
        }
    }

    /// One `write_all`; false when the peer has already gone.
    fn send(&mut self, bytes: &[u8]) -> bool {
        match self.stream.write_all(bytes) {
            Ok(()) => true,
            Err(e) if is_disconnect(e.kind()) => {
                self.closed = true;
                false
            }
            Err(e) => panic!("write: {e}"),
        }
    }

    /// The next whole reply, or how the connection ended (with any incomplete bytes).
    fn next_reply(&mut self) -> Result<Vec<u8>, End> {
        loop {
            if let Some(len) = reply_len(&self.pending) {
                let rest = self.pending.split_off(len);
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            let end = |pending: Vec<u8>, quiet: End| {
                if pending.is_empty() {
                    quiet
                } else {
                    End::Garbage(pending)
                }
            };
            if self.closed {
                return Err(end(std::mem::take(&mut self.pending), End::Closed));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(end(std::mem::take(&mut self.pending), End::TimedOut));
                }
                Err(e) if is_disconnect(e.kind()) => self.closed = true,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

fn is_disconnect(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// Every cas unique value renamed by order of first appearance: `VALUE k f n <cas>` lines
/// and the `c<cas>` flag of meta `VA`/`HD` lines. Data blocks are copied untouched.
fn canonical_cas(bytes: &[u8]) -> Vec<u8> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut rename = |cas: &[u8]| -> Vec<u8> {
        let index = match names.iter().position(|n| n == cas) {
            Some(i) => i,
            None => {
                names.push(cas.to_vec());
                names.len() - 1
            }
        };
        format!("cas#{}", index + 1).into_bytes()
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let Some(lf) = bytes[at..].iter().position(|&b| b == b'\n') else {
            out.extend_from_slice(&bytes[at..]);
            break;
        };
        let line_end = at + lf + 1;
        let line = &bytes[at..line_end];
        let text = line.strip_suffix(b"\r\n").unwrap_or(line);
        let words: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
        let mut data_len = None;
        if words[0] == b"VALUE" && words.len() >= 4 {
            data_len = std::str::from_utf8(words[3])
                .ok()
                .and_then(|n| n.parse::<usize>().ok());
            let mut renamed: Vec<Vec<u8>> = words.iter().map(|w| w.to_vec()).collect();
            if words.len() == 5 {
                renamed[4] = rename(words[4]);
            }
            out.extend(renamed.join(&b' '));
            out.extend_from_slice(&line[text.len()..]);
        } else if words[0] == b"VA" || words[0] == b"HD" {
            if words[0] == b"VA" && words.len() >= 2 {
                data_len = std::str::from_utf8(words[1])
                    .ok()
                    .and_then(|n| n.parse::<usize>().ok());
            }
            let renamed: Vec<Vec<u8>> = words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let is_cas = i > 0
                        && w.len() > 1
                        && w[0] == b'c'
                        && w[1..].iter().all(u8::is_ascii_digit);
                    if is_cas {
                        [b"c".as_slice(), &rename(&w[1..])].concat()
                    } else {
                        w.to_vec()
                    }
                })
                .collect();
            out.extend(renamed.join(&b' '));
            out.extend_from_slice(&line[text.len()..]);
        } else {
            out.extend_from_slice(line);
        }
        at = line_end;
        if let Some(len) = data_len {
            let end = (at + len + 2).min(bytes.len());
            out.extend_from_slice(&bytes[at..end]);
            at = end;
        }
    }
    out
}

/// What came back: the replies' bytes (before the sentinel's), then how the connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    bytes: Vec<u8>,
    end: End,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Still open: the sentinel request was answered.
    Open,
    /// The peer closed (EOF or reset) without sending anything more.
    Closed,
    /// Nothing arrived for a long time.
    TimedOut,
    /// An incomplete reply, then EOF or silence.
    Garbage(Vec<u8>),
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" then ", escape(&self.bytes))?;
        match &self.end {
            End::Open => write!(f, "open (sentinel answered)"),
            End::Closed => write!(f, "closed"),
            End::TimedOut => write!(f, "timed out"),
            End::Garbage(rest) => write!(f, "incomplete bytes \"{}\"", escape(rest)),
        }
    }
}

/// Replies then still open.
fn open(bytes: impl AsRef<[u8]>) -> Observed {
    Observed {
        bytes: bytes.as_ref().to_vec(),
        end: End::Open,
    }
}

/// Replies then closed.
fn closed_after(bytes: impl AsRef<[u8]>) -> Observed {
    Observed {
        bytes: bytes.as_ref().to_vec(),
        end: End::Closed,
    }
}

/// Closed without a single reply: what nutcracker does with anything it cannot parse.
fn silently_closed() -> Observed {
    closed_after(b"")
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

enum Expect {
    /// nutcracker and walnut reply with the same bytes.
    Same,
    /// A documented difference: both sides asserted exactly.
    Differs {
        nutcracker: Observed,
        walnut: Observed,
    },
    /// nutcracker as given (it cannot parse the input); walnut exactly as memcached itself.
    LikeMemcached { nutcracker: Observed },
}

enum Part {
    Bytes(Vec<u8>),
    /// The key's current cas unique value (after the seed), in decimal.
    CasOf(Vec<u8>),
}

struct Case {
    name: String,
    pool: &'static str,
    seed: Vec<u8>,
    input: Vec<Part>,
    expect: Expect,
}

const PLAIN: &str = "plain";
const TAGGED: &str = "tagged";

impl Case {
    fn new(name: impl Into<String>, pool: &'static str) -> Case {
        Case {
            name: name.into(),
            pool,
            seed: Vec::new(),
            input: Vec::new(),
            expect: Expect::Same,
        }
    }

    /// Raw requests sent through nutcracker after the flush.
    fn seed(mut self, bytes: impl AsRef<[u8]>) -> Case {
        self.seed.extend_from_slice(bytes.as_ref());
        self
    }

    /// Raw request bytes.
    fn send(mut self, bytes: impl AsRef<[u8]>) -> Case {
        self.input.push(Part::Bytes(bytes.as_ref().to_vec()));
        self
    }

    /// The current cas unique value of `key`, spliced into the input.
    fn cas_of(mut self, key: impl AsRef<[u8]>) -> Case {
        self.input.push(Part::CasOf(key.as_ref().to_vec()));
        self
    }

    fn differs(mut self, nutcracker: Observed, walnut: Observed) -> Case {
        self.expect = Expect::Differs { nutcracker, walnut };
        self
    }

    fn like_memcached(mut self, nutcracker: Observed) -> Case {
        self.expect = Expect::LikeMemcached { nutcracker };
        self
    }
}

/// `set <key> <flags> 0 <len>\r\n<value>\r\n`
fn set(key: &str, value: &str) -> Vec<u8> {
    format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).into_bytes()
}

/// The reply block of one value with flags 0.
fn value(key: &str, data: &str) -> String {
    format!("VALUE {key} 0 {}\r\n{data}\r\n", data.len())
}

/// Three backends, two pools (with and without `hash_tag: "{}"`), and keys per backend.
struct Fixture {
    harness: Harness,
    /// `keys[s]`: five keys that live on backend s (found through nutcracker).
    keys: Vec<Vec<String>>,
}

fn three_server_fixture() -> Fixture {
    let backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let harness = Harness::start(backends, &[(PLAIN, ""), (TAGGED, "  hash_tag: \"{}\"\n")]);
    let keys = discover_keys(&harness, 5);
    Fixture { harness, keys }
}

/// Writes candidate keys `key:<n>` through nutcracker and asks each backend directly
/// which it holds, to find `per_server` keys living on each backend.
fn discover_keys(harness: &Harness, per_server: usize) -> Vec<Vec<String>> {
    harness.reset();
    let candidates: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let mut client = common::mc::McClient::connect(harness.addr(PLAIN, Target::Nutcracker));
    let sets: Vec<u8> = candidates.iter().flat_map(|k| set(k, "probe")).collect();
    for reply in client.exchange(&sets, candidates.len()) {
        assert_eq!(escape(&reply), escape(b"STORED\r\n"));
    }
    let mut keys = Vec::new();
    for (s, backend) in harness.backends.iter().enumerate() {
        let mut direct = backend.client();
        let mut found = Vec::new();
        for chunk in candidates.chunks(50) {
            let reply = direct.call(format!("get {}\r\n", chunk.join(" ")).as_bytes());
            for line in reply.split(|&b| b == b'\n') {
                if let Some(rest) = line.strip_prefix(b"VALUE ") {
                    let key = rest.split(|&b| b == b' ').next().unwrap_or_default();
                    found.push(String::from_utf8(key.to_vec()).unwrap());
                }
            }
        }
        assert!(
            found.len() >= per_server,
            "backend s{s} holds only {} of {} keys",
            found.len(),
            candidates.len()
        );
        found.truncate(per_server);
        keys.push(found);
    }
    harness.reset();
    keys
}

// ------------------------------------------------------------------------------------------
// Identical behaviour
// ------------------------------------------------------------------------------------------

#[test]
fn identical_storage_commands_and_their_noreply_variants() {
    let fx = three_server_fixture();
    let cases = vec![
        Case::new(
            "set and get with flags, exptime, empty and binary values",
            PLAIN,
        )
        .send(
            b"set k 5 0 5\r\nhello\r\n\
              get k\r\n\
              set k 4294967295 100 3\r\nbig\r\n\
              get k\r\n\
              set e 0 0 0\r\n\r\n\
              get e\r\n\
              set bin 0 0 8\r\na\r\nb\x00c\xff\xfe\r\n\
              get bin\r\n\
              get missing\r\n",
        ),
        Case::new(
            "flags above 2^32-1 are forwarded (memcached truncates them)",
            PLAIN,
        )
        .send("set f 4294967296 0 1\r\nv\r\nget f\r\n"),
        Case::new("add and replace", PLAIN)
            .seed(set("x", "old"))
            .send(
                b"add x 0 0 3\r\nnew\r\n\
                  add y 1 0 3\r\nnew\r\n\
                  replace z 0 0 1\r\nz\r\n\
                  replace x 2 0 8\r\nreplaced\r\n\
                  get x\r\nget y\r\nget z\r\n",
            ),
        Case::new("append and prepend", PLAIN)
            .seed(set("s", "middle"))
            .send(
                b"append s 9 0 4\r\n-end\r\n\
                  prepend s 9 0 6\r\nstart-\r\n\
                  append missing 0 0 1\r\nx\r\n\
                  prepend missing 0 0 1\r\nx\r\n\
                  get s\r\nget missing\r\n",
            ),
        Case::new("cas: stored, exists, not found", PLAIN)
            .seed(set("c", "first"))
            .send("cas c 3 0 6 ")
            .cas_of("c")
            .send("\r\nsecond\r\ncas c 0 0 5 ")
            .cas_of("c")
            .send("\r\nthird\r\ncas missing 0 0 1 1\r\nx\r\ngets c\r\nget c\r\n"),
        Case::new("noreply storage commands answer nothing", PLAIN)
            .seed(set("c", "v"))
            .send(
                b"set k 0 0 1 noreply\r\n1\r\n\
                  add k 0 0 1 noreply\r\n2\r\n\
                  add a 0 0 1 noreply\r\n3\r\n\
                  replace k 7 0 1 noreply\r\n4\r\n\
                  replace nope 0 0 1 noreply\r\n5\r\n\
                  append k 0 0 1 noreply\r\n6\r\n\
                  prepend k 0 0 1 noreply\r\n7\r\n\
                  cas c 0 0 1 1 noreply\r\n8\r\n\
                  get k\r\nget a\r\nget nope\r\nget c\r\n",
            ),
        Case::new("cas noreply with the right cas", PLAIN)
            .seed(set("c", "v"))
            .send("cas c 0 0 1 ")
            .cas_of("c")
            .send(" noreply\r\nw\r\nget c\r\n"),
        Case::new("keys spread over all three servers", PLAIN).send(format!(
            "{}{}{}get {}\r\nget {}\r\nget {}\r\nget {}\r\n",
            String::from_utf8(set(&fx.keys[0][0], "a")).unwrap(),
            String::from_utf8(set(&fx.keys[1][0], "b")).unwrap(),
            String::from_utf8(set(&fx.keys[2][0], "c")).unwrap(),
            fx.keys[2][0],
            fx.keys[1][0],
            fx.keys[0][0],
            fx.keys[0][1],
        )),
        Case::new("a value too large for memcached", PLAIN).send(
            [
                b"set big 0 0 3000000\r\n".as_slice(),
                &vec![b'x'; 3_000_000],
                b"\r\nget big\r\n",
            ]
            .concat(),
        ),
        Case::new("hash-tagged keys", TAGGED).send(
            b"set {t}a 0 0 1\r\nA\r\n\
              set x{t}b 0 0 1\r\nB\r\n\
              set {}c 0 0 1\r\nC\r\n\
              get {t}a\r\nget x{t}b\r\nget {}c\r\n",
        ),
    ];
    fx.harness.run_all(cases);
}

#[test]
fn identical_single_and_multi_key_retrieval_with_every_key_present() {
    let fx = three_server_fixture();
    let k = &fx.keys;
    let all: Vec<&String> = (0..4).flat_map(|j| (0..3).map(move |s| &k[s][j])).collect();
    let seed_all: Vec<u8> = all
        .iter()
        .enumerate()
        .flat_map(|(i, key)| set(key, &format!("value-{i}")))
        .collect();
    let long_a = "a".repeat(250);
    let long_b = "b".repeat(250);
    let many: Vec<String> = (0..100).map(|i| format!("many:{i}")).collect();
    let seed_many: Vec<u8> = many.iter().flat_map(|key| set(key, key)).collect();
    let cases = vec![
        Case::new("single get and gets, present and missing", PLAIN)
            .seed(&seed_all)
            .send(format!(
                "get {}\r\ngets {}\r\nget missing\r\ngets missing\r\n",
                k[0][0], k[1][0]
            )),
        Case::new("multi-get across three servers", PLAIN)
            .seed(&seed_all)
            .send(format!(
                "get {} {} {} {} {} {}\r\n",
                k[0][0], k[1][0], k[2][0], k[2][1], k[1][1], k[0][1]
            )),
        Case::new("multi-gets across three servers", PLAIN)
            .seed(&seed_all)
            .send(format!(
                "gets {} {} {} {}\r\n",
                k[2][0], k[0][0], k[1][0], k[0][2]
            )),
        Case::new("multi-get of every key, twelve keys", PLAIN)
            .seed(&seed_all)
            .send(format!(
                "get {}\r\n",
                all.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        Case::new("multi-get with duplicate keys", PLAIN)
            .seed(&seed_all)
            .send(format!(
                "get {a} {a} {b} {a}\r\ngets {b} {b}\r\n",
                a = k[0][0],
                b = k[1][0]
            )),
        Case::new("multi-get of keys on one server", PLAIN)
            .seed(&seed_all)
            .send(format!("get {} {} {}\r\n", k[1][0], k[1][1], k[1][2])),
        Case::new("multi-get with every key missing", PLAIN).send("get m1 m2 m3 m4 m5\r\n"),
        Case::new("250-byte keys", PLAIN).send(format!(
            "set {long_a} 0 0 1\r\nA\r\nset {long_b} 0 0 1\r\nB\r\nget {long_a}\r\nget {long_a} {long_b}\r\n"
        )),
        Case::new("a hundred-key multi-get", PLAIN)
            .seed(&seed_many)
            .send(format!("get {}\r\n", many.join(" "))),
        Case::new("extra spaces between tokens, leading and trailing", PLAIN)
            .seed(&seed_all)
            .send(format!(
                "get  {}   {} \r\n   get {}\r\nget {} \r\n",
                k[0][0], k[1][0], k[2][0], k[0][1]
            )),
        Case::new("multi-get with hash tags", TAGGED)
            .seed(set("{t}a", "1"))
            .seed(set("{t}b", "2"))
            .seed(set("{u}c", "3"))
            .seed(set("d{t}", "4"))
            .send("get {t}a {t}b {u}c d{t} {t}a\r\n"),
    ];
    fx.harness.run_all(cases);
}

#[test]
fn identical_delete_incr_decr_touch_version_and_quit() {
    let fx = three_server_fixture();
    let cases = vec![
        Case::new("delete present, missing, noreply", PLAIN)
            .seed(set("d", "v"))
            .seed(set("q", "v"))
            .send("delete d\r\ndelete d\r\ndelete q noreply\r\nget d\r\nget q\r\n"),
        Case::new("incr and decr", PLAIN)
            .seed(set("n", "10"))
            .seed(set("w", "word"))
            .send(
                "incr n 5\r\n\
                 decr n 20\r\n\
                 incr n 18446744073709551615\r\n\
                 incr n 2\r\n\
                 incr missing 1\r\n\
                 decr missing 1\r\n\
                 incr w 1\r\n\
                 incr n -1\r\n\
                 incr n 18446744073709551616\r\n\
                 get n\r\n",
            ),
        Case::new("incr grows the value, decr keeps its length", PLAIN)
            .seed(set("n", "99"))
            .send("incr n 1\r\nget n\r\ndecr n 95\r\nget n\r\n"),
        Case::new("incr and decr noreply", PLAIN)
            .seed(set("n", "7"))
            .seed(set("w", "word"))
            .send(
                "incr n 3 noreply\r\ndecr n 1 noreply\r\nincr missing 1 noreply\r\n\
                 incr w 1 noreply\r\nget n\r\nget w\r\n",
            ),
        Case::new("touch present, missing, noreply", PLAIN)
            .seed(set("t", "v"))
            .send(
                "touch t 100\r\ntouch missing 100\r\ntouch t 0 noreply\r\ntouch t 0\r\nget t\r\n",
            ),
        Case::new("version", PLAIN).send("version\r\nversion\r\n"),
        Case::new("quit answers what came before and closes", PLAIN)
            .seed(set("k", "v"))
            .send("get k\r\nquit\r\nget k\r\n"),
        Case::new("quit alone", PLAIN).send("quit\r\n"),
    ];
    fx.harness.run_all(cases);
}

#[test]
fn identical_pipelines_mixing_commands_and_large_values() {
    let fx = three_server_fixture();
    let k = &fx.keys;
    let mut mixed = String::new();
    for i in 0..300 {
        let key = &k[i % 3][i % 4];
        match i % 10 {
            0 => mixed.push_str(&format!("set {key} {i} 0 3\r\n{:03}\r\n", i % 1000)),
            1 => mixed.push_str(&format!("get {key}\r\n")),
            2 => mixed.push_str(&format!("incr {key} 1\r\n")),
            3 => mixed.push_str(&format!("append {key} 0 0 1 noreply\r\nx\r\n")),
            4 => mixed.push_str(&format!("get {} {} {}\r\n", k[0][0], k[1][0], k[2][0])),
            5 => mixed.push_str(&format!("delete {key}\r\n")),
            6 => mixed.push_str(&format!("add {key} 0 0 2\r\nad\r\n")),
            7 => mixed.push_str(&format!("touch {key} 1000\r\n")),
            8 => mixed.push_str(&format!("prepend {key} 0 0 1\r\np\r\n")),
            _ => mixed.push_str(&format!("decr {key} 1 noreply\r\nversion\r\n")),
        }
    }
    let big_a = vec![b'a'; 1_000_000];
    let big_b: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    let big = [
        format!("set {} 3 0 {}\r\n", k[0][0], big_a.len()).as_bytes(),
        &big_a,
        format!("\r\nset {} 4 0 {}\r\n", k[1][0], big_b.len()).as_bytes(),
        &big_b,
        format!(
            "\r\nget {}\r\nget {} {} {}\r\n",
            k[1][0], k[0][0], k[1][0], k[0][0]
        )
        .as_bytes(),
    ]
    .concat();
    let cases = vec![
        Case::new("300 mixed requests over three servers", PLAIN)
            .seed(set(&k[0][0], "1"))
            .send(mixed),
        Case::new("1 MB and 500 KB values, single and multi-get", PLAIN).send(big),
        Case::new("a thousand sets then a thousand gets", PLAIN).send({
            let mut bytes = Vec::new();
            for i in 0..1000 {
                bytes.extend(set(&format!("p:{i}"), &format!("v{i}")));
            }
            for i in 0..1000 {
                bytes.extend(format!("get p:{i}\r\n").into_bytes());
            }
            bytes
        }),
    ];
    fx.harness.run_all(cases);
}

#[test]
fn identical_gets_cas_values_pass_through_unchanged() {
    let fx = three_server_fixture();
    let k = &fx.keys;
    fx.harness.prepare(
        PLAIN,
        &[set(&k[0][0], "a"), set(&k[1][0], "b"), set(&k[2][0], "c")].concat(),
    );
    let mut direct = Vec::new();
    for (backend, keys) in fx.harness.backends.iter().zip(k) {
        let mut client = backend.client();
        direct.extend(client.call(format!("gets {}\r\n", keys[0]).as_bytes()));
    }
    let request = format!(
        "gets {}\r\ngets {}\r\ngets {}\r\n",
        k[0][0], k[1][0], k[2][0]
    );
    for target in [Target::Nutcracker, Target::Walnut] {
        let got = fx
            .harness
            .observe(fx.harness.addr(PLAIN, target), request.as_bytes());
        assert_eq!(got, open(&direct), "{target:?}: {got}");
    }
    // A multi-gets split over the three servers carries the same numbers.
    let multi = format!("gets {} {} {}\r\n", k[0][0], k[1][0], k[2][0]);
    let expected: Vec<u8> = direct
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty() && !line.starts_with(b"END"))
        .flat_map(|line| [line, b"\n"].concat())
        .chain(b"END\r\n".iter().copied())
        .collect();
    for target in [Target::Nutcracker, Target::Walnut] {
        let got = fx
            .harness
            .observe(fx.harness.addr(PLAIN, target), multi.as_bytes());
        assert_eq!(got, open(&expected), "{target:?}: {got}");
    }
}

// ------------------------------------------------------------------------------------------
// A dead server
// ------------------------------------------------------------------------------------------

/// Three servers with keys found on each, then server s1 killed. The sentinel is the fifth
/// key found on s0 (no case uses it).
fn fixture_with_dead_second_server() -> Fixture {
    let mut fx = three_server_fixture();
    fx.harness.sentinel = fx.keys[0][4].clone().into_bytes();
    drop(fx.harness.backends.remove(1));
    fx
}

#[test]
fn identical_single_key_failure_with_a_dead_server() {
    let fx = fixture_with_dead_second_server();
    let (a, b, c) = (&fx.keys[0][0], &fx.keys[1][0], &fx.keys[2][0]);
    let cases = vec![
        Case::new("every single-key command to the dead server", PLAIN).send(format!(
            "get {b}\r\n\
             gets {b}\r\n\
             set {b} 0 0 1\r\nv\r\n\
             add {b} 0 0 1\r\nv\r\n\
             replace {b} 0 0 1\r\nv\r\n\
             append {b} 0 0 1\r\nv\r\n\
             prepend {b} 0 0 1\r\nv\r\n\
             cas {b} 0 0 1 1\r\nv\r\n\
             delete {b}\r\n\
             incr {b} 1\r\n\
             decr {b} 1\r\n\
             touch {b} 10\r\n"
        )),
        Case::new("noreply to the dead server answers nothing", PLAIN).send(format!(
            "set {b} 0 0 1 noreply\r\nv\r\ndelete {b} noreply\r\nincr {b} 1 noreply\r\ntouch {b} 1 noreply\r\n"
        )),
        Case::new("live servers keep answering around failures", PLAIN)
            .seed(set(a, "A"))
            .seed(set(c, "C"))
            .send(format!(
                "get {a}\r\nget {b}\r\nget {c}\r\nset {b} 0 0 1\r\nB\r\nset {c} 0 0 2\r\nCC\r\nget {c}\r\n"
            )),
        Case::new("version with a dead server in the pool", PLAIN).send("version\r\n"),
    ];
    fx.harness.run_all(cases);
}

// ------------------------------------------------------------------------------------------
// Documented differences
// ------------------------------------------------------------------------------------------

#[test]
fn documented_multi_get_lists_values_in_request_order_when_keys_are_missing() {
    let fx = three_server_fixture();
    let k = &fx.keys;
    let (a0, a1, a2) = (&k[0][0], &k[0][1], &k[0][2]);
    let b0 = &k[1][0];
    let (c0, c1) = (&k[2][0], &k[2][1]);
    let seed = [set(a0, "A0"), set(a1, "A1"), set(b0, "B0"), set(c0, "C0")].concat();
    // nutcracker walks the request's keys and takes, for each, the next value its server
    // returned: a2 (missing) takes a0's value, a0 takes a1's, c1 (missing) takes c0's.
    let cases = vec![
        Case::new("missing keys on two servers", PLAIN)
            .seed(&seed)
            .send(format!("get {a2} {b0} {a0} {c1} {c0} {a1}\r\n"))
            .differs(
                open(format!(
                    "{}{}{}{}END\r\n",
                    value(a0, "A0"),
                    value(b0, "B0"),
                    value(a1, "A1"),
                    value(c0, "C0")
                )),
                open(format!(
                    "{}{}{}{}END\r\n",
                    value(b0, "B0"),
                    value(a0, "A0"),
                    value(c0, "C0"),
                    value(a1, "A1")
                )),
            ),
        Case::new("a missing first key", PLAIN)
            .seed(&seed)
            .send(format!("get {a2} {b0} {a0}\r\n"))
            .differs(
                open(format!("{}{}END\r\n", value(a0, "A0"), value(b0, "B0"))),
                open(format!("{}{}END\r\n", value(b0, "B0"), value(a0, "A0"))),
            ),
    ];
    fx.harness.run_all(cases);

    // walnut alone: more orders, duplicates and gets.
    let walnut_only = [
        (
            format!("get {c1} {c0} {a2} {b0} {a1} {a0}\r\n"),
            format!(
                "{}{}{}{}END\r\n",
                value(c0, "C0"),
                value(b0, "B0"),
                value(a1, "A1"),
                value(a0, "A0")
            ),
        ),
        (
            format!("get {a0} {a2} {a0} {b0} {c1} {a0}\r\n"),
            format!(
                "{}{}{}{}END\r\n",
                value(a0, "A0"),
                value(a0, "A0"),
                value(b0, "B0"),
                value(a0, "A0")
            ),
        ),
        (format!("get {a2} {c1}\r\n"), "END\r\n".to_string()),
    ];
    for (request, expected) in walnut_only {
        fx.harness.prepare(PLAIN, &seed);
        let got = fx
            .harness
            .observe(fx.harness.addr(PLAIN, Target::Walnut), request.as_bytes());
        assert_eq!(
            got,
            open(&expected),
            "walnut: {}",
            escape(request.as_bytes())
        );
    }
    // gets: the cas values are those memcached holds, in request order.
    fx.harness.prepare(PLAIN, &seed);
    let cas = |key: &str| String::from_utf8(fx.harness.cas_of(PLAIN, key.as_bytes())).unwrap();
    let got = fx.harness.observe(
        fx.harness.addr(PLAIN, Target::Walnut),
        format!("gets {c1} {b0} {a2} {a0}\r\n").as_bytes(),
    );
    assert_eq!(
        got,
        open(format!(
            "VALUE {b0} 0 2 {}\r\nB0\r\nVALUE {a0} 0 2 {}\r\nA0\r\nEND\r\n",
            cas(b0),
            cas(a0)
        )),
        "walnut gets with missing keys"
    );
}

#[test]
fn documented_multi_get_with_a_dead_server_returns_the_live_values_and_stays_open() {
    let fx = fixture_with_dead_second_server();
    let harness = &fx.harness;
    let (a, b, c) = (&fx.keys[0][0], &fx.keys[1][0], &fx.keys[2][0]);
    let (a2, b2) = (&fx.keys[0][1], &fx.keys[1][1]);
    let seed = [set(a, "A"), set(c, "C"), set(a2, "A2")].concat();
    let cases = [
        // No part answered: the failure itself.
        (
            format!("get {b} {b2}\r\n"),
            "SERVER_ERROR Connection refused\r\n".to_string(),
        ),
        (
            format!("get {a} {b} {c}\r\n"),
            format!("{}{}END\r\n", value(a, "A"), value(c, "C")),
        ),
        (
            format!("gets {b} {c} missing {a2}\r\n"),
            format!("VALUE {c} 0 1 cas#1\r\nC\r\nVALUE {a2} 0 2 cas#2\r\nA2\r\nEND\r\n"),
        ),
    ];
    for (request, walnut_values) in cases {
        // nutcracker answers SERVER_ERROR and closes. (Requests pipelined behind the multi-get
        // may or may not be answered first, so it is sent alone.)
        harness.prepare(PLAIN, &seed);
        let nutcracker = harness
            .observe_until_closed(harness.addr(PLAIN, Target::Nutcracker), request.as_bytes());
        assert_eq!(
            nutcracker,
            closed_after("SERVER_ERROR Connection refused\r\n"),
            "nutcracker: {}",
            escape(request.as_bytes())
        );
        // walnut answers with the values of the servers that answered, and stays open.
        harness.prepare(PLAIN, &seed);
        let input = format!("{request}get {a}\r\n");
        let walnut = harness.observe(harness.addr(PLAIN, Target::Walnut), input.as_bytes());
        let walnut = Observed {
            bytes: canonical_cas(&walnut.bytes),
            end: walnut.end,
        };
        assert_eq!(
            walnut,
            open(format!("{walnut_values}{}END\r\n", value(a, "A"))),
            "walnut: {}",
            escape(input.as_bytes())
        );
    }
}

/// One memcached behind both proxies (and reachable directly), for input nutcracker rejects.
fn one_server_harness() -> Harness {
    Harness::start(vec![MemcachedServer::start()], &[(PLAIN, "")])
}

#[test]
fn documented_malformed_input_is_answered_like_memcached() {
    let harness = one_server_harness();
    let long = "k".repeat(251);
    let cases = vec![
        Case::new("unknown command", PLAIN).send("foo bar\r\n"),
        Case::new("empty line", PLAIN).send("\r\n"),
        Case::new("get without a key", PLAIN).send("get\r\n"),
        Case::new("upper-case GET", PLAIN)
            .seed(set("k", "v"))
            .send("GET k\r\n"),
        Case::new("mixed-case Get", PLAIN)
            .seed(set("k", "v"))
            .send("Get k\r\n"),
        Case::new("upper-case SET and its data line", PLAIN).send("SET k 0 0 1\r\nv\r\nget k\r\n"),
        Case::new("get of a 251-byte key", PLAIN).send(format!("get {long}\r\n")),
        Case::new("multi-get with a 251-byte key", PLAIN)
            .seed(set("k", "v"))
            .send(format!("get k {long}\r\n")),
        Case::new("set of a 251-byte key and its data line", PLAIN)
            .send(format!("set {long} 0 0 1\r\nv\r\n")),
        Case::new("delete, incr, touch of a 251-byte key", PLAIN).send(format!(
            "delete {long}\r\nincr {long} 1\r\ntouch {long} 1\r\n"
        )),
        Case::new("data block longer than declared", PLAIN)
            .send("set k 0 0 3\r\nabcd\r\nget k\r\n"),
        Case::new("negative data length", PLAIN).send("set k 0 0 -1\r\nv\r\n"),
        Case::new("non-numeric length and flags", PLAIN)
            .send("set k 0 0 x\r\nv\r\nset k x 0 1\r\nv\r\n"),
        Case::new("negative exptime", PLAIN).send("set k 0 -1 1\r\nv\r\nget k\r\n"),
        Case::new("unknown token where noreply goes", PLAIN).send("set k 0 0 1 norply\r\nv\r\n"),
        Case::new("non-numeric incr delta", PLAIN)
            .seed(set("n", "1"))
            .send("incr n abc\r\nget n\r\n"),
        Case::new("delete k 0", PLAIN)
            .seed(set("k", "v"))
            .send("delete k 0\r\nget k\r\ndelete k 0\r\n"),
        Case::new("delete k 0 noreply", PLAIN)
            .seed(set("k", "v"))
            .send("delete k 0 noreply\r\nget k\r\n"),
        Case::new("delete k 1", PLAIN)
            .seed(set("k", "v"))
            .send("delete k 1\r\nget k\r\n"),
        Case::new("missing arguments", PLAIN).send("touch k\r\nincr k\r\nset k 0 0\r\n"),
        Case::new("non-numeric exptime", PLAIN)
            .seed(set("k", "v"))
            .send("touch k abc\r\ngat abc k\r\nset k 0 abc 1\r\nv\r\nget k\r\n"),
        Case::new("an extra token after incr's delta", PLAIN)
            .seed(set("n", "1"))
            .send("incr n 1 2\r\nget n\r\n"),
        Case::new("valid requests around a malformed one", PLAIN)
            .send("set k 0 0 1\r\nv\r\nfoo\r\nget k\r\nGET k\r\nappend k 0 0 1\r\nw\r\nget k\r\n"),
    ]
    .into_iter()
    .map(|case| case.like_memcached(silently_closed()))
    .collect();
    harness.run_all(cases);
}

#[test]
fn documented_gat_gats_and_meta_commands_are_answered_like_memcached() {
    let harness = one_server_harness();
    let seed = [set("k", "v"), set("j", "jj"), set("n", "10")].concat();
    let cases = vec![
        Case::new("gat", PLAIN)
            .seed(&seed)
            .send("gat 100 k\r\ngat 0 missing\r\ngat 100 k j missing\r\n"),
        Case::new("gats", PLAIN)
            .seed(&seed)
            .send("gats 100 k\r\ngats 0 j k\r\ngets k\r\n"),
        Case::new("mg", PLAIN).seed(&seed).send(
            "mg k v\r\nmg k\r\nmg k v f s k\r\nmg missing v\r\nmg k v c\r\nmg j v O123 k\r\n",
        ),
        Case::new("mg quiet mode and mn", PLAIN)
            .seed(&seed)
            .send("mg missing v q\r\nmg k v q\r\nmg j v q k\r\nmn\r\n"),
        Case::new("ms", PLAIN).seed(&seed).send(
            "ms new 2\r\nhi\r\nms k 3 F7\r\nnew\r\nms j 1 I\r\nx\r\nmg new v\r\nmg k v f\r\nget j\r\n",
        ),
        Case::new("ms with the item's cas", PLAIN)
            .seed(&seed)
            .send("ms k 1 C")
            .cas_of("k")
            .send("\r\nz\r\nms k 1 C1\r\ny\r\nmg k v\r\n"),
        Case::new("md", PLAIN)
            .seed(&seed)
            .send("md k\r\nmd k\r\nmd missing q\r\nmd j q\r\nmn\r\nget k j\r\n"),
        Case::new("ma", PLAIN)
            .seed(&seed)
            .send("ma n\r\nma n v\r\nma n MD D5 v\r\nma missing\r\nma missing N0 J13 v\r\nma k\r\n"),
        Case::new("me of a missing key", PLAIN).send("me missing\r\n"),
        Case::new("mn alone", PLAIN).send("mn\r\n"),
        Case::new("meta and classic commands interleaved", PLAIN)
            .seed(&seed)
            .send("get k\r\nmg k v\r\nset k 0 0 1\r\nw\r\nmg k v\r\nmn\r\nget k\r\n"),
    ]
    .into_iter()
    .map(|case| case.like_memcached(silently_closed()))
    .collect();
    harness.run_all(cases);
}

#[test]
fn documented_control_bytes_in_keys_and_server_wide_commands() {
    let harness = one_server_harness();
    let unsupported = |name: &str| format!("SERVER_ERROR unsupported command '{name}'\r\n");
    let bad_line = "CLIENT_ERROR bad command line format\r\n";
    let cases = vec![
        // nutcracker forwards a key with a control byte; memcached accepts it.
        Case::new("get of a key with a control byte", PLAIN)
            .send(b"get k\x01y\r\nget \x1fk\r\n")
            .differs(
                open("END\r\nEND\r\n"),
                open(format!("{bad_line}{bad_line}")),
            ),
        Case::new("get of a key with DEL (0x7f)", PLAIN)
            .send(b"get k\x7fy\r\n")
            .differs(open("END\r\n"), open(bad_line)),
        Case::new("delete, incr, touch of a key with a control byte", PLAIN)
            .send(b"delete k\x1b\r\nincr k\x1b 1\r\ntouch k\x1b 1\r\n")
            .differs(
                open("NOT_FOUND\r\nNOT_FOUND\r\nNOT_FOUND\r\n"),
                open(format!("{bad_line}{bad_line}{bad_line}")),
            ),
        Case::new("multi-get with a control byte in one key", PLAIN)
            .seed(set("k", "v"))
            .send(b"get k j\x02\r\nget k\r\n")
            .differs(
                open(format!(
                    "{}END\r\n{}END\r\n",
                    value("k", "v"),
                    value("k", "v")
                )),
                open(format!("{bad_line}{}END\r\n", value("k", "v"))),
            ),
        Case::new("stats", PLAIN)
            .send("stats\r\n")
            .differs(silently_closed(), open(unsupported("stats"))),
        Case::new("stats items", PLAIN)
            .send("stats items\r\n")
            .differs(silently_closed(), open(unsupported("stats"))),
        Case::new("flush_all changes nothing", PLAIN)
            .seed(set("k", "v"))
            .send("flush_all\r\nflush_all 0\r\nget k\r\n")
            .differs(
                silently_closed(),
                open(format!(
                    "{}{}{}END\r\n",
                    unsupported("flush_all"),
                    unsupported("flush_all"),
                    value("k", "v")
                )),
            ),
        Case::new("verbosity", PLAIN)
            .send("verbosity 1\r\n")
            .differs(silently_closed(), open(unsupported("verbosity"))),
    ];
    harness.run_all(cases);
}

#[test]
fn documented_meta_commands_route_by_key_like_classic_ones() {
    let fx = three_server_fixture();
    let k = &fx.keys;
    fx.harness.prepare(PLAIN, b"");
    // Meta writes through walnut land where nutcracker puts the same keys.
    let mut writes = String::new();
    for (s, keys) in k.iter().enumerate() {
        for key in &keys[..2] {
            writes.push_str(&format!("ms {key} 2\r\nm{s}\r\n"));
        }
    }
    let got = fx
        .harness
        .observe(fx.harness.addr(PLAIN, Target::Walnut), writes.as_bytes());
    assert_eq!(got, open("HD\r\n".repeat(6)), "walnut ms");
    for (s, (backend, keys)) in fx.harness.backends.iter().zip(k).enumerate() {
        let reply = backend
            .client()
            .call(format!("get {} {}\r\n", keys[0], keys[1]).as_bytes());
        let data = format!("m{s}");
        assert_eq!(
            escape(&reply),
            escape(
                format!(
                    "{}{}END\r\n",
                    value(&keys[0], &data),
                    value(&keys[1], &data)
                )
                .as_bytes()
            ),
            "backend s{s}"
        );
    }
    // Meta reads and deletes through walnut reach the key's server.
    let mut reads = String::new();
    for keys in k {
        reads.push_str(&format!("mg {} v k\r\nmd {}\r\n", keys[0], keys[1]));
    }
    reads.push_str("mn\r\n");
    let got = fx
        .harness
        .observe(fx.harness.addr(PLAIN, Target::Walnut), reads.as_bytes());
    let mut expected = String::new();
    for (s, keys) in k.iter().enumerate() {
        expected.push_str(&format!("VA 2 k{}\r\nm{s}\r\nHD\r\n", keys[0]));
    }
    expected.push_str("MN\r\n");
    assert_eq!(got, open(expected), "walnut mg/md");
    // Quiet mode over several servers: mg misses stay silent, hits answer, md of a missing
    // key still says NF (as memcached does), all in order.
    let got = fx.harness.observe(
        fx.harness.addr(PLAIN, Target::Walnut),
        format!(
            "mg {} v q\r\nmg {} v q\r\nmg {} v q k\r\nmd {} q\r\nmn\r\n",
            k[1][1], k[2][0], k[0][0], k[1][3]
        )
        .as_bytes(),
    );
    assert_eq!(
        got,
        open(format!(
            "VA 2\r\nm2\r\nVA 2 k{}\r\nm0\r\nNF\r\nMN\r\n",
            k[0][0]
        )),
        "walnut quiet mode over three servers"
    );
    // gat over keys on three servers (one deleted above): values in request order.
    let got = fx.harness.observe(
        fx.harness.addr(PLAIN, Target::Walnut),
        format!(
            "gat 100 {} {} {} {}\r\n",
            k[2][0], k[1][1], k[0][0], k[1][0]
        )
        .as_bytes(),
    );
    assert_eq!(
        got,
        open(format!(
            "{}{}{}END\r\n",
            value(&k[2][0], "m2"),
            value(&k[0][0], "m0"),
            value(&k[1][0], "m1")
        )),
        "walnut gat over three servers"
    );
}
