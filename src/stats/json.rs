//! twemproxy's stats JSON, byte for byte, and the `-D` description text.
//!
//! The layout (twemproxy `nc_stats.c`, see `docs/METRICS.md`):
//! * a string entry is `"k":"v", ` and a number entry `"k":<n>, `;
//! * an object opens with `"name": {`;
//! * closing an object turns a trailing `, ` into `},`, or a trailing `},` into `}},`, so
//!   servers are joined by `},"next": {` and pools by `}},"next": {`;
//! * the end turns the final `,` into `}` and adds `\n`.
//!
//! Unlike twemproxy, keys and string values are JSON-escaped (`"`, `\` and control
//! characters), so a server named `we"ird` cannot produce invalid JSON. Names without those
//! characters (all real ones) come out exactly as twemproxy writes them.

use super::counters::{PoolFigures, ServerFigures};

/// The header figures: everything before the first pool.
#[derive(Clone, Copy, Debug)]
pub struct JsonHeader<'a> {
    /// `nutcracker`, or `walnut` with `--stats-identity walnut`.
    pub service: &'a str,
    /// The host name.
    pub source: &'a str,
    /// `0.5.0`, or walnut's own version.
    pub version: &'a str,
    /// Seconds since start.
    pub uptime: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    /// Connections ever created (listeners, clients, servers).
    pub total_connections: u64,
    /// Connections open now.
    pub curr_connections: u64,
}

/// One pool's figures and its servers' figures, in twemproxy's (sorted) order.
#[derive(Clone, Debug, Default)]
pub struct PoolJson<'a> {
    pub name: &'a str,
    pub figures: PoolFigures,
    pub servers: Vec<(&'a str, ServerFigures)>,
}

/// Appends `s` as the inside of a JSON string.
fn push_escaped(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
}

/// Appends decimal digits without allocating.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    push_escaped(out, key);
    out.extend_from_slice(b"\":");
}

/// `"k":"v", `
fn push_string(out: &mut Vec<u8>, key: &str, value: &str) {
    push_key(out, key);
    out.push(b'"');
    push_escaped(out, value);
    out.extend_from_slice(b"\", ");
}

/// `"k":<n>, `
fn push_number(out: &mut Vec<u8>, key: &str, value: u64) {
    push_key(out, key);
    push_u64(out, value);
    out.extend_from_slice(b", ");
}

/// `"name": {`
fn open_object(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    push_escaped(out, name);
    out.extend_from_slice(b"\": {");
}

/// `, ` → `},`; `},` → `}},`; anything else (an empty object) gets `},`.
fn close_object(out: &mut Vec<u8>) {
    if out.ends_with(b", ") {
        out.truncate(out.len() - 2);
        out.extend_from_slice(b"},");
    } else if out.ends_with(b"},") {
        out.pop();
        out.extend_from_slice(b"},");
    } else {
        out.extend_from_slice(b"},");
    }
}

/// The final `,` (or `, `) becomes `}`, then `\n`.
fn finish(out: &mut Vec<u8>) {
    if out.ends_with(b", ") {
        out.truncate(out.len() - 2);
    } else if out.ends_with(b",") {
        out.pop();
    }
    out.extend_from_slice(b"}\n");
}

/// Appends the header: `{"service":…, "curr_connections":<n>, `.
pub fn write_header(out: &mut Vec<u8>, header: &JsonHeader<'_>) {
    out.push(b'{');
    push_string(out, "service", header.service);
    push_string(out, "source", header.source);
    push_string(out, "version", header.version);
    push_number(out, "uptime", header.uptime);
    push_number(out, "timestamp", header.timestamp);
    push_number(out, "total_connections", header.total_connections);
    push_number(out, "curr_connections", header.curr_connections);
}

