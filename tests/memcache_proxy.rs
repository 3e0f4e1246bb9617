//! memcached pools end to end, against real memcached servers behind walnut: every text
//! command with and without `noreply`, multi-get split and merged in request order, binary
//! values up to 1 MB, the key-length limit, malformed input compared with memcached's own
//! replies, meta commands and quiet mode, a long mixed pipeline checked reply by reply, and
//! dead servers.
//!
//! Where an expected reply depends on memcached's own rules (cas uniques, `gets`, `me`), it is
//! read from the owning memcached directly; where it is computed (the mixed pipeline), the
//! same bytes are first played against a lone memcached, so the expectation itself is checked.

#[allow(unused_imports)] // the shared fixture re-exports more than this file uses
mod common;

use std::collections::HashMap;

use common::mc::McClient;
use common::{free_port, local, MemcachedServer, ProxyProcess};

// ------------------------------------------------------------------------------------------
// Setup

/// A memcached pool on `port` over `servers`, in twemproxy's YAML.
fn pool_config(port: u16, servers: &[MemcachedServer]) -> String {
    let mut conf = format!(
        "mc:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 2000\n  redis: false\n  servers:\n"
    );
    for server in servers {
        conf.push_str(&format!("   - {}\n", server.server_line(1, None)));
    }
    conf
}

/// Real memcached servers with walnut in front of them.
struct Cluster {
    servers: Vec<MemcachedServer>,
    _walnut: ProxyProcess,
    port: u16,
}

impl Cluster {
    fn start(count: usize) -> Cluster {
        Cluster::over((0..count).map(|_| MemcachedServer::start()).collect())
    }

    fn over(servers: Vec<MemcachedServer>) -> Cluster {
        let port = free_port();
        let walnut = ProxyProcess::walnut(&pool_config(port, &servers), &[local(port)]);
        Cluster {
            servers,
            _walnut: walnut,
            port,
        }
    }

    /// A new client connection to walnut.
    fn client(&self) -> McClient {
        McClient::connect(local(self.port))
    }

    /// For each key, the index of the server holding it (asked directly with `mg <key>`), or
    /// `None`. Panics if a key is on more than one server.
    fn owners(&self, keys: &[Vec<u8>]) -> Vec<Option<usize>> {
        let mut owners = vec![None; keys.len()];
        for (index, server) in self.servers.iter().enumerate() {
            if std::net::TcpStream::connect(server.addr()).is_err() {
                continue; // a killed server holds nothing
            }
            let mut direct = server.client();
            let request: Vec<u8> = keys.iter().flat_map(|key| line(&[b"mg", key])).collect();
            let replies = direct.exchange(&request, keys.len());
            for (n, reply) in replies.iter().enumerate() {
                match reply.as_slice() {
                    b"HD\r\n" => {
                        assert_eq!(owners[n], None, "{} is on two servers", show(&keys[n]));
                        owners[n] = Some(index);
                    }
                    b"EN\r\n" => {}
                    other => panic!("mg {} answered {}", show(&keys[n]), show(other)),
                }
            }
        }
        owners
    }

    /// The server holding `key`, which must be stored.
    fn owner(&self, key: &[u8]) -> usize {
        self.owners(&[key.to_vec()])[0].unwrap_or_else(|| panic!("{} is on no server", show(key)))
    }

    /// `per_server` key names starting with `prefix` for each server (indexed like `servers`),
    /// found by storing candidates through walnut and asking each server which it holds. The
    /// keys are deleted again: they come back absent.
    fn keys_by_server(&self, prefix: &str, per_server: usize) -> Vec<Vec<Vec<u8>>> {
        let mut client = self.client();
        let mut groups = vec![Vec::new(); self.servers.len()];
        let mut next = 0;
        while groups.iter().any(|group| group.len() < per_server) {
            assert!(
                next < 100_000,
                "ketama never placed enough keys on every server"
            );
            let batch: Vec<Vec<u8>> = (next..next + 64)
                .map(|n| format!("{prefix}{n}").into_bytes())
                .collect();
            next += 64;
            let stores: Vec<u8> = batch
                .iter()
                .flat_map(|key| store("set", key, 0, 0, b"probe", false))
                .collect();
            for reply in client.exchange(&stores, batch.len()) {
                assert_eq!(show(&reply), "STORED\\r\\n");
            }
            for (key, owner) in batch.iter().zip(self.owners(&batch)) {
                let owner = owner.unwrap_or_else(|| panic!("{} was not stored", show(key)));
                if groups[owner].len() < per_server {
                    groups[owner].push(key.clone());
                }
            }
            let deletes: Vec<u8> = batch
                .iter()
                .flat_map(|key| line(&[b"delete", key]))
                .collect();
            for reply in client.exchange(&deletes, batch.len()) {
                assert_eq!(show(&reply), "DELETED\\r\\n");
            }
        }
        groups
    }
}

// ------------------------------------------------------------------------------------------
// Bytes

