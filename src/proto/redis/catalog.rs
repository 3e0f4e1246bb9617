//! The commands a pool's clients see: the backend's own `COMMAND` and `COMMAND DOCS` entries
//! (read once by `proxy::commands`), limited to what walnut serves, answered for `COMMAND`,
//! `COMMAND COUNT`, `COMMAND INFO`, `COMMAND DOCS` and `COMMAND LIST` in the client's
//! protocol: RESP3 clients get the entries the backend gave a RESP3 connection.
//!
//! walnut serves a command its own table knows and does not refuse, and a command only the
//! backend knows when walnut can route it by its key specs. Pure: no I/O.

use bytes::{Bytes, BytesMut};

use super::command::{self, Handling};
use super::keyspecs::{LearnError, LearnedCommand, LearnedCommands};
use super::reply::{Protocol, ReplyDecoder};
use super::request::Request;
use crate::cluster::value;

/// The largest single `COMMAND` or `COMMAND DOCS` reply read (Redis 7 with modules sends a
/// few hundred KiB).
pub const MAX_CATALOG_REPLY: usize = 32 * 1024 * 1024;

/// Byte frames by command name (lower case), sorted by name.
type Frames = Vec<(Box<str>, Bytes)>;

/// A pool's learned commands, and the entries clients are shown.
#[derive(Debug)]
pub struct Catalog {
    /// Every command of the backend's `COMMAND` reply, for routing.
    pub table: LearnedCommands,
    /// Indexes into `table.commands()` of the commands walnut serves, in name order.
    listed: Vec<usize>,
    /// The RESP3 `COMMAND` entries (empty when the backend gave none).
    entries3: Frames,
    /// `COMMAND DOCS` values, RESP2 and RESP3 (empty when the backend has no DOCS).
    docs2: Frames,
    docs3: Frames,
}

/// What the backend answered, each a whole reply.
#[derive(Debug, Default, Clone, Copy)]
pub struct Replies<'r> {
    pub command: &'r [u8],
    pub docs: Option<&'r [u8]>,
    pub command3: Option<&'r [u8]>,
    pub docs3: Option<&'r [u8]>,
}

/// True when walnut serves `command`: its own table knows it and does not refuse it, or only
/// the backend knows it and its key specs can route it.
pub fn walnut_serves(command: &LearnedCommand) -> bool {
    match command::lookup(command.name.as_bytes()) {
        Some(spec) => !matches!(spec.handling, Handling::Refuse(_)),
        None => command.routable(),
    }
}

impl Catalog {
    /// Builds the catalog from the backend's replies. Only `COMMAND` (RESP2) is required; a
    /// malformed optional reply leaves its part empty.
    pub fn new(replies: Replies<'_>) -> Result<Catalog, LearnError> {
        let table = LearnedCommands::parse(replies.command)?;
        let listed = (0..table.len())
            .filter(|&i| walnut_serves(&table.commands()[i]))
            .collect();
        let protocol3 = Protocol::Resp3;
        Ok(Catalog {
            listed,
            entries3: replies
                .command3
                .and_then(|r| split_entries(r, protocol3))
                .unwrap_or_default(),
            docs2: replies
                .docs
                .and_then(|r| split_docs(r, Protocol::Resp2))
                .unwrap_or_default(),
            docs3: replies
                .docs3
                .and_then(|r| split_docs(r, protocol3))
                .unwrap_or_default(),
            table,
        })
    }

    /// How many commands clients are shown (`COMMAND COUNT`).
    pub fn listed_count(&self) -> usize {
        self.listed.len()
    }

    /// How many of them walnut's own table does not know: routed by their key specs alone.
    pub fn learned_only(&self) -> usize {
        self.listed()
            .filter(|c| command::lookup(c.name.as_bytes()).is_none())
            .count()
    }

    fn listed(&self) -> impl ExactSizeIterator<Item = &LearnedCommand> {
        self.listed.iter().map(|&i| &self.table.commands()[i])
    }

    /// The listed command `name` (any case).
    fn find_listed(&self, name: &[u8]) -> Option<&LearnedCommand> {
        self.table.get(name).filter(|c| walnut_serves(c))
    }

