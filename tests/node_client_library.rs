//! walnut behind a real Node.js client library, ioredis 5 (npm; issue 21 asks for one), over a
//! ketama pool of three real redis-servers with `{…}` hash tags: BullMQ-style worker traffic.
//! A BLMOVE worker loop that acks each job in a MULTI, GET/SET traffic beside a client blocked
//! in BLPOP, pub/sub with channels and patterns and back to normal commands, and a WATCH
//! transaction that a concurrent write aborts. Each scenario is a `node -e` script that prints
//! what it saw as JSON; the asserts are here. scripts/install-node-deps installs ioredis.

mod common;

use std::collections::BTreeSet;

use common::{free_port, local, ProxyProcess, RedisServer};
use serde_json::{json, Value};

struct Setup {
    backends: Vec<RedisServer>,
    _walnut: ProxyProcess,
    /// The scripts' arguments: walnut's port, then the redis-servers' ports.
    ports: Vec<String>,
}

/// Three redis-servers behind one ketama pool; `{...}` hash tags keep keys together.
fn setup() -> Setup {
    let backends: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let port = free_port();
    let config = common::ketama_pool("queues", port, &backends, "  hash_tag: \"{}\"\n");
    let mut ports = vec![port.to_string()];
    ports.extend(backends.iter().map(|b| b.port.to_string()));
    Setup {
        _walnut: ProxyProcess::walnut(&config, &[local(port)]),
        backends,
        ports,
    }
}

