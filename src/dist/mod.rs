//! Key distribution: ketama, modula and random, as in twemproxy's `hashkit/`.
//!
//! A [`Continuum`] is built once from the live servers and is immutable afterwards;
//! ejection or reload builds a new one.

/// One of twemproxy's `distribution:` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DistributionKind {
    Ketama,
    Modula,
    Random,
}

impl DistributionKind {
    pub fn name(self) -> &'static str {
        todo!()
    }
    pub fn from_name(name: &str) -> Option<DistributionKind> {
        let _ = name;
        todo!()
    }
}

/// What the distribution needs to know about one server, in the pool's sorted order.
#[derive(Clone, Copy, Debug)]
pub struct WeightedServer<'a> {
    /// The server's twemproxy name (ketama points hash `"<name>-<i>"`).
    pub name: &'a str,
    pub weight: u32,
    /// False when the server is ejected.
    pub live: bool,
}

/// An immutable lookup structure from a key hash to a server index.
#[derive(Clone, Debug)]
pub struct Continuum {}

impl Continuum {
    pub fn build(kind: DistributionKind, servers: &[WeightedServer<'_>]) -> Continuum {
        let _ = (kind, servers);
        todo!()
    }

    /// The server index for a key hash, or `None` when no server is live.
    pub fn pick(&self, hash: u32) -> Option<usize> {
        let _ = hash;
        todo!()
    }
}
