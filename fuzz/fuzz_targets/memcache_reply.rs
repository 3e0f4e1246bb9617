//! Feeds arbitrary bytes to the memcached reply decoder in arbitrary chunkings.
//!
//! The first 8 bytes choose the chunking and, one time in 16, a small reply bound; the rest
//! is the stream. Checks: no panic; a size the decoder asks room for is ahead of the buffer
//! and within the bound; the frames re-concatenate to the consumed prefix; the
//! bound holds; a retrieval reply that ends with `END` lists its blocks; and the chunked run
//! gives the same frames and the same outcome as the one-piece run.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::memcache::reply::{value_blocks, Reply, ReplyDecoder, ReplyError, ReplyKind};
use walnut_fuzz::Chunker;

fn whole(max: usize, input: &[u8]) -> (Vec<Reply>, Option<ReplyError>) {
    let mut d = ReplyDecoder::new(max);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (head, input) = data.split_at(8);
    let seed = u64::from_le_bytes(head.try_into().unwrap());
    let max = if seed & 0xf == 0 {
        (seed >> 8) as usize % 256
    } else {
        1 << 30
    };
    let (expected, expected_end) = whole(max, input);
    let mut chunker = Chunker(seed);
    let mut d = ReplyDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut got: Vec<Reply> = Vec::new();
    let mut end = None;
    'feed: while fed < input.len() {
        let n = chunker.next(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => {
                    assert!(r.frame.len() <= max.max(64 * 1024 + 1));
                    if r.kind == ReplyKind::Values && r.frame.ends_with(b"END\r\n") {
                        assert!(value_blocks(&r.frame).is_some());
                    }
                    got.push(r);
                }
                Ok(None) => {
                    // A declared size is always ahead of what is buffered, within the bound.
                    let wanted = d.bytes_wanted();
                    assert!(wanted == 0 || (wanted > buf.len() && wanted <= max));
                    break;
                }
                Err(e) => {
                    end = Some(e);
                    break 'feed;
                }
            }
        }
    }
    let consumed: Vec<u8> = got.iter().flat_map(|r| r.frame.to_vec()).collect();
    assert_eq!(&input[..consumed.len()], &consumed[..]);
    assert_eq!(got, expected);
    assert_eq!(end.is_some(), expected_end.is_some());
});
