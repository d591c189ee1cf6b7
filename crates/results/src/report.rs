//! `docs/REPLICATION.md` (and `REPLICATION-<profile>.md` for a profile other than smoke),
//! generated from the manifests and their golden summaries (tables are
//! generated, never typed).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Number, Value};

use crate::summary::{CheckRecord, ControlRecord, SummaryRecord};
use explr_io::IoError;
use explr_manifest::spec::{ControlKind, Manifest, Verdict};

/// How long the recorded run of one manifest took, kept beside the goldens of a profile other
/// than smoke (`golden/<profile>.timings.yaml`; smoke's time is CI's and is not recorded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WallTime {
    /// Seconds from the manifest's start to its summary.
    pub wall_s: f64,
    /// The threads the machine offered.
    pub threads: usize,
    /// The device it ran on (`cpu`, `cuda:0`).
    pub device: String,
}

/// The timings file of a profile in a golden folder.
pub fn timings_path(golden_dir: &Path, profile: &str) -> PathBuf {
    golden_dir.join(format!("{profile}.timings.yaml"))
}

/// An unreadable timings file.
#[derive(Debug, thiserror::Error)]
pub enum TimingsError {
    /// Reading or writing it failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// It is not a map of manifest names to wall times.
    #[error("{} is not a timings file (manifest: {{wall_s, threads, device}}); delete it and bless again", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_yaml::Error,
    },
}

/// The recorded wall times of a profile (empty when none were recorded).
pub fn read_timings(
    golden_dir: &Path,
    profile: &str,
) -> Result<BTreeMap<String, WallTime>, TimingsError> {
    let path = timings_path(golden_dir, profile);
    match explr_io::read_if_exists(&path)? {
        Some(text) => {
            serde_yaml::from_str(&text).map_err(|source| TimingsError::Format { path, source })
        }
        None => Ok(BTreeMap::new()),
    }
}

/// Records `name`'s wall time at `profile` (replacing an older record), atomically.
pub fn record_timing(
    golden_dir: &Path,
    profile: &str,
    name: &str,
    time: WallTime,
) -> Result<(), TimingsError> {
    let mut all = read_timings(golden_dir, profile)?;
    all.insert(name.to_string(), time);
    // Plain data: serializing cannot fail.
    let text = serde_yaml::to_string(&all).unwrap_or_default();
    explr_io::write_atomic(&timings_path(golden_dir, profile), text.as_bytes())?;
    Ok(())
}

/// One claim in the report.
#[derive(Clone, Debug)]
pub struct ReportEntry {
    /// Manifest file stem (`e3`).
    pub name: String,
    /// The profile the summary was made at.
    pub profile: String,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Its summary (the golden), typed.
    pub summary: SummaryRecord,
    /// Figures, as paths relative to the report's folder.
    pub figures: Vec<String>,
    /// The recorded run's wall time (profiles other than smoke).
    pub wall_time: Option<WallTime>,
}

/// Below this best final test accuracy (10 classes) a training claim only tests the plumbing
/// (EXPERIMENTS.md, "Verdicts that can fail").
pub const PLUMBING_BELOW: f64 = 0.4;

/// The best final test accuracy of the claimed runs over the claim's models, for training
/// claims (the summary's `<model>.best_final_test_acc`).
fn level(summary: &SummaryRecord) -> Option<f64> {
    summary
        .metrics
        .iter()
        .filter(|(k, _)| {
            k.as_str()
                .is_some_and(|k| k.ends_with(".best_final_test_acc"))
        })
        .filter_map(|(_, v)| v.as_f64())
        .reduce(f64::max)
}

/// The verdict as the tables show it: the word, `(expected)` when the manifest declares it at
/// this profile, and `plumbing only` when the models stay near chance.
fn verdict_cell(summary: &SummaryRecord) -> String {
    let mut v = summary.verdict.as_str().to_string();
    if summary.verdict != Verdict::Pass {
        v = format!("**{v}**");
    }
    if summary.expected.is_some() {
        v.push_str(" (expected)");
    }
    if level(summary).is_some_and(|l| l < PLUMBING_BELOW) {
        v.push_str(", plumbing only");
    }
    v
}

