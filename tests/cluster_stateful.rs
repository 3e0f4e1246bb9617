//! Blocking commands, MULTI/EXEC/WATCH transactions and pub/sub through a Redis Cluster pool
//! (`redis_cluster: true`), against a real cluster of 3 masters with one replica each,
//! started once for this file: a blocked client waits on its slot's master without delaying
//! anyone and is woken by a push; a blocking command whose slot moved under walnut follows
//! `-MOVED`, and one whose slot is migrating follows `-ASK` (`ASKING` first), on dedicated
//! connections; a transaction runs on its slot's master, a WATCH conflict aborts it, a key on
//! another master gets `-CROSSSLOT` then `-EXECABORT`, and two slots of one master get what
//! Redis itself answers; channels, patterns and shard channels deliver their messages; and
//! clients dropped while blocked leave no dedicated connection in use.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{node_client, Cluster};
use common::resp::encode;
use common::{
    blocked_clients, err, free_port, local, ok, queued, wait_until, ProxyProcess, RespClient, Value,
};

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
const SUBSCRIBED_MODE: &str = "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// walnut in front of the cluster, with its `/metrics` port.
struct Walnut {
    _process: ProxyProcess,
    port: u16,
    metrics_port: u16,
}

impl Walnut {
    fn client(&self) -> RespClient {
        RespClient::connect(&format!("127.0.0.1:{}", self.port))
    }

    /// A counter of the pool `cluster` in `/metrics`.
    fn pool_counter(&self, name: &str) -> u64 {
        common::pool_metric(self.metrics_port, name, "cluster")
    }

    /// (open, idle) dedicated connections over every node.
    fn dedicated(&self) -> (u64, u64) {
        (
            common::server_metric_sum(self.metrics_port, "walnut_server_dedicated_connections"),
            common::server_metric_sum(
                self.metrics_port,
                "walnut_server_dedicated_idle_connections",
            ),
        )
    }

    /// Waits until every open dedicated connection is idle again.
    fn wait_until_dedicated_idle(&self, after: &str) {
        wait_until(&format!("{after}: every dedicated connection idle"), || {
            let (open, idle) = self.dedicated();
            (open == idle).then_some(())
        });
    }

    /// `BLPOP <key> 0` from a client of its own, in a thread; its reply.
    fn blpop_forever(&self, key: &str) -> JoinHandle<Value> {
        let (port, key) = (self.port, key.to_string());
        std::thread::spawn(move || {
            RespClient::connect(&format!("127.0.0.1:{port}")).cmd_str(&["BLPOP", &key, "0"])
        })
    }
}

fn pair(list: &str, value: &str) -> Value {
    Value::Array(vec![Value::bulk(list), Value::bulk(value)])
}

fn triple(kind: &str, name: &str, last: Value) -> Value {
    Value::Array(vec![Value::bulk(kind), Value::bulk(name), last])
}

fn pmessage(pattern: &str, channel: &str, payload: &str) -> Value {
    Value::Array(vec![
        Value::bulk("pmessage"),
        Value::bulk(pattern),
        Value::bulk(channel),
        Value::bulk(payload),
    ])
}

