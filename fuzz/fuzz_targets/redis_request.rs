//! Feeds arbitrary bytes to the RESP request decoder in arbitrary chunkings.
//!
//! The first 8 bytes of the input choose the chunking and the limits; the rest is the stream.
//! Checks: no panic; each request's frame is exactly the bytes consumed for it (after any
//! skipped `*0`/`*-1`); `arg(i)` and `args()` agree; and the chunked run gives the same
//! requests and the same final outcome as decoding the whole stream in one piece.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::request::{Limits, ProtocolError, Request, RequestDecoder};
use walnut_fuzz::Chunker;

fn is_skips(mut s: &[u8]) -> bool {
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix(b"*0\r\n") {
            s = rest;
        } else if let Some(rest) = s.strip_prefix(b"*-1\r\n") {
            s = rest;
        } else {
            return false;
        }
    }
    true
}

fn whole(limits: Limits, input: &[u8]) -> (Vec<Request>, Result<(), ProtocolError>) {
    let mut d = RequestDecoder::new(limits);
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
    let limits = if seed & 0xf == 0 {
        Limits {
            max_request_bytes: (seed >> 8) as usize % 256,
            max_args: (seed >> 16) as usize % 8,
        }
    } else {
        Limits::default()
    };
    let mut chunker = Chunker(seed);

    let (expected, expected_end) = whole(limits, input);

    let mut d = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut got = Vec::new();
    let mut end = Ok(());
    'feed: while fed < input.len() {
        let n = chunker.next(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            let before = fed - buf.len();
            match d.decode(&mut buf) {
                Ok(Some(r)) => {
                    let after = fed - buf.len();
                    let start = after - r.frame().len();
                    assert_eq!(&input[start..after], &r.frame()[..]);
                    assert!(is_skips(&input[before..start]));
                    assert!(r.argc() >= 1 && r.argc() <= limits.max_args);
                    assert!(r.frame().len() <= limits.max_request_bytes);
                    let mut count = 0;
                    for (i, a) in r.args().enumerate() {
                        assert_eq!(r.arg(i), Some(a));
                        count += 1;
                    }
                    assert_eq!(count, r.argc());
                    got.push(r);
                }
                Ok(None) => {
                    assert!(is_skips(&input[before..fed - buf.len()]));
                    break;
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    end = Err(e);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(end, expected_end);
});
