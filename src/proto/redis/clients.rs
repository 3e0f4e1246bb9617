//! `CLIENT INFO`, `CLIENT LIST` and `CLIENT REPLY`, the pure parts: their arguments read the
//! way Redis 7.0 reads them (with Redis's own error texts), and one client's line in Redis
//! 7.0's `CLIENT INFO` format. No I/O and no session state: the session fills a
//! [`ClientLine`] from its own state or from a pool's registry of sessions.

use super::request::{strict_parse, Request};

/// The kinds of client `CLIENT LIST TYPE` names. walnut's clients are only ever normal or
/// pub/sub ones; `master` and `replica` list nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientType {
    Normal,
    Pubsub,
    Master,
    Replica,
}

/// Which clients `CLIENT LIST` lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListFilter {
    All,
    Type(ClientType),
    /// `ID id …`: these, in the order given (an id nobody has is left out).
    Ids(Vec<i64>),
}

/// `CLIENT REPLY ON|OFF|SKIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// Replies again; answered `+OK`.
    On,
    /// No reply at all until `CLIENT REPLY ON`.
    Off,
    /// No reply to the next command.
    Skip,
}

/// Why Redis refuses a `CLIENT LIST` or `CLIENT REPLY`: the text after `-ERR `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientArgError {
    #[error("Unknown client type '{0}'")]
    UnknownType(String),
    #[error("Invalid client ID")]
    InvalidId,
    #[error("syntax error")]
    Syntax,
}

/// `CLIENT LIST [TYPE normal|master|replica|slave|pubsub] [ID id [id …]]`, as Redis 7.0
/// reads it: `TYPE` with exactly one name, or `ID` with at least one integer, or nothing.
pub fn list_filter(req: &Request) -> Result<ListFilter, ClientArgError> {
    let argc = req.argc();
    let option = req.arg(2).unwrap_or_default();
    if argc == 4 && option.eq_ignore_ascii_case(b"TYPE") {
        let name = req.arg(3).unwrap_or_default();
        let is = |word: &str| name.eq_ignore_ascii_case(word.as_bytes());
        let kind = if is("normal") {
            ClientType::Normal
        } else if is("pubsub") {
            ClientType::Pubsub
        } else if is("master") {
            ClientType::Master
        } else if is("replica") || is("slave") {
            ClientType::Replica
        } else {
            let shown = &name[..name.len().min(128)];
            return Err(ClientArgError::UnknownType(
                String::from_utf8_lossy(shown).replace(['\r', '\n'], " "),
            ));
        };
        Ok(ListFilter::Type(kind))
    } else if argc > 3 && option.eq_ignore_ascii_case(b"ID") {
        req.args()
            .skip(3)
            .map(|id| strict_parse(id).ok_or(ClientArgError::InvalidId))
            .collect::<Result<Vec<i64>, _>>()
            .map(ListFilter::Ids)
    } else if argc == 2 {
        Ok(ListFilter::All)
    } else {
        Err(ClientArgError::Syntax)
    }
}

/// `CLIENT REPLY <mode>` (the arity is checked by the caller).
pub fn reply_mode(mode: &[u8]) -> Result<ReplyMode, ClientArgError> {
    if mode.eq_ignore_ascii_case(b"ON") {
        Ok(ReplyMode::On)
    } else if mode.eq_ignore_ascii_case(b"OFF") {
        Ok(ReplyMode::Off)
    } else if mode.eq_ignore_ascii_case(b"SKIP") {
        Ok(ReplyMode::Skip)
    } else {
        Err(ClientArgError::Syntax)
    }
}

/// Redis's `CLIENT` subcommands, lower case, as `CLIENT LIST` shows them in `cmd=client|…`.
const SUBCOMMANDS: &[&str] = &[
    "caching",
    "getname",
    "getredir",
    "help",
    "id",
    "info",
    "kill",
    "list",
    "no-evict",
    "no-touch",
    "pause",
    "reply",
    "setinfo",
    "setname",
    "tracking",
    "trackinginfo",
    "unblock",
    "unpause",
];