/// Printable form of protocol bytes for assertion messages (at most 400 bytes shown).
fn show(bytes: &[u8]) -> String {
    let cut = bytes.len().min(400);
    let mut text = bytes[..cut].escape_ascii().to_string();
    if cut < bytes.len() {
        text.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    text
}

/// Space-separated words ending in CRLF.
fn line(words: &[&[u8]]) -> Vec<u8> {
    let mut out = words.join(&b' ');
    out.extend_from_slice(b"\r\n");
    out
}

/// `<cmd> <key> <flags> <exptime> <bytes> [noreply]\r\n<data>\r\n`
fn store(cmd: &str, key: &[u8], flags: u32, exptime: i64, data: &[u8], noreply: bool) -> Vec<u8> {
    let mut out = format!("{cmd} ").into_bytes();
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" {flags} {exptime} {}", data.len()).as_bytes());
    if noreply {
        out.extend_from_slice(b" noreply");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// One `VALUE <key> <flags> <bytes>\r\n<data>\r\n` block.
fn value(key: &[u8], flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = b"VALUE ".to_vec();
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" {flags} {}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// One `VALUE <key> <flags> <bytes> <cas>\r\n<data>\r\n` block.
fn value_cas(key: &[u8], flags: u32, data: &[u8], cas: u64) -> Vec<u8> {
    let mut out = b"VALUE ".to_vec();
    out.extend_from_slice(key);
    out.extend_from_slice(format!(" {flags} {} {cas}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A retrieval reply: the blocks, then `END\r\n`.
fn found(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = blocks.concat();
    out.extend_from_slice(b"END\r\n");
    out
}

/// A meta `VA <bytes><flags>\r\n<data>\r\n` reply (`flags` includes its leading spaces).
fn va(data: &[u8], flags: &str) -> Vec<u8> {
    let mut out = format!("VA {}{flags}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The cas unique of the `VALUE … <cas>` header a `gets` reply starts with.
fn cas_of(gets_reply: &[u8]) -> u64 {
    let header = gets_reply.split(|&b| b == b'\r').next().unwrap();
    let text = std::str::from_utf8(header).unwrap();
    assert!(text.starts_with("VALUE "), "not a gets hit: {text}");
    text.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Asserts two reply lists are equal, naming the first difference.
fn assert_replies(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    for (n, (got, want)) in got.iter().zip(want).enumerate() {
        assert!(
            got == want,
            "{what}: reply #{n} differs\n got: {}\nwant: {}",
            show(got),
            show(want)
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: reply count");
}

/// Asserts two byte strings are equal, showing where they first differ.
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(80);
    panic!(
        "{what}: {} bytes, want {}; first difference at byte {at}\n got: …{}\nwant: …{}",
        got.len(),
        want.len(),
        show(&got[from..got.len().min(at + 200)]),
        show(&want[from..want.len().min(at + 200)])
    );
}

/// Requests, each with the exact replies it must get (none for `noreply` and quiet meta).
#[derive(Default)]
struct Script {
    steps: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
}

impl Script {
    fn step(&mut self, request: impl AsRef<[u8]>, replies: &[&[u8]]) {
        self.steps.push((
            request.as_ref().to_vec(),
            replies.iter().map(|r| r.to_vec()).collect(),
        ));
    }

    fn step_owned(&mut self, request: Vec<u8>, replies: Vec<Vec<u8>>) {
        self.steps.push((request, replies));
    }

    fn bytes(&self) -> Vec<u8> {
        self.steps.iter().flat_map(|(r, _)| r.clone()).collect()
    }

    fn expected(&self) -> Vec<Vec<u8>> {
        self.steps.iter().flat_map(|(_, r)| r.clone()).collect()
    }

    /// The request whose replies include reply number `index`.
    fn request_of(&self, index: usize) -> (usize, &[u8]) {
        let mut seen = 0;
        for (n, (request, replies)) in self.steps.iter().enumerate() {
            seen += replies.len();
            if index < seen {
                return (n, request);
            }
        }
        (self.steps.len(), b"(after the last request)")
    }

    /// Sends every request in one write, then checks every reply.
    fn play(&self, client: &mut McClient, what: &str) {
        let want = self.expected();
        client.send(&self.bytes());
        let got = client.read_replies(want.len());
        for (n, (got, want)) in got.replies.iter().zip(&want).enumerate() {
            if got != want {
                let (step, request) = self.request_of(n);
                panic!(
                    "{what}: reply #{n} (to request #{step}: {}) differs\n got: {}\nwant: {}",
                    show(request),
                    show(got),
                    show(want)
                );
            }
        }
        assert_eq!(
            got.replies.len(),
            want.len(),
            "{what}: replies missing (closed: {}, rest: {})",
            got.closed,
            show(&got.rest)
        );
    }

    /// Sends every request cut into pieces of 1 to `max_piece` bytes (one write each, so the
    /// proxy sees requests split anywhere), then checks every reply.
    fn play_in_pieces(&self, client: &mut McClient, max_piece: u64, seed: u64, what: &str) {
        let want = self.expected();
        let bytes = self.bytes();
        let mut rng = Lcg(seed);
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + 1 + rng.below(max_piece) as usize).min(bytes.len());
            client.send(&bytes[at..end]);
            at = end;
        }
        let got = client.read_replies(want.len());
        assert_replies(&got.replies, &want, what);
    }

    /// Sends the requests one by one, waiting for each one's replies.
    fn play_one_by_one(&self, client: &mut McClient, what: &str) {
        for (n, (request, replies)) in self.steps.iter().enumerate() {
            if replies.is_empty() {
                client.send(request);
                continue;
            }
            let got = client.exchange(request, replies.len());
            assert_replies(
                &got,
                replies,
                &format!("{what}, request #{n} {}", show(request)),
            );
        }
    }
}

/// Binary test data of `len` bytes: CR, LF, NUL, 0xff and protocol words (`END\r\n`,
/// `VALUE`) woven through bytes from a seeded generator.
fn binary_data(len: usize, seed: u64) -> Vec<u8> {
    const TRAPS: &[&[u8]] = &[
        b"\r\n",
        b"\0",
        b"\xff",
        b"END\r\n",
        b"\r\nVALUE k 0 1\r\n",
        b"\n",
        b"\r",
        b"VA 3\r\n",
    ];
    let mut rng = Lcg(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        if rng.below(8) == 0 {
            out.extend_from_slice(TRAPS[rng.below(TRAPS.len() as u64) as usize]);
        } else {
            out.push(rng.next() as u8);
        }
    }
    out.truncate(len);
    out
}

/// A small deterministic generator (no test here depends on chance).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ------------------------------------------------------------------------------------------
// 1. Every command, with and without noreply

#[test]
fn storage_commands_reply_stored_or_not_stored_as_memcached_does() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut script = Script::default();
    script.step(store("set", b"st:a", 5, 0, b"abc", false), &[b"STORED\r\n"]);
    script.step(b"get st:a\r\n", &[b"VALUE st:a 5 3\r\nabc\r\nEND\r\n"]);
    script.step(
        store("set", b"st:a", 6, 0, b"abcd", false),
        &[b"STORED\r\n"],
    );
    script.step(
        store("add", b"st:a", 0, 0, b"x", false),
        &[b"NOT_STORED\r\n"],
    );
    script.step(store("add", b"st:b", 7, 0, b"xy", false), &[b"STORED\r\n"]);
    script.step(
        store("replace", b"st:c", 0, 0, b"x", false),
        &[b"NOT_STORED\r\n"],
    );
    script.step(
        store("replace", b"st:a", 9, 0, b"xyz", false),
        &[b"STORED\r\n"],
    );
    // append and prepend keep the item's flags; the ones given are ignored.
    script.step(
        store("append", b"st:a", 1, 0, b"12", false),
        &[b"STORED\r\n"],
    );
    script.step(
        store("prepend", b"st:a", 2, 0, b"00", false),
        &[b"STORED\r\n"],
    );
    script.step(
        store("append", b"st:c", 0, 0, b"x", false),
        &[b"NOT_STORED\r\n"],
    );
    script.step(
        store("prepend", b"st:c", 0, 0, b"x", false),
        &[b"NOT_STORED\r\n"],
    );
    script.step(store("set", b"st:e", 0, 0, b"", false), &[b"STORED\r\n"]);
    script.step(
        b"get st:a\r\nget st:b\r\nget st:c\r\nget st:e\r\n",
        &[
            b"VALUE st:a 9 7\r\n00xyz12\r\nEND\r\n",
            b"VALUE st:b 7 2\r\nxy\r\nEND\r\n",
            b"END\r\n",
            b"VALUE st:e 0 0\r\n\r\nEND\r\n",
        ],
    );
    // flags up to 2^32-1 and an expiry in the future are kept as given.
    script.step(
        store("set", b"st:f", u32::MAX, 100_000, b"f", false),
        &[b"STORED\r\n"],
    );
    script.step(
        b"get st:f\r\n",
        &[b"VALUE st:f 4294967295 1\r\nf\r\nEND\r\n"],
    );
    script.play_one_by_one(&mut client, "one by one");

    // The same again as one pipelined write, on fresh keys.
    let pipelined = Script {
        steps: script
            .steps
            .iter()
            .map(|(req, replies)| {
                let rename = |b: &[u8]| -> Vec<u8> {
                    String::from_utf8_lossy(b)
                        .replace("st:", "sp:")
                        .into_bytes()
                };
                (rename(req), replies.iter().map(|r| rename(r)).collect())
            })
            .collect(),
    };
    pipelined.play(&mut client, "pipelined");

    // The values really live on the memcached servers, spread over them.
    let keys: Vec<Vec<u8>> = ["st:a", "st:b", "st:e", "st:f", "sp:a", "sp:b"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let owners = cluster.owners(&keys);
    assert!(owners.iter().all(Option::is_some), "{owners:?}");
}

#[test]
fn noreply_storage_commands_take_effect_without_any_reply() {
    let cluster = Cluster::start(3);
    let mut script = Script::default();
    script.step(store("set", b"nr:a", 1, 0, b"abc", true), &[]);
    script.step(store("add", b"nr:a", 2, 0, b"x", true), &[]);
    script.step(store("add", b"nr:b", 3, 0, b"xy", true), &[]);
    script.step(store("replace", b"nr:c", 0, 0, b"x", true), &[]);
    script.step(store("replace", b"nr:b", 4, 0, b"zz", true), &[]);
    script.step(store("append", b"nr:a", 0, 0, b"12", true), &[]);
    script.step(store("prepend", b"nr:a", 0, 0, b"00", true), &[]);
    script.step(store("append", b"nr:c", 0, 0, b"x", true), &[]);
    script.step(store("prepend", b"nr:c", 0, 0, b"x", true), &[]);
    script.step(
        b"get nr:a\r\nget nr:b\r\nget nr:c\r\n",
        &[
            b"VALUE nr:a 1 7\r\n00abc12\r\nEND\r\n",
            b"VALUE nr:b 4 2\r\nzz\r\nEND\r\n",
            b"END\r\n",
        ],
    );
    script.play(&mut cluster.client(), "pipelined");

    // Sent one at a time (each noreply command alone in its write), then read back.
    let mut script = Script::default();
    script.step(store("set", b"nr1:a", 1, 0, b"abc", true), &[]);
    script.step(store("add", b"nr1:b", 3, 0, b"xy", true), &[]);
    script.step(store("replace", b"nr1:b", 4, 0, b"zz", true), &[]);
    script.step(store("append", b"nr1:a", 0, 0, b"12", true), &[]);
    script.step(store("prepend", b"nr1:a", 0, 0, b"00", true), &[]);
    script.step(
        b"get nr1:a nr1:b nr1:c\r\n",
        &[b"VALUE nr1:a 1 7\r\n00abc12\r\nVALUE nr1:b 4 2\r\nzz\r\nEND\r\n"],
    );
    script.play_one_by_one(&mut cluster.client(), "one by one");
}

#[test]
fn cas_stores_only_with_the_current_unique() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    assert_eq!(
        client.call(&store("set", b"cas:a", 0, 0, b"a", false)),
        b"STORED\r\n"
    );
    let reply = client.call(b"gets cas:a\r\n");
    let unique = cas_of(&reply);
    assert_eq!(
        reply,
        found(&[value_cas(b"cas:a", 0, b"a", unique)]),
        "gets"
    );
    let cas = |data: &[u8], unique: u64, noreply: bool| {
        let mut out = format!("cas cas:a 3 0 {} {unique}", data.len()).into_bytes();
        if noreply {
            out.extend_from_slice(b" noreply");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    };
    assert_eq!(client.call(&cas(b"b", unique + 1000, false)), b"EXISTS\r\n");
    assert_eq!(client.call(&cas(b"b", unique, false)), b"STORED\r\n");
    assert_eq!(
        client.call(b"get cas:a\r\n"),
        b"VALUE cas:a 3 1\r\nb\r\nEND\r\n"
    );
    // The old unique is stale now.
    assert_eq!(client.call(&cas(b"c", unique, false)), b"EXISTS\r\n");
    assert_eq!(
        client.call(b"cas cas:none 0 0 1 1\r\nx\r\n"),
        b"NOT_FOUND\r\n"
    );

    // noreply: a matching cas stores, a stale one does not, neither answers.
    let unique = cas_of(&client.call(b"gets cas:a\r\n"));
    let mut batch = cas(b"dd", unique, true);
    batch.extend(cas(b"ee", unique, true));
    batch.extend_from_slice(b"get cas:a\r\n");
    assert_eq!(
        client.exchange(&batch, 1),
        vec![b"VALUE cas:a 3 2\r\ndd\r\nEND\r\n".to_vec()]
    );

    // The unique walnut reports is the owning server's own.
    let owner = cluster.owner(b"cas:a");
    assert_eq!(
        client.call(b"gets cas:a\r\n"),
        cluster.servers[owner].client().call(b"gets cas:a\r\n")
    );
}

#[test]
fn single_key_get_and_gets_return_the_owning_servers_reply_byte_for_byte() {
    let cluster = Cluster::start(3);
    let keys = cluster.keys_by_server("one:", 2);
    let mut client = cluster.client();
    for (server, group) in keys.iter().enumerate() {
        let key = &group[0];
        let data = format!("data on server {server}");
        assert_eq!(
            client.call(&store(
                "set",
                key,
                40 + server as u32,
                0,
                data.as_bytes(),
                false
            )),
            b"STORED\r\n"
        );
        let mut direct = cluster.servers[server].client();
        let get = client.call(&line(&[b"get", key]));
        assert_eq!(
            show(&get),
            show(&found(&[value(key, 40 + server as u32, data.as_bytes())]))
        );
        for verb in ["get", "gets"] {
            let request = line(&[verb.as_bytes(), key]);
            assert_eq!(
                show(&client.call(&request)),
                show(&direct.call(&request)),
                "{verb} {}",
                show(key)
            );
        }
        // A key that is absent (the second of the group, same server).
        let absent = &group[1];
        for verb in ["get", "gets"] {
            assert_eq!(client.call(&line(&[verb.as_bytes(), absent])), b"END\r\n");
        }
    }
}

#[test]
fn gat_and_gats_return_values_in_request_order_and_set_the_expiry() {
    let cluster = Cluster::start(3);
    let keys = cluster.keys_by_server("gat:", 1);
    let (a, b, c) = (&keys[0][0], &keys[1][0], &keys[2][0]);
    let mut client = cluster.client();
    for (n, key) in [a, b, c].into_iter().enumerate() {
        let data = format!("g{n}");
        assert_eq!(
            client.call(&store("set", key, n as u32, 0, data.as_bytes(), false)),
            b"STORED\r\n"
        );
    }
    let va = value(a, 0, b"g0");
    let vb = value(b, 1, b"g1");
    let vc = value(c, 2, b"g2");
    assert_eq!(
        client.call(&line(&[b"gat", b"0", a])),
        found(std::slice::from_ref(&va))
    );
    let request = line(&[b"gat", b"100", c, b"gat:none", a, b, c]);
    assert_bytes(
        &client.call(&request),
        &found(&[vc.clone(), va.clone(), vb.clone(), vc.clone()]),
        "multi-key gat",
    );
    // gats: the cas uniques are the owners' own.
    let uniques: Vec<u64> = [a, b, c]
        .iter()
        .enumerate()
        .map(|(n, key)| cas_of(&cluster.servers[n].client().call(&line(&[b"gets", key]))))
        .collect();
    assert_eq!(
        client.call(&line(&[b"gats", b"0", b])),
        found(&[value_cas(b, 1, b"g1", uniques[1])])
    );
    assert_bytes(
        &client.call(&line(&[b"gats", b"0", b, a, b"gat:none", c])),
        &found(&[
            value_cas(b, 1, b"g1", uniques[1]),
            value_cas(a, 0, b"g0", uniques[0]),
            value_cas(c, 2, b"g2", uniques[2]),
        ]),
        "multi-key gats",
    );
    // A negative expiry returns the value and expires it at once.
    assert_eq!(client.call(&line(&[b"gat", b"-1", a, c])), found(&[va, vc]));
    assert_eq!(
        client.call(&line(&[b"get", a, b, c])),
        found(&[vb]),
        "gat -1 expired a and c"
    );
}

#[test]
fn delete_with_zero_or_noreply_removes_the_key() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut script = Script::default();
    for key in ["del:a", "del:b", "del:c", "del:d"] {
        script.step(
            store("set", key.as_bytes(), 0, 0, b"v", false),
            &[b"STORED\r\n"],
        );
    }
    script.step(b"delete del:a\r\n", &[b"DELETED\r\n"]);
    script.step(b"delete del:a\r\n", &[b"NOT_FOUND\r\n"]);
    script.step(b"delete del:b 0\r\n", &[b"DELETED\r\n"]);
    script.step(b"delete del:b 0\r\n", &[b"NOT_FOUND\r\n"]);
    script.step(b"delete del:c noreply\r\n", &[]);
    script.step(b"delete del:d 0 noreply\r\n", &[]);
    script.step(b"delete del:none noreply\r\n", &[]);
    script.step(b"delete del:none 0 noreply\r\n", &[]);
    script.step(b"get del:a del:b del:c del:d\r\n", &[b"END\r\n"]);
    script.step(b"delete del:c\r\n", &[b"NOT_FOUND\r\n"]);
    script.play_one_by_one(&mut client, "one by one");
    script.play(&mut client, "pipelined (everything already gone)");
}

#[test]
fn incr_and_decr_count_wrap_pad_and_refuse_bad_deltas() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut script = Script::default();
    script.step(store("set", b"n:a", 4, 0, b"10", false), &[b"STORED\r\n"]);
    script.step(b"incr n:a 5\r\n", &[b"15\r\n"]);
    script.step(b"decr n:a 3\r\n", &[b"12\r\n"]);
    script.step(b"decr n:a 100\r\n", &[b"0\r\n"]);
    // memcached shortens a number in place, padding with spaces; flags are kept.
    script.step(b"get n:a\r\n", &[b"VALUE n:a 4 2\r\n0 \r\nEND\r\n"]);
    script.step(
        b"incr n:a 18446744073709551615\r\n",
        &[b"18446744073709551615\r\n"],
    );
    script.step(b"incr n:a 2\r\n", &[b"1\r\n"]);
    script.step(b"incr n:none 1\r\n", &[b"NOT_FOUND\r\n"]);
    script.step(b"decr n:none 1\r\n", &[b"NOT_FOUND\r\n"]);
    script.step(
        store("set", b"n:text", 0, 0, b"abc", false),
        &[b"STORED\r\n"],
    );
    script.step(
        b"incr n:text 1\r\n",
        &[b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"],
    );
    script.step(
        b"incr n:a -1\r\n",
        &[b"CLIENT_ERROR invalid numeric delta argument\r\n"],
    );
    script.step(
        b"decr n:a abc\r\n",
        &[b"CLIENT_ERROR invalid numeric delta argument\r\n"],
    );
    script.step(
        b"incr n:a 18446744073709551616\r\n",
        &[b"CLIENT_ERROR invalid numeric delta argument\r\n"],
    );
    // noreply
    script.step(store("set", b"n:b", 0, 0, b"10", false), &[b"STORED\r\n"]);
    script.step(b"incr n:b 5 noreply\r\n", &[]);
    script.step(b"decr n:b 2 noreply\r\n", &[]);
    script.step(b"incr n:none 1 noreply\r\n", &[]);
    script.step(b"decr n:none 1 noreply\r\n", &[]);
    script.step(b"get n:b n:none\r\n", &[b"VALUE n:b 0 2\r\n13\r\nEND\r\n"]);
    script.play_one_by_one(&mut client, "one by one");

    let mut again = Script::default();
    again.step(store("set", b"n:c", 0, 0, b"99", false), &[b"STORED\r\n"]);
    again.step(b"incr n:c 1\r\n", &[b"100\r\n"]);
    again.step(b"incr n:c 1 noreply\r\n", &[]);
    again.step(b"decr n:c 95\r\n", &[b"6\r\n"]);
    again.step(b"get n:c\r\n", &[b"VALUE n:c 0 3\r\n6  \r\nEND\r\n"]);
    again.play(&mut client, "pipelined");
}

#[test]
fn touch_with_and_without_noreply_sets_the_expiry() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut script = Script::default();
    for key in ["t:a", "t:b", "t:c", "t:d"] {
        script.step(
            store("set", key.as_bytes(), 0, 0, b"v", false),
            &[b"STORED\r\n"],
        );
    }
    script.step(b"touch t:a 0\r\n", &[b"TOUCHED\r\n"]);
    script.step(b"touch t:b 100000\r\n", &[b"TOUCHED\r\n"]);
    script.step(b"touch t:none 0\r\n", &[b"NOT_FOUND\r\n"]);
    // A negative expiry expires the item at once.
    script.step(b"touch t:c -1\r\n", &[b"TOUCHED\r\n"]);
    script.step(b"touch t:d -1 noreply\r\n", &[]);
    script.step(b"touch t:a 0 noreply\r\n", &[]);
    script.step(b"touch t:none 0 noreply\r\n", &[]);
    script.step(
        b"get t:a t:b t:c t:d\r\n",
        &[b"VALUE t:a 0 1\r\nv\r\nVALUE t:b 0 1\r\nv\r\nEND\r\n"],
    );
    script.step(b"mg t:a t\r\n", &[b"HD t-1\r\n"]);
    script.play_one_by_one(&mut client, "one by one");
}

#[test]
fn version_is_answered_by_a_backend_memcached() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let direct = cluster.servers[0].client().call(b"version\r\n");
    assert!(direct.starts_with(b"VERSION 1.6."), "{}", show(&direct));
    assert_eq!(show(&client.call(b"version\r\n")), show(&direct));
    // Pipelined among other requests, it keeps its place.
    let replies = client.exchange(
        b"get v:none\r\nversion\r\nset v:a 0 0 1 noreply\r\nx\r\nversion\r\nget v:a\r\n",
        4,
    );
    assert_replies(
        &replies,
        &[
            b"END\r\n".to_vec(),
            direct.clone(),
            direct,
            b"VALUE v:a 0 1\r\nx\r\nEND\r\n".to_vec(),
        ],
        "pipelined version",
    );
}

#[test]
fn quit_answers_what_came_before_then_closes() {
    let cluster = Cluster::start(2);
    let mut client = cluster.client();
    client.send(b"set q:a 0 0 1\r\nx\r\nget q:a\r\nmn\r\nquit\r\nget q:a\r\n");
    let got = client.read_replies(4);
    assert_replies(
        &got.replies,
        &[
            b"STORED\r\n".to_vec(),
            b"VALUE q:a 0 1\r\nx\r\nEND\r\n".to_vec(),
            b"MN\r\n".to_vec(),
        ],
        "before quit",
    );
    assert!(got.closed, "walnut closed the connection after quit");
    assert!(
        got.rest.is_empty(),
        "nothing after quit: {}",
        show(&got.rest)
    );

    // quit alone.
    let mut client = cluster.client();
    client.send(b"quit\r\n");
    assert!(client.is_closed_by_peer());
    // Other clients are unaffected.
    assert_eq!(
        cluster.client().call(b"get q:a\r\n"),
        b"VALUE q:a 0 1\r\nx\r\nEND\r\n"
    );
}

#[test]
fn noreply_never_delays_or_reorders_other_replies() {
    let cluster = Cluster::start(3);
    let keys = cluster.keys_by_server("order:", 3);
    let k = |server: usize, n: usize| keys[server][n].clone();
    let mut client = cluster.client();
    let mut script = Script::default();
    for round in 0..50u32 {
        let data = format!("r{round}");
        let d = data.as_bytes();
        let s = round as usize % 3;
        script.step(store("set", &k(s, 0), round, 0, d, true), &[]);
        let other = k((s + 1) % 3, 1);
        script.step_owned(line(&[b"get", &other]), vec![b"END\r\n".to_vec()]);
        script.step_owned(
            line(&[b"get", &k(s, 0)]),
            vec![found(&[value(&k(s, 0), round, d)])],
        );
        script.step(store("set", &k(s, 2), 0, 0, b"5", true), &[]);
        script.step_owned(
            [
                line(&[b"incr", &k(s, 2), b"1", b"noreply"]),
                line(&[b"incr", &k(s, 2), b"1"]),
            ]
            .concat(),
            vec![b"7\r\n".to_vec()],
        );
        script.step_owned(line(&[b"delete", &k(s, 0), b"noreply"]), vec![]);
        script.step_owned(
            line(&[b"get", &k(s, 0), &k(s, 2)]),
            vec![found(&[value(&k(s, 2), 0, b"7")])],
        );
        script.step_owned(line(&[b"touch", &k(s, 2), b"0", b"noreply"]), vec![]);
        script.step(b"mn\r\n", &[b"MN\r\n"]);
    }
    script.play(&mut client, "pipelined");
    script.play_one_by_one(&mut client, "one by one");
}

// ------------------------------------------------------------------------------------------
// 2. Multi-get

#[test]
fn multi_get_of_10000_keys_merges_in_request_order() {
    const KEYS: usize = 10_000;
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let key = |i: usize| format!("{i}.mk").into_bytes();
    let data = |i: usize| format!("value-{i}-{}", "x".repeat(i % 23)).into_bytes();
    // Every tenth key (i % 10 == 7) is left out on purpose.
    let stored = |i: usize| i % 10 != 7;
    for chunk in (0..KEYS)
        .filter(|&i| stored(i))
        .collect::<Vec<_>>()
        .chunks(1000)
    {
        let request: Vec<u8> = chunk
            .iter()
            .flat_map(|&i| store("set", &key(i), i as u32, 0, &data(i), false))
            .collect();
        for reply in client.exchange(&request, chunk.len()) {
            assert_eq!(reply, b"STORED\r\n");
        }
    }
    // The keys are spread over every server.
    let owners = cluster.owners(&(0..KEYS).map(key).collect::<Vec<_>>());
    for server in 0..3 {
        let held = owners.iter().filter(|o| **o == Some(server)).count();
        assert!(held > 1000, "server {server} holds {held} keys");
    }

    // Request order: ascending, then a permutation that jumps between servers.
    let orders: [Vec<usize>; 2] = [
        (0..KEYS).collect(),
        (0..KEYS).map(|j| (j * 7919 + 13) % KEYS).collect(),
    ];
    for order in &orders {
        let mut request = b"get".to_vec();
        for &i in order {
            request.push(b' ');
            request.extend(key(i));
        }
        request.extend_from_slice(b"\r\n");
        let want = found(
            &order
                .iter()
                .filter(|&&i| stored(i))
                .map(|&i| value(&key(i), i as u32, &data(i)))
                .collect::<Vec<_>>(),
        );
        assert_bytes(&client.call(&request), &want, "get of 10,000 keys");
    }

    // gets: the uniques are each owner's own, read from the servers directly.
    let mut uniques = HashMap::new();
    for server in &cluster.servers {
        let mut request = b"gets".to_vec();
        for i in 0..KEYS {
            request.push(b' ');
            request.extend(key(i));
        }
        request.extend_from_slice(b"\r\n");
        let reply = server.client().call(&request);
        for header in reply
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"VALUE "))
        {
            let text = std::str::from_utf8(header).unwrap().trim_end();
            let words: Vec<&str> = text.split(' ').collect();
            uniques.insert(words[1].to_string(), words[4].parse::<u64>().unwrap());
        }
    }
    assert_eq!(uniques.len(), KEYS - KEYS / 10);
    let order = &orders[1];
    let mut request = b"gets".to_vec();
    for &i in order {
        request.push(b' ');
        request.extend(key(i));
    }
    request.extend_from_slice(b"\r\n");
    let want = found(
        &order
            .iter()
            .filter(|&&i| stored(i))
            .map(|&i| {
                let unique = uniques[&format!("{i}.mk")];
                value_cas(&key(i), i as u32, &data(i), unique)
            })
            .collect::<Vec<_>>(),
    );
    assert_bytes(&client.call(&request), &want, "gets of 10,000 keys");
}

#[test]
fn multi_get_repeats_a_duplicate_key_once_per_occurrence() {
    let cluster = Cluster::start(3);
    let keys = cluster.keys_by_server("dup:", 1);
    let (a, b, c) = (&keys[0][0], &keys[1][0], &keys[2][0]);
    let mut client = cluster.client();
    for (n, key) in [a, b].into_iter().enumerate() {
        assert_eq!(
            client.call(&store("set", key, 0, 0, format!("d{n}").as_bytes(), false)),
            b"STORED\r\n"
        );
    }
    let va = value(a, 0, b"d0");
    let vb = value(b, 0, b"d1");
    assert_bytes(
        &client.call(&line(&[b"get", a, b, a, c, a, b])),
        &found(&[va.clone(), vb.clone(), va.clone(), va.clone(), vb.clone()]),
        "duplicates",
    );
    assert_bytes(
        &client.call(&line(&[b"get", a, a])),
        &found(&[va.clone(), va.clone()]),
        "one key twice",
    );
    assert_eq!(client.call(&line(&[b"get", c, c, c])), b"END\r\n");
    // Extra spaces between keys are separators, as in memcached.
    let mut spaced = b"get  ".to_vec();
    spaced.extend_from_slice(a);
    spaced.extend_from_slice(b"   ");
    spaced.extend_from_slice(b);
    spaced.extend_from_slice(b"\r\n");
    assert_bytes(&client.call(&spaced), &found(&[va, vb]), "extra spaces");
}

// ------------------------------------------------------------------------------------------
// 3. Values: 1 byte to 1 MB, binary

#[test]
fn values_from_1_byte_to_1_mb_are_binary_safe() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let mut items: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"bin:nul".to_vec(), b"\0".to_vec()),
        (b"bin:ff".to_vec(), b"\xff".to_vec()),
        (b"bin:cr".to_vec(), b"\r".to_vec()),
        (b"bin:lf".to_vec(), b"\n".to_vec()),
        (b"bin:crlf".to_vec(), b"\r\n".to_vec()),
        (b"bin:end".to_vec(), b"END\r\n".to_vec()),
        (
            b"bin:fake".to_vec(),
            b"VALUE bin:x 0 2\r\nzz\r\nEND\r\n".to_vec(),
        ),
    ];
    let sizes = [
        1, 2, 3, 100, 1023, 1024, 1025, 4096, 16_383, 16_384, 16_385, 65_535, 65_536, 65_537,
        100_000, 524_288, 999_999, 1_000_000,
    ];
    for (n, &size) in sizes.iter().enumerate() {
        items.push((
            format!("bin:size:{size}").into_bytes(),
            binary_data(size, n as u64 + 1),
        ));
    }
    for (n, (key, data)) in items.iter().enumerate() {
        assert_eq!(
            show(&client.call(&store("set", key, n as u32, 0, data, false))),
            "STORED\\r\\n",
            "set {} ({} bytes)",
            show(key),
            data.len()
        );
    }
    for (n, (key, data)) in items.iter().enumerate() {
        let want = found(&[value(key, n as u32, data)]);
        let got = client.call(&line(&[b"get", key]));
        assert_bytes(&got, &want, &format!("get {}", show(key)));
        // Exactly what the owning server holds.
        let owner = cluster.owner(key);
        let direct = cluster.servers[owner].client().call(&line(&[b"gets", key]));
        assert_bytes(
            &client.call(&line(&[b"gets", key])),
            &direct,
            &format!("gets {}", show(key)),
        );
        assert_bytes(
            &client.call(&line(&[b"mg", key, b"v", b"s"])),
            &va(data, &format!(" s{}", data.len())),
            &format!("mg {}", show(key)),
        );
    }
    // All of them in one multi-get (about 2.8 MB of values), in request order, reversed.
    let mut request = b"get".to_vec();
    let mut blocks = Vec::new();
    for (n, (key, data)) in items.iter().enumerate().rev() {
        request.push(b' ');
        request.extend_from_slice(key);
        blocks.push(value(key, n as u32, data));
    }
    request.extend_from_slice(b"\r\n");
    assert_bytes(
        &client.call(&request),
        &found(&blocks),
        "multi-get of every size",
    );

    // Pipelined: the 1 MB value set and read back between small requests.
    let big = binary_data(1_000_000, 99);
    let mut script = Script::default();
    script.step(
        b"get bin:nul\r\n",
        &[&found(&[value(b"bin:nul", 0, b"\0")])],
    );
    script.step(
        store("set", b"bin:big", 7, 0, &big, false),
        &[b"STORED\r\n"],
    );
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script.step(
        store("append", b"bin:big", 0, 0, b"\r\n\0tail", false),
        &[b"STORED\r\n"],
    );
    let mut appended = big.clone();
    appended.extend_from_slice(b"\r\n\0tail");
    script.step(
        b"get bin:big\r\n",
        &[&found(&[value(b"bin:big", 7, &appended)])],
    );
    script.step(b"ms bin:big2 3 q\r\n\r\n\0\r\n", &[]);
    script.step(b"mg bin:big2 v\r\n", &[b"VA 3\r\n\r\n\0\r\n"]);
    script.step(
        b"get bin:ff\r\n",
        &[&found(&[value(b"bin:ff", 1, b"\xff")])],
    );
    script.play(&mut client, "pipelined big values");
}

