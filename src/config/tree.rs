//! Reading the values of walnut's nested pool directives (`tls:`, `server_tls:`, `users:`):
//! mappings with known keys, each once; scalars; lists of scalars. Every problem is reported
//! as `conf: pool 'P': directive "D" …` with its position, and collected, never fatal.
//! (`users:` is read by its own module with these same helpers.)

use super::text::quoted;
use super::yaml::{RawNode, Scalar};
use super::ConfigError;

/// Where a value sits, for messages: the pool and the directive path (`users[1].keys`).
#[derive(Clone, Debug)]
pub(crate) struct Place<'a> {
    pub pool: &'a str,
    pub path: String,
}

impl Place<'_> {
    /// The place of `key` inside this one.
    pub fn field(&self, key: &str) -> Place<'_> {
        Place {
            pool: self.pool,
            path: format!("{}.{key}", self.path),
        }
    }

    /// `conf: pool 'P': directive "PATH" WHAT (line L, column C)`.
    pub fn problem(&self, what: &str, node: &RawNode) -> ConfigError {
        ConfigError(format!(
            "conf: pool '{}': directive \"{}\" {what} {}",
            self.pool,
            self.path,
            node.position()
        ))
    }
}

/// The fields of one mapping, checked against the keys it may have.
#[derive(Debug)]
pub(crate) struct Fields<'n> {
    entries: &'n [(Scalar, RawNode)],
}

impl<'n> Fields<'n> {
    /// Reads `node` as a mapping whose keys are among `known`, each at most once. Reports an
    /// unknown or repeated key (and keeps going); `None` when `node` is not a mapping.
    pub fn read(
        node: &'n RawNode,
        known: &[&str],
        place: &Place<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Fields<'n>> {
        let RawNode::Map { entries, .. } = node else {
            errs.push(place.problem(
                &format!(
                    "must be a mapping of {}, not {}",
                    known.join(", "),
                    node.kind()
                ),
                node,
            ));
            return None;
        };
        for (index, (key, value)) in entries.iter().enumerate() {
            if !known.contains(&key.text.as_str()) {
                errs.push(place.problem(
                    &format!(
                        "has an unknown key {} (known: {})",
                        quoted(&key.text),
                        known.join(", ")
                    ),
                    value,
                ));
            } else if entries[..index].iter().any(|(k, _)| k.text == key.text) {
                errs.push(place.problem(
                    &format!("has the key {} more than once", quoted(&key.text)),
                    value,
                ));
            }
        }
        Some(Fields { entries })
    }

    /// The value of `key`, if present (the first, when repeated).
    pub fn node(&self, key: &str) -> Option<&'n RawNode> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }

    /// The non-empty scalar under `key`, if present; reports any other value.
    pub fn scalar(
        &self,
        key: &str,
        place: &Place<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<&'n Scalar> {
        let node = self.node(key)?;
        match node {
            RawNode::Scalar(s) if !s.text.is_empty() => Some(s),
            _ => {
                errs.push(
                    place
                        .field(key)
                        .problem(&format!("must be a value, not {}", node.kind()), node),
                );
                None
            }
        }
    }

    /// Like [`Fields::scalar`], and reports the key's absence too.
    pub fn required(
        &self,
        key: &str,
        place: &Place<'_>,
        errs: &mut Vec<ConfigError>,
        node: &RawNode,
    ) -> Option<&'n Scalar> {
        if self.node(key).is_none() {
            errs.push(place.problem(&format!("needs \"{key}\""), node));
            return None;
        }
        self.scalar(key, place, errs)
    }
}
