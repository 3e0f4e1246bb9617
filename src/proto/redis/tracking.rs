//! Client-side caching (`CLIENT TRACKING`), the pure part: the command's options checked in
//! Redis's order with Redis's errors, and the invalidation messages, read from a backend's
//! RESP3 push and written for the client (a RESP3 push, or a `__redis__:invalidate`
//! pub/sub message for a RESP2 client that redirects). No I/O.

use super::request::Request;

/// The channel RESP2 clients receive invalidations on (through `REDIRECT`).
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// The most prefixes one client may give (Redis sets no limit; a bound keeps a client from
/// growing walnut's state without end).
pub const MAX_PREFIXES: usize = 128;

/// `CLIENT TRACKING ON|OFF` and its options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    pub on: bool,
    /// `REDIRECT id`: the client that receives the invalidations.
    pub redirect: Option<i64>,
    pub bcast: bool,
    pub prefixes: Vec<Vec<u8>>,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
}

/// What a client's tracking is now, for the checks that compare with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub on: bool,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
}

/// Why `CLIENT TRACKING` was refused: Redis's error text, without `-ERR `.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackingError {
    #[error("syntax error")]
    Syntax,
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    #[error("A client can only redirect to a single other client")]
    TwoRedirects,
    #[error("The client ID you want redirect to does not exist")]
    NoSuchClient,
    #[error("PREFIX option requires BCAST mode to be enabled")]
    PrefixWithoutBcast,
    #[error("You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")]
    BcastSwitch,
    #[error("OPTIN and OPTOUT are not compatible with BCAST")]
    OptWithBcast,
    #[error("You can't specify both OPTIN mode and OPTOUT mode")]
    OptinAndOptout,
    #[error("You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.")]
    OptSwitch,
    #[error("Prefix '{0}' overlaps with another provided prefix '{1}'. Prefixes for a single client must not overlap.")]
    Overlap(String, String),
    #[error("Prefix '{0}' overlaps with an existing prefix '{1}'. Prefixes for a single client must not overlap.")]
    OverlapsExisting(String, String),
    #[error("walnut takes at most {MAX_PREFIXES} prefixes per client")]
    TooManyPrefixes,
    #[error("CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")]
    CachingWithoutOpt,
    #[error("CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")]
    CachingYesWithoutOptin,
    #[error("CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")]
    CachingNoWithoutOptout,
}

/// The first of `new` that overlaps one of `existing` (a client adding BCAST prefixes).
pub fn overlap_with_existing(new: &[Vec<u8>], existing: &[Vec<u8>]) -> Option<TrackingError> {
    new.iter().find_map(|a| {
        existing
            .iter()
            .find(|b| a.starts_with(b) || b.starts_with(a))
            .map(|b| {
                TrackingError::OverlapsExisting(
                    String::from_utf8_lossy(a).into_owned(),
                    String::from_utf8_lossy(b).into_owned(),
                )
            })
    })
}

/// `CLIENT CACHING yes|no`, checked as Redis does.
pub fn caching(arg: &[u8], current: Current) -> Result<(), TrackingError> {
    if !current.on || !(current.optin || current.optout) {
        return Err(TrackingError::CachingWithoutOpt);
    }
    if arg.eq_ignore_ascii_case(b"YES") {
        return match current.optin {
            true => Ok(()),
            false => Err(TrackingError::CachingYesWithoutOptin),
        };
    }
    if arg.eq_ignore_ascii_case(b"NO") {
        return match current.optout {
            true => Ok(()),
            false => Err(TrackingError::CachingNoWithoutOptout),
        };
    }
    Err(TrackingError::Syntax)
}

