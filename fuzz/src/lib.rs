//! Helpers shared by the fuzz targets.

/// Cuts a stream into pseudo-random pieces (xorshift64*), so a decoder is fed the same bytes
/// in another chunking than in one piece.
pub struct Chunker(pub u64);

impl Chunker {
    /// The length of the next piece, 1..=`left` (and at most 64).
    pub fn next(&mut self, left: usize) -> usize {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        1 + (r % left as u64) as usize % (1 + (r >> 32) as usize % 64)
    }
}

use bytes::BytesMut;
use walnut::proto::redis::reply::{ProtocolError, Reply, ReplyDecoder};

/// The replies a Redis reply decoder reads from `input` in one piece, how it ended, and the
/// bytes left undecoded.
pub fn whole_replies(
    mut d: ReplyDecoder,
    input: &[u8],
) -> (Vec<Reply>, Result<(), ProtocolError>, usize) {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, Ok(()), buf.len()),
            Err(e) => return (out, Err(e), buf.len()),
        }
    }
}

/// Feeds `input` to `d` (bounded by `max`) in the pieces `chunker` cuts, and checks the
/// decoder's side of the contract: a reply is within the bound and is exactly the next bytes
/// of the stream (never past what was fed); a size asked room for is ahead of the buffer and
/// within the bound; an error leaves nothing in progress. `check` sees every reply. Returns
/// the replies and how the run ended.
pub fn chunked_replies(
    mut d: ReplyDecoder,
    max: usize,
    mut chunker: Chunker,
    input: &[u8],
    mut check: impl FnMut(&Reply),
) -> (Vec<Reply>, Result<(), ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut got = Vec::new();
    while fed < input.len() {
        let n = chunker.next(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => {
                    let len = r.frame.len();
                    assert!(len <= max);
                    assert!(consumed + len <= fed, "a reply past the bytes fed");
                    assert_eq!(&input[consumed..consumed + len], &r.frame[..]);
                    check(&r);
                    consumed += len;
                    got.push(r);
                }
                Ok(None) => {
                    // A declared size is always ahead of what is buffered, within the bound.
                    let wanted = d.bytes_wanted();
                    assert!(wanted == 0 || (wanted > buf.len() && wanted <= max));
                    break;
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    assert!(!d.in_progress());
                    return (got, Err(e));
                }
            }
        }
        assert_eq!(consumed, fed - buf.len());
    }
    (got, Ok(()))
}

/// A reply target's input: the seed of its chunking and bound (its first 8 bytes: one time in
/// 16 a bound below 256 bytes, else 1 GiB), and the stream.
pub fn reply_input(data: &[u8]) -> Option<(Chunker, usize, &[u8])> {
    if data.len() < 8 {
        return None;
    }
    let (head, input) = data.split_at(8);
    let seed = u64::from_le_bytes(head.try_into().ok()?);
    let max = if seed & 0xf == 0 {
        (seed >> 8) as usize % 256
    } else {
        1 << 30
    };
    Some((Chunker(seed), max, input))
}

/// The request `args` as walnut's decoder reads it, or `None` if it refuses it (limits).
pub fn request_of<A: AsRef<[u8]>>(args: &[A]) -> Option<walnut::proto::redis::request::Request> {
    use walnut::proto::redis::request::{Limits, RequestDecoder};
    let mut frame = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        frame.extend_from_slice(arg);
        frame.extend_from_slice(b"\r\n");
    }
    let mut buf = bytes::BytesMut::from(&frame[..]);
    RequestDecoder::new(Limits::default())
        .decode(&mut buf)
        .ok()
        .flatten()
}
