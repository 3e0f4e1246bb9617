//! Daemonizing without `fork()` in a threaded process: the parent re-executes itself
//! detached (stdio on /dev/null) and exits 0; the child starts a new session and clears its
//! umask, as twemproxy's daemon does. The working directory is kept, as in twemproxy.

use std::io;
use std::process::{Command, Stdio};

/// Set in the environment of the re-executed child.
const CHILD_MARKER: &str = "WALNUT_DAEMON_CHILD";

/// True in the detached child.
pub fn is_daemon_child() -> bool {
    std::env::var_os(CHILD_MARKER).is_some()
}

/// In the parent: starts the detached child with the same arguments. The caller exits 0.
pub fn spawn_detached_child() -> io::Result<u32> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_MARKER, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(child.id())
}

/// In the child: leave the parent's session and terminal, and clear the umask.
pub fn become_daemon() -> io::Result<()> {
    nix::unistd::setsid().map_err(io::Error::from)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    Ok(())
}
