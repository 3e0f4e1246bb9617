//! Which commands only read: Redis's `readonly` command flag, for the commands walnut
//! forwards. A cluster pool with `read_from: replica | prefer_replica` sends these to a
//! slot's replicas.

/// Upper case and sorted, for a binary search.
const READ_ONLY: [&str; 78] = [
    "BITCOUNT",
    "BITFIELD_RO",
    "BITPOS",
    "DUMP",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXISTS",
    "EXPIRETIME",
    "FCALL_RO",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GET",
    "GETBIT",
    "GETRANGE",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HRANDFIELD",
    "HSCAN",
    "HSTRLEN",
    "HVALS",
    "LCS",
    "LINDEX",
    "LLEN",
    "LPOS",
    "LRANGE",
    "MGET",
    "PEXPIRETIME",
    "PFCOUNT",
    "PTTL",
    "SCARD",
    "SDIFF",
    "SINTER",
    "SINTERCARD",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SORT_RO",
    "SRANDMEMBER",
    "SSCAN",
    "STRLEN",
    "SUBSTR",
    "SUNION",
    "TOUCH",
    "TTL",
    "TYPE",
    "XINFO",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREVRANGE",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZINTER",
    "ZINTERCARD",
    "ZLEXCOUNT",
    "ZMSCORE",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
];

/// True when the command (its upper-case table name) only reads.
pub fn is_read_only(name: &str) -> bool {
    READ_ONLY.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_known_to_the_command_table() {
        assert!(READ_ONLY.windows(2).all(|w| w[0] < w[1]));
        for name in READ_ONLY {
            assert!(
                crate::proto::redis::command::lookup(name.as_bytes()).is_some(),
                "{name} is in the command table"
            );
        }
    }

    #[test]
    fn reads_and_writes_are_told_apart() {
        assert!(is_read_only("GET") && is_read_only("MGET") && is_read_only("ZRANGE"));
        assert!(!is_read_only("SET") && !is_read_only("DEL") && !is_read_only("INCR"));
        assert!(
            !is_read_only("get"),
            "names are the table's upper-case ones"
        );
    }
}
