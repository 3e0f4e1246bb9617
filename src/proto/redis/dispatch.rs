//! Redis dispatch: decides, without I/O, what the proxy does with one decoded request.
//!
//! Every client-facing error string of the Redis data path is built here, so
//! `docs/COMMANDS.md` and `docs/COMPATIBILITY.md` can list them all. Where Redis itself would
//! answer a malformed request (a bad numkeys, an unknown subcommand), the text is Redis's.

use std::time::Duration;

use super::clients::{self, ListFilter, ReplyMode};
use super::command::{
    self, BlockKeys, CommandSpec, Everywhere, Handling, Keys, Local, Refusal, StateCommand,
    Subcommand,
};
use super::fanout::Fanout;
use super::keyspecs::{KeysError, LearnedKeys};
use super::request::Request;

/// The key twemproxy routes key-less forwarded commands (`COMMAND`, `TIME`) by.
pub const PLACEHOLDER_KEY: &[u8] = b"placeholder";

/// Argument positions of keys: `first, first + step, …` below `end` (empty when `first >= end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub first: usize,
    pub step: usize,
    pub end: usize,
}

impl KeyRange {
    pub const EMPTY: KeyRange = KeyRange {
        first: 0,
        step: 1,
        end: 0,
    };

    /// Positions `first..end` by `step`.
    pub fn new(first: usize, step: usize, end: usize) -> KeyRange {
        KeyRange {
            first,
            step: step.max(1),
            end,
        }
    }

    pub fn positions(self) -> impl Iterator<Item = usize> {
        (self.first..self.end).step_by(self.step.max(1))
    }
}

/// The keys of a multi-key command: up to two ranges (e.g. `ZUNIONSTORE dest numkeys k…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRanges(pub [KeyRange; 2]);

impl KeyRanges {
    pub fn one(range: KeyRange) -> KeyRanges {
        KeyRanges([range, KeyRange::EMPTY])
    }

    pub fn positions(self) -> impl Iterator<Item = usize> {
        self.0[0].positions().chain(self.0[1].positions())
    }
}

/// The multi-key commands walnut splits per server and merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    /// Values in request order.
    Mget,
    /// The sum of the parts' integers.
    Del,
    Unlink,
    Touch,
    Exists,
    /// `+OK` only when every part is OK; keys at odd positions, values after them.
    Mset,
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Dispatch<'a> {
    /// Forward the request, byte for byte, to the server that owns `key`.
    Forward { key: &'a [u8] },
    /// A multi-key request forwarded whole: every key must map to one server.
    ForwardSameServer { keys: KeyRanges },
    /// Split per server, send the parts in parallel, merge the replies.
    Split { kind: SplitKind },
    /// A blocking command, forwarded whole on a dedicated connection of the one server its
    /// keys map to, for as long as its own timeout says.
    Block { keys: KeyRanges, wait: BlockFor },
    /// Answer locally with these bytes.
    Reply(Vec<u8>),
    /// `AUTH [username] <password>`: checked against the pool's `users`, else its
    /// `redis_auth` (which takes no username, as in twemproxy).
    Auth {
        username: Option<&'a [u8]>,
        password: &'a [u8],
    },
    /// `CLIENT SETNAME <name>`: remembered by the session, answered `+OK`.
    SetClientName { name: &'a [u8] },
    /// `CLIENT GETNAME`: the remembered name, or a null bulk.
    GetClientName,
    /// `CLIENT ID`: the session's id, unique in the process.
    ClientId,
    /// `CLIENT INFO`: the session's own line (`proto::redis::clients`).
    ClientInfo,
    /// `CLIENT LIST [TYPE t | ID id …]`: the pool's sessions, a line each.
    ClientList(ListFilter),
    /// `CLIENT REPLY ON|OFF|SKIP`: which replies the client gets from now on.
    ClientReply(ReplyMode),
    /// `TIME`: answered from walnut's clock ([`time_reply`]).
    Time,
    /// Answer locally with this text: a verbatim string (`=n txt:…`) in RESP3, a bulk
    /// string in RESP2.
    Text(Vec<u8>),
    /// `QUIT`: write pending replies, then close.
    Quit,
    /// `SELECT <db>` with an integer (the session checks it against the pool's `databases`
    /// and switches its lane of backend connections).
    Select { db: i64 },
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]` (`proto::redis::hello`).
    Hello,
    /// `CLIENT TRACKING|CACHING|TRACKINGINFO|GETREDIR` (arity checked): the session's
    /// client-side caching (`proto::redis::tracking`, `proxy::tracker`).
    Tracking(TrackingCommand),
    /// `COMMAND …`: answered from the pool's catalog when it has one, else forwarded to
    /// the server of the key `placeholder` (as twemproxy does).
    Command,
    /// A transaction or pub/sub command (arity checked): the session keeps its state.
    Stateful(StateCommand),
    /// Sent whole to every server holding data, the replies merged this way.
    Everywhere(super::fanout::Fanout),
    /// `SCAN`: on the server its cursor names (`proto::redis::fanout::ScanCursor`).
    Scan,
    /// `INFO [section …]`: walnut's sections and the servers' keyspace (`proto::redis::info`).
    Info,
}

/// The client-side caching subcommands of `CLIENT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackingCommand {
    Set,
    Caching,
    Info,
    GetRedir,
}

/// How long a blocking command may block, read from its own timeout argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockFor {
    /// A `0` timeout: until something arrives.
    Forever,
    /// At most this long. A timeout Redis refuses (negative, not a number) is `ZERO`: Redis
    /// answers it at once with its own error.
    For(Duration),
}

impl BlockFor {
    /// The longest timeout taken as given (about 31 years); Redis refuses larger ones anyway.
    const MAX_SECONDS: f64 = 1e9;

    /// A timeout in seconds, fractions allowed (BLPOP, BLMOVE, BZMPOP, …).
    pub fn seconds(arg: &[u8]) -> BlockFor {
        match std::str::from_utf8(arg)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            Some(0.0) => BlockFor::Forever,
            Some(s) if s.is_finite() && s > 0.0 => {
                BlockFor::For(Duration::from_secs_f64(s.min(Self::MAX_SECONDS)))
            }
            _ => BlockFor::For(Duration::ZERO),
        }
    }

    /// A timeout in milliseconds (XREAD's `BLOCK`).
    pub fn millis(arg: &[u8]) -> BlockFor {
        match parse_integer(arg) {
            Some(0) => BlockFor::Forever,
            Some(ms) if ms > 0 => BlockFor::For(Duration::from_millis(ms as u64)),
            _ => BlockFor::For(Duration::ZERO),
        }
    }
}

/// `-ERR …\r\n` for a walnut-generated error.
pub fn error_reply(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 7);
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

pub const PONG: &[u8] = b"+PONG\r\n";
pub const OK: &[u8] = b"+OK\r\n";
pub const NOAUTH: &[u8] = b"-NOAUTH Authentication required\r\n";
/// Redis 6+'s texts, for pools with `users:`.
pub const ACL_NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
pub const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
pub const NOPERM_KEY: &[u8] = b"-NOPERM No permissions to access a key\r\n";

/// `-NOPERM User <name> has no permissions to run the '<command>' command`.
pub fn noperm_command(user: &str, command: &str) -> Vec<u8> {
    format!(
        "-NOPERM User {} has no permissions to run the '{}' command\r\n",
        shown(user.as_bytes()),
        command.to_ascii_lowercase()
    )
    .into_bytes()
}

/// `-ERR wrong number of arguments for '<name>' command`.
pub fn wrong_arity_reply(name: &str) -> Vec<u8> {
    match wrong_arity(name) {
        Dispatch::Reply(reply) => reply,
        _ => error_reply("wrong number of arguments"),
    }
}
pub const INVALID_PASSWORD: &[u8] = b"-ERR invalid password\r\n";
pub const AUTH_NOT_SET: &[u8] = b"-ERR Client sent AUTH, but no password is set\r\n";
pub const CROSS_SERVER: &str = "keys in request don't hash to the same server";

