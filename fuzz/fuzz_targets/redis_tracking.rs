//! Feeds arbitrary bytes to the invalidation reader (`proto::redis::tracking`) as a backend's
//! push, and as `CLIENT TRACKING` arguments (the first byte is the separator) to the option
//! parser.
//!
//! Checks: no panic; an invalidation read, written back as a RESP3 push, reads the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::request::{Limits, RequestDecoder};
use walnut::proto::redis::tracking::{self, Current};

fuzz_target!(|data: &[u8]| {
    if let Some(invalidation) = tracking::read_invalidation(data) {
        let push = tracking::invalidation_message(&invalidation, true);
        assert_eq!(tracking::read_invalidation(&push), Some(invalidation));
    }
    let Some((&separator, rest)) = data.split_first() else {
        return;
    };
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING"];
    args.extend(rest.split(|&b| b == separator));
    let mut frame = format!("*{}\r\n", args.len()).into_bytes();
    for arg in &args {
        frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        frame.extend_from_slice(arg);
        frame.extend_from_slice(b"\r\n");
    }
    let mut buf = BytesMut::from(&frame[..]);
    if let Ok(Some(request)) = RequestDecoder::new(Limits::default()).decode(&mut buf) {
        let _ = tracking::parse(&request, Current::default(), |id| id % 2 == 0);
    }
});
