//! Summaries: the rounded numbers and verdicts of one manifest at one profile, which the golden
//! snapshots check.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_yaml::Value;

/// Significant digits kept for summary numbers.
pub const DIGITS: i32 = 4;

/// The smallest order of magnitude [`Summary::magnitude`] records (exact zeros included).
pub const MAGNITUDE_FLOOR: f64 = -17.0;

/// One check that decides the claim.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckResult {
    /// What was checked, in words.
    pub what: String,
    /// The measured value.
    pub value: f64,
    /// The bound it was held to, in words (`<= 1e-10`).
    pub bound: String,
    /// Whether it held.
    pub pass: bool,
}

/// Builder of a manifest's summary.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    metrics: BTreeMap<String, Value>,
    checks: BTreeMap<String, CheckResult>,
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

    fn check(&mut self, key: String, what: String, value: f64, bound: String, pass: bool) {
        self.checks.insert(
            key,
            CheckResult {
                what,
                value,
                bound,
                pass,
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
        self.check(
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
        self.check(
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

    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.checks.values().all(|c| c.pass)
    }

    /// The summary as YAML: id, profile, verdict, checks (pass/fail, bound, what; the measured
    /// values are among the metrics, rounded), metrics.
    pub fn to_value(&self, id: &str, profile: &str) -> Value {
        let mut m = serde_yaml::Mapping::new();
        m.insert("id".into(), id.into());
        m.insert("profile".into(), profile.into());
        m.insert(
            "verdict".into(),
            if self.passed() { "pass" } else { "fail" }.into(),
        );
        let mut checks = serde_yaml::Mapping::new();
        for (k, c) in &self.checks {
            let mut cm = serde_yaml::Mapping::new();
            cm.insert("pass".into(), c.pass.into());
            cm.insert("bound".into(), c.bound.clone().into());
            cm.insert("what".into(), c.what.clone().into());
            checks.insert(k.clone().into(), Value::Mapping(cm));
        }
        m.insert("checks".into(), Value::Mapping(checks));
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

fn number(x: f64) -> Value {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e15 {
        Value::Number((x as i64).into())
    } else {
        Value::Number(x.into())
    }
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