// ------------------------------------------------------------------------------------------
// 4. Keys: 250 bytes work, 251 bytes and control bytes are refused

#[test]
fn keys_of_250_bytes_work_and_251_bytes_get_client_error_with_the_connection_kept() {
    let cluster = Cluster::start(3);
    let oracle = MemcachedServer::start();
    let mut client = cluster.client();
    let long: Vec<Vec<u8>> = (b'a'..=b'f').map(|c| vec![c; 250]).collect();
    let too_long = vec![b'z'; 251];
    let bad = b"CLIENT_ERROR bad command line format\r\n".to_vec();

    // 250 bytes: every command works, and the keys spread over the servers.
    for (n, key) in long.iter().enumerate() {
        let data = format!("long{n}");
        assert_eq!(
            client.call(&store("set", key, 0, 0, data.as_bytes(), false)),
            b"STORED\r\n"
        );
        assert_eq!(
            client.call(&line(&[b"get", key])),
            found(&[value(key, 0, data.as_bytes())])
        );
        assert_eq!(client.call(&line(&[b"touch", key, b"0"])), b"TOUCHED\r\n");
        assert_eq!(
            client.call(&line(&[b"mg", key, b"v"])),
            va(data.as_bytes(), "")
        );
    }
    let owners = cluster.owners(&long);
    assert!(
        owners
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 2,
        "250-byte keys on one server only: {owners:?}"
    );
    let refs: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
    let mut request = b"get".to_vec();
    for key in &refs {
        request.push(b' ');
        request.extend_from_slice(key);
    }
    request.extend_from_slice(b"\r\n");
    let blocks: Vec<Vec<u8>> = refs
        .iter()
        .enumerate()
        .map(|(n, key)| value(key, 0, format!("long{n}").as_bytes()))
        .collect();
    assert_bytes(
        &client.call(&request),
        &found(&blocks),
        "multi-get of 250-byte keys",
    );
    assert_eq!(
        client.call(&store("set", &long[0], 0, 0, b"7", false)),
        b"STORED\r\n"
    );
    assert_eq!(client.call(&line(&[b"incr", &long[0], b"1"])), b"8\r\n");
    assert_eq!(client.call(&line(&[b"delete", &long[0]])), b"DELETED\r\n");

    // 251 bytes: memcached's CLIENT_ERROR, and the connection stays usable. For a storage
    // command the data line is then read as a command line, as memcached does: `hello` is an
    // unknown command (ERROR), `mn` a real one.
    let cases: Vec<(Vec<u8>, Vec<Vec<u8>>)> = vec![
        (line(&[b"get", &too_long]), vec![bad.clone()]),
        (line(&[b"gets", &too_long]), vec![bad.clone()]),
        (
            line(&[b"get", &long[1], &too_long, &long[2]]),
            vec![bad.clone()],
        ),
        (
            store("set", &too_long, 0, 0, b"hello", false),
            vec![bad.clone(), b"ERROR\r\n".to_vec()],
        ),
        (
            store("add", &too_long, 0, 0, b"mn", false),
            vec![bad.clone(), b"MN\r\n".to_vec()],
        ),
        (line(&[b"delete", &too_long]), vec![bad.clone()]),
        (line(&[b"incr", &too_long, b"1"]), vec![bad.clone()]),
        (line(&[b"touch", &too_long, b"0"]), vec![bad.clone()]),
        (line(&[b"mg", &too_long, b"v"]), vec![bad.clone()]),
    ];
    let follow = line(&[b"get", &long[1]]);
    let follow_reply = found(&[value(&long[1], 0, b"long1")]);
    assert_eq!(
        oracle
            .client()
            .call(&store("set", &long[1], 0, 0, b"long1", false)),
        b"STORED\r\n"
    );
    for (input, want) in &cases {
        let mut request = input.clone();
        request.extend_from_slice(&follow);
        let mut want = want.clone();
        want.push(follow_reply.clone());
        let what = format!("251-byte key in {}", show(&input[..input.len().min(8)]));
        assert_replies(
            &oracle.client().exchange(&request, want.len()),
            &want,
            &format!("memcached itself, {what}"),
        );
        assert_replies(
            &client.exchange(&request, want.len()),
            &want,
            &format!("walnut, {what}"),
        );
    }
}

