//! Multi-get splitting: a `get`/`gets`/`gat`/`gats` with keys on several servers becomes one
//! request per server, and their replies merge into one, with the `VALUE` blocks in request
//! order and a single `END`. No I/O.
//!
//! Each server answers its keys in the order it was asked, skipping the missing ones, so one
//! cursor per part walks its reply while the request's keys are walked in order.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::reply::value_blocks;
use super::request::Request;

const END: &[u8] = b"END\r\n";

/// One server's share of a multi-get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub server: usize,
    pub frame: Bytes,
}

/// The parts to send, and the merge that puts their replies back together.
#[derive(Debug)]
pub struct Plan {
    pub parts: Vec<Part>,
    pub merge: GetMerge,
}

/// Splits a retrieval request by server. `route` gives a key's server (or the error that
/// fails the whole request, e.g. a key that names no server).
pub fn plan<E>(
    request: &Request,
    mut route: impl FnMut(&[u8]) -> Result<usize, E>,
) -> Result<Plan, E> {
    let frame = request.frame().clone();
    let prefix = request.retrieval_prefix();
    let mut servers: Vec<usize> = Vec::new();
    let mut lines: Vec<BytesMut> = Vec::new();
    let mut keys: Vec<(Range<usize>, u32)> = Vec::new();
    for range in request.key_ranges() {
        let server = route(&frame[range.clone()])?;
        let part = match servers.iter().position(|&s| s == server) {
            Some(part) => part,
            None => {
                servers.push(server);
                let mut line = BytesMut::with_capacity(prefix.len() + 64);
                line.extend_from_slice(prefix);
                lines.push(line);
                servers.len() - 1
            }
        };
        lines[part].extend_from_slice(b" ");
        lines[part].extend_from_slice(&frame[range.clone()]);
        keys.push((range, part as u32));
    }
    let parts = servers
        .into_iter()
        .zip(lines)
        .map(|(server, mut line)| {
            line.extend_from_slice(b"\r\n");
            Part {
                server,
                frame: line.freeze(),
            }
        })
        .collect::<Vec<_>>();
    let merge = GetMerge {
        request: frame,
        keys,
        replies: vec![None; parts.len()],
        waiting: parts.len(),
    };
    Ok(Plan { parts, merge })
}

/// Collects the parts' replies of one multi-get.
#[derive(Debug)]
pub struct GetMerge {
    /// The client's request (the keys point into it).
    request: Bytes,
    /// Each key of the request, in order, with the part that asks for it.
    keys: Vec<(Range<usize>, u32)>,
    /// Each part's reply, or why it has none.
    replies: Vec<Option<Result<Bytes, String>>>,
    waiting: usize,
}

impl GetMerge {
    /// Records part `part`'s reply; true once every part has answered.
    pub fn accept(&mut self, part: usize, reply: Result<Bytes, String>) -> bool {
        if let Some(slot @ None) = self.replies.get_mut(part) {
            *slot = Some(reply);
            self.waiting -= 1;
        }
        self.is_complete()
    }

    pub fn is_complete(&self) -> bool {
        self.waiting == 0
    }

    /// The merged reply: the values of every part that answered, in request order, then
    /// `END`. A part that failed contributes nothing; when no part answered, the first
    /// failure is the reply (`SERVER_ERROR <reason>`, or the server's own error line).
    pub fn finish(&self) -> Bytes {
        let parsed: Vec<Option<Vec<super::reply::ValueBlock<'_>>>> = self
            .replies
            .iter()
            .map(|r| match r {
                Some(Ok(frame)) => value_blocks(frame),
                _ => None,
            })
            .collect();
        if parsed.iter().all(Option::is_none) {
            return self.first_failure();
        }
        let size: usize = parsed
            .iter()
            .flatten()
            .flatten()
            .map(|b| b.block.len())
            .sum();
        let mut out = BytesMut::with_capacity(size + END.len());
        let mut cursors = vec![0usize; parsed.len()];
        for (range, part) in &self.keys {
            let part = *part as usize;
            let Some(Some(blocks)) = parsed.get(part) else {
                continue;
            };
            let key = &self.request[range.clone()];
            if let Some(block) = blocks.get(cursors[part]).filter(|b| b.key == key) {
                out.extend_from_slice(block.block);
                cursors[part] += 1;
            }
        }
        out.extend_from_slice(END);
        out.freeze()
    }

    /// Whether [`GetMerge::finish`] answers with walnut's own `SERVER_ERROR`: no part
    /// answered, and the first failure was on the proxy side.
    pub fn is_proxy_error(&self) -> bool {
        let answered = self
            .replies
            .iter()
            .any(|r| matches!(r, Some(Ok(frame)) if value_blocks(frame).is_some()));
        !answered && matches!(self.first_failure_part(), Some(Err(_)) | None)
    }

    /// The first part that failed, in part order: on the proxy side, or with an error line.
    fn first_failure_part(&self) -> Option<&Result<Bytes, String>> {
        self.replies.iter().flatten().find(|reply| match reply {
            Err(_) => true,
            Ok(frame) => frame.ends_with(b"\n") && !frame.starts_with(b"VALUE "),
        })
    }

