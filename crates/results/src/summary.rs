//! Summaries: the rounded numbers and verdicts of one manifest at one profile, which the golden
//! snapshots check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use explr_manifest::spec::{Control, ControlKind, Verdict};

/// Significant digits kept for summary numbers.
pub const DIGITS: i32 = 4;

/// The smallest order of magnitude [`Summary::magnitude`] records (exact zeros included).
pub const MAGNITUDE_FLOOR: f64 = -17.0;

/// How a check came out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It holds: for a mean over seeds, its whole one-sided 95 % confidence interval does.
    #[default]
    Pass,
    /// It does not hold: for a mean over seeds, not even the confidence bound on the other
    /// side does.
    Fail,
    /// The seeds scatter too much to tell: the confidence interval straddles the bound.
    Undecided,
}

impl Outcome {
    /// `Pass` when `holds`, else `Fail`: a check without seed scatter to weigh.
    pub fn of(holds: bool) -> Outcome {
        if holds {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }
}

/// One check that decides the claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was checked, in words.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// The bound it was held to, in words (`<= 1e-10`).
    pub bound: String,
    /// How it came out.
    pub outcome: Outcome,
    /// For a paired mean over two seeds or more: its one-sided 95 % confidence bounds
    /// (Student's t), which decide the outcome.
    #[serde(default)]
    pub interval: Option<[f64; 2]>,
    /// Where the bound comes from (the manifest's `reason`), when it says.
    pub reason: Option<String>,
    /// A premise of the profile (the level a run must reach), not a test of the claim: when it
    /// does not pass, the verdict is inconclusive.
    #[serde(default)]
    pub premise: bool,
}

impl CheckResult {
    /// Whether it held.
    pub fn pass(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

/// How a control fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlResult {
    /// The claimed run it stood in for.
    pub replaces: String,
    /// Negative (must fail a check) or positive (must pass them all).
    #[serde(default)]
    pub kind: ControlKind,
    /// Why it is not equivalent.
    pub why: String,
    /// The checks it failed (keys of the claim's checks).
    pub failed: Vec<String>,
    /// The checks its seeds scatter too much to decide; empty with `failed`: it passed them
    /// all.
    #[serde(default)]
    pub undecided: Vec<String>,
    /// What each check it took part in measured for it, by the check's key.
    pub values: BTreeMap<String, f64>,
    /// The one-sided 95 % confidence bounds of those values that are means over two seeds or
    /// more, by the check's key.
    #[serde(default)]
    pub intervals: BTreeMap<String, [f64; 2]>,
}

impl ControlResult {
    /// A control is rejected when it fails at least one check.
    pub fn rejected(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Whether it came out as its kind requires: a negative control rejected, a positive one
    /// passing every check (an undecided check is not a pass).
    pub fn as_required(&self) -> bool {
        match self.kind {
            ControlKind::Negative => self.rejected(),
            ControlKind::Positive => !self.rejected() && self.undecided.is_empty(),
        }
    }
}

/// What one control measured on the claim's checks, for [`Summary::control`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ControlMeasures {
    /// Each check's statistic, by the check's key.
    pub values: BTreeMap<String, f64>,
    /// The confidence bounds of those that are means over seeds, by the check's key.
    pub intervals: BTreeMap<String, [f64; 2]>,
    /// The checks it failed.
    pub failed: Vec<String>,
    /// The checks its seeds could not decide.
    pub undecided: Vec<String>,
}

/// Builder of a manifest's summary. It serializes whole (numbers unrounded) for a result that
/// is collected later, in another process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    metrics: BTreeMap<String, Value>,
    checks: BTreeMap<String, CheckResult>,
    controls: BTreeMap<String, ControlResult>,
    expected: Option<(Verdict, String)>,
}

impl Summary {
    /// Records a metric rounded to [`DIGITS`] significant digits.
    pub fn metric(&mut self, key: impl Into<String>, value: f64) {
        self.metrics
            .insert(key.into(), number(round_sig(value, DIGITS)));
    }

    /// Records the order of magnitude of a rounding-level quantity (`key` gets `_log10`),
    /// floored at [`MAGNITUDE_FLOOR`]: below f64's rounding level an exact 0 and 1e-17 say
    /// the same thing, and whether a kernel lands on one or the other is not a change of meaning.
    pub fn magnitude(&mut self, key: impl Into<String>, value: f64) {
        let m = if value > 0.0 {
            value.log10().floor().max(MAGNITUDE_FLOOR)
        } else {
            MAGNITUDE_FLOOR
        };
        self.metrics
            .insert(format!("{}_log10", key.into()), number(m));
    }