/// A check's confidence interval as a suffix of its value (` (95 %: lo to hi)`), or nothing.
fn interval(v: Option<&[Number; 2]>) -> String {
    match v {
        Some([lo, hi]) => format!(" (one-sided 95 % bounds {} to {})", number(lo), number(hi)),
        None => String::new(),
    }
}

/// A golden's number as the golden writes it.
fn number(n: &Number) -> String {
    yaml(n)
}

/// A value as YAML writes it, on one line.
fn yaml(v: &impl serde::Serialize) -> String {
    serde_yaml::to_string(v)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Seconds as "12.3 min" (or "45 s" below a minute).
fn minutes(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

/// The report's file name for a profile: `REPLICATION.md` for `smoke` (what CI checks),
/// `REPLICATION-<profile>.md` for the others.
pub fn report_file_name(profile: &str) -> String {
    if profile == "smoke" {
        "REPLICATION.md".into()
    } else {
        format!("REPLICATION-{profile}.md")
    }
}

/// Renders the report of one profile (every entry is at that profile).
pub fn replication_md(profile: &str, entries: &[ReportEntry]) -> String {
    let mut s = String::new();
    write_preamble(&mut s, profile);
    let timed = profile != "smoke";
    write_index(&mut s, timed, entries);
    if timed {
        write_total_wall_time(&mut s, entries);
    }
    for e in entries {
        write_claim(&mut s, e);
    }
    s
}

/// The report's title, provenance line and introduction.
fn write_preamble(s: &mut String, profile: &str) {
    let _ = writeln!(
        s,
        "# Replication report{title}\n\n\
         *Generated by `cargo xtask replicate --profile {profile} --bless` from `experiments/*.yaml` \
         and `golden/*.{profile}.snap`; do not edit by hand.*\n",
        title = if profile == "smoke" {
            String::new()
        } else {
            format!(", profile `{profile}`")
        },
    );
    let intro = if profile == "smoke" {
        "Each claim of Li & Arora (ICLR 2020) is one manifest. The `smoke` profile (tiny models, \
         synthetic data, CPU, minutes) is what CI checks on every change; its numbers say that the \
         machinery and the equivalences hold, not what accuracy the paper's setup reaches. `--profile \
         cpu` (the same designs on real CIFAR-10 images with a deeper PreResNet, about a quarter of an hour on \
         two cores), `--profile cpu-long` (for E5 alone, which the cpu profile cannot decide: more \
         images, a wider network, more epochs), `--profile cpu-full` (E3 in the practical regime: \
         float32, BatchNorm eps 1e-5, the whole CIFAR-10 with augmentation, about 2.5 hours on two \
         cores) and `--profile paper` (PreResNet-32, 160 epochs, three seeds, meant for a GPU; E3 \
         trains a float32 twin beside its float64 network there) rerun the same manifests at scale; where a run at such a profile was recorded, its report \
         is `REPLICATION-<profile>.md` next to this file, with its wall time."
    } else {
        "The same manifests as `REPLICATION.md`, recorded at this profile on real data. CI cannot \
         rerun these (they need the dataset and minutes to hours per claim), so this file is a \
         record of one run, with the summaries it was made from in `golden/` and its wall times in \
         `golden/<profile>.timings.yaml`. Float64 runs with eps 0 repeat to rounding on any CPU; \
         float32 training is chaotic: another CPU (other SIMD widths, other summation orders) gives \
         other numbers and should give the same verdicts; `--check` compares a rerun with the \
         record on the same kind of machine."
    };
    let _ = writeln!(s, "{}\n", one_line(intro));
}

/// The table of claims, one row each (with a wall-time column when `timed`).
fn write_index(s: &mut String, timed: bool, entries: &[ReportEntry]) {
    let _ = writeln!(
        s,
        "| claim | what | manifest | profile | verdict |{}\n|---|---|---|---|---|{}",
        if timed { " wall time |" } else { "" },
        if timed { "---|" } else { "" },
    );
    for e in entries {
        let _ = write!(
            s,
            "| [{id}](#{anchor}) | {title} | `experiments/{name}.yaml` | {profile} | {verdict} |",
            id = e.manifest.id,
            anchor = e.manifest.id.to_ascii_lowercase(),
            title = cell(&e.manifest.title),
            name = e.name,
            profile = e.profile,
            verdict = verdict_cell(&e.summary),
        );
        if timed {
            let _ = write!(
                s,
                " {} |",
                e.wall_time
                    .as_ref()
                    .map_or("not recorded".into(), |t| minutes(t.wall_s))
            );
        }
        let _ = writeln!(s);
    }
}

/// The sum of the recorded wall times and the machines they ran on (nothing when none was
/// recorded).
fn write_total_wall_time(s: &mut String, entries: &[ReportEntry]) {
    let times: Vec<&WallTime> = entries
        .iter()
        .filter_map(|e| e.wall_time.as_ref())
        .collect();
    if times.is_empty() {
        return;
    }
    let total: f64 = times.iter().map(|t| t.wall_s).sum();
    let mut machines: Vec<String> = times
        .iter()
        .map(|t| format!("{} with {} threads", t.device, t.threads))
        .collect();
    machines.dedup();
    let _ = writeln!(
        s,
        "\nWall time of the recorded runs: {} in all ({} of {} claims recorded; {}).",
        minutes(total),
        times.len(),
        entries.len(),
        machines.join(", ")
    );
}

/// One claim's section: what it says, its verdict, checks, controls, numbers and figures.
fn write_claim(s: &mut String, e: &ReportEntry) {
    let m = &e.manifest;
    let _ = writeln!(
        s,
        "\n## {}\n\n**{}** — {}\n\n{}\n",
        m.id,
        one_line(&m.title),
        one_line(&m.paper),
        one_line(&m.claim)
    );
    let rerun = if e.profile == "smoke" {
        "(or `--profile cpu --data-dir DIR`, `--profile paper --device cuda`)"
    } else {
        "with `--data-dir DIR` (DIR holds CIFAR-10; without it, `$EXPLR_DATA` or where `cargo xtask \
         fetch-data cifar10` put it)"
    };
    let _ = writeln!(
        s,
        "Rerun: `cargo xtask replicate {} --profile {}` {rerun}.\n",
        e.name, e.profile
    );
    write_verdict(s, &e.summary);
    write_checks(s, &e.summary.checks, &e.summary.metrics);
    if !e.summary.controls.is_empty() {
        write_controls(s, &e.summary.controls);
    }
    write_metrics(s, &e.summary.metrics, &e.profile);
    for f in &e.figures {
        let _ = writeln!(s, "![{} {}]({f})", m.id, f.rsplit('/').next().unwrap_or(f));
    }
}

/// The verdict line, the manifest's expectation and the level the models reached.
fn write_verdict(s: &mut String, summary: &SummaryRecord) {
    let _ = writeln!(s, "**Verdict: {}.**", verdict_cell(summary));
    if let Some(expected) = &summary.expected {
        let _ = writeln!(
            s,
            "The manifest expects `{}` at this profile: {}",
            expected.verdict.as_str(),
            one_line(&expected.reason)
        );
    }
    if let Some(best) = level(summary) {
        let _ = writeln!(
            s,
            "Best final test accuracy of the claimed runs: {best:.3}{}.",
            if best < PLUMBING_BELOW {
                " — the models stay near chance, so this profile tests the plumbing only"
            } else {
                ""
            }
        );
    }
    s.push('\n');
}

/// The table of a summary's checks.
fn write_checks(s: &mut String, checks: &BTreeMap<String, CheckRecord>, metrics: &Mapping) {
    let _ = writeln!(
        s,
        "| check | rule | value | bound | why this bound | result |\n|---|---|---|---|---|---|"
    );
    for (k, c) in checks {
        let _ = writeln!(
            s,
            "| `{}` | {} | {}{}{} | {} | {} | {} |",
            k,
            cell(&c.what),
            number(&c.value),
            interval(c.interval.as_ref()),
            beside(k, metrics),
            cell(&c.bound),
            cell(c.reason.as_deref().unwrap_or_default()),
            match (c.pass, c.undecided, c.premise) {
                (true, _, false) => "pass",
                (true, _, true) => "pass (premise)",
                (false, true, _) => "**undecided: the seeds scatter across the bound**",
                (false, false, true) => "**premise missed: the profile cannot judge the claim**",
                (false, false, false) => "**fail**",
            }
        );
    }
    s.push('\n');
}

/// The numbers a check records beside its value (a derived bound and the seed spread it came
/// from, a drift curve and its seed reference), as "; recorded beside it: step_1 3.6e-8, …" in
/// natural order. A check `M.I_kind` records its value as the metric `M.I_name` and those as
/// `M.I_name_suffix`; nothing when it records none.
fn beside(check: &str, metrics: &Mapping) -> String {
    // `M.I_`: the model (which may hold `_`) up to its last `.`, then the check's index.
    let Some(index) = check.rfind('.') else {
        return String::new();
    };
    let Some(end) = check[index..].find('_') else {
        return String::new();
    };
    let prefix = &check[..=index + end];
    let own: Vec<(&str, &Value)> = metrics
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?, v)))
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    let Some(value) = own.iter().map(|(k, _)| *k).min_by_key(|k| k.len()) else {
        return String::new();
    };
    let mut extra: Vec<(&str, &Value)> = own
        .iter()
        .filter_map(|&(k, v)| Some((k.strip_prefix(value)?.strip_prefix('_')?, v)))
        .collect();
    if extra.is_empty() {
        return String::new();
    }
    // step_2 before step_16: digits compare as numbers.
    extra.sort_by_cached_key(|(k, _)| natural(k));
    let list: Vec<String> = extra
        .iter()
        .map(|(k, v)| format!("{k} {}", yaml(v)))
        .collect();
    format!("; recorded beside it: {}", list.join(", "))
}

