//! The Redis RESP codec: request parser, command table and reply parser. No I/O.
pub mod catalog;
pub mod clients;
pub mod command;
pub mod dispatch;
pub mod encode;
pub mod fanout;
pub mod hello;
pub mod info;
pub mod keyspecs;
pub mod pubsub;
pub mod readonly;
pub mod reply;
pub mod request;
pub mod split;
pub mod tracking;