    /// Records an integer count.
    pub fn count(&mut self, key: impl Into<String>, value: usize) {
        self.metrics
            .insert(key.into(), Value::Number((value as u64).into()));
    }

    /// Records a check: what was measured, its value, the bound in words, how it came out
    /// and the reason for the bound.
    pub fn check(&mut self, key: impl Into<String>, result: CheckResult) {
        self.checks.insert(key.into(), result);
    }

    /// Records how control `key` fared on the claim's checks.
    pub fn control(
        &mut self,
        key: impl Into<String>,
        control: &Control,
        measures: ControlMeasures,
    ) {
        let Control {
            replaces,
            kind,
            why,
            ..
        } = control;
        let ControlMeasures {
            values,
            intervals,
            failed,
            undecided,
        } = measures;
        self.controls.insert(
            key.into(),
            ControlResult {
                replaces: replaces.clone(),
                kind: *kind,
                why: why.clone(),
                failed,
                undecided,
                values,
                intervals,
            },
        );
    }

    fn check_unreasoned(
        &mut self,
        key: String,
        what: String,
        value: f64,
        bound: String,
        pass: bool,
    ) {
        self.checks.insert(
            key,
            CheckResult {
                what,
                value,
                bound,
                outcome: Outcome::of(pass),
                interval: None,
                reason: None,
                premise: false,
            },
        );
    }

    /// Records a check `value <= bound`.
    pub fn check_le(
        &mut self,
        key: impl Into<String>,
        what: impl Into<String>,
        value: f64,
        bound: f64,
    ) {
        self.check_unreasoned(
            key.into(),
            what.into(),
            value,
            format!("<= {bound:e}"),
            value <= bound,
        );
    }

    /// Records a check `value >= bound`.
    pub fn check_ge(
        &mut self,
        key: impl Into<String>,
        what: impl Into<String>,
        value: f64,
        bound: f64,
    ) {
        self.check_unreasoned(
            key.into(),
            what.into(),
            value,
            format!(">= {bound:e}"),
            value >= bound,
        );
    }

    /// The checks recorded so far.
    pub fn checks(&self) -> &BTreeMap<String, CheckResult> {
        &self.checks
    }

    /// Records the verdict this profile is expected to reach (other than `pass`), and why.
    pub fn expect(&mut self, verdict: Verdict, reason: &str) {
        self.expected = Some((verdict, reason.to_string()));
    }

    /// The expected verdict and its reason, when the manifest gives one.
    pub fn expected(&self) -> Option<(Verdict, &str)> {
        self.expected.as_ref().map(|(v, r)| (*v, r.as_str()))
    }

    /// The controls recorded so far.
    pub fn controls(&self) -> &BTreeMap<String, ControlResult> {
        &self.controls
    }

