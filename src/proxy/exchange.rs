//! One request and its reply on a connection of its own, outside the pipelined path: the
//! slot-map reads of cluster pools, the sentinels' answers, and blocking commands on
//! dedicated connections. Each caller words the failure for its own log or client.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::BackendError;
use crate::proto::redis::reply::{Reply, ReplyDecoder};

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not a Redis reply (the decoder's explanation).
    Unparsable(String),
    /// The peer closed the connection before a whole reply arrived.
    Closed,
    Io(std::io::Error),
}

impl ReadError {
    /// The failure as a log line fragment, naming the `peer` ("node", "sentinel").
    pub fn describe(&self, peer: &str) -> String {
        match self {
            ReadError::Unparsable(err) => format!("unparsable reply: {err}"),
            ReadError::Closed => format!("the {peer} closed the connection"),
            ReadError::Io(err) => err.to_string(),
        }
    }
}

impl From<ReadError> for BackendError {
    fn from(err: ReadError) -> BackendError {
        match err {
            ReadError::Unparsable(_) => BackendError::InvalidReply,
            ReadError::Closed => BackendError::ConnectionReset,
            ReadError::Io(err) => BackendError::from_io(&err),
        }
    }
}

/// Writes `bytes` and flushes them (a TLS session may still hold the records).
pub async fn send<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Reads until `decoder` has one whole reply in `input`, reading `chunk` bytes at a time;
/// what follows the reply stays in `input`.
pub async fn read_reply<R: AsyncRead + Unpin>(
    reader: &mut R,
    decoder: &mut ReplyDecoder,
    input: &mut BytesMut,
    chunk: usize,
) -> Result<Reply, ReadError> {
    loop {
        match decoder.decode(input) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(err) => return Err(ReadError::Unparsable(err.to_string())),
        }
        input.reserve(chunk);
        match reader.read_buf(input).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {}
            Err(err) => return Err(ReadError::Io(err)),
        }
    }
}
