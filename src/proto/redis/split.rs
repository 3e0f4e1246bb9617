//! Splitting multi-key requests per server and merging the parts' replies. No I/O.
//!
//! A split request becomes one part per server that owns some of its keys, rebuilt with a
//! lower-case command name as twemproxy does (`*3\r\n$4\r\nmget\r\n…`). The [`Merge`] collects
//! the parts' replies in any order and builds the one reply the client sees: MGET values in
//! request order, the sum for DEL/UNLINK/TOUCH/EXISTS, `+OK` for MSET. A failed part, or a part
//! whose reply has the wrong type, turns the whole reply into one error.

use bytes::{BufMut, Bytes, BytesMut};

use super::dispatch::SplitKind;
use super::request::Request;

/// One part of a split request: the frame to send and the server it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub server: usize,
    pub frame: Bytes,
}

/// A split request: its parts, and the merge that will combine their replies.
#[derive(Debug)]
pub struct SplitPlan {
    pub parts: Vec<Part>,
    pub merge: Merge,
}

/// Merges the replies of a split request's parts.
#[derive(Debug)]
pub struct Merge {
    kind: SplitKind,
    /// For MGET: for each requested key in order, (part, index of the value in that part).
    value_slots: Vec<(u32, u32)>,
    /// For MGET: how many keys each part asked for.
    part_sizes: Vec<u32>,
    replies: Vec<Option<Result<Bytes, String>>>,
    missing: usize,
}

