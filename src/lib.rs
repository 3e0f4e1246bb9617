//! walnut: a fast, twemproxy-compatible proxy for Redis and memcached.
//!
//! A request flows one way through these modules:
//! [`proxy::listener`] → [`proxy::client`] → [`proto`] (codec) → [`route`] (hash + distribution)
//! → [`proxy::backend`] → back to the client. See `ARCHITECTURE.md`.
#![forbid(unsafe_code)]

pub mod acl;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dist;
pub mod hash;
pub mod ops;
pub mod proto;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod stats;
pub mod tls;
