//! `HELLO [protover [AUTH username password] [SETNAME clientname]]`, the pure parts: its
//! arguments read the way Redis 7 reads them (with Redis's own error replies), and walnut's
//! answer, the map Redis sends, in the protocol the session switches to. No I/O, no session
//! state: the session authenticates, names the client and switches its protocol.
//!
//! Redis applies the options one at a time as it reads them and stops at the first that
//! fails, so what came before a bad option has already taken effect (`HELLO 3 SETNAME a
//! bogus` names the client `a`, then answers the syntax error, in the old protocol). A parsed
//! [`Hello`] keeps that order: its `options` to apply in turn, then the `error` to answer
//! instead of the map, if any. An error in `protover` comes before any option is looked at:
//! [`parse`] returns it as `Err`.

use super::encode::Encoder;
use super::reply::Protocol;
use super::request::{strict_parse, Request};

/// Redis's answer to `HELLO` from a client that is not authenticated and gave no `AUTH`.
pub const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already \
    authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate \
    the client and select the RESP protocol version at the same time\r\n";

/// The Redis version walnut's answers speak for: the command set its table follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// A `HELLO` request, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The protocol asked for; `None` for a bare `HELLO`, which keeps the session's.
    pub protover: Option<Protocol>,
    /// The `AUTH` and `SETNAME` options, in request order; the session applies each in turn
    /// and stops at the first that fails (`AUTH`: `-WRONGPASS …`, see
    /// `dispatch::WRONGPASS`), as Redis does.
    pub options: Vec<HelloOption<'a>>,
    /// The reply instead of the map once every option before it has been applied, when the
    /// request has a bad option.
    pub error: Option<HelloError>,
}

/// One option of `HELLO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloOption<'a> {
    Auth {
        username: &'a [u8],
        password: &'a [u8],
    },
    /// The client's new name (already checked: `!`..`~` only); empty clears the name.
    SetName(&'a [u8]),
}

/// Why Redis rejects a `HELLO`; [`HelloError::reply`] is its exact error reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// `protover` is not a 64-bit integer as Redis writes one.
    #[error("ERR Protocol version is not an integer or out of range")]
    NotAnInteger,
    /// `protover` is an integer other than 2 or 3.
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    /// An unknown option, or `AUTH`/`SETNAME` without enough arguments after it. Holds the
    /// option as Redis quotes it: up to its first NUL, CR and LF as spaces.
    #[error("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(.0))]
    Syntax(Vec<u8>),
    /// `SETNAME` with a space, a control character or a byte beyond ASCII `~`.
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    BadClientName,
}

impl HelloError {
    /// The error reply, byte for byte as Redis 7 sends it (the same in RESP2 and RESP3).
    pub fn reply(&self) -> Vec<u8> {
        let mut e = Encoder::new(Protocol::Resp2);
        match self {
            // The option's bytes as they are, not their lossy UTF-8 form.
            HelloError::Syntax(opt) => {
                let mut line = b"ERR Syntax error in HELLO option '".to_vec();
                line.extend_from_slice(opt);
                line.push(b'\'');
                e.error(&line)
            }
            other => e.error(other.to_string().as_bytes()),
        };
        e.finish()
    }
}

/// Redis compares and prints an option as a C string: up to its first NUL.
fn c_str(arg: &[u8]) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end]
}

/// Reads `HELLO`'s arguments (the ones after the command name).
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<Hello<'a>, HelloError> {
    let mut hello = Hello {
        protover: None,
        options: Vec::new(),
        error: None,
    };
    let Some((&version, mut rest)) = args.split_first() else {
        return Ok(hello);
    };
    let version = strict_parse(version).ok_or(HelloError::NotAnInteger)?;
    hello.protover = Some(Protocol::from_version(version).ok_or(HelloError::NoProto)?);
    while let Some((&opt, after)) = rest.split_first() {
        let name = c_str(opt);
        if name.eq_ignore_ascii_case(b"AUTH") && after.len() >= 2 {
            hello.options.push(HelloOption::Auth {
                username: after[0],
                password: after[1],
            });
            rest = &after[2..];
        } else if name.eq_ignore_ascii_case(b"SETNAME") && !after.is_empty() {
            let client_name = after[0];
            if client_name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
                hello.error = Some(HelloError::BadClientName);
                break;
            }
            hello.options.push(HelloOption::SetName(client_name));
            rest = &after[1..];
        } else {
            hello.error = Some(HelloError::Syntax(name.to_vec()));
            break;
        }
    }
    Ok(hello)
}

