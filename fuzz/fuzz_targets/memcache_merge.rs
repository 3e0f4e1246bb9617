//! Feeds arbitrary part replies to the multi-get merge.
//!
//! The first byte picks the command and how keys spread over servers; the rest is cut into
//! one reply per part (a part starting with 0xff fails instead). Checks: no panic, and the
//! merged reply is either a well-formed `VALUE … END` list or one error line.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use walnut::proto::memcache::merge;
use walnut::proto::memcache::reply::value_blocks;
use walnut::proto::memcache::request::{Decoded, RequestDecoder};

const REQUESTS: [&[u8]; 3] = [
    b"get a b c a\r\n",
    b"gets a bb ccc\r\n",
    b"gat 10 a b c d\r\n",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(REQUESTS[usize::from(selector) % REQUESTS.len()]);
    let Ok(Some(Decoded::Request(request))) = RequestDecoder::default().decode(&mut buf) else {
        panic!("the fixed request decodes");
    };
    let servers = 1 + usize::from(selector >> 4) % 3;
    let mut plan = merge::plan(&request, |key| Ok::<_, ()>(usize::from(key[0]) % servers)).unwrap();
    let parts = plan.parts.len();
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
    assert!(plan.merge.is_complete());
    let merged = plan.merge.finish();
    assert!(!merged.is_empty());
    if merged.ends_with(b"END\r\n") && merged.starts_with(b"VALUE ") {
        assert!(value_blocks(&merged).is_some());
    }
});