/// A `CLIENT` subcommand as a small number (1 and up; 0 for one Redis does not have).
pub fn subcommand_code(name: &[u8]) -> u16 {
    SUBCOMMANDS
        .iter()
        .position(|sub| sub.as_bytes().eq_ignore_ascii_case(name))
        .map_or(0, |i| i as u16 + 1)
}

/// The subcommand of a [`subcommand_code`].
pub fn subcommand_name(code: u16) -> Option<&'static str> {
    SUBCOMMANDS.get(usize::from(code).checked_sub(1)?).copied()
}

/// The flags `CLIENT INFO` shows that a walnut session can have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientFlags {
    /// `P`: subscribed.
    pub pubsub: bool,
    /// `x`: inside MULTI.
    pub multi: bool,
    /// `b`: waiting for a blocking command's reply.
    pub blocked: bool,
    /// `U`: connected over a unix socket.
    pub unix: bool,
}

/// What one client's `CLIENT INFO` line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLine<'a> {
    pub id: u64,
    /// The client's address (`ip:port`, or `path:0` for a unix socket).
    pub addr: &'a str,
    /// walnut's side of the connection.
    pub laddr: &'a str,
    pub fd: i32,
    pub name: &'a [u8],
    pub age_seconds: u64,
    pub idle_seconds: u64,
    pub flags: ClientFlags,
    pub db: u32,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    /// Commands queued in MULTI; `None` outside one (Redis's `-1`).
    pub multi: Option<usize>,
    /// The last command (upper case, as the command table spells it) and its `CLIENT`
    /// subcommand; `None` before the first (Redis's `NULL`).
    pub cmd: Option<(&'a str, Option<&'a str>)>,
    pub user: &'a str,
    /// 2 or 3.
    pub resp: u8,
}

