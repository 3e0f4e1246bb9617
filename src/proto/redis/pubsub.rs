//! Pub/sub replies, pure functions over bytes: the confirmations walnut writes for a client's
//! (un)subscribe commands (with its own counts over every server), what a subscriber
//! connection reads (a message to pass on, or a confirmation), and the merges of `PUBSUB`
//! answers from every server.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::reply::Protocol;

use super::command::Subscription;

/// The confirmation words Redis uses for each kind, subscribing and unsubscribing.
pub fn words(kind: Subscription) -> (&'static str, &'static str) {
    match kind {
        Subscription::Channel => ("subscribe", "unsubscribe"),
        Subscription::Pattern => ("psubscribe", "punsubscribe"),
        Subscription::Shard => ("ssubscribe", "sunsubscribe"),
    }
}

/// The command that (un)subscribes `kind`.
pub fn command(kind: Subscription, subscribe: bool) -> &'static str {
    match (kind, subscribe) {
        (Subscription::Channel, true) => "SUBSCRIBE",
        (Subscription::Channel, false) => "UNSUBSCRIBE",
        (Subscription::Pattern, true) => "PSUBSCRIBE",
        (Subscription::Pattern, false) => "PUNSUBSCRIBE",
        (Subscription::Shard, true) => "SSUBSCRIBE",
        (Subscription::Shard, false) => "SUNSUBSCRIBE",
    }
}

/// `*3 $word $name :count`, Redis's (un)subscribe confirmation; `None` names nothing (an
/// unsubscribe-all with no subscription). In RESP3 it is a push (`>3`, nil `_`).
pub fn confirmation(word: &str, name: Option<&[u8]>, count: usize, protocol: Protocol) -> Vec<u8> {
    let resp3 = protocol == Protocol::Resp3;
    let kind = if resp3 { '>' } else { '*' };
    let mut out = format!("{kind}3\r\n${}\r\n{word}\r\n", word.len()).into_bytes();
    match name {
        Some(name) => push_bulk(&mut out, name),
        None if resp3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(b"$-1\r\n"),
    }
    out.extend_from_slice(format!(":{count}\r\n").as_bytes());
    out
}

/// `PING [message]` in subscribed mode (RESP2): `*2 $4 pong $message`.
pub fn subscribed_pong(message: &[u8]) -> Vec<u8> {
    let mut out = b"*2\r\n$4\r\npong\r\n".to_vec();
    push_bulk(&mut out, message);
    out
}

/// A command frame: `*N` and each argument as a bulk string.
pub fn frame<'a>(name: &str, args: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len() + 1).into_bytes();
    push_bulk(&mut out, name.as_bytes());
    for arg in args {
        push_bulk(&mut out, arg);
    }
    out
}

pub(crate) fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// A message read from a (RESP2) subscriber connection, framed for the client: as it is, or
/// as the RESP3 push Redis sends (`>` for `*`, the elements are the same bulk strings).
pub fn message_for(frame: Bytes, protocol: Protocol) -> Bytes {
    if protocol == Protocol::Resp2 || frame.first() != Some(&b'*') {
        return frame;
    }
    let mut push = BytesMut::from(&frame[..]);
    push[0] = b'>';
    push.freeze()
}

/// What a subscriber connection read.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<'a> {
    /// `message`, `pmessage` or `smessage`: passed to the client as it is.
    Message,
    /// An (un)subscribe confirmation: its word and the name it confirms (`None` for nil).
    Confirmation {
        word: &'a [u8],
        name: Option<&'a [u8]>,
    },
    /// An error reply: it answers the oldest command still waiting.
    Error,
    /// Anything else (not expected from a subscribed connection).
    Other,
}

/// Classifies one complete reply `frame` read from a subscribed connection.
pub fn classify(frame: &[u8]) -> Pushed<'_> {
    if frame.first() == Some(&b'-') {
        return Pushed::Error;
    }
    let Some(items) = Items::new(frame) else {
        return Pushed::Other;
    };
    let mut items = items;
    let Some(Item::Bulk(Some(word))) = items.next() else {
        return Pushed::Other;
    };
    match word {
        b"message" | b"pmessage" | b"smessage" => Pushed::Message,
        b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" | b"ssubscribe"
        | b"sunsubscribe" => match items.next() {
            Some(Item::Bulk(name)) => Pushed::Confirmation { word, name },
            _ => Pushed::Other,
        },
        _ => Pushed::Other,
    }
}

/// One element of a flat RESP2 array.
#[derive(Debug, PartialEq, Eq)]
enum Item<'a> {
    Bulk(Option<&'a [u8]>),
    Int(i64),
}

/// The elements of a flat array of bulk strings and integers (what pub/sub replies are).
struct Items<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Items<'a> {
    fn new(frame: &'a [u8]) -> Option<Items<'a>> {
        let (head, rest) = line(frame.strip_prefix(b"*")?)?;
        let left = std::str::from_utf8(head).ok()?.parse().ok()?;
        Some(Items { rest, left })
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;
    fn next(&mut self) -> Option<Item<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (&tag, rest) = self.rest.split_first()?;
        let (head, rest) = line(rest)?;
        let number: i64 = std::str::from_utf8(head).ok()?.parse().ok()?;
        match tag {
            b':' => {
                self.rest = rest;
                Some(Item::Int(number))
            }
            b'$' if number < 0 => {
                self.rest = rest;
                Some(Item::Bulk(None))
            }
            b'$' => {
                let len = usize::try_from(number).ok()?;
                let body = rest.get(..len)?;
                self.rest = rest.get(len + 2..)?;
                Some(Item::Bulk(Some(body)))
            }
            _ => None,
        }
    }
}

