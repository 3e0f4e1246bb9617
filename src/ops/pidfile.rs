//! The pidfile: written after daemonizing (`%d`, no newline, as twemproxy), removed on a
//! clean stop.

use std::io;
use std::path::{Path, PathBuf};

/// A written pidfile; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, std::process::id().to_string())?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