impl ClientLine<'_> {
    /// Appends the line, `\n`-terminated as Redis ends every line of `CLIENT LIST` (and
    /// `CLIENT INFO`'s one). The buffer fields walnut does not keep per client are zeros.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let flags = self.flags;
        let mut shown = String::with_capacity(4);
        for (set, letter) in [
            (flags.pubsub, 'P'),
            (flags.multi, 'x'),
            (flags.blocked, 'b'),
            (flags.unix, 'U'),
        ] {
            if set {
                shown.push(letter);
            }
        }
        if shown.is_empty() {
            shown.push('N');
        }
        let multi = self.multi.map_or(-1, |n| n as i64);
        let cmd = match self.cmd {
            None => "NULL".to_owned(),
            Some((name, None)) => name.to_ascii_lowercase(),
            Some((name, Some(sub))) => format!("{}|{sub}", name.to_ascii_lowercase()),
        };
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "id={} addr={} laddr={} fd={} name=",
            self.id, self.addr, self.laddr, self.fd
        );
        out.extend_from_slice(self.name);
        let _ = writeln!(
            out,
            " age={} idle={} flags={shown} db={} sub={} psub={} ssub={} multi={multi} \
             qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
             tot-mem=0 events=r cmd={cmd} user={} redir=-1 resp={}",
            self.age_seconds,
            self.idle_seconds,
            self.db,
            self.sub,
            self.psub,
            self.ssub,
            self.user,
            self.resp
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::testutil::encode;
    use super::super::request::{Limits, RequestDecoder};
    use super::*;
    use bytes::BytesMut;

    fn request(words: &str) -> Request {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let mut buf = BytesMut::from(&encode(&args)[..]);
        RequestDecoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    fn line() -> ClientLine<'static> {
        ClientLine {
            id: 7,
            addr: "127.0.0.1:50000",
            laddr: "127.0.0.1:22121",
            fd: 12,
            name: b"",
            age_seconds: 3,
            idle_seconds: 1,
            flags: ClientFlags::default(),
            db: 0,
            sub: 0,
            psub: 0,
            ssub: 0,
            multi: None,
            cmd: Some(("CLIENT", Some("info"))),
            user: "default",
            resp: 2,
        }
    }

    fn written(line: &ClientLine<'_>) -> String {
        let mut out = Vec::new();
        line.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_has_redis_7_fields_in_redis_order() {
        assert_eq!(
            written(&line()),
            "id=7 addr=127.0.0.1:50000 laddr=127.0.0.1:22121 fd=12 name= age=3 idle=1 \
             flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 \
             multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r \
             cmd=client|info user=default redir=-1 resp=2\n"
        );
    }

    #[test]
    fn a_line_shows_the_session_state() {
        let line = ClientLine {
            name: b"worker-1",
            flags: ClientFlags {
                pubsub: true,
                multi: true,
                blocked: false,
                unix: true,
            },
            db: 3,
            sub: 2,
            psub: 1,
            ssub: 4,
            multi: Some(5),
            cmd: Some(("GET", None)),
            user: "alice",
            resp: 3,
            ..line()
        };
        let text = written(&line);
        for field in [
            " name=worker-1 ",
            " flags=PxU ",
            " db=3 ",
            " sub=2 psub=1 ssub=4 multi=5 ",
            " cmd=get ",
            " user=alice ",
            " resp=3\n",
        ] {
            assert!(text.contains(field), "{field:?} in {text:?}");
        }
    }

    #[test]
    fn a_client_without_a_command_yet_shows_null() {
        let text = written(&ClientLine {
            cmd: None,
            ..line()
        });
        assert!(text.contains(" cmd=NULL "), "{text}");
    }

    #[test]
    fn list_reads_type_and_ids_as_redis_does() {
        assert_eq!(list_filter(&request("CLIENT LIST")), Ok(ListFilter::All));
        assert_eq!(
            list_filter(&request("CLIENT LIST type PubSub")),
            Ok(ListFilter::Type(ClientType::Pubsub))
        );
        assert_eq!(
            list_filter(&request("CLIENT LIST TYPE slave")),
            Ok(ListFilter::Type(ClientType::Replica))
        );
        assert_eq!(
            list_filter(&request("CLIENT LIST TYPE foo")),
            Err(ClientArgError::UnknownType("foo".into()))
        );
        assert_eq!(
            list_filter(&request("CLIENT LIST ID 3 -1 3")),
            Ok(ListFilter::Ids(vec![3, -1, 3]))
        );
        assert_eq!(
            list_filter(&request("CLIENT LIST ID 1 x")),
            Err(ClientArgError::InvalidId)
        );
        assert_eq!(
            list_filter(&request("CLIENT LIST ID 01")),
            Err(ClientArgError::InvalidId)
        );
        for words in [
            "CLIENT LIST ID",
            "CLIENT LIST TYPE",
            "CLIENT LIST TYPE normal x",
            "CLIENT LIST foo",
        ] {
            assert_eq!(
                list_filter(&request(words)),
                Err(ClientArgError::Syntax),
                "{words}"
            );
        }
        assert_eq!(
            ClientArgError::UnknownType("foo".into()).to_string(),
            "Unknown client type 'foo'"
        );
    }

    #[test]
    fn reply_modes_ignore_case_and_refuse_the_rest() {
        assert_eq!(reply_mode(b"on"), Ok(ReplyMode::On));
        assert_eq!(reply_mode(b"OFF"), Ok(ReplyMode::Off));
        assert_eq!(reply_mode(b"Skip"), Ok(ReplyMode::Skip));
        assert_eq!(reply_mode(b"never"), Err(ClientArgError::Syntax));
    }

    #[test]
    fn subcommand_codes_round_trip() {
        assert_eq!(subcommand_name(subcommand_code(b"INFO")), Some("info"));
        assert_eq!(
            subcommand_name(subcommand_code(b"no-evict")),
            Some("no-evict")
        );
        assert_eq!(subcommand_code(b"bogus"), 0);
        assert_eq!(subcommand_name(0), None);
    }
}