    fn first_failure(&self) -> Bytes {
        match self.first_failure_part() {
            Some(Err(reason)) => Bytes::from(format!("SERVER_ERROR {reason}\r\n")),
            Some(Ok(frame)) => frame.clone(),
            None => Bytes::from_static(b"SERVER_ERROR Invalid argument\r\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::memcache::request::{Decoded, RequestDecoder};

    fn request(line: &[u8]) -> Request {
        let mut buf = BytesMut::from(line);
        match RequestDecoder::default().decode(&mut buf) {
            Ok(Some(Decoded::Request(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Keys starting with `a` go to server 0, the others to server 1.
    fn by_letter(key: &[u8]) -> Result<usize, String> {
        Ok(usize::from(key[0] != b'a'))
    }

    #[test]
    fn parts_keep_each_servers_keys_in_order() {
        let plan = plan(&request(b"gets a1 b1 a2 b2\r\n"), by_letter).unwrap();
        let frames: Vec<(usize, &[u8])> = plan
            .parts
            .iter()
            .map(|p| (p.server, &p.frame[..]))
            .collect();
        assert_eq!(
            frames,
            vec![(0, &b"gets a1 a2\r\n"[..]), (1, b"gets b1 b2\r\n")]
        );
        let plan = plan_gat();
        assert_eq!(&plan.parts[0].frame[..], b"gat 30 a1\r\n");
    }

    fn plan_gat() -> Plan {
        plan(&request(b"gat 30 a1 b1\r\n"), by_letter).unwrap()
    }

    #[test]
    fn values_come_back_in_request_order_whatever_is_missing() {
        let mut plan = plan(&request(b"get b1 a1 b2 a2 a3\r\n"), by_letter).unwrap();
        // Part 0 asks server 1 (the first key is b1), part 1 server 0. a1 and a3 exist on
        // server 0; b2 on server 1.
        assert_eq!(plan.parts[0].server, 1);
        plan.merge
            .accept(0, Ok(Bytes::from_static(b"VALUE b2 0 1\r\nB\r\nEND\r\n")));
        assert!(plan.merge.accept(
            1,
            Ok(Bytes::from_static(
                b"VALUE a1 0 1\r\n1\r\nVALUE a3 0 1\r\n3\r\nEND\r\n"
            )),
        ));
        assert_eq!(
            &plan.merge.finish()[..],
            b"VALUE a1 0 1\r\n1\r\nVALUE b2 0 1\r\nB\r\nVALUE a3 0 1\r\n3\r\nEND\r\n"
        );
    }

    #[test]
    fn duplicate_keys_get_their_value_each_time() {
        let mut plan = plan(&request(b"get a1 b1 a1\r\n"), by_letter).unwrap();
        plan.merge.accept(
            0,
            Ok(Bytes::from_static(
                b"VALUE a1 0 1\r\nx\r\nVALUE a1 0 1\r\nx\r\nEND\r\n",
            )),
        );
        plan.merge.accept(1, Ok(Bytes::from_static(b"END\r\n")));
        assert_eq!(
            &plan.merge.finish()[..],
            b"VALUE a1 0 1\r\nx\r\nVALUE a1 0 1\r\nx\r\nEND\r\n"
        );
    }

    #[test]
    fn a_failed_part_leaves_the_others_values_then_end() {
        let mut plan = plan(&request(b"get a1 b1\r\n"), by_letter).unwrap();
        plan.merge.accept(0, Err("Connection refused".into()));
        plan.merge
            .accept(1, Ok(Bytes::from_static(b"VALUE b1 0 1\r\ny\r\nEND\r\n")));
        assert_eq!(&plan.merge.finish()[..], b"VALUE b1 0 1\r\ny\r\nEND\r\n");
    }

    #[test]
    fn when_no_part_answers_the_failure_is_the_reply() {
        let mut split = plan(&request(b"get a1 b1\r\n"), by_letter).unwrap();
        split.merge.accept(0, Err("Connection refused".into()));
        split.merge.accept(1, Err("Connection timed out".into()));
        assert_eq!(
            &split.merge.finish()[..],
            b"SERVER_ERROR Connection refused\r\n"
        );
        assert!(split.merge.is_proxy_error());
        let mut split = plan(&request(b"get a1 b1\r\n"), by_letter).unwrap();
        split
            .merge
            .accept(0, Ok(Bytes::from_static(b"SERVER_ERROR out of memory\r\n")));
        split.merge.accept(1, Err("Connection refused".into()));
        assert_eq!(&split.merge.finish()[..], b"SERVER_ERROR out of memory\r\n");
        assert!(!split.merge.is_proxy_error(), "the server's own error");
    }

    #[test]
    fn a_routing_error_fails_the_plan() {
        let err = plan(&request(b"get a1 zz\r\n"), |k: &[u8]| {
            if k == b"zz" {
                Err("no server")
            } else {
                Ok(0)
            }
        })
        .unwrap_err();
        assert_eq!(err, "no server");
    }
}
