//! End-to-end checks of the Prometheus side: the exposition through the HTTP endpoint,
//! parsed with prometheus-parse and checked line by line against the OpenMetrics text rules.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn stats() -> Arc<Stats> {
    let stats = Stats::new(
        StatsOptions {
            identity: Identity::Nutcracker,
            source: "h".into(),
            interval: Duration::from_secs(30),
        },
        vec![
            PoolEntry::new("alpha", ["127.0.0.1:6379", "we\"ird\\name"]),
            PoolEntry::new("beta", ["one"]),
        ],
    );
    let pools = stats.pools();
    let alpha = &pools[0];
    alpha.stats.client_connections.inc();
    alpha.stats.client_eof.add(3);
    alpha.stats.count_command(b"get");
    alpha.stats.count_command(b"GET");
    alpha.stats.count_command(b"nosuch");
    alpha
        .stats
        .request_latency
        .observe(Duration::from_micros(70));
    let s0 = alpha.server(0).unwrap();
    s0.requests.add(10);
    s0.request_bytes.add(320);
    s0.in_queue_bytes.add(12);
    s0.server_ejected_at.set(1_500_000);
    s0.latency.observe(Duration::from_micros(40));
    s0.latency.observe(Duration::from_millis(2));
    s0.latency.observe(Duration::from_secs(20));
    stats.connections().opened();
    stats
}

/// A strict line check of the OpenMetrics text prometheus-client writes: every line is a
/// HELP/TYPE/UNIT descriptor or a sample of the family just declared, names and label sets
/// are well formed, values parse, histograms are cumulative with `+Inf` == `_count`, and the
/// text ends with exactly one `# EOF`.
fn check_exposition(text: &str) {
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "must end with # EOF");
    assert!(text.ends_with("# EOF\n"));
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphabetic() || b == b'_' || b == b':' || (i > 0 && b.is_ascii_digit())
            })
    };
    let mut family: Option<(String, String)> = None;
    let mut declared = HashSet::new();
    let mut inf_counts: HashMap<String, f64> = HashMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    let mut last_bucket: HashMap<String, f64> = HashMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("descriptor name");
            assert!(valid_name(name), "bad name in {line}");
            match kind {
                "HELP" => {
                    assert!(parts.next().is_some_and(|h| !h.is_empty()), "{line}");
                }
                "TYPE" => {
                    let t = parts.next().unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "info"].contains(&t),
                        "{line}"
                    );
                    assert!(
                        declared.insert(name.to_string()),
                        "family declared twice: {name}"
                    );
                    family = Some((name.to_string(), t.to_string()));
                }
                "UNIT" => {
                    let unit = parts.next().unwrap();
                    assert!(name.ends_with(&format!("_{unit}")), "{line}");
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        let (name, t) = family.clone().expect("sample before any TYPE");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (metric, labels) = match series.find('{') {
            Some(i) => {
                assert!(series.ends_with('}'), "{line}");
                (&series[..i], &series[i + 1..series.len() - 1])
            }
            None => (series, ""),
        };
        let suffixes: &[&str] = match t.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "info" => &["_info"],
            _ => &["_bucket", "_sum", "_count"],
        };
        let suffix = suffixes
            .iter()
            .find(|s| metric == format!("{name}{s}"))
            .unwrap_or_else(|| panic!("{metric} does not belong to family {name} ({t})"));
        // Label set: key="value" pairs separated by commas; values may hold \" \\ \n.
        let mut rest = labels;
        let mut pairs: Vec<(String, String)> = Vec::new();
        while !rest.is_empty() {
            let eq = rest
                .find("=\"")
                .unwrap_or_else(|| panic!("bad labels in {line}"));
            let key = &rest[..eq];
            assert!(
                valid_name(key) && !key.contains(':'),
                "bad label key in {line}"
            );
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        let (_, esc) = chars.next().expect("escape");
                        assert!(matches!(esc, '"' | '\\' | 'n'), "bad escape in {line}");
                    }
                    Some((i, '"')) => break eq + 2 + i,
                    Some((_, '\n')) => panic!("raw newline"),
                    Some(_) => {}
                    None => panic!("unterminated label value in {line}"),
                }
            };
            pairs.push((key.to_string(), rest[eq + 2..end].to_string()));
            rest = &rest[end + 1..];
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
                assert!(!rest.is_empty(), "trailing comma in {line}");
            } else {
                assert!(rest.is_empty(), "junk after label in {line}");
            }
        }
        let unique: HashSet<_> = pairs.iter().map(|(k, _)| k).collect();
        assert_eq!(unique.len(), pairs.len(), "duplicate label in {line}");
        let le = pairs
            .iter()
            .find(|(k, _)| k == "le")
            .map(|(_, v)| v.clone());
        let series_key = format!(
            "{name}{:?}",
            pairs.iter().filter(|(k, _)| k != "le").collect::<Vec<_>>()
        );
        if *suffix == "_bucket" {
            let le = le.unwrap_or_else(|| panic!("bucket without le: {line}"));
            assert!(
                le == "+Inf" || le.parse::<f64>().is_ok(),
                "bad le in {line}"
            );
            let previous = last_bucket.insert(series_key.clone(), value).unwrap_or(0.0);
            assert!(value >= previous, "buckets must be cumulative: {line}");
            if le == "+Inf" {
                inf_counts.insert(series_key, value);
            }
        } else if *suffix == "_count" {
            counts.insert(series_key, value);
        }
    }
    assert!(!inf_counts.is_empty());
    assert_eq!(inf_counts, counts, "+Inf bucket must equal _count");
}

async fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

fn find<'a>(
    scrape: &'a prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Value {
    &scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"))
        .value
}

