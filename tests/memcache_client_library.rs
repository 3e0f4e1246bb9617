//! walnut behind a real client library: the `memcache` crate (rust-memcache) speaking the ASCII
//! protocol to walnut, over three memcached servers. Every value read back is checked against
//! the one written, and the items are checked on the servers themselves.

#[allow(unused_imports)] // the shared fixture re-exports more than this file uses
mod common;

use std::collections::HashMap;
use std::io::Write;

use common::mc::McClient;
use common::{free_port, local, MemcachedServer, ProxyProcess};
use memcache::{Client, CommandError, MemcacheError, ServerError, ToMemcacheValue};

/// Socket timeout of the library's connections, in seconds: only there to turn a hang into a
/// failure; nothing here asserts timing.
const LIMIT_SECS: u32 = 120;

struct Setup {
    servers: Vec<MemcachedServer>,
    _walnut: ProxyProcess,
    port: u16,
}

fn start() -> Setup {
    let servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let port = free_port();
    let mut conf = format!(
        "mc:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 2000\n  redis: false\n  servers:\n"
    );
    for server in &servers {
        conf.push_str(&format!("   - {}\n", server.server_line(1, None)));
    }
    let walnut = ProxyProcess::walnut(&conf, &[local(port)]);
    Setup {
        servers,
        _walnut: walnut,
        port,
    }
}

impl Setup {
    /// The library's client with a pool of `connections` connections to walnut, ASCII protocol.
    fn client(&self, connections: u32) -> Client {
        let url = format!(
            "memcache://127.0.0.1:{}?protocol=ascii&timeout={LIMIT_SECS}",
            self.port
        );
        Client::builder()
            .add_server(url)
            .expect("server url")
            .with_max_pool_size(connections)
            .build()
            .expect("connect through walnut")
    }

    /// For each key, the server that holds it, asked directly (`mg <key>`), skipping servers
    /// that are down.
    fn owners(&self, keys: &[String]) -> Vec<Option<usize>> {
        let mut owners = vec![None; keys.len()];
        for (index, server) in self.servers.iter().enumerate() {
            if std::net::TcpStream::connect(server.addr()).is_err() {
                continue;
            }
            let request: String = keys.iter().map(|key| format!("mg {key}\r\n")).collect();
            let replies = server.client().exchange(request.as_bytes(), keys.len());
            for (n, reply) in replies.iter().enumerate() {
                if reply == b"HD\r\n" {
                    assert_eq!(owners[n], None, "{} is on two servers", keys[n]);
                    owners[n] = Some(index);
                }
            }
        }
        owners
    }

    /// The raw `get` reply of the server holding `key`.
    fn direct_get(&self, key: &str) -> Vec<u8> {
        let owner =
            self.owners(&[key.to_string()])[0].unwrap_or_else(|| panic!("{key} is on no server"));
        let mut direct: McClient = self.servers[owner].client();
        direct.call(format!("get {key}\r\n").as_bytes())
    }
}

/// Bytes with explicit memcached flags (the library's own value types always send 0).
struct Flagged<'a> {
    flags: u32,
    data: &'a [u8],
}

impl<W: Write> ToMemcacheValue<W> for Flagged<'_> {
    fn get_flags(&self) -> u32 {
        self.flags
    }

    fn get_length(&self) -> usize {
        self.data.len()
    }

    fn write_to(&self, stream: &mut W) -> std::io::Result<()> {
        stream.write_all(self.data)
    }
}

fn value_block(key: &str, flags: u32, data: &[u8]) -> Vec<u8> {
    let mut out = format!("VALUE {key} {flags} {}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\nEND\r\n");
    out
}

/// Deterministic binary data with CR, LF, NUL and 0xff bytes and protocol words inside.
fn binary_data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        match (state >> 33) % 10 {
            0 => out.extend_from_slice(b"\r\nEND\r\n"),
            1 => out.extend_from_slice(b"\0\xff"),
            2 => out.extend_from_slice(b"VALUE x 0 1\r\n"),
            _ => out.push((state >> 40) as u8),
        }
    }
    out.truncate(len);
    out
}

fn is_not_found(result: &Result<u64, MemcacheError>) -> bool {
    matches!(
        result,
        Err(MemcacheError::CommandError(CommandError::KeyNotFound))
    )
}

