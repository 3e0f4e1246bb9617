//! Deterministic fuzz smoke tests for the memcached decoders, run by plain `cargo test`:
//! mutated streams of valid requests and replies, fed whole and in random pieces. The real
//! fuzz targets are in `fuzz/` (`memcache_request`, `memcache_reply`, `memcache_merge`).

use bytes::BytesMut;

use super::reply::{Reply, ReplyDecoder};
use super::request::{Decoded, RequestDecoder};

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const REQUESTS: &[&[u8]] = &[
    b"get a\r\n",
    b"get a bb ccc\r\n",
    b"gets x y\r\n",
    b"gat 10 a b\r\n",
    b"set k 0 0 3\r\nabc\r\n",
    b"set k 1 2 3 noreply\r\n\r\n\0\r\n",
    b"cas k 0 0 1 77\r\nx\r\n",
    b"append k 0 0 2\r\nhi\r\n",
    b"delete k\r\n",
    b"delete k 0 noreply\r\n",
    b"incr n 5\r\n",
    b"touch k 10\r\n",
    b"version\r\n",
    b"mg k v q O1\r\n",
    b"ms k 2 T9\r\nhi\r\n",
    b"md k q\r\n",
    b"ma n\r\n",
    b"mn\r\n",
    b"quit\r\n",
];

const REPLIES: &[&[u8]] = &[
    b"VALUE a 0 2\r\nhi\r\nVALUE b 1 0 9\r\n\r\nEND\r\n",
    b"END\r\n",
    b"STORED\r\n",
    b"NOT_FOUND\r\n",
    b"12\r\n",
    b"VERSION 1.6.18\r\n",
    b"SERVER_ERROR out of memory\r\n",
    b"VA 3 s3\r\nabc\r\n",
    b"HD\r\n",
    b"EN\r\n",
    b"MN\r\n",
];

/// A stream of valid frames with a few random byte edits.
fn stream(rng: &mut Rng, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        out.extend_from_slice(frames[rng.below(frames.len())]);
    }
    for _ in 0..rng.below(4) {
        let at = rng.below(out.len());
        match rng.below(3) {
            0 => out[at] = rng.next() as u8,
            1 => {
                out.remove(at);
            }
            _ => out.insert(at, b"\r\n 0-9a"[rng.below(7)]),
        }
    }
    out
}

fn decode_requests(input: &[u8], mut piece: impl FnMut(usize) -> usize) -> Vec<String> {
    let mut decoder = RequestDecoder::default();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut out = Vec::new();
    while fed < input.len() {
        let n = piece(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Request(r))) => {
                    let end = fed - buf.len();
                    assert_eq!(&input[end - r.frame().len()..end], &r.frame()[..]);
                    out.push(format!("{:?}", r.frame()));
                }
                Ok(Some(Decoded::Answer(a))) => out.push(format!("answer {a:?}")),
                Ok(None) => break,
                Err(fatal) => {
                    out.push(format!("fatal {fatal:?}"));
                    return out;
                }
            }
        }
    }
    out
}

fn decode_replies(input: &[u8], mut piece: impl FnMut(usize) -> usize) -> (Vec<Reply>, bool) {
    let mut decoder = ReplyDecoder::default();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut out: Vec<Reply> = Vec::new();
    while fed < input.len() {
        let n = piece(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {
                    let wanted = decoder.bytes_wanted();
                    assert!(
                        wanted == 0 || wanted > buf.len(),
                        "room asked behind the buffer"
                    );
                    break;
                }
                Err(_) => return (out, true),
            }
        }
    }
    let consumed: Vec<u8> = out.iter().flat_map(|r| r.frame.to_vec()).collect();
    assert_eq!(&input[..consumed.len()], &consumed[..]);
    (out, false)
}

#[test]
fn request_decoding_does_not_depend_on_how_the_stream_is_cut() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..10_000 {
        let input = stream(&mut rng, REQUESTS);
        let whole = decode_requests(&input, |left| left);
        let seed = rng.next();
        let mut cut = Rng(seed | 1);
        let pieces = decode_requests(&input, |left| 1 + cut.below(left.min(9)));
        assert_eq!(whole, pieces, "{}", input.escape_ascii());
    }
}

#[test]
fn reply_decoding_does_not_depend_on_how_the_stream_is_cut() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..10_000 {
        let input = stream(&mut rng, REPLIES);
        let whole = decode_replies(&input, |left| left);
        let seed = rng.next();
        let mut cut = Rng(seed | 1);
        let pieces = decode_replies(&input, |left| 1 + cut.below(left.min(9)));
        assert_eq!(whole, pieces, "{}", input.escape_ascii());
    }
}
