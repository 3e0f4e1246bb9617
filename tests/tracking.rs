//! Client-side caching through walnut (`CLIENT TRACKING`, issue 22) on 3 real redis-servers
//! behind a ketama pool: a RESP3 client is told of changes to keys on every server, as
//! pushes queued behind the replies it already expects; BCAST prefixes filter; FLUSHALL
//! says "everything"; `REDIRECT` delivers to another session (a RESP2 subscriber gets
//! `__redis__:invalidate` messages); a lost tracking connection ends in a flush, so nothing
//! is missed; the options are checked with Redis's own errors.

mod common;

use common::{err, ok, wait_until, RespClient, Value};

use common::Shards as Setup;

fn setup() -> Setup {
    Setup::start("tracking", 3, "")
}

/// A key on each of the 3 servers, in server order, written through walnut.
fn key_per_server(setup: &Setup, prefix: &str) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; setup.backends.len()];
    let mut client = setup.client();
    for n in 0..200 {
        // fnv1a_64 barely moves a key that differs only in its last bytes: a suffix
        // spreads them over the servers.
        let key = format!("{prefix}{n}:tag");
        assert_eq!(client.cmd_str(&["SET", &key, "v0"]), ok());
        let owner = setup
            .backends
            .iter()
            .position(|b| b.client().cmd_str(&["EXISTS", &key]) == Value::Int(1))
            .expect("a backend holds the key");
        found[owner].get_or_insert(key);
        if found.iter().all(Option::is_some) {
            return found.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("200 keys did not cover 3 servers");
}

fn resp3_client(setup: &Setup) -> RespClient {
    let mut client = setup.client();
    assert!(matches!(client.cmd_str(&["HELLO", "3"]), Value::Map(_)));
    client
}

/// The keys of an `invalidate` push (`None`: everything), or `None` for another value.
fn invalidated(value: &Value) -> Option<Option<Vec<String>>> {
    let Value::Push(items) = value else {
        return None;
    };
    if items.len() != 2 || items[0] != Value::bulk("invalidate") {
        return None;
    }
    match &items[1] {
        Value::Null | Value::Nil | Value::NilArray => Some(None),
        Value::Array(keys) => Some(Some(
            keys.iter()
                .map(|k| match k {
                    Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("a key is a bulk string: {other:?}"),
                })
                .collect(),
        )),
        other => panic!("invalidate carries keys or null: {other:?}"),
    }
}

/// Reads pushes until every key of `wanted` was invalidated; returns every key seen.
fn read_invalidations(client: &mut RespClient, wanted: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    while !wanted.iter().all(|k| seen.contains(k)) {
        let value = client.read_value();
        match invalidated(&value) {
            Some(Some(keys)) => seen.extend(keys),
            Some(None) => panic!("an unexpected flush"),
            None => panic!("expected an invalidation, got {value:?}"),
        }
    }
    seen
}

#[test]
fn a_resp3_client_hears_of_changes_on_every_server_in_order_with_its_replies() {
    let setup = setup();
    let keys = key_per_server(&setup, "cached:");
    let mut tracked = resp3_client(&setup);
    assert_eq!(tracked.cmd_str(&["CLIENT", "TRACKING", "ON"]), ok());
    for key in &keys {
        assert_eq!(tracked.cmd_str(&["GET", key]), Value::bulk("v0"));
    }
    // Another client changes each key: one push per key, from each key's own server.
    let mut writer = setup.client();
    for key in &keys {
        assert_eq!(writer.cmd_str(&["SET", key, "v1"]), ok());
    }
    let seen = read_invalidations(&mut tracked, &keys);
    assert_eq!(
        seen.len(),
        keys.len(),
        "one invalidation per change: {seen:?}"
    );

    // Pipelined reads while another client writes: every reply still comes in request order,
    // pushes only between them.
    let mut expected = Vec::new();
    let mut pipeline = Vec::new();
    for round in 0..50 {
        let key = &keys[round % keys.len()];
        pipeline.push(vec![b"GET".to_vec(), key.as_bytes().to_vec()]);
        pipeline.push(vec![
            b"ECHO".to_vec(),
            format!("round {round}").into_bytes(),
        ]);
        expected.push(None);
        expected.push(Some(Value::bulk(format!("round {round}"))));
    }
    let writes = std::thread::spawn({
        let addr = format!("127.0.0.1:{}", setup.port);
        let keys = keys.clone();
        move || {
            let mut writer = RespClient::connect(&addr);
            for n in 0..100 {
                let key = &keys[n % keys.len()];
                assert_eq!(writer.cmd_str(&["SET", key, &format!("w{n}")]), ok());
            }
        }
    });
    let mut out = Vec::new();
    for command in &pipeline {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        out.extend_from_slice(&common::resp::encode(&args));
    }
    tracked.send_raw(&out);
    let mut replies = Vec::new();
    while replies.len() < expected.len() {
        let value = tracked.read_value();
        if invalidated(&value).is_none() {
            replies.push(value);
        }
    }
    writes.join().expect("writer");
    for (n, (reply, want)) in replies.iter().zip(&expected).enumerate() {
        match want {
            Some(want) => assert_eq!(reply, want, "reply {n}"),
            None => assert!(matches!(reply, Value::Bulk(_)), "reply {n}: {reply:?}"),
        }
    }
    // And the connection still answers in order, after any pushes still queued.
    assert_eq!(
        reply_skipping_pushes_after(&mut tracked, &["CLIENT", "TRACKING", "OFF"]),
        ok()
    );
}

/// The next value that is not an invalidation push.
fn reply_skipping_pushes(client: &mut RespClient) -> Value {
    loop {
        let value = client.read_value();
        if invalidated(&value).is_none() {
            return value;
        }
    }
}

#[test]
fn bcast_prefixes_filter_and_flushall_says_everything() {
    let setup = setup();
    let mut tracked = resp3_client(&setup);
    assert_eq!(
        tracked.cmd_str(&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "user:"]),
        ok()
    );
    let mut writer = setup.client();
    // Changes outside the prefix come first on every server; none must be heard.
    for n in 0..30 {
        assert_eq!(
            writer.cmd_str(&["SET", &format!("other:{n}:tag"), "x"]),
            ok()
        );
    }
    let users: Vec<String> = (0..30).map(|n| format!("user:{n}:tag")).collect();
    for key in &users {
        assert_eq!(writer.cmd_str(&["SET", key, "x"]), ok());
    }
    let seen = read_invalidations(&mut tracked, &users);
    assert!(
        seen.iter().all(|k| k.starts_with("user:")),
        "only keys under the prefix: {seen:?}"
    );
    // FLUSHALL reaches every server, and each says "everything".
    assert_eq!(writer.cmd_str(&["FLUSHALL"]), ok());
    let mut flushes = 0;
    while flushes < setup.backends.len() {
        let value = tracked.read_value();
        match invalidated(&value) {
            Some(None) => flushes += 1,
            Some(Some(keys)) => panic!("keys after FLUSHALL: {keys:?}"),
            None => panic!("expected a flush, got {value:?}"),
        }
    }
    // TRACKINGINFO shows what the client asked for.
    let info = tracked.cmd_str(&["CLIENT", "TRACKINGINFO"]);
    assert_eq!(
        info,
        Value::Map(vec![
            (
                Value::bulk("flags"),
                Value::Set(vec![Value::bulk("on"), Value::bulk("bcast")])
            ),
            (Value::bulk("redirect"), Value::Int(0)),
            (
                Value::bulk("prefixes"),
                Value::Array(vec![Value::bulk("user:")])
            ),
        ])
    );
    // RESET ends tracking.
    assert_eq!(tracked.cmd_str(&["RESET"]), Value::Status("RESET".into()));
    assert_eq!(tracked.cmd_str(&["CLIENT", "GETREDIR"]), Value::Int(-1));
}

