//! Sentinel pools at run time: each server is a master group that Redis Sentinel watches
//! (its name is the master name). walnut asks the sentinels where each master is
//! (`SENTINEL get-master-addr-by-name`) at start, every [`POLL_PERIOD`] and at once when asked
//! (a failing server, a reload), and listens for `+switch-master` on one sentinel at a time,
//! so a failover reaches walnut as soon as Sentinel announces it.
//!
//! A switch replaces the server with one of the same name at the new address
//! (`Pool::switch_master`): placement is by name, so no key moves. A sentinel that is down or
//! answers nonsense is skipped; with every sentinel down the last known addresses stay.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::pool::Pool;
use crate::cluster::value::{self, Value};
use crate::config::{ReadFrom, SentinelAddr, ServerAddr};
use crate::proto::redis::reply::ReplyDecoder;

/// How often the sentinels are asked when nothing asks sooner.
pub const POLL_PERIOD: Duration = Duration::from_secs(2);
/// The least time between two polls.
const POLL_GAP: Duration = Duration::from_millis(100);
/// How long one sentinel has to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(1000);
/// The largest reply read from a sentinel.
const MAX_REPLY: usize = 1024 * 1024;

/// Keeps a Sentinel pool's masters current until the pool is gone or has no sentinels.
pub async fn run(pool: Weak<Pool>) {
    tokio::spawn(listen_for_switches(pool.clone()));
    let mut all_down_logged = false;
    loop {
        let Some(current) = pool.upgrade() else {
            return;
        };
        let config = current.current.load().config.clone();
        if config.sentinels.is_empty() {
            return;
        }
        match poll(&config).await {
            Ok(answers) => {
                all_down_logged = false;
                for (index, answer) in answers.into_iter().enumerate() {
                    let Some(answer) = answer else { continue };
                    apply_master(&current, index, &answer.master, "poll");
                    if config.read_from != ReadFrom::Master {
                        current.set_replicas(index, &answer.replicas);
                    }
                }
            }
            Err(err) => {
                current.stats.sentinel_errors.inc();
                if !all_down_logged {
                    warn!(
                        "pool '{}': no sentinel answered ({err}); keeping the last known master addresses",
                        config.name
                    );
                    all_down_logged = true;
                }
            }
        }
        let wake = current.cluster.waker();
        drop(current);
        tokio::select! {
            _ = tokio::time::sleep(POLL_PERIOD) => {}
            _ = wake.notified() => {}
        }
        tokio::time::sleep(POLL_GAP).await;
    }
}

/// The most times one write is re-sent after `-READONLY` (a master demoted under it).
const MAX_WRITE_RETRIES: u8 = 16;

/// A master answered `-READONLY` to `request`: Sentinel demoted it. Ask the sentinels now,
/// and re-send the request to the server that replaces it, waiting a little (within its
/// timeout) until there is one; past that, the client gets the reply.
pub fn retry_write(
    pool: &Arc<Pool>,
    server: &super::backend::ServerInfo,
    mut request: super::backend::BackendRequest,
    reply: bytes::Bytes,
) {
    pool.cluster.refresh_soon();
    if request.redirects >= MAX_WRITE_RETRIES {
        return request.reply_to.deliver(Ok(reply));
    }
    request.redirects += 1;
    let backoff = Duration::from_millis((5u64 << request.redirects.min(5)).min(100));
    if request
        .deadline
        .is_some_and(|d| d <= tokio::time::Instant::now() + backoff)
    {
        return request.reply_to.deliver(Ok(reply));
    }
    let pool = Arc::downgrade(pool);
    let name = server.name.clone();
    tokio::spawn(async move {
        tokio::time::sleep(backoff).await;
        let Some(pool) = pool.upgrade() else {
            return request.reply_to.deliver(Ok(reply));
        };
        let snapshot = pool.current.load_full();
        let Some(target) = snapshot.servers.iter().find(|s| s.info.name == name) else {
            return request.reply_to.deliver(Ok(reply));
        };
        // Not replaced yet: the same master again, which answers READONLY again (and so
        // comes back here) until the switch.
        target.enqueue(request);
    });
}