#[test]
fn keys_with_control_bytes_get_client_error_with_the_connection_kept() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let bad = b"CLIENT_ERROR bad command line format\r\n";
    assert_eq!(
        client.call(&store("set", b"ctl:ok", 0, 0, b"fine", false)),
        b"STORED\r\n"
    );
    let follow = b"get ctl:ok\r\n";
    let follow_reply = b"VALUE ctl:ok 0 4\r\nfine\r\nEND\r\n";
    for control in [0x00u8, 0x01, 0x09, 0x1b, 0x1f, 0x7f] {
        let key = [b'c', b't', b'l', control, b'x'];
        let what = format!("key with byte {control:#04x}");
        let mut request = line(&[b"get", &key]);
        request.extend_from_slice(follow);
        assert_replies(
            &client.exchange(&request, 2),
            &[bad.to_vec(), follow_reply.to_vec()],
            &format!("get, {what}"),
        );
        let mut request = line(&[b"get", b"ctl:ok", &key]);
        request.extend_from_slice(follow);
        assert_replies(
            &client.exchange(&request, 2),
            &[bad.to_vec(), follow_reply.to_vec()],
            &format!("multi-get, {what}"),
        );
        // The data line `mn` is then read as a command, as after any refused storage line.
        let mut request = store("set", &key, 0, 0, b"mn", false);
        request.extend_from_slice(follow);
        assert_replies(
            &client.exchange(&request, 3),
            &[bad.to_vec(), b"MN\r\n".to_vec(), follow_reply.to_vec()],
            &format!("set, {what}"),
        );
        let mut request = line(&[b"delete", &key]);
        request.extend_from_slice(follow);
        assert_replies(
            &client.exchange(&request, 2),
            &[bad.to_vec(), follow_reply.to_vec()],
            &format!("delete, {what}"),
        );
    }
    // Bytes above 0x7f are not control bytes: a UTF-8 key is fine.
    let key = "ключ:é".as_bytes();
    assert_eq!(
        client.call(&store("set", key, 0, 0, b"utf8", false)),
        b"STORED\r\n"
    );
    assert_eq!(
        client.call(&line(&[b"get", key])),
        found(&[value(key, 0, b"utf8")])
    );
}

