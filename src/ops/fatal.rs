//! Fatal signals as twemproxy treats them: SIGSEGV, SIGBUS, SIGFPE and SIGABRT are logged
//! (`signal 11 (SIGSEGV) received, core dumping`), then the process dies of that signal with
//! its default action, leaving a core where `ulimit -c` allows.
//!
//! Without `unsafe` there is no signal handler: [`block`] blocks the four signals in the main
//! thread before any other thread exists (every thread inherits the mask), and [`watch`]
//! starts a thread that takes them with `sigwait`, logs, and re-raises the signal on itself
//! with it unblocked.
//!
//! What this covers, and what it does not:
//! - A signal sent to the process (`kill -SEGV`, what twemproxy's own tests send, or an
//!   `abort` requested from outside) is logged, then the process dies of it.
//! - A real fault inside walnut (a bad memory access, a division trap) is a signal to the
//!   faulting thread; with the signal blocked, the kernel restores the default action and
//!   kills the process at once: it still dies of that signal with a core, but nothing is
//!   logged (and Rust's "thread has overflowed its stack" message is not printed).
//! - `std::process::abort` unblocks SIGABRT in its own thread and dies of it, unlogged.

use nix::sys::signal::{raise, SigSet, SigmaskHow, Signal};

use crate::loga;

/// The signals that are logged and then kill the process.
const FATAL: [Signal; 4] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGABRT,
];

fn fatal_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in FATAL {
        set.add(signal);
    }
    set
}

/// Blocks the fatal signals in the calling thread. Call first thing in `main`, before any
/// thread is started, so that every thread inherits the mask and a signal sent to the process
/// waits for [`watch`].
pub fn block() -> nix::Result<()> {
    fatal_set().thread_block()
}

/// Starts the thread that logs a fatal signal and dies of it. Call once logging is set up.
pub fn watch() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("walnut-signals".into())
        .spawn(|| {
            let set = fatal_set();
            loop {
                let Ok(signal) = set.wait() else {
                    continue;
                };
                loga!(
                    "signal {} ({}) received, core dumping",
                    signal as i32,
                    signal.as_str()
                );
                die_of(signal);
            }
        })
        .map(|_| ())
}

/// Dies of `signal` with its default action: the signal is unblocked in this thread and
/// raised on it. Rust's own SIGSEGV/SIGBUS handler (for stack overflows) puts the default
/// action back and returns when the signal is not a fault in a guard page, so a second raise
/// is the one that kills.
fn die_of(signal: Signal) -> ! {
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
    for _ in 0..3 {
        let _ = raise(signal);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fatal_set_holds_exactly_the_four_signals() {
        let set = fatal_set();
        for signal in FATAL {
            assert!(set.contains(signal), "{signal}");
        }
        assert!(!set.contains(Signal::SIGTERM));
        assert_eq!(set.iter().count(), 4);
    }
}