// Redis's own texts for malformed requests walnut must answer itself.
const NOT_AN_INTEGER: &str = "value is not an integer or out of range";
const SYNTAX_ERROR: &str = "syntax error";
const TOO_MANY_KEYS: &str = "Number of keys can't be greater than number of args";
const NEGATIVE_KEYS: &str = "Number of keys can't be negative";
const NUMKEYS_NOT_POSITIVE: &str = "numkeys should be greater than 0";
const UNBALANCED_STREAMS: &str =
    "Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.";
const BAD_CLIENT_NAME: &str = "Client names cannot contain spaces, newlines or special characters.";
/// Redis's answers to a `SELECT` it cannot do.
pub const DB_OUT_OF_RANGE: &[u8] = b"-ERR DB index is out of range\r\n";
pub const SELECT_IN_CLUSTER: &[u8] = b"-ERR SELECT is not allowed in cluster mode\r\n";

/// Client-sent bytes as Redis quotes them in errors: at most 128 bytes, lossy UTF-8, and
/// CR/LF replaced by spaces so the reply stays one line.
fn shown(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(128)];
    String::from_utf8_lossy(shown).replace(['\r', '\n'], " ")
}

/// `$len\r\ndata\r\n`.
pub fn bulk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A signed 64-bit integer written the way Redis accepts one: an optional `-`, then digits
/// without a leading zero (`0` alone is fine), no sign `+`, no spaces.
fn parse_integer(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [] | [b'0', ..] => return None,
        _ if digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) => return None,
        _ => {}
    }
    let magnitude = digits
        .iter()
        .try_fold(0i128, |n, d| Some(n * 10 + i128::from(d - b'0')))?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

fn reply_error(message: &str) -> Dispatch<'static> {
    Dispatch::Reply(error_reply(message))
}

/// `wrong number of arguments for '<name>' command`, `name` lower-cased (`object|encoding`).
fn wrong_arity(name: &str) -> Dispatch<'static> {
    reply_error(&format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

fn refusal(name: &str, why: Refusal) -> Dispatch<'static> {
    let reason = match why {
        Refusal::Blocking => ": blocking commands would stall a shared backend connection",
        Refusal::Unsupported => "",
    };
    reply_error(&format!(
        "command '{}' is not supported by walnut{reason}",
        name.to_ascii_lowercase()
    ))
}

/// Decides what to do with `req`.
pub fn dispatch(req: &Request) -> Dispatch<'_> {
    dispatch_as(req, command::lookup(req.arg(0).unwrap_or_default()))
}

/// [`dispatch`] for a request whose command the caller already looked up (`spec` is
/// `command::lookup` of its name), so the table is searched once per request.
pub fn dispatch_as<'a>(req: &'a Request, spec: Option<&'static CommandSpec>) -> Dispatch<'a> {
    let Some(spec) = spec else {
        let name = req.arg(0).unwrap_or_default();
        return reply_error(&format!("unknown command '{}'", shown(name)));
    };
    match spec.handling {
        Handling::Refuse(why) => refusal(spec.name, why),
        Handling::Answer(local) => answer_locally(spec, local, req),
        _ if !command::arity_ok(spec.arity, req.argc()) => wrong_arity(spec.name),
        Handling::Split(kind) => split(kind, req),
        Handling::Route(keys) => route(spec, keys, req),
        Handling::Block(keys) => blocking(spec, keys, req),
        Handling::Stateful(command) => Dispatch::Stateful(command),
        Handling::Everywhere(Everywhere::Merge(kind)) => Dispatch::Everywhere(kind),
        Handling::Everywhere(Everywhere::Scan) => Dispatch::Scan,
        Handling::Everywhere(Everywhere::Info) => Dispatch::Info,
        Handling::Everywhere(Everywhere::Script) => script(req),
    }
}

/// A command walnut's table lacks, routed by the keys the backend's own `COMMAND` entry
/// gives it: one key is forwarded by it, several must map to one server (else
/// `-CROSSSLOT` / the cross-server error), none is refused (no server to pick).
pub fn learned<'a>(req: &'a Request, keys: Result<LearnedKeys<'_>, KeysError>) -> Dispatch<'a> {
    let keys = match keys {
        Ok(keys) => keys,
        Err(KeysError::WrongArity(name)) => return wrong_arity(&name),
        Err(KeysError::UnknownSubcommand { sub, container }) => {
            return reply_error(&format!(
                "unknown subcommand '{}'. Try {container} HELP.",
                shown(&sub)
            ))
        }
        Err(KeysError::NotAnInteger) => return reply_error(NOT_AN_INTEGER),
        Err(KeysError::NegativeKeys) => return reply_error("Number of keys can't be negative"),
        Err(KeysError::TooManyKeys) => {
            return reply_error("Number of keys can't be greater than number of args")
        }
        Err(KeysError::NotRoutable(name)) => {
            return reply_error(&format!(
                "command '{name}' is not supported by walnut: its key specs cannot be followed"
            ))
        }
    };
    let mut positions = keys.positions();
    match (positions.next(), positions.next()) {
        (None, _) => reply_error(&format!(
            "command '{}' is not supported by walnut: it has no key to pick a server by",
            keys.command.name
        )),
        (Some(only), None) => Dispatch::Forward {
            key: req.arg(only).unwrap_or_default(),
        },
        (Some(_), Some(_)) => {
            let mut ranges = [KeyRange::EMPTY; 2];
            for (slot, range) in ranges.iter_mut().zip(&keys.ranges) {
                *slot = *range;
            }
            Dispatch::ForwardSameServer {
                keys: KeyRanges(ranges),
            }
        }
    }
}

/// `SCRIPT LOAD|EXISTS|FLUSH` on every server: one SHA1, the EXISTS answers and-ed, one `+OK`.
/// `SCRIPT KILL` (which server runs the script?) and `SCRIPT DEBUG` are refused.
fn script(req: &Request) -> Dispatch<'_> {
    let sub = req.arg(1).unwrap_or_default();
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("LOAD") {
        if req.argc() != 3 {
            return wrong_arity("script|load");
        }
        Dispatch::Everywhere(Fanout::Same)
    } else if is("EXISTS") {
        if req.argc() < 3 {
            return wrong_arity("script|exists");
        }
        Dispatch::Everywhere(Fanout::AndArrays)
    } else if is("FLUSH") {
        Dispatch::Everywhere(Fanout::AllOk)
    } else {
        reply_error(&format!(
            "command 'script|{}' is not supported by walnut",
            shown(sub).to_ascii_lowercase()
        ))
    }
}

/// A blocking command's keys and how long it may block.
fn blocking<'a>(spec: &CommandSpec, keys: BlockKeys, req: &'a Request) -> Dispatch<'a> {
    let argc = req.argc();
    let last = req.arg(argc - 1).unwrap_or_default();
    let (range, timeout) = match keys {
        BlockKeys::ThenTimeout => (KeyRange::new(1, 1, argc - 1), last),
        BlockKeys::TwoThenTimeout => (KeyRange::new(1, 1, 3), last),
        BlockKeys::TimeoutNumkeys => match numkeys(spec, req, 2, false) {
            Dispatch::Forward { .. } | Dispatch::ForwardSameServer { .. } => {
                // numkeys checked it: 1 <= n <= the arguments after it.
                let n = parse_integer(req.arg(2).unwrap_or_default()).unwrap_or(1) as usize;
                (KeyRange::new(3, 1, 3 + n), req.arg(1).unwrap_or_default())
            }
            refused => return refused,
        },
    };
    Dispatch::Block {
        keys: KeyRanges::one(range),
        wait: BlockFor::seconds(timeout),
    }
}