/// `CLIENT TRACKINGINFO`: flags, redirect and prefixes, a map in RESP3 (flags a set), in
/// Redis's order. `caching`: a `CLIENT CACHING` still applies (no other command since);
/// `broken_redirect`: the redirect target is gone.
pub fn info(
    tracking: Option<&Tracking>,
    caching: bool,
    broken_redirect: bool,
    resp3: bool,
) -> Vec<u8> {
    let mut flags: Vec<&[u8]> = Vec::new();
    match tracking {
        None => flags.push(b"off"),
        Some(t) => {
            flags.push(b"on");
            for (set, name) in [
                (t.bcast, &b"bcast"[..]),
                (t.optin, b"optin"),
                (t.optin && caching, b"caching-yes"),
                (t.optout, b"optout"),
                (t.optout && caching, b"caching-no"),
                (t.noloop, b"noloop"),
                (broken_redirect, b"broken_redirect"),
            ] {
                if set {
                    flags.push(name);
                }
            }
        }
    }
    let redirect = tracking.map_or(-1, |t| t.redirect.unwrap_or(0));
    let prefixes = tracking.map_or(&[][..], |t| &t.prefixes[..]);
    let mut out = match resp3 {
        true => b"%3\r\n".to_vec(),
        false => b"*6\r\n".to_vec(),
    };
    out.extend_from_slice(b"$5\r\nflags\r\n");
    out.extend_from_slice(
        format!("{}{}\r\n", if resp3 { '~' } else { '*' }, flags.len()).as_bytes(),
    );
    for flag in flags {
        out.extend_from_slice(&super::dispatch::bulk(flag));
    }
    out.extend_from_slice(format!("$8\r\nredirect\r\n:{redirect}\r\n").as_bytes());
    out.extend_from_slice(format!("$8\r\nprefixes\r\n*{}\r\n", prefixes.len()).as_bytes());
    for prefix in prefixes {
        out.extend_from_slice(&super::dispatch::bulk(prefix));
    }
    out
}

/// `CLIENT TRACKING ON BCAST [PREFIX p]…`: what walnut's tracking connections send each
/// server (always BCAST: the servers see none of the client's reads).
pub fn server_command(tracking: &Tracking) -> Vec<u8> {
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON", b"BCAST"];
    for prefix in &tracking.prefixes {
        args.push(b"PREFIX");
        args.push(prefix);
    }
    super::pubsub::frame_of_bulks(&args)
}

/// "Forget everything": sent to a client when walnut may have missed invalidations (a
/// tracking connection was lost, the servers changed).
pub const FLUSH_PUSH: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// Parses `CLIENT TRACKING on|off [REDIRECT id] [BCAST] [PREFIX p]… [OPTIN] [OPTOUT]
/// [NOLOOP]` as Redis does: the options first (a redirect target must exist now:
/// `client_exists`), then `on`/`off`, then the checks against `current`.
pub fn parse(
    req: &Request,
    current: Current,
    client_exists: impl Fn(i64) -> bool,
) -> Result<Tracking, TrackingError> {
    let mut tracking = Tracking::default();
    let argc = req.argc();
    let mut i = 3;
    while i < argc {
        let arg = req.arg(i).unwrap_or_default();
        let more = i + 1 < argc;
        let is = |name: &str| arg.eq_ignore_ascii_case(name.as_bytes());
        if is("REDIRECT") && more {
            i += 1;
            if tracking.redirect.is_some() {
                return Err(TrackingError::TwoRedirects);
            }
            let id = integer(req.arg(i).unwrap_or_default()).ok_or(TrackingError::NotAnInteger)?;
            if !client_exists(id) {
                return Err(TrackingError::NoSuchClient);
            }
            tracking.redirect = Some(id);
        } else if is("BCAST") {
            tracking.bcast = true;
        } else if is("OPTIN") {
            tracking.optin = true;
        } else if is("OPTOUT") {
            tracking.optout = true;
        } else if is("NOLOOP") {
            tracking.noloop = true;
        } else if is("PREFIX") && more {
            i += 1;
            if tracking.prefixes.len() == MAX_PREFIXES {
                return Err(TrackingError::TooManyPrefixes);
            }
            tracking
                .prefixes
                .push(req.arg(i).unwrap_or_default().to_vec());
        } else {
            return Err(TrackingError::Syntax);
        }
        i += 1;
    }
    let switch = req.arg(2).unwrap_or_default();
    if switch.eq_ignore_ascii_case(b"OFF") {
        return Ok(tracking);
    }
    if !switch.eq_ignore_ascii_case(b"ON") {
        return Err(TrackingError::Syntax);
    }
    tracking.on = true;
    if !tracking.bcast && !tracking.prefixes.is_empty() {
        return Err(TrackingError::PrefixWithoutBcast);
    }
    if current.on && current.bcast != tracking.bcast {
        return Err(TrackingError::BcastSwitch);
    }
    if tracking.bcast && (tracking.optin || tracking.optout) {
        return Err(TrackingError::OptWithBcast);
    }
    if tracking.optin && tracking.optout {
        return Err(TrackingError::OptinAndOptout);
    }
    if (tracking.optin && current.optout) || (tracking.optout && current.optin) {
        return Err(TrackingError::OptSwitch);
    }
    for (n, a) in tracking.prefixes.iter().enumerate() {
        for b in &tracking.prefixes[n + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(TrackingError::Overlap(
                    String::from_utf8_lossy(a).into_owned(),
                    String::from_utf8_lossy(b).into_owned(),
                ));
            }
        }
    }
    Ok(tracking)
}

