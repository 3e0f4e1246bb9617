//! Process operations: logging, daemonizing, the pidfile, the open-file and client limits,
//! systemd readiness notification, and fatal signals.
pub mod daemon;
pub mod fatal;
pub mod limits;
pub mod log;
pub mod notify;
pub mod pidfile;