fn answer_locally<'a>(spec: &CommandSpec, local: Local, req: &'a Request) -> Dispatch<'a> {
    let argc = req.argc();
    let arg1 = req.arg(1).unwrap_or_default();
    match local {
        // PING [message] echoes like Redis (twemproxy closes on PING with an argument).
        Local::Ping => match argc {
            1 => Dispatch::Reply(PONG.to_vec()),
            2 => Dispatch::Reply(bulk(arg1)),
            _ => wrong_arity(spec.name),
        },
        Local::Quit => Dispatch::Quit,
        Local::Auth if argc == 2 => Dispatch::Auth {
            username: None,
            password: arg1,
        },
        Local::Auth if argc == 3 => Dispatch::Auth {
            username: Some(arg1),
            password: req.arg(2).unwrap_or_default(),
        },
        Local::Auth => wrong_arity(spec.name),
        // Its subcommands take arguments; twemproxy's class (none) is for `COMMAND` alone.
        Local::Command => Dispatch::Command,
        _ if !command::arity_ok(spec.arity, argc) => wrong_arity(spec.name),
        Local::Client => client(req),
        // Redis reads the index as a C int.
        Local::Select => match parse_integer(arg1).and_then(|n| i32::try_from(n).ok()) {
            Some(db) => Dispatch::Select { db: db.into() },
            None => reply_error(NOT_AN_INTEGER),
        },
        Local::Echo => Dispatch::Reply(bulk(arg1)),
        Local::Hello => Dispatch::Hello,
        Local::Lolwut => lolwut(req),
        Local::Time => Dispatch::Time,
    }
}

/// `TIME`'s reply for `since_epoch`: seconds and microseconds, as bulk strings.
pub fn time_reply(since_epoch: std::time::Duration) -> Vec<u8> {
    let seconds = since_epoch.as_secs().to_string();
    let micros = since_epoch.subsec_micros().to_string();
    let mut out = b"*2\r\n".to_vec();
    out.extend_from_slice(&bulk(seconds.as_bytes()));
    out.extend_from_slice(&bulk(micros.as_bytes()));
    out
}

/// `LOLWUT [VERSION n [arguments …]]`: walnut's version and the Redis version its command set
/// follows. The arguments are checked as Redis checks them: `n` and the numbers versions 5
/// and 6 take after it must be integers.
fn lolwut(req: &Request) -> Dispatch<'_> {
    if req.argc() >= 3
        && req
            .arg(1)
            .unwrap_or_default()
            .eq_ignore_ascii_case(b"VERSION")
    {
        let drawing_arguments = match parse_integer(req.arg(2).unwrap_or_default()) {
            None => return reply_error(NOT_AN_INTEGER),
            Some(5) => 3,
            Some(6) => 2,
            Some(_) => 0,
        };
        if req
            .args()
            .skip(3)
            .take(drawing_arguments)
            .any(|arg| parse_integer(arg).is_none())
        {
            return reply_error(NOT_AN_INTEGER);
        }
    }
    Dispatch::Text(
        format!(
            "walnut ver. {}, a Redis proxy speaking Redis ver. {}\n",
            env!("CARGO_PKG_VERSION"),
            super::hello::REDIS_VERSION
        )
        .into_bytes(),
    )
}

/// `CLIENT SETNAME|GETNAME|SETINFO|ID|INFO|LIST|REPLY|NO-EVICT|NO-TOUCH`, answered with the
/// session's own state (the ones client libraries send on connect among them) and, for
/// `LIST`, the pool's sessions.
fn client(req: &Request) -> Dispatch<'_> {
    let sub = req.arg(1).unwrap_or_default();
    let argc = req.argc();
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("SETNAME") {
        if argc != 3 {
            return wrong_arity("client|setname");
        }
        let name = req.arg(2).unwrap_or_default();
        if name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
            return reply_error(BAD_CLIENT_NAME);
        }
        Dispatch::SetClientName { name }
    } else if is("GETNAME") {
        if argc != 2 {
            return wrong_arity("client|getname");
        }
        Dispatch::GetClientName
    } else if is("SETINFO") {
        if argc != 4 {
            return wrong_arity("client|setinfo");
        }
        Dispatch::Reply(OK.to_vec())
    } else if is("ID") {
        if argc != 2 {
            return wrong_arity("client|id");
        }
        Dispatch::ClientId
    } else if is("INFO") {
        if argc != 2 {
            return wrong_arity("client|info");
        }
        Dispatch::ClientInfo
    } else if is("LIST") {
        match clients::list_filter(req) {
            Ok(filter) => Dispatch::ClientList(filter),
            Err(err) => reply_error(&err.to_string()),
        }
    } else if is("REPLY") {
        if argc != 3 {
            return wrong_arity("client|reply");
        }
        match clients::reply_mode(req.arg(2).unwrap_or_default()) {
            Ok(mode) => Dispatch::ClientReply(mode),
            Err(err) => reply_error(&err.to_string()),
        }
    } else if is("TRACKING") || is("CACHING") || is("TRACKINGINFO") || is("GETREDIR") {
        let (command, name, fits) = if is("TRACKING") {
            (TrackingCommand::Set, "client|tracking", argc >= 3)
        } else if is("CACHING") {
            (TrackingCommand::Caching, "client|caching", argc == 3)
        } else if is("TRACKINGINFO") {
            (TrackingCommand::Info, "client|trackinginfo", argc == 2)
        } else {
            (TrackingCommand::GetRedir, "client|getredir", argc == 2)
        };
        match fits {
            true => Dispatch::Tracking(command),
            false => wrong_arity(name),
        }
    } else if is("NO-EVICT") || is("NO-TOUCH") {
        // Accepted as Redis does; the session's requests share backend connections, so
        // neither changes what the servers do.
        let name = if is("NO-EVICT") {
            "no-evict"
        } else {
            "no-touch"
        };
        if argc != 3 {
            return wrong_arity(&format!("client|{name}"));
        }
        let flag = req.arg(2).unwrap_or_default();
        if flag.eq_ignore_ascii_case(b"ON") || flag.eq_ignore_ascii_case(b"OFF") {
            Dispatch::Reply(OK.to_vec())
        } else {
            reply_error("syntax error")
        }
    } else {
        reply_error(&format!(
            "command 'client|{}' is not supported by walnut",
            shown(sub).to_ascii_lowercase()
        ))
    }
}

/// MGET, DEL, UNLINK, TOUCH, EXISTS (keys from 1) and MSET (pairs from 1).
fn split(kind: SplitKind, req: &Request) -> Dispatch<'_> {
    let one_key = match kind {
        SplitKind::Mset => req.argc() == 3,
        _ => req.argc() == 2,
    };
    if one_key {
        Dispatch::Forward {
            key: req.arg(1).unwrap_or_default(),
        }
    } else {
        Dispatch::Split { kind }
    }
}

/// `count` keys from `first`, `step` apart: forwarded by the key when there is one.
fn keys_from(req: &Request, first: usize, step: usize, count: usize) -> Dispatch<'_> {
    if count == 1 {
        Dispatch::Forward {
            key: req.arg(first).unwrap_or_default(),
        }
    } else {
        Dispatch::ForwardSameServer {
            keys: KeyRanges::one(KeyRange::new(first, step, first + step * (count - 1) + 1)),
        }
    }
}

fn route<'a>(spec: &CommandSpec, keys: Keys, req: &'a Request) -> Dispatch<'a> {
    let argc = req.argc();
    match keys {
        Keys::Placeholder => Dispatch::Forward {
            key: PLACEHOLDER_KEY,
        },
        Keys::Span { first, count } => {
            let (first, count) = (usize::from(first), usize::from(count));
            if first + count > argc {
                return wrong_arity(spec.name);
            }
            keys_from(req, first, 1, count)
        }
        Keys::ToEnd { first, step } => {
            let (first, step) = (usize::from(first), usize::from(step).max(1));
            if first >= argc {
                return wrong_arity(spec.name);
            }
            keys_from(req, first, step, (argc - first).div_ceil(step))
        }
        Keys::Numkeys { at } => numkeys(spec, req, usize::from(at), false),
        Keys::DestNumkeys => numkeys(spec, req, 2, true),
        Keys::StoreOption { from } => store_option(req, usize::from(from)),
        Keys::Streams => streams(req),
        Keys::Subcommand(table) => subcommand(spec, table, req),
    }
}

