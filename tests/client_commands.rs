//! CLIENT INFO, CLIENT LIST, CLIENT REPLY and LOLWUT (issue 22), answered by walnut itself on
//! real redis-servers behind ketama pools: a session's line in Redis 7's format with its own
//! id, name, database, protocol, transaction and last command; the list of one pool's live
//! sessions; replies dropped exactly as Redis drops them, in pipelines spread over several
//! servers, one of them late, and in MULTI, with the commands still run; and LOLWUT naming
//! walnut in RESP2 and RESP3.

mod common;

use std::collections::BTreeSet;

use common::{
    err, free_port, ketama_pool, local, ok, queued, wait_until, ProxyProcess, RedisServer,
    RespClient, Value,
};

use common::Shards as Setup;

fn setup() -> Setup {
    Setup::start("clients", 3, "  databases: 8\n")
}

/// The text of a bulk (RESP2) or verbatim `txt` (RESP3) string.
fn text(value: Value) -> String {
    match value {
        Value::Bulk(bytes) => String::from_utf8(bytes).expect("UTF-8 text"),
        Value::Verbatim(format, bytes) if format == "txt" => {
            String::from_utf8(bytes).expect("UTF-8 text")
        }
        other => panic!("expected a bulk or verbatim string, got {other:?}"),
    }
}

