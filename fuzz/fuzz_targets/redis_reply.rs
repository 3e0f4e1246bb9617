//! Feeds arbitrary bytes to the RESP reply decoder in arbitrary chunkings.
//!
//! The first 8 bytes of the input choose the chunking and the size bound; the rest is the
//! stream. Checks: no panic; a size the decoder asks room for is ahead of the buffer and within
//! the bound; the replies' frames re-concatenate to exactly the consumed prefix
//! of the stream; each kind matches its frame's first byte; and the chunked run gives the same
//! replies and the same final outcome as decoding the whole stream in one piece.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::reply::{ProtocolError, Reply, ReplyDecoder, ReplyKind};
use walnut_fuzz::Chunker;

fn whole(max: usize, input: &[u8]) -> (Vec<Reply>, Result<(), ProtocolError>) {
    let mut d = ReplyDecoder::new(max);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
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
    let mut chunker = Chunker(seed);

    let (expected, expected_end) = whole(max, input);

    let mut d = ReplyDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut got = Vec::new();
    let mut end = Ok(());
    'feed: while fed < input.len() {
        let n = chunker.next(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => {
                    let len = r.frame.len();
                    assert!(len <= max);
                    assert_eq!(&input[consumed..consumed + len], &r.frame[..]);
                    assert_eq!(ReplyKind::from_byte(r.frame[0]), Some(r.kind));
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
                    end = Err(e);
                    break 'feed;
                }
            }
        }
        assert_eq!(consumed, fed - buf.len());
    }
    assert_eq!(got, expected);
    assert_eq!(end, expected_end);
});
