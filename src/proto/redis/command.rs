//! The Redis command table: every command name walnut recognises, its arity and how it is
//! handled (routed by key, split, answered locally or refused).
//!
//! It holds twemproxy 0.5.0's 137 names (`redis-command-table.md`) with twemproxy's arity
//! classes, plus later Redis commands with Redis's own arity. The key positions follow Redis's
//! key specs. Lookup is a binary search over a static table sorted by name, comparing ASCII
//! case-insensitively, so it never allocates. `dispatch.rs` turns an entry into a decision;
//! nothing here looks at argument values.

use super::dispatch::SplitKind;

/// How many arguments (command name included) a command takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// twemproxy: no key, no arguments: argc == 1.
    Argz,
    /// twemproxy: no key, any arguments: argc >= 1.
    Nokey,
    /// twemproxy: key only: argc == 2.
    Arg0,
    /// twemproxy: key + 1 argument: argc == 3.
    Arg1,
    /// twemproxy: key + 2 arguments: argc == 4.
    Arg2,
    /// twemproxy: key + 3 arguments: argc == 5.
    Arg3,
    /// twemproxy: key + 0..n arguments: argc >= 2.
    Argn,
    /// twemproxy: 1..n keys: argc >= 2.
    Argx,
    /// twemproxy: 1..n key/value pairs: argc >= 3 and odd (also MSETNX, as Redis checks).
    Argkvx,
    /// twemproxy: `script numkeys key [key ...] [arg ...]`: argc >= 4.
    Argeval,
    /// Redis arity `n` (positive): argc == n.
    Exact(u8),
    /// Redis arity `-n` (negative): argc >= n.
    AtLeast(u8),
}

/// Where a forwarded command's keys are (argument positions; 0 is the command name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// No key: routed by the literal key `placeholder` (`COMMAND`, `TIME`, `OBJECT HELP`).
    Placeholder,
    /// `count` consecutive keys from `first`: GET (1, 1), RENAME and COPY (1, 2).
    Span { first: u8, count: u8 },
    /// Every `step`-th argument from `first` to the last: SDIFF (1, 1), BITOP (2, 1),
    /// MSETNX (1, 2).
    ToEnd { first: u8, step: u8 },
    /// Argument `at` is numkeys and that many keys follow it: ZUNION, LMPOP (1), EVAL (2).
    Numkeys { at: u8 },
    /// A destination key at 1, numkeys at 2, the keys after it: ZUNIONSTORE.
    DestNumkeys,
    /// A key at 1, and a destination key after a `STORE` or `STOREDIST` option searched
    /// from argument `from`: SORT (2), GEORADIUS (6), GEORADIUSBYMEMBER (5).
    StoreOption { from: u8 },
    /// XREAD, XREADGROUP: after the `STREAMS` option, the first half of the arguments.
    Streams,
    /// `<container> <subcommand> …`: the subcommand's own arity and keys.
    Subcommand(&'static [Subcommand]),
}

/// A subcommand of a container command such as OBJECT.
#[derive(Debug, PartialEq, Eq)]
pub struct Subcommand {
    /// Upper case, e.g. `ENCODING`.
    pub name: &'static str,
    /// Redis's arity, counting the container and the subcommand.
    pub arity: Arity,
    pub keys: Keys,
}

/// Commands answered by walnut itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Ping,
    Quit,
    Auth,
    /// `CLIENT SETNAME|GETNAME|SETINFO|ID|INFO|LIST|REPLY|NO-EVICT|NO-TOUCH`; other
    /// subcommands are refused.
    Client,
    /// Only `SELECT 0`: the pool's database is `redis_db`.
    Select,
    Echo,
    /// Answered as an unknown command, so clients fall back to RESP2.
    Hello,
    /// `COMMAND [COUNT|INFO|DOCS|LIST …]`: from the backend's own entries
    /// (`proto::redis::catalog`), others forwarded.
    Command,
    /// walnut's version and the Redis version its commands follow.
    Lolwut,
    /// walnut's own clock: the same answer whichever servers are up.
    Time,
}

/// Commands that change the connection's state: walnut keeps the state (a transaction's
/// leased connection, a subscriber's channels) for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateCommand {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe(Subscription),
    Unsubscribe(Subscription),
    /// `PUBSUB CHANNELS|NUMSUB|NUMPAT|SHARDCHANNELS|SHARDNUMSUB`: asked of every server.
    Pubsub,
    /// `RESET`: out of MULTI and subscriptions, name cleared.
    Reset,
}

