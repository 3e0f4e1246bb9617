//! A session's timers, kept off its hot path: the drain's quiet moment and deadline, and the
//! idle release that gives the buffers of a session between requests back. Each is boxed and
//! made only when needed, so a session that has none carries two empty options, and a busy
//! one re-arms its idle timer at most once per period, never once per request.

use std::pin::Pin;

use tokio::time::{sleep, sleep_until, Duration, Instant, Sleep};

/// A draining client that has sent nothing for this long, with everything answered, is closed.
pub const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// A session between requests for this long gives its grown buffers back.
pub const IDLE_RELEASE: Duration = Duration::from_millis(500);

/// A session's drain: it closes once quiet, or at the deadline.
pub struct Drain {
    deadline: Pin<Box<Sleep>>,
    /// Fires [`DRAIN_QUIET`] after the client was last heard from.
    quiet: Pin<Box<Sleep>>,
}

impl Drain {
    pub fn new(deadline: Instant) -> Drain {
        Drain {
            deadline: Box::pin(sleep_until(deadline)),
            quiet: Box::pin(sleep(DRAIN_QUIET)),
        }
    }

    /// The client sent something: its quiet moment starts again.
    pub fn heard(&mut self) {
        self.quiet.as_mut().reset(Instant::now() + DRAIN_QUIET);
    }
}

/// Why a draining session closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// The deadline came.
    Deadline,
    /// The client has been quiet for [`DRAIN_QUIET`].
    Quiet,
}

/// Completes when a draining session must close: at the deadline, or once the client has been
/// quiet for [`DRAIN_QUIET`] if `between_requests`; pending while not draining.
pub async fn drain_end(drain: &mut Option<Drain>, between_requests: bool) -> DrainEnd {
    let Some(drain) = drain else {
        return std::future::pending().await;
    };
    tokio::select! {
        biased;
        _ = drain.deadline.as_mut() => DrainEnd::Deadline,
        _ = drain.quiet.as_mut(), if between_requests => DrainEnd::Quiet,
    }
}

/// When a session between requests gives its buffers back.
#[derive(Default)]
pub struct IdleRelease {
    timer: Option<Pin<Box<Sleep>>>,
    /// The client was heard from since the timer was (re)armed.
    heard: bool,
}

impl IdleRelease {
    /// Starts the period, unless it is already running.
    pub fn arm(&mut self) {
        if self.timer.is_none() {
            self.timer = Some(Box::pin(sleep(IDLE_RELEASE)));
            self.heard = false;
        }
    }

    pub fn is_armed(&self) -> bool {
        self.timer.is_some()
    }

    /// The client sent something: the current period does not count as idle.
    pub fn heard(&mut self) {
        self.heard = true;
    }

    /// Completes once a whole period passed without the client being heard from (then the
    /// timer is gone until the next [`IdleRelease::arm`]); pending while not armed.
    pub async fn elapsed(&mut self) {
        loop {
            let Some(timer) = self.timer.as_mut() else {
                return std::future::pending().await;
            };
            timer.as_mut().await;
            if !self.heard {
                self.timer = None;
                return;
            }
            self.heard = false;
            timer.as_mut().reset(Instant::now() + IDLE_RELEASE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_idle_release_waits_for_a_whole_period_without_the_client() {
        let mut idle = IdleRelease::default();
        assert!(!idle.is_armed());
        idle.arm();
        let start = Instant::now();
        idle.heard();
        idle.elapsed().await;
        // The first period had the client in it: a second one had to pass.
        assert_eq!(start.elapsed(), 2 * IDLE_RELEASE);
        assert!(!idle.is_armed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_is_quiet_a_moment_after_the_client_was_last_heard() {
        let mut drain = Some(Drain::new(Instant::now() + Duration::from_secs(10)));
        let start = Instant::now();
        tokio::time::sleep(DRAIN_QUIET / 2).await;
        if let Some(drain) = &mut drain {
            drain.heard();
        }
        assert_eq!(drain_end(&mut drain, true).await, DrainEnd::Quiet);
        assert_eq!(start.elapsed(), DRAIN_QUIET / 2 + DRAIN_QUIET);
        // A client in the middle of a request is not quiet: only the deadline closes it.
        assert_eq!(drain_end(&mut drain, false).await, DrainEnd::Deadline);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