/// Waits until the node on `port` has more than `before` blocked clients and hands the
/// blocked client back; panics with its reply if it was answered instead.
fn wait_blocked_on(
    port: u16,
    before: u64,
    blocked: JoinHandle<Value>,
    what: &str,
) -> JoinHandle<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while blocked_clients(port) <= before {
        if blocked.is_finished() {
            let reply = blocked.join().expect("the blocked client");
            panic!("{what} was answered before anything was pushed: {reply:?}");
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} to block on the node {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    blocked
}

/// The first hash tag `{<prefix>:<i>}` whose slot the master on `port` serves (not
/// `not_slot`), and that slot.
fn tag_on(cluster: &Cluster, port: u16, prefix: &str, not_slot: Option<u16>) -> (String, u16) {
    let owners = cluster.slot_owners();
    (0..2000)
        .map(|i| format!("{{{prefix}:{i}}}"))
        .map(|tag| {
            let slot = cluster.key_slot(&tag);
            (tag, slot)
        })
        .find(|(_, slot)| owners[usize::from(*slot)] == port && Some(*slot) != not_slot)
        .unwrap_or_else(|| panic!("no {{{prefix}:…}} tag on the master {port}"))
}

/// The master that serves `key`'s slot now.
fn owner(cluster: &Cluster, key: &str) -> u16 {
    cluster.slot_owners()[usize::from(cluster.key_slot(key))]
}

/// Scenario 1: `BLPOP … 0` waits on its master, other clients' GET/SET are answered
/// meanwhile, a push through walnut wakes it, and `BLPOP … 1` ends with Redis's nil array.
fn a_blocked_client_delays_nobody_and_a_push_wakes_it(cluster: &Cluster, w: &Walnut) {
    let master = owner(cluster, "{q}:a");
    let before = blocked_clients(master);
    let blocked = wait_blocked_on(master, before, w.blpop_forever("{q}:a"), "BLPOP {q}:a 0");

    // 8 clients run SET/GET over every master while it is blocked: a count, not a timing.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|c| {
            let (stop, done, port) = (stop.clone(), done.clone(), w.port);
            std::thread::spawn(move || {
                let mut client = RespClient::connect(&format!("127.0.0.1:{port}"));
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("busy:{c}:{n}");
                    assert_eq!(client.cmd_str(&["SET", &key, &key]), ok());
                    assert_eq!(client.cmd_str(&["GET", &key]), Value::bulk(&key));
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    wait_until("2,000 SET/GET pairs while BLPOP is blocked", || {
        (done.load(Ordering::Relaxed) >= 2_000).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a SET/GET client failed");
    }
    assert!(
        !blocked.is_finished(),
        "BLPOP {{q}}:a 0 answered before anything was pushed"
    );
    assert_eq!(blocked_clients(master), before + 1);

    let mut c = w.client();
    assert_eq!(c.cmd_str(&["RPUSH", "{q}:a", "x"]), Value::Int(1));
    assert_eq!(
        blocked.join().expect("the blocked client"),
        pair("{q}:a", "x")
    );
    // The push was popped on the master itself.
    assert_eq!(
        node_client(master).cmd_str(&["LLEN", "{q}:a"]),
        Value::Int(0)
    );
    wait_until("the master to have no blocked client", || {
        (blocked_clients(master) == before).then_some(())
    });

    // Its own timeout (1 s) ends it: Redis's nil array, not walnut's timeout error.
    assert_eq!(c.cmd_str(&["BLPOP", "{q}:b", "1"]), Value::NilArray);
    assert_eq!(c.cmd_str(&["PING"]), Value::Status("PONG".into()));
    assert_eq!(c.cmd_str(&["SET", "{q}:after", "1"]), ok());
    assert_eq!(c.cmd_str(&["GET", "{q}:after"]), Value::bulk("1"));
    w.wait_until_dedicated_idle("after the BLPOPs");
}

/// Scenario 3: transactions run on the master of their slot, as Redis Cluster runs them.
fn transactions_run_on_the_master_of_their_slot(cluster: &Cluster, w: &Walnut) {
    let owners = cluster.slot_owners();
    let u_slot = cluster.key_slot("{u}");
    let master = owners[usize::from(u_slot)];
    let mut c = w.client();
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(c.cmd_str(&["INCR", "{u}:b"]), queued());
    assert_eq!(
        c.cmd_str(&["EXEC"]),
        Value::Array(vec![Value::Int(1), Value::Int(1)])
    );
    let mut direct = node_client(master);
    assert_eq!(direct.cmd_str(&["GET", "{u}:a"]), Value::bulk("1"));
    assert_eq!(direct.cmd_str(&["GET", "{u}:b"]), Value::bulk("1"));

    // Another client changes the WATCHed key before EXEC: a nil array, nothing run.
    let mut other = w.client();
    assert_eq!(c.cmd_str(&["WATCH", "{u}:a"]), ok());
    assert_eq!(c.cmd_str(&["GET", "{u}:a"]), Value::bulk("1"));
    assert_eq!(other.cmd_str(&["INCR", "{u}:a"]), Value::Int(2));
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(c.cmd_str(&["EXEC"]), Value::NilArray);
    assert_eq!(c.cmd_str(&["GET", "{u}:a"]), Value::bulk("2"));
    // Untouched, the same sequence runs.
    assert_eq!(c.cmd_str(&["WATCH", "{u}:a"]), ok());
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["INCR", "{u}:a"]), queued());
    assert_eq!(c.cmd_str(&["EXEC"]), Value::Array(vec![Value::Int(3)]));

    // A key on another master: -CROSSSLOT, then EXEC aborts; nothing was written anywhere.
    let elsewhere = *owners
        .iter()
        .find(|&&p| p != master)
        .expect("another master");
    let (tag, _) = tag_on(cluster, elsewhere, "far", None);
    let far = format!("{tag}:k");
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["SET", "{u}:c", "v"]), queued());
    assert_eq!(c.cmd_str(&["SET", &far, "v"]), err(CROSSSLOT));
    assert_eq!(c.cmd_str(&["EXEC"]), err(EXECABORT));
    assert_eq!(direct.cmd_str(&["EXISTS", "{u}:c"]), Value::Int(0));
    assert_eq!(
        node_client(elsewhere).cmd_str(&["EXISTS", &far]),
        Value::Int(0)
    );
    // The connection is out of the transaction and serves both masters.
    assert_eq!(c.cmd_str(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd_str(&["SET", &far, "vf"]), ok());
    assert_eq!(c.cmd_str(&["GET", &far]), Value::bulk("vf"));
    assert_eq!(c.cmd_str(&["GET", "{u}:a"]), Value::bulk("3"));

    // Two slots of the same master: walnut forwards both (one server), and passes on
    // exactly what Redis answers a direct client for the same transaction.
    let (near_tag, near_slot) = tag_on(cluster, master, "near", Some(u_slot));
    assert_ne!(near_slot, u_slot);
    let near = format!("{near_tag}:k");
    let transaction = |client: &mut RespClient, counter: &str| -> Vec<Value> {
        [
            "MULTI",
            &format!("INCR {counter}"),
            &format!("INCR {near}"),
            "EXEC",
        ]
        .iter()
        .map(|line| client.cmd_str(&line.split(' ').collect::<Vec<_>>()))
        .collect()
    };
    let redis_says = transaction(&mut direct, "{u}:d");
    assert_eq!(
        redis_says,
        vec![ok(), queued(), queued(), err(CROSSSLOT)],
        "Redis Cluster refuses a transaction over two slots at EXEC"
    );
    let walnut_says = transaction(&mut c, "{u}:d");
    assert_eq!(walnut_says, redis_says, "walnut passes Redis's answers on");
    assert_eq!(direct.cmd_str(&["EXISTS", "{u}:d"]), Value::Int(0));
    assert_eq!(direct.cmd_str(&["EXISTS", &near]), Value::Int(0));
    // Still usable: a transaction on one slot runs, on the same connection.
    assert_eq!(c.cmd_str(&["MULTI"]), ok());
    assert_eq!(c.cmd_str(&["INCR", "{u}:d"]), queued());
    assert_eq!(c.cmd_str(&["EXEC"]), Value::Array(vec![Value::Int(1)]));
    assert_eq!(c.cmd_str(&["INCR", &near]), Value::Int(1));
    w.wait_until_dedicated_idle("after the transactions");
}

/// Scenario 4: channels, patterns and shard channels through the cluster pool.
fn pub_sub_delivers_channels_patterns_and_shard_channels(cluster: &Cluster, w: &Walnut) {
    let mut publisher = w.client();
    let mut sub = w.client();
    assert_eq!(
        sub.cmd_str(&["SUBSCRIBE", "news"]),
        triple("subscribe", "news", Value::Int(1))
    );
    match publisher.cmd_str(&["PUBLISH", "news", "hello"]) {
        Value::Int(n) => assert!(n >= 1, "PUBLISH news reached {n} subscribers"),
        other => panic!("PUBLISH news: {other:?}"),
    }
    assert_eq!(
        sub.read_value(),
        triple("message", "news", Value::bulk("hello"))
    );
    assert_eq!(sub.cmd_str(&["GET", "news"]), err(SUBSCRIBED_MODE));

    // A pattern sees channels of every master (one channel per master).
    let mut psub = w.client();
    assert_eq!(
        psub.cmd_str(&["PSUBSCRIBE", "n*"]),
        triple("psubscribe", "n*", Value::Int(1))
    );
    let mut masters = cluster.master_ports();
    masters.sort_unstable();
    let channels: Vec<String> = masters
        .iter()
        .map(|&m| format!("n{}", tag_on(cluster, m, "nch", None).0))
        .collect();
    let mut want = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        let payload = format!("p{i}");
        assert!(matches!(
            publisher.cmd_str(&["PUBLISH", channel, &payload]),
            Value::Int(_)
        ));
        want.push(pmessage("n*", channel, &payload));
    }
    assert!(matches!(
        publisher.cmd_str(&["PUBLISH", "news", "again"]),
        Value::Int(n) if n >= 1
    ));
    want.push(pmessage("n*", "news", "again"));
    // The cluster bus carries each publish from its node: any order.
    let mut got: Vec<Value> = want.iter().map(|_| psub.read_value()).collect();
    let key = |v: &Value| format!("{v:?}");
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    assert_eq!(
        sub.read_value(),
        triple("message", "news", Value::bulk("again"))
    );

    // A shard channel lives on its slot's master; SPUBLISH reaches it there.
    let mut ssub = w.client();
    assert_eq!(
        ssub.cmd_str(&["SSUBSCRIBE", "{s}ch"]),
        triple("ssubscribe", "{s}ch", Value::Int(1))
    );
    assert_eq!(
        node_client(owner(cluster, "{s}ch")).cmd_str(&["PUBSUB", "SHARDCHANNELS"]),
        Value::Array(vec![Value::bulk("{s}ch")])
    );
    assert_eq!(
        publisher.cmd_str(&["SPUBLISH", "{s}ch", "hi"]),
        Value::Int(1)
    );
    assert_eq!(
        ssub.read_value(),
        triple("smessage", "{s}ch", Value::bulk("hi"))
    );

    // The last unsubscribe returns each client to normal commands.
    assert_eq!(
        sub.cmd_str(&["UNSUBSCRIBE", "news"]),
        triple("unsubscribe", "news", Value::Int(0))
    );
    assert_eq!(sub.cmd_str(&["SET", "{s}:after", "v"]), ok());
    assert_eq!(sub.cmd_str(&["GET", "{s}:after"]), Value::bulk("v"));
    assert_eq!(
        psub.cmd_str(&["PUNSUBSCRIBE", "n*"]),
        triple("punsubscribe", "n*", Value::Int(0))
    );
    assert_eq!(psub.cmd_str(&["GET", "{s}:after"]), Value::bulk("v"));
    assert_eq!(
        ssub.cmd_str(&["SUNSUBSCRIBE", "{s}ch"]),
        triple("sunsubscribe", "{s}ch", Value::Int(0))
    );
    assert_eq!(ssub.cmd_str(&["GET", "{s}:after"]), Value::bulk("v"));
    // Nobody is subscribed any more.
    assert_eq!(
        publisher.cmd_str(&["PUBLISH", "news", "late"]),
        Value::Int(0)
    );
    assert_eq!(
        publisher.cmd_str(&["SPUBLISH", "{s}ch", "late"]),
        Value::Int(0)
    );
    w.wait_until_dedicated_idle("after the unsubscribes");
}

