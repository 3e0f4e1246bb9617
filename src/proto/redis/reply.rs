//! RESP reply decoding for backend connections: one complete reply (any RESP2 shape, nested
//! arrays included) at a time, zero-copy, resuming across partial reads. No I/O.

use bytes::{Bytes, BytesMut};

pub use super::request::ProtocolError;

/// The type of a reply, from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Status,
    Error,
    Integer,
    Bulk,
    Array,
}

/// One complete reply, byte for byte as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub frame: Bytes,
}

/// Decodes replies from a backend's read buffer.
#[derive(Debug, Default)]
pub struct ReplyDecoder {}

impl ReplyDecoder {
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let _ = buf;
        todo!()
    }
}
