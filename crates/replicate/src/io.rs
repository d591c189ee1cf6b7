//! Writing results so that nothing is lost and nothing lies: atomic file writes (a temporary
//! sibling, fsync, a rename, fsync of the folder), and [`FolderLock`], one writer per results
//! folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use explr_io::is_temporary;

pub use explr_io::{err, write_atomic, IoError};

/// Removes the temporary files (`.NAME.tmp-PID`) that killed writers left in `dir` and its
/// subfolders. Call it only while holding the folder's [`FolderLock`]: then no live writer
/// owns them.
pub fn remove_leftovers(dir: &Path) -> Result<usize, IoError> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(IoError {
                action: "listing",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            removed += remove_leftovers(&path)?;
        } else if is_temporary(&name) {
            std::fs::remove_file(&path).map_err(err("removing the leftover", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Why a results folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be created or locked.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Another process holds the folder.
    #[error(
        "{} is in use by another explr process ({holder}); wait for it to finish, or give this \
         run another --results-dir",
        dir.display()
    )]
    Held {
        /// The folder.
        dir: PathBuf,
        /// Who holds it, as it wrote itself into the lock file.
        holder: String,
    },
}

/// An exclusive OS lock (`flock`) on a results folder, held until dropped: a second process
/// that asks for the same folder fails at once, naming the holder. The lock file (`.lock`)
/// holds the holder's pid and command line.
#[derive(Debug)]
pub struct FolderLock {
    file: std::fs::File,
}

impl FolderLock {
    /// Locks `dir` (created if needed) for this process, describing it as `holder`.
    pub fn acquire(dir: &Path, holder: &str) -> Result<Self, LockError> {
        std::fs::create_dir_all(dir).map_err(err("creating", dir))?;
        let path = dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err("opening the lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "holder unknown".into());
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(IoError {
                    action: "locking",
                    path,
                    source,
                }
                .into())
            }
        }
        file.set_len(0)
            .map_err(err("writing the lock file", &path))?;
        file.write_all(format!("pid {}: {holder}\n", std::process::id()).as_bytes())
            .map_err(err("writing the lock file", &path))?;
        Ok(Self { file })
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Writes `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), IoError> {
    // A JSON value always serializes.
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_folder_and_leftovers_are_removed() {
        let dir = std::env::temp_dir().join(format!("explr-lock-{}", std::process::id()));
        let first = FolderLock::acquire(&dir, "explr replicate e3").unwrap();
        // flock locks belong to the open file: a second open in this process is refused too.
        match FolderLock::acquire(&dir, "explr replicate e3 --resume") {
            Err(LockError::Held { holder, .. }) => {
                assert!(holder.contains("explr replicate e3"), "{holder}");
                assert!(holder.contains(&std::process::id().to_string()), "{holder}");
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        let again = FolderLock::acquire(&dir, "second").unwrap();
        std::fs::create_dir_all(dir.join("m/run")).unwrap();
        std::fs::write(dir.join("m/run/.metrics.jsonl.tmp-99"), "x").unwrap();
        std::fs::write(dir.join("m/run/metrics.jsonl"), "x").unwrap();
        assert_eq!(remove_leftovers(&dir).unwrap(), 1);
        assert!(dir.join("m/run/metrics.jsonl").exists());
        drop(again);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