/// `k` as runs of non-digits and numbers, for an order where `step_2` precedes `step_16`.
fn natural(k: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut rest = k;
    while !rest.is_empty() {
        let text_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (text, tail) = rest.split_at(text_len);
        let digits_len = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (digits, tail) = tail.split_at(digits_len);
        out.push((text.to_string(), digits.parse().unwrap_or(0)));
        rest = tail;
    }
    out
}

/// The table of a summary's controls.
fn write_controls(s: &mut String, controls: &BTreeMap<String, ControlRecord>) {
    let _ = writeln!(
        s,
        "Controls (a negative one must fail a check; a positive one must pass them all, or the profile cannot see the effect):\n\n| control | kind | in place of | why | measured | result |\n|---|---|---|---|---|---|"
    );
    for (k, c) in controls {
        let positive = c.kind == Some(ControlKind::Positive);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} |",
            k,
            if positive { "positive" } else { "negative" },
            cell(&c.replaces),
            cell(&c.why),
            cell(&control_measured(c).join(", ")),
            control_result(positive, c.rejected, !c.undecided.is_empty())
        );
    }
    s.push('\n');
}

/// A control's measured values, each with its interval, as `` `check` value (bounds) ``.
fn control_measured(c: &ControlRecord) -> Vec<String> {
    c.values
        .iter()
        .map(|(check, v)| {
            format!(
                "`{check}` {}{}",
                number(v),
                interval(c.intervals.get(check))
            )
        })
        .collect()
}

