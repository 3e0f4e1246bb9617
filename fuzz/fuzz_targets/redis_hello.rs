//! Feeds arbitrary arguments to `HELLO` parsing, and arbitrary values to walnut's reply
//! encoders, decoding what they write.
//!
//! The input's first byte is the argument separator, the rest the arguments of `HELLO`
//! (after its name). Checks: no panic; a parse that succeeds reads every argument unless it
//! stops at a bad option, and its options hold only the request's own bytes; every error
//! reply is one RESP error frame; the `HELLO` map, for the protocol asked, with an argument as
//! the version string and the mode, is one frame of the right kind in that protocol, exactly as
//! long as written. Then the same bytes drive the `Encoder` (each byte picks a value: null,
//! boolean, double, big number, verbatim, map, set, push, …, every aggregate filled with the
//! values that follow), in RESP3 and RESP2: each output is exactly one reply that the decoder of
//! its protocol reads whole, and the RESP2 one holds no RESP3 type.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::encode::Encoder;
use walnut::proto::redis::hello::{self, HelloOption, HelloReply};
use walnut::proto::redis::reply::{Protocol, Reply, ReplyDecoder, ReplyKind};

/// `bytes` decoded in `protocol`: exactly one reply, consuming all of it.
fn one_reply(protocol: Protocol, bytes: &[u8]) -> Reply {
    let mut buf = BytesMut::from(bytes);
    let reply = ReplyDecoder::with_protocol(1 << 30, protocol)
        .decode(&mut buf)
        .expect("a well-formed reply")
        .expect("a complete reply");
    assert!(buf.is_empty(), "bytes after the reply");
    assert_eq!(reply.frame.len(), bytes.len());
    reply
}

/// Writes one value chosen by `ops` (and its elements, from the next bytes) into `e`.
fn value(e: &mut Encoder, ops: &mut std::slice::Iter<'_, u8>, depth: usize) {
    let Some(&op) = ops.next() else {
        e.null();
        return;
    };
    let arg = op >> 4;
    let text = ops.as_slice().get(..usize::from(arg)).unwrap_or(&[]);
    match op % 16 {
        0 => {
            e.null();
        }
        1 => {
            e.null_array();
        }
        2 => {
            e.boolean(arg & 1 == 1);
        }
        3 => {
            // Any bit pattern: NaNs, infinities, subnormals.
            let mut bits = [0u8; 8];
            for (b, s) in bits.iter_mut().zip(ops.as_slice()) {
                *b = *s;
            }
            e.double(f64::from_bits(u64::from_le_bytes(bits)));
        }
        4 => {
            e.big_number(b"-123456789012345678901234567890");
        }
        5 => {
            e.verbatim(b"txt", text);
        }
        6 => {
            e.bulk(text);
        }
        7 => {
            e.status(text);
        }
        8 => {
            e.error(text);
        }
        9 => {
            e.integer(i64::from(op) - 128);
        }
        n if depth < 8 => {
            let len = usize::from(arg % 4);
            let values = match n {
                10 => {
                    e.map(len);
                    2 * len
                }
                11 => {
                    e.set(len);
                    len
                }
                12 => {
                    e.push(len);
                    len
                }
                _ => {
                    e.array(len);
                    len
                }
            };
            for _ in 0..values {
                value(e, ops, depth + 1);
            }
        }
        _ => {
            e.integer(0);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sep, rest)) = data.split_first() else {
        return;
    };
    let args: Vec<&[u8]> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(|&b| b == sep).collect()
    };
    let within = |s: &[u8]| {
        let range = rest.as_ptr_range();
        s.is_empty() || (range.start <= s.as_ptr() && s.as_ptr_range().end <= range.end)
    };
    match hello::parse(&args) {
        Err(e) => assert_eq!(
            one_reply(Protocol::Resp3, &e.reply()).kind,
            ReplyKind::Error
        ),
        Ok(parsed) => {
            let read: usize = usize::from(parsed.protover.is_some())
                + parsed
                    .options
                    .iter()
                    .map(|o| match o {
                        HelloOption::Auth { username, password } => {
                            assert!(within(username) && within(password));
                            3
                        }
                        HelloOption::SetName(name) => {
                            assert!(within(name));
                            assert!(name.iter().all(|b| (b'!'..=b'~').contains(b)));
                            2
                        }
                    })
                    .sum::<usize>();
            match parsed.error {
                Some(e) => {
                    assert!(read < args.len());
                    assert_eq!(
                        one_reply(Protocol::Resp2, &e.reply()).kind,
                        ReplyKind::Error
                    );
                }
                None => assert_eq!(read, args.len()),
            }
            let proto = parsed.protover.unwrap_or_default();
            let word = String::from_utf8_lossy(args.first().copied().unwrap_or_default());
            let reply = HelloReply::redis(&word, proto, data.len() as u64, &word).encode();
            let kind = one_reply(proto, &reply).kind;
            let expected = match proto {
                Protocol::Resp2 => ReplyKind::Array,
                Protocol::Resp3 => ReplyKind::Map,
            };
            assert_eq!(kind, expected);
        }
    }

    let mut three = Encoder::new(Protocol::Resp3);
    let mut two = Encoder::new(Protocol::Resp2);
    value(&mut three, &mut rest.iter(), 0);
    value(&mut two, &mut rest.iter(), 0);
    one_reply(Protocol::Resp3, three.as_bytes());
    one_reply(Protocol::Resp2, two.as_bytes());
});