// ------------------------------------------------------------------------------------------
// Malformed input and unsupported commands

/// Plays each input (followed by `get keep\r\n`, answered `END\r\n`: the connection is still
/// usable) against a lone memcached and against walnut, each on a fresh connection, then all
/// of them in one write; both must give exactly `want`.
fn same_replies_as_memcached(
    cluster: &Cluster,
    oracle: &MemcachedServer,
    cases: &[(&[u8], Vec<&[u8]>)],
) {
    let mut all = Vec::new();
    let mut all_want = Vec::new();
    for (input, want) in cases {
        let mut request = input.to_vec();
        request.extend_from_slice(b"get keep\r\n");
        let mut want: Vec<Vec<u8>> = want.iter().map(|r| r.to_vec()).collect();
        want.push(b"END\r\n".to_vec());
        assert_replies(
            &oracle.client().exchange(&request, want.len()),
            &want,
            &format!("memcached itself, {}", show(input)),
        );
        assert_replies(
            &cluster.client().exchange(&request, want.len()),
            &want,
            &format!("walnut, {}", show(input)),
        );
        all.extend(request);
        all_want.extend(want);
    }
    assert_replies(
        &oracle.client().exchange(&all, all_want.len()),
        &all_want,
        "memcached itself, every case in one write",
    );
    assert_replies(
        &cluster.client().exchange(&all, all_want.len()),
        &all_want,
        "walnut, every case in one write",
    );
}

#[test]
fn malformed_input_gets_the_same_replies_as_from_memcached() {
    let cluster = Cluster::start(3);
    let oracle = MemcachedServer::start();
    let error: &[u8] = b"ERROR\r\n";
    let bad_line: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
    let bad_chunk: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
    let bad_delta: &[u8] = b"CLIENT_ERROR invalid numeric delta argument\r\n";
    let bad_exptime: &[u8] = b"CLIENT_ERROR invalid exptime argument\r\n";
    let delete_usage: &[u8] =
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
    // No input stores anything: the key `bad` stays absent throughout.
    let cases: Vec<(&[u8], Vec<&[u8]>)> = vec![
        (b"foo\r\n", vec![error]),
        (b"GET bad\r\n", vec![error]),
        (b"Get bad\r\n", vec![error]),
        (b"MG bad\r\n", vec![error]),
        (b"get\r\n", vec![error]),
        (b"gets\r\n", vec![error]),
        (b"gat\r\n", vec![error]),
        (b"\r\n", vec![error]),
        (b"set bad 0 0\r\n", vec![error]),
        (b"incr bad\r\n", vec![error]),
        (b"touch bad\r\n", vec![error]),
        (b"delete\r\n", vec![error]),
        (b"mg\r\n", vec![error]),
        (b"md\r\n", vec![error]),
        (b"ma\r\n", vec![error]),
        (b"cas bad 0 0 1\r\nx\r\n", vec![error, error]),
        (b"set bad 0 0 1 noreply extra\r\nx\r\n", vec![error, error]),
        (b"touch bad 0 noreply junk\r\n", vec![error]),
        (b"set bad x 0 1\r\nx\r\n", vec![bad_line, error]),
        (b"set bad -1 0 1\r\nx\r\n", vec![bad_line, error]),
        (
            b"set bad 18446744073709551616 0 1\r\nx\r\n",
            vec![bad_line, error],
        ),
        (b"set bad 0 x 1\r\nx\r\n", vec![bad_line, error]),
        (
            b"set bad 0 99999999999999999999 1\r\nx\r\n",
            vec![bad_line, error],
        ),
        (b"set bad 0 0 -1\r\n", vec![bad_line]),
        (b"set bad 0 0 abc\r\n", vec![bad_line]),
        (b"cas bad 0 0 1 abc\r\nx\r\n", vec![bad_line, error]),
        (b"cas bad 0 0 1 -1\r\nx\r\n", vec![bad_line, error]),
        // Data shorter or longer than declared: memcached takes <bytes>+2 bytes, then reads on.
        (b"set bad 0 0 1\r\nxy\r\n", vec![bad_chunk, error]),
        (b"set bad 0 0 3\r\nabcdef\r\n", vec![bad_chunk, error]),
        (
            b"set bad 0 0 3\r\na\r\nget keep\r\n",
            vec![bad_chunk, error],
        ),
        (b"set bad 0 0 1\r\n5\nget keep\r\n", vec![bad_chunk, error]),
        // With noreply the CLIENT_ERROR is not sent; the resync is the same.
        (b"set bad 0 0 1 noreply\r\nxyz\r\n", vec![error]),
        (b"set bad 0 0 abc noreply\r\n", vec![]),
        (b"touch bad abc noreply\r\n", vec![]),
        (b"incr bad -1 noreply\r\n", vec![]),
        (b"incr bad -1\r\n", vec![bad_delta]),
        (b"incr bad abc\r\n", vec![bad_delta]),
        (b"decr bad 1x\r\n", vec![bad_delta]),
        (b"incr bad 18446744073709551616\r\n", vec![bad_delta]),
        (b"touch bad x\r\n", vec![bad_exptime]),
        (b"touch bad 99999999999999999999\r\n", vec![bad_exptime]),
        (b"gat x bad\r\n", vec![bad_exptime]),
        (b"delete bad 1\r\n", vec![delete_usage]),
        (b"delete bad 0 0\r\n", vec![delete_usage]),
        (b"delete bad noreply 0\r\n", vec![delete_usage]),
        // Meta commands: the server's own refusals come back, in place.
        (
            b"mg bad v v v\r\n",
            vec![b"CLIENT_ERROR duplicate flag\r\n"],
        ),
        (b"mg bad zz\r\n", vec![b"CLIENT_ERROR invalid flag\r\n"]),
        (
            b"mg bad O123456789012345678901234567890123\r\n",
            vec![b"CLIENT_ERROR opaque token too long\r\n"],
        ),
        (b"ms bad 1\r\nab\r\n", vec![bad_chunk, error]),
        (b"ms bad -1\r\nab\r\n", vec![bad_line, error]),
        (b"ms bad S2\r\nab\r\n", vec![bad_line, error]),
        (
            b"ms bad 2 invalid\r\nab\r\n",
            vec![b"CLIENT_ERROR invalid flag\r\n"],
        ),
        (
            b"ma bad D-1\r\n",
            vec![b"CLIENT_ERROR invalid or duplicate flag\r\n"],
        ),
        (b"mn junk\r\n", vec![b"MN\r\n"]),
    ];
    same_replies_as_memcached(&cluster, &oracle, &cases);
}

#[test]
fn numbers_with_a_plus_sign_are_read_as_memcached_reads_them() {
    let cluster = Cluster::start(2);
    let oracle = MemcachedServer::start();
    let stored: &[u8] = b"STORED\r\n";
    let cases: Vec<(&[u8], Vec<&[u8]>)> = vec![
        (b"incr plus:none +1\r\n", vec![b"NOT_FOUND\r\n"]),
        (
            b"set plus:a 0 0 1\r\n5\r\nincr plus:a +2\r\n",
            vec![stored, b"7\r\n"],
        ),
        (
            b"set plus:b +1 0 1\r\nx\r\nget plus:b\r\n",
            vec![stored, b"VALUE plus:b 1 1\r\nx\r\nEND\r\n"],
        ),
        (
            b"set plus:c 0 +0 1\r\nx\r\nget plus:c\r\n",
            vec![stored, b"VALUE plus:c 0 1\r\nx\r\nEND\r\n"],
        ),
        (
            b"set plus:d 0 0 +1\r\nx\r\nget plus:d\r\n",
            vec![stored, b"VALUE plus:d 0 1\r\nx\r\nEND\r\n"],
        ),
    ];
    same_replies_as_memcached(&cluster, &oracle, &cases);
}

#[test]
fn meta_commands_missing_arguments_or_with_a_bad_base64_key_answer_as_memcached_does() {
    let cluster = Cluster::start(2);
    let oracle = MemcachedServer::start();
    let bad_line: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
    let cases: Vec<(&[u8], Vec<&[u8]>)> = vec![
        (b"ms meta:nolen\r\n", vec![bad_line]),
        (b"me\r\n", vec![bad_line]),
        // memcached skips the data of an ms whose key does not decode.
        (
            b"ms !!!! 2 b\r\nab\r\n",
            vec![b"CLIENT_ERROR error decoding key\r\n"],
        ),
        (
            b"mg !!!! b v\r\n",
            vec![b"CLIENT_ERROR error decoding key\r\n"],
        ),
    ];
    same_replies_as_memcached(&cluster, &oracle, &cases);
}