/// Scenario 2a: a list's slot moves to another master behind walnut's back; `BLPOP … 0`
/// through walnut gets `-MOVED` from the old master on its dedicated connection, follows it
/// and blocks on the new one, where a push wakes it.
fn a_blpop_follows_moved_to_the_slots_new_master(cluster: &Cluster, w: &Walnut) {
    let mut masters = cluster.master_ports();
    masters.sort_unstable();
    let (from, to) = (masters[0], masters[1]);
    let mut c = w.client();
    // A refresh of walnut's slot map (every 5 s) between the move and the BLPOP would route
    // the BLPOP to the new master at once: then try another slot.
    for attempt in 0..3 {
        let (tag, slot) = tag_on(cluster, from, &format!("moved{attempt}"), None);
        let (list, seed) = (format!("{tag}:list"), format!("{tag}:seed"));
        // walnut has the slot on `from`: the seed lands there.
        assert_eq!(c.cmd_str(&["SET", &seed, "before"]), ok());
        assert_eq!(
            node_client(from).cmd_str(&["GET", &seed]),
            Value::bulk("before")
        );
        let moved = w.pool_counter("walnut_pool_cluster_moved");
        let (from_blocked, to_blocked) = (blocked_clients(from), blocked_clients(to));
        cluster.move_slot(slot, from, to);
        let blocked = w.blpop_forever(&list);
        let blocked = wait_blocked_on(to, to_blocked, blocked, &format!("BLPOP {list} 0"));
        let followed = w.pool_counter("walnut_pool_cluster_moved") > moved;
        assert_eq!(
            blocked_clients(from),
            from_blocked,
            "nothing waits on {from}"
        );
        assert_eq!(
            node_client(to).cmd_str(&["RPUSH", &list, "x"]),
            Value::Int(1)
        );
        assert_eq!(
            blocked.join().expect("the blocked client"),
            pair(&list, "x")
        );
        // The seed moved with its slot, and walnut reads it there.
        assert_eq!(c.cmd_str(&["GET", &seed]), Value::bulk("before"));
        assert_eq!(
            node_client(to).cmd_str(&["GET", &seed]),
            Value::bulk("before")
        );
        if followed {
            return;
        }
        eprintln!("attempt {attempt}: walnut had the new slot map before the BLPOP");
    }
    panic!("walnut's slot map was refreshed before every BLPOP: -MOVED was never followed");
}