/// Times a blocking command is sent again after failovers cut it off, with a backoff of up
/// to [`BLOCKING_BACKOFF_MAX`] between tries: long enough for Sentinel to elect a master.
const MAX_BLOCKING_RETRIES: u8 = 60;
const BLOCKING_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// A blocking command on the master of shard `server` was cut off by a failover (Redis
/// answered `-UNBLOCKED` or `-READONLY`, or the connection failed). It waited for nothing,
/// so after a backoff it runs again, on a dedicated connection of whatever the shard's master
/// is then; until Sentinel has switched, that is the same server, which fails it again and
/// so brings it back here. The client sees `failure` only when the retries run out.
pub fn retry_blocking(
    pool: &Arc<Pool>,
    server: &super::backend::ServerInfo,
    mut request: super::dedicated::BlockingRequest,
    failure: Result<bytes::Bytes, super::error::BackendError>,
) {
    pool.cluster.refresh_soon();
    if request.redirects >= MAX_BLOCKING_RETRIES {
        return request.reply_to.deliver(failure);
    }
    request.redirects += 1;
    let backoff =
        Duration::from_millis(10u64 << request.redirects.min(6)).min(BLOCKING_BACKOFF_MAX);
    request.deadline = request.deadline.map(|deadline| deadline + backoff);
    let pool = Arc::downgrade(pool);
    let name = server.name.clone();
    tokio::spawn(async move {
        tokio::time::sleep(backoff).await;
        if request
            .reply_to
            .tx
            .as_ref()
            .is_some_and(|tx| tx.is_closed())
        {
            return; // The client went away: nobody waits for the command any more.
        }
        let target = pool.upgrade().and_then(|pool| {
            let snapshot = pool.current.load();
            snapshot
                .servers
                .iter()
                .find(|s| s.info.name == name)
                .map(|s| s.dedicated.clone())
        });
        match target {
            Some(dedicated) => dedicated.spawn(request),
            None => request.reply_to.deliver(failure),
        }
    });
}

/// Switches server `index` to `master` if it moved, with one log line.
fn apply_master(pool: &Arc<Pool>, index: usize, master: &ServerAddr, source: &str) {
    let Some(old) = pool.switch_master(index, master) else {
        return;
    };
    pool.stats.sentinel_switches.inc();
    let waited = old.info.health.failing_for();
    let config = pool.current.load().config.clone();
    info!(
        "pool '{}': shard '{}' switched from {} to {} ({source}); traffic waited {} ms",
        config.name,
        old.info.name,
        shown(&old.info.addr),
        shown(master),
        waited.map_or(0, |w| w.as_millis())
    );
    super::cluster::publish_stats_layout(pool);
}

fn shown(addr: &ServerAddr) -> String {
    match addr {
        ServerAddr::Tcp { host, port } => format!("{host}:{port}"),
        ServerAddr::Unix { path } => path.display().to_string(),
    }
}

/// Where one master group's master and healthy replicas are, per a sentinel.
struct Answer {
    master: ServerAddr,
    replicas: Vec<ServerAddr>,
}

/// Asks the sentinels in turn until one answers for every server (`None` for a name it
/// does not monitor).
async fn poll(config: &crate::config::PoolConfig) -> Result<Vec<Option<Answer>>, String> {
    let mut last_error = String::from("no sentinel");
    for sentinel in &config.sentinels {
        let asked = tokio::time::timeout(SENTINEL_TIMEOUT * 2, ask(sentinel, config)).await;
        match asked {
            Ok(Ok(answers)) => return Ok(answers),
            Ok(Err(err)) => last_error = format!("{}:{}: {err}", sentinel.host, sentinel.port),
            Err(_) => {
                last_error = format!("{}:{}: no answer in time", sentinel.host, sentinel.port)
            }
        }
    }
    Err(last_error)
}

/// `*N\r\n$len\r\narg\r\n…`.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

struct Conn {
    stream: TcpStream,
    input: BytesMut,
    decoder: ReplyDecoder,
}