#[test]
fn redirect_delivers_to_a_resp2_subscriber_and_a_resp3_session() {
    let setup = setup();
    let keys = key_per_server(&setup, "redir:");

    // A RESP2 subscriber on __redis__:invalidate takes another session's invalidations.
    let mut listener = setup.client();
    let Value::Int(listener_id) = listener.cmd_str(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is an integer");
    };
    let subscribed = listener.cmd_str(&["SUBSCRIBE", "__redis__:invalidate"]);
    assert_eq!(
        subscribed,
        Value::Array(vec![
            Value::bulk("subscribe"),
            Value::bulk("__redis__:invalidate"),
            Value::Int(1)
        ])
    );
    let mut tracked = setup.client();
    let id = listener_id.to_string();
    assert_eq!(
        tracked.cmd_str(&["CLIENT", "TRACKING", "on", "REDIRECT", &id]),
        ok()
    );
    assert_eq!(
        tracked.cmd_str(&["CLIENT", "GETREDIR"]),
        Value::Int(listener_id)
    );
    for key in &keys {
        assert_eq!(tracked.cmd_str(&["GET", key]), Value::bulk("v0"));
    }
    let mut writer = setup.client();
    for key in &keys {
        assert_eq!(writer.cmd_str(&["SET", key, "v1"]), ok());
    }
    let mut seen = Vec::new();
    while !keys.iter().all(|k| seen.contains(k)) {
        let Value::Array(message) = listener.read_value() else {
            panic!("a pub/sub message is an array");
        };
        assert_eq!(message[0], Value::bulk("message"));
        assert_eq!(message[1], Value::bulk("__redis__:invalidate"));
        let Value::Array(keys) = &message[2] else {
            panic!("the keys are an array: {message:?}");
        };
        for key in keys {
            let Value::Bulk(key) = key else {
                panic!("a key is a bulk string")
            };
            seen.push(String::from_utf8_lossy(key).into_owned());
        }
    }

    // A RESP3 target takes pushes; once it is gone, a RESP3 tracking session is told.
    let mut target = resp3_client(&setup);
    let Value::Int(target_id) = target.cmd_str(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is an integer");
    };
    let mut tracked3 = resp3_client(&setup);
    let target_id_text = target_id.to_string();
    assert_eq!(
        tracked3.cmd_str(&["CLIENT", "TRACKING", "on", "REDIRECT", &target_id_text]),
        ok()
    );
    assert_eq!(writer.cmd_str(&["SET", &keys[0], "v2"]), ok());
    assert_eq!(
        read_invalidations(&mut target, &keys[..1]),
        keys[..1].to_vec()
    );
    // QUIT closes the connection (as twemproxy: no reply).
    target.send_raw(&common::resp::encode(&[b"QUIT"]));
    assert!(target.is_closed());
    wait_until("the target session ends", || {
        let list = tracked3.cmd_str(&["CLIENT", "LIST", "ID", &target_id_text]);
        (list == Value::Verbatim("txt".into(), Vec::new())).then_some(())
    });
    assert_eq!(writer.cmd_str(&["SET", &keys[0], "v3"]), ok());
    assert_eq!(
        tracked3.read_value(),
        Value::Push(vec![
            Value::bulk("tracking-redir-broken"),
            Value::Int(target_id)
        ])
    );

    // A target that does not exist is refused as Redis refuses it.
    assert_eq!(
        tracked.cmd_str(&["CLIENT", "TRACKING", "on", "REDIRECT", "999999"]),
        err("ERR The client ID you want redirect to does not exist")
    );
}