/// Standard base64 with padding (meta commands' `b` flag).
fn base64(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

#[test]
fn meta_base64_keys_are_routed_by_their_decoded_key() {
    let cluster = Cluster::start(3);
    let groups = cluster.keys_by_server("b64:", 2);
    let mut client = cluster.client();
    for (server, group) in groups.iter().enumerate() {
        for key in group {
            let encoded = base64(key);
            let mut script = Script::default();
            script.step(store("set", key, 0, 0, b"plain", false), &[b"STORED\r\n"]);
            script.step_owned(line(&[b"mg", &encoded, b"b", b"v"]), vec![va(b"plain", "")]);
            script.step_owned(line(&[b"md", &encoded, b"b"]), vec![b"HD\r\n".to_vec()]);
            script.step_owned(line(&[b"get", key]), vec![b"END\r\n".to_vec()]);
            script.step_owned(
                [line(&[b"ms", &encoded, b"3", b"b"]), b"b64\r\n".to_vec()].concat(),
                vec![b"HD\r\n".to_vec()],
            );
            script.step_owned(line(&[b"get", key]), vec![found(&[value(key, 0, b"b64")])]);
            script.play_one_by_one(&mut client, &format!("{} on server {server}", show(key)));
            assert_eq!(cluster.owner(key), server, "{}", show(key));
        }
    }
}

#[test]
fn gat_with_an_exptime_and_no_key_answers_end_as_memcached_does() {
    let cluster = Cluster::start(2);
    let oracle = MemcachedServer::start();
    for request in [&b"gat 0\r\nget keep\r\n"[..], b"gats 0\r\nget keep\r\n"] {
        let want = vec![b"END\r\n".to_vec(), b"END\r\n".to_vec()];
        assert_replies(
            &oracle.client().exchange(request, 2),
            &want,
            &format!("memcached itself, {}", show(request)),
        );
        assert_replies(
            &cluster.client().exchange(request, 2),
            &want,
            &format!("walnut, {}", show(request)),
        );
    }
}

#[test]
fn known_unproxied_commands_get_server_error_unsupported_command() {
    let cluster = Cluster::start(2);
    let mut client = cluster.client();
    assert_eq!(client.call(b"set keepme 0 0 4\r\nkept\r\n"), b"STORED\r\n");
    for (input, name) in [
        (&b"stats\r\n"[..], "stats"),
        (b"stats slabs\r\n", "stats"),
        (b"flush_all\r\n", "flush_all"),
        (b"flush_all 0\r\n", "flush_all"),
        (b"verbosity 1\r\n", "verbosity"),
    ] {
        let mut request = input.to_vec();
        request.extend_from_slice(b"get keepme\r\n");
        assert_replies(
            &client.exchange(&request, 2),
            &[
                format!("SERVER_ERROR unsupported command '{name}'\r\n").into_bytes(),
                b"VALUE keepme 0 4\r\nkept\r\nEND\r\n".to_vec(),
            ],
            &show(input),
        );
    }
    // flush_all never reached a server: the item is still on its owner.
    let owner = cluster.owner(b"keepme");
    assert_eq!(
        cluster.servers[owner].client().call(b"get keepme\r\n"),
        b"VALUE keepme 0 4\r\nkept\r\nEND\r\n"
    );
}

// ------------------------------------------------------------------------------------------
// 5. A pipeline of 1,000 mixed commands

#[derive(Clone)]
struct Item {
    flags: u32,
    data: Vec<u8>,
}

/// What memcached holds, to compute each expected reply.
#[derive(Default)]
struct Model {
    items: HashMap<Vec<u8>, Item>,
}

impl Model {
    fn block(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.items.get(key).map(|it| value(key, it.flags, &it.data))
    }

    /// incr/decr as memcached does them: a shorter result is padded with spaces in place.
    fn delta(&mut self, key: &[u8], incr: bool, by: u64) -> Option<u64> {
        let item = self.items.get_mut(key)?;
        let text = std::str::from_utf8(&item.data)
            .unwrap()
            .trim_end_matches(' ');
        let n: u64 = text.parse().unwrap();
        let result = if incr {
            n.wrapping_add(by)
        } else {
            n.saturating_sub(by)
        };
        let mut digits = result.to_string().into_bytes();
        if digits.len() <= item.data.len() {
            digits.resize(item.data.len(), b' ');
        }
        item.data = digits;
        Some(result)
    }
}

fn if_reply(noreply: bool, reply: &[u8]) -> Vec<Vec<u8>> {
    if noreply {
        Vec::new()
    } else {
        vec![reply.to_vec()]
    }
}

/// `steps` mixed requests over 162 keys (named after `seed`, so several scripts can share a
/// server), each with the reply memcached gives it. Key names vary in their first bytes:
/// twemproxy's `fnv1a_64` barely moves a key whose names differ only in the last byte or two,
/// so `p:1`, `p:2`, … would all land on one server.
fn mixed_pipeline(steps: usize, seed: u64) -> Script {
    let mut rng = Lcg(seed);
    let mut model = Model::default();
    let mut script = Script::default();
    let noreply_word = |on: bool| -> &'static [u8] {
        if on {
            b" noreply"
        } else {
            b""
        }
    };
    for i in 0..steps {
        let key = format!("{}.p{seed}", rng.below(150)).into_bytes();
        let counter = format!("{}.c{seed}", rng.below(12)).into_bytes();
        let mut data = format!("v{i}:").into_bytes();
        let extra = rng.below(40) as usize;
        data.extend(binary_data(extra, i as u64));
        let noreply = rng.below(3) == 0;
        let kind = rng.below(22);
        match kind {
            0 | 1 => {
                let flags = rng.below(1 << 20) as u32;
                script.step_owned(
                    store("set", &key, flags, 0, &data, noreply),
                    if_reply(noreply, b"STORED\r\n"),
                );
                model.items.insert(key, Item { flags, data });
            }
            2 | 3 => {
                let cmd = if kind == 2 { "add" } else { "replace" };
                let exists = model.items.contains_key(&key);
                let stores = (kind == 2) != exists;
                script.step_owned(
                    store(cmd, &key, 3, 0, &data, noreply),
                    if_reply(
                        noreply,
                        if stores {
                            b"STORED\r\n"
                        } else {
                            b"NOT_STORED\r\n"
                        },
                    ),
                );
                if stores {
                    model.items.insert(key, Item { flags: 3, data });
                }
            }
            4 => {
                let append = rng.below(2) == 0;
                let cmd = if append { "append" } else { "prepend" };
                let reply: &[u8] = match model.items.get_mut(&key) {
                    Some(item) => {
                        item.data = if append {
                            [item.data.clone(), data.clone()].concat()
                        } else {
                            [data.clone(), item.data.clone()].concat()
                        };
                        b"STORED\r\n"
                    }
                    None => b"NOT_STORED\r\n",
                };
                script.step_owned(
                    store(cmd, &key, 0, 0, &data, noreply),
                    if_reply(noreply, reply),
                );
            }
            5 | 6 => {
                let verb: &[u8] = if kind == 5 { b"get" } else { b"gat 0" };
                let blocks: Vec<Vec<u8>> = model.block(&key).into_iter().collect();
                script.step_owned(line(&[verb, &key]), vec![found(&blocks)]);
            }
            7 | 8 => {
                let verb: &[u8] = if kind == 7 { b"get" } else { b"gat 0" };
                let count = 2 + rng.below(6) as usize;
                let keys: Vec<Vec<u8>> = (0..count)
                    .map(|_| format!("{}.p{seed}", rng.below(150)).into_bytes())
                    .collect();
                let mut words: Vec<&[u8]> = vec![verb];
                words.extend(keys.iter().map(Vec::as_slice));
                let blocks: Vec<Vec<u8>> = keys.iter().filter_map(|k| model.block(k)).collect();
                script.step_owned(line(&words), vec![found(&blocks)]);
            }
            9 => {
                let number = rng.below(1000).to_string().into_bytes();
                script.step_owned(
                    store("set", &counter, 0, 0, &number, noreply),
                    if_reply(noreply, b"STORED\r\n"),
                );
                model.items.insert(
                    counter,
                    Item {
                        flags: 0,
                        data: number,
                    },
                );
            }
            10 => {
                let incr = rng.below(2) == 0;
                let by = rng.below(300);
                let verb: &[u8] = if incr { b"incr" } else { b"decr" };
                let reply = match model.delta(&counter, incr, by) {
                    Some(n) => format!("{n}\r\n").into_bytes(),
                    None => b"NOT_FOUND\r\n".to_vec(),
                };
                let mut request = line(&[verb, &counter, by.to_string().as_bytes()]);
                if noreply {
                    request.truncate(request.len() - 2);
                    request.extend_from_slice(b" noreply\r\n");
                }
                script.step_owned(request, if_reply(noreply, &reply));
            }
            11 => {
                let zero: &[u8] = if rng.below(2) == 0 { b" 0" } else { b"" };
                let reply: &[u8] = if model.items.remove(&key).is_some() {
                    b"DELETED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                };
                let request = [b"delete ", &key[..], zero, noreply_word(noreply), b"\r\n"].concat();
                script.step_owned(request, if_reply(noreply, reply));
            }
            12 => {
                let reply: &[u8] = if model.items.contains_key(&key) {
                    b"TOUCHED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                };
                let request = [b"touch ", &key[..], b" 0", noreply_word(noreply), b"\r\n"].concat();
                script.step_owned(request, if_reply(noreply, reply));
            }
            13 => {
                // mg with value and metadata flags, echoed in request order.
                let item = model.items.get(&key);
                let reply = match item {
                    Some(it) => va(
                        &it.data,
                        &format!(
                            " f{} s{} t-1 k{} O{i}",
                            it.flags,
                            it.data.len(),
                            String::from_utf8_lossy(&key)
                        ),
                    ),
                    None => format!("EN k{} O{i}\r\n", String::from_utf8_lossy(&key)).into_bytes(),
                };
                let request =
                    [b"mg ", &key[..], format!(" v f s t k O{i}\r\n").as_bytes()].concat();
                script.step_owned(request, vec![reply]);
            }
            14 => {
                // mg without a value: HD or EN.
                let reply: &[u8] = if model.items.contains_key(&key) {
                    b"HD\r\n"
                } else {
                    b"EN\r\n"
                };
                script.step_owned(line(&[b"mg", &key]), vec![reply.to_vec()]);
            }
            15 => {
                // Quiet mg: a miss is silent.
                let replies = match model.items.get(&key) {
                    Some(it) => vec![va(
                        &it.data,
                        &format!(" k{}", String::from_utf8_lossy(&key)),
                    )],
                    None => vec![],
                };
                script.step_owned(line(&[b"mg", &key, b"k", b"v", b"q"]), replies);
            }
            16 => {
                let flags = rng.below(1000) as u32;
                let quiet = rng.below(2) == 0;
                let mut request = [
                    b"ms ",
                    &key[..],
                    format!(" {} F{flags}", data.len()).as_bytes(),
                ]
                .concat();
                if quiet {
                    request.extend_from_slice(b" q");
                }
                request.extend_from_slice(b"\r\n");
                request.extend_from_slice(&data);
                request.extend_from_slice(b"\r\n");
                script.step_owned(request, if_reply(quiet, b"HD\r\n"));
                model.items.insert(key, Item { flags, data });
            }
            17 => {
                let quiet = rng.below(2) == 0;
                let existed = model.items.remove(&key).is_some();
                let request = if quiet {
                    line(&[b"md", &key, b"q"])
                } else {
                    line(&[b"md", &key])
                };
                let replies = match (existed, quiet) {
                    (true, true) => vec![],
                    (true, false) => vec![b"HD\r\n".to_vec()],
                    (false, _) => vec![b"NF\r\n".to_vec()],
                };
                script.step_owned(request, replies);
            }
            18 => {
                // ma: plain (HD), with v (VA <number>), decrementing, or quiet.
                let form = rng.below(4);
                let (request, incr, by) = match form {
                    0 => (line(&[b"ma", &counter]), true, 1),
                    1 => (line(&[b"ma", &counter, b"v"]), true, 1),
                    2 => (line(&[b"ma", &counter, b"MD", b"D7", b"v"]), false, 7),
                    _ => (line(&[b"ma", &counter, b"q"]), true, 1),
                };
                let replies = match model.delta(&counter, incr, by) {
                    None => vec![b"NF\r\n".to_vec()],
                    Some(n) => match form {
                        0 => vec![b"HD\r\n".to_vec()],
                        1 | 2 => vec![va(n.to_string().as_bytes(), "")],
                        _ => vec![],
                    },
                };
                script.step_owned(request, replies);
            }
            19 => script.step(b"mn\r\n", &[b"MN\r\n"]),
            _ => {
                // A single-key gets whose unique is unknown here: read it as hit or miss
                // through a meta get instead, which carries no unique.
                let reply = match model.items.get(&key) {
                    Some(it) => va(&it.data, &format!(" f{}", it.flags)),
                    None => b"EN\r\n".to_vec(),
                };
                script.step_owned(line(&[b"mg", &key, b"f", b"v"]), vec![reply]);
            }
        }
    }
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script
}

#[test]
fn pipeline_of_1000_mixed_commands_answers_each_request_in_order() {
    // The expected replies are computed; a lone memcached confirms them first.
    let oracle = MemcachedServer::start();
    let cluster = Cluster::start(3);
    for seed in [1u64, 2, 3] {
        let script = mixed_pipeline(1000, seed);
        script.play(
            &mut oracle.client(),
            &format!("seed {seed}, memcached itself"),
        );
        script.play(&mut cluster.client(), &format!("seed {seed}, walnut"));
    }
    // The keys were spread over every server.
    let keys: Vec<Vec<u8>> = (0..150).map(|n| format!("{n}.p1").into_bytes()).collect();
    let owners = cluster.owners(&keys);
    for server in 0..3 {
        assert!(
            owners.contains(&Some(server)),
            "server {server} holds none of {owners:?}"
        );
    }
}

#[test]
fn requests_cut_into_tiny_writes_get_the_same_replies() {
    let cluster = Cluster::start(3);
    let mut script = mixed_pipeline(400, 7);
    // A large value and the error paths, cut up as well.
    let big = binary_data(70_000, 8);
    script.step(
        store("set", b"cut:big", 1, 0, &big, false),
        &[b"STORED\r\n"],
    );
    script.step_owned(
        b"get cut:big cut:none cut:big\r\n".to_vec(),
        vec![found(&[
            value(b"cut:big", 1, &big),
            value(b"cut:big", 1, &big),
        ])],
    );
    script.step(
        b"set cut:bad 0 0 1\r\nxy\r\n",
        &[b"CLIENT_ERROR bad data chunk\r\n", b"ERROR\r\n"],
    );
    script.step(b"bogus\r\n", &[b"ERROR\r\n"]);
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script.play_in_pieces(&mut cluster.client(), 9, 1, "pieces of 1 to 9 bytes");
    // The same script again, on a fresh cluster, one byte per write.
    let cluster = Cluster::start(3);
    script.play_in_pieces(&mut cluster.client(), 1, 2, "one byte per write");
}

#[test]
fn concurrent_clients_each_get_their_own_replies() {
    let cluster = Cluster::start(3);
    let port = cluster.port;
    std::thread::scope(|scope| {
        for thread in 0..6u64 {
            scope.spawn(move || {
                // Each script names its keys after its seed: no two clients share a key.
                let script = mixed_pipeline(600, 100 + thread);
                let mut client = McClient::connect(local(port));
                script.play(&mut client, &format!("client {thread}, pipelined"));
                let script = mixed_pipeline(150, 200 + thread);
                script.play_one_by_one(&mut client, &format!("client {thread}, one by one"));
            });
        }
    });
}

#[test]
fn paused_server_times_out_with_server_error_while_other_parts_answer() {
    let cluster = Cluster::start(3);
    let groups = cluster.keys_by_server("pause:", 4);
    let mut client = cluster.client();
    let keys: Vec<Vec<u8>> = (0..12).map(|n| groups[n % 3][n / 3].clone()).collect();
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            client.call(&store("set", key, n as u32, 0, key, false)),
            b"STORED\r\n"
        );
    }
    let mut words: Vec<&[u8]> = vec![b"get"];
    words.extend(keys.iter().map(Vec::as_slice));
    let multi = line(&words);
    let live: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 != 1)
        .map(|(n, key)| value(key, n as u32, key))
        .collect();
    let frozen = &groups[1][0];
    let thawed = &groups[0][0];

    cluster.servers[1].pause();
    let request = [
        multi.clone(),
        line(&[b"get", frozen]),
        line(&[b"get", thawed]),
        b"mn\r\n".to_vec(),
    ]
    .concat();
    let replies = client.exchange(&request, 4);
    cluster.servers[1].resume();
    assert_bytes(&replies[0], &found(&live), "multi-get with a paused part");
    assert_eq!(show(&replies[1]), "SERVER_ERROR Connection timed out\\r\\n");
    assert_eq!(replies[2], found(&[value(thawed, 0, thawed)]));
    assert_eq!(replies[3], b"MN\r\n");

    // Resumed (its data intact), the server answers again on the same client connection.
    let all: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| value(key, n as u32, key))
        .collect();
    assert_bytes(&client.call(&multi), &found(&all), "after resume");
}

