//! Unit tests of the whole parse: defaults, a realistic file, error collection, ordering.

use super::*;
use crate::config::ReadFrom;

fn ok(text: &str) -> Config {
    match parse(text, "t.yml") {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse(text, "t.yml") {
        Ok(c) => panic!("unexpectedly accepted: {c:?}"),
        Err(e) => e.0.into_iter().map(|e| e.0).collect(),
    }
}

#[test]
fn defaults() {
    let c = ok("alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(c.pools.len(), 1);
    let p = &c.pools[0];
    assert_eq!(p.name, "alpha");
    assert_eq!(p.listen_text, "127.0.0.1:22121");
    assert_eq!(
        p.listen,
        ListenAddr::Tcp {
            host: "127.0.0.1".into(),
            port: 22121,
            addr: "127.0.0.1:22121".parse().unwrap()
        }
    );
    assert_eq!(p.hash, HashKind::Fnv1a64);
    assert_eq!(p.hash_tag, None);
    assert_eq!(p.distribution, DistributionKind::Ketama);
    assert_eq!(p.timeout_ms, None);
    assert_eq!(p.backlog, 512);
    assert_eq!(p.client_connections, 0);
    assert!(!p.redis);
    assert!(!p.tcpkeepalive);
    assert!(!p.reuseport);
    assert_eq!(p.redis_auth, None);
    assert_eq!(p.redis_db, 0);
    assert!(!p.preconnect);
    assert!(!p.auto_eject_hosts);
    assert_eq!(p.server_connections, 1);
    assert_eq!(p.server_retry_timeout_ms, 30_000);
    assert_eq!(p.server_failure_limit, 2);
    assert_eq!(p.servers.len(), 1);
    assert_eq!(p.servers[0].name, "127.0.0.1:6379");
}

#[test]
fn timeout_zero_means_none() {
    let c = ok("a:\n  listen: 127.0.0.1:1\n  timeout: 0\n  servers:\n   - h:1:1\n");
    assert_eq!(c.pools[0].timeout_ms, None);
    let c = ok("a:\n  listen: 127.0.0.1:1\n  timeout: 400\n  servers:\n   - h:1:1\n");
    assert_eq!(c.pools[0].timeout_ms, Some(400));
}

const REALISTIC: &str = r#"# A typical nutcracker.yml
zeta:
  listen: 127.0.0.1:22122
  hash: fnv1a_64
  hash_tag: "{}"
  distribution: ketama
  auto_eject_hosts: true
  redis: true
  redis_auth: "s3cret"
  redis_db: 3
  server_retry_timeout: 2000
  server_failure_limit: 1
  timeout: 400
  backlog: 1024
  preconnect: true
  tcpkeepalive: true
  reuseport: true
  client_connections: 100
  server_connections: 2
  servers:
   - 127.0.0.1:6381:1 server10
   - 127.0.0.1:6380:1 server3
   - 127.0.0.1:6379:1 server1
   - /tmp/redis.sock:2

alpha:
  listen: /tmp/walnut.sock 0666
  hash: md5
  distribution: modula
  servers:
    - 10.0.0.2:11211:1
    - 10.0.0.1:11211:1
    - 10.0.0.1:11212:3
beta:
  listen: "127.0.0.1:22123"
  distribution: random
  hash: murmur
  servers:
  - 127.0.0.1:6379:1
"#;

#[test]
fn realistic_multi_pool_config() {
    let c = ok(REALISTIC);
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    // Length first: "beta" and "zeta" (4) before "alpha" (5).
    assert_eq!(names, ["beta", "zeta", "alpha"]);

    let zeta = &c.pools[1];
    assert_eq!(zeta.hash, HashKind::Fnv1a64);
    assert_eq!(zeta.hash_tag, Some(*b"{}"));
    assert!(zeta.auto_eject_hosts && zeta.redis && zeta.preconnect);
    assert!(zeta.tcpkeepalive && zeta.reuseport);
    assert_eq!(zeta.redis_auth.as_deref(), Some("s3cret"));
    assert_eq!(zeta.redis_db, 3);
    assert_eq!(zeta.server_retry_timeout_ms, 2000);
    assert_eq!(zeta.server_failure_limit, 1);
    assert_eq!(zeta.timeout_ms, Some(400));
    assert_eq!(zeta.backlog, 1024);
    assert_eq!(zeta.client_connections, 100);
    assert_eq!(zeta.server_connections, 2);
    let servers: Vec<(&str, &str, u32)> = zeta
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.pname.as_str(), s.weight))
        .collect();
    assert_eq!(
        servers,
        [
            ("server1", "127.0.0.1:6379:1", 1),
            ("server3", "127.0.0.1:6380:1", 1),
            ("server10", "127.0.0.1:6381:1", 1),
            ("/tmp/redis.sock:", "/tmp/redis.sock:2", 2),
        ]
    );

    let alpha = &c.pools[2];
    assert_eq!(
        alpha.listen,
        ListenAddr::Unix {
            path: "/tmp/walnut.sock".into(),
            perm: Some(0o666)
        }
    );
    assert_eq!(alpha.listen_text, "/tmp/walnut.sock 0666");
    assert_eq!(alpha.hash, HashKind::Md5);
    assert_eq!(alpha.distribution, DistributionKind::Modula);
    let names: Vec<&str> = alpha.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["10.0.0.1", "10.0.0.2", "10.0.0.1:11212"]);
    assert_eq!(
        alpha.servers[2].addr,
        ServerAddr::Tcp {
            host: "10.0.0.1".into(),
            port: 11212
        }
    );

    let beta = &c.pools[0];
    assert_eq!(beta.distribution, DistributionKind::Random);
    assert_eq!(beta.hash, HashKind::Murmur);
    assert_eq!(beta.listen_text, "127.0.0.1:22123");
}

