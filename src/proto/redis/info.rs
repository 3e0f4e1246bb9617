//! `INFO` through walnut: walnut's own sections (server, clients, stats, persistence) and the
//! keyspace summed over every server, from the servers' `INFO` replies. Pure functions.

use super::fanout::MergeError;
use super::pubsub::push_bulk;

/// What walnut knows of itself for its `INFO` sections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Own {
    pub walnut_version: &'static str,
    /// `standalone`, or `cluster` for a cluster pool (walnut answers as a one-node cluster).
    pub mode: &'static str,
    pub process_id: u32,
    pub tcp_port: u16,
    pub connected_clients: u64,
    pub forward_errors: u64,
    pub fragments: u64,
}

/// The sections a client asked for (`INFO [section …]`), each lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sections(Vec<String>);

const OWN_SECTIONS: [&str; 5] = ["server", "clients", "stats", "persistence", "keyspace"];

impl Sections {
    /// From `INFO`'s arguments: none, `default`, `all` and `everything` mean every section.
    pub fn parse<'a>(args: impl Iterator<Item = &'a [u8]>) -> Sections {
        let mut wanted: Vec<String> = args
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
            .collect();
        if wanted.is_empty()
            || wanted
                .iter()
                .any(|w| matches!(w.as_str(), "default" | "all" | "everything"))
        {
            wanted = OWN_SECTIONS.iter().map(|s| s.to_string()).collect();
        }
        Sections(wanted)
    }

    fn wants(&self, section: &str) -> bool {
        self.0.iter().any(|w| w == section)
    }
}

/// The `INFO` reply: walnut's sections, with `redis_version` from the first server and each
/// database's `keys` and `expires` summed over `replies` (the servers' `INFO` bulk replies);
/// `avg_ttl` is the largest. An error reply from a server is the answer.
pub fn merge(own: &Own, sections: &Sections, replies: &[&[u8]]) -> Result<Vec<u8>, MergeError> {
    if let Some(error) = super::fanout::first_error(replies) {
        return Ok(error.to_vec());
    }
    let texts: Vec<&str> = replies
        .iter()
        .map(|r| bulk_text(r).ok_or(MergeError("INFO is not a bulk string")))
        .collect::<Result<_, _>>()?;
    let version = texts
        .first()
        .and_then(|t| field(t, "redis_version"))
        .unwrap_or("unknown");
    // db index → (keys, expires, largest avg_ttl)
    let mut keyspace: std::collections::BTreeMap<u32, (u64, u64, u64)> = Default::default();
    for text in &texts {
        for line in text.lines() {
            let Some((db, stats)) = line.strip_prefix("db").and_then(|l| l.split_once(':')) else {
                continue;
            };
            let Ok(db) = db.parse::<u32>() else { continue };
            let entry = keyspace.entry(db).or_default();
            for pair in stats.trim_end().split(',') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let value: u64 = value.parse().unwrap_or(0);
                match name {
                    "keys" => entry.0 += value,
                    "expires" => entry.1 += value,
                    "avg_ttl" => entry.2 = entry.2.max(value),
                    _ => {}
                }
            }
        }
    }
    let mut out = String::new();
    let mut section = |name: &str, title: &str, body: String| {
        if sections.wants(name) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str(&format!("# {title}\r\n{body}"));
        }
    };
    section(
        "server",
        "Server",
        format!(
            "redis_version:{version}\r\nwalnut_version:{}\r\nredis_mode:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\n",
            own.walnut_version, own.mode, own.process_id, own.tcp_port
        ),
    );
    section(
        "clients",
        "Clients",
        format!("connected_clients:{}\r\n", own.connected_clients),
    );
    section(
        "stats",
        "Stats",
        format!(
            "walnut_forward_errors:{}\r\nwalnut_fragments:{}\r\n",
            own.forward_errors, own.fragments
        ),
    );
    section("persistence", "Persistence", "loading:0\r\n".to_string());
    section(
        "keyspace",
        "Keyspace",
        keyspace
            .iter()
            .filter(|(_, (keys, _, _))| *keys > 0)
            .map(|(db, (keys, expires, ttl))| {
                format!("db{db}:keys={keys},expires={expires},avg_ttl={ttl}\r\n")
            })
            .collect(),
    );
    // The servers answered a RESP3 connection with a verbatim string: so does walnut.
    if replies.first().is_some_and(|r| r.starts_with(b"=")) {
        let mut e = super::encode::Encoder::new(super::reply::Protocol::Resp3);
        e.verbatim(b"txt", out.as_bytes());
        return Ok(e.finish());
    }
    let mut reply = Vec::with_capacity(out.len() + 16);
    push_bulk(&mut reply, out.as_bytes());
    Ok(reply)
}

/// The text of a bulk-string reply, or of a RESP3 verbatim string (`=len\r\ntxt:…`).
fn bulk_text(reply: &[u8]) -> Option<&str> {
    let data = match reply.first() {
        Some(b'=') => super::fanout::blob(reply, b'=')?.0.get(4..)?,
        _ => super::fanout::bulk(reply)?.0,
    };
    std::str::from_utf8(data).ok()
}

/// `name:value` in an INFO text.
fn field<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Vec<u8> {
        format!("${}\r\n{text}\r\n", text.len()).into_bytes()
    }

    #[test]
    fn the_keyspace_is_summed_and_the_version_comes_from_a_server() {
        let one = bulk("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=10\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n");
        let two = bulk("# Server\r\nredis_version:7.0.15\r\n\r\n# Keyspace\r\ndb0:keys=4,expires=2,avg_ttl=30\r\n");
        let own = Own {
            walnut_version: "0.1.0",
            mode: "standalone",
            connected_clients: 5,
            ..Own::default()
        };
        let all = Sections::parse(std::iter::empty());
        let reply = merge(&own, &all, &[&one, &two]).unwrap();
        let text = bulk_text(&reply).unwrap();
        assert!(text.starts_with("# Server\r\nredis_version:7.0.15\r\nwalnut_version:0.1.0\r\n"));
        assert!(text.contains("# Clients\r\nconnected_clients:5\r\n"));
        assert!(text.contains("loading:0\r\n"));
        assert!(text.ends_with(
            "# Keyspace\r\ndb0:keys=7,expires=3,avg_ttl=30\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n"
        ));
        let only = Sections::parse([&b"KEYSPACE"[..]].into_iter());
        let reply = merge(&own, &only, &[&one, &two]).unwrap();
        assert!(bulk_text(&reply)
            .unwrap()
            .starts_with("# Keyspace\r\ndb0:keys=7"));
        assert_eq!(
            merge(&own, &all, &[&one, b"-ERR no\r\n"]).unwrap(),
            b"-ERR no\r\n"
        );
        assert!(merge(&own, &all, &[b":1\r\n"]).is_err());
    }
}