/// A CLIENT INFO line's fields, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.trim_end_matches('\n')
        .split(' ')
        .map(|field| {
            let (key, value) = field.split_once('=').unwrap_or((field, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

fn field(line: &str, name: &str) -> String {
    fields(line)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

fn client_id(client: &mut RespClient) -> i64 {
    match client.cmd_str(&["CLIENT", "ID"]) {
        Value::Int(id) => id,
        other => panic!("CLIENT ID answered {other:?}"),
    }
}

/// The ids of a CLIENT LIST, in the order listed.
fn listed_ids(listing: &str) -> Vec<i64> {
    assert!(
        listing.is_empty() || listing.ends_with('\n'),
        "every line ends with a newline: {listing:?}"
    );
    listing
        .lines()
        .map(|line| field(line, "id").parse().expect("a numeric id"))
        .collect()
}

fn list(client: &mut RespClient, args: &[&str]) -> String {
    let mut command = vec!["CLIENT", "LIST"];
    command.extend_from_slice(args);
    text(client.cmd_str(&command))
}

fn command(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

/// Sends `commands` in one write.
fn send_all(client: &mut RespClient, commands: &[Vec<Vec<u8>>]) {
    let mut out = Vec::new();
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        out.extend_from_slice(&common::resp::encode(&args));
    }
    client.send_raw(&out);
}

/// Sends `commands` in one write and reads `count` replies.
fn pipeline(client: &mut RespClient, commands: &[Vec<Vec<u8>>], count: usize) -> Vec<Value> {
    send_all(client, commands);
    (0..count).map(|_| client.read_value()).collect()
}

#[test]
fn client_info_shows_the_session_in_redis_7s_format() {
    let setup = setup();
    let mut client = setup.client();
    let id = client_id(&mut client);
    assert_eq!(client.cmd_str(&["CLIENT", "SETNAME", "app-1"]), ok());
    assert_eq!(client.cmd_str(&["SELECT", "3"]), ok());
    let line = text(client.cmd_str(&["CLIENT", "INFO"]));
    assert!(
        line.ends_with('\n') && line.lines().count() == 1,
        "{line:?}"
    );
    assert_eq!(field(&line, "id"), id.to_string());
    assert_eq!(field(&line, "name"), "app-1");
    assert_eq!(field(&line, "db"), "3");
    assert_eq!(field(&line, "cmd"), "client|info");
    assert_eq!(field(&line, "resp"), "2");
    assert_eq!(field(&line, "flags"), "N");
    assert_eq!(field(&line, "multi"), "-1");
    assert_eq!(field(&line, "user"), "default");
    assert_eq!(field(&line, "laddr"), format!("127.0.0.1:{}", setup.port));
    assert!(field(&line, "addr").starts_with("127.0.0.1:"), "{line}");

    // The same fields, in the same order, as redis-server 7 itself writes.
    let reference = text(setup.backends[0].client().cmd_str(&["CLIENT", "INFO"]));
    let keys = |line: &str| -> Vec<String> { fields(line).into_iter().map(|(k, _)| k).collect() };
    assert_eq!(keys(&line), keys(&reference));

    // After HELLO 3: a verbatim string, resp=3; the last command is what it was.
    assert!(matches!(client.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    let Value::Verbatim(format, line) = client.cmd_str(&["CLIENT", "INFO"]) else {
        panic!("CLIENT INFO in RESP3 is a verbatim string");
    };
    assert_eq!(format, "txt");
    let line = String::from_utf8(line).unwrap();
    assert_eq!(field(&line, "resp"), "3");
    assert_eq!(field(&line, "db"), "3");
    assert_eq!(field(&line, "name"), "app-1");
    assert_eq!(
        client.cmd_str(&["CLIENT", "INFO", "x"]),
        err("ERR wrong number of arguments for 'client|info' command")
    );
}

#[test]
fn client_list_shows_a_session_inside_multi_and_subscribed() {
    let setup = setup();
    let mut watcher = setup.client();
    let mut transaction = setup.client();
    let id = client_id(&mut transaction);
    client_id(&mut watcher);
    assert_eq!(transaction.cmd_str(&["MULTI"]), ok());
    assert_eq!(transaction.cmd_str(&["SET", "k", "1"]), queued());
    assert_eq!(transaction.cmd_str(&["GET", "k"]), queued());
    let line = list(&mut watcher, &["ID", &id.to_string()]);
    assert_eq!(listed_ids(&line), [id]);
    assert_eq!(field(&line, "multi"), "2");
    assert_eq!(field(&line, "flags"), "x");
    assert_eq!(field(&line, "cmd"), "get");
    assert_eq!(
        transaction.cmd_str(&["EXEC"]),
        Value::Array(vec![ok(), Value::bulk("1")])
    );
    let line = list(&mut watcher, &["ID", &id.to_string()]);
    assert_eq!(field(&line, "multi"), "-1");
    assert_eq!(field(&line, "flags"), "N");
    assert_eq!(field(&line, "cmd"), "exec");

    let mut subscriber = setup.client();
    let subscriber_id = client_id(&mut subscriber);
    let confirmation = subscriber.cmd_str(&["SUBSCRIBE", "news", "sport"]);
    assert!(matches!(confirmation, Value::Array(_)), "{confirmation:?}");
    subscriber.read_value();
    let pubsub = list(&mut watcher, &["TYPE", "pubsub"]);
    assert_eq!(listed_ids(&pubsub), [subscriber_id]);
    assert_eq!(field(&pubsub, "flags"), "P");
    assert_eq!(field(&pubsub, "sub"), "2");
    assert_eq!(field(&pubsub, "psub"), "0");
    let normal = listed_ids(&list(&mut watcher, &["TYPE", "normal"]));
    assert!(
        !normal.contains(&subscriber_id) && normal.contains(&id),
        "{normal:?}"
    );
    assert_eq!(list(&mut watcher, &["TYPE", "master"]), "");
    assert_eq!(
        watcher.cmd_str(&["CLIENT", "LIST", "TYPE", "boss"]),
        err("ERR Unknown client type 'boss'")
    );
    assert_eq!(
        watcher.cmd_str(&["CLIENT", "LIST", "ID", "x"]),
        err("ERR Invalid client ID")
    );
    assert_eq!(
        watcher.cmd_str(&["CLIENT", "LIST", "ID"]),
        err("ERR syntax error")
    );
}

#[test]
fn client_list_lists_exactly_the_live_sessions_of_its_pool() {
    let backends = vec![RedisServer::start(), RedisServer::start()];
    let (one, two) = (free_port(), free_port());
    let config = ketama_pool("one", one, &backends, "") + &ketama_pool("two", two, &backends, "");
    let _walnut = ProxyProcess::walnut(&config, &[local(one), local(two)]);
    let connect = |port: u16| RespClient::connect(&format!("127.0.0.1:{port}"));
    let mut clients: Vec<RespClient> = (0..3).map(|_| connect(one)).collect();
    let ids: Vec<i64> = clients.iter_mut().map(client_id).collect();
    let mut other_pool = connect(two);
    let other_id = client_id(&mut other_pool);

    let listing = list(&mut clients[0], &[]);
    assert_eq!(listed_ids(&listing), ids, "{listing}");
    assert!(!listed_ids(&listing).contains(&other_id));
    assert_eq!(field(listing.lines().next().unwrap(), "cmd"), "client|list");
    assert_eq!(listed_ids(&list(&mut other_pool, &[])), [other_id]);
    // ID picks, in the order asked (an unknown id, or one of another pool, is left out).
    let asked = [
        ids[2].to_string(),
        other_id.to_string(),
        "999999".into(),
        ids[0].to_string(),
    ];
    let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
    assert_eq!(
        listed_ids(&list(&mut clients[1], &[&["ID"], &asked[..]].concat())),
        [ids[2], ids[0]]
    );

    // A client that leaves leaves the list.
    drop(clients.pop());
    let left = wait_until("the closed client to leave CLIENT LIST", || {
        let now = listed_ids(&list(&mut clients[0], &[]));
        (now.len() == 2).then_some(now)
    });
    assert_eq!(left, ids[..2]);
}

/// A pool like [`ketama_pool`]'s but without a timeout, so a paused server only delays.
fn patient_pool(port: u16, backends: &[RedisServer]) -> String {
    ketama_pool("patient", port, backends, "").replace("  timeout: 400\n", "")
}

/// Keys that the pool places on different servers: one for each of `count` servers, found by
/// writing candidates through walnut and looking for them on each backend.
fn keys_on_different_servers(
    client: &mut RespClient,
    backends: &[RedisServer],
    count: usize,
) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    for i in 0..200 {
        let key = format!("key:{i}");
        assert_eq!(client.cmd_str(&["SET", &key, "probe"]), ok());
        let owner = backends
            .iter()
            .position(|b| b.client().cmd_str(&["EXISTS", &key]) == Value::Int(1))
            .expect("some backend holds the key");
        assert_eq!(client.cmd_str(&["DEL", &key]), Value::Int(1));
        if !found.iter().any(|(_, o)| *o == owner) {
            found.push((key, owner));
        }
        if found.len() == count {
            return found;
        }
    }
    panic!("200 keys did not reach {count} servers");
}

#[test]
fn client_reply_drops_exactly_the_asked_replies_in_a_pipeline_over_several_servers() {
    let backends: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let port = free_port();
    let _walnut = ProxyProcess::walnut(&patient_pool(port, &backends), &[local(port)]);
    let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
    let keys = keys_on_different_servers(&mut client, &backends, 3);
    let [(a, a_owner), (b, _), (c, c_owner)] = &keys[..] else {
        unreachable!()
    };
    let commands = vec![
        command(&["SET", a, "1"]),
        command(&["CLIENT", "REPLY", "SKIP"]),
        command(&["GET", a]),
        command(&["GET", b]),
        command(&["CLIENT", "REPLY", "OFF"]),
        command(&["SET", c, "3"]),
        command(&["GET", c]),
        command(&["CLIENT", "REPLY", "ON"]),
        command(&["GET", c]),
        command(&["PING"]),
    ];
    let expected = [
        ok(),
        Value::Nil,
        ok(),
        Value::bulk("3"),
        Value::Status("PONG".into()),
    ];
    // a's server answers last: the replies after its own come back first.
    backends[*a_owner].pause();
    send_all(&mut client, &commands);
    std::thread::sleep(std::time::Duration::from_millis(100));
    backends[*a_owner].resume();
    let got: Vec<Value> = (0..expected.len()).map(|_| client.read_value()).collect();
    assert_eq!(got, expected);
    // Nothing more follows: the next reply is the next command's.
    assert_eq!(client.cmd_str(&["ECHO", "end"]), Value::bulk("end"));
    // The silenced commands ran.
    assert_eq!(
        backends[*a_owner].client().cmd_str(&["GET", a]),
        Value::bulk("1")
    );
    assert_eq!(
        backends[*c_owner].client().cmd_str(&["GET", c]),
        Value::bulk("3")
    );

    // The same pipeline straight to one redis-server gives the same replies.
    let mut direct = backends[0].client();
    assert_eq!(direct.cmd_str(&["FLUSHALL"]), ok());
    assert_eq!(pipeline(&mut direct, &commands, expected.len()), expected);
}

#[test]
fn client_reply_in_and_around_multi_keeps_every_reply_in_its_place() {
    let setup = setup();
    let mut client = setup.client();
    let commands = [
        command(&["CLIENT", "REPLY", "SKIP"]),
        command(&["MULTI"]),
        command(&["SET", "t", "1"]),
        command(&["INCR", "t"]),
        command(&["EXEC"]),
        command(&["CLIENT", "REPLY", "OFF"]),
        command(&["MULTI"]),
        command(&["INCR", "t"]),
        command(&["EXEC"]),
        command(&["CLIENT", "REPLY", "ON"]),
        command(&["GET", "t"]),
    ];
    let replies = pipeline(&mut client, &commands, 5);
    // The MULTI's +OK and everything between OFF and ON are dropped.
    assert_eq!(
        replies,
        [
            queued(),
            queued(),
            Value::Array(vec![ok(), Value::Int(2)]),
            ok(),
            Value::bulk("3"),
        ]
    );
    // Inside MULTI, CLIENT is refused as before (and aborts the transaction).
    assert_eq!(client.cmd_str(&["MULTI"]), ok());
    assert_eq!(
        client.cmd_str(&["CLIENT", "REPLY", "OFF"]),
        err("ERR 'client' inside MULTI is not supported by walnut")
    );
    assert_eq!(
        client.cmd_str(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
}

#[test]
fn client_reply_refuses_bad_arguments_as_redis_does() {
    let setup = setup();
    let mut client = setup.client();
    assert_eq!(
        client.cmd_str(&["CLIENT", "REPLY", "SOMETIMES"]),
        err("ERR syntax error")
    );
    assert_eq!(
        client.cmd_str(&["CLIENT", "REPLY"]),
        err("ERR wrong number of arguments for 'client|reply' command")
    );
    assert_eq!(
        client.cmd_str(&["CLIENT", "REPLY", "ON", "x"]),
        err("ERR wrong number of arguments for 'client|reply' command")
    );
    assert_eq!(client.cmd_str(&["CLIENT", "REPLY", "ON"]), ok());
    // Errors are replies too: with OFF, an unknown command answers nothing.
    let commands = [
        command(&["CLIENT", "REPLY", "OFF"]),
        command(&["NOSUCHCOMMAND"]),
        command(&["CLIENT", "REPLY", "ON"]),
    ];
    let replies = pipeline(&mut client, &commands, 1);
    assert_eq!(replies, [ok()]);
    assert_eq!(
        client.cmd_str(&["CLIENT", "KILL", "ID", "1"]),
        err("ERR command 'client|kill' is not supported by walnut")
    );
}

#[test]
fn pub_sub_confirmations_and_messages_come_whatever_client_reply_says() {
    let setup = setup();
    let mut subscriber = setup.client();
    let mut publisher = setup.client();
    send_all(
        &mut subscriber,
        &[
            command(&["CLIENT", "REPLY", "OFF"]),
            command(&["SUBSCRIBE", "ch"]),
        ],
    );
    assert_eq!(
        subscriber.read_value(),
        Value::Array(vec![
            Value::bulk("subscribe"),
            Value::bulk("ch"),
            Value::Int(1)
        ])
    );
    assert_eq!(publisher.cmd_str(&["PUBLISH", "ch", "hi"]), Value::Int(1));
    assert_eq!(
        subscriber.read_value(),
        Value::Array(vec![
            Value::bulk("message"),
            Value::bulk("ch"),
            Value::bulk("hi")
        ])
    );
    // RESET ends OFF and answers.
    assert_eq!(
        subscriber.cmd_str(&["RESET"]),
        Value::Status("RESET".into())
    );
    assert_eq!(subscriber.cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn lolwut_names_walnut_locally_in_resp2_and_resp3() {
    let setup = setup();
    let mut client = setup.client();
    let expected = format!(
        "walnut ver. {}, a Redis proxy speaking Redis ver. 7.0.0\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(client.cmd_str(&["LOLWUT"]), Value::bulk(&expected));
    assert_eq!(
        client.cmd_str(&["LOLWUT", "VERSION", "5", "1", "2", "3"]),
        Value::bulk(&expected)
    );
    assert_eq!(
        client.cmd_str(&["LOLWUT", "VERSION", "x"]),
        err("ERR value is not an integer or out of range")
    );
    assert!(matches!(client.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    assert_eq!(
        client.cmd_str(&["LOLWUT"]),
        Value::Verbatim("txt".into(), expected.into_bytes())
    );
    // No server was asked.
    let asked: BTreeSet<bool> = setup
        .backends
        .iter()
        .map(|backend| {
            let Value::Bulk(stats) = backend.client().cmd_str(&["INFO", "commandstats"]) else {
                panic!("INFO is a bulk string")
            };
            String::from_utf8_lossy(&stats).contains("cmdstat_lolwut")
        })
        .collect();
    assert_eq!(asked, BTreeSet::from([false]));
}