/// The text up to the first CRLF, and what follows it.
fn line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    Some((&bytes[..end], &bytes[end + 2..]))
}

/// Which `PUBSUB` subcommand a fan-out merges, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubsubMerge {
    /// `CHANNELS`, `SHARDCHANNELS`: the union of the names.
    Union,
    /// `NUMSUB`, `SHARDNUMSUB`: each channel's counts summed, in the order asked.
    SumPerName,
    /// `NUMPAT`: walnut's patterns are on every server, so the largest count.
    Max,
}

impl PubsubMerge {
    /// The merge for `PUBSUB <subcommand>`, or `None` for one walnut does not fan out.
    pub fn for_subcommand(sub: &[u8]) -> Option<PubsubMerge> {
        let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
        if is("CHANNELS") || is("SHARDCHANNELS") {
            Some(PubsubMerge::Union)
        } else if is("NUMSUB") || is("SHARDNUMSUB") {
            Some(PubsubMerge::SumPerName)
        } else if is("NUMPAT") {
            Some(PubsubMerge::Max)
        } else {
            None
        }
    }

    /// The client's reply from every server's `replies`; an error reply from any is passed
    /// on, and an unparsable one is `None`.
    pub fn merge(self, replies: &[&[u8]]) -> Option<Vec<u8>> {
        if let Some(error) = super::fanout::first_error(replies) {
            return Some(error.to_vec());
        }
        match self {
            PubsubMerge::Max => {
                let mut max = 0i64;
                for reply in replies {
                    let text = std::str::from_utf8(reply.strip_prefix(b":")?).ok()?;
                    max = max.max(text.trim_end().parse().ok()?);
                }
                Some(format!(":{max}\r\n").into_bytes())
            }
            PubsubMerge::Union => {
                let mut names: Vec<&[u8]> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for reply in replies {
                    for item in Items::new(reply)? {
                        let Item::Bulk(Some(name)) = item else {
                            return None;
                        };
                        if seen.insert(name) {
                            names.push(name);
                        }
                    }
                }
                Some(frame_of_bulks(&names))
            }
            PubsubMerge::SumPerName => {
                let mut order: Vec<&[u8]> = Vec::new();
                let mut counts: HashMap<&[u8], i64> = HashMap::new();
                for reply in replies {
                    let mut items = Items::new(reply)?;
                    while let Some(item) = items.next() {
                        let (Item::Bulk(Some(name)), Some(Item::Int(n))) = (item, items.next())
                        else {
                            return None;
                        };
                        let count = counts.entry(name).or_insert_with(|| {
                            order.push(name);
                            0
                        });
                        *count += n;
                    }
                }
                let mut out = format!("*{}\r\n", order.len() * 2).into_bytes();
                for name in order {
                    push_bulk(&mut out, name);
                    out.extend_from_slice(format!(":{}\r\n", counts[name]).as_bytes());
                }
                Some(out)
            }
        }
    }
}

/// A RESP array of bulk strings (a command frame).
pub(crate) fn frame_of_bulks(names: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", names.len()).into_bytes();
    for name in names {
        push_bulk(&mut out, name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_are_redis_s() {
        assert_eq!(
            confirmation("subscribe", Some(b"ch"), 1, Protocol::Resp2),
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
        );
        assert_eq!(
            confirmation("unsubscribe", None, 0, Protocol::Resp2),
            b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(subscribed_pong(b""), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    }

    #[test]
    fn classifies_what_a_subscriber_reads() {
        assert_eq!(
            classify(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n"),
            Pushed::Message
        );
        assert_eq!(
            classify(b"*4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$1\r\nc\r\n$2\r\nhi\r\n"),
            Pushed::Message
        );
        assert_eq!(
            classify(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:1\r\n"),
            Pushed::Confirmation {
                word: b"psubscribe",
                name: Some(b"c*")
            }
        );
        assert_eq!(
            classify(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            Pushed::Confirmation {
                word: b"unsubscribe",
                name: None
            }
        );
        assert_eq!(classify(b"-ERR no\r\n"), Pushed::Error);
        assert_eq!(classify(b"+OK\r\n"), Pushed::Other);
        assert_eq!(classify(b"*1\r\n$3\r\nfoo\r\n"), Pushed::Other);
        // Truncated or nonsense frames are never trusted.
        assert_eq!(classify(b"*3\r\n$900\r\nmessage\r\n"), Pushed::Other);
        assert_eq!(classify(b"*x\r\n"), Pushed::Other);
    }

    #[test]
    fn pubsub_answers_merge_across_servers() {
        let a: &[u8] = b"*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let b: &[u8] = b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n";
        assert_eq!(
            PubsubMerge::Union.merge(&[a, b]).unwrap(),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        let a: &[u8] = b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nz\r\n:0\r\n";
        let b: &[u8] = b"*4\r\n$1\r\na\r\n:2\r\n$1\r\nz\r\n:0\r\n";
        assert_eq!(
            PubsubMerge::SumPerName.merge(&[a, b]).unwrap(),
            b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nz\r\n:0\r\n"
        );
        assert_eq!(
            PubsubMerge::Max.merge(&[b":1\r\n", b":3\r\n"]).unwrap(),
            b":3\r\n"
        );
        assert_eq!(
            PubsubMerge::Max.merge(&[b":1\r\n", b"-ERR x\r\n"]).unwrap(),
            b"-ERR x\r\n"
        );
        assert_eq!(PubsubMerge::Union.merge(&[b"*1\r\n:1\r\n"]), None);
    }
}
