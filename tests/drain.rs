//! A stop that loses nothing: on SIGTERM, walnut stops accepting but goes on reading and
//! answering what each client has sent (what sits in the socket buffer and what arrives while
//! earlier requests are in flight), and closes the client between requests once it is quiet.
//! Every request a client wrote in full before its connection closed gets its reply.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{free_port, local, MemcachedServer, ProxyProcess, RedisServer};
use nix::sys::signal::Signal;

const REQUESTS: usize = 3000;
const VALUE_LEN: usize = 2048;

/// A pipeline of requests, with where each one ends in the byte stream.
struct Pipeline {
    bytes: Vec<u8>,
    /// The offset just past each request that expects a reply.
    answered_ends: Vec<usize>,
}

impl Pipeline {
    fn new(requests: impl Iterator<Item = (Vec<u8>, bool)>) -> Pipeline {
        let mut bytes = Vec::new();
        let mut answered_ends = Vec::new();
        for (request, expects_reply) in requests {
            bytes.extend_from_slice(&request);
            if expects_reply {
                answered_ends.push(bytes.len());
            }
        }
        Pipeline {
            bytes,
            answered_ends,
        }
    }

    /// How many requests expecting a reply were written in full in the first `written` bytes.
    fn answered_within(&self, written: usize) -> usize {
        self.answered_ends.partition_point(|&end| end <= written)
    }
}

/// What one client saw: bytes it managed to write, and the replies it read before EOF.
struct Outcome {
    written: usize,
    replies: Vec<u8>,
}

