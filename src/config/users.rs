//! The `users:` pool directive (Redis pools only): a sequence of users, each with a `name`,
//! a `password` or its `password_sha256`, a `commands` class and optional `keys` globs.
//! `-t` reports every problem with its place (`users[1].name`).

use super::text::quoted;
use super::tree::{Fields, Place};
use super::yaml::RawNode;
use super::ConfigError;
use crate::acl::{sha256, CommandClass, User, Users};

const USER_KEYS: [&str; 5] = ["name", "password", "password_sha256", "commands", "keys"];

const CLASSES: [(&str, CommandClass); 3] = [
    ("readonly", CommandClass::ReadOnly),
    ("readwrite", CommandClass::ReadWrite),
    ("all", CommandClass::All),
];

/// Reads `users:`; reports every problem into `errs`.
pub(crate) fn read(node: &RawNode, pool: &str, errs: &mut Vec<ConfigError>) -> Option<Users> {
    let place = Place {
        pool,
        path: "users".to_string(),
    };
    let RawNode::Seq { items, .. } = node else {
        errs.push(place.problem(
            &format!("must be a sequence of users, not {}", node.kind()),
            node,
        ));
        return None;
    };
    if items.is_empty() {
        errs.push(place.problem("lists no user", node));
        return None;
    }
    let before = errs.len();
    let mut users: Vec<User> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let place = Place {
            pool,
            path: format!("users[{index}]"),
        };
        let Some(user) = read_user(item, &place, errs) else {
            continue;
        };
        if users.iter().any(|u| u.name == user.name) {
            errs.push(
                place
                    .field("name")
                    .problem(&format!("names a user twice: {}", quoted(&user.name)), item),
            );
            continue;
        }
        users.push(user);
    }
    (errs.len() == before).then_some(Users { users })
}

fn read_user(node: &RawNode, place: &Place<'_>, errs: &mut Vec<ConfigError>) -> Option<User> {
    let before = errs.len();
    let fields = Fields::read(node, &USER_KEYS, place, errs)?;
    let name = fields.required("name", place, errs, node);
    let password = fields.scalar("password", place, errs);
    let digest = fields.scalar("password_sha256", place, errs);
    let password_sha256 = match (password, digest) {
        (Some(p), None) => Some(sha256(p.text.as_bytes())),
        (None, Some(d)) => {
            let parsed = parse_hex(&d.text);
            if parsed.is_none() {
                errs.push(place.field("password_sha256").problem(
                    "must be 64 hexadecimal digits (the SHA-256 of the password)",
                    node,
                ));
            }
            parsed
        }
        (Some(_), Some(_)) => {
            errs.push(place.problem(
                "has both \"password\" and \"password_sha256\": give one",
                node,
            ));
            None
        }
        (None, None) => {
            errs.push(place.problem("needs \"password\" or \"password_sha256\"", node));
            None
        }
    };
    let commands = match fields.scalar("commands", place, errs) {
        None => CommandClass::ReadWrite,
        Some(value) => match CLASSES.iter().find(|(n, _)| *n == value.text) {
            Some(&(_, class)) => class,
            None => {
                errs.push(place.field("commands").problem(
                    &format!(
                        "is not \"readonly\", \"readwrite\" or \"all\": {}",
                        quoted(&value.text)
                    ),
                    node,
                ));
                CommandClass::ReadWrite
            }
        },
    };
    let keys = fields
        .node("keys")
        .and_then(|k| read_keys(k, &place.field("keys"), errs));
    if errs.len() != before {
        return None;
    }
    Some(User {
        name: name?.text.clone(),
        password_sha256: password_sha256?,
        commands,
        keys: if fields.node("keys").is_some() {
            Some(keys?)
        } else {
            None
        },
    })
}

fn read_keys(
    node: &RawNode,
    place: &Place<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<Vec<Vec<u8>>> {
    let RawNode::Seq { items, .. } = node else {
        errs.push(place.problem(
            &format!("must be a sequence of key patterns, not {}", node.kind()),
            node,
        ));
        return None;
    };
    let mut patterns = Vec::with_capacity(items.len());
    for item in items {
        match item {
            RawNode::Scalar(s) if !s.text.is_empty() => patterns.push(s.text.as_bytes().to_vec()),
            other => {
                errs.push(place.problem(
                    &format!("must list key patterns, not {}", other.kind()),
                    other,
                ));
                return None;
            }
        }
    }
    Some(patterns)
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}
