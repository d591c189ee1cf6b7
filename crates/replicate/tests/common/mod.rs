//! Helpers shared by the runner's integration tests.

use std::path::PathBuf;

use explr_replicate::records::EpochRecord;
use std::sync::atomic::{AtomicUsize, Ordering};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `explr-<tag>-<pid>-<n>` under the system temp dir, empty.
    pub fn new(tag: &str) -> Self {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("explr-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything an epoch measured except its wall time, as bits (epoch and step first);
/// [`EpochRecord::measured`] names every field, so a field added later cannot be left out.
#[allow(dead_code)] // each test binary compiles this module; not all of them compare records
pub fn measured_bits(r: &EpochRecord) -> Vec<u64> {
    let mut bits = vec![r.epoch as u64, r.step];
    bits.extend(r.measured().map(f64::to_bits));
    bits
}
