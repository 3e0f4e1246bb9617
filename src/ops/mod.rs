//! Process operations: logging, daemonizing, the pidfile, the open-file and client limits,
//! and systemd readiness notification.
pub mod daemon;
pub mod limits;
pub mod log;
pub mod notify;
pub mod pidfile;