fn integer(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// An invalidation: the keys, or `None` for "everything" (a FLUSHALL/FLUSHDB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    pub keys: Option<Vec<Vec<u8>>>,
}

/// Reads a backend's RESP3 push `>2 invalidate <keys | null>`; `None` for any other frame.
pub fn read_invalidation(frame: &[u8]) -> Option<Invalidation> {
    let rest = frame.strip_prefix(b">2\r\n$10\r\ninvalidate\r\n")?;
    if rest == b"_\r\n" || rest == b"*-1\r\n" || rest == b"$-1\r\n" {
        return Some(Invalidation { keys: None });
    }
    let (count, mut rest) = header(rest, b'*')?;
    let mut keys = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (len, after) = header(rest, b'$')?;
        let key = after.get(..len)?;
        if after.get(len..len + 2)? != b"\r\n" {
            return None;
        }
        keys.push(key.to_vec());
        rest = &after[len + 2..];
    }
    rest.is_empty().then_some(Invalidation { keys: Some(keys) })
}

/// `<kind><n>\r\n` at the start of `bytes`: `n` and what follows.
fn header(bytes: &[u8], kind: u8) -> Option<(usize, &[u8])> {
    let rest = bytes.strip_prefix(&[kind])?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((n, rest.get(end + 2..)?))
}

