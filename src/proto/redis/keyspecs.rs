//! Commands learned from a backend's own `COMMAND` reply: name, arity, flags, ACL
//! categories, key specs and subcommands, parsed once into an immutable [`LearnedCommands`]
//! table, and the key positions of a request under one of them, with Redis's semantics.
//!
//! A Redis 7 entry is `[name, arity, flags, first_key, last_key, step, acl_categories, tips,
//! key_specs, subcommands]`; Redis 6 entries stop after the categories (5 after the step),
//! and their keys come from the legacy first/last/step. Subcommand positions count over the
//! whole command (`OBJECT ENCODING key`: the key at 2).
//!
//! The bytes are untrusted: the parse is bounded (entry counts, name lengths, nesting, via
//! `cluster::value`), never panics, and skips an entry it cannot read rather than guess.
//! Pure: no I/O; `proxy::commands` reads the reply, `dispatch` uses the table.

use super::dispatch::KeyRange;
use super::request::Request;
use crate::cluster::value::{self, Value, ValueError};

/// The most commands one table holds (Redis 7 with modules has a few hundred).
pub const MAX_COMMANDS: usize = 8192;
/// The most subcommands of one container command.
pub const MAX_SUBCOMMANDS: usize = 512;
/// The most key specs of one command.
pub const MAX_KEY_SPECS: usize = 32;
/// The longest command name kept.
pub const MAX_NAME_LEN: usize = 256;
/// The most flags or ACL categories of one command.
pub const MAX_FLAGS: usize = 64;

/// Where a key spec's search starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument.
    Index(i64),
    /// After `keyword`, searched from `startfrom` (negative: backwards from the end).
    Keyword { keyword: Box<[u8]>, startfrom: i64 },
    /// A type walnut does not know: the command is not routable.
    Unknown,
}

/// How a key spec finds its keys from where the search began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `lastkey` (relative; negative: from the end, or with `limit` a
    /// fraction of what is left), every `keystep`-th.
    Range {
        lastkey: i64,
        keystep: i64,
        limit: i64,
    },
    /// A count at `keynumidx`, the keys from `firstkey` after the search start.
    Keynum {
        keynumidx: i64,
        firstkey: i64,
        keystep: i64,
    },
    /// A type walnut does not know: the command is not routable.
    Unknown,
}

/// One key spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// Flagged `incomplete`: the spec may miss keys, so walnut cannot trust it to route.
    pub incomplete: bool,
}

/// Where a learned command's keys are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRule {
    /// Redis 7: the key specs (empty: no key).
    Specs(Vec<KeySpec>),
    /// Before Redis 7: first, last (negative: from the end) and step; first 0 is no key.
    Legacy { first: i64, last: i64, step: i64 },
}

/// One command (or subcommand) as the backend describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedCommand {
    /// Lower case as Redis gives it: `get`, `object|encoding`.
    pub name: Box<str>,
    /// Redis's arity: `n` exactly, `-n` at least n (the name counts).
    pub arity: i64,
    pub flags: Vec<Box<str>>,
    /// ACL categories, `@read`, `@write`, … (none before Redis 6, none for most modules).
    pub categories: Vec<Box<str>>,
    pub keys: KeyRule,
    /// Sorted by name; empty for a plain command.
    pub subcommands: Vec<LearnedCommand>,
    /// The entry as the backend sent it (RESP2), for `COMMAND` and `COMMAND INFO`.
    pub entry: Box<[u8]>,
}

/// Why a reply gave no table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LearnError {
    #[error("the COMMAND reply is not RESP: {0}")]
    Value(#[from] ValueError),
    #[error("the COMMAND reply is an error: {0}")]
    Refused(String),
    #[error("the COMMAND reply is not an array of commands")]
    NotAnArray,
    #[error("the COMMAND reply lists more than {MAX_COMMANDS} commands")]
    TooMany,
}

