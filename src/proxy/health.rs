//! Server health: consecutive failures, ejection and return (twemproxy's `server_failure`),
//! plus walnut's background probe that keeps a still-dead server out of the continuum.
//!
//! The data path only touches atomics here; ejection and return are rare and rebuild the
//! pool's snapshot under a small lock that never sits on the request path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::error::BackendError;
use crate::config::ServerAddr;
use crate::proto::redis::reply::{ReplyDecoder, ReplyKind};

/// The health of one server, shared by its connections and the pool.
#[derive(Debug, Default)]
pub struct ServerHealth {
    failures: AtomicU32,
    ejected: AtomicBool,
    /// µs since the epoch of the last ejection (twemproxy's `server_ejected_at`).
    ejected_at_us: AtomicU64,
    /// µs since the epoch of the first failure of the current streak.
    failing_since_us: AtomicU64,
}

impl ServerHealth {
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    pub fn ejected_at_us(&self) -> u64 {
        self.ejected_at_us.load(Ordering::Relaxed)
    }

    /// A good reply: the failure streak is over.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// How long the current failure streak has lasted, if there is one.
    pub fn failing_for(&self) -> Option<Duration> {
        let since = self.failing_since_us.load(Ordering::Relaxed);
        if since == 0 || self.failures.load(Ordering::Relaxed) == 0 && !self.is_ejected() {
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        Some(Duration::from_micros(now.saturating_sub(since)))
    }

    /// Counts one failure; true when it reaches `limit` and this call ejected the server.
    pub fn record_failure(&self, limit: u32) -> bool {
        let streak = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if streak == 1 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.failing_since_us
                .store(now.as_micros() as u64, Ordering::Relaxed);
        }
        if streak < limit || self.ejected.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.ejected_at_us
            .store(now.as_micros() as u64, Ordering::Relaxed);
        true
    }

    /// The server is back in the continuum.
    pub fn restore(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejected.store(false, Ordering::Release);
    }
}

/// The wire protocol a server speaks, for the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Handshake (AUTH/SELECT) then `PING`, expecting `+PONG`.
    Redis,
    /// `version`, expecting `VERSION …`.
    Memcache,
}

/// Connects to the server and checks that it answers, within `limit`.
pub async fn probe(
    addr: &ServerAddr,
    kind: ProbeKind,
    handshake: &[bytes::Bytes],
    tls: Option<&crate::tls::Connector>,
    limit: Duration,
) -> Result<(), BackendError> {
    tokio::time::timeout(limit, probe_once(addr, kind, handshake, tls))
        .await
        .unwrap_or(Err(BackendError::TimedOut))
}

async fn probe_once(
    addr: &ServerAddr,
    kind: ProbeKind,
    handshake: &[bytes::Bytes],
    tls: Option<&crate::tls::Connector>,
) -> Result<(), BackendError> {
    let mut stream = super::stream::connect(addr, tls).await?;
    let (mut reader, mut writer) = stream.split();
    let mut out = Vec::new();
    let expected_replies = match kind {
        ProbeKind::Redis => {
            for frame in handshake {
                out.extend_from_slice(frame);
            }
            out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            handshake.len() + 1
        }
        ProbeKind::Memcache => {
            out.extend_from_slice(b"version\r\n");
            1
        }
    };
    super::exchange::send(&mut writer, &out)
        .await
        .map_err(|e| BackendError::from_io(&e))?;
    let mut input = BytesMut::with_capacity(1024);
    let mut decoder = ReplyDecoder::new(64 * 1024);
    let mut seen = 0;
    loop {
        let n = reader
            .read_buf(&mut input)
            .await
            .map_err(|e| BackendError::from_io(&e))?;
        if n == 0 {
            return Err(BackendError::ConnectionReset);
        }
        match kind {
            ProbeKind::Memcache => {
                if input.len() > 64 * 1024 {
                    return Err(BackendError::InvalidReply);
                }
                if let Some(end) = input.windows(2).position(|w| w == b"\r\n") {
                    return if input[..end].starts_with(b"VERSION ") {
                        Ok(())
                    } else {
                        Err(BackendError::InvalidReply)
                    };
                }
            }
            ProbeKind::Redis => loop {
                match decoder.decode(&mut input) {
                    Ok(Some(reply)) => {
                        seen += 1;
                        if seen == expected_replies {
                            return if reply.kind == ReplyKind::Status
                                && &reply.frame[..] == b"+PONG\r\n"
                            {
                                Ok(())
                            } else {
                                Err(BackendError::InvalidReply)
                            };
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return Err(BackendError::InvalidReply),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_needs_the_limit_of_consecutive_failures() {
        let health = ServerHealth::default();
        assert!(!health.record_failure(3));
        health.record_success();
        assert!(!health.record_failure(3));
        assert!(!health.record_failure(3));
        assert!(health.record_failure(3));
        assert!(health.is_ejected());
        assert!(health.ejected_at_us() > 0);
        // Already ejected: further failures do not eject again.
        assert!(!health.record_failure(3));
        health.restore();
        assert!(!health.is_ejected());
    }

    #[test]
    fn a_limit_of_zero_ejects_on_the_first_failure() {
        let health = ServerHealth::default();
        assert!(health.record_failure(0));
    }
}
