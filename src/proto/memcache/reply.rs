//! memcached text-protocol reply decoding for backend connections: one complete reply at a
//! time (a whole `VALUE … END` block, a meta `VA` with its data, or one line), zero-copy,
//! resuming across partial reads. No I/O.
//!
//! Anything that is not a memcached reply is an error: the connection is then closed, as
//! twemproxy does, because replies could no longer be matched to requests.
//!
//! Contract with the caller: between calls that returned `Ok(None)` the buffer may only be
//! appended to.

use bytes::{Bytes, BytesMut};

/// The default bound on one reply: a multi-get of many large values.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 2 * 1024 * 1024 * 1024;
/// The bound on one reply line.
const MAX_REPLY_LINE: usize = 64 * 1024;

/// What kind of reply a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// `VALUE …` blocks then `END`, or a bare `END`.
    Values,
    /// `STORED`, `NOT_STORED`, `EXISTS`, `NOT_FOUND`, `DELETED`, `TOUCHED`, `OK`, a number,
    /// `VERSION …`.
    Status,
    /// A meta reply (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`, `ME`), not `MN`.
    Meta,
    /// `MN`: the end of a quiet-mode pipeline.
    MetaNoop,
    /// `ERROR`, `CLIENT_ERROR …`, `SERVER_ERROR …`; also a `VALUE` list cut short by one.
    Error,
}

/// One complete reply, byte for byte as the server sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub frame: Bytes,
}

/// Why a reply could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("unexpected reply line {0:?}")]
    UnknownLine(String),
    #[error("malformed VALUE line {0:?}")]
    BadValueLine(String),
    #[error("a value's data block does not end with CRLF")]
    BadDataBlock,
    #[error("reply longer than {0} bytes")]
    TooLong(usize),
}

/// Decodes replies from a backend's read buffer.
#[derive(Debug)]
pub struct ReplyDecoder {
    max_reply: usize,
    /// Progress through the reply at the front of the buffer: where its next line starts,
    /// once the `VALUE` blocks before it were checked.
    resume_at: usize,
    /// When the last call stopped inside a data block: the buffer length that completes it.
    want: usize,
}

impl Default for ReplyDecoder {
    fn default() -> Self {
        ReplyDecoder::new(DEFAULT_MAX_REPLY_BYTES)
    }
}

fn shown(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned()
}

fn word(line: &[u8], index: usize) -> Option<&[u8]> {
    line.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .nth(index)
}

