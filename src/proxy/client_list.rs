//! A pool's live Redis client sessions, for `CLIENT LIST` and `CLIENT INFO`.
//!
//! Each session holds an [`Arc`] of its [`ClientEntry`]: what a line shows, in atomics the
//! session stores to without a lock (its last command per request, its last activity per
//! batch, the rest of its state once per batch). The registry, a map by id behind a mutex,
//! is touched only when a session starts or ends and when a client asks for the list, never
//! on the request path. A [`Registration`] takes its entry out of the map when the session
//! ends. The registry belongs to the `Pool`, which stays the same across reloads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use super::backend::ReplyTo;
use super::stream::Endpoints;
use crate::proto::redis::clients::{
    subcommand_code, subcommand_name, ClientFlags, ClientLine, ClientType, ListFilter,
};
use crate::proto::redis::command::{CommandSpec, Handling, Local, COMMANDS};

/// The live sessions of one pool, by id (so listed in the order they connected).
#[derive(Debug, Default)]
pub struct ClientRegistry {
    sessions: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientRegistry {
    /// Lists session `id`, connected over `endpoints`, until the registration is dropped.
    pub fn register(self: &Arc<Self>, id: u64, endpoints: Endpoints) -> Registration {
        let entry = Arc::new(ClientEntry::new(id, endpoints));
        lock(&self.sessions).insert(id, entry.clone());
        Registration {
            registry: self.clone(),
            entry,
        }
    }

    /// The `CLIENT LIST` text of the sessions `filter` picks: a `\n`-terminated line each.
    pub fn list(&self, filter: &ListFilter) -> Vec<u8> {
        // The entries are taken under the lock and written outside it.
        let entries: Vec<Arc<ClientEntry>> = {
            let sessions = lock(&self.sessions);
            match filter {
                ListFilter::All | ListFilter::Type(_) => sessions.values().cloned().collect(),
                ListFilter::Ids(ids) => ids
                    .iter()
                    .filter_map(|&id| u64::try_from(id).ok())
                    .filter_map(|id| sessions.get(&id).cloned())
                    .collect(),
            }
        };
        let now = Instant::now();
        let mut out = Vec::with_capacity(entries.len() * 300);
        for entry in entries {
            let shown = match filter {
                ListFilter::Type(kind) => entry.kind() == *kind,
                _ => true,
            };
            if shown {
                entry.write_line(now, &mut out);
            }
        }
        out
    }

    /// Session `id`, when it is listed.
    pub fn find(&self, id: i64) -> Option<Arc<ClientEntry>> {
        let id = u64::try_from(id).ok()?;
        lock(&self.sessions).get(&id).cloned()
    }

    /// How many sessions are listed.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// True when no session is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's place in its pool's registry; dropping it takes the session off the list.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<ClientRegistry>,
    entry: Arc<ClientEntry>,
}

impl Registration {
    /// The session's own entry.
    pub fn entry(&self) -> &ClientEntry {
        &self.entry
    }

    /// The pool's registry.
    pub fn registry(&self) -> &ClientRegistry {
        &self.registry
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.sessions).remove(&self.entry.id);
    }
}

/// The state of a session a line shows, as the session publishes it once per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    pub db: u32,
    pub resp3: bool,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    /// Commands queued in MULTI, `None` outside one.
    pub multi: Option<usize>,
}

/// What `CLIENT LIST` shows of one session.
#[derive(Debug)]
pub struct ClientEntry {
    id: u64,
    endpoints: Endpoints,
    connected: Instant,
    /// When it was last heard from, in milliseconds after `connected`.
    heard_ms: AtomicU64,
    /// Its last command: the command table's index + 1 (0: none yet) in the low 16 bits, a
    /// `CLIENT` subcommand's code in the high ones.
    command: AtomicU32,
    db: AtomicU32,
    resp3: AtomicBool,
    sub: AtomicU32,
    psub: AtomicU32,
    ssub: AtomicU32,
    /// Commands queued in MULTI, -1 outside one.
    multi: AtomicI64,
    blocked: AtomicBool,
    /// Set only when they change (a few commands), read only by a listing.
    name: Mutex<Option<Bytes>>,
    user: Mutex<Option<Box<str>>>,
    /// Where pushes for this session go, once it offered them (it speaks RESP3, is
    /// subscribed, or asked its id): what another session's `CLIENT TRACKING … REDIRECT`
    /// delivers invalidations to. Locked per invalidation, never per request.
    pushes: Mutex<Option<ReplyTo>>,
}

