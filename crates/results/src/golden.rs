//! Golden snapshots: each manifest's summary per profile, an insta snapshot under `golden/`
//! (`golden/<manifest>.<profile>.snap`), compared with explicit tolerances.
//!
//! `explr replicate --check` (what `cargo xtask replicate` runs) compares each summary with its
//! golden ([`check`]); a changed result fails the command and leaves a pending snapshot
//! `golden/<manifest>.<profile>.snap.new` beside the golden ([`write_pending`]), in insta's
//! format, so that `cargo insta review` shows it and `cargo insta accept` takes it, as for any
//! insta snapshot; under `CI=true` nothing is written (as insta does). `--bless` writes the
//! golden itself, exactly as insta would. The runner does this itself, so the main job builds
//! no test harness.
//!
//! Tolerances, by field name: numbers whose key ends in `_log10` (orders of magnitude of
//! rounding-level deviations) may differ by 1; every other number is compared with relative
//! tolerance [`REL_TOL`] and absolute tolerance [`ABS_TOL`] (summaries round to 4 significant
//! digits, so a value sitting on a rounding boundary does not flip the check); strings and
//! booleans (verdicts) must be equal.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::summary::SummaryRecord;
use explr_io::{write_atomic, IoError};

/// Relative tolerance for ordinary numbers.
pub const REL_TOL: f64 = 2e-3;
/// Absolute tolerance for ordinary numbers.
pub const ABS_TOL: f64 = 1e-6;

/// The header insta writes for the snapshots of `crates/replicate/tests/goldens.rs`.
const HEADER: &str = "---\nsource: crates/replicate/tests/goldens.rs\nexpression: summary\n---\n";

/// Outcome of a golden check.
#[derive(Debug, Clone, PartialEq)]
pub enum GoldenOutcome {
    /// Every field within tolerance.
    Match,
    /// No golden exists yet.
    Missing(PathBuf),
    /// Fields that differ: (path, golden, actual).
    Differ(Vec<(String, String, String)>),
}

/// Golden errors.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The golden file is not valid YAML, or not a summary.
    #[error("golden {path} is not valid YAML: {message}; rerun with --bless to rewrite it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

/// `golden/<name>.<profile>.snap`.
pub fn golden_path(golden_dir: &Path, name: &str, profile: &str) -> PathBuf {
    golden_dir.join(format!("{name}.{profile}.snap"))
}