impl Conn {
    async fn open(sentinel: &SentinelAddr, auth: Option<&str>) -> Result<Conn, String> {
        let stream = tokio::time::timeout(
            SENTINEL_TIMEOUT,
            TcpStream::connect((sentinel.host.as_str(), sentinel.port)),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let mut conn = Conn {
            stream,
            input: BytesMut::with_capacity(4096),
            decoder: ReplyDecoder::new(MAX_REPLY),
        };
        if let Some(password) = auth {
            let reply = conn.call(&command(&[b"AUTH", password.as_bytes()])).await?;
            if reply.first() == Some(&b'-') {
                return Err(format!(
                    "the sentinel refused sentinel_auth: {}",
                    String::from_utf8_lossy(reply.trim_ascii_end())
                ));
            }
        }
        Ok(conn)
    }

    async fn call(&mut self, request: &[u8]) -> Result<bytes::Bytes, String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| e.to_string())?;
        self.read().await
    }

    async fn read(&mut self) -> Result<bytes::Bytes, String> {
        super::exchange::read_reply(&mut self.stream, &mut self.decoder, &mut self.input, 4096)
            .await
            .map(|reply| reply.frame)
            .map_err(|e| e.describe("sentinel"))
    }
}

async fn ask(
    sentinel: &SentinelAddr,
    config: &crate::config::PoolConfig,
) -> Result<Vec<Option<Answer>>, String> {
    let mut conn = Conn::open(sentinel, config.sentinel_auth.as_deref()).await?;
    let mut answers = Vec::with_capacity(config.servers.len());
    for server in &config.servers {
        let name = server.name.as_bytes();
        let reply = conn
            .call(&command(&[b"SENTINEL", b"get-master-addr-by-name", name]))
            .await?;
        let Some(master) = master_addr(&reply)? else {
            answers.push(None);
            continue;
        };
        let replicas = if config.read_from == ReadFrom::Master {
            Vec::new()
        } else {
            let reply = conn
                .call(&command(&[b"SENTINEL", b"replicas", name]))
                .await?;
            healthy_replicas(&reply)
        };
        answers.push(Some(Answer { master, replicas }));
    }
    Ok(answers)
}

fn tcp(host: &[u8], port: &[u8]) -> Option<ServerAddr> {
    let host = std::str::from_utf8(host).ok()?;
    let port = std::str::from_utf8(port).ok()?.parse().ok()?;
    (!host.is_empty()).then(|| ServerAddr::Tcp {
        host: host.to_string(),
        port,
    })
}

/// The reply to `SENTINEL get-master-addr-by-name`: `[ip, port]`, or null for a name the
/// sentinel does not monitor.
fn master_addr(reply: &[u8]) -> Result<Option<ServerAddr>, String> {
    let parsed = value::parse(reply).map_err(|e| e.to_string())?;
    match parsed {
        Value::Error(text) => Err(String::from_utf8_lossy(text).into_owned()),
        Value::Array(None) | Value::Bulk(None) => Ok(None),
        other => {
            let items = other.items().ok_or("not an array")?;
            match items {
                [host, port] => {
                    let (Some(host), Some(port)) = (host.text(), port.text()) else {
                        return Err("not [ip, port]".into());
                    };
                    tcp(host, port)
                        .map(Some)
                        .ok_or_else(|| "a bad address".into())
                }
                _ => Err("not [ip, port]".into()),
            }
        }
    }
}

/// From `SENTINEL replicas`: the replicas whose flags are just `slave` (not down or
/// disconnected) and whose link to the master is up.
fn healthy_replicas(reply: &[u8]) -> Vec<ServerAddr> {
    let Ok(parsed) = value::parse(reply) else {
        return Vec::new();
    };
    let Some(replicas) = parsed.items() else {
        return Vec::new();
    };
    replicas
        .iter()
        .filter_map(|replica| {
            let fields = replica.items()?;
            let field = |key: &[u8]| {
                fields
                    .chunks(2)
                    .find(|pair| pair.first().and_then(Value::text) == Some(key))
                    .and_then(|pair| pair.get(1)?.text())
            };
            let healthy =
                field(b"flags") == Some(b"slave") && field(b"master-link-status") == Some(b"ok");
            healthy.then(|| tcp(field(b"ip")?, field(b"port")?))?
        })
        .collect()
}

