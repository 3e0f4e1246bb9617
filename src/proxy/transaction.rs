//! A client's transaction, kept by its session: `WATCH`, `MULTI` … `EXEC`/`DISCARD` and
//! `UNWATCH` on a [`Lease`] of one server's dedicated connection.
//!
//! `MULTI` is answered `+OK` by walnut. The transaction binds to the server of its first
//! keyed command (or first watched key). A keyless command queued before that is answered
//! `+QUEUED` by walnut (a client waits for it before it sends the next one) and held, to be
//! sent when the transaction binds; EXEC's array still comes from Redis. From then on every command goes to that connection as it comes, so `+QUEUED`,
//! EXEC's array and Redis's own errors come from Redis. A key on another server is refused
//! with `-CROSSSLOT`, and like any queuing error it makes EXEC answer `-EXECABORT` (the
//! server's transaction is discarded). EXEC, DISCARD and UNWATCH hand the connection back.

use bytes::Bytes;

use super::error::BackendError;
use super::lease::{Lease, LeaseRequest};
use super::pool::PoolSnapshot;
use super::session::{route, target, Core};
use crate::proto::redis::dispatch;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
/// Redis Cluster's refusal of keys in different slots, which walnut gives for a key on
/// another server than the transaction's.
pub const CROSSSLOT: &[u8] = b"-CROSSSLOT Keys in request don't hash to the same slot\r\n";
const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";
const QUEUED: &[u8] = b"+QUEUED\r\n";

/// Where a command inside MULTI goes.
#[derive(Debug)]
pub enum Queued {
    /// It names no key: the transaction's server, whichever it is.
    Keyless,
    /// Its keys map to this server.
    Server(usize),
    /// walnut refuses it (this reply); the transaction is aborted, as after Redis's own
    /// queuing errors.
    Refused(Bytes),
}

/// One transaction in progress.
#[derive(Debug)]
struct Transaction {
    /// MULTI was answered: commands are queued.
    multi: bool,
    /// A queuing error happened: EXEC answers `-EXECABORT`.
    dirty: bool,
    /// The server it is bound to, and the lease there.
    bound: Option<(usize, Lease)>,
    /// Keyless commands queued before it was bound (walnut answered their `+QUEUED`).
    unbound: Vec<Bytes>,
    /// Its place in the session's order of connections (see [`Transactions::path`]).
    path: u64,
    /// Commands queued since MULTI (refused ones are not), as `CLIENT LIST` counts them.
    queued: usize,
}

/// A session's transaction state.
#[derive(Debug, Default)]
pub struct Transactions {
    current: Option<Transaction>,
    /// The path number the next transaction takes.
    next_path: u64,
}

impl Transactions {
    /// True between MULTI and EXEC/DISCARD.
    pub fn in_multi(&self) -> bool {
        self.current.as_ref().is_some_and(|t| t.multi)
    }

    /// How many commands are queued, inside MULTI.
    pub fn queued(&self) -> Option<usize> {
        self.current.as_ref().filter(|t| t.multi).map(|t| t.queued)
    }

    /// True while a transaction or a WATCH holds a connection.
    pub fn is_bound(&self) -> bool {
        self.current.as_ref().is_some_and(|t| t.bound.is_some())
    }

    /// True while there is a transaction (MULTI or WATCH).
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// The number of the connection the transaction's commands go over: each transaction
    /// has its own, so the session can keep its requests in order across connections. For
    /// a transaction not begun yet, the one it will take.
    pub fn path(&self) -> u64 {
        self.current.as_ref().map_or(self.next_path, |t| t.path)
    }

    fn open(&mut self) -> &mut Transaction {
        let path = self.next_path;
        if self.current.is_none() {
            self.next_path += 1;
        }
        self.current.get_or_insert_with(|| Transaction {
            multi: false,
            dirty: false,
            bound: None,
            unbound: Vec::new(),
            path,
            queued: 0,
        })
    }

    /// RESET, or a session that ends: the connection, if any, is closed (not reused).
    pub fn abandon(&mut self) {
        self.current = None;
    }

    pub fn multi(&mut self, core: &mut Core) {
        if self.in_multi() {
            return core.push_ready(Bytes::from(dispatch::error_reply(
                "MULTI calls can not be nested",
            )));
        }
        let transaction = self.open();
        transaction.multi = true;
        if let Some((_, lease)) = &transaction.bound {
            lease.send(LeaseRequest {
                frame: Bytes::from_static(MULTI),
                reply_to: None,
                deadline: core.batch_deadline(),
                release: false,
            });
        }
        core.push_ready(Bytes::from_static(dispatch::OK));
    }

