//! Routing by the servers' own key specs (issue 22): walnut reads `COMMAND` from a backend
//! once, routes a command its table lacks by the keys that entry gives (Redis 7's `PFDEBUG`,
//! RediSearch's `FT.*` module commands), still refuses one without keys, and answers
//! clients' `COMMAND`, `COMMAND COUNT|INFO|DOCS|LIST` from the backend's entries, limited to
//! what it serves. Real redis-servers (one set with the RediSearch module loaded).

mod common;

use std::collections::BTreeSet;

use common::{ok, wait_until, RedisServer, Value};

use common::Shards as Setup;

const REDISEARCH: &str = "/usr/lib/redis/modules/redisearch.so";

fn setup(extra: &str) -> Setup {
    ready(Setup::start("specs", 3, extra))
}

/// Waits for walnut to have read its servers' COMMAND table.
fn ready(setup: Setup) -> Setup {
    wait_until("walnut reads the COMMAND table", || {
        setup
            .walnut
            .log()
            .contains("pool 'specs': read ")
            .then_some(())
    });
    setup
}

fn error_text(value: &Value) -> &str {
    match value {
        Value::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn status(text: &str) -> Value {
    Value::Status(text.to_string())
}

fn names(value: Value) -> BTreeSet<String> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Bulk(b) => String::from_utf8(b).unwrap(),
                other => panic!("expected a name, got {other:?}"),
            })
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// The index of the backend that holds `key`.
fn holder(setup: &Setup, key: &str) -> usize {
    let holders: Vec<usize> = (0..setup.backends.len())
        .filter(|&i| setup.backends[i].client().cmd_str(&["EXISTS", key]) == Value::Int(1))
        .collect();
    assert_eq!(holders.len(), 1, "{key} is on exactly one server");
    holders[0]
}

#[test]
fn a_command_only_the_servers_know_is_routed_by_its_key() {
    let setup = setup("");
    let mut client = setup.client();
    // Names that differ at the start: fnv1a_64 spreads them over the servers.
    let keys: Vec<String> = (0..30).map(|i| format!("{i}:hll")).collect();
    for key in &keys {
        assert_eq!(client.cmd_str(&["PFADD", key, "a", "b"]), Value::Int(1));
    }
    let spread: BTreeSet<usize> = keys.iter().map(|k| holder(&setup, k)).collect();
    assert!(spread.len() > 1, "the keys are on several servers");
    // PFDEBUG is not in walnut's table: only the server's key spec (key at 2) routes it. A
    // request sent to any other server would find no key there.
    for key in &keys {
        assert_eq!(
            client.cmd_str(&["PFDEBUG", "ENCODING", key]),
            status("sparse"),
            "{key}"
        );
    }
    // Pipelined, between known commands, the replies stay in order.
    let mut pipeline = Vec::new();
    for key in &keys[..10] {
        pipeline.push(vec![
            b"PFDEBUG".to_vec(),
            b"ENCODING".to_vec(),
            key.as_bytes().to_vec(),
        ]);
        pipeline.push(vec![b"PFCOUNT".to_vec(), key.as_bytes().to_vec()]);
    }
    for pair in client.pipeline(&pipeline).chunks(2) {
        assert_eq!(pair, [status("sparse"), Value::Int(2)]);
    }
    // And inside a transaction, on the key's server.
    assert_eq!(client.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        client.cmd_str(&["PFDEBUG", "TODENSE", "3:hll"]),
        status("QUEUED")
    );
    assert_eq!(client.cmd_str(&["PFCOUNT", "3:hll"]), status("QUEUED"));
    assert_eq!(
        client.cmd_str(&["EXEC"]),
        Value::Array(vec![Value::Int(1), Value::Int(2)])
    );
    let server = holder(&setup, "3:hll");
    assert_eq!(
        setup.backends[server]
            .client()
            .cmd_str(&["PFDEBUG", "ENCODING", "3:hll"]),
        status("dense"),
        "TODENSE ran on the key's own server"
    );
    // Redis's own argument errors, and the connection stays usable.
    assert_eq!(
        error_text(&client.cmd_str(&["PFDEBUG", "ENCODING"])),
        "ERR wrong number of arguments for 'pfdebug' command"
    );
    // A command the servers know but without keys: no server to pick.
    assert_eq!(
        error_text(&client.cmd_str(&["PFSELFTEST"])),
        "ERR command 'pfselftest' is not supported by walnut: it has no key to pick a server by"
    );
    // A command nobody knows is still unknown.
    assert!(error_text(&client.cmd_str(&["NOSUCHCOMMAND", "k"])).starts_with("ERR unknown command"));
    assert_eq!(client.cmd_str(&["PING"]), status("PONG"));
}

