//! `CLIENT REPLY ON|OFF|SKIP` as a session keeps it: which requests' replies the client is
//! not sent. The session asks [`ReplyControl::silenced`] for every slot it takes, so a
//! silenced reply keeps its place in the order and is dropped when it is ready: replies that
//! come back out of order, from several servers, or inside MULTI are never misattributed.
//!
//! The states are Redis 7.0's client flags: `OFF` until `ON`; `SKIP` marks the next request
//! (`skip_next`), whose replies are then dropped (`skip`). Pub/sub confirmations and
//! messages are pushes in Redis 7.0.15 and are sent whatever the mode.

use crate::proto::redis::clients::ReplyMode;

/// A session's `CLIENT REPLY` state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyControl {
    off: bool,
    /// The request being handled has its replies dropped (`CLIENT REPLY SKIP` before it).
    skip: bool,
    /// The next request will.
    skip_next: bool,
    /// The request being handled answers with pushes, sent whatever the mode.
    pushes: bool,
}

impl ReplyControl {
    /// A new request is handled: a `SKIP` before it now applies to it.
    #[inline]
    pub fn begin_request(&mut self) {
        self.skip = std::mem::take(&mut self.skip_next);
        self.pushes = false;
    }

    /// Whether the replies of the request being handled are dropped.
    #[inline]
    pub fn silenced(&self) -> bool {
        (self.off || self.skip) && !self.pushes
    }

    /// `CLIENT REPLY <mode>` (after [`ReplyControl::begin_request`] for it): `ON` is then
    /// answered (`+OK`, not silenced), `OFF` and `SKIP` are not.
    pub fn set(&mut self, mode: ReplyMode) {
        match mode {
            ReplyMode::On => {
                self.off = false;
                self.skip = false;
            }
            ReplyMode::Off => self.off = true,
            ReplyMode::Skip if !self.off => self.skip_next = true,
            ReplyMode::Skip => {}
        }
    }

    /// `RESET`: `OFF` and a `SKIP` to come end (a `SKIP` of `RESET` itself still applies).
    pub fn reset(&mut self) {
        self.off = false;
        self.skip_next = false;
    }

    /// The request being handled answers with pub/sub confirmations (pushes).
    pub fn answers_with_pushes(&mut self) {
        self.pushes = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step is a `CLIENT REPLY` mode, `R` a `RESET`, `P` a subscribe, anything else a
    /// command; gives which requests had their replies sent.
    fn sent(steps: &[&str]) -> Vec<bool> {
        let mut control = ReplyControl::default();
        steps
            .iter()
            .map(|&step| {
                control.begin_request();
                match step {
                    "ON" => control.set(ReplyMode::On),
                    "OFF" => control.set(ReplyMode::Off),
                    "SKIP" => control.set(ReplyMode::Skip),
                    "R" => control.reset(),
                    "P" => control.answers_with_pushes(),
                    _ => {}
                }
                // OFF and SKIP answer nothing anyway.
                !matches!(step, "OFF" | "SKIP") && !control.silenced()
            })
            .collect()
    }

    #[test]
    fn skip_drops_the_next_reply_only() {
        assert_eq!(
            sent(&["SKIP", "a", "b"]),
            [false, false, true],
            "SKIP, PING, PING"
        );
        assert_eq!(
            sent(&["SKIP", "SKIP", "a", "b"]),
            [false, false, false, true]
        );
        assert_eq!(sent(&["SKIP", "ON", "a"]), [false, true, true]);
    }

    #[test]
    fn off_drops_every_reply_until_on() {
        assert_eq!(
            sent(&["OFF", "a", "SKIP", "b", "ON", "c"]),
            [false, false, false, false, true, true]
        );
    }

    #[test]
    fn reset_ends_off_but_not_a_skip_of_itself() {
        assert_eq!(sent(&["OFF", "R", "a"]), [false, true, true]);
        assert_eq!(sent(&["SKIP", "R", "a"]), [false, false, true]);
    }

    #[test]
    fn subscribe_confirmations_are_pushes_but_use_up_a_skip() {
        assert_eq!(sent(&["OFF", "P", "a"]), [false, true, false]);
        assert_eq!(sent(&["SKIP", "P", "a"]), [false, true, true]);
    }
}
