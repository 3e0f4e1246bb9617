//! A client's pending replies, written in order with one vectored write.
//!
//! Small replies are copied into one staging buffer (a copy of a few bytes is cheaper than an
//! extra iovec). A large reply is kept as its own `Bytes`, shared with the backend's read
//! buffer, and written from there: a 1 MB value is not copied again on its way out.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::stream::{write_buffers, WriteHalf};

/// Replies at least this large are written from their own buffer, without a copy.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// Replies waiting to be written, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Whole buffers ready to write; the first may be partly written.
    frames: VecDeque<Bytes>,
    /// Small replies gathered after the last frame.
    staging: BytesMut,
    /// Bytes not yet written, over `frames` and `staging`.
    pending: usize,
}

impl Outbox {
    /// Queues `reply` behind everything already queued.
    pub fn push(&mut self, reply: Bytes) {
        if reply.is_empty() {
            return;
        }
        self.pending += reply.len();
        if reply.len() >= ZERO_COPY_MIN {
            self.seal_staging();
            self.frames.push_back(reply);
        } else {
            self.staging.extend_from_slice(&reply);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.pending
    }

    /// Whether it holds allocated memory (it may, empty, from earlier replies).
    pub fn holds_memory(&self) -> bool {
        self.frames.capacity() > 0 || self.staging.capacity() > 0
    }

    /// Gives its memory back once everything is written.
    pub fn release(&mut self) {
        if self.is_empty() {
            *self = Outbox::default();
        }
    }

    /// Moves the staged small replies into the frame list, keeping the order.
    fn seal_staging(&mut self) {
        if !self.staging.is_empty() {
            self.frames.push_back(self.staging.split().freeze());
        }
    }

    /// One vectored write of what is queued; returns the bytes written.
    pub async fn write_to(&mut self, writer: &mut WriteHalf<'_>) -> std::io::Result<usize> {
        self.seal_staging();
        let written = write_buffers(writer, self.frames.iter().map(|f| &f[..])).await?;
        self.advance(written);
        Ok(written)
    }

    /// Drops `written` bytes from the front.
    fn advance(&mut self, mut written: usize) {
        self.pending -= written.min(self.pending);
        while written > 0 {
            let Some(front) = self.frames.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.frames.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_replies_are_staged_and_large_ones_kept_whole_in_order() {
        let mut out = Outbox::default();
        out.push(Bytes::from_static(b"+OK\r\n"));
        out.push(Bytes::from_static(b":1\r\n"));
        let large = Bytes::from(vec![b'x'; ZERO_COPY_MIN]);
        out.push(large.clone());
        out.push(Bytes::from_static(b"+PONG\r\n"));
        out.push(Bytes::new());
        assert_eq!(out.len(), 5 + 4 + ZERO_COPY_MIN + 7);
        out.seal_staging();
        let frames: Vec<&[u8]> = out.frames.iter().map(|f| &f[..]).collect();
        assert_eq!(
            frames,
            vec![&b"+OK\r\n:1\r\n"[..], &large[..], b"+PONG\r\n"]
        );
        // The large reply shares its buffer: no copy.
        assert_eq!(out.frames[1].as_ptr(), large.as_ptr());
    }

    #[test]
    fn a_partial_write_resumes_where_it_stopped() {
        let mut out = Outbox::default();
        out.push(Bytes::from_static(b"abc"));
        out.push(Bytes::from(vec![b'y'; ZERO_COPY_MIN]));
        out.seal_staging();
        out.advance(2);
        assert_eq!(&out.frames[0][..], b"c");
        out.advance(1 + 10);
        assert_eq!(out.frames[0].len(), ZERO_COPY_MIN - 10);
        assert_eq!(out.len(), ZERO_COPY_MIN - 10);
        out.advance(ZERO_COPY_MIN - 10);
        assert!(out.is_empty() && out.frames.is_empty());
    }
}
