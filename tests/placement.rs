//! Key placement equals nutcracker's: the same config and keys through Debian's nutcracker and
//! through walnut land every key on the same real redis-server, for every hash function ×
//! {ketama, modula}, with unequal weights, aliases, a server on port 11211 (named by host
//! alone), a unix-socket server (named `/path:`), hash tags and the empty key. The same holds
//! for memcached pools (`redis: false`), observed by writing keys through each proxy and then
//! asking each memcached directly which of them it holds.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use common::mc::McClient;
use common::{free_port, local, MemcachedServer, ProxyProcess, RedisServer, TempDir, Value};

const HASHES: [&str; 12] = [
    "one_at_a_time",
    "md5",
    "crc16",
    "crc32",
    "crc32a",
    "fnv1_64",
    "fnv1a_64",
    "fnv1_32",
    "fnv1a_32",
    "hsieh",
    "murmur",
    "jenkins",
];
const DISTRIBUTIONS: [&str; 2] = ["ketama", "modula"];
const KEYS_PER_POOL: usize = 1000;

struct PoolUnderTest {
    name: String,
    hash_tag: bool,
    nutcracker_port: u16,
    walnut_port: u16,
}

/// Starts a redis-server on port 11211 of the first free 127.0.0.x address.
fn redis_on_port_11211() -> RedisServer {
    for last in 2..40u8 {
        let host = format!("127.0.0.{last}");
        if std::net::TcpListener::bind((host.as_str(), 11211)).is_ok() {
            return RedisServer::start_on(&host, 11211);
        }
    }
    panic!("no 127.0.0.x address has port 11211 free");
}

/// Which backend holds each key, read directly from the backends.
fn key_locations(backends: &[RedisServer]) -> BTreeMap<Vec<u8>, Vec<usize>> {
    let mut locations: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let Value::Array(keys) = backend.client().cmd_str(&["KEYS", "*"]) else {
            panic!("KEYS did not return an array");
        };
        for key in keys {
            let Value::Bulk(key) = key else {
                panic!("KEYS returned a non-bulk")
            };
            locations.entry(key).or_default().push(index);
        }
    }
    locations
}

fn flush_all(backends: &[RedisServer]) {
    for backend in backends {
        assert_eq!(
            backend.client().cmd_str(&["FLUSHALL"]),
            Value::Status("OK".into())
        );
    }
}

fn keys_for(pool: &PoolUnderTest) -> Vec<Vec<u8>> {
    (0..KEYS_PER_POOL)
        .map(|i| {
            let key = if pool.hash_tag && i % 2 == 0 {
                format!("{}:{{tag{}}}:{i}", pool.name, i / 7)
            } else {
                format!("{}:key:{i}", pool.name)
            };
            let mut key = key.into_bytes();
            if i % 10 == 3 {
                // Bytes >= 0x80 exercise the sign-extension quirks of the hash functions.
                key.extend_from_slice(&[0xc3, 0xa9, 0xff, 0x80]);
            }
            key
        })
        .collect()
}

/// Writes every pool's keys through the proxy whose port `port_of` picks.
fn write_all_keys(pools: &[PoolUnderTest], port_of: impl Fn(&PoolUnderTest) -> u16) {
    for pool in pools {
        let mut client = common::RespClient::connect(&format!("127.0.0.1:{}", port_of(pool)));
        let commands: Vec<Vec<Vec<u8>>> = keys_for(pool)
            .into_iter()
            .map(|key| vec![b"SET".to_vec(), key, b"v".to_vec()])
            .collect();
        let replies = client.pipeline(&commands);
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(
                reply,
                &Value::Status("OK".into()),
                "pool {} key #{i}",
                pool.name
            );
        }
    }
}

