//! The goldens themselves: each manifest's smoke summary is an insta snapshot in `golden/`
//! (`<manifest>.smoke.snap`) that insta reads, that the project's comparison
//! (`explr_replicate::golden::compare_texts`: numbers within 2e-3 relative or the manifest's
//! `golden_tolerance`, orders of magnitude within 1, verdicts and words equal) accepts against
//! itself and rejects with one number or its verdict changed; and the pending snapshot that
//! `explr replicate --check` leaves for a difference is one that insta (and so `cargo insta
//! review`) reads back as the new summary.
//!
//! Comparing a run's summaries with the goldens is the runner's own work (`explr replicate
//! --check`, which `cargo xtask replicate` runs), so the main job builds no test harness.

mod common;

use std::path::{Path, PathBuf};

use explr_replicate::golden::{self, compare_texts, REL_TOL};
use explr_replicate::manifest;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (manifest stem, its golden tolerance), for every manifest in `experiments/`.
fn manifests() -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("experiments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let m = manifest::load(&path, "smoke").unwrap_or_else(|e| panic!("{e}"));
            out.push((stem, m.manifest.golden_tolerance.unwrap_or(REL_TOL)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The body insta stores below a snapshot's header.
fn insta_body(path: &Path) -> String {
    let snapshot = insta::Snapshot::from_file(path)
        .unwrap_or_else(|e| panic!("{}: insta cannot read it: {e}", path.display()));
    snapshot
        .as_text()
        .unwrap_or_else(|| panic!("{}: not a text snapshot", path.display()))
        .to_string()
}

/// Every golden is an insta snapshot of a summary; the comparator accepts it against itself and
/// rejects it with its verdict flipped or a number moved past the tolerance.
#[test]
fn goldens_are_insta_snapshots_the_comparator_tells_apart() {
    let mut seen = 0;
    for (name, relative) in manifests() {
        let path = golden::golden_path(&root().join("golden"), &name, "smoke");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.starts_with("---\nsource: crates/replicate/tests/goldens.rs\n"),
            "{}: not this project's insta snapshot",
            path.display()
        );
        let body = text.splitn(3, "---\n").nth(2).unwrap();
        // insta reads the same summary (its text is the body without the final newline).
        assert_eq!(insta_body(&path).trim_end(), body.trim_end(), "{name}");
        assert!(
            compare_texts(body, body, relative).unwrap().is_empty(),
            "{name}"
        );
        let flipped = if body.contains("verdict: pass") {
            body.replacen("verdict: pass", "verdict: fail", 1)
        } else {
            body.replacen("verdict: ", "verdict: pass-", 1)
        };
        assert!(
            !compare_texts(body, &flipped, relative).unwrap().is_empty(),
            "{name}"
        );
        let moved = body.replacen("steps_per_epoch: ", "steps_per_epoch: 9", 1);
        if moved != body {
            assert!(
                !compare_texts(body, &moved, relative).unwrap().is_empty(),
                "{name}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 12, "only {seen} smoke goldens");
}

/// The pending snapshot left for a difference sits where insta puts its own
/// (`<golden>.snap.new`), is read by insta as the new summary (so `cargo insta review` shows it
/// against the golden and `cargo insta accept` moves it into place), and goes when the
/// summary is blessed.
#[test]
fn a_pending_snapshot_is_one_insta_reads_as_the_new_summary() {
    let dir = common::TempDir::new("pending-snapshot");
    let dir_path = dir.0.clone();
    let path = golden::golden_path(dir_path.as_path(), "e9_claim", "smoke");
    let old: serde_yaml::Value = serde_yaml::from_str("verdict: pass\nacc: 0.5\n").unwrap();
    let new: serde_yaml::Value = serde_yaml::from_str("verdict: fail\nacc: 0.25\n").unwrap();
    golden::bless(&path, &old).unwrap();
    let pending = golden::write_pending(&path, &new).unwrap();
    assert_eq!(pending, dir_path.as_path().join("e9_claim.smoke.snap.new"));
    let read: serde_yaml::Value = serde_yaml::from_str(&insta_body(&pending)).unwrap();
    assert_eq!(read, new);
    let golden_read: serde_yaml::Value = serde_yaml::from_str(&insta_body(&path)).unwrap();
    assert_eq!(golden_read, old);
    // The header is the golden's own, so that accepting it gives a golden like the others.
    let header = |p: &Path| {
        let t = std::fs::read_to_string(p).unwrap();
        t[..t.find("\n---\n").unwrap()].to_string()
    };
    assert_eq!(header(&pending), header(&path));
    golden::bless(&path, &new).unwrap();
    assert!(!pending.exists(), "blessing leaves no pending snapshot");
    assert_eq!(golden::read(&path).unwrap(), Some(new));
    // Removing a pending snapshot that is not there is not an error.
    golden::remove_pending(&path).unwrap();
}