#[test]
fn value_over_the_item_limit_gets_memcacheds_refusal_and_the_stream_stays_in_step() {
    let cluster = Cluster::start(2);
    let oracle = MemcachedServer::start();
    let too_large: &[u8] = b"SERVER_ERROR object too large for cache\r\n";
    let fits = binary_data(2_000_000, 3);
    let mut script = Script::default();
    // -I 2m: 3 MB and exactly 2 MiB (item headers do not fit) are refused, the data skipped.
    script.step(
        store("set", b"huge:a", 0, 0, &binary_data(3_000_000, 1), false),
        &[too_large],
    );
    script.step(b"get huge:a\r\n", &[b"END\r\n"]);
    script.step(
        store("set", b"huge:b", 0, 0, &binary_data(2_097_152, 2), false),
        &[too_large],
    );
    script.step(
        store("set", b"huge:c", 5, 0, &fits, false),
        &[b"STORED\r\n"],
    );
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script.step_owned(
        b"get huge:a huge:b huge:c\r\n".to_vec(),
        vec![found(&[value(b"huge:c", 5, &fits)])],
    );
    script.play(&mut oracle.client(), "memcached itself");
    script.play(&mut cluster.client(), "walnut");
}

// ------------------------------------------------------------------------------------------
// 6. Meta commands

#[test]
fn meta_commands_are_routed_by_key_with_every_flag_passed_through() {
    let cluster = Cluster::start(3);
    let keys = cluster.keys_by_server("meta:", 2);
    let mut client = cluster.client();
    for (server, group) in keys.iter().enumerate() {
        let key = &group[0];
        let k = String::from_utf8_lossy(key).into_owned();
        let mut direct = cluster.servers[server].client();
        let mut script = Script::default();
        script.step_owned(
            [b"ms ", key.as_slice(), b" 5 F7 T0 O11 k\r\nhello\r\n"].concat(),
            vec![format!("HD O11 k{k}\r\n").into_bytes()],
        );
        script.step_owned(
            format!("mg {k} v f k O99 s t\r\n").into_bytes(),
            vec![va(b"hello", &format!(" f7 k{k} O99 s5 t-1"))],
        );
        script.step_owned(format!("mg {k}\r\n").into_bytes(), vec![b"HD\r\n".to_vec()]);
        script.step_owned(
            format!("mg {k} k O1 q\r\n").into_bytes(),
            vec![format!("HD k{k} O1\r\n").into_bytes()],
        );
        // ms modes: E (add) refuses an existing key, A appends.
        script.step_owned(
            format!("ms {k} 1 ME\r\nx\r\n").into_bytes(),
            vec![b"NS\r\n".to_vec()],
        );
        script.step_owned(
            format!("ms {k} 3 MA\r\n!!!\r\n").into_bytes(),
            vec![b"HD\r\n".to_vec()],
        );
        script.step_owned(
            format!("mg {k} v\r\n").into_bytes(),
            vec![va(b"hello!!!", "")],
        );
        script.step_owned(
            format!("md {k} O5\r\n").into_bytes(),
            vec![b"HD O5\r\n".to_vec()],
        );
        script.step_owned(
            format!("md {k} O6 k\r\n").into_bytes(),
            vec![format!("NF O6 k{k}\r\n").into_bytes()],
        );
        script.step_owned(
            format!("mg {k} v k O7\r\n").into_bytes(),
            vec![format!("EN k{k} O7\r\n").into_bytes()],
        );
        // ma: autovivify, count, decrement with a delta.
        script.step_owned(format!("ma {k}\r\n").into_bytes(), vec![b"NF\r\n".to_vec()]);
        script.step_owned(
            format!("ma {k} N0 J13 v\r\n").into_bytes(),
            vec![va(b"13", "")],
        );
        script.step_owned(format!("ma {k} v\r\n").into_bytes(), vec![va(b"14", "")]);
        script.step_owned(
            format!("ma {k} MD D5 v\r\n").into_bytes(),
            vec![va(b"9", "")],
        );
        script.step_owned(format!("ma {k}\r\n").into_bytes(), vec![b"HD\r\n".to_vec()]);
        script.step_owned(
            format!("get {k}\r\n").into_bytes(),
            vec![found(&[value(key, 0, b"10")])],
        );
        script.play_one_by_one(&mut client, &format!("meta on server {server}"));

        // The item is on its owner, and what needs the owner's own state (cas, me) matches
        // a direct request byte for byte.
        assert_eq!(cluster.owner(key), server);
        for request in [format!("mg {k} c v\r\n"), format!("mg {k} k c f s\r\n")] {
            assert_eq!(
                show(&client.call(request.as_bytes())),
                show(&direct.call(request.as_bytes())),
                "{request}"
            );
        }
        let without_last_access = |reply: Vec<u8>| -> String {
            let text = String::from_utf8(reply).unwrap();
            text.split(' ')
                .filter(|word| !word.starts_with("la="))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let me = format!("me {k}\r\n");
        let through = without_last_access(client.call(me.as_bytes()));
        assert!(
            through.starts_with(&format!("ME {k} exp=-1 cas=")),
            "{through}"
        );
        assert_eq!(through, without_last_access(direct.call(me.as_bytes())));
        // A meta request for an absent key on the same server.
        let absent = String::from_utf8_lossy(&group[1]).into_owned();
        assert_eq!(
            client.call(format!("mg {absent} v\r\n").as_bytes()),
            b"EN\r\n"
        );
        assert_eq!(
            client.call(format!("me {absent}\r\n").as_bytes()),
            b"EN\r\n"
        );
    }
}

#[test]
fn quiet_meta_pipeline_across_servers_returns_hits_in_request_order_then_mn() {
    let cluster = Cluster::start(3);
    let keys = cluster.keys_by_server("quiet:", 1);
    let (a, b, c) = (&keys[0][0], &keys[1][0], &keys[2][0]);
    let mut client = cluster.client();
    assert_eq!(
        client.call(&store("set", a, 0, 0, b"A", false)),
        b"STORED\r\n"
    );
    assert_eq!(
        client.call(&store("set", c, 0, 0, b"C", false)),
        b"STORED\r\n"
    );
    // The example from the spec: b (on the second server) is a miss.
    let request = [
        line(&[b"mg", a, b"v", b"q"]),
        line(&[b"mg", b, b"v", b"q"]),
        line(&[b"mg", c, b"v", b"q"]),
        b"mn\r\n".to_vec(),
    ]
    .concat();
    assert_replies(
        &client.exchange(&request, 3),
        &[
            b"VA 1\r\nA\r\n".to_vec(),
            b"VA 1\r\nC\r\n".to_vec(),
            b"MN\r\n".to_vec(),
        ],
        "mg q over three servers",
    );
    // Nothing hit: only MN.
    let request = [
        line(&[b"mg", b, b"v", b"q"]),
        line(&[b"mg", b"quiet:none", b"v", b"q"]),
        b"mn\r\n".to_vec(),
    ]
    .concat();
    assert_eq!(client.exchange(&request, 1), vec![b"MN\r\n".to_vec()]);

    // 600 keys over the three servers, every third one absent, each asked with k so the hit
    // names itself; several mn in the middle.
    let keys: Vec<Vec<u8>> = (0..600).map(|n| format!("{n}.qk").into_bytes()).collect();
    let sets: Vec<u8> = keys
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 != 1)
        .flat_map(|(n, key)| store("set", key, 0, 0, format!("q{n}").as_bytes(), true))
        .collect();
    client.send(&sets);
    let mut script = Script::default();
    for (n, key) in keys.iter().enumerate() {
        let replies = if n % 3 != 1 {
            vec![va(
                format!("q{n}").as_bytes(),
                &format!(" k{}", String::from_utf8_lossy(key)),
            )]
        } else {
            vec![]
        };
        script.step_owned(line(&[b"mg", key, b"k", b"v", b"q"]), replies);
        if n % 100 == 99 {
            script.step(b"mn\r\n", &[b"MN\r\n"]);
        }
    }
    script.play(&mut client, "600 quiet mg");
    let owners = cluster.owners(&keys);
    for server in 0..3 {
        assert!(
            owners.contains(&Some(server)),
            "server {server} holds no qk key"
        );
    }
}