/// A control's result cell.
fn control_result(positive: bool, rejected: bool, undecided: bool) -> &'static str {
    match (positive, rejected, undecided) {
        (false, true, _) => "rejected",
        (false, false, false) => "**passes too**",
        (false, false, true) => "**not rejected: the seeds scatter across the bound**",
        (true, false, false) => "passes",
        (true, true, _) => "**fails: the profile cannot see the effect**",
        (true, false, true) => "**undecided: the seeds scatter too much to see the effect**",
    }
}

/// The folded table of a summary's metrics.
fn write_metrics(s: &mut String, metrics: &serde_yaml::Mapping, profile: &str) {
    let _ = writeln!(s, "<details><summary>Measured ({} numbers, profile {})</summary>\n\n| metric | value |\n|---|---|", metrics.len(), profile);
    for (k, v) in metrics {
        let _ = writeln!(
            s,
            "| `{}` | {} |",
            match k {
                Value::String(k) => k.clone(),
                k => yaml(k),
            },
            yaml(v)
        );
    }
    let _ = writeln!(s, "\n</details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_claim_with_its_verdict_checks_and_controls() {
        let manifest: Manifest = serde_yaml::from_str(
            "id: T1\ntitle: toy\npaper: §7\nclaim: it holds\ntoy:\n  population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 4, batch_size: 8, seed: 0, record_every: 1}\n",
        )
        .unwrap();
        let summary: SummaryRecord = serde_yaml::from_str(
            "id: T1\nprofile: smoke\nverdict: inconclusive\nexpected: {verdict: inconclusive, reason: too short}\n\
             checks:\n  m.0_window_gap: {pass: true, value: 0.002, bound: '<= 1e-2', what: gap |a - b|, reason: four standard errors}\n  \
             m.1_greater: {pass: false, undecided: true, value: 0.007, interval: [-0.005, 0.02], bound: '>= 1e-2', what: a − b, reason: a point}\n\
             controls:\n  m.twin_2x: {replaces: twin, why: wrong weight decay, rejected: false, failed: [], values: {m.0_window_gap: 0.004}}\n  \
             m.no_decay: {replaces: twin, kind: positive, why: decaying helps, rejected: true, failed: [m.0_window_gap], values: {m.0_window_gap: 0.03}}\n  \
             m.never: {replaces: twin, kind: positive, why: \"step decay's LR, never decayed\", rejected: false, failed: [], undecided: [m.1_greater], values: {m.1_greater: 0.02}, intervals: {m.1_greater: [-0.002, 0.05]}}\n  \
             m.shifted: {replaces: twin, why: shifted, rejected: false, failed: [], undecided: [m.1_greater], values: {m.1_greater: 0.01}, intervals: {m.1_greater: [0, 0.02]}}\n\
             metrics:\n  m.best_final_test_acc: 0.21\n  m.0_window_gap_a_vs_b: 0.002\n  m.0_window_gap_a_vs_b_step_16: 0.3\n  \
             m.0_window_gap_a_vs_b_step_2: 0.1\n  m.0_window_gap_a_vs_b_seeds_0_vs_1: 1.4\n  m.1_greater_a_vs_b: 0.007\n",
        )
        .unwrap();
        let md = replication_md(
            "smoke",
            &[ReportEntry {
                name: "t1".into(),
                profile: "smoke".into(),
                manifest,
                summary,
                figures: vec!["figures/t1/a.svg".into()],
                wall_time: None,
            }],
        );
        let has = |needle: &str| assert!(md.contains(needle), "`{needle}` missing:\n{md}");
        has("| [T1](#t1) | toy | `experiments/t1.yaml` | smoke | **inconclusive** (expected), plumbing only |");
        has("The manifest expects `inconclusive` at this profile: too short");
        has("Best final test accuracy of the claimed runs: 0.210 — the models stay near chance");
        // What a check records beside its value, in natural order; nothing for a check that
        // records its value only.
        has("| `m.0_window_gap` | gap \\|a - b\\| | 0.002; recorded beside it: seeds_0_vs_1 1.4, step_2 0.1, step_16 0.3 | <= 1e-2 | four standard errors | pass |");
        has(
            "| `m.twin_2x` | negative | twin | wrong weight decay | `m.0_window_gap` 0.004 | **passes too** |",
        );
        has("| `m.no_decay` | positive | twin | decaying helps | `m.0_window_gap` 0.03 | **fails: the profile cannot see the effect** |");
        has("| `m.1_greater` | a − b | 0.007 (one-sided 95 % bounds -0.005 to 0.02) | >= 1e-2 | a point | **undecided: the seeds scatter across the bound** |");
        has("| `m.never` | positive | twin | step decay's LR, never decayed | `m.1_greater` 0.02 (one-sided 95 % bounds -0.002 to 0.05) | **undecided: the seeds scatter too much to see the effect** |");
        has("| `m.shifted` | negative | twin | shifted | `m.1_greater` 0.01 (one-sided 95 % bounds 0 to 0.02) | **not rejected: the seeds scatter across the bound** |");
        has("| `m.best_final_test_acc` | 0.21 |");
        has("![T1 a.svg](figures/t1/a.svg)");
        assert!(md.starts_with("# Replication report\n"), "{md}");
    }

    #[test]
    fn each_profile_has_its_own_report() {
        assert_eq!(report_file_name("smoke"), "REPLICATION.md");
        assert_eq!(report_file_name("cpu"), "REPLICATION-cpu.md");
        let md = replication_md("cpu", &[]);
        assert!(
            md.starts_with("# Replication report, profile `cpu`\n"),
            "{md}"
        );
        assert!(md.contains("--profile cpu --bless"), "{md}");
        assert!(md.contains("golden/*.cpu.snap"), "{md}");
    }

    #[test]
    fn a_profile_report_shows_each_recorded_wall_time_and_the_total() {
        let dir = std::env::temp_dir().join(format!("explr-timings-{}", std::process::id()));
        let t = |wall_s| WallTime {
            wall_s,
            threads: 2,
            device: "cpu".into(),
        };
        assert!(read_timings(&dir, "cpu").unwrap().is_empty());
        record_timing(&dir, "cpu", "t1", t(30.0)).unwrap();
        record_timing(&dir, "cpu", "t1", t(150.0)).unwrap();
        let timings = read_timings(&dir, "cpu").unwrap();
        assert_eq!(timings.len(), 1, "a new record replaces the old one");
        let manifest: Manifest = serde_yaml::from_str(
            "id: T1\ntitle: toy\npaper: §7\nclaim: it holds\ntoy:\n  population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 4, batch_size: 8, seed: 0, record_every: 1}\n",
        )
        .unwrap();
        let summary: SummaryRecord =
            serde_yaml::from_str("id: T1\nprofile: cpu\nverdict: pass\n").unwrap();
        let entry = |name: &str, wall_time| ReportEntry {
            name: name.into(),
            profile: "cpu".into(),
            manifest: manifest.clone(),
            summary: summary.clone(),
            figures: vec![],
            wall_time,
        };
        let md = replication_md(
            "cpu",
            &[entry("t1", timings.get("t1").cloned()), entry("t2", None)],
        );
        let has = |needle: &str| assert!(md.contains(needle), "`{needle}` missing:\n{md}");
        has("| verdict | wall time |");
        has("| cpu | pass | 2.5 min |");
        has("| cpu | pass | not recorded |");
        has("Wall time of the recorded runs: 2.5 min in all (1 of 2 claims recorded; cpu with 2 threads).");
        assert!(!replication_md("smoke", &[entry("t1", None)]).contains("| wall time |"));
        std::fs::write(timings_path(&dir, "cpu"), "t1: {seconds: 3}\n").unwrap();
        let err = read_timings(&dir, "cpu").unwrap_err().to_string();
        assert!(
            err.contains("is not a timings file") && err.contains("cpu.timings.yaml"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