/// The three kinds of pub/sub subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// `SUBSCRIBE`: a channel, on the server its name maps to.
    Channel,
    /// `PSUBSCRIBE`: a pattern, on every server.
    Pattern,
    /// `SSUBSCRIBE`: a shard channel, on the server (slot) its name maps to.
    Shard,
}

/// Why a recognised command is refused (the connection stays open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Blocking,
    /// Server-wide, administrative or key-less: a sharding proxy cannot answer it sensibly.
    Unsupported,
}

/// Where a blocking command's keys and timeout are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKeys {
    /// `BLPOP key [key …] timeout`: every argument but the last is a key; the timeout, in
    /// seconds, is last (BLPOP, BRPOP, BZPOPMIN, BZPOPMAX).
    ThenTimeout,
    /// `BLMOVE source destination … timeout`: two keys, the timeout last (BLMOVE,
    /// BRPOPLPUSH).
    TwoThenTimeout,
    /// `BLMPOP timeout numkeys key …`: the timeout first, then numkeys and the keys (BLMPOP,
    /// BZMPOP).
    TimeoutNumkeys,
}

/// A command asked of every server holding data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Everywhere {
    /// Sent whole to each, the replies merged this way.
    Merge(super::fanout::Fanout),
    /// `SCRIPT LOAD|EXISTS|FLUSH`: the merge depends on the subcommand.
    Script,
    /// `SCAN cursor …`: walnut's cursor names the server and that server's cursor.
    Scan,
    /// `INFO [section …]`: walnut's own sections, the keyspace summed over the servers.
    Info,
}

impl Everywhere {
    /// True when it only reads (`DBSIZE`, `KEYS`, `RANDOMKEY`, `SCAN`, `INFO`): a read-only user may
    /// send it.
    pub fn only_reads(self) -> bool {
        !matches!(
            self,
            Everywhere::Script | Everywhere::Merge(super::fanout::Fanout::AllOk)
        )
    }
}

/// What walnut does with a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Forwarded whole to the server its keys map to.
    Route(Keys),
    /// Keys from argument 1 (pairs for MSET): forwarded whole when there is one, split per
    /// server otherwise.
    Split(SplitKind),
    /// A blocking command: forwarded whole, on a dedicated connection of its keys' server.
    Block(BlockKeys),
    /// A transaction or pub/sub command: the session keeps its state.
    Stateful(StateCommand),
    /// Asked of every server holding data (or, for `SCAN`, of the one its cursor names) and
    /// merged into one reply.
    Everywhere(Everywhere),
    Answer(Local),
    Refuse(Refusal),
}

/// One known command.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Upper case, e.g. `GET`.
    pub name: &'static str,
    /// Checked before routing; not checked for refused commands.
    pub arity: Arity,
    pub handling: Handling,
    /// One of the 137 names twemproxy 0.5.0 recognises (keeping twemproxy's arity class).
    pub twemproxy: bool,
}

const fn tw(name: &'static str, arity: Arity, handling: Handling) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        handling,
        twemproxy: true,
    }
}

const fn new(name: &'static str, arity: Arity, handling: Handling) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        handling,
        twemproxy: false,
    }
}

const fn sub(name: &'static str, arity: Arity, keys: Keys) -> Subcommand {
    Subcommand { name, arity, keys }
}

use super::fanout::Fanout;
use Arity::*;
use BlockKeys::*;
use Everywhere::{Merge, Scan, Script};
use Handling::{Answer, Block, Refuse, Route, Split, Stateful};
use Keys::*;
use Local::*;
use Refusal::*;

const KEY: Handling = Route(Span { first: 1, count: 1 });
const TWO_KEYS: Handling = Route(Span { first: 1, count: 2 });
const ALL_KEYS: Handling = Route(ToEnd { first: 1, step: 1 });
/// Refused commands: the arity is not checked.
const ANY: Arity = AtLeast(1);
/// The key of `OBJECT ENCODING key`, `XINFO STREAM key`, `XGROUP CREATE key …`.
const SUB_KEY: Keys = Span { first: 2, count: 1 };

pub static OBJECT_SUBCOMMANDS: &[Subcommand] = &[
    sub("ENCODING", Exact(3), SUB_KEY),
    sub("FREQ", Exact(3), SUB_KEY),
    sub("HELP", Exact(2), Placeholder),
    sub("IDLETIME", Exact(3), SUB_KEY),
    sub("REFCOUNT", Exact(3), SUB_KEY),
];