/// Why a request has no key positions under its learned command. `dispatch` words each
/// for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysError {
    /// The argument count does not fit the arity (the command's full name).
    WrongArity(Box<str>),
    /// A container command without that subcommand: the subcommand as sent, the container.
    UnknownSubcommand { sub: Box<[u8]>, container: Box<str> },
    /// A keynum argument that is not an integer.
    NotAnInteger,
    /// A negative keynum.
    NegativeKeys,
    /// A keynum larger than the arguments after it.
    TooManyKeys,
    /// Key specs walnut cannot follow (an unknown type, `incomplete`, a zero step, more
    /// than two key ranges): the command's full name.
    NotRoutable(Box<str>),
}

/// The keys of one request under its learned command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedKeys<'t> {
    /// The command, or the subcommand for a container.
    pub command: &'t LearnedCommand,
    /// Argument positions, one range per key spec that found keys (in spec order).
    pub ranges: Vec<KeyRange>,
}

impl LearnedKeys<'_> {
    /// Every key position.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.ranges.iter().flat_map(|r| r.positions())
    }
}

/// The table: every command of one backend's `COMMAND` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LearnedCommands {
    /// Sorted by name.
    commands: Vec<LearnedCommand>,
    /// Entries the parse skipped as malformed.
    pub skipped: usize,
}

impl LearnedCommands {
    /// Parses a whole `COMMAND` (or `COMMAND INFO …`) reply. Malformed entries (and the
    /// nils `COMMAND INFO` gives for unknown names) are skipped and counted.
    pub fn parse(reply: &[u8]) -> Result<LearnedCommands, LearnError> {
        let value = value::parse(reply)?;
        if let Value::Error(text) = value {
            return Err(LearnError::Refused(
                String::from_utf8_lossy(&text[..text.len().min(256)]).into_owned(),
            ));
        }
        let items = value.items().ok_or(LearnError::NotAnArray)?;
        if items.len() > MAX_COMMANDS {
            return Err(LearnError::TooMany);
        }
        let mut commands = Vec::with_capacity(items.len());
        let mut skipped = 0;
        for item in items {
            match entry(item, None) {
                Some(command) => commands.push(command),
                None => skipped += 1,
            }
        }
        commands.sort_by(|a, b| a.name.cmp(&b.name));
        // A name listed twice keeps its first entry.
        let before = commands.len();
        commands.dedup_by(|later, first| later.name == first.name);
        skipped += before - commands.len();
        Ok(LearnedCommands { commands, skipped })
    }

    /// Every command, sorted by name.
    pub fn commands(&self) -> &[LearnedCommand] {
        &self.commands
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The command `name`, compared ASCII case-insensitively, without allocating.
    pub fn get(&self, name: &[u8]) -> Option<&LearnedCommand> {
        find(&self.commands, name)
    }

    /// The key positions of `req` under its learned command (`None`: not in the table).
    pub fn keys_of(&self, req: &Request) -> Option<Result<LearnedKeys<'_>, KeysError>> {
        let command = self.get(req.arg(0).unwrap_or_default())?;
        Some(command.keys_of(req))
    }
}

fn find<'t>(commands: &'t [LearnedCommand], name: &[u8]) -> Option<&'t LearnedCommand> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    commands
        .binary_search_by(|c| {
            c.name
                .bytes()
                .cmp(name.iter().map(|b| b.to_ascii_lowercase()))
        })
        .ok()
        .map(|i| &commands[i])
}

impl LearnedCommand {
    /// True for a container command (`OBJECT`, `XINFO`): its subcommands hold the keys.
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// Whether walnut can route some request of this command by its keys: it has keys, and
    /// specs walnut can follow (for a container: one of its subcommands does).
    pub fn routable(&self) -> bool {
        if self.is_container() {
            return self.subcommands.iter().any(LearnedCommand::routable);
        }
        match &self.keys {
            KeyRule::Legacy { first, step, .. } => *first > 0 && *step > 0,
            KeyRule::Specs(specs) => !specs.is_empty() && specs.iter().all(followable),
        }
    }

    /// True when the flag (`readonly`, `write`, `admin`, …) is set.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// True when the ACL category (`@read`, `@admin`, …) is set.
    pub fn in_category(&self, category: &str) -> bool {
        self.categories
            .iter()
            .any(|c| c.eq_ignore_ascii_case(category))
    }