    /// `inconclusive` when a premise or a positive control did not pass (the profile cannot
    /// see the effect), else `fail` when a check failed, else `inconclusive` when the seeds could not
    /// decide a check or a negative control was not rejected, else `pass`.
    pub fn verdict(&self) -> Verdict {
        let controls_as_required = |kind| {
            self.controls
                .values()
                .filter(|c| c.kind == kind)
                .all(ControlResult::as_required)
        };
        let premises_hold = self
            .checks
            .values()
            .filter(|c| c.premise)
            .all(CheckResult::pass);
        if !premises_hold || !controls_as_required(ControlKind::Positive) {
            Verdict::Inconclusive
        } else if self.checks.values().any(|c| c.outcome == Outcome::Fail) {
            Verdict::Fail
        } else if !self.checks.values().all(CheckResult::pass)
            || !controls_as_required(ControlKind::Negative)
        {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }

    /// The summary as YAML: id, profile, verdict, checks (pass/fail, bound, what; the measured
    /// values are among the metrics, rounded), metrics.
    pub fn to_value(&self, id: &str, profile: &str) -> Value {
        let mut m = serde_yaml::Mapping::new();
        m.insert("id".into(), id.into());
        m.insert("profile".into(), profile.into());
        m.insert("verdict".into(), self.verdict().as_str().into());
        if let Some((verdict, reason)) = &self.expected {
            let mut e = serde_yaml::Mapping::new();
            e.insert("verdict".into(), verdict.as_str().into());
            e.insert("reason".into(), reason.clone().into());
            m.insert("expected".into(), Value::Mapping(e));
        }
        let mut checks = serde_yaml::Mapping::new();
        for (k, c) in &self.checks {
            let mut cm = serde_yaml::Mapping::new();
            cm.insert("pass".into(), c.pass().into());
            if c.premise {
                cm.insert("premise".into(), true.into());
            }
            // Goldens name the outcome only where the seeds left it open, and the interval
            // only where there are seeds to scatter.
            if c.outcome == Outcome::Undecided {
                cm.insert("undecided".into(), true.into());
            }
            cm.insert("value".into(), number(round_sig(c.value, DIGITS)));
            if let Some(interval) = c.interval {
                cm.insert("interval".into(), rounded_pair(interval));
            }
            cm.insert("bound".into(), c.bound.clone().into());
            cm.insert("what".into(), c.what.clone().into());
            if let Some(reason) = &c.reason {
                cm.insert("reason".into(), reason.clone().into());
            }
            checks.insert(k.clone().into(), Value::Mapping(cm));
        }
        m.insert("checks".into(), Value::Mapping(checks));
        if !self.controls.is_empty() {
            let mut controls = serde_yaml::Mapping::new();
            for (k, c) in &self.controls {
                let mut cm = serde_yaml::Mapping::new();
                cm.insert("replaces".into(), c.replaces.clone().into());
                // Negative is the default; goldens name only the positive kind.
                if c.kind == ControlKind::Positive {
                    cm.insert("kind".into(), c.kind.as_str().into());
                }
                cm.insert("why".into(), c.why.clone().into());
                cm.insert("rejected".into(), c.rejected().into());
                let values: serde_yaml::Mapping = c
                    .values
                    .iter()
                    .map(|(k, v)| (Value::from(k.clone()), number(round_sig(*v, DIGITS))))
                    .collect();
                cm.insert("values".into(), Value::Mapping(values));
                if !c.intervals.is_empty() {
                    let intervals: serde_yaml::Mapping = c
                        .intervals
                        .iter()
                        .map(|(k, i)| (Value::from(k.clone()), rounded_pair(*i)))
                        .collect();
                    cm.insert("intervals".into(), Value::Mapping(intervals));
                }
                cm.insert(
                    "failed".into(),
                    Value::Sequence(c.failed.iter().map(|f| f.clone().into()).collect()),
                );
                if !c.undecided.is_empty() {
                    cm.insert(
                        "undecided".into(),
                        Value::Sequence(c.undecided.iter().map(|f| f.clone().into()).collect()),
                    );
                }
                controls.insert(k.clone().into(), Value::Mapping(cm));
            }
            m.insert("controls".into(), Value::Mapping(controls));
        }
        let metrics: serde_yaml::Mapping = self
            .metrics
            .iter()
            .map(|(k, v)| (Value::from(k.clone()), v.clone()))
            .collect();
        m.insert("metrics".into(), Value::Mapping(metrics));
        Value::Mapping(m)
    }
}

/// Rounds to `digits` significant digits (summaries store rounded numbers).
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A confidence interval as a rounded `[low, high]`.
fn rounded_pair([lo, hi]: [f64; 2]) -> Value {
    Value::Sequence(vec![
        number(round_sig(lo, DIGITS)),
        number(round_sig(hi, DIGITS)),
    ])
}

fn number(x: f64) -> Value {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e15 {
        Value::Number((x as i64).into())
    } else {
        Value::Number(x.into())
    }
}

/// A summary as its golden records it ([`Summary::to_value`], rounded), read back typed: what
/// the report and other readers of goldens use, never string lookups. Numbers keep the form
/// the golden wrote them in (`0`, `1.5e-13`, `.nan`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryRecord {
    /// The claim's id (`E3`).
    pub id: String,
    /// The profile.
    pub profile: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The verdict the manifest expects at this profile (other than pass), and why.
    #[serde(default)]
    pub expected: Option<ExpectedRecord>,
    /// The claim's checks, by key.
    #[serde(default)]
    pub checks: BTreeMap<String, CheckRecord>,
    /// The controls, by key.
    #[serde(default)]
    pub controls: BTreeMap<String, ControlRecord>,
    /// Everything measured, by key, in the golden's order (values of several shapes).
    #[serde(default)]
    pub metrics: serde_yaml::Mapping,
}

/// A verdict the manifest expects at a profile.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRecord {
    /// The verdict.
    pub verdict: Verdict,
    /// Why this profile reaches it.
    pub reason: String,
}

