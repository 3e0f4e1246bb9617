//! Protocol codecs: pure functions over bytes, with no I/O.
pub mod memcache;
pub mod redis;