fn parse_len(text: &[u8]) -> Option<usize> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// An `incr`/`decr` reply: digits (memcached may pad with spaces).
fn is_number(line: &[u8]) -> bool {
    let digits = line.trim_ascii_end();
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The kind of a one-line reply, or `None` when it is not one memcached sends.
fn line_kind(line: &[u8]) -> Option<ReplyKind> {
    let first = line.split(|&b| b == b' ').next().unwrap_or_default();
    Some(match first {
        b"END" if line == b"END" => ReplyKind::Values,
        b"STORED" | b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" | b"DELETED" | b"TOUCHED" | b"OK"
            if first.len() == line.len() =>
        {
            ReplyKind::Status
        }
        b"VERSION" => ReplyKind::Status,
        b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => ReplyKind::Error,
        b"HD" | b"EN" | b"NS" | b"EX" | b"NF" | b"ME" => ReplyKind::Meta,
        b"MN" => ReplyKind::MetaNoop,
        _ if is_number(line) => ReplyKind::Status,
        _ => return None,
    })
}

impl ReplyDecoder {
    pub fn new(max_reply: usize) -> ReplyDecoder {
        ReplyDecoder {
            max_reply,
            resume_at: 0,
            want: 0,
        }
    }

    /// After `decode` returned `Ok(None)`: the length the buffer must reach before the reply
    /// can progress, when a `VALUE` or `VA` line has declared its data block (never more than
    /// the reply bound); 0 when unknown. Lets the caller make room for a large value in one
    /// step.
    pub fn bytes_wanted(&self) -> usize {
        self.want
    }

    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ReplyError> {
        self.want = 0;
        match self.reply_end(buf)? {
            None => {
                if buf.len() > self.max_reply {
                    return Err(ReplyError::TooLong(self.max_reply));
                }
                Ok(None)
            }
            // The same bound however the reply arrived.
            Some((end, _)) if end > self.max_reply => Err(ReplyError::TooLong(self.max_reply)),
            Some((end, kind)) => {
                self.resume_at = 0;
                Ok(Some(Reply {
                    kind,
                    frame: buf.split_to(end).freeze(),
                }))
            }
        }
    }

    /// Where the data block announced by `line` (its length is word `len_word`) ends, when it
    /// has arrived; it starts at `start`.
    fn data_block_end(
        &mut self,
        buf: &[u8],
        line: &[u8],
        len_word: usize,
        start: usize,
    ) -> Result<Option<usize>, ReplyError> {
        let len = word(line, len_word)
            .and_then(parse_len)
            .ok_or_else(|| ReplyError::BadValueLine(shown(line)))?;
        let end = start + len + 2;
        if end > self.max_reply {
            return Err(ReplyError::TooLong(self.max_reply));
        }
        if buf.len() < end {
            self.want = end;
            return Ok(None);
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(ReplyError::BadDataBlock);
        }
        Ok(Some(end))
    }

    /// Where the reply at the front of `buf` ends, once it is complete.
    fn reply_end(&mut self, buf: &[u8]) -> Result<Option<(usize, ReplyKind)>, ReplyError> {
        let mut at = self.resume_at;
        loop {
            let Some(newline) = buf[at..].iter().position(|&b| b == b'\n').map(|i| i + at) else {
                if buf.len() - at > MAX_REPLY_LINE {
                    return Err(ReplyError::UnknownLine(shown(&buf[at..])));
                }
                return Ok(None);
            };
            if newline - at > MAX_REPLY_LINE {
                return Err(ReplyError::UnknownLine(shown(&buf[at..])));
            }
            let line = &buf[at..newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let after = newline + 1;
            let in_values = at > 0;
            if line.starts_with(b"VALUE ") {
                // VALUE <key> <flags> <bytes> [<cas>]
                let Some(end) = self.data_block_end(buf, line, 3, after)? else {
                    self.resume_at = at;
                    return Ok(None);
                };
                at = end;
                continue;
            }
            if in_values {
                // After VALUE blocks: END, or an error line that cuts the list short.
                return match line_kind(line) {
                    Some(ReplyKind::Values) => Ok(Some((after, ReplyKind::Values))),
                    Some(ReplyKind::Error) => Ok(Some((after, ReplyKind::Error))),
                    _ => Err(ReplyError::UnknownLine(shown(line))),
                };
            }
            if line.starts_with(b"VA ") {
                return Ok(self
                    .data_block_end(buf, line, 1, after)?
                    .map(|end| (end, ReplyKind::Meta)));
            }
            return match line_kind(line) {
                Some(kind) => Ok(Some((after, kind))),
                None => Err(ReplyError::UnknownLine(shown(line))),
            };
        }
    }
}

/// One `VALUE` block of a retrieval reply: its key and its whole bytes (line and data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueBlock<'a> {
    pub key: &'a [u8],
    pub block: &'a [u8],
}

/// The `VALUE` blocks of a complete retrieval reply, in order; `None` unless it is a well
/// formed list ending with `END`.
pub fn value_blocks(reply: &[u8]) -> Option<Vec<ValueBlock<'_>>> {
    let mut blocks = Vec::new();
    let mut at = 0;
    loop {
        let newline = reply[at..].iter().position(|&b| b == b'\n')? + at;
        let line = &reply[at..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"END" {
            return (newline + 1 == reply.len()).then_some(blocks);
        }
        if !line.starts_with(b"VALUE ") {
            return None;
        }
        let key = word(line, 1)?;
        let len = parse_len(word(line, 3)?)?;
        let end = newline + 1 + len + 2;
        if end > reply.len() {
            return None;
        }
        blocks.push(ValueBlock {
            key,
            block: &reply[at..end],
        });
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> (Vec<Reply>, Option<ReplyError>, usize) {
        let mut buf = BytesMut::from(input);
        let mut decoder = ReplyDecoder::default();
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None, buf.len()),
                Err(e) => return (out, Some(e), buf.len()),
            }
        }
    }

    #[test]
    fn every_reply_shape_is_one_frame() {
        let input = b"VALUE a 0 2\r\nhi\r\nVALUE b 5 3 99\r\nyou\r\nEND\r\nEND\r\nSTORED\r\n\
NOT_FOUND\r\n42\r\nVERSION 1.6.18\r\nERROR\r\nCLIENT_ERROR bad data chunk\r\nHD\r\n\
VA 2 s2 kfoo\r\nhi\r\nEN\r\nMN\r\nME k exp=-1\r\n";
        let (replies, err, rest) = decode_all(input);
        assert_eq!((err, rest), (None, 0));
        let frames: Vec<&[u8]> = replies.iter().map(|r| &r.frame[..]).collect();
        assert_eq!(
            frames,
            vec![
                &b"VALUE a 0 2\r\nhi\r\nVALUE b 5 3 99\r\nyou\r\nEND\r\n"[..],
                b"END\r\n",
                b"STORED\r\n",
                b"NOT_FOUND\r\n",
                b"42\r\n",
                b"VERSION 1.6.18\r\n",
                b"ERROR\r\n",
                b"CLIENT_ERROR bad data chunk\r\n",
                b"HD\r\n",
                b"VA 2 s2 kfoo\r\nhi\r\n",
                b"EN\r\n",
                b"MN\r\n",
                b"ME k exp=-1\r\n",
            ]
        );
        assert_eq!(replies[11].kind, ReplyKind::MetaNoop);
        assert_eq!(replies[6].kind, ReplyKind::Error);
    }

    #[test]
    fn a_value_list_resumes_across_partial_reads() {
        let whole = b"VALUE a 0 4\r\n\r\n\r\n\r\nVALUE b 0 1\r\nx\r\nEND\r\n";
        let mut decoder = ReplyDecoder::default();
        let mut buf = BytesMut::new();
        for (i, &b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let got = decoder.decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert_eq!(got, None, "at byte {i}");
            } else {
                assert_eq!(&got.unwrap().frame[..], &whole[..]);
            }
        }
    }

    #[test]
    fn bytes_wanted_is_where_the_data_block_in_progress_ends() {
        let cases: &[(&[u8], usize)] = &[
            (b"VALUE k 0 10\r\nab", 14 + 10 + 2),
            (b"VALUE a 0 2\r\nhi\r\nVALUE b 0 10\r\nxy", 17 + 14 + 10 + 2),
            (b"VA 10 s\r\nab", 9 + 10 + 2),
            // The length is not known yet.
            (b"VALUE k 0 10", 0),
            (b"VALUE a 0 2\r\nhi\r\nEN", 0),
            (b"STORED", 0),
        ];
        for &(input, wanted) in cases {
            let mut decoder = ReplyDecoder::default();
            assert_eq!(decoder.decode(&mut BytesMut::from(input)), Ok(None));
            assert_eq!(decoder.bytes_wanted(), wanted, "{input:?}");
        }
        let mut decoder = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"VALUE k 0 3\r\nab"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.bytes_wanted(), 13 + 3 + 2);
        buf.extend_from_slice(b"c\r\nEND\r\n");
        assert!(decoder.decode(&mut buf).unwrap().is_some());
        assert_eq!(decoder.bytes_wanted(), 0);
        // Never beyond the bound: a larger block is an error.
        let mut decoder = ReplyDecoder::new(100);
        assert!(decoder
            .decode(&mut BytesMut::from(&b"VALUE k 0 200\r\n"[..]))
            .is_err());
        assert_eq!(decoder.bytes_wanted(), 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_all(b"HELLO\r\n").1.is_some());
        assert!(decode_all(b"  \n").1.is_some());
        assert!(decode_all(b"VALUE a 0 x\r\n").1.is_some());
        assert!(decode_all(b"VALUE a 0 1\r\nxyz\r\n").1.is_some());
        assert!(decode_all(b"VALUE a 0 1\r\nx\r\nSTORED\r\n").1.is_some());
    }

    #[test]
    fn value_blocks_are_listed_with_their_keys() {
        let reply = b"VALUE a 0 2\r\nhi\r\nVALUE b 0 0 7\r\n\r\nEND\r\n";
        let blocks = value_blocks(reply).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].key, b"a");
        assert_eq!(blocks[0].block, b"VALUE a 0 2\r\nhi\r\n");
        assert_eq!(blocks[1].block, b"VALUE b 0 0 7\r\n\r\n");
        assert_eq!(value_blocks(b"END\r\n"), Some(vec![]));
        assert_eq!(value_blocks(b"SERVER_ERROR x\r\n"), None);
    }
}