#[test]
fn library_set_get_add_replace_append_prepend_delete_round_trip() {
    let setup = start();
    let client = setup.client(2);

    client.set("lib:a", "alpha", 0).unwrap();
    assert_eq!(
        client.get::<String>("lib:a").unwrap().as_deref(),
        Some("alpha")
    );
    assert_eq!(client.get::<String>("lib:none").unwrap(), None);

    // add refuses an existing key; replace refuses a missing one. The library maps
    // NOT_STORED to Ok(()), so the effect is checked by reading back.
    client.add("lib:a", "ignored", 0).unwrap();
    client.add("lib:b", "bravo", 0).unwrap();
    client.replace("lib:none", "ignored", 0).unwrap();
    client.replace("lib:b", "BRAVO", 0).unwrap();
    client.append("lib:a", "-tail").unwrap();
    client.prepend("lib:a", "head-").unwrap();
    assert_eq!(
        client.get::<String>("lib:a").unwrap().as_deref(),
        Some("head-alpha-tail")
    );
    assert_eq!(
        client.get::<String>("lib:b").unwrap().as_deref(),
        Some("BRAVO")
    );
    assert_eq!(client.get::<String>("lib:none").unwrap(), None);

    // Numbers are stored as text.
    client.set("lib:n", 12345u64, 0).unwrap();
    assert_eq!(client.get::<u64>("lib:n").unwrap(), Some(12345));

    // The items are on the memcached servers, as the library wrote them.
    assert_eq!(
        setup.direct_get("lib:a"),
        value_block("lib:a", 0, b"head-alpha-tail")
    );
    assert_eq!(setup.direct_get("lib:b"), value_block("lib:b", 0, b"BRAVO"));

    assert!(client.delete("lib:a").unwrap());
    assert!(!client.delete("lib:a").unwrap());
    assert_eq!(client.get::<String>("lib:a").unwrap(), None);
    assert_eq!(setup.owners(&["lib:a".to_string()]), vec![None]);
}