#[test]
fn quiet_meta_set_delete_and_arithmetic_show_only_what_memcached_shows() {
    let cluster = Cluster::start(3);
    let oracle = MemcachedServer::start();
    let mut script = Script::default();
    for n in 0..90 {
        let key = format!("{n}.qm");
        script.step_owned(
            format!("ms {key} 2 q\r\nv{}\r\n", n % 10).into_bytes(),
            vec![],
        );
    }
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    for n in 0..120 {
        // Keys 90..119 do not exist: md q shows NF for them only.
        let key = format!("{n}.qm");
        let replies = if n < 90 {
            vec![]
        } else {
            vec![b"NF\r\n".to_vec()]
        };
        script.step_owned(format!("md {key} q\r\n").into_bytes(), replies);
    }
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    for n in 0..30 {
        let key = format!("{n}.qa");
        // Missing: NF even when quiet; autovivified: HD (memcached shows it); then quiet counts
        // are silent, and a loud one shows the total.
        script.step_owned(
            format!("ma {key} q\r\n").into_bytes(),
            vec![b"NF\r\n".to_vec()],
        );
        script.step_owned(
            format!("ma {key} N0 J{n} q\r\n").into_bytes(),
            vec![b"HD\r\n".to_vec()],
        );
        script.step_owned(format!("ma {key} q\r\n").into_bytes(), vec![]);
        script.step_owned(format!("ma {key} q v\r\n").into_bytes(), vec![]);
        script.step_owned(
            format!("ma {key} v\r\n").into_bytes(),
            vec![va((n + 3).to_string().as_bytes(), "")],
        );
        // ms in add mode: NS is not quiet.
        script.step_owned(
            format!("ms {key} 1 ME q\r\nx\r\n").into_bytes(),
            vec![b"NS\r\n".to_vec()],
        );
    }
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script.play(&mut oracle.client(), "memcached itself");
    script.play(&mut cluster.client(), "walnut");
}

#[test]
fn mn_waits_for_every_earlier_reply() {
    let cluster = Cluster::start(3);
    let mut client = cluster.client();
    let big = binary_data(1_000_000, 5);
    assert_eq!(
        client.call(&store("set", b"mn:big", 0, 0, &big, false)),
        b"STORED\r\n"
    );
    // mn alone.
    assert_eq!(client.call(b"mn\r\n"), b"MN\r\n");
    // After a slow-to-transfer 1 MB reply, a multi-get and a noreply set.
    let mut script = Script::default();
    script.step(b"mg mn:big v\r\n", &[&va(&big, "")]);
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script.step(
        b"get mn:big mn:none mn:big\r\n",
        &[&found(&[
            value(b"mn:big", 0, &big),
            value(b"mn:big", 0, &big),
        ])],
    );
    script.step(b"set mn:a 0 0 1 noreply\r\nz\r\n", &[]);
    script.step(b"mn\r\nmn\r\n", &[b"MN\r\n", b"MN\r\n"]);
    script.step(b"mg mn:a v q\r\nmn\r\n", &[b"VA 1\r\nz\r\n", b"MN\r\n"]);
    script.play(&mut client, "mn after big replies");
}

// ------------------------------------------------------------------------------------------
// 7. Dead servers

#[test]
fn multi_get_with_a_killed_server_returns_the_other_values_then_end() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client();
    // 20 keys on each server, interleaved: s0, s1, s2, s0, …
    let groups = cluster.keys_by_server("kill:", 20);
    let keys: Vec<Vec<u8>> = (0..60).map(|n| groups[n % 3][n / 3].clone()).collect();
    for (n, key) in keys.iter().enumerate() {
        assert_eq!(
            client.call(&store(
                "set",
                key,
                n as u32,
                0,
                format!("k{n}").as_bytes(),
                false
            )),
            b"STORED\r\n"
        );
    }
    let owners = cluster.owners(&keys);
    let victim = owners[0].unwrap();
    assert!(owners.iter().any(|o| *o != Some(victim)), "{owners:?}");
    cluster.servers[victim].kill();

    let mut request = b"get".to_vec();
    let mut blocks = Vec::new();
    for (n, key) in keys.iter().enumerate() {
        request.push(b' ');
        request.extend_from_slice(key);
        if owners[n] != Some(victim) {
            blocks.push(value(key, n as u32, format!("k{n}").as_bytes()));
        }
    }
    request.extend_from_slice(b"\r\n");
    let want = found(&blocks);
    // Twice: once while walnut still holds a connection to the killed server, once after.
    for attempt in 0..2 {
        assert_bytes(
            &client.call(&request),
            &want,
            &format!("multi-get #{attempt} with server {victim} dead"),
        );
    }
    // The same through gets and gat, pipelined with other requests; the connection is open.
    let live = &keys[owners.iter().position(|o| *o != Some(victim)).unwrap()];
    let live_n = keys.iter().position(|k| k == live).unwrap();
    let live_block = found(&[value(live, live_n as u32, format!("k{live_n}").as_bytes())]);
    let mut gat = b"gat 0".to_vec();
    gat.extend_from_slice(&request[3..]);
    let replies = client.exchange(
        &[gat, line(&[b"get", live]), b"mn\r\n".to_vec()].concat(),
        3,
    );
    assert_bytes(&replies[0], &want, "gat with a dead server");
    assert_eq!(replies[1], live_block);
    assert_eq!(replies[2], b"MN\r\n");

    // A single-key request to the dead server: SERVER_ERROR, connection kept.
    let dead = &keys[0];
    assert_eq!(
        show(&client.call(&line(&[b"get", dead]))),
        "SERVER_ERROR Connection refused\\r\\n"
    );
    assert_eq!(
        show(&client.call(&store("set", dead, 0, 0, b"x", false))),
        "SERVER_ERROR Connection refused\\r\\n"
    );
    assert_eq!(client.call(&line(&[b"get", live])), live_block);

    // Once the server is back (empty), its keys are simply absent.
    cluster.servers[victim].restart();
    assert_bytes(&client.call(&request), &want, "after restart");
    assert_eq!(
        client.call(&store("set", dead, 1, 0, b"back", false)),
        b"STORED\r\n"
    );
    assert_eq!(
        client.call(&line(&[b"get", dead])),
        found(&[value(dead, 1, b"back")])
    );
}

#[test]
fn multi_get_with_every_server_down_answers_server_error_and_stays_open() {
    let mut servers = vec![MemcachedServer::start(), MemcachedServer::start()];
    for server in &mut servers {
        server.kill();
    }
    let mut cluster = Cluster::over(servers);
    let mut client = cluster.client();
    let refused = b"SERVER_ERROR Connection refused\r\n".to_vec();
    let request = b"get down:1 down:2 down:3 down:4 down:5 down:6 down:7 down:8\r\n";
    assert_eq!(show(&client.call(request)), show(&refused));
    assert_eq!(
        show(&client.call(b"gets down:1 down:2 down:3 down:4\r\n")),
        show(&refused)
    );
    assert_eq!(show(&client.call(b"get down:1\r\n")), show(&refused));
    assert_eq!(client.call(b"mn\r\n"), b"MN\r\n");
    // noreply to a dead server: still no reply.
    assert_eq!(
        client.exchange(b"set down:1 0 0 1 noreply\r\nx\r\nmn\r\n", 1),
        vec![b"MN\r\n".to_vec()]
    );
    // Same connection once the servers are back.
    for server in &mut cluster.servers {
        server.restart();
    }
    assert_eq!(client.call(b"set down:1 0 0 2\r\nup\r\n"), b"STORED\r\n");
    assert_eq!(client.call(request), b"VALUE down:1 0 2\r\nup\r\nEND\r\n");
}

#[test]
fn single_key_request_to_a_dead_server_answers_connection_refused() {
    let mut servers = vec![MemcachedServer::start(), MemcachedServer::start()];
    servers[1].kill();
    let cluster = Cluster::over(servers);
    let mut client = cluster.client();
    let refused = b"SERVER_ERROR Connection refused\r\n".to_vec();
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for n in 0..40 {
        let key = format!("{n}.half").into_bytes();
        let reply = client.call(&store("set", &key, 0, 0, &key, false));
        match reply.as_slice() {
            b"STORED\r\n" => live.push(key),
            r if r == refused.as_slice() => dead.push(key),
            other => panic!("set {}: {}", show(&key), show(other)),
        }
    }
    assert!(!live.is_empty() && !dead.is_empty(), "{live:?} / {dead:?}");
    let owners = cluster.owners(&live);
    assert!(owners.iter().all(|o| *o == Some(0)), "{owners:?}");
    // Every kind of single-key request to the dead server, pipelined with live ones.
    let d = &dead[0];
    let l = &live[0];
    let mut script = Script::default();
    for request in [
        line(&[b"get", d]),
        line(&[b"gets", d]),
        line(&[b"delete", d]),
        line(&[b"incr", d, b"1"]),
        line(&[b"touch", d, b"0"]),
        store("append", d, 0, 0, b"x", false),
        line(&[b"gat", b"0", d]),
    ] {
        script.step_owned(request, vec![refused.clone()]);
        script.step_owned(line(&[b"get", l]), vec![found(&[value(l, 0, l)])]);
    }
    // Meta commands too; a failure is not a miss, so quiet mode still shows it.
    for request in [
        line(&[b"mg", d, b"v"]),
        line(&[b"mg", d, b"v", b"q"]),
        [line(&[b"ms", d, b"1", b"q"]), b"x\r\n".to_vec()].concat(),
        line(&[b"md", d, b"q"]),
        line(&[b"ma", d, b"q"]),
        line(&[b"me", d]),
    ] {
        script.step_owned(request, vec![refused.clone()]);
    }
    script.step_owned(line(&[b"mg", l, b"v", b"q"]), vec![va(l, "")]);
    script.step_owned(line(&[b"delete", d, b"noreply"]), vec![]);
    script.step_owned(line(&[b"incr", d, b"1", b"noreply"]), vec![]);
    script.step(b"mn\r\n", &[b"MN\r\n"]);
    script.play(&mut client, "dead and live keys, pipelined");
    script.play_one_by_one(&mut client, "dead and live keys, one by one");
    // A multi-get over both: the live values, then END.
    let mut words: Vec<&[u8]> = vec![b"get"];
    words.extend(dead.iter().chain(&live).map(Vec::as_slice));
    let want = found(&live.iter().map(|k| value(k, 0, k)).collect::<Vec<_>>());
    assert_bytes(
        &client.call(&line(&words)),
        &want,
        "multi-get, one server dead",
    );
}
