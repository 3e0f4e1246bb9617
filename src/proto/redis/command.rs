//! The Redis command table: every command walnut knows, its argument shape and its keys.
//!
//! The 137 names twemproxy 0.5.0 recognises (`redis-command-table.md`). Anything else,
//! `SELECT` included, is unsupported and closes the client connection.

/// Twemproxy's arity classes (`redis-command-table.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// No key, no arguments: argc == 1.
    Argz,
    /// No key, any arguments: argc >= 1. Routed with the key `placeholder`.
    Nokey,
    /// Key only: argc == 2.
    Arg0,
    /// Key + 1 argument: argc == 3.
    Arg1,
    /// Key + 2 arguments: argc == 4.
    Arg2,
    /// Key + 3 arguments: argc == 5.
    Arg3,
    /// Key + 0..n arguments, routed by the first argument: argc >= 2.
    Argn,
    /// 1..n keys, fragmented when more than one: argc >= 2.
    Argx,
    /// 1..n key/value pairs, fragmented when more than one: argc >= 3 and odd.
    Argkvx,
    /// `script numkeys key [key ...] [arg ...]`: argc >= 4 (numkeys is the router's business).
    Argeval,
}

/// One known command.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Upper case, e.g. `GET`.
    pub name: &'static str,
    pub arity: Arity,
    /// Answered by the proxy itself, never forwarded (`PING`, `AUTH`; also `MOVE`, which
    /// twemproxy flags but cannot answer, so it closes the connection).
    pub noforward: bool,
    /// `QUIT`: no reply, the connection is closed once pending replies are written.
    pub quit: bool,
    /// Forwarded to the server the literal key `placeholder` hashes to (`COMMAND`, `LOLWUT`).
    pub placeholder_key: bool,
}

const NONE: u8 = 0;
const NOFORWARD: u8 = 1;
const QUIT: u8 = 2;
const PLACEHOLDER: u8 = 4;

const fn c(name: &'static str, arity: Arity, flags: u8) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        noforward: flags & NOFORWARD != 0,
        quit: flags & QUIT != 0,
        placeholder_key: flags & PLACEHOLDER != 0,
    }
}

use Arity::*;

