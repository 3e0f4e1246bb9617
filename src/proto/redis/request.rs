//! RESP request decoding: one complete request at a time, zero-copy over the client's buffer.
//!
//! The decoder never allocates for a length the peer only declared, and it resumes where it
//! stopped when a request arrives in several reads.

use bytes::{Bytes, BytesMut};

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest whole request, in bytes (declared or real).
    pub max_request_bytes: usize,
    /// The most arguments in one request.
    pub max_args: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
        }
    }
}

/// Malformed framing. `Display` is the text after `-ERR ` in the reply to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: todo")]
    Todo,
}

/// One complete RESP request (an array of bulk strings), byte for byte as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {}

impl Request {
    /// The whole request, exactly as received.
    pub fn frame(&self) -> &Bytes {
        todo!()
    }
    /// The number of arguments, command name included.
    pub fn argc(&self) -> usize {
        todo!()
    }
    /// Argument `i` (0 is the command name); O(1) for the first three.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let _ = i;
        todo!()
    }
    /// Every argument in order.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        std::iter::empty()
    }
}

/// Decodes requests from a client's read buffer, keeping progress across partial reads.
#[derive(Debug, Default)]
pub struct RequestDecoder {}

impl RequestDecoder {
    pub fn new(limits: Limits) -> RequestDecoder {
        let _ = limits;
        RequestDecoder {}
    }

    /// `Ok(Some(request))` consumes one request from the front of `buf`; `Ok(None)` needs more
    /// bytes; `Err` means the stream cannot be resynchronised.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let _ = buf;
        todo!()
    }
}