/// What every scenario script starts with. `connect()` opens an ioredis client to walnut (or,
/// given a port, straight to a redis-server). walnut refuses `INFO` (it is server-wide), as
/// twemproxy does, so ioredis's ready check (an `INFO`) is turned off. Reconnecting is turned
/// off too: a dropped connection fails the scenario instead of being hidden by a retry. The
/// watchdog only turns a hang into a failure; nothing here asserts timing.
const PRELUDE: &str = r#"
"use strict";
const Redis = require("ioredis");
const [port, ...backendPorts] = process.argv.slice(1).map(Number);
const clients = [];
function connect(name, to = port) {
  const client = new Redis({
    host: "127.0.0.1",
    port: to,
    enableReadyCheck: false,
    retryStrategy: () => null,
  });
  client.on("error", (e) => console.error(`${name}: ${e.message}`));
  clients.push(client);
  return client;
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(done) {
  while (!(await done())) await sleep(20);
}
setTimeout(() => {
  console.error("the scenario did not finish within 120 s");
  process.exit(3);
}, 120000).unref();
"#;

/// How every scenario script ends: `scenario()`'s result goes to stdout as JSON.
const EPILOGUE: &str = r#"
scenario().then(
  (result) => {
    console.log(JSON.stringify(result));
    for (const client of clients) client.disconnect();
    process.exit(0);
  },
  (e) => {
    console.error((e && e.stack) || e);
    process.exit(1);
  },
);
"#;

impl Setup {
    /// Runs `body` (which defines `async function scenario()`) with walnut's port and the
    /// redis-servers' ports as arguments, and returns what `scenario()` resolved to.
    fn run(&self, what: &str, body: &str) -> Value {
        let script = [PRELUDE, body, EPILOGUE].concat();
        let args: Vec<&str> = self.ports.iter().map(String::as_str).collect();
        let out = common::run_node(what, &script, &args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
    }

    /// How many redis-servers hold `key` with the string value `value`, asked directly.
    fn servers_holding(&self, key: &str, value: &str) -> usize {
        self.backends
            .iter()
            .filter(|b| b.client().cmd_str(&["GET", key]) == common::Value::bulk(value))
            .count()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("an array: {value}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("a string: {v}"))
                .to_string()
        })
        .collect()
}

#[test]
fn a_bullmq_style_worker_moves_acks_and_counts_200_jobs_with_ioredis() {
    let s = setup();
    let out = s.run(
        "ioredis BLMOVE worker",
        r#"
async function scenario() {
  const producer = connect("producer");
  const worker = connect("worker");
  const jobs = 200;
  const seen = [];
  const acks = [];
  // The worker blocks before the first job is pushed, and keeps up with the producer.
  const work = (async () => {
    while (seen.length < jobs) {
      const job = await worker.blmove("{q}:wait", "{q}:active", "RIGHT", "LEFT", 5);
      if (job === null) throw new Error(`BLMOVE timed out after ${seen.length} jobs`);
      seen.push(job);
      acks.push(await worker.multi().lrem("{q}:active", 1, job).incr("{q}:done").exec());
    }
  })();
  for (let i = 0; i < jobs; i++) await producer.lpush("{q}:wait", `job:${i}`);
  await work;
  return {
    seen,
    acks,
    done: await producer.get("{q}:done"),
    wait: await producer.llen("{q}:wait"),
    active: await producer.llen("{q}:active"),
  };
}
"#,
    );
    let seen = strings(&out["seen"]);
    let expected: Vec<String> = (0..200).map(|i| format!("job:{i}")).collect();
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct,
        expected.iter().collect(),
        "every job exactly once"
    );
    assert_eq!(seen.len(), 200, "no job seen twice: {seen:?}");
    // One producer pushing on the left, one worker taking from the right: first in, first out.
    assert_eq!(seen, expected);
    // Each ack's EXEC: LREM removed the job from the active list, INCR counted it.
    let acks: Vec<Value> = (1..=200).map(|n| json!([[null, 1], [null, n]])).collect();
    assert_eq!(out["acks"], json!(acks));
    assert_eq!(out["done"], json!("200"));
    assert_eq!(out["wait"], json!(0));
    assert_eq!(out["active"], json!(0));
    assert_eq!(
        s.servers_holding("{q}:done", "200"),
        1,
        "one server holds {{q}}"
    );
}

#[test]
fn ioredis_gets_and_sets_are_answered_while_another_connection_is_blocked_in_blpop() {
    let s = setup();
    let out = s.run(
        "ioredis BLPOP beside GET/SET",
        r#"
async function scenario() {
  const worker = connect("worker");
  const other = connect("other");
  const direct = backendPorts.map((p) => connect(`redis-server ${p}`, p));
  let woken = null;
  const blocked = worker.blpop("{q}:idle", 0).then((reply) => (woken = reply));
  // Blocked for real: a redis-server counts it in blocked_clients.
  let blockedClients = 0;
  await until(async () => {
    const infos = await Promise.all(direct.map((d) => d.info("clients")));
    blockedClients = infos
      .map((info) => Number(/blocked_clients:(\d+)/.exec(info)[1]))
      .reduce((a, b) => a + b, 0);
    return blockedClients > 0;
  });
  // 250 requests pipelined at once, then 250 one at a time, on keys all over the pool.
  const pipelined = [];
  for (let i = 0; i < 125; i++) {
    pipelined.push(other.set(`key:${i}`, `value:${i}`));
    pipelined.push(other.get(`key:${i}`));
  }
  const replies = await Promise.all(pipelined);
  for (let i = 125; i < 250; i++) {
    replies.push(await other.set(`key:${i}`, `value:${i}`));
    replies.push(await other.get(`key:${i}`));
  }
  const stillBlocked = woken === null;
  const pushed = await other.rpush("{q}:idle", "wake");
  const wake = await blocked;
  return { blockedClients, replies, stillBlocked, pushed, wake, left: await other.llen("{q}:idle") };
}
"#,
    );
    assert_eq!(out["blockedClients"], json!(1));
    let expected: Vec<Value> = (0..250)
        .flat_map(|i| [json!("OK"), json!(format!("value:{i}"))])
        .collect();
    assert_eq!(out["replies"], json!(expected));
    assert_eq!(out["stillBlocked"], json!(true), "nothing was pushed yet");
    assert_eq!(out["pushed"], json!(1));
    assert_eq!(out["wake"], json!(["{q}:idle", "wake"]));
    assert_eq!(out["left"], json!(0));
}

#[test]
fn ioredis_pub_sub_delivers_messages_and_pmessages_in_order_then_leaves_subscriber_mode() {
    let s = setup();
    let out = s.run(
        "ioredis pub/sub",
        r#"
async function scenario() {
  const sub = connect("subscriber");
  const pub = connect("publisher");
  const events = [];
  sub.on("message", (channel, message) => events.push(["message", channel, message]));
  sub.on("pmessage", (pattern, channel, message) =>
    events.push(["pmessage", pattern, channel, message]),
  );
  const subscribed = await sub.subscribe("news");
  const psubscribed = await sub.psubscribe("n*");
  const receivers = [];
  for (let i = 0; i < 20; i++) receivers.push(await pub.publish("news", `m${i}`));
  await until(() => events.length >= 40);
  const unsubscribed = await sub.unsubscribe("news");
  const punsubscribed = await sub.punsubscribe("n*");
  await pub.set("{n}:after", "normal");
  const got = await sub.get("{n}:after");
  const set = await sub.set("{n}:mine", "x");
  const receiversAfter = await pub.publish("news", "late");
  return {
    subscribed, psubscribed, receivers, events, unsubscribed, punsubscribed, got, set,
    receiversAfter, mine: await pub.get("{n}:mine"),
  };
}
"#,
    );
    assert_eq!(out["subscribed"], json!(1));
    assert_eq!(
        out["psubscribed"],
        json!(2),
        "channels and patterns count together"
    );
    // Each publish reaches the client twice: by its channel and by its pattern.
    assert_eq!(out["receivers"], json!(vec![2; 20]));
    // Redis's order: each message by channel, then by pattern, publish after publish.
    let events: Vec<Value> = (0..20)
        .flat_map(|i| {
            let m = format!("m{i}");
            [
                json!(["message", "news", m]),
                json!(["pmessage", "n*", "news", m]),
            ]
        })
        .collect();
    assert_eq!(out["events"], json!(events));
    assert_eq!(out["unsubscribed"], json!(1));
    assert_eq!(out["punsubscribed"], json!(0));
    assert_eq!(
        out["got"],
        json!("normal"),
        "a normal GET after the last unsubscribe"
    );
    assert_eq!(out["set"], json!("OK"));
    assert_eq!(out["mine"], json!("x"));
    assert_eq!(
        out["receiversAfter"],
        json!(0),
        "nobody is subscribed any more"
    );
}

#[test]
fn an_ioredis_watch_transaction_aborts_on_a_concurrent_change_and_the_retry_commits() {
    let s = setup();
    let out = s.run(
        "ioredis WATCH",
        r#"
async function scenario() {
  const account = connect("account");
  const rival = connect("rival");
  await account.set("{acct}:balance", "100");
  const attempts = [];
  let rivalSaw = null;
  for (let attempt = 1; attempt <= 3; attempt++) {
    await account.watch("{acct}:balance");
    const balance = Number(await account.get("{acct}:balance"));
    // Another client changes the watched key between the read and the EXEC, once.
    if (attempt === 1) rivalSaw = await rival.incrby("{acct}:balance", 50);
    const result = await account
      .multi()
      .set("{acct}:balance", String(balance + 10))
      .incr("{acct}:updates")
      .exec();
    attempts.push({ balance, result });
    if (result !== null) break;
  }
  return {
    attempts,
    rivalSaw,
    balance: await rival.get("{acct}:balance"),
    updates: await rival.get("{acct}:updates"),
  };
}
"#,
    );
    assert_eq!(out["rivalSaw"], json!(150));
    assert_eq!(
        out["attempts"],
        json!([
            { "balance": 100, "result": null },
            { "balance": 150, "result": [[null, "OK"], [null, 1]] },
        ]),
        "the first EXEC is aborted (nil), the retry commits"
    );
    assert_eq!(out["balance"], json!("160"));
    assert_eq!(out["updates"], json!("1"));
    assert_eq!(s.servers_holding("{acct}:balance", "160"), 1);
}