#[test]
fn users_run_learned_commands_by_their_flags_and_keys() {
    let users = "  users:\n   - name: writer\n     password: w\n     commands: readwrite\n   - name: reader\n     password: r\n     commands: readonly\n   - name: admin\n     password: a\n     commands: all\n     keys: [\"app:*\"]\n";
    let setup = setup(users);
    let mut admin = setup.client();
    assert_eq!(admin.cmd_str(&["AUTH", "admin", "a"]), ok());
    assert_eq!(admin.cmd_str(&["PFADD", "app:h", "x"]), Value::Int(1));
    assert_eq!(
        admin.cmd_str(&["PFDEBUG", "ENCODING", "app:h"]),
        status("sparse")
    );
    assert_eq!(
        error_text(&admin.cmd_str(&["PFDEBUG", "ENCODING", "other"])),
        "NOPERM No permissions to access a key"
    );
    // PFDEBUG is an admin command (flags `write admin`).
    for (user, password) in [("writer", "w"), ("reader", "r")] {
        let mut client = setup.client();
        assert_eq!(client.cmd_str(&["AUTH", user, password]), ok());
        assert_eq!(
            error_text(&client.cmd_str(&["PFDEBUG", "ENCODING", "app:h"])),
            format!("NOPERM User {user} has no permissions to run the 'pfdebug' command")
        );
    }
}