/// Reads a `HELLO` request (its name is not checked).
pub fn parse_request(req: &Request) -> Result<Hello<'_>, HelloError> {
    let args: Vec<&[u8]> = req.args().skip(1).collect();
    parse(&args)
}

/// What walnut answers to a `HELLO` that succeeded: the fields Redis 7 sends, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloReply<'a> {
    /// `redis`, as clients expect.
    pub server: &'a str,
    /// The Redis version walnut reports (`redis_version`).
    pub version: &'a str,
    /// The session's protocol after this `HELLO`; the reply is written in it.
    pub proto: Protocol,
    /// The client's id, as `CLIENT ID` gives it (beyond `i64::MAX`, `i64::MAX`).
    pub id: u64,
    /// `standalone`, or `cluster` for a cluster pool.
    pub mode: &'a str,
    /// `master`.
    pub role: &'a str,
}

impl<'a> HelloReply<'a> {
    /// The reply of a Redis master: server `redis`, role `master`.
    pub fn redis(version: &'a str, proto: Protocol, id: u64, mode: &'a str) -> HelloReply<'a> {
        HelloReply {
            server: "redis",
            version,
            proto,
            id,
            mode,
            role: "master",
        }
    }

    /// A map of 7 pairs in RESP3 (`%7`), a flat array of 14 elements in RESP2 (`*14`):
    /// server, version, proto, id, mode, role, and modules (always none: `*0`).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new(self.proto);
        e.map(7)
            .bulk(b"server")
            .bulk(self.server.as_bytes())
            .bulk(b"version")
            .bulk(self.version.as_bytes())
            .bulk(b"proto")
            .integer(self.proto.version())
            .bulk(b"id")
            .integer(i64::try_from(self.id).unwrap_or(i64::MAX))
            .bulk(b"mode")
            .bulk(self.mode.as_bytes())
            .bulk(b"role")
            .bulk(self.role.as_bytes())
            .bulk(b"modules")
            .array(0);
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::super::reply::{ReplyDecoder, ReplyKind};
    use super::super::request::testutil::{encode, Rng};
    use super::super::request::RequestDecoder;
    use super::*;

    fn args(line: &str) -> Vec<&[u8]> {
        line.split(' ')
            .filter(|a| !a.is_empty())
            .map(str::as_bytes)
            .collect()
    }

    fn reply_of(args: &[&[u8]]) -> Vec<u8> {
        match parse(args) {
            Err(e) => e.reply(),
            Ok(Hello { error: Some(e), .. }) => e.reply(),
            Ok(_) => b"map".to_vec(),
        }
    }

    /// Replies captured from Redis 7.0.15 (`HELLO <args>`), the map shown as `map`.
    #[test]
    fn redis_replies() {
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[], b"map"),
            (&[b"3"], b"map"),
            (&[b"2"], b"map"),
            (&[b"1"], b"-NOPROTO unsupported protocol version\r\n"),
            (&[b"4"], b"-NOPROTO unsupported protocol version\r\n"),
            (&[b"-1"], b"-NOPROTO unsupported protocol version\r\n"),
            (&[b"0"], b"-NOPROTO unsupported protocol version\r\n"),
            (
                &[b"x"],
                b"-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &[b"03"],
                b"-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &[b" 3"],
                b"-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &[b"99999999999999999999"],
                b"-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &[b""],
                b"-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &[b"3", b"AUTH"],
                b"-ERR Syntax error in HELLO option 'AUTH'\r\n",
            ),
            (
                &[b"3", b"AUTH", b"u"],
                b"-ERR Syntax error in HELLO option 'AUTH'\r\n",
            ),
            (
                &[b"3", b"SETNAME"],
                b"-ERR Syntax error in HELLO option 'SETNAME'\r\n",
            ),
            (
                &[b"3", b"bogus"],
                b"-ERR Syntax error in HELLO option 'bogus'\r\n",
            ),
            (
                &[b"3", b"bo\r\ngus"],
                b"-ERR Syntax error in HELLO option 'bo  gus'\r\n",
            ),
            (
                &[b"3", b"bo\0gus"],
                b"-ERR Syntax error in HELLO option 'bo'\r\n",
            ),
            (
                &[b"3", b"SETNAME", b"a b"],
                b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
            ),
            (
                &[b"3", b"SETNAME", b"ok", b"bad"],
                b"-ERR Syntax error in HELLO option 'bad'\r\n",
            ),
            (&[b"3", b"AUTH", b"default", b"pw"], b"map"),
            (
                &[b"3", b"AUTH", b"default", b"pw", b"bogus"],
                b"-ERR Syntax error in HELLO option 'bogus'\r\n",
            ),
            (&[b"3", b"auth\0x", b"default", b"pw"], b"map"),
            (&[b"3", b"setname", b""], b"map"),
            (&[b"2", b"SETNAME", b"x", b"SETNAME", b"y"], b"map"),
        ];
        for &(args, reply) in cases {
            assert_eq!(
                reply_of(args).escape_ascii().to_string(),
                reply.escape_ascii().to_string(),
                "HELLO {args:?}"
            );
        }
    }

    #[test]
    fn options_in_request_order() {
        let hello = parse(&args("3 auth alice secret SetName app AUTH bob pw")).unwrap();
        assert_eq!(
            hello,
            Hello {
                protover: Some(Protocol::Resp3),
                options: vec![
                    HelloOption::Auth {
                        username: b"alice",
                        password: b"secret"
                    },
                    HelloOption::SetName(b"app"),
                    HelloOption::Auth {
                        username: b"bob",
                        password: b"pw"
                    },
                ],
                error: None,
            }
        );
        assert_eq!(
            parse(&[]).unwrap(),
            Hello {
                protover: None,
                options: vec![],
                error: None
            }
        );
        assert_eq!(parse(&args("2")).unwrap().protover, Some(Protocol::Resp2));
        // What precedes a bad option is applied first, then the error is the answer.
        let hello = parse(&args("3 SETNAME a AUTH u p bogus SETNAME b")).unwrap();
        assert_eq!(
            hello.options,
            vec![
                HelloOption::SetName(b"a"),
                HelloOption::Auth {
                    username: b"u",
                    password: b"p"
                }
            ]
        );
        assert_eq!(hello.error, Some(HelloError::Syntax(b"bogus".to_vec())));
        let hello = parse(&[b"3", b"SETNAME", b"a", b"SETNAME", b"caf\xc3\xa9"]).unwrap();
        assert_eq!(hello.options, vec![HelloOption::SetName(b"a")]);
        assert_eq!(hello.error, Some(HelloError::BadClientName));
        // AUTH takes any bytes, an option name is the option's.
        let hello = parse(&[b"3", b"AUTH", b"SETNAME", b"a b\0"]).unwrap();
        assert_eq!(
            hello.options,
            vec![HelloOption::Auth {
                username: b"SETNAME",
                password: b"a b\0"
            }]
        );
    }

    #[test]
    fn errors_display_and_non_utf8_options() {
        assert_eq!(
            HelloError::NoProto.to_string(),
            "NOPROTO unsupported protocol version"
        );
        let e = parse(&[b"3", b"\xff\xfe"]).unwrap().error.unwrap();
        assert_eq!(
            e.reply(),
            b"-ERR Syntax error in HELLO option '\xff\xfe'\r\n"
        );
        assert_eq!(
            e.to_string(),
            "ERR Syntax error in HELLO option '\u{fffd}\u{fffd}'"
        );
        assert!(NOAUTH_HELLO.starts_with(b"-NOAUTH HELLO must be called with the client"));
        assert!(NOAUTH_HELLO.ends_with(b"version at the same time\r\n"));
        assert!(!NOAUTH_HELLO[..NOAUTH_HELLO.len() - 2].contains(&b'\n'));
    }

    #[test]
    fn parse_request_reads_the_request_arguments() {
        let frame = encode(&[b"hello", b"3", b"SETNAME", b"w"]);
        let mut buf = BytesMut::from(&frame[..]);
        let req = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        let hello = parse_request(&req).unwrap();
        assert_eq!(hello.protover, Some(Protocol::Resp3));
        assert_eq!(hello.options, vec![HelloOption::SetName(b"w")]);
    }

    /// Both forms captured from Redis 7.0.15 (client id 3).
    #[test]
    fn reply_is_redis_map_in_the_new_protocol() {
        let reply = |proto| HelloReply::redis("7.0.15", proto, 3, "standalone").encode();
        assert_eq!(
            reply(Protocol::Resp2),
            b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n\
              $5\r\nproto\r\n:2\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
              $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
        );
        assert_eq!(
            reply(Protocol::Resp3),
            b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n\
              $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
              $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
        );
        let cluster = HelloReply {
            server: "redis",
            version: "7.2.4",
            proto: Protocol::Resp3,
            id: u64::MAX,
            mode: "cluster",
            role: "master",
        }
        .encode();
        let text = String::from_utf8(cluster).unwrap();
        assert!(
            text.contains("$2\r\nid\r\n:9223372036854775807\r\n$4\r\nmode\r\n$7\r\ncluster\r\n")
        );
    }

    /// Random argument lists: parsing never panics, its reply is one well-formed frame, and a
    /// successful parse gives a map that decodes as one reply of the right shape.
    #[test]
    fn hello_fuzz_smoke() {
        const WORDS: &[&[u8]] = &[
            b"2", b"3", b"1", b"03", b"-1", b"AUTH", b"auth", b"SETNAME", b"setname", b"u", b"p w",
            b"", b"x\0y", b"\r\n", b"\xff",
        ];
        let mut rng = Rng(0x4e11_0000_0000_0001);
        let mut seen = [0usize; 3]; // ok, error in options, error in protover
        for _ in 0..5_000 {
            let n = rng.below(7);
            let mut args: Vec<&[u8]> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            if n > 0 && rng.chance(70) {
                args[0] = WORDS[rng.below(2)];
            }
            let (reply, kind) = match parse(&args) {
                Ok(hello) => {
                    // The version, then each option with its arguments: all of them
                    // unless an option was bad.
                    let read: usize = usize::from(hello.protover.is_some())
                        + hello
                            .options
                            .iter()
                            .map(|o| match o {
                                HelloOption::Auth { .. } => 3,
                                HelloOption::SetName(_) => 2,
                            })
                            .sum::<usize>();
                    if hello.error.is_some() {
                        assert!(read < args.len(), "{args:?}");
                    } else {
                        assert_eq!(read, args.len(), "{args:?}");
                    }
                    match hello.error {
                        Some(e) => {
                            seen[1] += 1;
                            (e.reply(), ReplyKind::Error)
                        }
                        None => {
                            seen[0] += 1;
                            let proto = hello.protover.unwrap_or_default();
                            (
                                HelloReply::redis("7.0.15", proto, rng.next(), "standalone")
                                    .encode(),
                                if proto == Protocol::Resp3 {
                                    ReplyKind::Map
                                } else {
                                    ReplyKind::Array
                                },
                            )
                        }
                    }
                }
                Err(e) => {
                    seen[2] += 1;
                    (e.reply(), ReplyKind::Error)
                }
            };
            let mut buf = BytesMut::from(&reply[..]);
            let decoded = ReplyDecoder::with_protocol(1 << 20, Protocol::Resp3)
                .decode(&mut buf)
                .unwrap()
                .unwrap();
            assert!(buf.is_empty());
            assert_eq!(decoded.kind, kind, "{}", reply.escape_ascii());
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
    }
}