#[test]
fn every_hash_and_distribution_name() {
    let names = [
        ("one_at_a_time", HashKind::OneAtATime),
        ("md5", HashKind::Md5),
        ("crc16", HashKind::Crc16),
        ("crc32", HashKind::Crc32),
        ("crc32a", HashKind::Crc32a),
        ("fnv1_64", HashKind::Fnv1_64),
        ("fnv1a_64", HashKind::Fnv1a64),
        ("fnv1_32", HashKind::Fnv1_32),
        ("fnv1a_32", HashKind::Fnv1a32),
        ("hsieh", HashKind::Hsieh),
        ("murmur", HashKind::Murmur),
        ("jenkins", HashKind::Jenkins),
    ];
    for (name, kind) in names {
        let c = ok(&format!(
            "a:\n  listen: 127.0.0.1:1\n  hash: {name}\n  servers:\n   - h:1:1\n"
        ));
        assert_eq!(c.pools[0].hash, kind);
    }
    for (name, kind) in [
        ("ketama", DistributionKind::Ketama),
        ("modula", DistributionKind::Modula),
        ("random", DistributionKind::Random),
    ] {
        let c = ok(&format!(
            "a:\n  listen: 127.0.0.1:1\n  distribution: {name}\n  servers:\n   - h:1:1\n"
        ));
        assert_eq!(c.pools[0].distribution, kind);
    }
}