/// How a command family reports a bad numkeys, in Redis's words.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NumkeysRules {
    /// EVAL, EVALSHA, FCALL and their `_RO` forms: numkeys 0 is valid in Redis but leaves
    /// walnut nothing to route by.
    Script {
        family: &'static str,
        not_an_integer: &'static str,
    },
    /// ZUNION, ZINTER, ZDIFF, ZINTERCARD and the `*STORE` forms.
    SortedSet,
    /// LMPOP, ZMPOP.
    Pop,
    /// SINTERCARD.
    Intercard,
}

impl NumkeysRules {
    fn of(name: &str) -> NumkeysRules {
        match name {
            "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" => NumkeysRules::Script {
                family: "EVAL",
                not_an_integer: NOT_AN_INTEGER,
            },
            "FCALL" | "FCALL_RO" => NumkeysRules::Script {
                family: "FCALL",
                not_an_integer: "Bad number of keys provided",
            },
            "LMPOP" | "ZMPOP" | "BLMPOP" | "BZMPOP" => NumkeysRules::Pop,
            "SINTERCARD" => NumkeysRules::Intercard,
            _ => NumkeysRules::SortedSet,
        }
    }
}

/// `numkeys` at `at` and that many keys after it, plus a destination key at 1 for `dest`.
fn numkeys<'a>(spec: &CommandSpec, req: &'a Request, at: usize, dest: bool) -> Dispatch<'a> {
    let argc = req.argc();
    let first = at + 1;
    let rules = NumkeysRules::of(spec.name);
    let script = matches!(rules, NumkeysRules::Script { .. });
    // Redis's own arity leaves room for at least one key (scripts may have none).
    if argc < first || (!script && argc == first) {
        return wrong_arity(spec.name);
    }
    let n = parse_integer(req.arg(at).unwrap_or_default());
    let available = (argc - first) as i64;
    let problem = match (rules, n) {
        (NumkeysRules::Script { not_an_integer, .. }, None) => Some(not_an_integer.to_owned()),
        (NumkeysRules::Script { .. }, Some(n)) if n < 0 => Some(NEGATIVE_KEYS.to_owned()),
        (NumkeysRules::Script { family, .. }, Some(0)) => Some(format!(
            "{family} without keys cannot be routed by walnut: numkeys must be at least 1"
        )),
        (NumkeysRules::SortedSet, None) => Some(NOT_AN_INTEGER.to_owned()),
        (NumkeysRules::SortedSet, Some(n)) if n < 1 => Some(format!(
            "at least 1 input key is needed for '{}' command",
            spec.name.to_ascii_lowercase()
        )),
        (NumkeysRules::Pop | NumkeysRules::Intercard, None) => {
            Some(NUMKEYS_NOT_POSITIVE.to_owned())
        }
        (NumkeysRules::Pop | NumkeysRules::Intercard, Some(n)) if n < 1 => {
            Some(NUMKEYS_NOT_POSITIVE.to_owned())
        }
        (NumkeysRules::Script { .. } | NumkeysRules::Intercard, Some(n)) if n > available => {
            Some(TOO_MANY_KEYS.to_owned())
        }
        (NumkeysRules::SortedSet | NumkeysRules::Pop, Some(n)) if n > available => {
            Some(SYNTAX_ERROR.to_owned())
        }
        _ => None,
    };
    if let Some(message) = problem {
        return reply_error(&message);
    }
    // 1 <= n <= available, checked above.
    let n = n.unwrap_or(1) as usize;
    if dest {
        Dispatch::ForwardSameServer {
            keys: KeyRanges([KeyRange::new(1, 1, 2), KeyRange::new(first, 1, first + n)]),
        }
    } else {
        keys_from(req, first, 1, n)
    }
}

/// SORT (`… STORE dst`) and GEORADIUS[BYMEMBER] (`… STORE|STOREDIST dst`): the key at 1,
/// plus the destination when there is one. Option values are skipped, so a SORT pattern
/// that reads `store` is not taken for the option; the last STORE wins, as in Redis.
fn store_option(req: &Request, from: usize) -> Dispatch<'_> {
    let argc = req.argc();
    let mut dest = None;
    let mut args = req.args().enumerate().skip(from);
    while let Some((i, arg)) = args.next() {
        let is = |name: &str| arg.eq_ignore_ascii_case(name.as_bytes());
        let values = if is("STORE") || is("STOREDIST") {
            if i + 1 < argc {
                dest = Some(i + 1);
            }
            1
        } else if is("LIMIT") {
            2
        } else if is("BY") || is("GET") || is("COUNT") {
            1
        } else {
            0
        };
        for _ in 0..values {
            args.next();
        }
    }
    match dest {
        Some(d) => Dispatch::ForwardSameServer {
            keys: KeyRanges([KeyRange::new(1, 1, 2), KeyRange::new(d, 1, d + 1)]),
        },
        None => Dispatch::Forward {
            key: req.arg(1).unwrap_or_default(),
        },
    }
}

/// XREAD, XREADGROUP: options, then `STREAMS key [key …] id [id …]`. With `BLOCK` the
/// command would hold the shared backend connection, so it is refused.
fn streams(req: &Request) -> Dispatch<'_> {
    let argc = req.argc();
    let mut block = None;
    let mut streams_at = None;
    let mut args = req.args().enumerate().skip(1);
    while let Some((i, arg)) = args.next() {
        let is = |name: &str| arg.eq_ignore_ascii_case(name.as_bytes());
        let values = if is("STREAMS") {
            streams_at = Some(i);
            break;
        } else if is("BLOCK") {
            block = Some(args.next().map(|(_, ms)| ms).unwrap_or_default());
            0
        } else if is("COUNT") || is("CLAIM") {
            1
        } else if is("GROUP") {
            2
        } else {
            0
        };
        for _ in 0..values {
            args.next();
        }
    }
    let Some(at) = streams_at else {
        return reply_error(SYNTAX_ERROR);
    };
    let rest = argc - at - 1;
    if rest == 0 {
        return reply_error(SYNTAX_ERROR);
    }
    if rest % 2 == 1 {
        return reply_error(UNBALANCED_STREAMS);
    }
    if let Some(ms) = block {
        return Dispatch::Block {
            keys: KeyRanges::one(KeyRange::new(at + 1, 1, at + 1 + rest / 2)),
            wait: BlockFor::millis(ms),
        };
    }
    keys_from(req, at + 1, 1, rest / 2)
}

/// OBJECT, XGROUP, XINFO: the subcommand decides the arity and the key.
fn subcommand<'a>(
    spec: &CommandSpec,
    table: &'static [Subcommand],
    req: &'a Request,
) -> Dispatch<'a> {
    let name = req.arg(1).unwrap_or_default();
    let Some(sub) = command::lookup_subcommand(table, name) else {
        return reply_error(&format!(
            "unknown subcommand '{}'. Try {} HELP.",
            shown(name),
            spec.name
        ));
    };
    if !command::arity_ok(sub.arity, req.argc()) {
        return wrong_arity(&format!("{}|{}", spec.name, sub.name));
    }
    route(spec, sub.keys, req)
}

#[cfg(test)]
mod tests {
    use super::super::request::testutil::encode;
    use super::super::request::{Limits, RequestDecoder};
    use super::*;
    use bytes::BytesMut;

    fn request(args: &[&[u8]]) -> Request {
        let mut buf = BytesMut::from(&encode(args)[..]);
        let mut decoder = RequestDecoder::new(Limits::default());
        decoder.decode(&mut buf).unwrap().unwrap()
    }

    /// Asserts the decision for a request given as space-separated words.
    #[track_caller]
    fn check(words: &str, want: Dispatch<'_>) {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        check_args(&args, want);
    }

    #[track_caller]
    fn check_args(args: &[&[u8]], want: Dispatch<'_>) {
        let req = request(args);
        assert_eq!(
            dispatch(&req),
            want,
            "{:?}",
            String::from_utf8_lossy(&encode(args))
        );
    }

