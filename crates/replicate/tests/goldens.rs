//! The golden check, through insta: each manifest's summary is an insta snapshot in `golden/`
//! (`<manifest>.<profile>.snap`), compared by a `Comparator` with the project's per-field
//! tolerances (`explr_replicate::golden::compare_texts`: numbers within 2e-3 relative or the
//! manifest's `golden_tolerance`, orders of magnitude within 1, verdicts and words equal).
//!
//! `cargo xtask replicate` runs `explr replicate` and then this test with `EXPLR_RESULTS` set to
//! the results folder (and `EXPLR_PROFILE`, default smoke): every summary found there is
//! asserted against its golden. A difference fails and leaves `golden/<name>.<profile>.snap.new`
//! for `cargo insta review` / `cargo insta accept`; under `CI=true` insta writes nothing.
//! Without `EXPLR_RESULTS` (a plain `cargo test`), the test checks the goldens themselves: each
//! is an insta snapshot of a summary, and the comparator accepts it against itself and rejects
//! it with one number or its verdict changed.

use std::path::{Path, PathBuf};

use explr_replicate::golden::{self, compare_texts, REL_TOL};
use explr_replicate::manifest;
use insta::{Comparator, Snapshot};

/// insta's comparison with the project's tolerances.
#[derive(Clone)]
struct SummaryComparator {
    relative: f64,
}

impl Comparator for SummaryComparator {
    fn matches(&self, reference: &Snapshot, test: &Snapshot) -> bool {
        match (reference.as_text(), test.as_text()) {
            (Some(r), Some(t)) => compare_texts(&r.to_string(), &t.to_string(), self.relative)
                .is_ok_and(|diffs| diffs.is_empty()),
            _ => false,
        }
    }

    fn dyn_clone(&self) -> Box<dyn Comparator> {
        Box::new(self.clone())
    }
}

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

/// Asserts `text` as the insta snapshot `<name>.<profile>` in `golden/`.
fn assert_golden(name: &str, profile: &str, summary: &str, relative: f64) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("golden"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_comparator(Box::new(SummaryComparator { relative }));
    settings.bind(|| insta::assert_snapshot!(format!("{name}.{profile}"), summary));
}

#[test]
fn summaries_match_their_goldens() {
    let Some(results) = std::env::var_os("EXPLR_RESULTS").map(PathBuf::from) else {
        goldens_are_insta_snapshots_the_comparator_tells_apart();
        return;
    };
    let profile = std::env::var("EXPLR_PROFILE").unwrap_or_else(|_| "smoke".into());
    let mut checked = 0;
    let mut failed = Vec::new();
    for (name, relative) in manifests() {
        let path = results.join(&name).join(&profile).join("summary.yaml");
        let Ok(summary) = std::fs::read_to_string(&path) else {
            continue;
        };
        checked += 1;
        let r = std::panic::catch_unwind(|| assert_golden(&name, &profile, &summary, relative));
        if r.is_err() {
            failed.push(name);
        }
    }
    assert!(checked > 0, "no summaries in {}", results.display());
    assert!(
        failed.is_empty(),
        "{} of {checked} summaries differ from their goldens: {} (pending snapshots were left beside them unless CI is set: `cargo insta review`)",
        failed.len(),
        failed.join(", ")
    );
}

/// Every golden is an insta snapshot of a summary; the comparator accepts it against itself and
/// rejects it with its verdict flipped or a number moved past the tolerance.
fn goldens_are_insta_snapshots_the_comparator_tells_apart() {
    let mut seen = 0;
    for (name, relative) in manifests() {
        let path = golden::golden_path(&root().join("golden"), &name, "smoke");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            text.starts_with("---\nsource: crates/replicate/tests/goldens.rs\n"),
            "{}: not this test's insta snapshot",
            path.display()
        );
        let body = text.splitn(3, "---\n").nth(2).unwrap();
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
