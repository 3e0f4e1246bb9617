//! Reads a Redis pool's command catalog from one of its servers, once: `COMMAND` and
//! `COMMAND DOCS` over a RESP2 connection, then the same after `HELLO 3`, on a connection
//! of its own through the server's handshake. Sessions route commands walnut's table lacks
//! by the key specs it holds, and answer clients' `COMMAND …` from it
//! (`proto::redis::catalog`).
//!
//! Until it is read (no server reachable yet), commands walnut's table lacks are refused
//! as unknown and `COMMAND` is forwarded; the read is retried with a growing pause.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::BytesMut;
use tracing::{info, warn};

use super::backend::Lane;
use super::exchange::{read_reply, send};
use super::pool::{Pool, PoolSnapshot};
use crate::proto::redis::catalog::{Catalog, Replies, MAX_CATALOG_REPLY};
use crate::proto::redis::reply::{Protocol, ReplyDecoder, ReplyKind};

/// A pool's catalog once read; shared by every snapshot of the pool.
pub type Learned = Arc<ArcSwapOption<Catalog>>;

/// `COMMAND`, `COMMAND DOCS`, `HELLO 3`, `COMMAND`, `COMMAND DOCS`, pipelined.
const REQUESTS: &[u8] = b"*1\r\n$7\r\nCOMMAND\r\n*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n\
*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*1\r\n$7\r\nCOMMAND\r\n*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n";

const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// The most one read of the catalog may take.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Reads the catalog of `pool` from its first server that answers, then stops (also when
/// the pool goes away).
pub async fn learn(pool: Weak<Pool>) {
    let mut pause = FIRST_PAUSE;
    let mut last_failure = String::new();
    loop {
        let Some(snapshot) = pool.upgrade().map(|pool| pool.current.load_full()) else {
            return;
        };
        if snapshot.commands.load().is_some() {
            return;
        }
        match learn_from(&snapshot).await {
            Ok((server, catalog)) => {
                info!(
                    "pool '{}': read {} commands from server '{server}' ({} served, {} of them routed by their key specs alone)",
                    snapshot.config.name,
                    catalog.table.len(),
                    catalog.listed_count(),
                    catalog.learned_only()
                );
                snapshot.commands.store(Some(Arc::new(catalog)));
                return;
            }
            // A cluster or Sentinel pool before its first topology: nothing to report.
            Err(why) if snapshot.servers.is_empty() => last_failure = why,
            Err(why) if why != last_failure => {
                warn!(
                    "pool '{}': cannot read the servers' COMMAND table yet ({why}); commands walnut does not know are refused until it can",
                    snapshot.config.name
                );
                last_failure = why;
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// The catalog from the first server of `snapshot` that gives one, and that server's name.
async fn learn_from(snapshot: &PoolSnapshot) -> Result<(String, Catalog), String> {
    let mut why = String::from("the pool has no servers yet");
    for server in &snapshot.servers {
        let name = &server.info.name;
        match tokio::time::timeout(READ_LIMIT, read_catalog(server)).await {
            Ok(Ok(catalog)) => return Ok((name.to_string(), catalog)),
            Ok(Err(err)) => why = format!("server '{name}': {err}"),
            Err(_) => why = format!("server '{name}' did not answer in {READ_LIMIT:?}"),
        }
    }
    Err(why)
}

async fn read_catalog(server: &super::pool::Server) -> Result<Catalog, String> {
    let mut stream = server
        .dedicated
        .connect(Lane::default())
        .await
        .map_err(|e| e.to_string())?;
    let (mut reader, mut writer) = stream.split();
    send(&mut writer, REQUESTS)
        .await
        .map_err(|e| e.to_string())?;
    let mut input = BytesMut::new();
    let mut decoder = ReplyDecoder::with_protocol(MAX_CATALOG_REPLY, Protocol::Resp2);
    let mut replies: Vec<crate::proto::redis::reply::Reply> = Vec::with_capacity(5);
    for i in 0..5 {
        if i == 2 {
            // HELLO 3's own reply is RESP3 already (an error reads the same in both).
            decoder = ReplyDecoder::with_protocol(MAX_CATALOG_REPLY, Protocol::Resp3);
        }
        if i == 3 && replies[2].kind == ReplyKind::Error {
            // No RESP3 (Redis 5): what follows is RESP2, and not needed.
            break;
        }
        let reply = read_reply(&mut reader, &mut decoder, &mut input, 64 * 1024)
            .await
            .map_err(|e| e.describe("server"))?;
        replies.push(reply);
    }
    let usable = |i: usize| {
        replies
            .get(i)
            .filter(|r| r.kind != ReplyKind::Error)
            .map(|r| &r.frame[..])
    };
    Catalog::new(Replies {
        command: &replies[0].frame,
        docs: usable(1),
        command3: usable(3),
        docs3: usable(4),
    })
    .map_err(|e| e.to_string())
}