    /// The reply to a client's `COMMAND …`, or `None` for what the backend answers itself
    /// (`GETKEYS`, `GETKEYSANDFLAGS`, `HELP`, an unknown subcommand).
    pub fn answer(&self, req: &Request, resp3: bool) -> Option<Vec<u8>> {
        let argc = req.argc();
        if argc == 1 {
            return Some(self.entries(self.listed(), resp3));
        }
        let sub = req.arg(1).unwrap_or_default();
        let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
        let names = || (2..argc).filter_map(|i| req.arg(i));
        if is("COUNT") {
            if argc != 2 {
                return Some(super::dispatch::wrong_arity_reply("command|count"));
            }
            return Some(format!(":{}\r\n", self.listed.len()).into_bytes());
        }
        if is("INFO") {
            if argc == 2 {
                return Some(self.entries(self.listed(), resp3));
            }
            let mut out = header(b'*', argc - 2);
            for name in names() {
                match self.find_listed(name) {
                    Some(command) => out.extend_from_slice(self.entry(command, resp3)),
                    None if resp3 => out.extend_from_slice(b"_\r\n"),
                    None => out.extend_from_slice(b"$-1\r\n"),
                }
            }
            return Some(out);
        }
        if is("DOCS") {
            let docs = if resp3 && !self.docs3.is_empty() {
                &self.docs3
            } else {
                &self.docs2
            };
            let found: Vec<&(Box<str>, Bytes)> = if argc == 2 {
                self.listed()
                    .filter_map(|c| frame_of(docs, &c.name))
                    .collect()
            } else {
                names()
                    .filter_map(|name| self.find_listed(name))
                    .filter_map(|c| frame_of(docs, &c.name))
                    .collect()
            };
            let mut out = match resp3 {
                true => header(b'%', found.len()),
                false => header(b'*', found.len() * 2),
            };
            for (name, doc) in found {
                out.extend_from_slice(&super::dispatch::bulk(name.as_bytes()));
                out.extend_from_slice(doc);
            }
            return Some(out);
        }
        if is("LIST") {
            return Some(self.list(req));
        }
        None
    }

    /// `COMMAND LIST [FILTERBY MODULE m | ACLCAT c | PATTERN p]`.
    fn list(&self, req: &Request) -> Vec<u8> {
        const SYNTAX: &[u8] = b"-ERR syntax error\r\n";
        let names: Vec<&LearnedCommand> = match req.argc() {
            2 => self.listed().collect(),
            5 if req
                .arg(2)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"FILTERBY")) =>
            {
                let kind = req.arg(3).unwrap_or_default();
                let wanted = req.arg(4).unwrap_or_default().to_ascii_lowercase();
                if kind.eq_ignore_ascii_case(b"PATTERN") {
                    self.listed()
                        .filter(|c| crate::acl::glob::matches(&wanted, c.name.as_bytes()))
                        .collect()
                } else if kind.eq_ignore_ascii_case(b"ACLCAT") {
                    let category = format!("@{}", String::from_utf8_lossy(&wanted));
                    self.listed().filter(|c| c.in_category(&category)).collect()
                } else if kind.eq_ignore_ascii_case(b"MODULE") {
                    self.listed()
                        .filter(|c| self.module_of(c).is_some_and(|m| m == wanted))
                        .collect()
                } else {
                    return SYNTAX.to_vec();
                }
            }
            _ => return SYNTAX.to_vec(),
        };
        let mut out = header(b'*', names.len());
        for command in names {
            out.extend_from_slice(&super::dispatch::bulk(command.name.as_bytes()));
        }
        out
    }

    /// The module a command comes from, as its `COMMAND DOCS` says (lower case).
    fn module_of(&self, command: &LearnedCommand) -> Option<Vec<u8>> {
        let (_, doc) = frame_of(&self.docs2, &command.name)?;
        let doc = value::parse(doc).ok()?;
        Some(doc.field(b"module")?.text()?.to_ascii_lowercase())
    }

    /// `*N` and the entries of `commands`.
    fn entries<'c>(
        &'c self,
        commands: impl ExactSizeIterator<Item = &'c LearnedCommand>,
        resp3: bool,
    ) -> Vec<u8> {
        let mut out = header(b'*', commands.len());
        for command in commands {
            out.extend_from_slice(self.entry(command, resp3));
        }
        out
    }

    /// The entry of `command` in the client's protocol (the RESP2 one when the backend gave
    /// no RESP3 entry: an array, which RESP3 clients read too).
    fn entry<'c>(&'c self, command: &'c LearnedCommand, resp3: bool) -> &'c [u8] {
        if resp3 {
            if let Some((_, frame)) = frame_of(&self.entries3, &command.name) {
                return frame;
            }
        }
        &command.entry
    }
}

