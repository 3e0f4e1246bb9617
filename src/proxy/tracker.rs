//! A session's tracking connection to one server, for client-side caching (`CLIENT
//! TRACKING`): a dedicated RESP3 connection in BCAST mode (with the client's prefixes), whose
//! invalidation pushes are passed on as they come, to the session itself or to the session
//! it redirects to.
//!
//! The servers see the client's reads on walnut's shared connections, not on this one, so
//! they cannot track them per key: BCAST tells the client about every change (under its
//! prefixes), a superset of what it read. Nothing is missed:
//! - `CLIENT TRACKING ON` is answered only once every server confirmed its tracking
//!   connection (or could not be reached), and the session's next forwarded request waits
//!   for that answer, so no read is cached before its server tracks it;
//! - an invalidation is queued behind every reply the session already expects, so it never
//!   overtakes the reply of a read that ran before the write;
//! - when a tracking connection fails, the client is told to drop everything (`invalidate`
//!   with a null) once it is confirmed again.
//!
//! Dropping the [`Tracker`] closes the connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;
use tracing::warn;

use super::backend::{Lane, ReplyTo};
use super::client_list::ClientEntry;
use super::dedicated::{send, Dedicated, MAX_REPLY, READ_CHUNK};
use super::exchange::read_reply;
use crate::proto::redis::dispatch;
use crate::proto::redis::reply::{Protocol, ReplyDecoder, ReplyKind};
use crate::proto::redis::tracking::{self, Invalidation};

const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Tracking is per server, not per database: every tracking connection uses db 0.
const TRACKING_LANE: Lane = Lane { db: 0, resp3: true };

/// Where a session's invalidations go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// The session itself (RESP3: pushes).
    Own(ReplyTo),
    /// The session `id` names with `REDIRECT` (`target`, while it lives); `own` is the
    /// tracking session's pushes when it speaks RESP3, told `tracking-redir-broken` once
    /// the target is gone, as Redis tells it.
    Redirect {
        id: i64,
        target: Weak<ClientEntry>,
        own: Option<ReplyTo>,
    },
}

impl Sink {
    /// Passes on one invalidation (`frame` is the server's RESP3 push of it).
    fn deliver(&self, frame: Bytes, invalidation: &Invalidation) {
        match self {
            Sink::Own(to) => to.clone().deliver(Ok(frame)),
            Sink::Redirect { id, target, own } => {
                let Some(target) = target.upgrade().and_then(|t| t.push_target()) else {
                    if let Some(own) = own {
                        let broken = format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{id}\r\n");
                        own.clone().deliver(Ok(Bytes::from(broken)));
                    }
                    return;
                };
                if target.resp3 {
                    target.to.deliver(Ok(frame));
                } else if target.subscribed {
                    let message = tracking::invalidation_message(invalidation, false);
                    target.to.deliver(Ok(Bytes::from(message)));
                }
            }
        }
    }

    /// Tells the client to drop everything it cached.
    fn flush(&self) {
        let everything = Invalidation { keys: None };
        self.deliver(Bytes::from_static(tracking::FLUSH_PUSH), &everything);
    }
}

/// Counts a set of tracking connections confirming, and sends what waited for all of them
/// (the `CLIENT TRACKING ON` reply, or a flush after the servers changed) once the last one
/// did. A connection that ends unconfirmed counts as confirmed.
#[derive(Debug)]
pub struct Confirmations {
    remaining: AtomicUsize,
    /// The first server's refusal.
    refused: Mutex<Option<String>>,
    done: Mutex<Option<Done>>,
}

/// What is sent when every tracking connection is confirmed.
#[derive(Debug)]
pub enum Done {
    /// The reply to `CLIENT TRACKING ON`: `+OK`, or the first refusal.
    Reply(ReplyTo),
    /// A flush: the servers changed, and what the old ones tracked is unknown.
    Flush(Sink),
}

impl Confirmations {
    /// Waits for `count` confirmations, then does `done` (at once when `count` is 0).
    pub fn new(count: usize, done: Done) -> Arc<Confirmations> {
        let confirmations = Arc::new(Confirmations {
            remaining: AtomicUsize::new(count),
            refused: Mutex::new(None),
            done: Mutex::new(Some(done)),
        });
        if count == 0 {
            confirmations.finish();
        }
        confirmations
    }

