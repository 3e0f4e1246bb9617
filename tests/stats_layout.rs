//! walnut's stats JSON against Debian's nutcracker 0.5.0: the same keys in the same order
//! with the same separators, for a real two-pool configuration. Numbers and the
//! source/uptime/timestamp values are masked; everything else must match byte for byte.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    free_port, local, wait_for_tcp, Process, ProxyProcess, RedisServer, RespClient, TempDir, Value,
};
use walnut::stats::{describe_stats, Identity, Stats, StatsOptions};

/// Masks every number value (`":<digits>`) and the `source` value.
fn layout(json: &[u8]) -> String {
    let text = std::str::from_utf8(json).expect("utf-8");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("\":") {
        out.push_str(&rest[..i + 2]);
        rest = &rest[i + 2..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push('#');
            rest = &rest[digits..];
        } else if out.ends_with("\"source\":") {
            let end = rest[1..].find('"').expect("source value") + 2;
            out.push_str("\"#\"");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn read_all(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to the stats port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read the stats JSON");
    out
}

#[test]
fn walnut_json_has_nutcracker_layout() {
    let redis = RedisServer::start();
    let dead = free_port(); // a server nobody listens on
    let (zeta_port, beta_port, stats_port) = (free_port(), free_port(), free_port());
    let config = format!(
        "zeta:\n  listen: 127.0.0.1:{zeta_port}\n  redis: true\n  servers:\n   - {}\n   - {}\n   - 127.0.0.1:{dead}:1 two\n\
         beta:\n  listen: 127.0.0.1:{beta_port}\n  redis: true\n  hash: fnv1a_64\n  servers:\n   - {}\n",
        redis.server_line(1, Some("one")),
        redis.server_line(1, None),
        redis.server_line(1, None),
    );
    let dir = TempDir::new("stats-layout");
    let config_path = dir.file("nc.yml");
    std::fs::write(&config_path, &config).unwrap();
    let mut cmd = Command::new("nutcracker");
    cmd.arg("-c")
        .arg(&config_path)
        .args([
            "-s",
            &stats_port.to_string(),
            "-a",
            "127.0.0.1",
            "-i",
            "100",
            "-o",
        ])
        .arg(dir.file("nc.log"))
        .stdout(Stdio::null());
    let mut nutcracker = Process::spawn("nutcracker", &mut cmd);
    for port in [zeta_port, beta_port, stats_port] {
        wait_for_tcp(local(port), "nutcracker", &mut nutcracker);
    }

    // Some traffic, so the figures are not all zero (their values are masked anyway).
    let mut client = RespClient::connect(&format!("127.0.0.1:{zeta_port}"));
    for i in 0..10 {
        let reply = client.cmd_str(&["SET", &format!("k{i}"), "v"]);
        assert_eq!(reply, Value::Status("OK".into()));
    }
    std::thread::sleep(Duration::from_millis(400));
    let theirs = read_all(local(stats_port));
    drop(client);

    // walnut: the same configuration through walnut's config module (its sorting), then
    // the renderer.
    let parsed = walnut::config::parse(&config, "nc.yml").expect("walnut parses the config");
    let stats = Stats::from_configs(
        StatsOptions {
            identity: Identity::Nutcracker,
            source: "walnut-host".into(),
            interval: Duration::from_millis(100),
        },
        &parsed.pools,
    );
    for pool in stats.pools().iter() {
        pool.stats.client_eof.add(123);
        for server in &pool.servers {
            server.stats.requests.add(45_678);
            server.stats.server_ejected_at.set(1_795_300_421_000_000);
        }
    }
    stats.connections().opened();
    stats.refresh();
    let ours = stats.json();

    let (theirs_layout, ours_layout) = (layout(&theirs), layout(&ours));
    assert!(theirs_layout.contains("}},\"zeta\": {") || theirs_layout.contains("}},\"beta\": {"));
    assert!(theirs_layout.contains("},\"two\": {"), "{theirs_layout}");
    assert_eq!(
        ours_layout, theirs_layout,
        "\nwalnut:     {ours_layout}\nnutcracker: {theirs_layout}"
    );
    // Both are strict JSON, with the same keys in the same order.
    let a: serde_json::Value = serde_json::from_slice(&theirs).expect("nutcracker JSON");
    let b: serde_json::Value = serde_json::from_slice(&ours).expect("walnut JSON");
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&a).len(), keys(&b).len());
    assert_eq!(b["source"], "walnut-host");
}

#[test]
fn describe_text_matches_nutcracker_d() {
    let output = Command::new("nutcracker")
        .arg("-D")
        .stdin(Stdio::null())
        .output()
        .expect("run nutcracker -D");
    let text = String::from_utf8(output.stderr).unwrap();
    let start = text.find("\n\n").expect("version block") + 2;
    assert_eq!(&text[start..], describe_stats());
}

#[test]
fn layout_masks_only_values() {
    let masked = layout(b"{\"service\":\"nutcracker\", \"source\":\"vm\", \"uptime\":2, \"a:1\": {\"x\":10},\"127.0.0.1:1\": {}}\n");
    assert_eq!(
        masked,
        "{\"service\":\"nutcracker\", \"source\":\"#\", \"uptime\":#, \"a:1\": {\"x\":#},\"127.0.0.1:1\": {}}\n"
    );
}

/// `service` and `version` say `nutcracker` and `0.5.0` by default, so existing parsers keep
/// working; `--stats-identity walnut` makes them name walnut and its own version.
#[test]
fn the_stats_identity_is_nutcracker_by_default_and_walnut_on_request() {
    let redis = RedisServer::start();
    for (extra, service, version) in [
        (&[][..], "nutcracker", "0.5.0"),
        (
            &["--stats-identity", "walnut"][..],
            "walnut",
            env!("CARGO_PKG_VERSION"),
        ),
    ] {
        let port = free_port();
        let config = format!(
            "alpha:\n  listen: 127.0.0.1:{port}\n  redis: true\n  servers:\n   - {}\n",
            redis.server_line(1, None)
        );
        let walnut = ProxyProcess::walnut_with(&config, &[local(port)], extra);
        let doc: serde_json::Value =
            serde_json::from_str(&walnut.stats_json()).expect("the stats document is JSON");
        assert_eq!(doc["service"], service, "{extra:?}");
        assert_eq!(doc["version"], version, "{extra:?}");
    }
}