#[test]
fn clients_see_the_servers_commands_limited_to_what_walnut_serves() {
    let setup = setup("");
    let mut client = setup.client();
    let mut direct = setup.backends[0].client();
    let Value::Int(count) = client.cmd_str(&["COMMAND", "COUNT"]) else {
        panic!("COMMAND COUNT is an integer")
    };
    let Value::Int(all) = direct.cmd_str(&["COMMAND", "COUNT"]) else {
        panic!("COMMAND COUNT is an integer")
    };
    assert!(count > 150 && count < all, "{count} of {all}");
    let Value::Array(entries) = client.cmd_str(&["command"]) else {
        panic!("COMMAND is an array")
    };
    assert_eq!(entries.len() as i64, count);
    assert_eq!(client.cmd_str(&["command", "count"]), Value::Int(count));
    // Entries are the server's own; refused (MONITOR) and key-less unknown (PFSELFTEST)
    // commands are not listed.
    assert_eq!(
        client.cmd_str(&["COMMAND", "INFO", "get", "pfdebug"]),
        direct.cmd_str(&["COMMAND", "INFO", "get", "pfdebug"])
    );
    assert_eq!(
        client.cmd_str(&["COMMAND", "INFO", "monitor", "pfselftest", "nope"]),
        Value::Array(vec![Value::Nil, Value::Nil, Value::Nil])
    );
    assert_eq!(
        client.cmd_str(&["COMMAND", "DOCS", "get"]),
        direct.cmd_str(&["COMMAND", "DOCS", "get"])
    );
    assert_eq!(
        client.cmd_str(&["COMMAND", "DOCS", "monitor"]),
        Value::Array(vec![])
    );
    let hll: BTreeSet<String> = ["pfadd", "pfcount", "pfdebug", "pfmerge"]
        .map(String::from)
        .into();
    assert_eq!(
        names(client.cmd_str(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "pf*"])),
        hll
    );
    assert_eq!(
        names(client.cmd_str(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "hyperloglog"])),
        hll
    );
    let listed = names(client.cmd_str(&["COMMAND", "LIST"]));
    assert_eq!(listed.len() as i64, count);
    assert!(listed.contains("get") && !listed.contains("monitor"));
    // GETKEYS is the server's to answer.
    assert_eq!(
        client.cmd_str(&["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"]),
        Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Bulk(b"b".to_vec())])
    );
    // RESP3 clients get the server's RESP3 entries (maps for key specs and docs).
    assert!(matches!(client.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    assert!(matches!(direct.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    let info3 = client.cmd_str(&["COMMAND", "INFO", "set"]);
    assert_eq!(info3, direct.cmd_str(&["COMMAND", "INFO", "set"]));
    assert!(format!("{info3:?}").contains("Map"), "{info3:?}");
    assert_eq!(
        client.cmd_str(&["COMMAND", "DOCS", "set"]),
        direct.cmd_str(&["COMMAND", "DOCS", "set"])
    );
    assert_eq!(
        client.cmd_str(&["COMMAND", "INFO", "monitor"]),
        Value::Array(vec![Value::Null])
    );
}

#[test]
fn module_commands_work_without_a_code_change() {
    let backends = (0..3)
        .map(|_| RedisServer::start_with(&["--loadmodule", REDISEARCH]))
        .collect();
    let setup = ready(Setup::over("specs", backends, ""));
    let mut client = setup.client();
    let indexes: Vec<String> = (0..8).map(|i| format!("{i}-idx")).collect();
    for index in &indexes {
        assert_eq!(
            client.cmd_str(&["FT.CREATE", index, "SCHEMA", "title", "TEXT"]),
            ok(),
            "{index}"
        );
        assert_eq!(
            client.cmd_str(&[
                "FT.ADD",
                index,
                "doc1",
                "1.0",
                "FIELDS",
                "title",
                "hello walnut"
            ]),
            ok()
        );
    }
    let mut servers = BTreeSet::new();
    for index in &indexes {
        // Each index and its documents live on the one server its name hashes to.
        let holders: Vec<usize> = (0..3)
            .filter(|&i| {
                !matches!(
                    setup.backends[i].client().cmd_str(&["FT.INFO", index]),
                    Value::Error(_)
                )
            })
            .collect();
        assert_eq!(holders.len(), 1, "{index}");
        servers.insert(holders[0]);
        assert_eq!(
            client.cmd_str(&["FT.SEARCH", index, "hello"]),
            Value::Array(vec![
                Value::Int(1),
                Value::Bulk(b"doc1".to_vec()),
                Value::Array(vec![
                    Value::Bulk(b"title".to_vec()),
                    Value::Bulk(b"hello walnut".to_vec())
                ]),
            ]),
            "{index}"
        );
    }
    assert!(servers.len() > 1, "the indexes are spread over the servers");
    // The module's commands are listed to clients too.
    let ft = names(client.cmd_str(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "ft.*"]));
    assert!(
        ft.contains("ft.search") && ft.contains("ft.create"),
        "{ft:?}"
    );
}

/// Every command in Redis 7's COMMAND reply (the capture in tests/data) is listed in
/// docs/COMMANDS.md with what walnut does with it.
#[test]
fn commands_md_lists_every_redis7_command() {
    let capture = std::fs::read("tests/data/redis7-command.resp").unwrap();
    let doc = std::fs::read_to_string("docs/COMMANDS.md").unwrap();
    let table = walnut::proto::redis::keyspecs::LearnedCommands::parse(&capture).unwrap();
    assert!(table.len() > 200);
    let missing: Vec<String> = table
        .commands()
        .iter()
        .map(|c| c.name.to_ascii_uppercase())
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/COMMANDS.md: {missing:?}");
}