    /// The key positions of `req`, whose name is this command's.
    pub fn keys_of(&self, req: &Request) -> Result<LearnedKeys<'_>, KeysError> {
        let argc = req.argc();
        let command = if self.is_container() && argc >= 2 {
            let sub = req.arg(1).unwrap_or_default();
            self.subcommand(sub)
                .ok_or_else(|| KeysError::UnknownSubcommand {
                    sub: sub.into(),
                    container: self.name.to_ascii_uppercase().into(),
                })?
        } else {
            self
        };
        if !arity_fits(command.arity, argc) {
            return Err(KeysError::WrongArity(command.name.clone()));
        }
        let not_routable = || KeysError::NotRoutable(command.name.clone());
        let mut ranges = Vec::new();
        match &command.keys {
            KeyRule::Legacy { first, last, step } => {
                if *first > 0 {
                    if *step <= 0 {
                        return Err(not_routable());
                    }
                    let last = if *last < 0 { argc as i64 + last } else { *last };
                    push_range(&mut ranges, *first, last, *step, argc);
                }
            }
            KeyRule::Specs(specs) => {
                let args: Vec<&[u8]> = req.args().collect();
                for spec in specs {
                    if !followable(spec) {
                        return Err(not_routable());
                    }
                    if let Some((first, last, step)) = spec_range(spec, &args)? {
                        push_range(&mut ranges, first, last, step, argc);
                    }
                }
            }
        }
        if ranges.len() > 2 {
            return Err(not_routable());
        }
        Ok(LearnedKeys { command, ranges })
    }

    /// The subcommand `sub` of this container (`container|sub`), case-insensitively.
    fn subcommand(&self, sub: &[u8]) -> Option<&LearnedCommand> {
        let prefix = self.name.len() + 1;
        if sub.is_empty() || sub.len() > MAX_NAME_LEN {
            return None;
        }
        self.subcommands.iter().find(|s| {
            s.name.len() == prefix + sub.len()
                && s.name.as_bytes()[prefix..].eq_ignore_ascii_case(sub)
        })
    }
}

/// Redis's arity rule: `n` exactly, `-n` at least n.
pub fn arity_fits(arity: i64, argc: usize) -> bool {
    let argc = argc as i64;
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

fn followable(spec: &KeySpec) -> bool {
    let step_ok = match spec.find {
        FindKeys::Range { keystep, .. } | FindKeys::Keynum { keystep, .. } => keystep > 0,
        FindKeys::Unknown => false,
    };
    step_ok && spec.begin != BeginSearch::Unknown && !spec.incomplete
}

/// Keeps the positions `first..=last` by `step` that exist (Redis skips the ones past the
/// arguments for commands without a fixed arity, and lets the command report them).
fn push_range(ranges: &mut Vec<KeyRange>, first: i64, last: i64, step: i64, argc: usize) {
    let last = last.min(argc as i64 - 1);
    if first < 1 || last < first {
        return;
    }
    ranges.push(KeyRange::new(
        first as usize,
        step as usize,
        last as usize + 1,
    ));
}

/// One spec's `(first, last, step)` over `args` (the whole request), or `None` when its
/// keyword is absent.
fn spec_range(spec: &KeySpec, args: &[&[u8]]) -> Result<Option<(i64, i64, i64)>, KeysError> {
    let argc = args.len() as i64;
    let first = match &spec.begin {
        BeginSearch::Index(at) => *at,
        BeginSearch::Keyword { keyword, startfrom } => {
            // Forwards from `startfrom` to the one before last (a keyword there would have
            // no key after it); backwards from `argc + startfrom` down to 2.
            let found = if *startfrom > 0 {
                (*startfrom..argc - 1).find(|&i| args[i as usize].eq_ignore_ascii_case(keyword))
            } else {
                let start = (argc + startfrom).min(argc - 1);
                (2..=start)
                    .rev()
                    .find(|&i| args[i as usize].eq_ignore_ascii_case(keyword))
            };
            match found {
                Some(i) => i + 1,
                None => return Ok(None),
            }
        }
        BeginSearch::Unknown => return Ok(None),
    };
    match spec.find {
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            let last = if lastkey >= 0 {
                first.saturating_add(lastkey)
            } else if limit <= 0 {
                argc + lastkey
            } else {
                // Redis allows only -1 here: a 1/limit share of what follows `first`.
                first + ((argc - first).max(0) / limit) - 1
            };
            Ok(Some((first, last, keystep)))
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            let at = first.saturating_add(keynumidx);
            if at < 1 || at >= argc {
                return Err(KeysError::TooManyKeys);
            }
            let numkeys = parse_i64(args[at as usize]).ok_or(KeysError::NotAnInteger)?;
            if numkeys < 0 {
                return Err(KeysError::NegativeKeys);
            }
            let first = first.saturating_add(firstkey);
            let last =
                first.saturating_add(numkeys.saturating_sub(1).saturating_mul(keystep.max(1)));
            if numkeys > 0 && last >= argc {
                return Err(KeysError::TooManyKeys);
            }
            Ok((numkeys > 0).then_some((first, last, keystep)))
        }
        FindKeys::Unknown => Ok(None),
    }
}