/// Scenario 2b: a slot is migrating (MIGRATING on its master, IMPORTING on the other, keys
/// already sent): the old master answers `-ASK` for them; `BLPOP` through walnut sends
/// `ASKING` then the command to the importing master, for a moved list (answered at once)
/// and for an absent one (blocks there, woken by an `RPUSH` through walnut, itself asked).
fn a_blpop_follows_ask_during_a_migration(cluster: &Cluster, w: &Walnut) {
    let mut masters = cluster.master_ports();
    masters.sort_unstable();
    let (from, to) = (masters[1], masters[2]);
    let (tag, slot) = tag_on(cluster, from, "ask", None);
    let (full, empty, seed) = (
        format!("{tag}:full"),
        format!("{tag}:empty"),
        format!("{tag}:seed"),
    );
    let mut c = w.client();
    assert_eq!(c.cmd_str(&["SET", &seed, "s"]), ok());
    assert_eq!(c.cmd_str(&["RPUSH", &full, "p1"]), Value::Int(1));
    assert_eq!(node_client(from).cmd_str(&["LLEN", &full]), Value::Int(1));

    cluster.begin_slot_migration(slot, from, to);
    cluster.migrate_slot_keys(slot, from, to);
    let ask = format!("ASK {slot} 127.0.0.1:{to}");
    assert_eq!(node_client(from).cmd_str(&["LLEN", &full]), err(&ask));
    let asked = w.pool_counter("walnut_pool_cluster_ask");

    // The moved list: answered at once by the importing master.
    assert_eq!(c.cmd_str(&["BLPOP", &full, "0"]), pair(&full, "p1"));
    // An absent list: blocks on the importing master, nothing on the old one.
    let (from_blocked, to_blocked) = (blocked_clients(from), blocked_clients(to));
    let blocked = w.blpop_forever(&empty);
    let blocked = wait_blocked_on(to, to_blocked, blocked, &format!("BLPOP {empty} 0"));
    assert_eq!(
        blocked_clients(from),
        from_blocked,
        "nothing waits on {from}"
    );
    assert_eq!(c.cmd_str(&["RPUSH", &empty, "y"]), Value::Int(1));
    assert_eq!(
        blocked.join().expect("the blocked client"),
        pair(&empty, "y")
    );
    assert!(
        w.pool_counter("walnut_pool_cluster_ask") >= asked + 3,
        "both BLPOPs and the RPUSH followed -ASK"
    );
    // Both lists are empty on the importing master (ASKING: the slot is not its own yet).
    let mut direct = node_client(to);
    for list in [&full, &empty] {
        assert_eq!(direct.cmd_str(&["ASKING"]), ok());
        assert_eq!(direct.cmd_str(&["EXISTS", list]), Value::Int(0), "{list}");
    }

    cluster.finish_slot_migration(slot, from, to);
    assert_eq!(c.cmd_str(&["GET", &seed]), Value::bulk("s"));
    assert_eq!(direct.cmd_str(&["GET", &seed]), Value::bulk("s"));
    w.wait_until_dedicated_idle("after the redirected BLPOPs");
}

