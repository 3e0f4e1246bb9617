//! Listener, client session, backend connection (in progress).