/// The invalidation as the client receives it: a RESP3 push, or (RESP2, redirected) a
/// pub/sub `message` on `__redis__:invalidate`.
pub fn invalidation_message(invalidation: &Invalidation, resp3: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if resp3 {
        out.extend_from_slice(b">2\r\n$10\r\ninvalidate\r\n");
    } else {
        out.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
        out.extend_from_slice(&super::dispatch::bulk(INVALIDATE_CHANNEL));
    }
    match &invalidation.keys {
        None if resp3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(b"$-1\r\n"),
        Some(keys) => {
            out.extend_from_slice(format!("*{}\r\n", keys.len()).as_bytes());
            for key in keys {
                out.extend_from_slice(&super::dispatch::bulk(key));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::request::{Limits, RequestDecoder};
    use bytes::BytesMut;

    fn request(words: &str) -> Request {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let mut buf = BytesMut::from(&super::super::pubsub::frame_of_bulks(&args)[..]);
        RequestDecoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    fn check(words: &str, current: Current) -> Result<Tracking, String> {
        parse(&request(words), current, |id| id == 7).map_err(|e| e.to_string())
    }

    #[test]
    fn options_are_checked_in_redis_order_with_its_errors() {
        let off = Current::default();
        // The texts a real Redis 7.0 gives.
        let cases = [
            ("CLIENT TRACKING maybe", "syntax error"),
            ("CLIENT TRACKING on PREFIX a", "PREFIX option requires BCAST mode to be enabled"),
            ("CLIENT TRACKING on BCAST OPTIN", "OPTIN and OPTOUT are not compatible with BCAST"),
            ("CLIENT TRACKING on OPTIN OPTOUT", "You can't specify both OPTIN mode and OPTOUT mode"),
            ("CLIENT TRACKING on REDIRECT x", "value is not an integer or out of range"),
            ("CLIENT TRACKING on REDIRECT 99999", "The client ID you want redirect to does not exist"),
            ("CLIENT TRACKING on REDIRECT 7 REDIRECT 7", "A client can only redirect to a single other client"),
            ("CLIENT TRACKING on BOGUS", "syntax error"),
            ("CLIENT TRACKING on PREFIX", "syntax error"),
            (
                "CLIENT TRACKING on BCAST PREFIX a PREFIX ab",
                "Prefix 'a' overlaps with another provided prefix 'ab'. Prefixes for a single client must not overlap.",
            ),
        ];
        for (words, error) in cases {
            assert_eq!(check(words, off), Err(error.to_string()), "{words}");
        }
        let bcast = check(
            "client tracking ON bcast prefix user: prefix job: noloop",
            off,
        )
        .unwrap();
        assert!(bcast.on && bcast.bcast && bcast.noloop && bcast.redirect.is_none());
        assert_eq!(bcast.prefixes, [b"user:".to_vec(), b"job:".to_vec()]);
        assert_eq!(
            check("CLIENT TRACKING on REDIRECT 7 OPTIN", off)
                .unwrap()
                .redirect,
            Some(7)
        );
        assert!(!check("CLIENT TRACKING off", off).unwrap().on);
    }

    #[test]
    fn modes_cannot_switch_while_tracking_is_on() {
        let on = Current {
            on: true,
            ..Current::default()
        };
        assert!(check("CLIENT TRACKING on BCAST", on)
            .unwrap_err()
            .starts_with("You can't switch BCAST"));
        let optin = Current { optin: true, ..on };
        assert!(check("CLIENT TRACKING on OPTOUT", optin)
            .unwrap_err()
            .starts_with("You can't switch OPTIN/OPTOUT"));
        assert!(check("CLIENT TRACKING on OPTIN", optin).is_ok());
    }

    #[test]
    fn caching_info_and_the_server_command() {
        let on = Current {
            on: true,
            ..Current::default()
        };
        let text = |r: Result<(), TrackingError>| r.unwrap_err().to_string();
        assert!(text(caching(b"yes", Current::default()))
            .starts_with("CLIENT CACHING can be called only"));
        assert_eq!(
            text(caching(b"yes", on)),
            "CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
        );
        let optout = Current { optout: true, ..on };
        assert_eq!(
            text(caching(b"yes", optout)),
            "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
        );
        assert!(caching(b"NO", optout).is_ok());
        assert_eq!(text(caching(b"maybe", optout)), "syntax error");
        // As a real Redis 7.0 answers without tracking.
        assert_eq!(
            info(None, false, false, false),
            b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"
        );
        let bcast = Tracking {
            on: true,
            bcast: true,
            prefixes: vec![b"a".to_vec()],
            ..Tracking::default()
        };
        assert_eq!(
            info(Some(&bcast), false, false, true),
            b"%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\nbcast\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*1\r\n$1\r\na\r\n"
        );
        assert_eq!(
            server_command(&bcast),
            b"*6\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n$6\r\nPREFIX\r\n$1\r\na\r\n"
        );
        assert_eq!(
            overlap_with_existing(&[b"ab".to_vec()], &[b"a".to_vec()]).unwrap().to_string(),
            "Prefix 'ab' overlaps with an existing prefix 'a'. Prefixes for a single client must not overlap."
        );
        assert_eq!(read_invalidation(FLUSH_PUSH).unwrap().keys, None);
    }

    #[test]
    fn invalidations_are_read_and_written_in_both_protocols() {
        let push = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n";
        let read = read_invalidation(push).unwrap();
        assert_eq!(read.keys, Some(vec![b"a".to_vec(), b"bc".to_vec()]));
        assert_eq!(invalidation_message(&read, true), push);
        assert_eq!(
            invalidation_message(&read, false),
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
        let flush = read_invalidation(b">2\r\n$10\r\ninvalidate\r\n_\r\n").unwrap();
        assert_eq!(flush.keys, None);
        assert_eq!(
            invalidation_message(&flush, false),
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        );
        // Anything else, or a cut frame, is not an invalidation.
        assert!(read_invalidation(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n").is_none());
        assert!(read_invalidation(&push[..push.len() - 3]).is_none());
        assert!(read_invalidation(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$9\r\na\r\n").is_none());
    }
}