    /// A command inside MULTI.
    pub fn queue(
        &mut self,
        core: &mut Core,
        snapshot: &PoolSnapshot,
        queued: Queued,
        frame: Bytes,
    ) {
        let Some(transaction) = self.current.as_mut() else {
            return;
        };
        match queued {
            Queued::Refused(reply) => {
                transaction.dirty = true;
                core.push_ready(reply);
            }
            Queued::Server(server) => match transaction.bound {
                Some((bound, _)) if bound != server => {
                    transaction.dirty = true;
                    core.push_ready(Bytes::from_static(CROSSSLOT));
                }
                Some(_) => transaction.send_queued(core, frame),
                None => match transaction.bind(core, snapshot, server) {
                    Ok(()) => transaction.send_queued(core, frame),
                    Err(err) => {
                        transaction.dirty = true;
                        core.push_error(&err);
                    }
                },
            },
            Queued::Keyless if transaction.bound.is_some() => transaction.send_queued(core, frame),
            Queued::Keyless => {
                transaction.unbound.push(frame);
                transaction.queued += 1;
                core.push_ready(Bytes::from_static(QUEUED));
            }
        }
    }

    pub fn exec(&mut self, core: &mut Core, snapshot: &PoolSnapshot, frame: Bytes) {
        if !self.in_multi() {
            return core.push_ready(Bytes::from(dispatch::error_reply("EXEC without MULTI")));
        }
        let Some(mut transaction) = self.current.take() else {
            return;
        };
        if transaction.dirty {
            if let Some((_, lease)) = &transaction.bound {
                lease.send(LeaseRequest {
                    frame: Bytes::from_static(DISCARD),
                    reply_to: None,
                    deadline: core.batch_deadline(),
                    release: true,
                });
            }
            return core.push_ready(Bytes::from_static(EXECABORT));
        }
        if transaction.bound.is_none() {
            if transaction.unbound.is_empty() {
                return core.push_ready(Bytes::from_static(b"*0\r\n"));
            }
            // Only keyless commands: any server runs them.
            let server = route(snapshot, dispatch::PLACEHOLDER_KEY);
            if let Err(err) = server.and_then(|server| transaction.bind(core, snapshot, server)) {
                return core.push_error(&err);
            }
        }
        transaction.send(core, frame, true);
    }

    pub fn discard(&mut self, core: &mut Core, frame: Bytes) {
        if !self.in_multi() {
            return core.push_ready(Bytes::from(dispatch::error_reply("DISCARD without MULTI")));
        }
        let Some(transaction) = self.current.take() else {
            return;
        };
        match transaction.bound {
            Some(_) => transaction.send(core, frame, true),
            None => core.push_ready(Bytes::from_static(dispatch::OK)),
        }
    }

    /// `WATCH` of keys that all map to `server`.
    pub fn watch(&mut self, core: &mut Core, snapshot: &PoolSnapshot, server: usize, frame: Bytes) {
        if self.in_multi() {
            return core.push_ready(Bytes::from(dispatch::error_reply(
                "WATCH inside MULTI is not allowed",
            )));
        }
        let transaction = self.open();
        match transaction.bound {
            Some((bound, _)) if bound != server => core.push_ready(Bytes::from_static(CROSSSLOT)),
            Some(_) => transaction.send(core, frame, false),
            None => match transaction.bind(core, snapshot, server) {
                Ok(()) => transaction.send(core, frame, false),
                Err(err) => {
                    self.current = None;
                    core.push_error(&err);
                }
            },
        }
    }

    /// `UNWATCH` outside MULTI (inside, it is queued like any keyless command).
    pub fn unwatch(&mut self, core: &mut Core, frame: Bytes) {
        match self.current.take() {
            Some(transaction) if transaction.bound.is_some() => transaction.send(core, frame, true),
            _ => core.push_ready(Bytes::from_static(dispatch::OK)),
        }
    }
}

impl Transaction {
    /// Leases a connection of `server` and sends what was queued so far.
    fn bind(
        &mut self,
        core: &mut Core,
        snapshot: &PoolSnapshot,
        server: usize,
    ) -> Result<(), BackendError> {
        let lease = Lease::start(&target(snapshot, server)?.dedicated, core.lane);
        let deadline = core.batch_deadline();
        if self.multi {
            lease.send(LeaseRequest {
                frame: Bytes::from_static(MULTI),
                reply_to: None,
                deadline,
                release: false,
            });
        }
        for frame in self.unbound.drain(..) {
            lease.send(LeaseRequest {
                frame,
                reply_to: None,
                deadline,
                release: false,
            });
        }
        self.bound = Some((server, lease));
        Ok(())
    }

    /// Sends a command queued in MULTI on the lease.
    fn send_queued(&mut self, core: &mut Core, frame: Bytes) {
        self.queued += 1;
        self.send(core, frame, false);
    }

    /// Sends `frame` on the lease and reserves its slot; `release` hands the connection back
    /// after its reply.
    fn send(&self, core: &mut Core, frame: Bytes, release: bool) {
        let reply_to = core.reserve_reply();
        match &self.bound {
            Some((_, lease)) => lease.send(LeaseRequest {
                frame,
                reply_to: Some(reply_to),
                deadline: core.batch_deadline(),
                release,
            }),
            None => reply_to.deliver(Err(BackendError::ConnectionRefused)),
        }
    }
}