fn parse_i64(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Encodes a value back to RESP2 (the value tree came from RESP2 bytes, so this gives the
/// same bytes).
pub fn encode(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Simple(s) => line(out, b'+', s),
        Value::Error(s) => line(out, b'-', s),
        Value::Int(n) => line(out, b':', n.to_string().as_bytes()),
        Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Value::Bulk(Some(data)) => {
            line(out, b'$', data.len().to_string().as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Value::Array(Some(items)) => {
            line(out, b'*', items.len().to_string().as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn text_of(value: &Value<'_>) -> Option<Box<str>> {
    let text = value.text()?;
    (text.len() <= MAX_NAME_LEN).then(|| String::from_utf8_lossy(text).to_ascii_lowercase().into())
}

fn words(value: Option<&Value<'_>>) -> Option<Vec<Box<str>>> {
    let Some(value) = value else {
        return Some(Vec::new());
    };
    let items = value.items()?;
    if items.len() > MAX_FLAGS {
        return None;
    }
    items.iter().map(text_of).collect()
}

/// One entry; `container` is the parent's name for a subcommand (whose name must be
/// `container|sub`).
fn entry(value: &Value<'_>, container: Option<&str>) -> Option<LearnedCommand> {
    let items = value.items()?;
    if items.len() < 6 {
        return None;
    }
    let name = text_of(&items[0])?;
    if name.is_empty() {
        return None;
    }
    match container {
        Some(parent) if !name.strip_prefix(parent)?.starts_with('|') => return None,
        None if name.contains('|') => return None,
        _ => {}
    }
    let arity = items[1].int()?;
    let flags = words(Some(&items[2]))?;
    let (first, last, step) = (items[3].int()?, items[4].int()?, items[5].int()?);
    let categories = words(items.get(6))?;
    let keys = match items.get(8) {
        Some(specs) => KeyRule::Specs(key_specs(specs)?),
        None => KeyRule::Legacy { first, last, step },
    };
    let mut subcommands = Vec::new();
    if container.is_none() {
        if let Some(subs) = items.get(9).and_then(Value::items) {
            if subs.len() > MAX_SUBCOMMANDS {
                return None;
            }
            subcommands = subs.iter().filter_map(|s| entry(s, Some(&name))).collect();
            subcommands.sort_by(|a: &LearnedCommand, b| a.name.cmp(&b.name));
        }
    }
    let mut bytes = Vec::new();
    encode(value, &mut bytes);
    Some(LearnedCommand {
        name,
        arity,
        flags,
        categories,
        keys,
        subcommands,
        entry: bytes.into(),
    })
}

fn key_specs(value: &Value<'_>) -> Option<Vec<KeySpec>> {
    let items = value.items()?;
    if items.len() > MAX_KEY_SPECS {
        return None;
    }
    items.iter().map(key_spec).collect()
}

fn key_spec(value: &Value<'_>) -> Option<KeySpec> {
    let incomplete = words(value.field(b"flags"))?
        .iter()
        .any(|f| &**f == "incomplete");
    let begin = value.field(b"begin_search")?;
    let begin_spec = begin.field(b"spec");
    let int = |map: Option<&Value<'_>>, key: &[u8]| map?.field(key)?.int();
    let begin = match begin.field(b"type")?.text()? {
        b"index" => BeginSearch::Index(int(begin_spec, b"index")?),
        b"keyword" => BeginSearch::Keyword {
            keyword: begin_spec?.field(b"keyword")?.text()?.into(),
            startfrom: int(begin_spec, b"startfrom")?,
        },
        _ => BeginSearch::Unknown,
    };
    let find = value.field(b"find_keys")?;
    let find_spec = find.field(b"spec");
    let find = match find.field(b"type")?.text()? {
        b"range" => FindKeys::Range {
            lastkey: int(find_spec, b"lastkey")?,
            keystep: int(find_spec, b"keystep")?,
            limit: int(find_spec, b"limit")?,
        },
        b"keynum" => FindKeys::Keynum {
            keynumidx: int(find_spec, b"keynumidx")?,
            firstkey: int(find_spec, b"firstkey")?,
            keystep: int(find_spec, b"keystep")?,
        },
        _ => FindKeys::Unknown,
    };
    Some(KeySpec {
        begin,
        find,
        incomplete,
    })
}

#[cfg(test)]
mod tests {
    use super::super::request::testutil::encode as request;
    use super::super::request::{Limits, RequestDecoder};
    use super::*;
    use bytes::BytesMut;

    /// `COMMAND` of the Debian redis-server 7.0.15.
    const REDIS7: &[u8] = include_bytes!("../../../tests/data/redis7-command.resp");
    /// `COMMAND` of the same server with Debian's RediSearch 1.2 module loaded.
    const REDISEARCH: &[u8] = include_bytes!("../../../tests/data/redisearch1-command.resp");

    fn req(args: &[&str]) -> Request {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let mut buf = BytesMut::from(&request(&args)[..]);
        RequestDecoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    fn redis7() -> LearnedCommands {
        LearnedCommands::parse(REDIS7).unwrap()
    }

    /// The key arguments of `args` under the Redis 7 table.
    fn keys(table: &LearnedCommands, args: &[&str]) -> Result<Vec<String>, KeysError> {
        let r = req(args);
        let found = table.keys_of(&r).expect("a learned command")?;
        Ok(found.positions().map(|i| args[i].to_string()).collect())
    }

    #[test]
    fn parses_every_redis7_command_with_its_subcommands() {
        let table = redis7();
        assert_eq!(table.len(), 240);
        assert_eq!(table.skipped, 0);
        let get = table.get(b"GeT").unwrap();
        assert_eq!(&*get.name, "get");
        assert_eq!(get.arity, 2);
        assert!(get.has_flag("readonly") && get.in_category("@read"));
        assert_eq!(
            get.keys,
            KeyRule::Specs(vec![KeySpec {
                begin: BeginSearch::Index(1),
                find: FindKeys::Range {
                    lastkey: 0,
                    keystep: 1,
                    limit: 0
                },
                incomplete: false,
            }])
        );
        let object = table.get(b"object").unwrap();
        assert!(object.is_container());
        let names: Vec<&str> = object.subcommands.iter().map(|s| &*s.name).collect();
        assert_eq!(
            names,
            [
                "object|encoding",
                "object|freq",
                "object|help",
                "object|idletime",
                "object|refcount"
            ]
        );
        // Each entry keeps the backend's exact bytes.
        let total: usize = table.commands().iter().map(|c| c.entry.len()).sum();
        let header = format!("*{}\r\n", table.len()).len();
        assert_eq!(total + header, REDIS7.len());
        assert!(table.get(b"nosuchcommand").is_none());
        assert!(table.get(&[b'g'; 1000]).is_none());
    }

    #[test]
    fn keys_follow_index_and_range_specs() {
        let t = redis7();
        assert_eq!(keys(&t, &["GET", "k"]).unwrap(), ["k"]);
        assert_eq!(keys(&t, &["MSET", "a", "1", "b", "2"]).unwrap(), ["a", "b"]);
        assert_eq!(
            keys(&t, &["SDIFF", "a", "b", "c"]).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(keys(&t, &["RENAME", "a", "b"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&t, &["BLPOP", "a", "b", "0"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&t, &["RESTORE-ASKING", "k", "0", "x"]).unwrap(), ["k"]);
        assert_eq!(keys(&t, &["PFDEBUG", "GETREG", "hll"]).unwrap(), ["hll"]);
        assert_eq!(keys(&t, &["PFSELFTEST"]).unwrap(), Vec::<String>::new());
        assert_eq!(
            keys(&t, &["BITOP", "AND", "d", "a", "b"]).unwrap(),
            ["d", "a", "b"]
        );
    }

    #[test]
    fn keys_follow_keynum_specs() {
        let t = redis7();
        assert_eq!(
            keys(&t, &["EVAL", "s", "2", "a", "b", "x"]).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            keys(&t, &["EVAL", "s", "0", "x"]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(
                &t,
                &["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]
            )
            .unwrap(),
            ["d", "a", "b"]
        );
        assert_eq!(
            keys(&t, &["LMPOP", "2", "a", "b", "LEFT"]).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            keys(&t, &["EVAL", "s", "3", "a"]),
            Err(KeysError::TooManyKeys)
        );
        assert_eq!(
            keys(&t, &["EVAL", "s", "x", "a"]),
            Err(KeysError::NotAnInteger)
        );
        assert_eq!(
            keys(&t, &["EVAL", "s", "-1", "a"]),
            Err(KeysError::NegativeKeys)
        );
    }

    #[test]
    fn keys_follow_keyword_specs() {
        let t = redis7();
        // XREAD: after STREAMS, half of what follows (limit 2).
        assert_eq!(
            keys(&t, &["XREAD", "COUNT", "2", "STREAMS", "a", "b", "0", "0"]).unwrap(),
            ["a", "b"]
        );
        // The keyword is searched backwards from the end (startfrom -2): a key named
        // `streams` is not taken for it.
        assert_eq!(
            keys(&t, &["XREAD", "STREAMS", "streams", "0"]).unwrap(),
            ["streams"]
        );
        // MIGRATE's KEYS: its specs are incomplete, so it is not routable.
        assert!(matches!(
            keys(&t, &["MIGRATE", "h", "1", "", "0", "5", "KEYS", "a"]),
            Err(KeysError::NotRoutable(_))
        ));
        // GEORADIUS: key, STORE and STOREDIST: three specs, two of them found.
        assert_eq!(
            keys(&t, &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "d"]).unwrap(),
            ["g", "d"]
        );
    }

    #[test]
    fn subcommands_have_their_own_arity_and_keys() {
        let t = redis7();
        assert_eq!(keys(&t, &["OBJECT", "encoding", "k"]).unwrap(), ["k"]);
        assert_eq!(keys(&t, &["XINFO", "STREAM", "s", "FULL"]).unwrap(), ["s"]);
        assert_eq!(keys(&t, &["MEMORY", "USAGE", "k"]).unwrap(), ["k"]);
        assert_eq!(
            keys(&t, &["OBJECT", "ENCODING"]),
            Err(KeysError::WrongArity("object|encoding".into()))
        );
        assert_eq!(
            keys(&t, &["OBJECT", "nope", "k"]),
            Err(KeysError::UnknownSubcommand {
                sub: (*b"nope").into(),
                container: "OBJECT".into()
            })
        );
        assert_eq!(
            keys(&t, &["OBJECT"]),
            Err(KeysError::WrongArity("object".into()))
        );
        assert!(t.get(b"object").unwrap().routable());
        assert!(!t.get(b"config").unwrap().routable());
    }

    #[test]
    fn arity_is_redis_s() {
        let t = redis7();
        assert_eq!(keys(&t, &["GET"]), Err(KeysError::WrongArity("get".into())));
        assert_eq!(
            keys(&t, &["GET", "a", "b"]),
            Err(KeysError::WrongArity("get".into()))
        );
        assert!(keys(&t, &["SET", "a", "b", "EX", "1"]).is_ok());
        assert!(arity_fits(-3, 3) && !arity_fits(-3, 2) && arity_fits(2, 2));
    }

    #[test]
    fn routable_means_keys_walnut_can_follow() {
        let t = redis7();
        for name in [
            "get",
            "restore-asking",
            "pfdebug",
            "eval",
            "xread",
            "object",
        ] {
            assert!(t.get(name.as_bytes()).unwrap().routable(), "{name}");
        }
        for name in ["pfselftest", "ping", "info", "migrate", "flushall"] {
            assert!(!t.get(name.as_bytes()).unwrap().routable(), "{name}");
        }
    }

    #[test]
    fn module_commands_use_their_declared_keys() {
        let t = LearnedCommands::parse(REDISEARCH).unwrap();
        assert_eq!(t.len(), 267);
        assert_eq!(t.skipped, 0);
        assert_eq!(keys(&t, &["FT.SEARCH", "idx", "hello"]).unwrap(), ["idx"]);
        assert_eq!(
            keys(&t, &["FT.CURSOR", "READ", "idx", "1"]).unwrap(),
            ["idx"]
        );
        let mget = t.get(b"FT.MGET").unwrap();
        assert!(!mget.routable() && mget.has_flag("module"));
        assert!(mget.categories.is_empty());
    }

    #[test]
    fn legacy_entries_use_first_last_step() {
        // A Redis 6 entry: seven fields, no key specs.
        let reply = b"*2\r\n*7\r\n$4\r\nmset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n*1\r\n+@write\r\n\
*6\r\n$4\r\nping\r\n:-1\r\n*0\r\n:0\r\n:0\r\n:0\r\n";
        let t = LearnedCommands::parse(reply).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(keys(&t, &["MSET", "a", "1", "b", "2"]).unwrap(), ["a", "b"]);
        assert_eq!(keys(&t, &["PING"]).unwrap(), Vec::<String>::new());
        assert!(!t.get(b"ping").unwrap().routable());
    }

    #[test]
    fn malformed_replies_give_errors_or_skip_entries() {
        assert_eq!(
            LearnedCommands::parse(b"-ERR unknown command\r\n"),
            Err(LearnError::Refused("ERR unknown command".into()))
        );
        assert_eq!(
            LearnedCommands::parse(b":1\r\n"),
            Err(LearnError::NotAnArray)
        );
        assert!(matches!(
            LearnedCommands::parse(b"*1\r\n"),
            Err(LearnError::Value(_))
        ));
        // A nil (COMMAND INFO of an unknown name), a short entry and a bad arity are skipped.
        let t = LearnedCommands::parse(
            b"*3\r\n*-1\r\n*1\r\n$1\r\nx\r\n*6\r\n$1\r\ny\r\n$1\r\nz\r\n*0\r\n:0\r\n:0\r\n:0\r\n",
        )
        .unwrap();
        assert_eq!((t.len(), t.skipped), (0, 3));
        // A zero key step is not followed.
        let t = LearnedCommands::parse(b"*1\r\n*6\r\n$1\r\nz\r\n:-2\r\n*0\r\n:1\r\n:-1\r\n:0\r\n")
            .unwrap();
        assert_eq!(
            keys(&t, &["z", "a"]),
            Err(KeysError::NotRoutable("z".into()))
        );
    }

    #[test]
    fn never_panics_on_bent_replies() {
        let sample = &REDIS7[..4096];
        let end = sample.len();
        for cut in (0..end).step_by(7) {
            let _ = LearnedCommands::parse(&REDIS7[..cut]);
        }
        let whole = redis7();
        let xread = whole.get(b"xread").unwrap().entry.to_vec();
        let framed = |entry: &[u8]| [b"*1\r\n".as_slice(), entry].concat();
        for i in 0..xread.len() {
            let mut bent = xread.clone();
            bent[i] ^= 0x11;
            if let Ok(t) = LearnedCommands::parse(&framed(&bent)) {
                for args in [
                    &["xread", "STREAMS", "a", "0"][..],
                    &["xread"],
                    &["xread", "streams"],
                ] {
                    let r = req(args);
                    let _ = t.keys_of(&r);
                }
            }
        }
    }
}