/// Sends `warm_up` and reads its `expect`ed reply (so the server connection is up), then
/// writes `pipeline` on one thread while reading on another, sending SIGTERM to `walnut` as
/// soon as the first 64 KB are written; returns once walnut closed the connection.
fn pipeline_through_a_stop(
    walnut: &ProxyProcess,
    port: u16,
    (warm_up, expect): (&[u8], &[u8]),
    pipeline: &Pipeline,
) -> Outcome {
    let mut stream = TcpStream::connect(local(port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The first connect to a just-started server is now and then refused when many tests
    // start servers at once: the warm-up is retried until the server answers.
    for attempt in 0.. {
        stream.write_all(warm_up).unwrap();
        let mut reply = vec![0u8; expect.len()];
        stream.read_exact(&mut reply).unwrap();
        if reply == expect {
            break;
        }
        assert!(
            attempt < 50,
            "the warm-up keeps failing: {}",
            common::mc::text(&reply)
        );
        // Whatever else the error reply holds.
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = stream.read(&mut [0u8; 256]);
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut reader = stream.try_clone().unwrap();
    let reading = std::thread::spawn(move || {
        let mut replies = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => return replies,
                Ok(n) => replies.extend_from_slice(&chunk[..n]),
            }
        }
    });
    let mut writer = stream;
    let mut written = 0;
    let mut signalled = false;
    while written < pipeline.bytes.len() {
        let end = (written + 16 * 1024).min(pipeline.bytes.len());
        match writer.write(&pipeline.bytes[written..end]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n,
        }
        if !signalled && written >= 64 * 1024 {
            walnut.process.signal(Signal::SIGTERM);
            signalled = true;
        }
    }
    if !signalled {
        walnut.process.signal(Signal::SIGTERM);
    }
    // Done sending: the half-close is not what ends the session (the drain is), but it must
    // not keep it open either.
    let _ = writer.shutdown(Shutdown::Write);
    let replies = reading.join().unwrap();
    Outcome { written, replies }
}

fn wait_for_exit(walnut: &mut ProxyProcess) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = walnut.process.try_exit() {
            return status;
        }
        assert!(Instant::now() < deadline, "walnut did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many `reply`s `replies` holds, checking it holds nothing else.
fn count_replies(replies: &[u8], reply: &[u8]) -> usize {
    let count = replies.len() / reply.len();
    let other = replies
        .chunks(reply.len())
        .position(|r| r != reply)
        .map(|at| {
            common::mc::text(
                &replies[at * reply.len()..(at * reply.len() + 200).min(replies.len())],
            )
        });
    assert_eq!(other, None, "only {} replies", common::mc::text(reply));
    count
}

fn key(i: usize) -> String {
    format!("drain:{i:05}")
}

/// walnut serving one pool, `alpha` (Redis) or `beta` (memcached), in front of `server`, with
/// a drain timeout long enough that no test here reaches it.
fn start_walnut(redis: bool, server: &str) -> (ProxyProcess, u16) {
    let port = free_port();
    let (name, protocol) = if redis {
        ("alpha", "  redis: true\n")
    } else {
        ("beta", "")
    };
    let conf =
        format!("{name}:\n  listen: 127.0.0.1:{port}\n{protocol}  servers:\n   - {server}\n");
    let walnut = ProxyProcess::walnut_with(&conf, &[local(port)], &["--drain-timeout", "20000"]);
    (walnut, port)
}

/// Checks that every request written in full before walnut closed the connection got `reply`,
/// that the client could write the whole pipeline (walnut kept reading while it drained), and
/// that walnut exited cleanly without reaching its drain timeout.
fn assert_all_answered(
    walnut: &mut ProxyProcess,
    pipeline: &Pipeline,
    outcome: &Outcome,
    reply: &[u8],
) {
    let sent = pipeline.answered_within(outcome.written);
    let answered = count_replies(&outcome.replies, reply);
    assert_eq!(
        answered, sent,
        "every request written before the close is answered"
    );
    assert_eq!(outcome.written, pipeline.bytes.len());
    assert!(wait_for_exit(walnut).success());
    let log = walnut.log();
    assert!(!log.contains("drain timeout"), "{log}");
}

#[test]
fn sigterm_during_a_pipeline_answers_every_request_written() {
    let backend = RedisServer::start();
    let (mut walnut, port) = start_walnut(true, &backend.server_line(1, None));
    let value = vec![b'v'; VALUE_LEN];
    let pipeline = Pipeline::new((0..REQUESTS).map(|i| {
        let request = common::resp::encode(&[b"SET", key(i).as_bytes(), &value]);
        (request, true)
    }));
    let warm_up = common::resp::encode(&[b"SET", b"warm", b"1"]);
    let outcome = pipeline_through_a_stop(&walnut, port, (&warm_up, b"+OK\r\n"), &pipeline);

    assert_all_answered(&mut walnut, &pipeline, &outcome, b"+OK\r\n");
    assert_eq!(pipeline.answered_ends.len(), REQUESTS);
    let mut direct = backend.client();
    assert_eq!(
        direct.cmd_str(&["DBSIZE"]),
        common::Value::Int(REQUESTS as i64 + 1)
    );
}

#[test]
fn memcached_sigterm_during_a_pipeline_answers_every_request_and_delivers_noreply_ones() {
    let backend = MemcachedServer::start();
    let (mut walnut, port) = start_walnut(false, &backend.server_line(1, None));
    let value = "v".repeat(VALUE_LEN);
    // Every third set is `noreply`: it has no reply to wait for, but it must still reach the
    // server before walnut exits.
    let pipeline = Pipeline::new((0..REQUESTS).map(|i| {
        let noreply = i % 3 == 2;
        let flag = if noreply { " noreply" } else { "" };
        let request = format!("set {} 0 0 {VALUE_LEN}{flag}\r\n{value}\r\n", key(i));
        (request.into_bytes(), !noreply)
    }));
    let warm_up = b"set warm 0 0 1\r\n1\r\n";
    let outcome = pipeline_through_a_stop(&walnut, port, (warm_up, b"STORED\r\n"), &pipeline);

    assert_all_answered(&mut walnut, &pipeline, &outcome, b"STORED\r\n");
    // Every set reached memcached, the noreply ones too.
    let mut direct = backend.client();
    for i in (0..REQUESTS)
        .step_by(97)
        .chain([REQUESTS - 1, REQUESTS - 2])
    {
        let reply = direct.call(format!("get {}\r\n", key(i)).as_bytes());
        let expected = format!("VALUE {} 0 {VALUE_LEN}\r\n{value}\r\nEND\r\n", key(i));
        assert_eq!(common::mc::text(&reply), expected, "key {i}");
    }
}

#[test]
fn a_client_whose_first_bytes_arrive_during_the_drain_is_answered() {
    let backend = RedisServer::start();
    let (mut walnut, port) = start_walnut(true, &backend.server_line(1, None));
    // A busy client keeps the drain going while the other one, connected but silent until
    // now, sends its first request.
    let mut busy = TcpStream::connect(local(port)).unwrap();
    busy.write_all(&common::resp::encode(&[b"SET", b"busy", b"1"]))
        .unwrap();
    let mut ok = [0u8; 5];
    busy.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let mut late = TcpStream::connect(local(port)).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The request is in the socket before the drain starts: the doorman must hand it to a
    // session rather than close the connection.
    late.write_all(&common::resp::encode(&[b"SET", b"late", b"1"]))
        .unwrap();
    walnut.process.signal(Signal::SIGTERM);
    let mut reply = Vec::new();
    let _ = late.read_to_end(&mut reply);
    assert_eq!(common::mc::text(&reply), "+OK\r\n", "{}", walnut.log());
    drop(busy);
    assert!(wait_for_exit(&mut walnut).success());
}