/// Scenario 5: 50 clients blocked over every master, then dropped (their sockets closed, as
/// a killed process's are): walnut closes their dedicated connections, and the masters have
/// no blocked client left.
fn clients_dropped_while_blocked_leave_no_dedicated_connection_in_use(
    cluster: &Cluster,
    w: &Walnut,
) {
    w.wait_until_dedicated_idle("before the 50 BLPOPs");
    let masters = cluster.master_ports();
    let blocked_now = || -> u64 { masters.iter().map(|&m| blocked_clients(m)).sum() };
    let before = blocked_now();
    let clients: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut stream = TcpStream::connect(local(w.port)).expect("connect to walnut");
            stream
                .write_all(&encode(&[b"BLPOP", format!("gone:{i}").as_bytes(), b"0"]))
                .expect("send BLPOP");
            stream
        })
        .collect();
    let owners = cluster.slot_owners();
    let used: std::collections::BTreeSet<u16> = (0..50)
        .map(|i| owners[usize::from(cluster.key_slot(&format!("gone:{i}")))])
        .collect();
    assert_eq!(
        used.len(),
        masters.len(),
        "the 50 lists are on every master"
    );
    wait_until("50 BLPOPs blocked on the masters", || {
        let (open, idle) = w.dedicated();
        (open.saturating_sub(idle) >= 50 && blocked_now() >= before + 50).then_some(())
    });
    drop(clients);
    w.wait_until_dedicated_idle("after 50 blocked clients left");
    wait_until("the masters to have no blocked client", || {
        (blocked_now() == before).then_some(())
    });
    let (open, idle) = w.dedicated();
    assert_eq!(open, idle);
    assert_eq!(w.client().cmd_str(&["PING"]), Value::Status("PONG".into()));
}

