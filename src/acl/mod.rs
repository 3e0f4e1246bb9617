//! A pool's users (`users:`), as Redis 6+ ACLs name them: who may authenticate, with which
//! password, and which commands and keys each may use. Pure: the session asks, this answers.
//!
//! Passwords are kept only as SHA-256 digests and compared in constant time; `Debug` never
//! shows them.

pub mod glob;

use crate::proto::redis::command::{CommandSpec, Handling, Keys};
use crate::proto::redis::keyspecs::LearnedCommand;
use crate::proto::redis::readonly::is_read_only;

/// Which commands a user may run (`commands:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandClass {
    /// Commands that only read (Redis's `readonly` flag), and connection commands.
    ReadOnly,
    /// Every command on keys, and connection commands.
    ReadWrite,
    /// Everything walnut serves, keyless commands included.
    All,
}

/// One user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// SHA-256 of the password.
    pub password_sha256: [u8; 32],
    pub commands: CommandClass,
    /// Glob patterns a key must match one of; `None`: every key.
    pub keys: Option<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password_sha256", &"<redacted>")
            .field("commands", &self.commands)
            .field("keys", &self.keys.as_ref().map(|k| k.len()))
            .finish()
    }
}

/// The name `AUTH <password>` authenticates as.
pub const DEFAULT_USER: &str = "default";

impl User {
    /// Whether the user may run `spec`.
    pub fn may_run(&self, spec: &CommandSpec) -> bool {
        match spec.handling {
            // Connection commands walnut answers itself (PING, ECHO, AUTH, QUIT, CLIENT …).
            Handling::Answer(_) => true,
            // Transactions and subscriptions change no data; what a transaction queues is
            // checked command by command.
            Handling::Stateful(_) => true,
            _ if self.commands == CommandClass::All => true,
            _ if is_read_only(spec.name) => true,
            Handling::Route(Keys::Placeholder) => false,
            Handling::Route(_) | Handling::Split(_) | Handling::Block(_) => {
                self.commands == CommandClass::ReadWrite
            }
            Handling::Everywhere(command) => {
                command.only_reads() || self.commands == CommandClass::ReadWrite
            }
            Handling::Refuse(_) => false,
        }
    }

    /// Whether the user may run a command only the backend knows, by its flags: a
    /// `readonly` one (without `write`) for read-only users, any but `admin` ones for
    /// read-write users.
    pub fn may_run_learned(&self, command: &LearnedCommand) -> bool {
        match self.commands {
            CommandClass::All => true,
            CommandClass::ReadWrite => !command.has_flag("admin"),
            CommandClass::ReadOnly => command.has_flag("readonly") && !command.has_flag("write"),
        }
    }

    /// Whether the user may touch `key`.
    pub fn may_access(&self, key: &[u8]) -> bool {
        match &self.keys {
            None => true,
            Some(patterns) => patterns.iter().any(|p| glob::matches(p, key)),
        }
    }

    /// True when the user has a key rule (so every key must be checked).
    pub fn has_key_rules(&self) -> bool {
        self.keys.is_some()
    }
}

/// A pool's users, in config order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Users {
    pub users: Vec<User>,
}

impl Users {
    /// The user `name` (or [`DEFAULT_USER`]) if `password` is theirs. Every user's digest is
    /// compared, in constant time, whatever the name, so timing tells nothing.
    pub fn authenticate(&self, name: Option<&[u8]>, password: &[u8]) -> Option<&User> {
        let name = name.unwrap_or(DEFAULT_USER.as_bytes());
        let digest = sha256(password);
        let mut found = None;
        for user in &self.users {
            let same = constant_time_eq(&user.password_sha256, &digest);
            if same && user.name.as_bytes() == name {
                found = Some(user);
            }
        }
        found
    }

    /// The user named `name`.
    pub fn find(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::redis::command::lookup;

    fn user(name: &str, password: &str, commands: CommandClass, keys: Option<&[&str]>) -> User {
        User {
            name: name.into(),
            password_sha256: sha256(password.as_bytes()),
            commands,
            keys: keys.map(|k| k.iter().map(|p| p.as_bytes().to_vec()).collect()),
        }
    }

    fn spec(name: &str) -> &'static CommandSpec {
        lookup(name.as_bytes()).expect("a known command")
    }

    #[test]
    fn classes_allow_what_their_names_say() {
        let ro = user("r", "p", CommandClass::ReadOnly, None);
        let rw = user("w", "p", CommandClass::ReadWrite, None);
        let all = user("a", "p", CommandClass::All, None);
        for name in [
            "GET", "MGET", "EXISTS", "ZRANGE", "PING", "AUTH", "QUIT", "ECHO",
        ] {
            assert!(ro.may_run(spec(name)), "readonly runs {name}");
        }
        for name in ["SET", "DEL", "MSET", "INCR", "EVAL"] {
            assert!(!ro.may_run(spec(name)), "readonly does not run {name}");
            assert!(rw.may_run(spec(name)), "readwrite runs {name}");
        }
        assert!(all.may_run(spec("SET")));
        // TIME is answered from walnut's clock: every user may read it.
        assert!(ro.may_run(spec("TIME")) && rw.may_run(spec("TIME")));
        // COMMAND is answered from the catalog: every user may read it.
        assert!(ro.may_run(spec("COMMAND")) && rw.may_run(spec("COMMAND")));
    }

    #[test]
    fn keys_must_match_a_pattern() {
        let app = user(
            "app",
            "p",
            CommandClass::ReadWrite,
            Some(&["app:*", "shared:?"]),
        );
        assert!(app.may_access(b"app:1") && app.may_access(b"shared:x"));
        assert!(!app.may_access(b"other:1") && !app.may_access(b"shared:xy"));
        assert!(app.has_key_rules());
        assert!(user("u", "p", CommandClass::All, None).may_access(b"anything"));
    }

    #[test]
    fn authentication_needs_the_right_pair() {
        let users = Users {
            users: vec![
                user("app", "s3cret", CommandClass::ReadWrite, None),
                user("default", "open", CommandClass::ReadOnly, None),
            ],
        };
        assert_eq!(
            users
                .authenticate(Some(b"app"), b"s3cret")
                .map(|u| u.name.as_str()),
            Some("app")
        );
        assert!(users.authenticate(Some(b"app"), b"open").is_none());
        assert!(users.authenticate(Some(b"nobody"), b"s3cret").is_none());
        assert_eq!(
            users.authenticate(None, b"open").map(|u| u.name.as_str()),
            Some("default")
        );
        assert!(users.authenticate(None, b"s3cret").is_none());
    }

    #[test]
    fn digests_compare_and_never_print() {
        assert_eq!(
            sha256(b"password")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
        assert!(constant_time_eq(&sha256(b"a"), &sha256(b"a")));
        assert!(!constant_time_eq(&sha256(b"a"), &sha256(b"b")));
        let shown = format!("{:?}", user("app", "s3cret", CommandClass::All, None));
        assert!(shown.contains("<redacted>") && !shown.contains("s3cret"));
    }
}