#[test]
fn library_multi_get_of_2000_keys_returns_exactly_the_stored_ones() {
    let setup = start();
    let client = setup.client(2);
    let keys: Vec<String> = (0..2000).map(|n| format!("{n}.lm")).collect();
    let mut stored = HashMap::new();
    for (n, key) in keys.iter().enumerate() {
        if n % 7 == 3 {
            continue; // left out on purpose
        }
        let data = format!("multi-{n}-{}", "z".repeat(n % 31));
        client.set(key, data.as_str(), 0).unwrap();
        stored.insert(key.clone(), data);
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    // One request for all of them: the library sends `gets k1 … k2000` to walnut.
    let got: HashMap<String, String> = client.gets(&refs).unwrap();
    assert_eq!(got.len(), stored.len());
    assert_eq!(got, stored);
    // With cas uniques, and in smaller batches.
    for batch in refs.chunks(333) {
        let got: HashMap<String, (String, u32, Option<u64>)> = client.gets(batch).unwrap();
        for key in batch {
            match (got.get(*key), stored.get(*key)) {
                (Some((data, flags, cas)), Some(want)) => {
                    assert_eq!((data, *flags), (want, 0), "{key}");
                    assert!(cas.is_some(), "{key} has a cas unique");
                }
                (None, None) => {}
                (got, want) => panic!("{key}: got {got:?}, want {want:?}"),
            }
        }
    }
    // The keys are spread over every server.
    let owners = setup.owners(&keys);
    for server in 0..3 {
        let held = owners.iter().filter(|o| **o == Some(server)).count();
        assert!(held > 200, "server {server} holds {held} keys");
    }
}

#[test]
fn library_incr_and_decr_return_the_new_count() {
    let setup = start();
    let client = setup.client(2);
    client.set("lc:a", 10u64, 0).unwrap();
    assert_eq!(client.increment("lc:a", 5).unwrap(), 15);
    assert_eq!(client.increment("lc:a", 1_000_000).unwrap(), 1_000_015);
    assert_eq!(client.decrement("lc:a", 15).unwrap(), 1_000_000);
    // decr stops at zero.
    assert_eq!(client.decrement("lc:a", 2_000_000).unwrap(), 0);
    // incr wraps at 2^64.
    client.set("lc:b", u64::MAX - 1, 0).unwrap();
    assert_eq!(client.increment("lc:b", 1).unwrap(), u64::MAX);
    assert_eq!(client.increment("lc:b", 3).unwrap(), 2);
    assert!(is_not_found(&client.increment("lc:none", 1)));
    assert!(is_not_found(&client.decrement("lc:none", 1)));
    // Many counters on every server, each counted separately.
    let counters: Vec<String> = (0..60).map(|n| format!("{n}.lc:count")).collect();
    for key in &counters {
        client.set(key, 0u64, 0).unwrap();
    }
    for round in 1..=5u64 {
        for (n, key) in counters.iter().enumerate() {
            assert_eq!(
                client.increment(key, n as u64 + 1).unwrap(),
                round * (n as u64 + 1)
            );
        }
    }
    let owners = setup.owners(&counters);
    assert!(owners.iter().all(Option::is_some), "{owners:?}");
    assert!(
        owners
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= 2,
        "counters on one server only: {owners:?}"
    );
}

#[test]
fn library_cas_succeeds_only_with_the_current_token() {
    let setup = start();
    let client = setup.client(2);
    for n in 0..30 {
        let key = format!("lcas:{n}");
        client.set(&key, "v1", 0).unwrap();
        let (data, flags, cas): (String, u32, Option<u64>) = client.get(&key).unwrap().unwrap();
        assert_eq!((data.as_str(), flags), ("v1", 0));
        let cas = cas.expect("gets gives a cas unique");
        assert!(!client.cas(&key, "stale", 0, cas + 1).unwrap(), "{key}");
        assert!(client.cas(&key, "v2", 0, cas).unwrap(), "{key}");
        // The token is spent.
        assert!(!client.cas(&key, "v3", 0, cas).unwrap(), "{key}");
        assert_eq!(client.get::<String>(&key).unwrap().as_deref(), Some("v2"));
        // The unique the library saw is the server's own.
        let (_, _, fresh): (String, u32, Option<u64>) = client.get(&key).unwrap().unwrap();
        let owner = setup.owners(std::slice::from_ref(&key))[0].unwrap();
        let direct = setup.servers[owner]
            .client()
            .call(format!("gets {key}\r\n").as_bytes());
        assert_eq!(
            direct,
            format!("VALUE {key} 0 2 {}\r\nv2\r\nEND\r\n", fresh.unwrap()).into_bytes()
        );
    }
    // cas on a missing key.
    assert!(!client.cas("lcas:none", "x", 0, 1).unwrap());
    assert_eq!(client.get::<String>("lcas:none").unwrap(), None);
}

#[test]
fn library_binary_values_and_flags_round_trip_up_to_1_mb() {
    let setup = start();
    let client = setup.client(2);
    let sizes = [
        1usize, 2, 7, 1000, 16_384, 65_537, 250_000, 999_999, 1_000_000,
    ];
    for (n, &size) in sizes.iter().enumerate() {
        let key = format!("lbin:{size}");
        let data = binary_data(size, n as u64 + 11);
        let flags = 0xdead_0000 + n as u32;
        client.set(&key, Flagged { flags, data: &data }, 0).unwrap();
        let got: Option<(Vec<u8>, u32)> = client.get(&key).unwrap();
        let (got_data, got_flags) = got.unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(got_flags, flags, "{key}");
        assert!(got_data == data, "{key}: {} bytes back", got_data.len());
        assert!(
            setup.direct_get(&key) == value_block(&key, flags, &data),
            "{key} on its server"
        );
    }
    // All of them in one multi-get.
    let keys: Vec<String> = sizes.iter().map(|size| format!("lbin:{size}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got: HashMap<String, (Vec<u8>, u32)> = client.gets(&refs).unwrap();
    assert_eq!(got.len(), sizes.len());
    for (n, &size) in sizes.iter().enumerate() {
        let (data, flags) = &got[&format!("lbin:{size}")];
        assert_eq!(*flags, 0xdead_0000 + n as u32);
        assert!(*data == binary_data(size, n as u64 + 11), "lbin:{size}");
    }
}

#[test]
fn library_touch_and_version_go_through_walnut() {
    let setup = start();
    let client = setup.client(1);
    client.set("lt:a", "x", 0).unwrap();
    assert!(client.touch("lt:a", 100_000).unwrap());
    assert!(!client.touch("lt:none", 0).unwrap());
    assert_eq!(client.get::<String>("lt:a").unwrap().as_deref(), Some("x"));
    let versions = client.version().unwrap();
    assert_eq!(versions.len(), 1);
    let direct = setup.servers[0].client().call(b"version\r\n");
    let direct = String::from_utf8(direct).unwrap();
    assert_eq!(
        format!("VERSION {}\r\n", versions[0].1),
        direct,
        "walnut forwards version to a memcached"
    );
}

#[test]
fn library_clients_on_8_threads_each_see_their_own_values() {
    let setup = start();
    let client = setup.client(8);
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let client = &client;
            scope.spawn(move || {
                for n in 0..250 {
                    let key = format!("lth:{thread}:{n}");
                    let data = format!("thread {thread} value {n}");
                    client.set(&key, data.as_str(), 0).unwrap();
                    assert_eq!(
                        client.get::<String>(&key).unwrap().as_deref(),
                        Some(data.as_str())
                    );
                    if n % 10 == 9 {
                        let keys: Vec<String> =
                            (n - 9..=n).map(|m| format!("lth:{thread}:{m}")).collect();
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        let got: HashMap<String, String> = client.gets(&refs).unwrap();
                        assert_eq!(got.len(), 10);
                        for m in n - 9..=n {
                            assert_eq!(
                                got[&format!("lth:{thread}:{m}")],
                                format!("thread {thread} value {m}")
                            );
                        }
                        let counter = format!("lth:{thread}:count");
                        if n == 9 {
                            client.set(&counter, 0u64, 0).unwrap();
                        }
                        assert_eq!(client.increment(&counter, 1).unwrap(), (n as u64 + 1) / 10);
                    }
                }
            });
        }
    });
    // Every thread's last value, read back from one connection.
    for thread in 0..8 {
        assert_eq!(
            client
                .get::<String>(&format!("lth:{thread}:249"))
                .unwrap()
                .as_deref(),
            Some(format!("thread {thread} value 249").as_str())
        );
        assert_eq!(
            client.get::<u64>(&format!("lth:{thread}:count")).unwrap(),
            Some(25)
        );
    }
}