fn header(kind: u8, len: usize) -> Vec<u8> {
    format!("{}{len}\r\n", kind as char).into_bytes()
}

fn frame_of<'f>(frames: &'f Frames, name: &str) -> Option<&'f (Box<str>, Bytes)> {
    frames
        .binary_search_by(|(n, _)| (**n).cmp(name))
        .ok()
        .map(|i| &frames[i])
}

/// The elements of an aggregate reply (`*N`, `%N`, `~N`): its header's count (doubled for a
/// map) and each element's frame. `None` if it is not one, or is cut short.
fn elements(reply: &[u8], protocol: Protocol) -> Option<Vec<Bytes>> {
    let end = reply.iter().position(|&b| b == b'\r')?;
    let count: usize = std::str::from_utf8(reply.get(1..end)?).ok()?.parse().ok()?;
    let count = match reply.first()? {
        b'*' | b'~' => count,
        b'%' => count.checked_mul(2)?,
        _ => return None,
    };
    if count > 2 * super::keyspecs::MAX_COMMANDS {
        return None;
    }
    let mut input = BytesMut::from(reply.get(end + 2..)?);
    let mut decoder = ReplyDecoder::with_protocol(MAX_CATALOG_REPLY, protocol);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(decoder.decode(&mut input).ok()??.frame);
    }
    input.is_empty().then_some(out)
}

/// The bulk or simple string at the start of `frame` (a name), lower-cased.
fn leading_name(frame: &[u8]) -> Option<Box<str>> {
    let mut input = BytesMut::from(frame);
    let first = ReplyDecoder::with_protocol(MAX_CATALOG_REPLY, Protocol::Resp3)
        .decode(&mut input)
        .ok()??;
    let parsed = value::parse(&first.frame).ok()?;
    let text = parsed.text()?;
    (text.len() <= super::keyspecs::MAX_NAME_LEN)
        .then(|| String::from_utf8_lossy(text).to_ascii_lowercase().into())
}

fn sorted(mut frames: Frames) -> Frames {
    frames.sort_by(|a, b| a.0.cmp(&b.0));
    frames.dedup_by(|later, first| later.0 == first.0);
    frames
}

/// `COMMAND`'s entries by name: each entry is an array whose first element is the name.
fn split_entries(reply: &[u8], protocol: Protocol) -> Option<Frames> {
    let frames = elements(reply, protocol)?
        .into_iter()
        .filter_map(|entry| {
            let inner = elements_head(&entry)?;
            Some((leading_name(inner)?, entry))
        })
        .collect();
    Some(sorted(frames))
}

/// What follows an array's header line.
fn elements_head(frame: &[u8]) -> Option<&[u8]> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    let end = frame.iter().position(|&b| b == b'\r')?;
    frame.get(end + 2..)
}