/// Every recognised command, sorted by name (byte order) for binary search.
pub static COMMANDS: [CommandSpec; 137] = [
    c("APPEND", Arg1, NONE),
    c("AUTH", Arg0, NOFORWARD),
    c("BITCOUNT", Argn, NONE),
    c("BITFIELD", Argn, NONE),
    c("BITPOS", Argn, NONE),
    c("COMMAND", Argz, PLACEHOLDER),
    c("COPY", Argn, NONE),
    c("DECR", Arg0, NONE),
    c("DECRBY", Arg1, NONE),
    c("DEL", Argx, NONE),
    c("DUMP", Arg0, NONE),
    c("EVAL", Argeval, NONE),
    c("EVALSHA", Argeval, NONE),
    c("EXISTS", Argn, NONE),
    c("EXPIRE", Arg1, NONE),
    c("EXPIREAT", Arg1, NONE),
    c("GEOADD", Argn, NONE),
    c("GEODIST", Argn, NONE),
    c("GEOHASH", Argn, NONE),
    c("GEOPOS", Argn, NONE),
    c("GEORADIUS", Argn, NONE),
    c("GEORADIUSBYMEMBER", Argn, NONE),
    c("GEOSEARCH", Argn, NONE),
    c("GEOSEARCHSTORE", Argn, NONE),
    c("GET", Arg0, NONE),
    c("GETBIT", Arg1, NONE),
    c("GETDEL", Arg0, NONE),
    c("GETEX", Argn, NONE),
    c("GETRANGE", Arg2, NONE),
    c("GETSET", Arg1, NONE),
    c("HDEL", Argn, NONE),
    c("HEXISTS", Arg1, NONE),
    c("HGET", Arg1, NONE),
    c("HGETALL", Arg0, NONE),
    c("HINCRBY", Arg2, NONE),
    c("HINCRBYFLOAT", Arg2, NONE),
    c("HKEYS", Arg0, NONE),
    c("HLEN", Arg0, NONE),
    c("HMGET", Argn, NONE),
    c("HMSET", Argn, NONE),
    c("HRANDFIELD", Argn, NONE),
    c("HSCAN", Argn, NONE),
    c("HSET", Argn, NONE),
    c("HSETNX", Arg2, NONE),
    c("HSTRLEN", Arg1, NONE),
    c("HVALS", Arg0, NONE),
    c("INCR", Arg0, NONE),
    c("INCRBY", Arg1, NONE),
    c("INCRBYFLOAT", Arg1, NONE),
    c("LINDEX", Arg1, NONE),
    c("LINSERT", Arg3, NONE),
    c("LLEN", Arg0, NONE),
    c("LMOVE", Arg3, NONE),
    c("LOLWUT", Nokey, PLACEHOLDER),
    c("LPOP", Argn, NONE),
    c("LPOS", Argn, NONE),
    c("LPUSH", Argn, NONE),
    c("LPUSHX", Argn, NONE),
    c("LRANGE", Arg2, NONE),
    c("LREM", Arg2, NONE),
    c("LSET", Arg2, NONE),
    c("LTRIM", Arg2, NONE),
    c("MGET", Argx, NONE),
    c("MOVE", Arg1, NOFORWARD),
    c("MSET", Argkvx, NONE),
    c("PERSIST", Arg0, NONE),
    c("PEXPIRE", Arg1, NONE),
    c("PEXPIREAT", Arg1, NONE),
    c("PFADD", Argn, NONE),
    c("PFCOUNT", Argn, NONE),
    c("PFMERGE", Argn, NONE),
    c("PING", Argz, NOFORWARD),
    c("PSETEX", Arg2, NONE),
    c("PTTL", Arg0, NONE),
    c("QUIT", Argz, QUIT),
    c("RESTORE", Argn, NONE),
    c("RPOP", Argn, NONE),
    c("RPOPLPUSH", Arg1, NONE),
    c("RPUSH", Argn, NONE),
    c("RPUSHX", Argn, NONE),
    c("SADD", Argn, NONE),
    c("SCARD", Arg0, NONE),
    c("SDIFF", Argn, NONE),
    c("SDIFFSTORE", Argn, NONE),
    c("SET", Argn, NONE),
    c("SETBIT", Arg2, NONE),
    c("SETEX", Arg2, NONE),
    c("SETNX", Arg1, NONE),
    c("SETRANGE", Arg2, NONE),
    c("SINTER", Argn, NONE),
    c("SINTERSTORE", Argn, NONE),
    c("SISMEMBER", Arg1, NONE),
    c("SMEMBERS", Arg0, NONE),
    c("SMISMEMBER", Argn, NONE),
    c("SMOVE", Arg2, NONE),
    c("SORT", Argn, NONE),
    c("SPOP", Argn, NONE),
    c("SRANDMEMBER", Argn, NONE),
    c("SREM", Argn, NONE),
    c("SSCAN", Argn, NONE),
    c("STRLEN", Arg0, NONE),
    c("SUNION", Argn, NONE),
    c("SUNIONSTORE", Argn, NONE),
    c("TOUCH", Argx, NONE),
    c("TTL", Arg0, NONE),
    c("TYPE", Arg0, NONE),
    c("UNLINK", Argx, NONE),
    c("ZADD", Argn, NONE),
    c("ZCARD", Arg0, NONE),
    c("ZCOUNT", Arg2, NONE),
    c("ZDIFF", Argn, NONE),
    c("ZDIFFSTORE", Argn, NONE),
    c("ZINCRBY", Arg2, NONE),
    c("ZINTER", Argn, NONE),
    c("ZINTERSTORE", Argn, NONE),
    c("ZLEXCOUNT", Arg2, NONE),
    c("ZMSCORE", Argn, NONE),
    c("ZPOPMAX", Argn, NONE),
    c("ZPOPMIN", Argn, NONE),
    c("ZRANDMEMBER", Argn, NONE),
    c("ZRANGE", Argn, NONE),
    c("ZRANGEBYLEX", Argn, NONE),
    c("ZRANGEBYSCORE", Argn, NONE),
    c("ZRANGESTORE", Argn, NONE),
    c("ZRANK", Arg1, NONE),
    c("ZREM", Argn, NONE),
    c("ZREMRANGEBYLEX", Arg2, NONE),
    c("ZREMRANGEBYRANK", Arg2, NONE),
    c("ZREMRANGEBYSCORE", Arg2, NONE),
    c("ZREVRANGE", Argn, NONE),
    c("ZREVRANGEBYLEX", Argn, NONE),
    c("ZREVRANGEBYSCORE", Argn, NONE),
    c("ZREVRANK", Arg1, NONE),
    c("ZSCAN", Argn, NONE),
    c("ZSCORE", Arg1, NONE),
    c("ZUNION", Argn, NONE),
    c("ZUNIONSTORE", Argn, NONE),
];