#[test]
fn library_sees_server_error_for_a_dead_server_and_keeps_working() {
    let mut setup = start();
    let client = setup.client(1);
    let keys: Vec<String> = (0..30).map(|n| format!("{n}.ldead")).collect();
    for key in &keys {
        client.set(key, key.as_str(), 0).unwrap();
    }
    // The library checks each pooled connection with `version` before using it, and walnut
    // sends `version` to the server owning the key `placeholder`: that one must stay up.
    client.set("placeholder", "p", 0).unwrap();
    let keeper = setup.owners(&["placeholder".to_string()])[0].unwrap();
    client.delete("placeholder").unwrap();
    let owners = setup.owners(&keys);
    let victim = owners
        .iter()
        .flatten()
        .copied()
        .find(|&owner| owner != keeper)
        .expect("a key outside the placeholder's server");
    let dead_key = &keys[owners.iter().position(|o| *o == Some(victim)).unwrap()];
    setup.servers[victim].kill();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let live: HashMap<String, String> = keys
        .iter()
        .zip(&owners)
        .filter(|(_, owner)| **owner != Some(victim))
        .map(|(key, _)| (key.clone(), key.clone()))
        .collect();
    assert!(!live.is_empty());
    // A multi-get: the values from the servers that answered.
    for _ in 0..2 {
        let got: HashMap<String, String> = client.gets(&refs).unwrap();
        assert_eq!(got, live);
    }
    // A single key on the dead server: the library reports walnut's SERVER_ERROR line.
    match client.get::<String>(dead_key) {
        Err(MemcacheError::ServerError(ServerError::Error(line))) => {
            assert_eq!(line, "SERVER_ERROR Connection refused\r\n")
        }
        other => panic!("get of a key on the dead server: {other:?}"),
    }
    // The same connection goes on working for the live keys.
    let (live_key, _) = live.iter().next().unwrap();
    assert_eq!(
        client.get::<String>(live_key).unwrap().as_deref(),
        Some(live_key.as_str())
    );
    client.set(live_key, "again", 0).unwrap();
    assert_eq!(
        client.get::<String>(live_key).unwrap().as_deref(),
        Some("again")
    );
}