#[test]
fn a_lost_tracking_connection_ends_in_a_flush_and_tracking_resumes() {
    let setup = setup();
    let keys = key_per_server(&setup, "lost:");
    let mut tracked = resp3_client(&setup);
    assert_eq!(tracked.cmd_str(&["CLIENT", "TRACKING", "ON"]), ok());
    // Kill walnut's tracking connection on the first server (flag `t` in its list).
    let mut direct = setup.backends[0].client();
    let Value::Bulk(list) = direct.cmd_str(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST is a bulk string")
    };
    let list = String::from_utf8_lossy(&list).into_owned();
    let tracking_ids: Vec<&str> = list
        .lines()
        .filter(|line| {
            line.split(' ').any(|f| {
                f.strip_prefix("flags=")
                    .is_some_and(|flags| flags.contains('t'))
            })
        })
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert_eq!(
        tracking_ids.len(),
        1,
        "one tracking connection per server: {list}"
    );
    assert_eq!(
        direct.cmd_str(&["CLIENT", "KILL", "ID", tracking_ids[0]]),
        Value::Int(1)
    );
    // Changes while it was down are unknown: the client is told to drop everything.
    let value = tracked.read_value();
    assert_eq!(invalidated(&value), Some(None), "{value:?}");
    // Then tracking goes on, on that server too.
    let mut writer = setup.client();
    assert_eq!(writer.cmd_str(&["SET", &keys[0], "after"]), ok());
    assert_eq!(
        read_invalidations(&mut tracked, &keys[..1]),
        keys[..1].to_vec()
    );
    assert_eq!(
        reply_skipping_pushes_after(&mut tracked, &["PING"]),
        Value::Status("PONG".into())
    );
}

#[test]
fn a_change_of_servers_ends_in_a_flush_and_the_new_server_is_tracked() {
    let mut setup = setup();
    let mut tracked = resp3_client(&setup);
    assert_eq!(tracked.cmd_str(&["CLIENT", "TRACKING", "ON"]), ok());
    // A fourth server joins by a reload.
    setup.backends.push(common::RedisServer::start());
    let config = common::ketama_pool("tracking", setup.port, &setup.backends, "");
    setup.walnut.rewrite_config(&config);
    let before = setup.walnut.log().matches("reload: pools added").count();
    setup
        .walnut
        .process
        .signal(nix::sys::signal::Signal::SIGUSR1);
    wait_until("the reload", || {
        (setup.walnut.log().matches("reload: pools added").count() > before).then_some(())
    });
    // What the client cached may be stale: drop everything, once the new set tracks.
    let value = tracked.read_value();
    assert_eq!(invalidated(&value), Some(None), "{value:?}");
    // A key on the new server is tracked too.
    let mut writer = setup.client();
    let key = (0..500)
        .map(|n| format!("new:{n}:tag"))
        .find(|key| {
            assert_eq!(writer.cmd_str(&["SET", key, "x"]), ok());
            setup.backends[3].client().cmd_str(&["EXISTS", key]) == Value::Int(1)
        })
        .expect("a key on the new server");
    let seen = read_invalidations(&mut tracked, std::slice::from_ref(&key));
    assert!(seen.contains(&key));
}