fn scalar(value: &prometheus_parse::Value) -> f64 {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn exposition_is_strict_and_complete() {
    let stats = stats();
    let text = encode_metrics(&metrics_registry(&stats));
    check_exposition(&text);
    for needed in [
        "walnut_pool_client_eof_total{pool=\"alpha\"} 3\n",
        "walnut_pool_client_connections{pool=\"alpha\"} 1\n",
        "walnut_pool_fragments_total{pool=\"beta\"} 0\n",
        "walnut_pool_commands_total{pool=\"alpha\",command=\"get\"} 2\n",
        "walnut_pool_commands_total{pool=\"alpha\",command=\"other\"} 1\n",
        "walnut_server_requests_total{pool=\"alpha\",server=\"127.0.0.1:6379\"} 10\n",
        "walnut_server_request_bytes_total{pool=\"alpha\",server=\"127.0.0.1:6379\"} 320\n",
        "walnut_server_in_queue_bytes{pool=\"alpha\",server=\"127.0.0.1:6379\"} 12\n",
        "walnut_server_in_queue{pool=\"alpha\",server=\"127.0.0.1:6379\"} 0\n",
        "walnut_server_eof_total{pool=\"beta\",server=\"one\"} 0\n",
        "walnut_server_ejected_at_seconds{pool=\"alpha\",server=\"127.0.0.1:6379\"} 1.5\n",
        "walnut_server_latency_seconds_bucket{le=\"0.00005\",pool=\"alpha\",server=\"127.0.0.1:6379\"} 1\n",
        "walnut_server_latency_seconds_count{pool=\"alpha\",server=\"127.0.0.1:6379\"} 3\n",
        "walnut_server_latency_seconds_bucket{le=\"+Inf\",pool=\"alpha\",server=\"127.0.0.1:6379\"} 3\n",
        "walnut_server_eof_total{pool=\"alpha\",server=\"we\\\"ird\\\\name\"} 0\n",
        "walnut_connections_created_total 1\n",
        "walnut_build_info{service=\"nutcracker\",version=\"0.5.0\"} 1\n",
        "# TYPE walnut_pool_request_latency_seconds histogram\n",
    ] {
        assert!(text.contains(needed), "missing {needed:?} in\n{text}");
    }
    assert!(
        !text.contains("command=\"set\""),
        "commands never seen are left out"
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_parseable_text() {
    let stats = stats();
    let registry = Arc::new(metrics_registry(&stats));
    let listener = bind_metrics("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_metrics(listener, registry));

    let reply = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nContent-Type: {METRICS_CONTENT_TYPE}\r\n")));
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    check_exposition(body);

    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let alpha_s0 = [("pool", "alpha"), ("server", "127.0.0.1:6379")];
    assert_eq!(
        scalar(find(&scrape, "walnut_server_requests_total", &alpha_s0)),
        10.0
    );
    assert_eq!(
        scalar(find(
            &scrape,
            "walnut_server_response_bytes_total",
            &alpha_s0
        )),
        0.0
    );
    assert_eq!(
        scalar(find(
            &scrape,
            "walnut_pool_client_connections",
            &[("pool", "alpha")]
        )),
        1.0
    );
    assert_eq!(
        scalar(find(
            &scrape,
            "walnut_pool_commands_total",
            &[("pool", "alpha"), ("command", "get")]
        )),
        2.0
    );
    assert_eq!(
        scalar(find(
            &scrape,
            "walnut_server_connections",
            &[("pool", "beta"), ("server", "one")]
        )),
        0.0
    );
    match find(&scrape, "walnut_server_latency_seconds", &alpha_s0) {
        prometheus_parse::Value::Histogram(buckets) => {
            assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
            let le = |bound: f64| buckets.iter().find(|b| b.less_than == bound).unwrap().count;
            assert_eq!(le(0.00005), 1.0);
            assert_eq!(le(0.0025), 2.0);
            assert_eq!(le(10.0), 2.0);
            assert_eq!(le(f64::INFINITY), 3.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    match find(
        &scrape,
        "walnut_pool_request_latency_seconds",
        &[("pool", "alpha")],
    ) {
        prometheus_parse::Value::Histogram(buckets) => {
            let first = buckets.iter().find(|b| b.less_than == 0.0001).unwrap();
            assert_eq!(first.count, 1.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let sum = scalar(find(
        &scrape,
        "walnut_server_latency_seconds_sum",
        &alpha_s0,
    ));
    assert!((sum - 20.00204).abs() < 1e-9, "{sum}");

    // Live: a later scrape sees later figures.
    stats.pools()[1].server(0).unwrap().server_eof.inc();
    let reply = http(addr, b"GET /metrics?x HTTP/1.0\r\n\r\n").await;
    assert!(reply.contains("walnut_server_eof_total{pool=\"beta\",server=\"one\"} 1\n"));

    let head_only = http(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n") && head_only.ends_with("\r\n\r\n"));
    assert!(http(addr, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 404 "));
    assert!(http(addr, b"GET /metrics/x HTTP/1.1\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 404 "));
    assert!(http(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 405 "));
    assert!(http(addr, b"\x00\x01garbage\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 400 "));
    let huge = vec![b'a'; MAX_HEAD_TEST];
    assert!(http(addr, &huge).await.starts_with("HTTP/1.1 431 "));
    // A client that leaves mid-request gets nothing and breaks nothing.
    drop(TcpStream::connect(addr).await.unwrap());
    assert!(http(addr, b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .starts_with("HTTP/1.1 200 "));
    server.abort();
}

const MAX_HEAD_TEST: usize = http::MAX_REQUEST_HEAD;
