//! HELLO, RESP3 and SELECT (issue 22) on 3 real redis-servers behind a ketama pool: a
//! `HELLO 3` session gets Redis's own RESP3 replies (its shared backend connections speak
//! RESP3 too), RESP2 sessions on the same pool see no change, pub/sub messages come as pushes,
//! and `SELECT n` puts a client's keys in database n of their server through shared
//! connections of that database.

mod common;

use common::{err, free_port, local, ok, ProxyProcess, RedisServer, RespClient, Value};

use common::Shards as Setup;

fn setup() -> Setup {
    Setup::start("resp3", 3, "  databases: 8\n")
}

/// What these tests ask of their servers.
trait Helpers {
    fn resp3_client(&self) -> RespClient;
    fn owner_of(&self, key: &str, db: &str) -> RespClient;
}

impl Helpers for Setup {
    fn resp3_client(&self) -> RespClient {
        let mut client = self.client();
        let hello = client.cmd_str(&["HELLO", "3"]);
        assert!(matches!(hello, Value::Map(_)), "HELLO 3: {hello:?}");
        client
    }

    /// A direct client of the backend that holds `key` (found by looking in database `db`).
    fn owner_of(&self, key: &str, db: &str) -> RespClient {
        for backend in &self.backends {
            let mut direct = backend.client();
            assert_eq!(direct.cmd_str(&["SELECT", db]), ok());
            if direct.cmd_str(&["EXISTS", key]) == Value::Int(1) {
                return direct;
            }
        }
        panic!("no backend holds {key} in db {db}");
    }
}

