//! Feeds arbitrary part replies to the split-request merge.
//!
//! The first byte picks the split kind and the key layout; the rest is cut into one reply per
//! part. Checks: no panic, and the merged reply is never empty — it is either a well-formed
//! merge or one error.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::dispatch::SplitKind;
use walnut::proto::redis::request::{Limits, RequestDecoder};
use walnut::proto::redis::split;

const KINDS: [SplitKind; 6] = [
    SplitKind::Mget,
    SplitKind::Del,
    SplitKind::Unlink,
    SplitKind::Touch,
    SplitKind::Exists,
    SplitKind::Mset,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let request: &[u8] = if kind == SplitKind::Mset {
        b"*7\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\nc\r\n$1\r\n3\r\n"
    } else {
        b"*5\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\na\r\n"
    };
    let mut buf = BytesMut::from(request);
    let request = RequestDecoder::new(Limits::default())
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    let servers = 1 + usize::from(selector >> 4) % 3;
    let mut plan = split::plan(kind, &request, |key| {
        Ok::<_, ()>(usize::from(key[0]) % servers)
    })
    .unwrap();
    let parts = plan.merge.parts();
    let chunk = rest.len() / parts.max(1) + 1;
    for (part, bytes) in rest
        .chunks(chunk)
        .chain(std::iter::repeat(&[][..]))
        .take(parts)
        .enumerate()
    {
        let reply = if bytes.first() == Some(&0xff) {
            Err(String::from_utf8_lossy(&bytes[1..]).into_owned())
        } else {
            Ok(Bytes::copy_from_slice(bytes))
        };
        plan.merge.accept(part, reply);
    }
    assert!(!plan.merge.finish().is_empty());
});
