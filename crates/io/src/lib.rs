//! `explr-io`: the one way the explr crates write a file, lock a results folder and take a
//! digest.
//!
//! [`write_atomic`] writes a temporary sibling (`.NAME.tmp-PID`, see [`temporary_sibling`]),
//! syncs it, renames it over the target and syncs the folder: a reader, or a process killed
//! halfway, sees the old file or the new one, never a part. [`IoError`] names the operation and
//! the file once; the OS error is its `source()`, so an error chain prints it once.
//! [`FolderLock`] keeps one writer per results folder, [`remove_leftovers`] clears what killed
//! writers left, and [`digest`] (XXH3-128) names the bytes a run read or wrote.
//!
//! ```
//! let dir = std::env::temp_dir().join(format!("explr-io-doc-{}", std::process::id()));
//! explr_io::write_atomic(&dir.join("a/b.txt"), b"whole")?;
//! assert_eq!(std::fs::read(dir.join("a/b.txt")).unwrap(), b"whole");
//! assert!(explr_io::is_temporary(".b.txt.tmp-42"));
//! # std::fs::remove_dir_all(dir).unwrap();
//! # Ok::<(), explr_io::IoError>(())
//! ```

mod durable;

pub use durable::*;

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file operation that failed: what was attempted, on which file, and the OS error (its
/// `source()`, not repeated in the message).
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
pub struct IoError {
    /// What was attempted ("writing", "renaming into place", …).
    pub action: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

/// A closure wrapping an OS error into an [`IoError`] naming `action` and `path`.
pub fn err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `dir/.NAME.tmp-PID`: where [`write_atomic`] writes before the rename.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether a file name is one of [`temporary_sibling`]'s (a write a killed process left).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Writes `bytes` to `path` atomically (creating its folder): a temporary sibling, fsync,
/// rename over `path`, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err("creating the folder of", path))?;
    }
    let tmp = temporary_sibling(path);
    let mut f = std::fs::File::create(&tmp).map_err(err("creating", &tmp))?;
    f.write_all(bytes).map_err(err("writing", &tmp))?;
    f.sync_all().map_err(err("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        IoError {
            action: "renaming into place",
            path: path.to_path_buf(),
            source,
        }
    })?;
    // The rename is durable once the folder's entry is on disk too.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_creates_folders_and_replaces_whole_files() {
        let dir = std::env::temp_dir().join(format!("explr-io-{}", std::process::id()));
        let path = dir.join("a/b/file.txt");
        write_atomic(&path, b"first version, long").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| is_temporary(&e.file_name().to_string_lossy()))
            .collect();
        assert!(leftovers.is_empty());
        // A folder where the file should be: the error names the file and the operation once,
        // the OS error is the source, and no temporary is left behind.
        std::fs::create_dir_all(dir.join("taken/x")).unwrap();
        let e = write_atomic(&dir.join("taken"), b"x").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("renaming into place {}", dir.join("taken").display())
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(!temporary_sibling(&dir.join("taken")).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