/// node-redis 5's own client-side cache (`RESP: 3`, `clientSideCache`) through walnut:
/// repeated reads come from its cache, and another client's write reaches it as an
/// invalidation. (redis-py 5's cache refuses servers older than Redis 7.4.)
#[test]
fn node_redis_client_side_caching_is_invalidated_through_walnut() {
    let setup = setup();
    let keys = key_per_server(&setup, "node:");
    let script = r#"
const { createClient, BasicClientSideCache } = require('redis');
const [port, ...keys] = process.argv.slice(1);
const url = `redis://127.0.0.1:${port}`;
(async () => {
  const cache = new BasicClientSideCache({ ttl: 0, maxEntries: 0 });
  const cached = createClient({ url, RESP: 3, clientSideCache: cache });
  const writer = createClient({ url });
  cached.on('error', (e) => { console.error(e); process.exit(2); });
  await cached.connect();
  await writer.connect();
  for (const key of keys) {
    for (let i = 0; i < 3; i++) {
      const value = await cached.get(key);
      if (value !== 'v0') throw new Error(`${key}: ${value}`);
    }
  }
  const stats = cache.stats();
  console.log(`hits=${stats.hitCount} misses=${stats.missCount}`);
  for (const key of keys) await writer.set(key, 'v1');
  const deadline = Date.now() + 30000;
  for (const key of keys) {
    while ((await cached.get(key)) !== 'v1') {
      if (Date.now() > deadline) throw new Error(`no invalidation for ${key}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  console.log('invalidated');
  // destroy(), not quit(): walnut answers QUIT by closing, as twemproxy does, and
  // node-redis's quit() waits for a +OK.
  cached.destroy();
  writer.destroy();
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let port = setup.port.to_string();
    let mut args = vec![port.as_str()];
    args.extend(keys.iter().map(String::as_str));
    let out = common::run_node("node-redis clientSideCache", script, &args);
    let n = keys.len();
    assert_eq!(
        out,
        format!("hits={} misses={n}\ninvalidated", 2 * n),
        "each key read once from the servers, twice from the cache, then invalidated"
    );
}

/// Sends `args` and returns its reply, skipping pushes before it.
fn reply_skipping_pushes_after(client: &mut RespClient, args: &[&str]) -> Value {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client.send_raw(&common::resp::encode(&bytes));
    reply_skipping_pushes(client)
}

/// The option checks answer what a real redis-server answers, sequence by sequence.
#[test]
fn tracking_options_get_redis_own_answers() {
    let setup = setup();
    let sequences: &[&[&[&str]]] = &[
        &[&["CLIENT", "TRACKINGINFO"], &["CLIENT", "GETREDIR"]],
        &[&["CLIENT", "TRACKING", "maybe"]],
        &[&["CLIENT", "TRACKING"]],
        &[&["CLIENT", "TRACKING", "on", "PREFIX", "a"]],
        &[&["CLIENT", "TRACKING", "on", "BCAST", "OPTIN"]],
        &[&["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"]],
        &[&[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a", "PREFIX", "ab",
        ]],
        &[&["CLIENT", "TRACKING", "on", "REDIRECT", "x"]],
        &[&["CLIENT", "TRACKING", "on", "NOLOOP", "UNKNOWN"]],
        &[
            &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a"],
            &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "ab"],
            &["CLIENT", "TRACKING", "on"],
            &["CLIENT", "TRACKINGINFO"],
            &["CLIENT", "TRACKING", "off"],
            &["CLIENT", "TRACKINGINFO"],
        ],
        &[
            &["CLIENT", "CACHING", "yes"],
            &["CLIENT", "TRACKING", "on", "OPTIN"],
            &["CLIENT", "CACHING", "yes"],
            &["CLIENT", "CACHING", "no"],
            &["CLIENT", "CACHING", "maybe"],
            &["CLIENT", "TRACKING", "on", "OPTOUT"],
            &["CLIENT", "TRACKINGINFO"],
            &["CLIENT", "GETREDIR"],
        ],
        &[&["CLIENT", "CACHING"], &["CLIENT", "GETREDIR", "x"]],
    ];
    for resp3 in [false, true] {
        for sequence in sequences {
            let mut direct = setup.backends[0].client();
            let mut proxied = setup.client();
            if resp3 {
                direct.cmd_str(&["HELLO", "3"]);
                proxied.cmd_str(&["HELLO", "3"]);
            }
            for command in sequence.iter() {
                let want = direct.cmd_str(command);
                let got = proxied.cmd_str(command);
                assert_eq!(got, want, "{command:?} (RESP3: {resp3})");
            }
        }
    }
}