#[test]
fn every_problem_is_collected() {
    let text = "\
alpha:
  listen: 127.0.0.1:22121
  hash: sha1
  distribution: consistent
  timeout: -1
  redis: yes
  redis: no
  Hash: md5
  redis_auth: x
  servers:
   - 127.0.0.1:6379:0
   - 127.0.0.1:6379
   - 127.0.0.1:6380:1
   - 127.0.0.1:6380:2
beta:
  server_connections: 0
  backlog: 99999999999
  servers:
   - 127.0.0.1:6379:1 my name
gamma:
  listen: 127.0.0.1:22121
  servers:
   - 127.0.0.1:6379:1
gamma:
  listen: 127.0.0.1:22122
  servers:
   - 127.0.0.1:6379:1
";
    assert_eq!(
        errors(text),
        [
            r#"conf: pool 'alpha': directive "hash" is not a valid hash: "sha1""#,
            r#"conf: pool 'alpha': directive "distribution" is not a valid distribution: "consistent""#,
            r#"conf: pool 'alpha': directive "timeout" is not a number: "-1""#,
            r#"conf: pool 'alpha': directive "redis" is not "true" or "false": "yes""#,
            r#"conf: pool 'alpha': directive "redis" is a duplicate: "no""#,
            r#"conf: pool 'alpha': directive "Hash" is unknown (directive names are case-sensitive: did you mean "hash"?)"#,
            r#"conf: pool 'alpha': directive "servers" has a zero weight in "hostname:port:weight [name]" format string: "127.0.0.1:6379:0""#,
            r#"conf: pool 'alpha': directive "servers" has an invalid "hostname:port:weight [name]"or "/path/unix_socket:weight [name]" format string: "127.0.0.1:6379""#,
            r#"conf: pool 'alpha': directive "redis_auth:" is only valid for a redis pool"#,
            r#"conf: pool 'alpha' has servers with same name '127.0.0.1:6380'"#,
            r#"conf: pool 'beta': directive "backlog" is not a number: "99999999999" (the maximum is 2147483647)"#,
            r#"conf: pool 'beta': directive "servers" has an invalid weight in "hostname:port:weight [name]" format string: "127.0.0.1:6379:1 my name" (the name is taken after the last space; names cannot contain spaces)"#,
            r#"conf: pool 'beta': directive "listen:" is missing"#,
            r#"conf: pool 'beta': directive "server_connections:" cannot be 0"#,
            r#"conf: pools 'alpha' and 'gamma' have the same listen address '127.0.0.1:22121'"#,
            r#"conf: 't.yml' has pools with same name 'gamma'"#,
        ]
    );
}

#[test]
fn structure_problems_are_collected_across_pools() {
    let text = "\
a:
  listen: 127.0.0.1:1
b: scalar
c:
  - x
d:
  listen: 127.0.0.1:2
  deep:
    x: y
  servers:
    - h:1:1
    - k: v
";
    assert_eq!(
        errors(text),
        [
            r#"conf: 't.yml' missing sequence directive at depth 2: pool 'a' has no "servers:" block sequence (line 1, column 1)"#,
            r#"conf: 't.yml' has invalid mapping "key:" at depth 1: pool 'b' must be a mapping of directives, not a scalar (line 3, column 4)"#,
            r#"conf: 't.yml' has sequence at depth 1 instead of 2: pool 'c' must be a mapping of directives, not a sequence (line 5, column 3)"#,
            r#"conf: 't.yml' has a depth greater than 2: directive "deep" of pool 'd' must be a scalar or a block sequence of scalars, not a mapping (line 9, column 5)"#,
            r#"conf: 't.yml' has a depth greater than 2: directive "servers" of pool 'd' has a mapping as an entry (line 12, column 7)"#,
        ]
    );
}

#[test]
fn token_problems() {
    assert_eq!(
        errors("%YAML 1.1\n---\na: {x: y}\n...\n"),
        [
            "conf: 't.yml' version directive token (3) is disallowed (line 1, column 1)",
            "conf: 't.yml' document start token (5) is disallowed (line 2, column 1)",
            "conf: 't.yml' flow mapping start token (12) is disallowed (line 3, column 4)",
            "conf: 't.yml' document end token (6) is disallowed (line 4, column 1)",
        ]
    );
    assert_eq!(
        errors("a:\n  listen: !!str 127.0.0.1:1\n  w: &y v\n  x: *y\n"),
        [
            "conf: 't.yml' tag token (20) is disallowed (line 2, column 11)",
            "conf: 't.yml' anchor token (19) is disallowed (line 3, column 6)",
            "conf: 't.yml' alias token (18) is disallowed (line 4, column 6)",
        ]
    );
    // Only the outermost flow collection is reported.
    assert_eq!(
        errors("a: [1, [2, {b: c}]]\n"),
        ["conf: 't.yml' flow sequence start token (10) is disallowed (line 1, column 4)"]
    );
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let e = errors("a:\n  b: \"unterminated\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("conf: 't.yml' is not valid YAML: "),
        "{e:?}"
    );
    assert!(e[0].contains("(line "), "{e:?}");
}