pub static XGROUP_SUBCOMMANDS: &[Subcommand] = &[
    sub("CREATE", AtLeast(5), SUB_KEY),
    sub("CREATECONSUMER", Exact(5), SUB_KEY),
    sub("DELCONSUMER", Exact(5), SUB_KEY),
    sub("DESTROY", Exact(4), SUB_KEY),
    sub("HELP", Exact(2), Placeholder),
    sub("SETID", AtLeast(5), SUB_KEY),
];

pub static XINFO_SUBCOMMANDS: &[Subcommand] = &[
    sub("CONSUMERS", Exact(4), SUB_KEY),
    sub("GROUPS", Exact(3), SUB_KEY),
    sub("HELP", Exact(2), Placeholder),
    sub("STREAM", AtLeast(3), SUB_KEY),
];

/// Every recognised command, sorted by name (byte order) for binary search.
pub static COMMANDS: [CommandSpec; 250] = [
    new("ACL", ANY, Refuse(Unsupported)),
    tw("APPEND", Arg1, KEY),
    new("ASKING", ANY, Refuse(Unsupported)),
    tw("AUTH", Arg0, Answer(Auth)),
    new("BGREWRITEAOF", ANY, Refuse(Unsupported)),
    new("BGSAVE", ANY, Refuse(Unsupported)),
    tw("BITCOUNT", Argn, KEY),
    tw("BITFIELD", Argn, KEY),
    new("BITFIELD_RO", AtLeast(2), KEY),
    new("BITOP", AtLeast(4), Route(ToEnd { first: 2, step: 1 })),
    tw("BITPOS", Argn, KEY),
    new("BLMOVE", Exact(6), Block(TwoThenTimeout)),
    new("BLMPOP", AtLeast(5), Block(TimeoutNumkeys)),
    new("BLPOP", AtLeast(3), Block(ThenTimeout)),
    new("BRPOP", AtLeast(3), Block(ThenTimeout)),
    new("BRPOPLPUSH", Exact(4), Block(TwoThenTimeout)),
    new("BZMPOP", AtLeast(5), Block(TimeoutNumkeys)),
    new("BZPOPMAX", AtLeast(3), Block(ThenTimeout)),
    new("BZPOPMIN", AtLeast(3), Block(ThenTimeout)),
    new("CLIENT", AtLeast(2), Answer(Client)),
    new("CLUSTER", ANY, Refuse(Unsupported)),
    tw("COMMAND", Argz, Answer(Command)),
    new("CONFIG", ANY, Refuse(Unsupported)),
    tw("COPY", Argn, TWO_KEYS),
    new("DBSIZE", Exact(1), Handling::Everywhere(Merge(Fanout::Sum))),
    new("DEBUG", ANY, Refuse(Unsupported)),
    tw("DECR", Arg0, KEY),
    tw("DECRBY", Arg1, KEY),
    tw("DEL", Argx, Split(SplitKind::Del)),
    new("DISCARD", Exact(1), Stateful(StateCommand::Discard)),
    tw("DUMP", Arg0, KEY),
    new("ECHO", Exact(2), Answer(Echo)),
    tw("EVAL", Argeval, Route(Numkeys { at: 2 })),
    tw("EVALSHA", Argeval, Route(Numkeys { at: 2 })),
    new("EVALSHA_RO", AtLeast(3), Route(Numkeys { at: 2 })),
    new("EVAL_RO", AtLeast(3), Route(Numkeys { at: 2 })),
    new("EXEC", Exact(1), Stateful(StateCommand::Exec)),
    tw("EXISTS", Argn, Split(SplitKind::Exists)),
    tw("EXPIRE", Arg1, KEY),
    tw("EXPIREAT", Arg1, KEY),
    new("EXPIRETIME", Exact(2), KEY),
    new("FAILOVER", ANY, Refuse(Unsupported)),
    new("FCALL", AtLeast(3), Route(Numkeys { at: 2 })),
    new("FCALL_RO", AtLeast(3), Route(Numkeys { at: 2 })),
    new(
        "FLUSHALL",
        AtLeast(1),
        Handling::Everywhere(Merge(Fanout::AllOk)),
    ),
    new(
        "FLUSHDB",
        AtLeast(1),
        Handling::Everywhere(Merge(Fanout::AllOk)),
    ),
    new("FUNCTION", ANY, Refuse(Unsupported)),
    tw("GEOADD", Argn, KEY),
    tw("GEODIST", Argn, KEY),
    tw("GEOHASH", Argn, KEY),
    tw("GEOPOS", Argn, KEY),
    tw("GEORADIUS", Argn, Route(StoreOption { from: 6 })),
    tw("GEORADIUSBYMEMBER", Argn, Route(StoreOption { from: 5 })),
    new("GEORADIUSBYMEMBER_RO", AtLeast(5), KEY),
    new("GEORADIUS_RO", AtLeast(6), KEY),
    tw("GEOSEARCH", Argn, KEY),
    tw("GEOSEARCHSTORE", Argn, TWO_KEYS),
    tw("GET", Arg0, KEY),
    tw("GETBIT", Arg1, KEY),
    tw("GETDEL", Arg0, KEY),
    tw("GETEX", Argn, KEY),
    tw("GETRANGE", Arg2, KEY),
    tw("GETSET", Arg1, KEY),
    tw("HDEL", Argn, KEY),
    new("HELLO", AtLeast(1), Answer(Hello)),
    tw("HEXISTS", Arg1, KEY),
    new("HEXPIRE", AtLeast(6), KEY),
    new("HEXPIREAT", AtLeast(6), KEY),
    new("HEXPIRETIME", AtLeast(5), KEY),
    tw("HGET", Arg1, KEY),
    tw("HGETALL", Arg0, KEY),
    new("HGETDEL", AtLeast(5), KEY),
    new("HGETEX", AtLeast(5), KEY),
    tw("HINCRBY", Arg2, KEY),
    tw("HINCRBYFLOAT", Arg2, KEY),
    tw("HKEYS", Arg0, KEY),
    tw("HLEN", Arg0, KEY),
    tw("HMGET", Argn, KEY),
    tw("HMSET", Argn, KEY),
    new("HPERSIST", AtLeast(5), KEY),
    new("HPEXPIRE", AtLeast(6), KEY),
    new("HPEXPIREAT", AtLeast(6), KEY),
    new("HPEXPIRETIME", AtLeast(5), KEY),
    new("HPTTL", AtLeast(5), KEY),
    tw("HRANDFIELD", Argn, KEY),
    tw("HSCAN", Argn, KEY),
    tw("HSET", Argn, KEY),
    new("HSETEX", AtLeast(6), KEY),
    tw("HSETNX", Arg2, KEY),
    tw("HSTRLEN", Arg1, KEY),
    new("HTTL", AtLeast(5), KEY),
    tw("HVALS", Arg0, KEY),
    tw("INCR", Arg0, KEY),
    tw("INCRBY", Arg1, KEY),
    tw("INCRBYFLOAT", Arg1, KEY),
    new("INFO", AtLeast(1), Handling::Everywhere(Everywhere::Info)),
    new(
        "KEYS",
        Exact(2),
        Handling::Everywhere(Merge(Fanout::Concat)),
    ),
    new("LASTSAVE", ANY, Refuse(Unsupported)),
    new("LATENCY", ANY, Refuse(Unsupported)),
    new("LCS", AtLeast(3), TWO_KEYS),
    tw("LINDEX", Arg1, KEY),
    tw("LINSERT", Arg3, KEY),
    tw("LLEN", Arg0, KEY),
    tw("LMOVE", Arg3, TWO_KEYS),
    new("LMPOP", AtLeast(4), Route(Numkeys { at: 1 })),
    tw("LOLWUT", Nokey, Answer(Lolwut)),
    tw("LPOP", Argn, KEY),
    tw("LPOS", Argn, KEY),
    tw("LPUSH", Argn, KEY),
    tw("LPUSHX", Argn, KEY),
    tw("LRANGE", Arg2, KEY),
    tw("LREM", Arg2, KEY),
    tw("LSET", Arg2, KEY),
    tw("LTRIM", Arg2, KEY),
    new("MEMORY", ANY, Refuse(Unsupported)),
    tw("MGET", Argx, Split(SplitKind::Mget)),
    new("MIGRATE", ANY, Refuse(Unsupported)),
    new("MODULE", ANY, Refuse(Unsupported)),
    new("MONITOR", ANY, Refuse(Unsupported)),
    tw("MOVE", Arg1, Refuse(Unsupported)),
    tw("MSET", Argkvx, Split(SplitKind::Mset)),
    new("MSETNX", Argkvx, Route(ToEnd { first: 1, step: 2 })),
    new("MULTI", Exact(1), Stateful(StateCommand::Multi)),
    new("OBJECT", AtLeast(2), Route(Subcommand(OBJECT_SUBCOMMANDS))),
    tw("PERSIST", Arg0, KEY),
    tw("PEXPIRE", Arg1, KEY),
    tw("PEXPIREAT", Arg1, KEY),
    new("PEXPIRETIME", Exact(2), KEY),
    tw("PFADD", Argn, KEY),
    tw("PFCOUNT", Argn, ALL_KEYS),
    tw("PFMERGE", Argn, ALL_KEYS),
    tw("PING", Argz, Answer(Ping)),
    tw("PSETEX", Arg2, KEY),
    new(
        "PSUBSCRIBE",
        AtLeast(2),
        Stateful(StateCommand::Subscribe(Subscription::Pattern)),
    ),
    new("PSYNC", ANY, Refuse(Unsupported)),
    tw("PTTL", Arg0, KEY),
    new("PUBLISH", Exact(3), KEY),
    new("PUBSUB", AtLeast(2), Stateful(StateCommand::Pubsub)),
    new(
        "PUNSUBSCRIBE",
        AtLeast(1),
        Stateful(StateCommand::Unsubscribe(Subscription::Pattern)),
    ),
    tw("QUIT", Argz, Answer(Quit)),
    new(
        "RANDOMKEY",
        Exact(1),
        Handling::Everywhere(Merge(Fanout::AnyNonNil)),
    ),
    new("READONLY", ANY, Refuse(Unsupported)),
    new("READWRITE", ANY, Refuse(Unsupported)),
    new("RENAME", Exact(3), TWO_KEYS),
    new("RENAMENX", Exact(3), TWO_KEYS),
    new("REPLCONF", ANY, Refuse(Unsupported)),
    new("REPLICAOF", ANY, Refuse(Unsupported)),
    new("RESET", Exact(1), Stateful(StateCommand::Reset)),
    tw("RESTORE", Argn, KEY),
    new("ROLE", ANY, Refuse(Unsupported)),
    tw("RPOP", Argn, KEY),
    tw("RPOPLPUSH", Arg1, TWO_KEYS),
    tw("RPUSH", Argn, KEY),
    tw("RPUSHX", Argn, KEY),
    tw("SADD", Argn, KEY),
    new("SAVE", ANY, Refuse(Unsupported)),
    new("SCAN", AtLeast(2), Handling::Everywhere(Scan)),
    tw("SCARD", Arg0, KEY),
    new("SCRIPT", AtLeast(2), Handling::Everywhere(Script)),
    tw("SDIFF", Argn, ALL_KEYS),
    tw("SDIFFSTORE", Argn, ALL_KEYS),
    new("SELECT", Exact(2), Answer(Select)),
    tw("SET", Argn, KEY),
    tw("SETBIT", Arg2, KEY),
    tw("SETEX", Arg2, KEY),
    tw("SETNX", Arg1, KEY),
    tw("SETRANGE", Arg2, KEY),
    new("SHUTDOWN", ANY, Refuse(Unsupported)),
    tw("SINTER", Argn, ALL_KEYS),
    new("SINTERCARD", AtLeast(3), Route(Numkeys { at: 1 })),
    tw("SINTERSTORE", Argn, ALL_KEYS),
    tw("SISMEMBER", Arg1, KEY),
    new("SLAVEOF", ANY, Refuse(Unsupported)),
    new("SLOWLOG", ANY, Refuse(Unsupported)),
    tw("SMEMBERS", Arg0, KEY),
    tw("SMISMEMBER", Argn, KEY),
    tw("SMOVE", Arg2, TWO_KEYS),
    tw("SORT", Argn, Route(StoreOption { from: 2 })),
    new("SORT_RO", AtLeast(2), KEY),
    tw("SPOP", Argn, KEY),
    new("SPUBLISH", Exact(3), KEY),
    tw("SRANDMEMBER", Argn, KEY),
    tw("SREM", Argn, KEY),
    tw("SSCAN", Argn, KEY),
    new(
        "SSUBSCRIBE",
        AtLeast(2),
        Stateful(StateCommand::Subscribe(Subscription::Shard)),
    ),
    tw("STRLEN", Arg0, KEY),
    new(
        "SUBSCRIBE",
        AtLeast(2),
        Stateful(StateCommand::Subscribe(Subscription::Channel)),
    ),
    new("SUBSTR", Exact(4), KEY),
    tw("SUNION", Argn, ALL_KEYS),
    tw("SUNIONSTORE", Argn, ALL_KEYS),
    new(
        "SUNSUBSCRIBE",
        AtLeast(1),
        Stateful(StateCommand::Unsubscribe(Subscription::Shard)),
    ),
    new("SWAPDB", ANY, Refuse(Unsupported)),
    new("SYNC", ANY, Refuse(Unsupported)),
    new("TIME", Exact(1), Answer(Time)),
    tw("TOUCH", Argx, Split(SplitKind::Touch)),
    tw("TTL", Arg0, KEY),
    tw("TYPE", Arg0, KEY),
    tw("UNLINK", Argx, Split(SplitKind::Unlink)),
    new(
        "UNSUBSCRIBE",
        AtLeast(1),
        Stateful(StateCommand::Unsubscribe(Subscription::Channel)),
    ),
    new("UNWATCH", Exact(1), Stateful(StateCommand::Unwatch)),
    new("WAIT", ANY, Refuse(Blocking)),
    new("WAITAOF", ANY, Refuse(Blocking)),
    new("WATCH", AtLeast(2), Stateful(StateCommand::Watch)),
    new("XACK", AtLeast(4), KEY),
    new("XADD", AtLeast(5), KEY),
    new("XAUTOCLAIM", AtLeast(6), KEY),
    new("XCLAIM", AtLeast(6), KEY),
    new("XDEL", AtLeast(3), KEY),
    new("XGROUP", AtLeast(2), Route(Subcommand(XGROUP_SUBCOMMANDS))),
    new("XINFO", AtLeast(2), Route(Subcommand(XINFO_SUBCOMMANDS))),
    new("XLEN", Exact(2), KEY),
    new("XPENDING", AtLeast(3), KEY),
    new("XRANGE", AtLeast(4), KEY),
    new("XREAD", AtLeast(4), Route(Streams)),
    new("XREADGROUP", AtLeast(7), Route(Streams)),
    new("XREVRANGE", AtLeast(4), KEY),
    new("XSETID", AtLeast(3), KEY),
    new("XTRIM", AtLeast(4), KEY),
    tw("ZADD", Argn, KEY),
    tw("ZCARD", Arg0, KEY),
    tw("ZCOUNT", Arg2, KEY),
    tw("ZDIFF", Argn, Route(Numkeys { at: 1 })),
    tw("ZDIFFSTORE", Argn, Route(DestNumkeys)),
    tw("ZINCRBY", Arg2, KEY),
    tw("ZINTER", Argn, Route(Numkeys { at: 1 })),
    new("ZINTERCARD", AtLeast(3), Route(Numkeys { at: 1 })),
    tw("ZINTERSTORE", Argn, Route(DestNumkeys)),
    tw("ZLEXCOUNT", Arg2, KEY),
    new("ZMPOP", AtLeast(4), Route(Numkeys { at: 1 })),
    tw("ZMSCORE", Argn, KEY),
    tw("ZPOPMAX", Argn, KEY),
    tw("ZPOPMIN", Argn, KEY),
    tw("ZRANDMEMBER", Argn, KEY),
    tw("ZRANGE", Argn, KEY),
    tw("ZRANGEBYLEX", Argn, KEY),
    tw("ZRANGEBYSCORE", Argn, KEY),
    tw("ZRANGESTORE", Argn, TWO_KEYS),
    tw("ZRANK", Arg1, KEY),
    tw("ZREM", Argn, KEY),
    tw("ZREMRANGEBYLEX", Arg2, KEY),
    tw("ZREMRANGEBYRANK", Arg2, KEY),
    tw("ZREMRANGEBYSCORE", Arg2, KEY),
    tw("ZREVRANGE", Argn, KEY),
    tw("ZREVRANGEBYLEX", Argn, KEY),
    tw("ZREVRANGEBYSCORE", Argn, KEY),
    tw("ZREVRANK", Arg1, KEY),
    tw("ZSCAN", Argn, KEY),
    tw("ZSCORE", Arg1, KEY),
    tw("ZUNION", Argn, Route(Numkeys { at: 1 })),
    tw("ZUNIONSTORE", Argn, Route(DestNumkeys)),
];

