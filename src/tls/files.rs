//! Notices when certificate, key or CA files change on disk, so the TLS configs built from
//! them can be rebuilt (certificate rotation without a restart).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What identifies one version of a file: its modification time, size and inode.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // Follows symlinks: a rotation that swaps a link (as Kubernetes secrets do) is a change.
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// A set of files and how each looked when last seen.
#[derive(Debug)]
pub struct Watched {
    files: Vec<(PathBuf, Option<Stamp>)>,
}

impl Watched {
    /// Starts watching `paths` as they are now.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Watched {
        Watched {
            files: paths
                .into_iter()
                .map(|p| (p.to_path_buf(), stamp(p)))
                .collect(),
        }
    }

    /// True when any file changed since the last call (or since `new`); remembers the new
    /// versions.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in &mut self.files {
            let now = stamp(path);
            if now != *seen {
                *seen = now;
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_is_a_change_and_an_untouched_one_is_not() {
        let dir = std::env::temp_dir().join(format!("walnut-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cert.pem");
        std::fs::write(&file, b"one").unwrap();
        let mut watched = Watched::new([file.as_path()]);
        assert!(!watched.changed());
        std::fs::write(&file, b"three").unwrap();
        assert!(watched.changed());
        assert!(!watched.changed());
        std::fs::remove_file(&file).unwrap();
        assert!(watched.changed(), "a removed file is a change");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