/// How a session takes messages pushed to it from elsewhere (`CLIENT TRACKING … REDIRECT`).
#[derive(Debug)]
pub struct PushTarget {
    pub to: ReplyTo,
    pub resp3: bool,
    /// In pub/sub mode: a RESP2 session takes invalidations only then, as in Redis.
    pub subscribed: bool,
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl ClientEntry {
    fn new(id: u64, endpoints: Endpoints) -> ClientEntry {
        ClientEntry {
            id,
            endpoints,
            connected: Instant::now(),
            heard_ms: AtomicU64::new(0),
            command: AtomicU32::new(0),
            db: AtomicU32::new(0),
            resp3: AtomicBool::new(false),
            sub: AtomicU32::new(0),
            psub: AtomicU32::new(0),
            ssub: AtomicU32::new(0),
            multi: AtomicI64::new(-1),
            blocked: AtomicBool::new(false),
            name: Mutex::new(None),
            user: Mutex::new(None),
            pushes: Mutex::new(None),
        }
    }

    /// The session read a batch at `at`.
    #[inline]
    pub fn heard(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.connected).as_millis();
        self.heard_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    /// The session is handling `spec` (`None`: an unknown command); `subcommand` is the
    /// request's first argument, read only for `CLIENT`.
    #[inline]
    pub fn command(&self, spec: Option<&CommandSpec>, subcommand: &[u8]) {
        let code = match spec {
            None => 0,
            Some(spec) => {
                let index = crate::stats::commands::spec_index(spec);
                let sub = match spec.handling {
                    Handling::Answer(Local::Client) => subcommand_code(subcommand),
                    _ => 0,
                };
                (u32::from(sub) << 16) | (index as u32 + 1)
            }
        };
        self.command.store(code, Relaxed);
    }

    /// Publishes the session's state.
    pub fn publish(&self, state: &SessionState) {
        self.db.store(state.db, Relaxed);
        self.resp3.store(state.resp3, Relaxed);
        self.sub.store(saturate(state.sub), Relaxed);
        self.psub.store(saturate(state.psub), Relaxed);
        self.ssub.store(saturate(state.ssub), Relaxed);
        let multi = state
            .multi
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.multi.store(multi, Relaxed);
    }

    /// The session waits for a blocking command's reply (or no longer does).
    pub fn blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Relaxed);
    }

    /// The client's new name (`CLIENT SETNAME`, `HELLO … SETNAME`, `RESET`).
    pub fn rename(&self, name: Option<Bytes>) {
        *lock(&self.name) = name;
    }

    /// The user the client is now authenticated as (`None`: `default`).
    pub fn authenticated_as(&self, user: Option<Box<str>>) {
        *lock(&self.user) = user;
    }

    /// Makes the session a possible `REDIRECT` target: pushes for it go to `to`.
    pub fn offer_pushes(&self, to: ReplyTo) {
        *lock(&self.pushes) = Some(to);
    }

    /// True once the session offered its pushes.
    pub fn offers_pushes(&self) -> bool {
        lock(&self.pushes).is_some()
    }

    /// Where messages pushed to this session go, and how it takes them.
    pub fn push_target(&self) -> Option<PushTarget> {
        let to = lock(&self.pushes).clone()?;
        Some(PushTarget {
            to,
            resp3: self.resp3.load(Relaxed),
            subscribed: self.subscribed(),
        })
    }

    fn subscribed(&self) -> bool {
        self.sub.load(Relaxed) + self.psub.load(Relaxed) + self.ssub.load(Relaxed) > 0
    }

    fn kind(&self) -> ClientType {
        if self.subscribed() {
            ClientType::Pubsub
        } else {
            ClientType::Normal
        }
    }

    /// Appends the session's line as of `now`.
    pub fn write_line(&self, now: Instant, out: &mut Vec<u8>) {
        let age = now.saturating_duration_since(self.connected);
        let heard = std::time::Duration::from_millis(self.heard_ms.load(Relaxed));
        let code = self.command.load(Relaxed);
        let cmd = (code & 0xffff)
            .checked_sub(1)
            .and_then(|index| COMMANDS.get(index as usize))
            .map(|spec| (spec.name, subcommand_name((code >> 16) as u16)));
        let multi = self.multi.load(Relaxed);
        let name = lock(&self.name).clone();
        let user = lock(&self.user).clone();
        ClientLine {
            id: self.id,
            addr: &self.endpoints.peer,
            laddr: &self.endpoints.local,
            fd: self.endpoints.fd,
            name: name.as_deref().unwrap_or_default(),
            age_seconds: age.as_secs(),
            idle_seconds: age.saturating_sub(heard).as_secs(),
            flags: ClientFlags {
                pubsub: self.subscribed(),
                multi: multi >= 0,
                blocked: self.blocked.load(Relaxed),
                unix: self.endpoints.unix,
            },
            db: self.db.load(Relaxed),
            sub: self.sub.load(Relaxed) as usize,
            psub: self.psub.load(Relaxed) as usize,
            ssub: self.ssub.load(Relaxed) as usize,
            multi: usize::try_from(multi).ok(),
            cmd,
            user: user.as_deref().unwrap_or("default"),
            resp: if self.resp3.load(Relaxed) { 3 } else { 2 },
        }
        .write_to(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::command::lookup;

    fn endpoints(port: u16) -> Endpoints {
        Endpoints {
            peer: format!("127.0.0.1:{port}"),
            local: "127.0.0.1:22121".into(),
            fd: 9,
            unix: false,
        }
    }

    fn ids(text: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn sessions_are_listed_in_id_order_until_they_end() {
        let registry = Arc::new(ClientRegistry::default());
        let third = registry.register(30, endpoints(3));
        let first = registry.register(10, endpoints(1));
        let second = registry.register(20, endpoints(2));
        assert_eq!(
            ids(&registry.list(&ListFilter::All)),
            ["id=10", "id=20", "id=30"]
        );
        drop(second);
        assert_eq!(ids(&registry.list(&ListFilter::All)), ["id=10", "id=30"]);
        assert_eq!(
            ids(&registry.list(&ListFilter::Ids(vec![30, 20, -1, 10, 30]))),
            ["id=30", "id=10", "id=30"]
        );
        drop((first, third));
        assert!(registry.is_empty());
        assert_eq!(registry.list(&ListFilter::All), b"");
    }

    #[test]
    fn a_line_shows_what_the_session_published() {
        let registry = Arc::new(ClientRegistry::default());
        let registration = registry.register(5, endpoints(4000));
        let entry = registration.entry();
        entry.command(lookup(b"client"), b"Info");
        entry.publish(&SessionState {
            db: 3,
            resp3: true,
            sub: 1,
            psub: 2,
            ssub: 0,
            multi: Some(4),
        });
        entry.rename(Some(Bytes::from_static(b"app")));
        entry.authenticated_as(Some("alice".into()));
        let text = String::from_utf8(registry.list(&ListFilter::All)).unwrap();
        for field in [
            "id=5 addr=127.0.0.1:4000 laddr=127.0.0.1:22121 fd=9 name=app ",
            " flags=Px db=3 sub=1 psub=2 ssub=0 multi=4 ",
            " cmd=client|info user=alice redir=-1 resp=3\n",
        ] {
            assert!(text.contains(field), "{field:?} in {text:?}");
        }
        assert_eq!(
            registry.list(&ListFilter::Type(ClientType::Pubsub)),
            text.as_bytes()
        );
        assert_eq!(registry.list(&ListFilter::Type(ClientType::Normal)), b"");
        entry.command(lookup(b"GET"), b"k");
        let text = String::from_utf8(registry.list(&ListFilter::All)).unwrap();
        assert!(text.contains(" cmd=get "), "{text}");
    }
}
