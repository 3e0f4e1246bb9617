//! Feeds arbitrary bytes to the RESP3 reply decoder (`ReplyDecoder::with_protocol(…, Resp3)`)
//! in arbitrary chunkings.
//!
//! The first 8 bytes of the input choose the chunking and the size bound; the rest is the
//! stream. Checks: no panic; a reply never reaches past the bytes fed, nor past the bound; a
//! size the decoder asks room for is ahead of the buffer and within the bound; the frames
//! re-concatenate to exactly the consumed prefix; each reply's attributes end inside it, and
//! its kind is the first byte after them; `error_word` answers for errors only; and the
//! chunked run gives the same replies and outcome as decoding the stream in one piece. A
//! stream the RESP2 decoder reads without error reads the same in RESP3.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::reply::{Protocol, ReplyDecoder, ReplyKind};
use walnut_fuzz::{chunked_replies, reply_input, whole_replies};

fuzz_target!(|data: &[u8]| {
    let Some((chunker, max, input)) = reply_input(data) else {
        return;
    };
    let resp3 = || ReplyDecoder::with_protocol(max, Protocol::Resp3);
    let expected = whole_replies(resp3(), input);
    let resp2 = whole_replies(ReplyDecoder::new(max), input);
    if resp2.1.is_ok() {
        assert_eq!(resp2, expected);
    }
    let (got, end) = chunked_replies(resp3(), max, chunker, input, |r| {
        let at = r.attribute_len();
        assert!(at < r.frame.len());
        assert_eq!(ReplyKind::from_resp3_byte(r.body()[0]), Some(r.kind));
        assert_eq!(r.error_word().is_some(), r.kind == ReplyKind::Error);
        let _ = r.is_null();
    });
    assert_eq!(got, expected.0);
    assert_eq!(end, expected.1);
});