    fn confirm(&self, refusal: Option<String>) {
        if let Some(text) = refusal {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            refused.get_or_insert(text);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match done {
            Some(Done::Reply(to)) => {
                let reply = match refused {
                    None => Bytes::from_static(dispatch::OK),
                    Some(text) => Bytes::from(dispatch::error_reply(&text)),
                };
                to.deliver(Ok(reply));
            }
            Some(Done::Flush(sink)) => sink.flush(),
            None => {}
        }
    }
}

/// One tracking connection's part in its [`Confirmations`]: confirmed once, by hand or when
/// dropped.
struct Confirmation(Option<Arc<Confirmations>>);

impl Confirmation {
    fn confirm(&mut self, refusal: Option<String>) {
        if let Some(all) = self.0.take() {
            all.confirm(refusal);
        }
    }
}

impl Drop for Confirmation {
    fn drop(&mut self) {
        self.confirm(None);
    }
}

/// A session's handle on its tracking connection to one server.
#[derive(Debug)]
pub struct Tracker {
    _stop: oneshot::Sender<()>,
}

impl Tracker {
    /// Opens a tracking connection on `dedicated`'s server sending `command` (the server's
    /// `CLIENT TRACKING ON BCAST …`); invalidations go to `sink`, and `confirmations` learns
    /// when the server tracks.
    pub fn start(
        dedicated: &Arc<Dedicated>,
        command: Bytes,
        sink: Sink,
        confirmations: &Arc<Confirmations>,
    ) -> Tracker {
        let (stop, stopped) = oneshot::channel();
        let dedicated = dedicated.clone();
        let confirmation = Confirmation(Some(confirmations.clone()));
        tokio::spawn(async move { run(dedicated, command, sink, confirmation, stopped).await });
        Tracker { _stop: stop }
    }
}

async fn run(
    dedicated: Arc<Dedicated>,
    command: Bytes,
    sink: Sink,
    mut confirmation: Confirmation,
    mut stopped: oneshot::Receiver<()>,
) {
    let info = dedicated.info().clone();
    let mut backoff = RECONNECT_FIRST;
    let mut lost = false;
    loop {
        let taken = tokio::select! {
            _ = &mut stopped => return,
            taken = dedicated.take(TRACKING_LANE) => taken,
        };
        let mut stream = match taken {
            Ok(stream) => stream,
            Err(err) => {
                if !lost {
                    warn!(
                        "pool '{}': server '{}': no tracking connection ({err}); trying again",
                        info.pool_name, info.name
                    );
                }
                // A server walnut cannot reach changes nothing a client could read; once
                // it is back, the client is told to drop everything.
                confirmation.confirm(None);
                lost = true;
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        let failure = {
            let (mut reader, mut writer) = stream.split();
            let mut input = BytesMut::new();
            let mut decoder = ReplyDecoder::with_protocol(MAX_REPLY, Protocol::Resp3);
            let mut confirmed = false;
            match send(&mut writer, &command).await {
                Err(err) => Some(err.to_string()),
                Ok(()) => loop {
                    let reply = tokio::select! {
                        _ = &mut stopped => break None,
                        reply = read_reply(&mut reader, &mut decoder, &mut input, READ_CHUNK) => reply,
                    };
                    let reply = match reply {
                        Ok(reply) => reply,
                        Err(err) => break Some(err.describe("server")),
                    };
                    if let Some(invalidation) = tracking::read_invalidation(&reply.frame) {
                        sink.deliver(reply.frame, &invalidation);
                        continue;
                    }
                    if confirmed {
                        continue;
                    }
                    confirmed = true;
                    if reply.kind == ReplyKind::Error {
                        let text = String::from_utf8_lossy(reply.frame.trim_ascii_end());
                        let text = text.trim_start_matches('-');
                        warn!(
                            "pool '{}': server '{}' refused walnut's CLIENT TRACKING: {text}",
                            info.pool_name, info.name
                        );
                        confirmation.confirm(Some(format!(
                            "server '{}' refused CLIENT TRACKING: {text}",
                            info.name
                        )));
                        // Nothing to pass on; wait for the session to let go.
                        let _ = (&mut stopped).await;
                        break None;
                    }
                    confirmation.confirm(None);
                    backoff = RECONNECT_FIRST;
                    if lost {
                        // Changes while the connection was down went unseen.
                        sink.flush();
                        lost = false;
                    }
                },
            }
        };
        dedicated.discard(stream);
        match failure {
            None => return,
            Some(why) => {
                warn!(
                    "pool '{}': server '{}': a tracking connection failed ({why}); opening it again",
                    info.pool_name, info.name
                );
                lost = true;
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::backend::ClientReply;
    use tokio::sync::mpsc;

    fn reply_to() -> (ReplyTo, mpsc::UnboundedReceiver<ClientReply>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let to = ReplyTo {
            tx: Some(tx),
            seq: 7,
            part: 0,
            client: 1,
            worker: 0,
            lane: Lane::default(),
        };
        (to, rx)
    }

    fn next(rx: &mut mpsc::UnboundedReceiver<ClientReply>) -> Option<Bytes> {
        rx.try_recv().ok().map(|r| r.result.expect("a reply"))
    }

    #[test]
    fn the_answer_waits_for_every_connection_and_reports_the_first_refusal() {
        let (to, mut rx) = reply_to();
        let all = Confirmations::new(3, Done::Reply(to));
        let mut parts: Vec<Confirmation> =
            (0..3).map(|_| Confirmation(Some(all.clone()))).collect();
        parts[0].confirm(None);
        parts[1].confirm(Some("server 's1' refused CLIENT TRACKING: ERR no".into()));
        parts[1].confirm(None); // a second confirmation of one part counts for nothing
        assert_eq!(next(&mut rx), None);
        // The last part ends unconfirmed (its tracker stopped): it counts as confirmed.
        drop(parts);
        assert_eq!(
            next(&mut rx),
            Some(Bytes::from_static(
                b"-ERR server 's1' refused CLIENT TRACKING: ERR no\r\n"
            ))
        );
        assert_eq!(next(&mut rx), None);
    }

    #[test]
    fn no_servers_answer_at_once_and_a_flush_goes_to_the_sink() {
        let (to, mut rx) = reply_to();
        Confirmations::new(0, Done::Reply(to));
        assert_eq!(next(&mut rx), Some(Bytes::from_static(b"+OK\r\n")));
        let (push, mut pushes) = reply_to();
        let all = Confirmations::new(1, Done::Flush(Sink::Own(push)));
        Confirmation(Some(all)).confirm(None);
        assert_eq!(
            next(&mut pushes),
            Some(Bytes::from_static(tracking::FLUSH_PUSH))
        );
    }

    #[test]
    fn a_redirect_to_a_gone_session_tells_a_resp3_tracker() {
        let (own, mut rx) = reply_to();
        let sink = Sink::Redirect {
            id: 42,
            target: Weak::new(),
            own: Some(own),
        };
        sink.flush();
        assert_eq!(
            next(&mut rx),
            Some(Bytes::from_static(
                b">2\r\n$21\r\ntracking-redir-broken\r\n:42\r\n"
            ))
        );
    }
}