fn field<'m>(map: &'m [(Value, Value)], name: &str) -> &'m Value {
    map.iter()
        .find(|(k, _)| *k == Value::bulk(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in {map:?}"))
}

#[test]
fn hello_answers_the_server_map_in_the_agreed_protocol() {
    let setup = setup();
    let mut client = setup.client();
    // HELLO 2: the same fields as a flat array, proto 2.
    let Value::Array(fields) = client.cmd_str(&["HELLO", "2"]) else {
        panic!("HELLO 2 is an array")
    };
    assert_eq!(fields.len(), 14);
    assert_eq!(fields[4], Value::bulk("proto"));
    assert_eq!(fields[5], Value::Int(2));
    let Value::Map(map) = client.cmd_str(&["HELLO", "3", "SETNAME", "app"]) else {
        panic!("HELLO 3 is a map")
    };
    assert_eq!(field(&map, "server"), &Value::bulk("redis"));
    assert_eq!(field(&map, "proto"), &Value::Int(3));
    assert_eq!(field(&map, "mode"), &Value::bulk("standalone"));
    assert_eq!(field(&map, "role"), &Value::bulk("master"));
    assert_eq!(field(&map, "modules"), &Value::Array(vec![]));
    let Value::Int(id) = field(&map, "id") else {
        panic!("id is an integer")
    };
    assert_eq!(client.cmd_str(&["CLIENT", "ID"]), Value::Int(*id));
    assert_eq!(client.cmd_str(&["CLIENT", "GETNAME"]), Value::bulk("app"));
    // Redis's errors, in its order.
    assert_eq!(
        client.cmd_str(&["HELLO", "4"]),
        err("NOPROTO unsupported protocol version")
    );
    assert_eq!(
        client.cmd_str(&["HELLO", "x"]),
        err("ERR Protocol version is not an integer or out of range")
    );
    assert_eq!(
        client.cmd_str(&["HELLO", "3", "BOGUS"]),
        err("ERR Syntax error in HELLO option 'BOGUS'")
    );
    // Back to RESP2: a nil name is `$-1` again.
    assert!(matches!(
        client.cmd_str(&["HELLO", "2", "SETNAME", ""]),
        Value::Array(_)
    ));
    assert_eq!(client.cmd_str(&["CLIENT", "GETNAME"]), Value::Nil);
}

#[test]
fn hello_auth_authenticates_on_a_redis_auth_pool() {
    let backend = RedisServer::start();
    let port = free_port();
    let config = common::ketama_pool(
        "auth",
        port,
        std::slice::from_ref(&backend),
        "  redis_auth: s3cret\n",
    );
    let _walnut = ProxyProcess::walnut(&config, &[local(port)]);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let noauth = client.cmd_str(&["HELLO", "3"]);
    assert!(
        matches!(&noauth, Value::Error(e) if e.starts_with("NOAUTH HELLO must be called")),
        "{noauth:?}"
    );
    assert_eq!(
        client.cmd_str(&["HELLO", "3", "AUTH", "default", "wrong"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    let Value::Map(map) = client.cmd_str(&["HELLO", "3", "AUTH", "default", "s3cret"]) else {
        panic!("HELLO 3 AUTH is a map")
    };
    assert_eq!(field(&map, "proto"), &Value::Int(3));
    assert_eq!(client.cmd_str(&["SET", "k", "v"]), ok());
    assert_eq!(client.cmd_str(&["GET", "k"]), Value::bulk("v"));
}

#[test]
fn a_resp3_session_gets_redis_own_resp3_replies_and_resp2_sessions_see_no_change() {
    let setup = setup();
    let mut resp2 = setup.client();
    let mut resp3 = setup.resp3_client();
    assert_eq!(
        resp2.cmd_str(&["HSET", "h", "f", "v", "g", "w"]),
        Value::Int(2)
    );
    assert_eq!(resp2.cmd_str(&["ZADD", "z", "1.5", "m"]), Value::Int(1));
    assert_eq!(resp2.cmd_str(&["SADD", "s", "x"]), Value::Int(1));

    // Each reply is exactly what the key's own server says to a RESP3 connection.
    let mut compare = |args: &[&str], key: &str| {
        let mut direct = setup.owner_of(key, "0");
        assert!(matches!(direct.cmd_str(&["HELLO", "3"]), Value::Map(_)));
        let expected = direct.cmd_str(args);
        assert_eq!(resp3.cmd_str(args), expected, "{args:?}");
        expected
    };
    assert_eq!(
        compare(&["HGETALL", "h"], "h"),
        Value::Map(vec![
            (Value::bulk("f"), Value::bulk("v")),
            (Value::bulk("g"), Value::bulk("w")),
        ])
    );
    assert_eq!(
        compare(&["ZSCORE", "z", "m"], "z"),
        Value::Double("1.5".into())
    );
    assert_eq!(
        compare(&["SMEMBERS", "s"], "s"),
        Value::Set(vec![Value::bulk("x")])
    );
    assert_eq!(compare(&["HGET", "h", "nofield"], "h"), Value::Null);

    // A RESP2 client of the same pool, meanwhile: flat arrays, bulk scores, `$-1`.
    assert_eq!(
        resp2.cmd_str(&["HGETALL", "h"]),
        Value::Array(vec![
            Value::bulk("f"),
            Value::bulk("v"),
            Value::bulk("g"),
            Value::bulk("w")
        ])
    );
    assert_eq!(resp2.cmd_str(&["ZSCORE", "z", "m"]), Value::bulk("1.5"));
    assert_eq!(resp2.cmd_str(&["GET", "missing"]), Value::Nil);

    // Split and fanned-out commands keep RESP3's nulls and types.
    assert_eq!(resp3.cmd_str(&["SET", "a", "1"]), ok());
    assert_eq!(
        resp3.cmd_str(&["MGET", "a", "missing:1", "h:none"]),
        Value::Array(vec![Value::bulk("1"), Value::Null, Value::Null])
    );
    assert_eq!(resp3.cmd_str(&["GET", "missing"]), Value::Null);
    assert!(matches!(resp3.cmd_str(&["INFO", "keyspace"]), Value::Verbatim(f, _) if f == "txt"));
    assert!(matches!(
        resp2.cmd_str(&["INFO", "keyspace"]),
        Value::Bulk(_)
    ));

    // A blocking command's timeout and a transaction, in RESP3.
    assert_eq!(resp3.cmd_str(&["BLPOP", "nolist", "0.01"]), Value::Null);
    assert_eq!(resp2.cmd_str(&["BLPOP", "nolist", "0.01"]), Value::NilArray);
    assert_eq!(resp3.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        resp3.cmd_str(&["HGETALL", "h"]),
        Value::Status("QUEUED".into())
    );
    assert_eq!(
        resp3.cmd_str(&["EXEC"]),
        Value::Array(vec![Value::Map(vec![
            (Value::bulk("f"), Value::bulk("v")),
            (Value::bulk("g"), Value::bulk("w")),
        ])])
    );
}

#[test]
fn resp3_pubsub_messages_are_pushes_and_other_commands_still_run() {
    let setup = setup();
    let mut subscriber = setup.resp3_client();
    let push = |items: &[&str], count: Option<i64>| {
        let mut values: Vec<Value> = items.iter().map(Value::bulk).collect();
        values.extend(count.map(Value::Int));
        Value::Push(values)
    };
    assert_eq!(
        subscriber.cmd_str(&["SUBSCRIBE", "news"]),
        push(&["subscribe", "news"], Some(1))
    );
    // RESP3 allows any command while subscribed.
    assert_eq!(subscriber.cmd_str(&["SET", "k", "v"]), ok());
    assert_eq!(subscriber.cmd_str(&["GET", "k"]), Value::bulk("v"));
    assert_eq!(subscriber.cmd_str(&["PING"]), Value::Status("PONG".into()));
    let mut publisher = setup.client();
    assert_eq!(publisher.cmd_str(&["PUBLISH", "news", "hi"]), Value::Int(1));
    assert_eq!(
        subscriber.read_value(),
        push(&["message", "news", "hi"], None)
    );
    assert_eq!(
        subscriber.cmd_str(&["UNSUBSCRIBE", "news"]),
        push(&["unsubscribe", "news"], Some(0))
    );
}

#[test]
fn select_puts_keys_in_that_database_of_their_server() {
    let setup = setup();
    let mut db3 = setup.client();
    let mut db0 = setup.client();
    assert_eq!(db3.cmd_str(&["SELECT", "3"]), ok());
    assert_eq!(db3.cmd_str(&["SET", "selected", "three"]), ok());
    assert_eq!(db0.cmd_str(&["GET", "selected"]), Value::Nil);
    assert_eq!(db3.cmd_str(&["GET", "selected"]), Value::bulk("three"));
    // On its server, the key is in db 3 and not in db 0.
    let mut direct = setup.owner_of("selected", "3");
    assert_eq!(direct.cmd_str(&["GET", "selected"]), Value::bulk("three"));
    assert_eq!(direct.cmd_str(&["SELECT", "0"]), ok());
    assert_eq!(direct.cmd_str(&["EXISTS", "selected"]), Value::Int(0));

    // Pipelined across SELECTs: each request runs in the database selected before it.
    assert_eq!(db0.cmd_str(&["SET", "same", "zero"]), ok());
    let command = |args: &[&str]| args.iter().map(|a| a.as_bytes().to_vec()).collect();
    let replies = db0.pipeline(&[
        command(&["SELECT", "5"]),
        command(&["SET", "same", "five"]),
        command(&["GET", "same"]),
        command(&["SELECT", "0"]),
        command(&["GET", "same"]),
        command(&["SELECT", "5"]),
        command(&["MGET", "same", "selected"]),
    ]);
    assert_eq!(
        replies,
        vec![
            ok(),
            ok(),
            Value::bulk("five"),
            ok(),
            Value::bulk("zero"),
            ok(),
            Value::Array(vec![Value::bulk("five"), Value::Nil]),
        ]
    );

    // Blocking commands and transactions run in the session's database too.
    assert_eq!(db3.cmd_str(&["RPUSH", "queue", "job"]), Value::Int(1));
    assert_eq!(
        db3.cmd_str(&["BLPOP", "queue", "1"]),
        Value::Array(vec![Value::bulk("queue"), Value::bulk("job")])
    );
    assert_eq!(db3.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        db3.cmd_str(&["SET", "in_tx", "3"]),
        Value::Status("QUEUED".into())
    );
    assert_eq!(db3.cmd_str(&["EXEC"]), Value::Array(vec![ok()]));
    assert_eq!(
        setup.owner_of("in_tx", "3").cmd_str(&["GET", "in_tx"]),
        Value::bulk("3")
    );

    // The pool has `databases: 8`.
    assert_eq!(
        db0.cmd_str(&["SELECT", "8"]),
        err("ERR DB index is out of range")
    );
    assert_eq!(
        db0.cmd_str(&["SELECT", "-1"]),
        err("ERR DB index is out of range")
    );
    assert_eq!(db0.cmd_str(&["GET", "same"]), Value::bulk("five"));
}

#[test]
fn redis_cli_speaks_resp3_through_walnut() {
    let setup = setup();
    assert_eq!(
        setup.client().cmd_str(&["HSET", "cli", "f", "v"]),
        Value::Int(1)
    );
    let out = std::process::Command::new("redis-cli")
        .args([
            "-3",
            "--no-raw",
            "-p",
            &setup.port.to_string(),
            "HGETALL",
            "cli",
        ])
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "{out:?}");
    // redis-cli prints a RESP3 map as `key => value`.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1# \"f\" => \"v\""
    );
}

#[test]
fn redis_py_with_protocol_3_gets_maps_and_doubles() {
    let setup = setup();
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=3)
r.hset("py", mapping={"f": "v"})
r.zadd("pyz", {"m": 2.5})
h = r.hgetall("py")
s = r.zscore("pyz", "m")
print(type(h).__name__, h, type(s).__name__, s, r.connection_pool.connection_kwargs.get("protocol"))
"#;
    let out = common::run_python("redis-py protocol=3", script, &[&setup.port.to_string()]);
    assert_eq!(out, "dict {b'f': b'v'} float 2.5 3");
}

#[test]
fn node_redis_5_with_resp_3_gets_maps_and_doubles() {
    let setup = setup();
    let script = r#"
const { createClient } = require("redis");
(async () => {
  const client = createClient({ url: `redis://127.0.0.1:${process.argv[1]}`, RESP: 3 });
  await client.connect();
  await client.hSet("node", "f", "v");
  await client.zAdd("nodez", { score: 2.5, value: "m" });
  const h = await client.hGetAll("node");
  const s = await client.zScore("nodez", "m");
  const hello = await client.sendCommand(["HELLO", "3"]);
  console.log(JSON.stringify(h), typeof s, s, hello.proto);
  await client.quit();
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let out = common::run_node("node-redis RESP 3", script, &[&setup.port.to_string()]);
    assert_eq!(out, r#"{"f":"v"} number 2.5 3"#);
}