#[test]
fn empty_scalars_are_named() {
    assert_eq!(
        errors(
            "a:\n  listen: 127.0.0.1:1\n  hash: \"\"\n  \"\": x\n  servers:\n   -\n   - h:1:1\n"
        ),
        [
            r#"conf: pool 'a': directive "hash" has no value"#,
            "conf: pool 'a' has a directive with an empty name (line 4, column 3)",
            r#"conf: pool 'a': directive "servers" has an empty entry"#,
        ]
    );
    assert_eq!(
        errors("\"\":\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\n"),
        ["conf: 't.yml' has a pool with an empty name (line 1, column 1)"]
    );
}

#[test]
fn twemproxy_quirks_are_kept() {
    // The one block sequence may sit under any directive: each item is applied in turn,
    // and `servers` may then be a single scalar.
    let c = ok("a:\n  listen: 127.0.0.1:1\n  servers: h:1:1\n  hash:\n   - md5\n");
    assert_eq!(c.pools[0].hash, HashKind::Md5);
    assert_eq!(c.pools[0].servers[0].name, "h:1");
    // ... so a second item is a duplicate, and no servers at all is reported.
    assert_eq!(
        errors("a:\n  listen:\n   - 127.0.0.1:1\n   - 127.0.0.1:2\n"),
        [
            r#"conf: pool 'a': directive "listen" is a duplicate: "127.0.0.1:2""#,
            "conf: pool 'a' has no servers",
        ]
    );
    // Values are raw strings: no YAML type resolution.
    assert_eq!(
        errors("a:\n  listen: 127.0.0.1:1\n  hash: ~\n  servers:\n   - h:1:1\n"),
        [r#"conf: pool 'a': directive "hash" is not a valid hash: "~""#]
    );
    // A two-byte UTF-8 character is a valid hash tag (twemproxy counts bytes).
    let c = ok("a:\n  listen: 127.0.0.1:1\n  hash_tag: \"\u{e9}\"\n  servers:\n   - h:1:1\n");
    assert_eq!(c.pools[0].hash_tag, Some([0xc3, 0xa9]));
    // Listen strings are compared as written.
    ok("a:\n  listen: 127.0.0.1:1\n  servers:\n   - h:1:1\nb:\n  listen: localhost:1\n  servers:\n   - h:1:1\n");
}

#[test]
fn messages_are_single_lines() {
    let e =
        errors("a:\n  listen: 127.0.0.1:1\n  hash: |\n    md5\n    x\n  servers:\n   - h:1:1\n");
    assert_eq!(
        e,
        [r#"conf: pool 'a': directive "hash" is not a valid hash: "md5\nx\n""#]
    );
}

const ALPHA: &str = "alpha:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n";

#[test]
fn walnut_settings_threads() {
    let c = ok(&format!("walnut:\n  threads: 4\n{ALPHA}"));
    assert_eq!(c.threads, Some(4));
    // The key may come after the pools; bounds are inclusive; leading zeros, as in pools.
    let c = ok(&format!("{ALPHA}walnut:\n  threads: 1024\n"));
    assert_eq!(c.threads, Some(1024));
    assert_eq!(
        ok(&format!("walnut:\n  threads: 001\n{ALPHA}")).threads,
        Some(1)
    );
    // A quoted value is the same scalar.
    assert_eq!(
        ok(&format!("walnut:\n  threads: \"2\"\n{ALPHA}")).threads,
        Some(2)
    );
}

#[test]
fn walnut_settings_absent_is_none() {
    assert_eq!(ok(ALPHA).threads, None);
    assert_eq!(ok(REALISTIC).threads, None);
}

#[test]
fn walnut_key_is_not_a_pool() {
    let c = ok(&format!("walnut:\n  threads: 2\n{ALPHA}beta:\n  listen: 127.0.0.1:22122\n  servers:\n   - 127.0.0.1:6379:1\n"));
    let names: Vec<&str> = c.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["beta", "alpha"]);
    assert_eq!(c.threads, Some(2));
    // With no pool at all, the file has no pools, as it would without the key.
    assert_eq!(
        errors("walnut:\n  threads: 2\n"),
        ["conf: 't.yml' has no pools"]
    );
    // Only the exact, lowercase key is reserved: `Walnut` is a pool.
    let c = ok("Walnut:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(c.pools[0].name, "Walnut");
    assert_eq!(c.threads, None);
}

#[test]
fn walnut_settings_bad_threads() {
    for (value, shown) in [
        ("0", r#""0""#),
        ("1025", r#""1025""#),
        ("-1", r#""-1""#),
        ("+4", r#""+4""#),
        ("four", r#""four""#),
        ("4.0", r#""4.0""#),
        ("99999999999", r#""99999999999""#),
    ] {
        assert_eq!(
            errors(&format!("walnut:\n  threads: {value}\n{ALPHA}")),
            [format!(
                "conf: walnut setting \"threads\" is not a number from 1 to 1024: {shown}"
            )],
            "{value}"
        );
    }
    assert_eq!(
        errors(&format!("walnut:\n  threads:\n{ALPHA}")),
        [r#"conf: walnut setting "threads" has no value"#]
    );
    assert_eq!(
        errors(&format!("walnut:\n  threads:\n   - 4\n{ALPHA}")),
        [r#"conf: walnut setting "threads" must be a scalar, not a sequence"#]
    );
    assert_eq!(
        errors(&format!("walnut:\n  threads: 4\n  threads: 8\n{ALPHA}")),
        [r#"conf: walnut setting "threads" is a duplicate: "8""#]
    );
}

#[test]
fn walnut_settings_unknown_key() {
    assert_eq!(
        errors(&format!("walnut:\n  workers: 4\n  Threads: 4\n{ALPHA}")),
        [
            r#"conf: walnut setting "workers" is unknown (known settings: "threads")"#,
            r#"conf: walnut setting "Threads" is unknown (known settings: "threads")"#,
        ]
    );
}

#[test]
fn walnut_settings_must_be_a_mapping() {
    assert_eq!(
        errors(&format!("walnut: 4\n{ALPHA}")),
        [
            r#"conf: 't.yml' top-level key "walnut" must be a mapping of walnut settings, not a scalar (line 1, column 9)"#
        ]
    );
    assert_eq!(
        errors(&format!("walnut:\n{ALPHA}")),
        [
            r#"conf: 't.yml' top-level key "walnut" must be a mapping of walnut settings, not an empty value (line 1, column 7)"#
        ]
    );
    assert_eq!(
        errors(&format!("walnut:\n  - threads: 4\n{ALPHA}")),
        [
            r#"conf: 't.yml' top-level key "walnut" must be a mapping of walnut settings, not a sequence (line 2, column 3)"#
        ]
    );
    // Block YAML only, as everywhere in the file.
    assert_eq!(
        errors(&format!("walnut: {{threads: 4}}\n{ALPHA}")),
        ["conf: 't.yml' flow mapping start token (12) is disallowed (line 1, column 9)"]
    );
    assert_eq!(
        errors(&format!("walnut:\n  ? - a\n  : 4\n{ALPHA}")),
        [
            r#"conf: 't.yml' top-level key "walnut" has a sequence where a setting name is expected (line 2, column 5)"#
        ]
    );
}

#[test]
fn walnut_settings_given_twice() {
    assert_eq!(
        errors(&format!(
            "walnut:\n  threads: 2\n{ALPHA}walnut:\n  threads: 0\n"
        )),
        [
            r#"conf: walnut setting "threads" is not a number from 1 to 1024: "0""#,
            r#"conf: 't.yml' has top-level key "walnut" more than once"#,
        ]
    );
}

#[test]
fn a_pool_cannot_be_named_walnut() {
    assert_eq!(
        errors(&format!(
            "walnut:\n  listen: 127.0.0.1:22122\n  hash: md5\n  threads: 2\n  servers:\n   - 127.0.0.1:6379:1\n{ALPHA}"
        )),
        [r#"conf: 't.yml' has a pool named 'walnut' (pool directives "listen", "hash", "servers"): the top-level key "walnut" is reserved for walnut's own settings, so a pool cannot be named 'walnut' (rename the pool)"#]
    );
    // The only pool: the same message, and then no pools are left.
    assert_eq!(
        errors("walnut:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n"),
        [
            r#"conf: 't.yml' has a pool named 'walnut' (pool directives "listen", "servers"): the top-level key "walnut" is reserved for walnut's own settings, so a pool cannot be named 'walnut' (rename the pool)"#,
            "conf: 't.yml' has no pools",
        ]
    );
}

#[test]
fn walnut_settings_errors_are_collected_with_pool_errors() {
    assert_eq!(
        errors("walnut:\n  threads: 0\n  colour: red\nalpha:\n  listen: 127.0.0.1:22121\n  hash: sha1\n  servers:\n   - 127.0.0.1:6379:1\n"),
        [
            r#"conf: walnut setting "threads" is not a number from 1 to 1024: "0""#,
            r#"conf: walnut setting "colour" is unknown (known settings: "threads")"#,
            r#"conf: pool 'alpha': directive "hash" is not a valid hash: "sha1""#,
        ]
    );
}

#[test]
fn nested_directives_take_flow_and_block_yaml_but_twemproxy_ones_do_not() {
    // A flow collection under server_tls (walnut's nested directive) is accepted...
    let c = ok("a:\n  listen: 127.0.0.1:22121\n  server_tls: {server_name: redis.internal}\n  servers:\n   - 127.0.0.1:6379:1\n");
    let tls = c.pools[0].server_tls.as_ref().expect("server_tls");
    assert_eq!(tls.server_name.as_deref(), Some("redis.internal"));
    assert_eq!(tls.ca_file, None);
    // ...and a nested sequence there does not count as a second sequence directive.
    let c = ok("a:\n  listen: 127.0.0.1:22121\n  server_tls:\n    server_name: x.example\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert!(c.pools[0].server_tls.is_some());
    // A flow collection under a twemproxy directive is still disallowed.
    let errs = errors("a:\n  listen: 127.0.0.1:22121\n  servers: [127.0.0.1:6379:1]\n");
    assert!(
        errs.iter().any(|e| e.contains("flow sequence start token")),
        "{errs:?}"
    );
}

#[test]
fn nested_directive_problems_name_the_field_and_are_all_collected() {
    let errs = errors(
        "a:\n  listen: 127.0.0.1:22121\n  server_tls:\n    cert_file: /x.pem\n    color: blue\n    server_name: [a, b]\n  tls: yes\n  servers:\n   - 127.0.0.1:6379:1\n",
    );
    assert_eq!(
        errs,
        [
            "conf: pool 'a': directive \"server_tls\" has an unknown key \"color\" (known: ca_file, cert_file, key_file, server_name) (line 5, column 12)",
            "conf: pool 'a': directive \"server_tls.server_name\" must be a value, not a sequence (line 6, column 18)",
            "conf: pool 'a': directive \"server_tls\" needs both \"cert_file\" and \"key_file\" for a client certificate, or neither (line 4, column 5)",
            "conf: pool 'a': directive \"tls\" must be a mapping of cert_file, key_file, ca_file, not a scalar (line 7, column 8)",
        ]
    );
}

#[test]
fn nested_directives_are_bounded_in_depth() {
    let mut text = String::from("a:\n  listen: 127.0.0.1:22121\n  server_tls: ");
    text.push_str(&"[".repeat(20));
    text.push_str(&"]".repeat(20));
    text.push_str("\n  servers:\n   - 127.0.0.1:6379:1\n");
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.contains("nests deeper than 8 levels")),
        "{errs:?}"
    );
}

#[test]
fn redis_cluster_pools() {
    let c = ok("c:\n  listen: 127.0.0.1:22121\n  redis_cluster: true\n  read_from: prefer_replica\n  servers:\n   - 127.0.0.1:7000:1\n   - 127.0.0.1:7001:1\n");
    let pool = &c.pools[0];
    assert!(
        pool.redis_cluster && pool.redis,
        "redis_cluster implies redis"
    );
    assert_eq!(pool.read_from, ReadFrom::PreferReplica);
    let plain = ok("p:\n  listen: 127.0.0.1:22121\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert!(!plain.pools[0].redis_cluster);
    assert_eq!(plain.pools[0].read_from, ReadFrom::Master);
}

#[test]
fn redis_cluster_problems_name_the_pool_and_directive() {
    let e = errors("c:\n  listen: 127.0.0.1:22121\n  redis_cluster: true\n  redis: false\n  hash: murmur\n  hash_tag: \"{}\"\n  distribution: modula\n  redis_db: 2\n  read_from: slave\n  servers:\n   - 127.0.0.1:7000:1\n");
    assert_eq!(
        e,
        vec![
            "conf: pool 'c': directive \"read_from\" is not a valid read_from: \"slave\" (one of \"master\", \"replica\" or \"prefer_replica\")".to_string(),
            "conf: pool 'c': directive \"redis_cluster: true\" needs a redis pool, but \"redis\" is false".to_string(),
            "conf: pool 'c': directive \"hash\" cannot be used with \"redis_cluster: true\": the cluster's CRC16 slots and {...} hash tags place keys".to_string(),
            "conf: pool 'c': directive \"hash_tag\" cannot be used with \"redis_cluster: true\": the cluster's CRC16 slots and {...} hash tags place keys".to_string(),
            "conf: pool 'c': directive \"distribution\" cannot be used with \"redis_cluster: true\": the cluster's CRC16 slots and {...} hash tags place keys".to_string(),
            "conf: pool 'c': directive \"redis_db\" cannot be used with \"redis_cluster: true\": a Redis Cluster has only database 0".to_string(),
        ]
    );
    let e = errors("p:\n  listen: 127.0.0.1:22121\n  redis: true\n  read_from: replica\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(
        e,
        vec![
            "conf: pool 'p': directive \"read_from\" is only valid with \"redis_cluster: true\" or \"sentinels:\""
                .to_string()
        ]
    );
}

#[test]
fn users_and_redis_username() {
    let c = ok("s:\n  listen: 127.0.0.1:22121\n  redis: true\n  redis_username: walnut\n  redis_auth: secret\n  users:\n   - name: app\n     password: s3cret\n     commands: readwrite\n     keys: [\"app:*\", \"shared:*\"]\n   - {name: reporting, password_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8, commands: readonly}\n  servers:\n   - 127.0.0.1:6379:1\n");
    let pool = &c.pools[0];
    assert_eq!(pool.redis_username.as_deref(), Some("walnut"));
    let users = pool.users.as_ref().expect("users");
    assert_eq!(users.users.len(), 2);
    assert!(users.authenticate(Some(b"app"), b"s3cret").is_some());
    assert!(users
        .authenticate(Some(b"reporting"), b"password")
        .is_some());
    assert_eq!(users.users[1].commands, crate::acl::CommandClass::ReadOnly);
    assert!(users.users[0].may_access(b"shared:1") && !users.users[0].may_access(b"x"));
}

#[test]
fn users_problems_name_the_pool_and_the_place() {
    let e = errors("s:\n  listen: 127.0.0.1:22121\n  redis: true\n  redis_auth: secret\n  users:\n   - name: app\n     password: a\n   - name: app\n     password: b\n   - name: both\n     password: a\n     password_sha256: 00\n   - name: nopass\n   - name: badhex\n     password_sha256: xyz\n   - name: cls\n     password: a\n     commands: admin\n     colour: red\n   - name: k\n     password: a\n     keys: app\n  servers:\n   - 127.0.0.1:6379:1\n");
    let expected = [
        "conf: pool 's': directive \"users[1].name\" names a user twice: \"app\" (line 8, column 6)",
        "conf: pool 's': directive \"users[2]\" has both \"password\" and \"password_sha256\": give one (line 10, column 6)",
        "conf: pool 's': directive \"users[3]\" needs \"password\" or \"password_sha256\" (line 13, column 6)",
        "conf: pool 's': directive \"users[4].password_sha256\" must be 64 hexadecimal digits (the SHA-256 of the password) (line 14, column 6)",
        "conf: pool 's': directive \"users[5]\" has an unknown key \"colour\" (known: name, password, password_sha256, commands, keys) (line 19, column 14)",
        "conf: pool 's': directive \"users[5].commands\" is not \"readonly\", \"readwrite\" or \"all\": \"admin\" (line 16, column 6)",
        "conf: pool 's': directive \"users[6].keys\" must be a sequence of key patterns, not a scalar (line 22, column 12)",
        "conf: pool 's': directives \"users:\" and \"redis_auth:\" are both set, so redis_auth would be a second client password; set \"redis_username:\" (\"default\" for a server without ACL users) to make redis_auth the servers' credentials only",
    ];
    assert_eq!(e, expected.map(String::from).to_vec());
    let e = errors("m:\n  listen: 127.0.0.1:22121\n  redis_username: u\n  users:\n   - {name: a, password: b}\n  servers:\n   - 127.0.0.1:11211:1\n");
    assert_eq!(
        e,
        vec![
            "conf: pool 'm': directive \"redis_username:\" needs \"redis_auth:\" (the password sent with it)".to_string(),
            "conf: pool 'm': directive \"users:\" is only valid for a redis pool".to_string(),
        ]
    );
}

#[test]
fn sentinel_pools() {
    let c = ok("ha:\n  listen: 127.0.0.1:22121\n  redis: true\n  sentinels: [127.0.0.1:26379, \"127.0.0.1:26380\"]\n  sentinel_auth: pw\n  read_from: replica\n  servers:\n   - 127.0.0.1:6379:1 shard1\n   - 127.0.0.1:6380:1 shard2\n");
    let pool = &c.pools[0];
    assert_eq!(pool.sentinels.len(), 2);
    assert_eq!(pool.sentinels[1].port, 26380);
    assert_eq!(pool.sentinel_auth.as_deref(), Some("pw"));
    assert_eq!(pool.read_from, ReadFrom::Replica);
    let e = errors("ha:\n  listen: 127.0.0.1:22121\n  sentinels:\n   - nonsense\n  sentinel_auth: pw\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(
        e,
        vec![
            "conf: pool 'ha': directive \"sentinels\" has an entry that is not host:port (line 4, column 6)".to_string(),
            "conf: pool 'ha': directive \"sentinels:\" needs \"redis: true\"".to_string(),
            "conf: pool 'ha': directive \"servers\" needs a name on every server with \"sentinels:\" (the master name Sentinel monitors, e.g. \"127.0.0.1:6379:1 shard1\"): \"127.0.0.1:6379:1\"".to_string(),
        ]
    );
    let e = errors("p:\n  listen: 127.0.0.1:22121\n  redis: true\n  sentinel_auth: pw\n  servers:\n   - 127.0.0.1:6379:1\n");
    assert_eq!(
        e,
        vec![
            "conf: pool 'p': directive \"sentinel_auth\" is only valid with \"sentinels:\""
                .to_string()
        ]
    );
}

#[test]
fn dedicated_connections_defaults_to_64_and_is_bounded() {
    let base = "s:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    assert_eq!(ok(base).pools[0].dedicated_connections, 64);
    let set = base.replace("  servers:", "  dedicated_connections: 8\n  servers:");
    assert_eq!(ok(&set).pools[0].dedicated_connections, 8);
    for bad in ["0", "10001"] {
        let text = base.replace(
            "  servers:",
            &format!("  dedicated_connections: {bad}\n  servers:"),
        );
        assert_eq!(
            errors(&text),
            [r#"conf: pool 's': directive "dedicated_connections:" must be between 1 and 10000"#]
        );
    }
}

#[test]
fn databases_defaults_to_16_is_bounded_and_holds_redis_db() {
    let base = "s:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    assert_eq!(ok(base).pools[0].databases, 16);
    let set = base.replace("  servers:", "  databases: 4\n  redis_db: 3\n  servers:");
    assert_eq!(ok(&set).pools[0].databases, 4);
    for bad in ["0", "1025"] {
        assert_eq!(
            errors(&base.replace("  servers:", &format!("  databases: {bad}\n  servers:"))),
            [r#"conf: pool 's': directive "databases:" must be between 1 and 1024"#]
        );
    }
    assert_eq!(
        errors(&base.replace("  servers:", "  databases: 4\n  redis_db: 4\n  servers:")),
        [r#"conf: pool 's': directive "redis_db" must be below "databases" (4)"#]
    );
}

#[test]
fn allow_flush_defaults_to_true() {
    let base = "s:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:6379:1\n";
    assert!(ok(base).pools[0].allow_flush);
    let off = base.replace("  servers:", "  allow_flush: false\n  servers:");
    assert!(!ok(&off).pools[0].allow_flush);
}