/// The longest command name in the table (`GEORADIUSBYMEMBER_RO`).
const MAX_NAME_LEN: usize = 20;

/// Compares a table name (upper case) with a client's name, ignoring ASCII case in the latter.
fn cmp_name(table: &str, name: &[u8]) -> std::cmp::Ordering {
    table.bytes().cmp(name.iter().map(u8::to_ascii_uppercase))
}

/// Looks a command name up, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    COMMANDS
        .binary_search_by(|spec| cmp_name(spec.name, name))
        .ok()
        .map(|i| &COMMANDS[i])
}

/// Looks a subcommand up, case-insensitively (the tables have a handful of entries).
pub fn lookup_subcommand(table: &'static [Subcommand], name: &[u8]) -> Option<&'static Subcommand> {
    table
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `argc` arguments (command name included) fit `arity`.
pub fn arity_ok(arity: Arity, argc: usize) -> bool {
    match arity {
        Argz => argc == 1,
        Nokey => argc >= 1,
        Arg0 => argc == 2,
        Arg1 => argc == 3,
        Arg2 => argc == 4,
        Arg3 => argc == 5,
        Argn | Argx => argc >= 2,
        Argkvx => argc >= 3 && argc % 2 == 1,
        Argeval => argc >= 4,
        Exact(n) => argc == usize::from(n),
        AtLeast(n) => argc >= usize::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// twemproxy's table as `redis-command-table.md` lists it: name, arity class, flags.
    const REFERENCE: &str = include_str!("command_table_reference.txt");

    #[test]
    fn table_is_sorted_upper_case_and_bounded() {
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} !< {}",
                pair[0].name,
                pair[1].name
            );
        }
        let longest = COMMANDS.iter().map(|c| c.name.len()).max();
        assert_eq!(longest, Some(MAX_NAME_LEN));
        let names = COMMANDS.iter().map(|c| c.name);
        let subs = [OBJECT_SUBCOMMANDS, XGROUP_SUBCOMMANDS, XINFO_SUBCOMMANDS]
            .into_iter()
            .flatten()
            .map(|s| s.name);
        for name in names.chain(subs) {
            assert!(
                name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn every_twemproxy_command_keeps_its_arity_class_and_flags() {
        let rows: Vec<&str> = REFERENCE.lines().collect();
        assert_eq!(rows.len(), 137);
        assert_eq!(COMMANDS.iter().filter(|c| c.twemproxy).count(), 137);
        for row in rows {
            let mut f = row.split_whitespace();
            let name = f.next().unwrap();
            let spec = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name}"));
            assert!(spec.twemproxy, "{name}");
            let class = match spec.arity {
                Argz => "redis_argz",
                Nokey => "redis_nokey",
                Arg0 => "redis_arg0",
                Arg1 => "redis_arg1",
                Arg2 => "redis_arg2",
                Arg3 => "redis_arg3",
                Argn => "redis_argn",
                Argx => "redis_argx",
                Argkvx => "redis_argkvx",
                Argeval => "redis_argeval",
                Exact(_) | AtLeast(_) => "redis arity",
            };
            assert_eq!(f.next(), Some(class), "{name}");
            let flag = f.next().unwrap_or("");
            let expected_flag = match spec.handling {
                Answer(Ping | Auth) | Refuse(_) => "noforward",
                Answer(Quit) => "quit",
                // twemproxy forwards them by the placeholder key; walnut answers them.
                Route(Placeholder) | Answer(Command | Lolwut) => "placeholder-key",
                _ => "",
            };
            assert_eq!(flag, expected_flag, "{name}");
        }
    }

    #[test]
    fn added_commands_use_redis_arity() {
        for spec in COMMANDS.iter().filter(|c| !c.twemproxy) {
            let redis_arity = matches!(spec.arity, Exact(_) | AtLeast(_));
            assert!(redis_arity || spec.name == "MSETNX", "{}", spec.name);
        }
    }

    #[test]
    fn docs_list_every_command() {
        let doc = include_str!("../../../docs/COMMANDS.md");
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with("Routed and local commands"))
            .unwrap();
        let rows = section.lines().filter(|l| l.starts_with("| `")).count();
        let routed = COMMANDS
            .iter()
            .filter(|c| !matches!(c.handling, Refuse(_)))
            .count();
        assert_eq!(rows, routed, "rows in the routing table");
        for spec in &COMMANDS {
            let wanted = match spec.handling {
                Refuse(_) => format!(" `{}`", spec.name),
                _ => format!("| `{}` |", spec.name),
            };
            let haystack = if matches!(spec.handling, Refuse(_)) {
                doc
            } else {
                section
            };
            assert!(haystack.contains(&wanted), "{} is missing", spec.name);
        }
    }

    fn mixed_case(name: &str, seed: usize) -> Vec<u8> {
        name.bytes()
            .enumerate()
            .map(|(i, b)| {
                if (i + seed) % 3 == 0 {
                    b.to_ascii_lowercase()
                } else {
                    b
                }
            })
            .collect()
    }

    #[test]
    fn every_name_resolves_in_any_case() {
        for (seed, spec) in COMMANDS.iter().enumerate() {
            let upper = spec.name.as_bytes();
            let lower = spec.name.to_ascii_lowercase();
            let mixed = mixed_case(spec.name, seed);
            for name in [upper, lower.as_bytes(), &mixed[..]] {
                let found = lookup(name).unwrap_or_else(|| panic!("{:?}", name));
                assert!(std::ptr::eq(found, spec));
            }
        }
    }

    #[test]
    fn unknown_names() {
        let long = vec![b'A'; 1000];
        for name in [
            &b""[..],
            &long,
            b"GE",
            b"GETT",
            b"GET ",
            b" GET",
            b"GET\0",
            b"STRALGO",
            b"GEORADIUSBYMEMBER_RO_",
            b"\xc7ET",
            b"g\xc5t",
            b"get_",
        ] {
            assert_eq!(lookup(name), None, "{:?}", name);
        }
    }

    #[test]
    fn subcommands_resolve_in_any_case() {
        let found = lookup_subcommand(OBJECT_SUBCOMMANDS, b"eNcOdInG").unwrap();
        assert_eq!(found.name, "ENCODING");
        assert_eq!(found.keys, Span { first: 2, count: 1 });
        assert_eq!(
            lookup_subcommand(XINFO_SUBCOMMANDS, b"help").map(|s| s.keys),
            Some(Placeholder)
        );
        assert_eq!(lookup_subcommand(XGROUP_SUBCOMMANDS, b"CREATEX"), None);
        assert_eq!(lookup_subcommand(XGROUP_SUBCOMMANDS, b""), None);
    }

    #[test]
    fn arity_rules() {
        let get = |n: &str| lookup(n.as_bytes()).unwrap();
        let ok = |n: &str, argc: usize| arity_ok(get(n).arity, argc);
        // Argz
        assert!(!ok("PING", 0) && ok("PING", 1) && !ok("PING", 2));
        assert!(ok("QUIT", 1) && !ok("COMMAND", 2));
        // Nokey
        assert!(!ok("LOLWUT", 0) && ok("LOLWUT", 1) && ok("LOLWUT", 5));
        // Arg0..Arg3
        assert!(!ok("GET", 1) && ok("GET", 2) && !ok("GET", 3));
        assert!(ok("AUTH", 2) && !ok("AUTH", 3));
        assert!(!ok("GETSET", 2) && ok("GETSET", 3) && !ok("GETSET", 4));
        assert!(!ok("SETEX", 3) && ok("SETEX", 4) && !ok("SETEX", 5));
        assert!(!ok("LINSERT", 4) && ok("LINSERT", 5) && !ok("LINSERT", 6));
        // Argn, Argx
        assert!(!ok("SET", 1) && ok("SET", 2) && ok("SET", 3) && ok("SET", 100));
        assert!(!ok("MGET", 1) && ok("MGET", 2) && ok("DEL", 1000));
        // Argkvx
        for (argc, want) in [
            (1, false),
            (2, false),
            (3, true),
            (4, false),
            (5, true),
            (1001, true),
        ] {
            assert_eq!(ok("MSET", argc), want, "MSET {argc}");
            assert_eq!(ok("MSETNX", argc), want, "MSETNX {argc}");
        }
        // Argeval
        assert!(!ok("EVAL", 3) && ok("EVAL", 4) && ok("EVALSHA", 9));
        // Redis arity
        assert!(!ok("XLEN", 1) && ok("XLEN", 2) && !ok("XLEN", 3));
        assert!(!ok("XADD", 4) && ok("XADD", 5) && ok("XADD", 50));
        assert!(!ok("FCALL", 2) && ok("FCALL", 3));
    }
}