fn lower_name(kind: SplitKind) -> &'static [u8] {
    match kind {
        SplitKind::Mget => b"mget",
        SplitKind::Del => b"del",
        SplitKind::Unlink => b"unlink",
        SplitKind::Touch => b"touch",
        SplitKind::Exists => b"exists",
        SplitKind::Mset => b"mset",
    }
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    out.put_u8(b'$');
    put_decimal(out, data.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal without allocating (a part is built for every key of a split).
fn put_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The encoded size of a bulk string of `len` bytes (`$<len>\r\n<data>\r\n`).
fn bulk_size(len: usize) -> usize {
    let mut digits = 1;
    let mut n = len;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    1 + digits + 2 + len + 2
}

/// Groups the keys of `req` by server and builds one part per server, in server order.
///
/// `server_of` maps a key to its server index, or says why it has none (the first such error
/// is returned). MSET keys sit at odd positions with their value after them; every other kind
/// has keys from argument 1 on.
pub fn plan<E>(
    kind: SplitKind,
    req: &Request,
    mut server_of: impl FnMut(&[u8]) -> Result<usize, E>,
) -> Result<SplitPlan, E> {
    let step = if kind == SplitKind::Mset { 2 } else { 1 };
    // One walk over the frame; `Request::arg(i)` walks from the start for i >= 3.
    // Every vector is sized up front: growing them cost more than routing the keys.
    let mut args: Vec<&[u8]> = Vec::with_capacity(req.argc());
    args.extend(req.args());
    // (server, arg position) for every key, in request order.
    let mut keys: Vec<(usize, usize)> = Vec::with_capacity(args.len() / step + 1);
    for position in (1..args.len()).step_by(step) {
        keys.push((server_of(args[position])?, position));
    }
    let mut servers: Vec<usize> = keys.iter().map(|&(server, _)| server).collect();
    servers.sort_unstable();
    servers.dedup();

    let part_of = |server: usize| servers.binary_search(&server).unwrap_or(0);
    let mut per_part = vec![0usize; servers.len()];
    for &(server, _) in &keys {
        per_part[part_of(server)] += 1;
    }
    let mut part_keys: Vec<Vec<usize>> = per_part.iter().map(|&n| Vec::with_capacity(n)).collect();
    let mut value_slots = Vec::with_capacity(if kind == SplitKind::Mget {
        keys.len()
    } else {
        0
    });
    for &(server, position) in &keys {
        let part = part_of(server);
        if kind == SplitKind::Mget {
            value_slots.push((part as u32, part_keys[part].len() as u32));
        }
        part_keys[part].push(position);
    }

    let name = lower_name(kind);
    let parts = servers
        .iter()
        .zip(&part_keys)
        .map(|(&server, positions)| {
            let argc = 1 + positions.len() * step;
            // Sized once: the part is written without growing.
            let size = 24
                + bulk_size(name.len())
                + positions
                    .iter()
                    .flat_map(|&position| position..position + step)
                    .map(|i| bulk_size(args.get(i).map_or(0, |a| a.len())))
                    .sum::<usize>();
            let mut frame = BytesMut::with_capacity(size);
            frame.put_u8(b'*');
            put_decimal(&mut frame, argc);
            frame.extend_from_slice(b"\r\n");
            put_bulk(&mut frame, name);
            for &position in positions {
                for offset in 0..step {
                    put_bulk(
                        &mut frame,
                        args.get(position + offset).copied().unwrap_or_default(),
                    );
                }
            }
            Part {
                server,
                frame: frame.freeze(),
            }
        })
        .collect::<Vec<_>>();
    let part_sizes = part_keys.iter().map(|k| k.len() as u32).collect();
    let missing = parts.len();
    Ok(SplitPlan {
        merge: Merge {
            kind,
            value_slots,
            part_sizes,
            replies: vec![None; missing],
            missing,
        },
        parts,
    })
}

/// `-ERR <message>\r\n`.
fn error_frame(message: &str) -> Bytes {
    Bytes::from(format!("-ERR {message}\r\n"))
}

/// twemproxy's text for a part reply of the wrong type (EINVAL).
const WRONG_TYPE: &str = "Invalid argument";

impl Merge {
    /// Records part `part`'s reply (`Err` holds the proxy-side failure text). Returns true once
    /// every part has answered. A second reply for the same part is ignored.
    pub fn accept(&mut self, part: usize, reply: Result<Bytes, String>) -> bool {
        if let Some(slot @ None) = self.replies.get_mut(part) {
            *slot = Some(reply);
            self.missing -= 1;
        }
        self.missing == 0
    }

    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    pub fn parts(&self) -> usize {
        self.replies.len()
    }

    /// The merged reply. Call once every part has answered.
    /// Whether [`Merge::finish`] answers with walnut's own error: the first part that did
    /// not succeed failed on the proxy side (a server's own error reply is not walnut's).
    pub fn is_proxy_error(&self) -> bool {
        for reply in &self.replies {
            match reply {
                None | Some(Err(_)) => return true,
                Some(Ok(frame)) if frame.first() == Some(&b'-') => return false,
                Some(Ok(_)) => {}
            }
        }
        false
    }

    pub fn finish(&self) -> Bytes {
        let mut replies = Vec::with_capacity(self.replies.len());
        for reply in &self.replies {
            match reply {
                None => return error_frame("merge finished before every part answered"),
                Some(Err(message)) => return error_frame(message),
                // A backend error reply is the most useful thing to show the client.
                Some(Ok(frame)) if frame.first() == Some(&b'-') => return frame.clone(),
                Some(Ok(frame)) => replies.push(frame),
            }
        }
        match self.kind {
            SplitKind::Mset => {
                if replies.iter().all(|r| &r[..] == b"+OK\r\n") {
                    Bytes::from_static(b"+OK\r\n")
                } else {
                    error_frame(WRONG_TYPE)
                }
            }
            SplitKind::Del | SplitKind::Unlink | SplitKind::Touch | SplitKind::Exists => {
                let mut sum: i64 = 0;
                for reply in replies {
                    match parse_integer(reply) {
                        Some(n) => sum = sum.saturating_add(n),
                        None => return error_frame(WRONG_TYPE),
                    }
                }
                Bytes::from(format!(":{sum}\r\n"))
            }
            SplitKind::Mget => self.merge_values(&replies),
        }
    }

    fn merge_values(&self, replies: &[&Bytes]) -> Bytes {
        let mut elements = Vec::with_capacity(replies.len());
        for (reply, &size) in replies.iter().zip(&self.part_sizes) {
            match bulk_array_elements(reply) {
                Some(items) if items.len() == size as usize => elements.push(items),
                _ => return error_frame(WRONG_TYPE),
            }
        }
        let total: usize = self
            .value_slots
            .iter()
            .map(|&(p, i)| elements[p as usize][i as usize].len())
            .sum();
        let mut out = BytesMut::with_capacity(total + 16);
        out.put_u8(b'*');
        out.extend_from_slice(self.value_slots.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for &(part, index) in &self.value_slots {
            out.extend_from_slice(elements[part as usize][index as usize]);
        }
        out.freeze()
    }
}

/// The value of a `:<n>\r\n` reply.
fn parse_integer(reply: &[u8]) -> Option<i64> {
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The elements of a flat array of bulk strings and nulls (`$-1`, or RESP3's `_`), each as
/// its exact bytes.
fn bulk_array_elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    const RESP3_NULL: &[u8] = b"_\r\n";
    let (count, mut rest) = header(reply, b'*')?;
    let count = usize::try_from(count).ok()?;
    // Each element takes at least 3 bytes ("_\r\n"), so a declared count can't make us reserve
    // more than the reply's own size.
    let mut items = Vec::with_capacity(count.min(reply.len() / 3));
    for _ in 0..count {
        if rest.starts_with(RESP3_NULL) {
            items.push(RESP3_NULL);
            rest = &rest[RESP3_NULL.len()..];
            continue;
        }
        let (len, after) = header(rest, b'$')?;
        let consumed = rest.len() - after.len();
        let total = if len < 0 {
            consumed
        } else {
            let len = usize::try_from(len).ok()?;
            if after.get(len..len + 2)? != b"\r\n" {
                return None;
            }
            consumed + len + 2
        };
        items.push(&rest[..total]);
        rest = &rest[total..];
    }
    rest.is_empty().then_some(items)
}

/// Parses `<tag><integer>\r\n` at the start of `data`: the integer and what follows.
fn header(data: &[u8], tag: u8) -> Option<(i64, &[u8])> {
    let rest = data.strip_prefix(&[tag])?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    if rest.get(end + 1) != Some(&b'\n') || end > 20 {
        return None;
    }
    let text = &rest[..end];
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 20 characters: an i128 holds any of them; the value must fit an i64.
    let magnitude = digits
        .iter()
        .fold(0i128, |n, &d| n * 10 + i128::from(d - b'0'));
    let value = i64::try_from(if negative { -magnitude } else { magnitude }).ok()?;
    Some((value, &rest[end + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::request::{Limits, RequestDecoder};

    fn request(args: &[&[u8]]) -> Request {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            put_bulk(&mut buf, arg);
        }
        RequestDecoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    /// Routes keys by their first byte: 'a' → 0, 'b' → 1, 'c' → 2.
    fn by_first_byte(key: &[u8]) -> Result<usize, ()> {
        key.first().map(|b| usize::from(b - b'a')).ok_or(())
    }

    #[test]
    fn mget_parts_are_lower_case_and_in_server_order() {
        let plan = plan(
            SplitKind::Mget,
            &request(&[b"MGET", b"b1", b"a1", b"b2"]),
            by_first_byte,
        )
        .unwrap();
        assert_eq!(
            plan.parts,
            vec![
                Part {
                    server: 0,
                    frame: Bytes::from_static(b"*2\r\n$4\r\nmget\r\n$2\r\na1\r\n")
                },
                Part {
                    server: 1,
                    frame: Bytes::from_static(b"*3\r\n$4\r\nmget\r\n$2\r\nb1\r\n$2\r\nb2\r\n")
                },
            ]
        );
    }

    #[test]
    fn mget_merges_values_in_request_order_whatever_order_parts_answer() {
        let mut plan = plan(
            SplitKind::Mget,
            &request(&[b"MGET", b"b1", b"a1", b"b2", b"a1"]),
            by_first_byte,
        )
        .unwrap();
        assert!(!plan
            .merge
            .accept(1, Ok(Bytes::from_static(b"*2\r\n$2\r\nB1\r\n$-1\r\n"))));
        assert!(plan
            .merge
            .accept(0, Ok(Bytes::from_static(b"*2\r\n$2\r\nA1\r\n$2\r\nA1\r\n"))));
        assert_eq!(
            &plan.merge.finish()[..],
            b"*4\r\n$2\r\nB1\r\n$2\r\nA1\r\n$-1\r\n$2\r\nA1\r\n"
        );
    }

    #[test]
    fn mset_keeps_each_value_with_its_key() {
        let plan = plan(
            SplitKind::Mset,
            &request(&[b"MSET", b"a", b"1", b"b", b"2", b"a2", b"3"]),
            by_first_byte,
        )
        .unwrap();
        assert_eq!(
            &plan.parts[0].frame[..],
            b"*5\r\n$4\r\nmset\r\n$1\r\na\r\n$1\r\n1\r\n$2\r\na2\r\n$1\r\n3\r\n"
        );
        assert_eq!(
            &plan.parts[1].frame[..],
            b"*3\r\n$4\r\nmset\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
    }

    #[test]
    fn mset_is_ok_only_when_every_part_is_ok() {
        let mut ok = plan(
            SplitKind::Mset,
            &request(&[b"MSET", b"a", b"1", b"b", b"2"]),
            by_first_byte,
        )
        .unwrap();
        ok.merge.accept(0, Ok(Bytes::from_static(b"+OK\r\n")));
        ok.merge.accept(1, Ok(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(&ok.merge.finish()[..], b"+OK\r\n");
        let mut bad = plan(
            SplitKind::Mset,
            &request(&[b"MSET", b"a", b"1", b"b", b"2"]),
            by_first_byte,
        )
        .unwrap();
        bad.merge.accept(0, Ok(Bytes::from_static(b"+OK\r\n")));
        bad.merge.accept(1, Ok(Bytes::from_static(b":1\r\n")));
        assert_eq!(&bad.merge.finish()[..], b"-ERR Invalid argument\r\n");
    }

    #[test]
    fn counting_commands_sum_their_parts() {
        for kind in [
            SplitKind::Del,
            SplitKind::Unlink,
            SplitKind::Touch,
            SplitKind::Exists,
        ] {
            let mut plan = plan(kind, &request(&[b"X", b"a", b"b", b"c"]), by_first_byte).unwrap();
            assert_eq!(plan.parts.len(), 3);
            plan.merge.accept(2, Ok(Bytes::from_static(b":1\r\n")));
            plan.merge.accept(0, Ok(Bytes::from_static(b":0\r\n")));
            plan.merge.accept(1, Ok(Bytes::from_static(b":1\r\n")));
            assert_eq!(&plan.merge.finish()[..], b":2\r\n", "{kind:?}");
        }
    }

    #[test]
    fn a_failed_part_makes_the_whole_reply_one_error() {
        let mut plan = plan(
            SplitKind::Mget,
            &request(&[b"MGET", b"a", b"b"]),
            by_first_byte,
        )
        .unwrap();
        plan.merge
            .accept(0, Ok(Bytes::from_static(b"*1\r\n$1\r\nA\r\n")));
        plan.merge.accept(1, Err("Connection refused".into()));
        assert_eq!(&plan.merge.finish()[..], b"-ERR Connection refused\r\n");
    }

    #[test]
    fn a_backend_error_reply_is_passed_on() {
        let mut plan = plan(
            SplitKind::Del,
            &request(&[b"DEL", b"a", b"b"]),
            by_first_byte,
        )
        .unwrap();
        plan.merge.accept(
            0,
            Ok(Bytes::from_static(
                b"-READONLY You can't write against a read only replica.\r\n",
            )),
        );
        plan.merge.accept(1, Ok(Bytes::from_static(b":1\r\n")));
        assert_eq!(
            &plan.merge.finish()[..],
            b"-READONLY You can't write against a read only replica.\r\n"
        );
    }

    #[test]
    fn wrong_shapes_of_mget_parts_are_errors() {
        for bad in [
            &b"*2\r\n$1\r\nA\r\n$-1\r\n"[..],
            b"$1\r\nA\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$5\r\nA\r\n",
        ] {
            let mut plan = plan(
                SplitKind::Mget,
                &request(&[b"MGET", b"a", b"b"]),
                by_first_byte,
            )
            .unwrap();
            plan.merge.accept(0, Ok(Bytes::copy_from_slice(bad)));
            plan.merge
                .accept(1, Ok(Bytes::from_static(b"*1\r\n$-1\r\n")));
            assert_eq!(
                &plan.merge.finish()[..],
                b"-ERR Invalid argument\r\n",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_with_no_server_fails_the_plan() {
        let result = plan(SplitKind::Mget, &request(&[b"MGET", b"a", b"z"]), |k| {
            if k == b"a" {
                Ok(0)
            } else {
                Err("no server")
            }
        });
        assert_eq!(result.err(), Some("no server"));
    }

    #[test]
    fn duplicate_replies_for_a_part_are_ignored() {
        let mut plan = plan(
            SplitKind::Del,
            &request(&[b"DEL", b"a", b"b"]),
            by_first_byte,
        )
        .unwrap();
        assert!(!plan.merge.accept(0, Ok(Bytes::from_static(b":1\r\n"))));
        assert!(!plan.merge.accept(0, Ok(Bytes::from_static(b":5\r\n"))));
        assert!(!plan.merge.accept(7, Ok(Bytes::from_static(b":5\r\n"))));
        assert!(plan.merge.accept(1, Ok(Bytes::from_static(b":1\r\n"))));
        assert_eq!(&plan.merge.finish()[..], b":2\r\n");
    }

    #[test]
    fn merging_arbitrary_bytes_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"*$:+-0123456789\r\nabc";
        for _ in 0..5000 {
            let kind = [SplitKind::Mget, SplitKind::Del, SplitKind::Mset][(next() % 3) as usize];
            let args: &[&[u8]] = if kind == SplitKind::Mset {
                &[b"MSET", b"a", b"1", b"b", b"2"]
            } else {
                &[b"MGET", b"a", b"b", b"a"]
            };
            let mut plan = plan(kind, &request(args), by_first_byte).unwrap();
            for part in 0..plan.merge.parts() {
                let len = (next() % 24) as usize;
                let junk: Vec<u8> = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                plan.merge.accept(part, Ok(Bytes::from(junk)));
            }
            assert!(!plan.merge.finish().is_empty());
        }
    }
}