/// Renders the pools and the footer: everything after the header. With no pools it is
/// empty; [`join`] then closes the header instead.
pub fn render_body(pools: &[PoolJson<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + pools.len() * 160 + server_count(pools) * 330);
    for pool in pools {
        open_object(&mut out, pool.name);
        for (key, value) in pool.figures.entries() {
            push_number(&mut out, key, value);
        }
        for (name, figures) in &pool.servers {
            open_object(&mut out, name);
            for (key, value) in figures.entries() {
                push_number(&mut out, key, value);
            }
            close_object(&mut out);
        }
        close_object(&mut out);
    }
    if !out.is_empty() {
        finish(&mut out);
    }
    out
}

fn server_count(pools: &[PoolJson<'_>]) -> usize {
    pools.iter().map(|p| p.servers.len()).sum()
}

/// The whole document from a header and a body made by [`render_body`].
pub fn join(header: &JsonHeader<'_>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    write_header(&mut out, header);
    if body.is_empty() {
        finish(&mut out);
    } else {
        out.extend_from_slice(body);
    }
    out
}

/// The whole document.
pub fn render_json(header: &JsonHeader<'_>, pools: &[PoolJson<'_>]) -> Vec<u8> {
    join(header, &render_body(pools))
}

/// Pool metric names and descriptions, as `nutcracker -D` lists them.
pub const POOL_METRICS: [(&str, &str); 6] = [
    ("client_eof", "# eof on client connections"),
    ("client_err", "# errors on client connections"),
    ("client_connections", "# active client connections"),
    ("server_ejects", "# times backend server was ejected"),
    ("forward_error", "# times we encountered a forwarding error"),
    (
        "fragments",
        "# fragments created from a multi-vector request",
    ),
];

/// Server metric names and descriptions, as `nutcracker -D` lists them.
pub const SERVER_METRICS: [(&str, &str); 13] = [
    ("server_eof", "# eof on server connections"),
    ("server_err", "# errors on server connections"),
    ("server_timedout", "# timeouts on server connections"),
    ("server_connections", "# active server connections"),
    (
        "server_ejected_at",
        "timestamp when server was ejected in usec since epoch",
    ),
    ("requests", "# requests"),
    ("request_bytes", "total request bytes"),
    ("responses", "# responses"),
    ("response_bytes", "total response bytes"),
    ("in_queue", "# requests in incoming queue"),
    ("in_queue_bytes", "current request bytes in incoming queue"),
    ("out_queue", "# requests in outgoing queue"),
    ("out_queue_bytes", "current request bytes in outgoing queue"),
];

