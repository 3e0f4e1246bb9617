//! Redis Cluster, the pure parts: which slot a key lives in, what a redirect says, and the
//! slot map read from `CLUSTER SLOTS` as one immutable value (so a refresh can swap it whole).
//! No I/O here: the proxy feeds these functions the bytes it read.

pub mod emulate;
pub mod redirect;
pub mod slot;
pub mod table;
pub mod topology;
pub mod value;
