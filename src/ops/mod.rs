//! Logging, signals, pidfile and daemon (in progress).