/// `COMMAND DOCS`'s values by name: a map in RESP3, name/value pairs in RESP2.
fn split_docs(reply: &[u8], protocol: Protocol) -> Option<Frames> {
    let items = elements(reply, protocol)?;
    let frames = items
        .chunks_exact(2)
        .filter_map(|pair| Some((leading_name(&pair[0])?, pair[1].clone())))
        .collect();
    Some(sorted(frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::request::{Limits, RequestDecoder};

    const COMMAND: &[u8] = include_bytes!("../../../tests/data/redis7-command.resp");
    const DOCS: &[u8] = include_bytes!("../../../tests/data/redis7-command-docs.resp");

    fn request(words: &str) -> Request {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let mut buf = BytesMut::from(&super::super::pubsub::frame_of_bulks(&args)[..]);
        let mut decoder = RequestDecoder::new(Limits::default());
        decoder.decode(&mut buf).unwrap().unwrap()
    }

    fn catalog() -> Catalog {
        Catalog::new(Replies {
            command: COMMAND,
            docs: Some(DOCS),
            ..Replies::default()
        })
        .unwrap()
    }

    fn answer(catalog: &Catalog, words: &str) -> Vec<u8> {
        catalog.answer(&request(words), false).expect("answered")
    }

    #[test]
    fn lists_what_walnut_serves_and_nothing_it_refuses() {
        let catalog = catalog();
        let names: Vec<&str> = catalog.listed().map(|c| &*c.name).collect();
        assert!(names.contains(&"get") && names.contains(&"pfdebug"));
        assert!(names.contains(&"restore-asking"));
        // No key to route by, or refused by walnut's table.
        assert!(!names.contains(&"pfselftest"));
        assert!(!names.contains(&"monitor"));
        assert_eq!(catalog.learned_only(), 2);
        assert_eq!(
            answer(&catalog, "COMMAND COUNT"),
            format!(":{}\r\n", names.len()).into_bytes()
        );
        let all = answer(&catalog, "command");
        assert!(all.starts_with(format!("*{}\r\n", names.len()).as_bytes()));
        assert_eq!(
            LearnedCommands::parse(&all).unwrap().len(),
            names.len(),
            "COMMAND is a COMMAND reply of exactly those entries"
        );
    }

    #[test]
    fn info_gives_entries_and_nils_as_redis_does() {
        let catalog = catalog();
        let get = catalog.table.get(b"get").unwrap();
        let mut want = b"*3\r\n".to_vec();
        want.extend_from_slice(&get.entry);
        want.extend_from_slice(b"$-1\r\n$-1\r\n");
        assert_eq!(answer(&catalog, "COMMAND INFO GET monitor nope"), want);
        let resp3 = catalog.answer(&request("COMMAND INFO nope"), true).unwrap();
        assert_eq!(resp3, b"*1\r\n_\r\n");
    }

    #[test]
    fn docs_and_list_filter_to_what_walnut_serves() {
        let catalog = catalog();
        let docs = answer(&catalog, "COMMAND DOCS get monitor nope");
        assert!(docs.starts_with(b"*2\r\n$3\r\nget\r\n"), "{docs:?}");
        assert!(docs.windows(7).any(|w| w == b"summary"));
        assert_eq!(answer(&catalog, "COMMAND DOCS nope"), b"*0\r\n");
        let pf = answer(&catalog, "COMMAND LIST FILTERBY PATTERN PF*");
        let names = value::parse(&pf).unwrap();
        let mut names: Vec<&[u8]> = names
            .items()
            .unwrap()
            .iter()
            .map(|v| v.text().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [&b"pfadd"[..], b"pfcount", b"pfdebug", b"pfmerge"]);
        let hll = answer(&catalog, "COMMAND LIST FILTERBY ACLCAT hyperloglog");
        assert!(hll.starts_with(b"*4\r\n"), "{hll:?}");
        assert_eq!(answer(&catalog, "COMMAND LIST x"), b"-ERR syntax error\r\n");
        assert_eq!(
            answer(&catalog, "COMMAND COUNT x"),
            b"-ERR wrong number of arguments for 'command|count' command\r\n"
        );
    }

    #[test]
    fn the_backend_answers_getkeys_and_help() {
        let catalog = catalog();
        assert!(catalog
            .answer(&request("COMMAND GETKEYS get k"), false)
            .is_none());
        assert!(catalog.answer(&request("COMMAND HELP"), false).is_none());
    }

    #[test]
    fn elements_split_resp3_maps_and_reject_short_input() {
        let map = b"%2\r\n$1\r\na\r\n%1\r\n$1\r\nx\r\n:1\r\n$1\r\nb\r\n~1\r\n,1.5\r\n";
        let parts = elements(map, Protocol::Resp3).unwrap();
        assert_eq!(parts.len(), 4);
        assert_eq!(&parts[3][..], b"~1\r\n,1.5\r\n");
        assert!(elements(&map[..map.len() - 3], Protocol::Resp3).is_none());
        assert!(elements(b"+OK\r\n", Protocol::Resp3).is_none());
        let docs = split_docs(map, Protocol::Resp3).unwrap();
        assert_eq!(&*docs[0].0, "a");
    }
}