/// Subscribes to `+switch-master` on one sentinel at a time and switches at once.
async fn listen_for_switches(pool: Weak<Pool>) {
    let mut next = 0usize;
    loop {
        let Some(current) = pool.upgrade() else {
            return;
        };
        let config = current.current.load().config.clone();
        drop(current);
        if config.sentinels.is_empty() {
            return;
        }
        let sentinel = &config.sentinels[next % config.sentinels.len()];
        next += 1;
        if let Err(err) = follow_one(&pool, sentinel, config.sentinel_auth.as_deref()).await {
            if let Some(current) = pool.upgrade() {
                current.stats.sentinel_errors.inc();
                tracing::debug!(
                    "pool '{}': sentinel {}:{} subscription ended: {err}",
                    config.name,
                    sentinel.host,
                    sentinel.port
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn follow_one(
    pool: &Weak<Pool>,
    sentinel: &SentinelAddr,
    auth: Option<&str>,
) -> Result<(), String> {
    let mut conn = Conn::open(sentinel, auth).await?;
    let confirm = conn
        .call(&command(&[b"SUBSCRIBE", b"+switch-master"]))
        .await?;
    if confirm.first() == Some(&b'-') {
        return Err(String::from_utf8_lossy(&confirm).into_owned());
    }
    loop {
        let message = conn.read().await?;
        let Some(pool) = pool.upgrade() else {
            return Ok(());
        };
        let Some((name, master)) = switch_message(&message) else {
            continue;
        };
        let snapshot = pool.current.load_full();
        if let Some(index) = snapshot.servers.iter().position(|s| s.info.name == name) {
            apply_master(&pool, index, &master, "+switch-master");
        }
        // Replicas change too; the poll reads them.
        pool.cluster.refresh_soon();
    }
}

/// `message +switch-master "<name> <old ip> <old port> <new ip> <new port>"`.
fn switch_message(frame: &[u8]) -> Option<(String, ServerAddr)> {
    let parsed = value::parse(frame).ok()?;
    let items = parsed.items()?;
    let [kind, channel, payload] = items else {
        return None;
    };
    if kind.text()? != b"message" || channel.text()? != b"+switch-master" {
        return None;
    }
    let payload = std::str::from_utf8(payload.text()?).ok()?;
    let words: Vec<&str> = payload.split(' ').collect();
    let [name, _, _, host, port] = words.as_slice() else {
        return None;
    };
    Some((name.to_string(), tcp(host.as_bytes(), port.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses_and_unknown_names() {
        assert_eq!(
            master_addr(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"),
            Ok(Some(ServerAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 6380
            }))
        );
        assert_eq!(master_addr(b"*-1\r\n"), Ok(None));
        assert!(master_addr(b"-ERR No such master\r\n").is_err());
        assert!(master_addr(b":1\r\n").is_err());
        assert!(master_addr(b"*2\r\n$9\r\n127.0.0.1\r\n$2\r\nxx\r\n").is_err());
    }

    #[test]
    fn switch_messages_name_the_group_and_its_new_master() {
        let payload = "shard1 127.0.0.1 6379 127.0.0.1 6390";
        let frame = format!(
            "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n${}\r\n{payload}\r\n",
            payload.len()
        );
        assert_eq!(
            switch_message(frame.as_bytes()),
            Some((
                "shard1".into(),
                ServerAddr::Tcp {
                    host: "127.0.0.1".into(),
                    port: 6390
                }
            ))
        );
        assert_eq!(
            switch_message(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n"),
            None
        );
    }

    #[test]
    fn only_healthy_replicas_are_read_from() {
        let replica = |port: &str, flags: &str, link: &str| {
            let fields = [
                ("ip", "127.0.0.1"),
                ("port", port),
                ("flags", flags),
                ("master-link-status", link),
            ];
            let mut out = format!("*{}\r\n", fields.len() * 2);
            for (k, v) in fields {
                out.push_str(&format!("${}\r\n{k}\r\n${}\r\n{v}\r\n", k.len(), v.len()));
            }
            out
        };
        let reply = format!(
            "*3\r\n{}{}{}",
            replica("6381", "slave", "ok"),
            replica("6382", "s_down,slave,disconnected", "err"),
            replica("6383", "slave", "err")
        );
        assert_eq!(
            healthy_replicas(reply.as_bytes()),
            vec![ServerAddr::Tcp {
                host: "127.0.0.1".into(),
                port: 6381
            }]
        );
    }
}
