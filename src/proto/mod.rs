//! Protocol codecs: pure functions over bytes, with no I/O.
pub mod redis;
