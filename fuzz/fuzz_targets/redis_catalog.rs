//! Feeds arbitrary bytes, cut into the four replies walnut reads from a server (`COMMAND`,
//! `COMMAND DOCS`, and both again in RESP3), to the catalog (`proto::redis::catalog`), then
//! asks it the `COMMAND` subcommands clients send.
//!
//! Checks: no panic; `COMMAND COUNT` is an integer; every answer is one whole RESP3 reply.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use walnut::proto::redis::catalog::{Catalog, Replies};
use walnut::proto::redis::reply::{Protocol, ReplyDecoder};
use walnut::proto::redis::request::{Limits, RequestDecoder};

const QUESTIONS: &[&[u8]] = &[
    b"*1\r\n$7\r\nCOMMAND\r\n",
    b"*2\r\n$7\r\nCOMMAND\r\n$5\r\nCOUNT\r\n",
    b"*4\r\n$7\r\nCOMMAND\r\n$4\r\nINFO\r\n$3\r\nget\r\n$1\r\nx\r\n",
    b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n",
    b"*3\r\n$7\r\nCOMMAND\r\n$4\r\nDOCS\r\n$3\r\nget\r\n",
    b"*2\r\n$7\r\nCOMMAND\r\n$4\r\nLIST\r\n",
    b"*5\r\n$7\r\nCOMMAND\r\n$4\r\nLIST\r\n$8\r\nFILTERBY\r\n$6\r\nMODULE\r\n$1\r\nm\r\n",
    b"*5\r\n$7\r\nCOMMAND\r\n$4\r\nLIST\r\n$8\r\nFILTERBY\r\n$7\r\nPATTERN\r\n$2\r\n*a\r\n",
];

fuzz_target!(|data: &[u8]| {
    // Four parts, split at the first three 0xff bytes.
    let mut parts = data.splitn(4, |&b| b == 0xff);
    let command = parts.next().unwrap_or_default();
    let (docs, command3, docs3) = (parts.next(), parts.next(), parts.next());
    let Ok(catalog) = Catalog::new(Replies {
        command,
        docs,
        command3,
        docs3,
    }) else {
        return;
    };
    for question in QUESTIONS {
        let mut buf = BytesMut::from(*question);
        let request = RequestDecoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        for resp3 in [false, true] {
            let Some(answer) = catalog.answer(&request, resp3) else {
                continue;
            };
            let mut out = BytesMut::from(&answer[..]);
            let mut decoder = ReplyDecoder::with_protocol(usize::MAX, Protocol::Resp3);
            assert!(
                matches!(decoder.decode(&mut out), Ok(Some(_))),
                "{answer:?}"
            );
            assert!(out.is_empty(), "one whole reply");
        }
    }
    assert!(catalog.listed_count() <= catalog.table.len());
});