/// Where the empty key of each pool lands, one pool at a time.
fn empty_key_locations(
    pools: &[PoolUnderTest],
    backends: &[RedisServer],
    port_of: impl Fn(&PoolUnderTest) -> u16,
) -> Vec<Vec<usize>> {
    pools
        .iter()
        .map(|pool| {
            let mut client = common::RespClient::connect(&format!("127.0.0.1:{}", port_of(pool)));
            assert_eq!(
                client.cmd(&[b"SET", b"", b"empty"]),
                Value::Status("OK".into())
            );
            let found = key_locations(backends).remove(&b""[..]).unwrap_or_default();
            assert_eq!(client.cmd(&[b"DEL", b""]), Value::Int(1));
            found
        })
        .collect()
}

#[test]
fn every_key_lands_on_the_same_server_as_under_nutcracker() {
    let dir = TempDir::new("placement");
    let mut backends = vec![
        RedisServer::start(),
        RedisServer::start(),
        redis_on_port_11211(),
        RedisServer::start(),
    ];
    backends.push(RedisServer::start_unix(&dir.file("redis.sock")));
    backends.push(RedisServer::start());
    // Unequal weights; aliases on some servers; 11211 and unix servers unnamed on purpose.
    let server_lines = [
        backends[0].server_line(1, None),
        backends[1].server_line(3, Some("beta")),
        backends[2].server_line(2, None),
        backends[3].server_line(1, Some("server10")),
        backends[4].server_line(2, None),
        backends[5].server_line(5, Some("server3")),
    ];

    let mut pools = Vec::new();
    let mut nutcracker_conf = String::new();
    let mut walnut_conf = String::new();
    for (h, hash) in HASHES.iter().enumerate() {
        for distribution in DISTRIBUTIONS {
            let pool = PoolUnderTest {
                name: format!("{hash}_{distribution}"),
                hash_tag: h % 2 == 0,
                nutcracker_port: free_port(),
                walnut_port: free_port(),
            };
            for (conf, port) in [
                (&mut nutcracker_conf, pool.nutcracker_port),
                (&mut walnut_conf, pool.walnut_port),
            ] {
                conf.push_str(&format!(
                    "{}:\n  listen: 127.0.0.1:{port}\n  hash: {hash}\n  distribution: {distribution}\n  redis: true\n",
                    pool.name
                ));
                if pool.hash_tag {
                    conf.push_str("  hash_tag: \"{}\"\n");
                }
                conf.push_str("  servers:\n");
                for line in &server_lines {
                    conf.push_str(&format!("   - {line}\n"));
                }
            }
            pools.push(pool);
        }
    }
    let nutcracker_addrs: Vec<SocketAddr> =
        pools.iter().map(|p| local(p.nutcracker_port)).collect();
    let walnut_addrs: Vec<SocketAddr> = pools.iter().map(|p| local(p.walnut_port)).collect();
    let nutcracker = ProxyProcess::nutcracker(&nutcracker_conf, &nutcracker_addrs);
    let walnut = ProxyProcess::walnut(&walnut_conf, &walnut_addrs);

    flush_all(&backends);
    write_all_keys(&pools, |p| p.nutcracker_port);
    let under_nutcracker = key_locations(&backends);
    flush_all(&backends);
    write_all_keys(&pools, |p| p.walnut_port);
    let under_walnut = key_locations(&backends);

    assert_eq!(
        under_nutcracker.len(),
        pools.len() * KEYS_PER_POOL,
        "nutcracker stored every key once"
    );
    let mut used_backends = std::collections::BTreeSet::new();
    let mut mismatches = Vec::new();
    for (key, nut_servers) in &under_nutcracker {
        assert_eq!(
            nut_servers.len(),
            1,
            "key {key:?} stored twice under nutcracker"
        );
        used_backends.insert(nut_servers[0]);
        let walnut_servers = under_walnut.get(key);
        if walnut_servers != Some(nut_servers) {
            mismatches.push(format!(
                "{}: nutcracker {nut_servers:?} walnut {walnut_servers:?}",
                String::from_utf8_lossy(key)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} keys placed differently, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    assert_eq!(
        under_walnut.len(),
        under_nutcracker.len(),
        "walnut stored no extra keys"
    );
    assert_eq!(
        used_backends.len(),
        backends.len(),
        "every backend received keys"
    );

    flush_all(&backends);
    let empty_nut = empty_key_locations(&pools, &backends, |p| p.nutcracker_port);
    let empty_walnut = empty_key_locations(&pools, &backends, |p| p.walnut_port);
    for (pool, (nut, wal)) in pools.iter().zip(empty_nut.iter().zip(&empty_walnut)) {
        assert_eq!(
            nut.len(),
            1,
            "pool {}: nutcracker stored the empty key once",
            pool.name
        );
        assert_eq!(
            nut, wal,
            "pool {}: the empty key lands on the same server",
            pool.name
        );
    }
    drop(walnut);
    drop(nutcracker);
}

// ------------------------------------------------------------------------------------------
// memcached pools
// ------------------------------------------------------------------------------------------

/// Starts a memcached on port 11211 of the first free 127.0.0.x address. It looks from
/// 127.0.0.40 up, so it never races `redis_on_port_11211` (127.0.0.2 up) in this binary.
fn memcached_on_port_11211() -> MemcachedServer {
    for last in 40..80u8 {
        let host = format!("127.0.0.{last}");
        if std::net::TcpListener::bind((host.as_str(), 11211)).is_err() {
            continue;
        }
        // Another process may take the address between the check and the start.
        let started = std::panic::catch_unwind(|| MemcachedServer::start_on(&host, 11211));
        if let Ok(server) = started {
            return server;
        }
    }
    panic!("no 127.0.0.x address has port 11211 free");
}

/// Writes every pool's keys through the proxy whose port `port_of` picks; each must be STORED.
fn memcached_write_all_keys(pools: &[PoolUnderTest], port_of: impl Fn(&PoolUnderTest) -> u16) {
    for pool in pools {
        // The Redis test's keys suit memcached too: at most 250 bytes, no spaces or control
        // bytes, some with bytes >= 0x80, half of them hash-tagged in a pool with a hash_tag.
        let keys = keys_for(pool);
        let mut client = McClient::connect(local(port_of(pool)));
        let mut requests = Vec::new();
        for key in &keys {
            requests.extend_from_slice(b"set ");
            requests.extend_from_slice(key);
            requests.extend_from_slice(b" 0 0 1\r\nv\r\n");
        }
        for (i, reply) in client.exchange(&requests, keys.len()).iter().enumerate() {
            assert_eq!(
                String::from_utf8_lossy(reply),
                "STORED\r\n",
                "pool {} key #{i}",
                pool.name
            );
        }
    }
}

/// Which backend holds each of `keys`, asked of each memcached directly with multi-gets.
fn memcached_key_locations(
    backends: &[MemcachedServer],
    keys: &[Vec<u8>],
) -> BTreeMap<Vec<u8>, Vec<usize>> {
    let mut locations: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    let chunks: Vec<&[Vec<u8>]> = keys.chunks(100).collect();
    let mut requests = Vec::new();
    for chunk in &chunks {
        requests.extend_from_slice(b"get");
        for key in *chunk {
            requests.push(b' ');
            requests.extend_from_slice(key);
        }
        requests.extend_from_slice(b"\r\n");
    }
    for (index, backend) in backends.iter().enumerate() {
        for reply in backend.client().exchange(&requests, chunks.len()) {
            // Every value is "v", so a line starting with VALUE is always a header.
            for line in reply.split(|&b| b == b'\n') {
                if let Some(rest) = line.strip_prefix(b"VALUE ") {
                    let key = rest.split(|&b| b == b' ').next().unwrap_or_default();
                    locations.entry(key.to_vec()).or_default().push(index);
                }
            }
        }
    }
    locations
}

fn memcached_flush_all(backends: &[MemcachedServer]) {
    for backend in backends {
        assert_eq!(
            String::from_utf8_lossy(&backend.client().call(b"flush_all\r\n")),
            "OK\r\n"
        );
    }
}

#[test]
fn every_memcached_key_lands_on_the_same_server_as_under_nutcracker() {
    let backends = vec![
        MemcachedServer::start(),
        MemcachedServer::start(),
        memcached_on_port_11211(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    // Unequal weights; aliases on some servers; the 11211 server unnamed on purpose (its name,
    // which feeds ketama, is the host alone).
    let server_lines = [
        backends[0].server_line(1, None),
        backends[1].server_line(3, Some("beta")),
        backends[2].server_line(2, None),
        backends[3].server_line(1, Some("server10")),
        backends[4].server_line(5, Some("server3")),
    ];

    let mut pools = Vec::new();
    let mut nutcracker_conf = String::new();
    let mut walnut_conf = String::new();
    for (h, hash) in HASHES.iter().enumerate() {
        for distribution in DISTRIBUTIONS {
            let pool = PoolUnderTest {
                name: format!("mc_{hash}_{distribution}"),
                hash_tag: h % 2 == 1,
                nutcracker_port: free_port(),
                walnut_port: free_port(),
            };
            for (conf, port) in [
                (&mut nutcracker_conf, pool.nutcracker_port),
                (&mut walnut_conf, pool.walnut_port),
            ] {
                conf.push_str(&format!(
                    "{}:\n  listen: 127.0.0.1:{port}\n  hash: {hash}\n  distribution: {distribution}\n  redis: false\n",
                    pool.name
                ));
                if pool.hash_tag {
                    conf.push_str("  hash_tag: \"{}\"\n");
                }
                conf.push_str("  servers:\n");
                for line in &server_lines {
                    conf.push_str(&format!("   - {line}\n"));
                }
            }
            pools.push(pool);
        }
    }
    let nutcracker_addrs: Vec<SocketAddr> =
        pools.iter().map(|p| local(p.nutcracker_port)).collect();
    let walnut_addrs: Vec<SocketAddr> = pools.iter().map(|p| local(p.walnut_port)).collect();
    let nutcracker = ProxyProcess::nutcracker(&nutcracker_conf, &nutcracker_addrs);
    let walnut = ProxyProcess::walnut(&walnut_conf, &walnut_addrs);
    let all_keys: Vec<Vec<u8>> = pools.iter().flat_map(keys_for).collect();
    assert!(all_keys
        .iter()
        .all(|k| k.len() <= 250 && !k.contains(&b' ')));

    memcached_flush_all(&backends);
    memcached_write_all_keys(&pools, |p| p.nutcracker_port);
    let under_nutcracker = memcached_key_locations(&backends, &all_keys);
    memcached_flush_all(&backends);
    memcached_write_all_keys(&pools, |p| p.walnut_port);
    let under_walnut = memcached_key_locations(&backends, &all_keys);

    assert_eq!(
        under_nutcracker.len(),
        pools.len() * KEYS_PER_POOL,
        "nutcracker stored every key"
    );
    let mut used_backends = std::collections::BTreeSet::new();
    let mut mismatches = Vec::new();
    for (key, nut_servers) in &under_nutcracker {
        assert_eq!(
            nut_servers.len(),
            1,
            "key {key:?} stored twice under nutcracker"
        );
        used_backends.insert(nut_servers[0]);
        let walnut_servers = under_walnut.get(key);
        if walnut_servers != Some(nut_servers) {
            mismatches.push(format!(
                "{}: nutcracker {nut_servers:?} walnut {walnut_servers:?}",
                String::from_utf8_lossy(key)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} keys placed differently, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    assert_eq!(
        under_walnut.len(),
        under_nutcracker.len(),
        "walnut stored every key exactly where nutcracker did"
    );
    assert_eq!(
        used_backends.len(),
        backends.len(),
        "every backend received keys"
    );
    drop(walnut);
    drop(nutcracker);
}
