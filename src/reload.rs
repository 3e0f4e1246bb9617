//! Config reload without a restart: re-read and fully validate the file, then apply it to the
//! running proxy ([`crate::proxy::Proxy::reload`]). A file that does not validate changes
//! nothing: its problems are logged and the failure is counted.
//!
//! Triggers: SIGUSR1, and with `--watch-config` a change to the file itself, noticed by
//! polling (no extra crate, works on every filesystem) and debounced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config;
use crate::proxy::{Proxy, ReloadSummary};
use crate::stats::{RELOADS, RELOAD_FAILURES};

/// Re-reads `path` and applies it. Logs one summary line, or every problem.
pub fn reload_from_file(proxy: &mut Proxy, path: &Path) -> Option<ReloadSummary> {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(problems) => {
            RELOAD_FAILURES.inc();
            for problem in &problems.0 {
                error!("reload: {problem}");
            }
            error!(
                "reload of '{}' failed: the file is invalid; nothing changed",
                path.display()
            );
            return None;
        }
    };
    let running = crate::proxy::workers::count();
    if let Some(wanted) = config.threads.filter(|&t| t != running) {
        warn!(
            "reload: threads: {wanted} takes effect only on a restart (running {running} threads; --threads, when given, wins over the file)"
        );
    }
    match proxy.reload(config) {
        Ok(summary) => {
            RELOADS.inc();
            Some(summary)
        }
        Err(err) => {
            RELOAD_FAILURES.inc();
            error!("reload of '{}' failed: {err}", path.display());
            None
        }
    }
}

/// What the watcher compares: the file's length, modification time and content.
pub type Fingerprint = (u64, Option<std::time::SystemTime>, Vec<u8>);

/// The file's fingerprint, or `None` while it cannot be read. Taken before the config is
/// read, it is what [`watch`] compares with: a change made while walnut starts is reloaded.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    let content = std::fs::read(path).ok()?;
    Some((meta.len(), meta.modified().ok(), content))
}

/// Polls `path` every `interval` and sends a tick once it differs from `applied` (the file
/// the running config was read from) and the change has stayed the same for one more poll
/// (so an editor's partial write is not reloaded). Runs until the receiver is gone.
pub fn watch(
    path: PathBuf,
    interval: Duration,
    mut applied: Option<Fingerprint>,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        // A change seen once, waiting to be seen again unchanged before it is applied.
        let mut pending: Option<Option<Fingerprint>> = None;
        loop {
            tokio::time::sleep(interval).await;
            let now = fingerprint(&path);
            if now == applied {
                pending = None;
                continue;
            }
            if pending.as_ref() == Some(&now) {
                info!("config file '{}' changed; reloading", path.display());
                applied = now;
                pending = None;
                if tx.send(()).await.is_err() {
                    return;
                }
            } else {
                pending = Some(now);
            }
        }
    });
    rx
}
