//! Process operations: logging, daemonizing, the pidfile and signals.
pub mod daemon;
pub mod log;
pub mod pidfile;