/// What `nutcracker -D` prints (to stderr) after its version block: `pool stats:`, one
/// `  name                "description"` line per metric, a blank line, `server stats:` and
/// its lines. Ends with a newline.
pub fn describe_stats() -> String {
    let mut out = String::from("pool stats:\n");
    for (name, desc) in POOL_METRICS {
        out.push_str(&format!("  {name:<20}\"{desc}\"\n"));
    }
    out.push_str("\nserver stats:\n");
    for (name, desc) in SERVER_METRICS {
        out.push_str(&format!("  {name:<20}\"{desc}\"\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../tests/data/stats-sample.json");

    fn sample_header<'a>(source: &'a str, uptime: u64, timestamp: u64) -> JsonHeader<'a> {
        JsonHeader {
            service: "nutcracker",
            source,
            version: "0.5.0",
            uptime,
            timestamp,
            total_connections: 3,
            curr_connections: 3,
        }
    }

    fn sample_pools() -> Vec<PoolJson<'static>> {
        vec![PoolJson {
            name: "alpha",
            figures: PoolFigures {
                client_connections: 1,
                ..Default::default()
            },
            servers: vec![
                (
                    "one",
                    ServerFigures {
                        server_connections: 1,
                        requests: 3,
                        request_bytes: 88,
                        responses: 3,
                        response_bytes: 31,
                        ..Default::default()
                    },
                ),
                ("127.0.0.1:23899", ServerFigures::default()),
            ],
        }]
    }

    #[test]
    fn sample_is_reproduced_byte_for_byte() {
        let out = render_json(&sample_header("vm", 2, 1795300421), &sample_pools());
        assert_eq!(String::from_utf8(out).unwrap(), SAMPLE);
    }

    #[test]
    fn header_values_change_only_their_values() {
        let out = render_json(&sample_header("otherhost", 12345, 1), &sample_pools());
        let expected = SAMPLE
            .replace("\"source\":\"vm\"", "\"source\":\"otherhost\"")
            .replace("\"uptime\":2,", "\"uptime\":12345,")
            .replace("\"timestamp\":1795300421,", "\"timestamp\":1,");
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn pools_are_joined_like_twemproxy() {
        let pools = vec![
            PoolJson {
                name: "beta",
                figures: PoolFigures::default(),
                servers: vec![("a", ServerFigures::default())],
            },
            PoolJson {
                name: "zeta",
                figures: PoolFigures {
                    forward_error: 7,
                    ..Default::default()
                },
                servers: vec![
                    ("b", ServerFigures::default()),
                    (
                        "c",
                        ServerFigures {
                            server_ejected_at: 1_795_300_421_123_456,
                            ..Default::default()
                        },
                    ),
                ],
            },
        ];
        let out = String::from_utf8(render_json(&sample_header("h", 0, 0), &pools)).unwrap();
        assert!(out.contains("\"out_queue_bytes\":0}},\"zeta\": {\"client_eof\":0, "));
        assert!(out.contains("\"forward_error\":7, "));
        assert!(out.contains("\"out_queue_bytes\":0},\"c\": {\"server_eof\":0, "));
        assert!(out.contains("\"server_ejected_at\":1795300421123456, "));
        assert!(out.ends_with("\"out_queue_bytes\":0}}}\n"));
        assert_eq!(out.matches('\n').count(), 1);
    }

    #[test]
    fn names_are_escaped() {
        let pools = vec![PoolJson {
            name: "p\"\\\n\u{1}é",
            figures: PoolFigures::default(),
            servers: vec![("we\"ird", ServerFigures::default())],
        }];
        let out = String::from_utf8(render_json(&sample_header("h\"", 0, 0), &pools)).unwrap();
        assert!(out.contains("\"source\":\"h\\\"\", "));
        assert!(out.contains("\"p\\\"\\\\\\n\\u0001é\": {"));
        assert!(out.contains("\"we\\\"ird\": {"));
    }

    #[test]
    fn degenerate_layouts_stay_closed() {
        let empty = String::from_utf8(render_json(&sample_header("h", 1, 2), &[])).unwrap();
        assert!(empty.ends_with("\"curr_connections\":3}\n"), "{empty}");
        let no_servers = vec![PoolJson {
            name: "p",
            figures: PoolFigures::default(),
            servers: vec![],
        }];
        let out = String::from_utf8(render_json(&sample_header("h", 1, 2), &no_servers)).unwrap();
        assert!(out.ends_with("\"fragments\":0}}\n"), "{out}");
    }

    #[test]
    fn numbers() {
        let mut v = Vec::new();
        for n in [0, 7, 10, 1_234_567_890, u64::MAX] {
            v.clear();
            push_u64(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
        }
    }

    #[test]
    fn description_matches_nutcracker() {
        let text = describe_stats();
        assert!(text
            .starts_with("pool stats:\n  client_eof          \"# eof on client connections\"\n"));
        assert!(text.contains("\"\n\nserver stats:\n  server_eof          \""));
        assert!(text.contains(
            "  server_ejected_at   \"timestamp when server was ejected in usec since epoch\"\n"
        ));
        assert!(
            text.ends_with("  out_queue_bytes     \"current request bytes in outgoing queue\"\n")
        );
        assert_eq!(text.lines().count(), 1 + 6 + 1 + 1 + 13);
    }
}