#[test]
fn blocking_transactions_and_pub_sub_work_through_a_cluster_pool() {
    let cluster = Cluster::start(3);
    let port = free_port();
    let metrics_port = free_port();
    let config = format!(
        "cluster:\n  listen: 127.0.0.1:{port}\n  redis_cluster: true\n  timeout: 3000\n  servers:\n   - 127.0.0.1:{}:1\n   - 127.0.0.1:{}:1\n",
        cluster.nodes[0].port, cluster.nodes[1].port
    );
    let metrics = format!("127.0.0.1:{metrics_port}");
    let process = ProxyProcess::walnut_with(
        &config,
        &[local(port), local(metrics_port)],
        &["--metrics", &metrics],
    );
    let w = Walnut {
        _process: process,
        port,
        metrics_port,
    };
    let mut c = w.client();
    wait_until("walnut to learn the slot map", || {
        (c.cmd_str(&["SET", "walnut:probe", "1"]) == ok()).then_some(())
    });

    a_blocked_client_delays_nobody_and_a_push_wakes_it(&cluster, &w);
    transactions_run_on_the_master_of_their_slot(&cluster, &w);
    pub_sub_delivers_channels_patterns_and_shard_channels(&cluster, &w);
    a_blpop_follows_moved_to_the_slots_new_master(&cluster, &w);
    a_blpop_follows_ask_during_a_migration(&cluster, &w);
    clients_dropped_while_blocked_leave_no_dedicated_connection_in_use(&cluster, &w);
}
