//! Feeds arbitrary bytes to the RESP reply decoder in arbitrary chunkings.
//!
//! The first 8 bytes of the input choose the chunking and the size bound; the rest is the
//! stream. Checks: no panic; a size the decoder asks room for is ahead of the buffer and within
//! the bound; the replies' frames re-concatenate to exactly the consumed prefix
//! of the stream; each kind matches its frame's first byte; and the chunked run gives the same
//! replies and the same final outcome as decoding the whole stream in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::reply::{ReplyDecoder, ReplyKind};
use walnut_fuzz::{chunked_replies, reply_input, whole_replies};

fuzz_target!(|data: &[u8]| {
    let Some((chunker, max, input)) = reply_input(data) else {
        return;
    };
    let (expected, expected_end, _) = whole_replies(ReplyDecoder::new(max), input);
    let (got, end) = chunked_replies(ReplyDecoder::new(max), max, chunker, input, |r| {
        assert_eq!(ReplyKind::from_byte(r.frame[0]), Some(r.kind));
    });
    assert_eq!(got, expected);
    assert_eq!(end, expected_end);
});
