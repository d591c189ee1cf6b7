//! Writing results so that nothing is lost and nothing lies: atomic file writes (a temporary
//! sibling, fsync, a rename, fsync of the folder), and [`FolderLock`], one writer per results
//! folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::is_temporary;

use crate::{err, write_atomic, IoError};

/// Removes the temporary files (`.NAME.tmp-PID`) that killed writers left in `dir` and its
/// subfolders, except subfolders with a lock of their own (a `.lock` file: a training run's
/// folder, which its own writer cleans, possibly on another node). Call it only while holding
/// the folder's [`FolderLock`]: then no live writer owns them.
pub fn remove_leftovers(dir: &Path) -> Result<usize, IoError> {
    clean(dir, true)
}

fn clean(dir: &Path, top: bool) -> Result<usize, IoError> {
    if !top && dir.join(LOCK_FILE).exists() {
        return Ok(0);
    }
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
            removed += clean(&path, false)?;
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

/// The lock file of a folder ([`FolderLock`]).
pub const LOCK_FILE: &str = ".lock";

/// An exclusive OS lock (`flock`) on a results folder, held until dropped: a second process
/// that asks for the same folder fails at once, naming the holder. The lock file (`.lock`)
/// holds the holder's pid and what it said of itself (its command line and host). On a shared
/// filesystem the lock holds across nodes where the filesystem passes `flock` on (NFSv4 does;
/// Lustre with the `flock` mount option).
#[derive(Debug)]
pub struct FolderLock {
    file: std::fs::File,
}

impl FolderLock {
    /// Locks `dir` (created if needed) for this process, describing it as `holder`.
    pub fn acquire(dir: &Path, holder: &str) -> Result<Self, LockError> {
        Self::acquire_named(dir, LOCK_FILE, holder)
    }

    /// Locks `dir` through the lock file `name` in it (another lock than the folder's own,
    /// for a writer of some of its files).
    pub fn acquire_named(dir: &Path, name: &str, holder: &str) -> Result<Self, LockError> {
        std::fs::create_dir_all(dir).map_err(err("creating", dir))?;
        let path = dir.join(name);
        let mut file = open_lock_file(&path)?;
        if !try_lock(&file, &path)? {
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: read_holder(&path),
            });
        }
        file.set_len(0)
            .map_err(err("writing the lock file", &path))?;
        file.write_all(format!("pid {}: {holder}\n", std::process::id()).as_bytes())
            .map_err(err("writing the lock file", &path))?;
        Ok(Self { file })
    }

    /// Who holds the lock of `dir` now (as [`Self::acquire`] wrote it), or `None` when nobody
    /// does. Takes the lock for an instant when it is free, and writes nothing.
    pub fn holder(dir: &Path) -> Result<Option<String>, IoError> {
        Self::holder_named(dir, LOCK_FILE)
    }

    /// [`Self::holder`] of the lock file `name` in `dir` (none when the file is not there).
    pub fn holder_named(dir: &Path, name: &str) -> Result<Option<String>, IoError> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let file = open_lock_file(&path)?;
        if try_lock(&file, &path)? {
            let _ = file.unlock();
            Ok(None)
        } else {
            Ok(Some(read_holder(&path)))
        }
    }
}

fn open_lock_file(path: &Path) -> Result<std::fs::File, IoError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(err("opening the lock file", path))
}

/// Takes the lock of `file` if it is free: whether it was.
fn try_lock(file: &std::fs::File, path: &Path) -> Result<bool, IoError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(source)) => Err(IoError {
            action: "locking",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What the holder of the lock file at `path` wrote of itself.
fn read_holder(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "holder unknown".into())
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A short hex fingerprint of `text` (FNV-1a, 64 bits): it tells configurations apart, it is
/// not a cryptographic hash.
pub fn fingerprint(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The digest of `bytes` as 32 hex digits (XXH3-128): it tells a file from a damaged or
/// replaced copy, and hashes gigabytes a second. Not a cryptographic hash.
pub fn digest(bytes: &[u8]) -> String {
    format!("{:032x}", twox_hash::XxHash3_128::oneshot(bytes))
}

/// A [`digest`] of several byte strings, fed in order (each after its length, so that
/// `["ab", "c"]` and `["a", "bc"]` differ).
pub fn digest_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = twox_hash::XxHash3_128::new();
    for part in parts {
        hasher.write(&(part.len() as u64).to_le_bytes());
        hasher.write(part);
    }
    format!("{:032x}", hasher.finish_128())
}

/// The [`digest`] of the file at `path`.
pub fn file_digest(path: &Path) -> Result<String, IoError> {
    let bytes = std::fs::read(path).map_err(err("reading", path))?;
    Ok(digest(&bytes))
}

/// The text of the file at `path`, or `None` when there is no such file.
pub fn read_if_exists(path: &Path) -> Result<Option<String>, IoError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IoError {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
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
        let holder = FolderLock::holder(&dir).unwrap().unwrap();
        assert!(
            holder.starts_with(&format!("pid {}: ", std::process::id())),
            "{holder}"
        );
        drop(first);
        assert_eq!(FolderLock::holder(&dir).unwrap(), None);
        let again = FolderLock::acquire(&dir, "second").unwrap();
        std::fs::create_dir_all(dir.join("m/run")).unwrap();
        std::fs::write(dir.join("m/run/.metrics.jsonl.tmp-99"), "x").unwrap();
        std::fs::write(dir.join("m/run/metrics.jsonl"), "x").unwrap();
        // A subfolder with a lock of its own is its own writer's to clean.
        std::fs::create_dir_all(dir.join("m/locked")).unwrap();
        std::fs::write(dir.join("m/locked/.lock"), "").unwrap();
        std::fs::write(dir.join("m/locked/.metrics.jsonl.tmp-98"), "x").unwrap();
        assert_eq!(remove_leftovers(&dir).unwrap(), 1);
        assert!(dir.join("m/run/metrics.jsonl").exists());
        assert!(dir.join("m/locked/.metrics.jsonl.tmp-98").exists());
        assert_eq!(remove_leftovers(&dir.join("m/locked")).unwrap(), 1);
        drop(again);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
