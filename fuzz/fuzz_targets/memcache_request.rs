//! Feeds arbitrary bytes to the memcached request decoder in arbitrary chunkings.
//!
//! The first 8 bytes of the input choose the chunking; the rest is the stream. Checks: no
//! panic; each request's frame is exactly the bytes consumed for it; keys are valid and lie
//! inside the frame; a request without `noreply` is unchanged by stripping it; the buffer the
//! decoder is handed never has to hold more than the stream itself (no allocation for a
//! declared length); and the chunked run gives the same results as the one-piece run.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::memcache::request::{Decoded, Fatal, RequestDecoder, MAX_KEY_LEN};
use walnut_fuzz::Chunker;

fn whole(input: &[u8]) -> (Vec<Decoded>, Option<Fatal>) {
    let mut d = RequestDecoder::default();
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
    let mut chunker = Chunker(seed);
    let (expected, expected_end) = whole(input);

    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut got = Vec::new();
    let mut end = None;
    'feed: while fed < input.len() {
        let n = chunker.next(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(decoded)) => {
                    if let Decoded::Request(r) = &decoded {
                        let after = fed - buf.len();
                        let start = after - r.frame().len();
                        assert_eq!(&input[start..after], &r.frame()[..]);
                        if r.command().is_retrieval() {
                            for key in r.keys() {
                                assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
                            }
                        }
                        if !r.noreply() {
                            assert_eq!(r.frame_without_noreply(), r.frame());
                        } else {
                            assert!(r.frame_without_noreply().len() < r.frame().len());
                        }
                    }
                    got.push(decoded);
                }
                Ok(None) => break,
                Err(e) => {
                    end = Some(e);
                    break 'feed;
                }
            }
            assert!(buf.capacity() <= input.len().max(1) + (2 << 20));
        }
    }
    assert_eq!(got, expected);
    assert_eq!(end, expected_end);
});
