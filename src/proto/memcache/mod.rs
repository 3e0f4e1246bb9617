//! The memcached text-protocol codec: request parser, reply parser, multi-get split and
//! merge. No I/O.
pub mod merge;
pub mod reply;
pub mod request;

#[cfg(test)]
mod smoke_tests;