/// The longest command name in the table (`GEORADIUSBYMEMBER`).
const MAX_NAME_LEN: usize = 17;

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

/// Whether `argc` arguments (command name included) fit the command's arity class, by
/// twemproxy's rules.
pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    match spec.arity {
        Argz => argc == 1,
        Nokey => argc >= 1,
        Arg0 => argc == 2,
        Arg1 => argc == 3,
        Arg2 => argc == 4,
        Arg3 => argc == 5,
        Argn | Argx => argc >= 2,
        Argkvx => argc >= 3 && argc % 2 == 1,
        Argeval => argc >= 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as `redis-command-table.md` lists it: name, arity class, flags.
    const REFERENCE: &str = include_str!("command_table_reference.txt");

    #[test]
    fn table_is_sorted_and_complete() {
        assert_eq!(COMMANDS.len(), 137);
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
        for spec in &COMMANDS {
            assert!(
                spec.name.bytes().all(|b| b.is_ascii_uppercase()),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn table_matches_reference() {
        let rows: Vec<&str> = REFERENCE.lines().collect();
        assert_eq!(rows.len(), 137);
        for (row, spec) in rows.iter().zip(COMMANDS.iter()) {
            let mut f = row.split_whitespace();
            assert_eq!(f.next(), Some(spec.name));
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
            };
            assert_eq!(f.next(), Some(class), "{}", spec.name);
            let flag = f.next().unwrap_or("");
            assert_eq!(spec.noforward, flag == "noforward", "{}", spec.name);
            assert_eq!(spec.quit, flag == "quit", "{}", spec.name);
            assert_eq!(
                spec.placeholder_key,
                flag == "placeholder-key",
                "{}",
                spec.name
            );
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
            &b"SELECT"[..],
            b"HELLO",
            b"",
            &long,
            b"GE",
            b"GETT",
            b"GET ",
            b" GET",
            b"GET\0",
            b"MSETNX",
            b"KEYS",
            b"SCAN",
            b"GEORADIUSBYMEMBERX",
            b"\xc7ET",
            b"g\xc5t",
        ] {
            assert_eq!(lookup(name), None, "{:?}", name);
        }
    }

    #[test]
    fn flags() {
        let flagged: Vec<(&str, bool, bool, bool)> = COMMANDS
            .iter()
            .filter(|c| c.noforward || c.quit || c.placeholder_key)
            .map(|c| (c.name, c.noforward, c.quit, c.placeholder_key))
            .collect();
        assert_eq!(
            flagged,
            vec![
                ("AUTH", true, false, false),
                ("COMMAND", false, false, true),
                ("LOLWUT", false, false, true),
                ("MOVE", true, false, false),
                ("PING", true, false, false),
                ("QUIT", false, true, false),
            ]
        );
    }

    #[test]
    fn arity_rules() {
        let get = |n: &str| lookup(n.as_bytes()).unwrap();
        let ok = |n: &str, argc: usize| arity_ok(get(n), argc);
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
        }
        // Argeval
        assert!(!ok("EVAL", 3) && ok("EVAL", 4) && ok("EVALSHA", 9));
    }
}