    fn fwd(key: &str) -> Dispatch<'_> {
        Dispatch::Forward {
            key: key.as_bytes(),
        }
    }

    /// ForwardSameServer over `(first, step, end)` ranges.
    fn same(ranges: &[(usize, usize, usize)]) -> Dispatch<'static> {
        let mut keys = [KeyRange::EMPTY; 2];
        for (slot, &(first, step, end)) in keys.iter_mut().zip(ranges) {
            *slot = KeyRange::new(first, step, end);
        }
        Dispatch::ForwardSameServer {
            keys: KeyRanges(keys),
        }
    }

    fn split(kind: SplitKind) -> Dispatch<'static> {
        Dispatch::Split { kind }
    }

    /// A reply given without the trailing CRLF.
    fn reply(text: &str) -> Dispatch<'static> {
        Dispatch::Reply(format!("{text}\r\n").into_bytes())
    }

    /// The decision for `words` under the backend's learned table.
    #[track_caller]
    fn check_learned(
        table: &super::super::keyspecs::LearnedCommands,
        words: &str,
        want: Dispatch<'_>,
    ) {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let req = request(&args);
        let keys = table.keys_of(&req).expect("a learned command");
        assert_eq!(learned(&req, keys), want, "{words}");
    }

    #[test]
    fn commands_only_the_backend_knows_route_by_its_key_specs() {
        use super::super::keyspecs::LearnedCommands;
        let redis7 = include_bytes!("../../../tests/data/redis7-command.resp");
        let table = LearnedCommands::parse(redis7).unwrap();
        check_learned(&table, "PFDEBUG ENCODING k", fwd("k"));
        check_learned(&table, "RESTORE-ASKING k 0 x", fwd("k"));
        check_learned(&table, "PFDEBUG ENCODING", arity("pfdebug"));
        check_learned(
            &table,
            "PFSELFTEST",
            reply("-ERR command 'pfselftest' is not supported by walnut: it has no key to pick a server by"),
        );
        // Walnut's table knows these, but their specs give the same keys.
        check_learned(&table, "MSET a 1 b 2", same(&[(1, 2, 5)]));
        check_learned(&table, "OBJECT ENCODING k", fwd("k"));
        check_learned(
            &table,
            "OBJECT NOPE k",
            reply("-ERR unknown subcommand 'NOPE'. Try OBJECT HELP."),
        );
        check_learned(&table, "ZUNIONSTORE d 2 a b", same(&[(1, 1, 2), (3, 1, 5)]));
        check_learned(
            &table,
            "ZUNIONSTORE d x a b",
            reply("-ERR value is not an integer or out of range"),
        );
        check_learned(
            &table,
            "ZUNIONSTORE d -1 a",
            reply("-ERR Number of keys can't be negative"),
        );
        check_learned(
            &table,
            "ZUNIONSTORE d 5 a",
            reply("-ERR Number of keys can't be greater than number of args"),
        );
    }

    fn arity(name: &str) -> Dispatch<'static> {
        reply(&format!(
            "-ERR wrong number of arguments for '{name}' command"
        ))
    }

    #[test]
    fn twemproxy_classes_route_by_their_key() {
        // argz / nokey: the placeholder key.
        check("COMMAND", Dispatch::Command);
        check("command count", Dispatch::Command);
        check("TIME", Dispatch::Time);
        check("TIME now", wrong_arity("time"));
        // arg0 .. arg3, argn: the first argument.
        check("GET k", fwd("k"));
        check("EXPIRE k 10", fwd("k"));
        check("SETEX k 10 v", fwd("k"));
        check("LINSERT k BEFORE p v", fwd("k"));
        check("SET k v EX 10 GET", fwd("k"));
        check("HSET h f v f2 v2", fwd("h"));
        check("ZRANGEBYSCORE z 0 10 WITHSCORES", fwd("z"));
        check("ZREMRANGEBYSCORE z 0 10", fwd("z"));
        check("ZSCORE z m", fwd("z"));
        check("SETRANGE k 0 v", fwd("k"));
        check("GETEX k PERSIST", fwd("k"));
        check("GETDEL k", fwd("k"));
        check("SMISMEMBER s a b", fwd("s"));
        check("GEOSEARCH g FROMMEMBER m BYRADIUS 1 km", fwd("g"));
        check("BITFIELD b GET u8 0", fwd("b"));
        check("RESTORE k 0 payload", fwd("k"));
    }

    #[test]
    fn mixed_case_names_and_options() {
        check("gEt k", fwd("k"));
        check("mGeT a b", split(SplitKind::Mget));
        check("zUnIoNsToRe d 2 a b", same(&[(1, 1, 2), (3, 1, 5)]));
        check("sort k limit 0 1 store d", same(&[(1, 1, 2), (6, 1, 7)]));
        check("xread count 1 streams s 0", fwd("s"));
        check("object encoding k", fwd("k"));
        check("Select 0", Dispatch::Select { db: 0 });
    }

    #[test]
    fn split_commands_forward_one_key_and_split_more() {
        check("MGET a", fwd("a"));
        check("MGET a b", split(SplitKind::Mget));
        check("DEL a", fwd("a"));
        check("DEL a b c", split(SplitKind::Del));
        check("UNLINK a", fwd("a"));
        check("UNLINK a b", split(SplitKind::Unlink));
        check("TOUCH a", fwd("a"));
        check("TOUCH a b", split(SplitKind::Touch));
        check("EXISTS a", fwd("a"));
        check("EXISTS a b", split(SplitKind::Exists));
        check("MSET a 1", fwd("a"));
        check("MSET a 1 b 2", split(SplitKind::Mset));
        check("MSET a 1 b", arity("mset"));
        check("MSET a", arity("mset"));
        check("MGET", arity("mget"));
        check("EXISTS", arity("exists"));
    }

    #[test]
    fn multi_key_commands_need_one_server() {
        check("SDIFF a", fwd("a"));
        check("SDIFF a b c", same(&[(1, 1, 4)]));
        check("SDIFFSTORE d a b", same(&[(1, 1, 4)]));
        check("SINTER a b", same(&[(1, 1, 3)]));
        check("SINTERSTORE d a", same(&[(1, 1, 3)]));
        check("SUNION a b", same(&[(1, 1, 3)]));
        check("SUNIONSTORE d a b", same(&[(1, 1, 4)]));
        check("SMOVE a b m", same(&[(1, 1, 3)]));
        check("RPOPLPUSH a b", same(&[(1, 1, 3)]));
        check("LMOVE a b LEFT RIGHT", same(&[(1, 1, 3)]));
        check("PFCOUNT a", fwd("a"));
        check("PFCOUNT a b", same(&[(1, 1, 3)]));
        check("PFMERGE d a b", same(&[(1, 1, 4)]));
        check("ZRANGESTORE d src 0 -1", same(&[(1, 1, 3)]));
        check(
            "GEOSEARCHSTORE d src FROMMEMBER m BYRADIUS 1 km",
            same(&[(1, 1, 3)]),
        );
        check("COPY a b", same(&[(1, 1, 3)]));
        check("COPY a b REPLACE", same(&[(1, 1, 3)]));
        check("COPY a", arity("copy"));
        check("ZRANGESTORE d", arity("zrangestore"));
        check("RENAME a b", same(&[(1, 1, 3)]));
        check("RENAMENX a b", same(&[(1, 1, 3)]));
        check("RENAME a", arity("rename"));
        check("LCS a b", same(&[(1, 1, 3)]));
        check("LCS a b LEN", same(&[(1, 1, 3)]));
        check("MSETNX a 1", fwd("a"));
        check("MSETNX a 1 b 2 c 3", same(&[(1, 2, 6)]));
        check("MSETNX a 1 b", arity("msetnx"));
        check("BITOP AND d a", same(&[(2, 1, 4)]));
        check("BITOP OR d a b", same(&[(2, 1, 5)]));
        check("BITOP NOT d", arity("bitop"));
    }

    #[test]
    fn numkeys_commands() {
        check(
            "ZUNIONSTORE dst 2 a b WEIGHTS 1 2",
            same(&[(1, 1, 2), (3, 1, 5)]),
        );
        check("ZINTERSTORE dst 1 a", same(&[(1, 1, 2), (3, 1, 4)]));
        check("ZDIFFSTORE dst 2 a b", same(&[(1, 1, 2), (3, 1, 5)]));
        check("ZUNION 1 a", fwd("a"));
        check("ZUNION 2 a b WITHSCORES", same(&[(2, 1, 4)]));
        check("ZINTER 2 a b", same(&[(2, 1, 4)]));
        check("ZDIFF 3 a b c", same(&[(2, 1, 5)]));
        check("ZINTERCARD 2 a b LIMIT 1", same(&[(2, 1, 4)]));
        check("LMPOP 2 a b LEFT", same(&[(2, 1, 4)]));
        check("LMPOP 1 a LEFT COUNT 2", fwd("a"));
        check("ZMPOP 2 a b MIN", same(&[(2, 1, 4)]));
        check("SINTERCARD 2 a b LIMIT 1", same(&[(2, 1, 4)]));
        check("SINTERCARD 1 a", fwd("a"));
        check("EVAL s 2 a b x", same(&[(3, 1, 5)]));
        check("EVAL s 1 a x y", fwd("a"));
        check("EVALSHA sha 2 a b", same(&[(3, 1, 5)]));
        check("EVAL_RO s 1 a", fwd("a"));
        check("EVALSHA_RO sha 2 a b", same(&[(3, 1, 5)]));
        check("FCALL f 2 a b x", same(&[(3, 1, 5)]));
        check("FCALL_RO f 1 a", fwd("a"));
    }

    #[test]
    fn bad_numkeys_get_redis_errors() {
        // EVAL family.
        check(
            "EVAL s 0 x",
            reply("-ERR EVAL without keys cannot be routed by walnut: numkeys must be at least 1"),
        );
        check(
            "EVALSHA sha 0 x",
            reply("-ERR EVAL without keys cannot be routed by walnut: numkeys must be at least 1"),
        );
        check(
            "FCALL f 0",
            reply("-ERR FCALL without keys cannot be routed by walnut: numkeys must be at least 1"),
        );
        check(
            "EVAL s x a",
            reply("-ERR value is not an integer or out of range"),
        );
        check(
            "EVAL s 01 a",
            reply("-ERR value is not an integer or out of range"),
        );
        check(
            "EVAL s +1 a",
            reply("-ERR value is not an integer or out of range"),
        );
        check(
            "EVAL s -1 a",
            reply("-ERR Number of keys can't be negative"),
        );
        check(
            "EVAL s 3 a b",
            reply("-ERR Number of keys can't be greater than number of args"),
        );
        check("EVAL s 1", arity("eval"));
        check("FCALL f x a", reply("-ERR Bad number of keys provided"));
        check(
            "FCALL f -1 a",
            reply("-ERR Number of keys can't be negative"),
        );
        check(
            "FCALL f 2 a",
            reply("-ERR Number of keys can't be greater than number of args"),
        );
        // Sorted sets.
        check(
            "ZUNIONSTORE d x a",
            reply("-ERR value is not an integer or out of range"),
        );
        check(
            "ZUNIONSTORE d 0 a",
            reply("-ERR at least 1 input key is needed for 'zunionstore' command"),
        );
        check(
            "ZINTER -1 a",
            reply("-ERR at least 1 input key is needed for 'zinter' command"),
        );
        check("ZUNIONSTORE d 3 a b", reply("-ERR syntax error"));
        check("ZDIFF 3 a b", reply("-ERR syntax error"));
        check("ZUNIONSTORE d 1", arity("zunionstore"));
        check("ZUNIONSTORE d", arity("zunionstore"));
        check("ZUNION 1", arity("zunion"));
        check(
            "ZINTERCARD 0 a",
            reply("-ERR at least 1 input key is needed for 'zintercard' command"),
        );
        // Pops and SINTERCARD.
        check(
            "LMPOP x a LEFT",
            reply("-ERR numkeys should be greater than 0"),
        );
        check(
            "LMPOP 0 a LEFT",
            reply("-ERR numkeys should be greater than 0"),
        );
        check("ZMPOP 3 a MIN", reply("-ERR syntax error"));
        check("LMPOP 1 a", arity("lmpop"));
        check(
            "SINTERCARD x a",
            reply("-ERR numkeys should be greater than 0"),
        );
        check(
            "SINTERCARD 3 a b",
            reply("-ERR Number of keys can't be greater than number of args"),
        );
        check(
            "EVAL s 99999999999999999999 a",
            reply("-ERR value is not an integer or out of range"),
        );
    }

    #[test]
    fn store_options_add_the_destination() {
        check("SORT k", fwd("k"));
        check("SORT k ALPHA DESC", fwd("k"));
        check("SORT k STORE d", same(&[(1, 1, 2), (3, 1, 4)]));
        check("SORT k BY w_* GET # STORE d", same(&[(1, 1, 2), (7, 1, 8)]));
        // A pattern that reads "store" is a value, not the option.
        check("SORT k BY store", fwd("k"));
        check("SORT k GET store LIMIT 0 10", fwd("k"));
        check("SORT k STORE d1 STORE d2", same(&[(1, 1, 2), (5, 1, 6)]));
        check("SORT k STORE", fwd("k"));
        check("SORT_RO k BY w_*", fwd("k"));
        check("GEORADIUS g 0 0 1 km", fwd("g"));
        check(
            "GEORADIUS g 0 0 1 km COUNT 5 STORE d",
            same(&[(1, 1, 2), (9, 1, 10)]),
        );
        check(
            "GEORADIUS g 0 0 1 km STOREDIST d",
            same(&[(1, 1, 2), (7, 1, 8)]),
        );
        check(
            "GEORADIUSBYMEMBER g m 1 km STORE d",
            same(&[(1, 1, 2), (6, 1, 7)]),
        );
        check("GEORADIUSBYMEMBER g m 1 km WITHDIST", fwd("g"));
        check("GEORADIUS_RO g 0 0 1 km", fwd("g"));
        check("GEORADIUSBYMEMBER_RO g m 1 km", fwd("g"));
    }

    #[test]
    fn streams() {
        check("XREAD COUNT 2 STREAMS s1 s2 0 0", same(&[(4, 1, 6)]));
        check("XREAD STREAMS s 0", fwd("s"));
        check(
            "XREADGROUP GROUP g c COUNT 1 NOACK STREAMS s1 s2 > >",
            same(&[(8, 1, 10)]),
        );
        check("XREADGROUP GROUP streams c STREAMS s >", fwd("s"));
        let block = |first, end, wait| Dispatch::Block {
            keys: KeyRanges::one(KeyRange::new(first, 1, end)),
            wait,
        };
        check("XREAD BLOCK 0 STREAMS s 0", block(4, 5, BlockFor::Forever));
        check(
            "xread count 1 block 10 streams s $",
            block(6, 7, BlockFor::For(Duration::from_millis(10))),
        );
        check(
            "XREADGROUP GROUP g c BLOCK 100 STREAMS s >",
            block(7, 8, BlockFor::For(Duration::from_millis(100))),
        );
        // BLOCK after STREAMS is a key.
        check("XREAD STREAMS BLOCK 0", fwd("BLOCK"));
        check(
            "XREAD STREAMS a b 0",
            reply(
                "-ERR Unbalanced XREAD list of streams: \
                 for each stream key an ID or '$' must be specified.",
            ),
        );
        check("XREAD COUNT 1 a b", reply("-ERR syntax error"));
        check("XREAD COUNT 1 STREAMS", reply("-ERR syntax error"));
        check("XREAD STREAMS", arity("xread"));
        check("XREADGROUP GROUP g c STREAMS s", arity("xreadgroup"));
    }

    #[test]
    fn added_single_key_commands() {
        for words in [
            "GETEX k EX 10",
            "GETDEL k",
            "XADD k * f v",
            "XRANGE k - +",
            "XREVRANGE k + -",
            "XLEN k",
            "XDEL k 1-1",
            "XTRIM k MAXLEN 10",
            "XACK k g 1-1",
            "XCLAIM k g c 0 1-1",
            "XAUTOCLAIM k g c 0 0",
            "XPENDING k g",
            "XSETID k 1-1",
            "EXPIRETIME k",
            "PEXPIRETIME k",
            "HSETEX k FIELDS 1 f v",
            "HGETEX k PERSIST FIELDS 1 f",
            "HGETDEL k FIELDS 1 f",
            "HEXPIRE k 10 FIELDS 1 f",
            "HPEXPIRE k 10 NX FIELDS 1 f",
            "HEXPIREAT k 10 FIELDS 1 f",
            "HPEXPIREAT k 10 FIELDS 1 f",
            "HTTL k FIELDS 1 f",
            "HPTTL k FIELDS 1 f",
            "HEXPIRETIME k FIELDS 1 f",
            "HPEXPIRETIME k FIELDS 1 f",
            "HPERSIST k FIELDS 1 f",
            "BITFIELD_RO k GET u8 0",
            "SORT_RO k",
            "SUBSTR k 0 1",
        ] {
            check(words, fwd("k"));
        }
    }

    #[test]
    fn added_commands_check_redis_arity() {
        check("XLEN", arity("xlen"));
        check("XLEN k x", arity("xlen"));
        check("XADD k *", arity("xadd"));
        check("HTTL k FIELDS 1", arity("httl"));
        check("HSETEX k FIELDS 1 f", arity("hsetex"));
        check("EXPIRETIME k x", arity("expiretime"));
        check("LCS a", arity("lcs"));
        check("GET", arity("get"));
        check("GET a b", arity("get"));
        check("ECHO", arity("echo"));
        check("ECHO a b", arity("echo"));
        check("SELECT", arity("select"));
        check("SELECT 0 1", arity("select"));
        check("CLIENT", arity("client"));
        check("AUTH", arity("auth"));
        check(
            "AUTH user pass",
            Dispatch::Auth {
                username: Some(b"user"),
                password: b"pass",
            },
        );
        check("AUTH a b c", arity("auth"));
        check("PING a b", arity("ping"));
    }

    #[test]
    fn subcommands_route_by_the_key_at_2() {
        check("OBJECT ENCODING k", fwd("k"));
        check("object freq k", fwd("k"));
        check("OBJECT IDLETIME k", fwd("k"));
        check("OBJECT REFCOUNT k", fwd("k"));
        check("OBJECT HELP", fwd("placeholder"));
        check("XINFO STREAM k FULL", fwd("k"));
        check("XINFO GROUPS k", fwd("k"));
        check("XINFO CONSUMERS k g", fwd("k"));
        check("XGROUP CREATE k g $ MKSTREAM", fwd("k"));
        check("XGROUP CREATECONSUMER k g c", fwd("k"));
        check("XGROUP DELCONSUMER k g c", fwd("k"));
        check("XGROUP DESTROY k g", fwd("k"));
        check("XGROUP SETID k g $", fwd("k"));
        check("xgroup help", fwd("placeholder"));
        check("OBJECT", arity("object"));
        check("OBJECT ENCODING", arity("object|encoding"));
        check("OBJECT encoding a b", arity("object|encoding"));
        check("OBJECT HELP x", arity("object|help"));
        check("XGROUP CREATE k", arity("xgroup|create"));
        check("XINFO STREAM", arity("xinfo|stream"));
        check(
            "OBJECT Foo k",
            reply("-ERR unknown subcommand 'Foo'. Try OBJECT HELP."),
        );
        check(
            "XINFO FOO",
            reply("-ERR unknown subcommand 'FOO'. Try XINFO HELP."),
        );
        check(
            "XGROUP x",
            reply("-ERR unknown subcommand 'x'. Try XGROUP HELP."),
        );
    }

    #[test]
    fn client_info_list_and_reply_are_answered_by_the_session() {
        check("CLIENT INFO", Dispatch::ClientInfo);
        check("client info x", arity("client|info"));
        check("CLIENT List", Dispatch::ClientList(ListFilter::All));
        check(
            "CLIENT LIST ID 4 5",
            Dispatch::ClientList(ListFilter::Ids(vec![4, 5])),
        );
        check(
            "CLIENT LIST TYPE normal",
            Dispatch::ClientList(ListFilter::Type(clients::ClientType::Normal)),
        );
        check(
            "CLIENT LIST TYPE nobody",
            reply("-ERR Unknown client type 'nobody'"),
        );
        check("CLIENT LIST ID 4 x", reply("-ERR Invalid client ID"));
        check("CLIENT LIST ID", reply("-ERR syntax error"));
        check("CLIENT REPLY on", Dispatch::ClientReply(ReplyMode::On));
        check("CLIENT REPLY OFF", Dispatch::ClientReply(ReplyMode::Off));
        check("CLIENT REPLY Skip", Dispatch::ClientReply(ReplyMode::Skip));
        check("CLIENT REPLY maybe", reply("-ERR syntax error"));
        check("CLIENT REPLY", arity("client|reply"));
        check("CLIENT REPLY ON x", arity("client|reply"));
    }

    #[test]
    fn time_is_seconds_and_microseconds_as_bulk_strings() {
        let at = std::time::Duration::from_micros(1_700_000_000_000_042);
        assert_eq!(
            time_reply(at),
            b"*2\r\n$10\r\n1700000000\r\n$2\r\n42\r\n".to_vec()
        );
    }

    #[test]
    fn lolwut_names_walnut_and_checks_numbers_as_redis_does() {
        let text = format!(
            "walnut ver. {}, a Redis proxy speaking Redis ver. {}\n",
            env!("CARGO_PKG_VERSION"),
            super::super::hello::REDIS_VERSION
        )
        .into_bytes();
        for fine in [
            "LOLWUT",
            "LOLWUT VERSION",
            "LOLWUT foo VERSION x",
            "LOLWUT VERSION -1",
            "LOLWUT VERSION 5 1 2 3 x",
            "lolwut version 6 1 2 x",
        ] {
            check(fine, Dispatch::Text(text.clone()));
        }
        for bad in [
            "LOLWUT VERSION x",
            "LOLWUT VERSION 06",
            "LOLWUT VERSION 5 x",
            "LOLWUT VERSION 5 1 1 x",
            "LOLWUT VERSION 6 1 x",
        ] {
            check(bad, reply("-ERR value is not an integer or out of range"));
        }
    }

    #[test]
    fn connect_time_commands_are_answered_locally() {
        check("CLIENT SETINFO lib-name redis-py", reply("+OK"));
        check("client setinfo LIB-VER 5.0", reply("+OK"));
        check("CLIENT SETINFO lib-name", arity("client|setinfo"));
        check("CLIENT ID", Dispatch::ClientId);
        check("client id x", arity("client|id"));
        // Client-side caching: each subcommand, and its arity.
        use TrackingCommand::{Caching, GetRedir, Info, Set};
        for (fits, command, misfit, name) in [
            (
                "CLIENT TRACKING on BCAST",
                Set,
                "client tracking",
                "client|tracking",
            ),
            (
                "CLIENT CACHING yes",
                Caching,
                "CLIENT CACHING",
                "client|caching",
            ),
            (
                "CLIENT TRACKINGINFO",
                Info,
                "CLIENT TRACKINGINFO x",
                "client|trackinginfo",
            ),
            (
                "client getredir",
                GetRedir,
                "CLIENT GETREDIR x",
                "client|getredir",
            ),
        ] {
            check(fits, Dispatch::Tracking(command));
            check(misfit, arity(name));
        }
        check("CLIENT NO-EVICT on", reply("+OK"));
        check("CLIENT NO-TOUCH OFF", reply("+OK"));
        check("CLIENT NO-TOUCH maybe", reply("-ERR syntax error"));
        check("CLIENT NO-EVICT", arity("client|no-evict"));
        check(
            "CLIENT SETNAME app",
            Dispatch::SetClientName { name: b"app" },
        );
        check_args(
            &[b"CLIENT", b"SETNAME", b""],
            Dispatch::SetClientName { name: b"" },
        );
        check_args(
            &[b"CLIENT", b"setname", b"a b"],
            reply("-ERR Client names cannot contain spaces, newlines or special characters."),
        );
        check("CLIENT SETNAME", arity("client|setname"));
        check("CLIENT GETNAME", Dispatch::GetClientName);
        check("client GetName", Dispatch::GetClientName);
        check("CLIENT GETNAME x", arity("client|getname"));
        check(
            "CLIENT KILL ID 1",
            reply("-ERR command 'client|kill' is not supported by walnut"),
        );
        check(
            "CLIENT PAUSE 100",
            reply("-ERR command 'client|pause' is not supported by walnut"),
        );
        check("SELECT 0", Dispatch::Select { db: 0 });
        check("SELECT 15", Dispatch::Select { db: 15 });
        check("SELECT -1", Dispatch::Select { db: -1 });
        check(
            "SELECT 2147483647",
            Dispatch::Select {
                db: i32::MAX.into(),
            },
        );
        check_args(
            &[b"SELECT", b"2147483648"],
            reply("-ERR value is not an integer or out of range"),
        );
        for bad in ["x", "00", "+0", "-0", " 0", "0x1", "", "4294967296"] {
            check_args(
                &[b"SELECT", bad.as_bytes()],
                reply("-ERR value is not an integer or out of range"),
            );
        }
        check("ECHO hello", Dispatch::Reply(b"$5\r\nhello\r\n".to_vec()));
        check_args(&[b"ECHO", b""], Dispatch::Reply(b"$0\r\n\r\n".to_vec()));
        check("PING", Dispatch::Reply(b"+PONG\r\n".to_vec()));
        check("PING hi", Dispatch::Reply(b"$2\r\nhi\r\n".to_vec()));
        check(
            "AUTH pw",
            Dispatch::Auth {
                username: None,
                password: b"pw",
            },
        );
        check("QUIT", Dispatch::Quit);
    }

    #[test]
    fn hello_is_the_sessions_to_answer() {
        check("HELLO", Dispatch::Hello);
        check("hello 3 AUTH default pw", Dispatch::Hello);
    }

    #[test]
    fn blocking_commands_name_their_keys_and_timeout() {
        let block = |first, end, wait| Dispatch::Block {
            keys: KeyRanges::one(KeyRange::new(first, 1, end)),
            wait,
        };
        let secs = |s: f64| BlockFor::For(Duration::from_secs_f64(s));
        check("BLPOP a b 0", block(1, 3, BlockFor::Forever));
        check("brpop a 1.5", block(1, 2, secs(1.5)));
        check("BZPOPMIN z 2", block(1, 2, secs(2.0)));
        check("BRPOPLPUSH s d 3", block(1, 3, secs(3.0)));
        check("BLMOVE s d LEFT RIGHT 0", block(1, 3, BlockFor::Forever));
        check("BLMPOP 0.1 2 a b LEFT", block(3, 5, secs(0.1)));
        check("BZMPOP 1 1 z MIN", block(3, 4, secs(1.0)));
        // A timeout Redis refuses is sent on for Redis's own error, with no wait.
        check("BLPOP a -1", block(1, 2, BlockFor::For(Duration::ZERO)));
        check("BLPOP a soon", block(1, 2, BlockFor::For(Duration::ZERO)));
        // Arity and numkeys are checked as for the non-blocking forms.
        check(
            "BLPOP a",
            reply("-ERR wrong number of arguments for 'blpop' command"),
        );
        check(
            "BLMPOP 0 0 a LEFT",
            reply("-ERR numkeys should be greater than 0"),
        );
    }

    #[test]
    fn refused_commands() {
        for name in ["WAIT", "WAITAOF"] {
            let lower = name.to_ascii_lowercase();
            check(
                &format!("{name} k 0"),
                reply(&format!(
                    "-ERR command '{lower}' is not supported by walnut: \
                     blocking commands would stall a shared backend connection"
                )),
            );
        }
    }

    #[test]
    fn transaction_and_pubsub_commands_keep_session_state() {
        use super::super::command::Subscription;
        let stateful =
            |line: &str, expected: StateCommand| check(line, Dispatch::Stateful(expected));
        stateful("MULTI", StateCommand::Multi);
        stateful("exec", StateCommand::Exec);
        stateful("DISCARD", StateCommand::Discard);
        stateful("WATCH a b", StateCommand::Watch);
        stateful("UNWATCH", StateCommand::Unwatch);
        stateful("RESET", StateCommand::Reset);
        stateful(
            "SUBSCRIBE a b",
            StateCommand::Subscribe(Subscription::Channel),
        );
        stateful(
            "PSUBSCRIBE a*",
            StateCommand::Subscribe(Subscription::Pattern),
        );
        stateful("SSUBSCRIBE a", StateCommand::Subscribe(Subscription::Shard));
        stateful(
            "UNSUBSCRIBE",
            StateCommand::Unsubscribe(Subscription::Channel),
        );
        stateful(
            "PUNSUBSCRIBE a*",
            StateCommand::Unsubscribe(Subscription::Pattern),
        );
        stateful(
            "SUNSUBSCRIBE",
            StateCommand::Unsubscribe(Subscription::Shard),
        );
        stateful("PUBSUB CHANNELS", StateCommand::Pubsub);
        // Arity is Redis's.
        check(
            "MULTI x",
            reply("-ERR wrong number of arguments for 'multi' command"),
        );
        check(
            "WATCH",
            reply("-ERR wrong number of arguments for 'watch' command"),
        );
        check(
            "SUBSCRIBE",
            reply("-ERR wrong number of arguments for 'subscribe' command"),
        );
        // PUBLISH goes where its channel's name maps, like a key.
        check("PUBLISH news hi", fwd("news"));
        check("SPUBLISH news hi", fwd("news"));
        check(
            "PUBLISH news",
            reply("-ERR wrong number of arguments for 'publish' command"),
        );
    }

    #[test]
    fn refused_admin_commands() {
        for name in [
            "CONFIG",
            "SAVE",
            "BGSAVE",
            "BGREWRITEAOF",
            "SHUTDOWN",
            "MONITOR",
            "SLAVEOF",
            "REPLICAOF",
            "DEBUG",
            "FUNCTION",
            "MOVE",
            "MIGRATE",
            "SWAPDB",
            "ROLE",
            "CLUSTER",
            "READONLY",
            "READWRITE",
            "ACL",
            "LATENCY",
            "MEMORY",
            "MODULE",
            "SLOWLOG",
            "LASTSAVE",
            "FAILOVER",
            "PSYNC",
            "SYNC",
            "REPLCONF",
            "ASKING",
        ] {
            let lower = name.to_ascii_lowercase();
            let want = format!("-ERR command '{lower}' is not supported by walnut");
            check(name, reply(&want));
            check(&format!("{lower} a b"), reply(&want));
        }
    }

    #[test]
    fn unknown_commands() {
        check("FROBNICATE x", reply("-ERR unknown command 'FROBNICATE'"));
        check("stralgo LCS", reply("-ERR unknown command 'stralgo'"));
        // The name cannot break the reply into two lines.
        check_args(&[b"A\r\n+OK"], reply("-ERR unknown command 'A  +OK'"));
        let long = "Z".repeat(300);
        check(
            &long,
            reply(&format!("-ERR unknown command '{}'", &long[..128])),
        );
    }

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(parse_integer(b"0"), Some(0));
        assert_eq!(parse_integer(b"-5"), Some(-5));
        assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_integer(bad), None, "{:?}", bad);
        }
    }
}