/// Reads the golden summary at `path` (insta's `.snap`: a `---` header, then the YAML);
/// `None` when there is none.
pub fn read(path: &Path) -> Result<Option<Value>, GoldenError> {
    let Some(text) = explr_io::read_if_exists(path)? else {
        return Ok(None);
    };
    // The header is `---`, `key: value` lines, `---`; the body follows.
    let body = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map_or(text.as_str(), |(_, body)| body);
    serde_yaml::from_str(body)
        .map(Some)
        .map_err(|e| GoldenError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Reads the golden summary at `path` typed ([`SummaryRecord`]); `None` when there is none.
pub fn read_record(path: &Path) -> Result<Option<SummaryRecord>, GoldenError> {
    let Some(value) = read(path)? else {
        return Ok(None);
    };
    serde_yaml::from_value(value)
        .map(Some)
        .map_err(|e| GoldenError::Corrupt {
            path: path.to_path_buf(),
            message: format!("not a summary: {e}"),
        })
}

/// Compares `summary` with the stored golden, ordinary numbers within `relative` (normally
/// [`REL_TOL`]); never writes.
pub fn check(path: &Path, summary: &Value, relative: f64) -> Result<GoldenOutcome, GoldenError> {
    let Some(golden) = read(path)? else {
        return Ok(GoldenOutcome::Missing(path.to_path_buf()));
    };
    let mut diffs = Vec::new();
    compare("", &golden, summary, relative, &mut diffs);
    Ok(if diffs.is_empty() {
        GoldenOutcome::Match
    } else {
        GoldenOutcome::Differ(diffs)
    })
}

/// The differences (path, golden, actual) between two summaries written as YAML text, numbers
/// within `relative` (normally [`REL_TOL`]); `Err` with the parser's message when either is
/// not YAML.
pub fn compare_texts(
    golden: &str,
    actual: &str,
    relative: f64,
) -> Result<Vec<(String, String, String)>, String> {
    let g: Value = serde_yaml::from_str(golden).map_err(|e| format!("the golden: {e}"))?;
    let a: Value = serde_yaml::from_str(actual).map_err(|e| format!("the summary: {e}"))?;
    let mut diffs = Vec::new();
    compare("", &g, &a, relative, &mut diffs);
    Ok(diffs)
}

/// The summary as the snapshot's text (what insta stores below the header).
pub fn snapshot_text(summary: &Value) -> String {
    // A YAML value always serializes.
    serde_yaml::to_string(summary).unwrap_or_default()
}

/// Writes `summary` as the golden at `path` (and removes a pending snapshot beside it).
pub fn bless(path: &Path, summary: &Value) -> Result<(), GoldenError> {
    let body = snapshot_text(summary);
    write_atomic(path, format!("{HEADER}{body}").as_bytes())?;
    remove_pending(path)?;
    Ok(())
}

/// The pending snapshot of the golden at `path`: insta's `<golden>.snap.new`.
pub fn pending_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Leaves `summary` as the pending snapshot of the golden at `path` (insta's `.snap.new`, the
/// golden's own format), for `cargo insta review` / `cargo insta accept`; its path.
pub fn write_pending(path: &Path, summary: &Value) -> Result<PathBuf, GoldenError> {
    let pending = pending_path(path);
    let body = snapshot_text(summary);
    write_atomic(&pending, format!("{HEADER}{body}").as_bytes())?;
    Ok(pending)
}

/// Removes the pending snapshot of the golden at `path`, if any (a summary that matches its
/// golden again leaves nothing to review).
pub fn remove_pending(path: &Path) -> Result<(), GoldenError> {
    let pending = pending_path(path);
    match std::fs::remove_file(&pending) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GoldenError::Io(IoError {
            action: "removing the pending snapshot",
            path: pending,
            source,
        })),
    }
}

fn show(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn compare(
    path: &str,
    golden: &Value,
    actual: &Value,
    relative: f64,
    diffs: &mut Vec<(String, String, String)>,
) {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (golden, actual) {
        (Value::Mapping(g), Value::Mapping(a)) => {
            for (k, gv) in g {
                let key = show(k);
                match a.get(k) {
                    Some(av) => compare(&child(&key), gv, av, relative, diffs),
                    None => diffs.push((child(&key), show(gv), "(missing)".into())),
                }
            }
            for (k, av) in a {
                if !g.contains_key(k) {
                    diffs.push((child(&show(k)), "(missing)".into(), show(av)));
                }
            }
        }
        (Value::Sequence(g), Value::Sequence(a)) if g.len() == a.len() => {
            for (i, (gv, av)) in g.iter().zip(a).enumerate() {
                compare(&child(&i.to_string()), gv, av, relative, diffs);
            }
        }
        (Value::Number(g), Value::Number(a)) => {
            let (g, a) = (
                g.as_f64().unwrap_or(f64::NAN),
                a.as_f64().unwrap_or(f64::NAN),
            );
            let ok = if path.ends_with("_log10") {
                (g - a).abs() <= 1.0
            } else {
                g == a || (g - a).abs() <= ABS_TOL + relative * g.abs().max(a.abs())
            };
            if !ok {
                diffs.push((path.to_string(), g.to_string(), a.to_string()));
            }
        }
        (g, a) if g == a => {}
        (g, a) => diffs.push((path.to_string(), show(g), show(a))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn check_applies_tolerances_by_field() {
        let dir = std::env::temp_dir().join(format!("explr-golden-{}", std::process::id()));
        let path = golden_path(&dir, "t1", "smoke");
        assert!(matches!(
            check(&path, &yaml("a: 1"), REL_TOL).unwrap(),
            GoldenOutcome::Missing(_)
        ));
        bless(
            &path,
            &yaml("acc: 0.5123\ndev_log10: -13\nverdict: pass\nxs: [1.0, 2.0]"),
        )
        .unwrap();
        // (summary, relative tolerance, matches): a manifest's own tolerance widens ordinary
        // numbers only (0.52 is 1.5% off 0.5123, within 0.1); verdicts and magnitudes keep
        // their own rules.
        let cases = [
            (
                "acc: 0.5124\ndev_log10: -12\nverdict: pass\nxs: [1.0, 2.0]",
                REL_TOL,
                true,
            ),
            (
                "acc: 0.52\ndev_log10: -13\nverdict: pass\nxs: [1.0, 2.0]",
                REL_TOL,
                false,
            ),
            (
                "acc: 0.5123\ndev_log10: -10\nverdict: pass\nxs: [1.0, 2.0]",
                REL_TOL,
                false,
            ),
            (
                "acc: 0.5123\ndev_log10: -13\nverdict: fail\nxs: [1.0, 2.0]",
                REL_TOL,
                false,
            ),
            (
                "acc: 0.5123\ndev_log10: -13\nverdict: pass\nxs: [1.0]",
                REL_TOL,
                false,
            ),
            (
                "acc: 0.5123\ndev_log10: -13\nverdict: pass\nxs: [1.0, 2.0]\nnew: 1",
                REL_TOL,
                false,
            ),
            (
                "acc: 0.52\ndev_log10: -13\nverdict: pass\nxs: [1.0, 2.0]",
                0.1,
                true,
            ),
            (
                "acc: 0.7\ndev_log10: -13\nverdict: pass\nxs: [1.0, 2.0]",
                0.1,
                false,
            ),
            (
                "acc: 0.52\ndev_log10: -10\nverdict: pass\nxs: [1.0, 2.0]",
                0.1,
                false,
            ),
            (
                "acc: 0.52\ndev_log10: -13\nverdict: fail\nxs: [1.0, 2.0]",
                0.1,
                false,
            ),
        ];
        for (actual, relative, ok) in cases {
            let outcome = check(&path, &yaml(actual), relative).unwrap();
            assert_eq!(
                outcome == GoldenOutcome::Match,
                ok,
                "{actual} at {relative}: {outcome:?}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