/// One check as a golden records it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRecord {
    /// Whether it held.
    pub pass: bool,
    /// Whether the seeds scattered across the bound.
    #[serde(default)]
    pub undecided: bool,
    /// The measured value.
    pub value: serde_yaml::Number,
    /// Its one-sided 95 % bounds over seeds, where there are seeds.
    #[serde(default)]
    pub interval: Option<[serde_yaml::Number; 2]>,
    /// The bound, in words (`<= 1e-8`).
    pub bound: String,
    /// What was measured, in words.
    pub what: String,
    /// Why the bound is what it is.
    #[serde(default)]
    pub reason: Option<String>,
    /// A premise of the profile: its failure makes the verdict inconclusive.
    #[serde(default)]
    pub premise: bool,
}

/// One control as a golden records it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRecord {
    /// The claimed run it stands in for.
    pub replaces: String,
    /// Negative (the default, not written) or positive.
    #[serde(default)]
    pub kind: Option<ControlKind>,
    /// Why it is a control.
    pub why: String,
    /// Whether the checks rejected it (a negative control must be, a positive one must not).
    pub rejected: bool,
    /// Its value of each check.
    pub values: BTreeMap<String, serde_yaml::Number>,
    /// Their one-sided 95 % bounds over seeds.
    #[serde(default)]
    pub intervals: BTreeMap<String, [serde_yaml::Number; 2]>,
    /// The checks it fails.
    pub failed: Vec<String>,
    /// The checks its seeds leave undecided.
    #[serde(default)]
    pub undecided: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_sig_keeps_significant_digits() {
        assert_eq!(round_sig(0.0123456, 4), 0.01235);
        assert_eq!(round_sig(123456.0, 3), 123000.0);
        assert_eq!(round_sig(-2.6e-12, 1), -3e-12);
        assert_eq!(round_sig(0.0, 4), 0.0);
    }

    /// A summary collected in another process (an experiment run by a Slurm task) reads back
    /// whole: every number to the bit, so its rounded form is the same text.
    #[test]
    fn a_summary_reads_back_whole_through_yaml() {
        let mut s = Summary::default();
        s.metric("acc", 0.1 + 0.2);
        s.count("steps", 7);
        s.magnitude("dev", 1.889e-13);
        s.check_le("exact", "deviation", 1.8890000000000003e-13, 1e-10);
        s.check(
            "gap",
            CheckResult {
                what: "gap".into(),
                value: f64::MIN_POSITIVE,
                bound: "<= 1e-3".into(),
                outcome: Outcome::Undecided,
                interval: Some([-1e-3, 0.1 + 0.2]),
                reason: Some("why".into()),
                premise: true,
            },
        );
        let mut values = BTreeMap::new();
        values.insert("gap".to_string(), 0.30000000000000004);
        let mut intervals = BTreeMap::new();
        intervals.insert("gap".to_string(), [0.1 + 0.2, 0.7]);
        let control: Control = serde_yaml::from_str(
            "{replaces: texp, why: wrong, run: {schedule: {kind: constant, lr: 0.1}}}",
        )
        .unwrap();
        s.control(
            "c",
            &control,
            ControlMeasures {
                values,
                intervals,
                failed: vec!["gap".into()],
                undecided: vec!["other".into()],
            },
        );
        s.expect(Verdict::Inconclusive, "small");
        let text = serde_yaml::to_string(&s).unwrap();
        let back: Summary = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            back.checks()["exact"].value.to_bits(),
            1.8890000000000003e-13f64.to_bits()
        );
        assert_eq!(
            serde_yaml::to_string(&back.to_value("X", "smoke")).unwrap(),
            serde_yaml::to_string(&s.to_value("X", "smoke")).unwrap()
        );
    }

    #[test]
    fn verdict_follows_checks_and_numbers_are_rounded() {
        let mut s = Summary::default();
        s.metric("acc", 0.123456);
        s.magnitude("dev", 3.2e-13);
        s.check_le("exact", "deviation", 3.2e-13, 1e-10);
        let v = s.to_value("X1", "smoke");
        assert_eq!(v["verdict"], Value::from("pass"));
        assert_eq!(v["metrics"]["acc"].as_f64(), Some(0.1235));
        assert_eq!(v["metrics"]["dev_log10"].as_i64(), Some(-13));
        s.check_ge("grows", "growth", 0.5, 1.0);
        assert_eq!(s.to_value("X1", "smoke")["verdict"], Value::from("fail"));
    }
}
