//! The claim's checks and its negative controls, evaluated on what the runs recorded, and the
//! verdict they give (EXPERIMENTS.md, "Verdicts that can fail"): `pass` when every check holds
//! for the claimed runs and every control fails at least one check that names the run it
//! replaces, `fail` when a check does not hold, `inconclusive` when some control passes too.
//!
//! Every statistic pairs runs trained from the same seed and averages: over the epochs of a
//! window, then over seeds. A check that holds a paired mean of accuracies or losses to a
//! bound (`window_gap`, `greater`) weighs how the seeds scatter: over two seeds or more it
//! holds only when its one-sided 95 % confidence bound (Student's t) is inside the bound, fails
//! only when the bound on the other side is outside, and is undecided in between. With one
//! seed there is no scatter to weigh and the mean decides.

use std::collections::BTreeMap;

use super::error::ExperimentError;
use explr_manifest::spec::{Check, Metric, RunSpec, SeedSpread, Training, Window};
use explr_results::summary::{CheckResult, ControlMeasures, Outcome, Summary};
use explr_train::records::EpochRecord;
use explr_train::trainer::SnapshotAt;

/// One-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom.
const T95: [f64; 30] = [
    6.313752, 2.919986, 2.353363, 2.131847, 2.015048, 1.943180, 1.894579, 1.859548, 1.833113,
    1.812461, 1.795885, 1.782288, 1.770933, 1.761310, 1.753050, 1.745884, 1.739607, 1.734064,
    1.729133, 1.724718, 1.720743, 1.717144, 1.713872, 1.710882, 1.708141, 1.705618, 1.703288,
    1.701131, 1.699127, 1.697261,
];

/// The one-sided 95 % quantile of Student's t with `dof` (≥ 1) degrees of freedom: the table
/// up to 30, then the Cornish–Fisher expansion around the normal quantile (within 1e-5).
pub fn t95(dof: usize) -> f64 {
    if let Some(t) = T95.get(dof.max(1) - 1) {
        return *t;
    }
    let (z, v) = (1.6448536269514722f64, dof as f64);
    z + (z.powi(3) + z) / (4.0 * v)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
}

/// A paired statistic's mean over seeds and its one-sided 95 % confidence bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SeedMean {
    /// The mean, summed in seed order.
    mean: f64,
    /// `mean ∓ t95(n−1)·s/√n` with the seeds' sample standard deviation `s`; both are the mean
    /// for one seed.
    bounds: [f64; 2],
    /// The number of seeds.
    seeds: usize,
}

impl SeedMean {
    fn of(values: &[f64]) -> SeedMean {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let half = if n < 2 {
            0.0
        } else {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t95(n - 1) * (var / n as f64).sqrt()
        };
        SeedMean {
            mean,
            bounds: [mean - half, mean + half],
            seeds: n,
        }
    }

    /// The bounds, where there are seeds to scatter.
    fn interval(&self) -> Option<[f64; 2]> {
        (self.seeds >= 2).then_some(self.bounds)
    }

    /// `mean >= margin`: holds when the lower bound does, fails when not even the upper one
    /// does.
    fn at_least(&self, margin: f64) -> Outcome {
        let [lo, hi] = self.bounds;
        if lo >= margin {
            Outcome::Pass
        } else if hi < margin {
            Outcome::Fail
        } else {
            Outcome::Undecided
        }
    }

    /// `|mean| <= bound`: holds when both bounds lie within ±bound, fails when both lie on
    /// one side outside it.
    fn within(&self, bound: f64) -> Outcome {
        let [lo, hi] = self.bounds;
        if lo >= -bound && hi <= bound {
            Outcome::Pass
        } else if lo > bound || hi < -bound {
            Outcome::Fail
        } else {
            Outcome::Undecided
        }
    }
}

/// Records of every (model, run, seed); controls are runs under their own names.
pub type AllRecords = BTreeMap<(String, String, u64), Vec<EpochRecord>>;

/// The weight-space distance of `model`'s run `a` trained from seed `sa` and run `b` from seed
/// `sb`, `distance(model, (a, sa), (b, sb), at)`, at a snapshot (see [`Check::WeightDistance`]):
/// a pair of twins on one seed, or one run on two seeds (the seeds' own distance).
pub type Distance<'a> =
    dyn Fn(&str, (&str, u64), (&str, u64), SnapshotAt) -> Result<f64, ExperimentError> + 'a;

/// What the checks read.
pub struct Evidence<'a> {
    /// The manifest's training section.
    pub spec: &'a Training,
    /// Every run's records.
    pub records: &'a AllRecords,
    /// The weight-space distance of two runs.
    pub distance: &'a Distance<'a>,
}

/// One check measured on one pair of runs.
struct Measured {
    /// The statistic.
    value: f64,
    /// How it came out.
    outcome: Outcome,
    /// Its one-sided 95 % confidence bounds, for a mean over two seeds or more.
    interval: Option<[f64; 2]>,
    /// The bound in words (`<= 1e-3`).
    bound: String,
    /// What was measured, in words.
    what: String,
    /// The key the statistic is recorded under (`weight_distance_step_decay_vs_texp`).
    name: String,
    /// The manifest's bound (a [`SeedSpread`]'s floor).
    floor: f64,
    /// A bound derived from the runs themselves and the seed standard deviation it came from
    /// ([`SeedSpread`]), recorded beside the value.
    derived_bound: Option<(f64, f64)>,
}

/// The pair of seeds whose distance is the reference of `run`'s drift curve: its first two (none
/// for a run on one seed).
pub(crate) fn seed_reference(spec: &Training, run: &str) -> Option<(u64, u64)> {
    match spec.seeds_of(run) {
        [s0, s1, ..] => Some((*s0, *s1)),
        _ => None,
    }
}

/// The sample standard deviation (0 for fewer than two values).
pub(crate) fn sample_sd(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
}

impl Evidence<'_> {
    fn curve(&self, model: &str, run: &str, seed: u64, metric: Metric) -> Vec<f64> {
        self.records[&(model.to_string(), run.to_string(), seed)]
            .iter()
            .map(|r| r.get(metric))
            .collect()
    }

    /// The mean of `metric` over `window` for (model, run, seed).
    fn window_mean(&self, model: &str, run: &str, seed: u64, metric: Metric, w: Window) -> f64 {
        let c = self.curve(model, run, seed, metric);
        let part = &c[w[0] - 1..w[1]];
        part.iter().sum::<f64>() / part.len() as f64
    }

    fn mean_over_seeds(&self, runs: &[&str], f: impl Fn(u64) -> f64) -> f64 {
        self.over_seeds(runs, f).mean
    }

    /// `f` of every seed that all of `runs` trained, in seed order, with its confidence bounds.
    fn over_seeds(&self, runs: &[&str], f: impl Fn(u64) -> f64) -> SeedMean {
        let values: Vec<f64> = self.spec.common_seeds(runs).into_iter().map(f).collect();
        SeedMean::of(&values)
    }

    fn run_spec(&self, run: &str) -> RunSpec {
        self.spec.all_runs()[run].clone()
    }

    /// Measures `check` on `model`. `claimed` is the check as the manifest writes it (`check`
    /// itself, or with a control in place of one run): the angular update is predicted from
    /// the claimed run's η, λ and γ whichever run is measured, so that a control with another
    /// weight decay or momentum is measured against the claim's prediction.
    fn measure(
        &self,
        check: &Check,
        claimed: &Check,
        model: &str,
    ) -> Result<Measured, ExperimentError> {
        Ok(match check {
            Check::WeightDistance {
                a, b, epoch, bound, ..
            } => self.weight_distance(model, (a, b), *epoch, *bound)?,
            Check::WindowGap {
                a,
                b,
                metric,
                windows,
                bound,
                relative,
                seed_spread,
                ..
            } => {
                let gap = self.window_gap(model, (a, b), *metric, windows, *bound, *relative);
                match seed_spread {
                    Some(spread) => self.against_seed_spread(gap, model, spread, *metric, windows),
                    None => gap,
                }
            }
            Check::Reaches {
                run,
                metric,
                window,
                at_least,
                ..
            } => self.reaches(model, run, *metric, *window, *at_least),
            Check::Greater {
                a,
                b,
                metric,
                window,
                margin,
                ..
            } => self.greater(model, (a, b), *metric, *window, *margin),
            Check::AngularUpdate {
                run,
                window,
                tolerance,
                ..
            } => {
                let claimed_run = match claimed {
                    Check::AngularUpdate { run, .. } => run.as_str(),
                    _ => run.as_str(),
                };
                self.angular_update(model, run, claimed_run, *window, *tolerance)
            }
            Check::NearlyConstant {
                run,
                metric,
                window,
                tolerance,
                ..
            } => self.nearly_constant(model, run, *metric, *window, *tolerance),
        })
    }

    /// [`Check::WeightDistance`]: the distance of runs `a` and `b` after `epoch`, mean over
    /// seeds.
    fn weight_distance(
        &self,
        model: &str,
        (a, b): (&str, &str),
        epoch: usize,
        bound: f64,
    ) -> Result<Measured, ExperimentError> {
        let value = self.mean_distance(model, (a, b), SnapshotAt::Epoch(epoch))?;
        Ok(Measured::at_most(
            value,
            bound,
            format!("{model}: ‖P·θ({a}) − θ({b})‖/‖θ({b})‖ after epoch {epoch}, mean over seeds"),
            format!("weight_distance_{a}_vs_{b}"),
        ))
    }

    /// The paired distance of runs `a` and `b` at `at`, mean over seeds (in seed order).
    fn mean_distance(
        &self,
        model: &str,
        (a, b): (&str, &str),
        at: SnapshotAt,
    ) -> Result<f64, ExperimentError> {
        let seeds = self.spec.common_seeds(&[a, b]);
        let mut sum = 0.0;
        for &seed in &seeds {
            sum += (self.distance)(model, (a, seed), (b, seed), at)?;
        }
        Ok(sum / seeds.len() as f64)
    }

    /// [`Check::WindowGap`]: the largest over `windows` of the paired gap of `metric` between
    /// runs `a` and `b`.
    fn window_gap(
        &self,
        model: &str,
        (a, b): (&str, &str),
        metric: Metric,
        windows: &[Window],
        bound: f64,
        relative: bool,
    ) -> Measured {
        let gap = |w: Window| {
            self.over_seeds(&[a, b], |s| {
                let (x, y) = (
                    self.window_mean(model, a, s, metric, w),
                    self.window_mean(model, b, s, metric, w),
                );
                if relative {
                    x / y - 1.0
                } else {
                    x - y
                }
            })
        };
        let gaps: Vec<SeedMean> = windows.iter().map(|w| gap(*w)).collect();
        // The largest gap is the value; any window failing fails the check, and any
        // window the seeds cannot decide leaves it undecided.
        let widest = gaps
            .iter()
            .copied()
            .reduce(|x, y| if y.mean.abs() > x.mean.abs() { y } else { x })
            .expect("a window_gap check has windows");
        let outcomes: Vec<Outcome> = gaps.iter().map(|g| g.within(bound)).collect();
        let outcome = if outcomes.contains(&Outcome::Fail) {
            Outcome::Fail
        } else if outcomes.contains(&Outcome::Undecided) {
            Outcome::Undecided
        } else {
            Outcome::Pass
        };
        let value = widest.mean.abs();
        let ws: Vec<String> = windows
            .iter()
            .map(|w| format!("{}-{}", w[0], w[1]))
            .collect();
        Measured {
            value,
            outcome,
            interval: widest.interval(),
            bound: format!("<= {bound:e}"),
            what: format!(
                "{model}: largest over epochs {} of the paired {} gap of {metric}({a}) and {metric}({b}), window means, mean over seeds",
                ws.join(", "),
                if relative { "relative" } else { "absolute" }
            ),
            name: format!("window_gap_{metric}_{a}_vs_{b}"),
            floor: bound,
            derived_bound: None,
        }
    }

    /// [`SeedSpread`]: `gap` (a [`Check::WindowGap`] measured with `bound` as its floor)
    /// decided against `factor` × the seeds' standard deviation of `spread.run`'s window means
    /// (the largest over `windows`) where that is above the floor, on the mean gap alone: the
    /// bound is itself the seed noise.
    fn against_seed_spread(
        &self,
        gap: Measured,
        model: &str,
        spread: &SeedSpread,
        metric: Metric,
        windows: &[Window],
    ) -> Measured {
        let sd = windows
            .iter()
            .map(|&w| {
                let values: Vec<f64> = self
                    .spec
                    .seeds_of(&spread.run)
                    .iter()
                    .map(|&s| self.window_mean(model, &spread.run, s, metric, w))
                    .collect();
                sample_sd(&values)
            })
            .fold(0.0, f64::max);
        let floor = gap.floor;
        let bound = floor.max(spread.factor * sd);
        Measured {
            outcome: Outcome::of(gap.value <= bound),
            bound: format!(
                "<= max({floor:e}, {} × the seed standard deviation of {metric}({}))",
                spread.factor, spread.run
            ),
            what: format!(
                "{}, against a bound from the seeds (its value and the seed standard deviation are the metrics `…_bound` and `…_seed_sd`)",
                gap.what
            ),
            derived_bound: Some((bound, sd)),
            ..gap
        }
    }

    /// [`Check::Reaches`]: the mean over seeds of `run`'s `metric` over `window`, at least
    /// `at_least` (a premise of the profile's level, decided on the mean).
    fn reaches(
        &self,
        model: &str,
        run: &str,
        metric: Metric,
        window: Window,
        at_least: f64,
    ) -> Measured {
        let level = self.over_seeds(&[run], |s| self.window_mean(model, run, s, metric, window));
        Measured {
            value: level.mean,
            outcome: Outcome::of(level.mean >= at_least),
            interval: level.interval(),
            bound: format!(">= {at_least:e}"),
            floor: at_least,
            derived_bound: None,
            what: format!(
                "{model}: {metric}({run}), mean over epochs {}-{} and seeds (a premise: when it misses, the verdict is inconclusive)",
                window[0], window[1]
            ),
            name: format!("level_{metric}_{run}"),
        }
    }

    /// [`Check::Greater`]: the paired gap of `metric` between runs `a` and `b` over `window`.
    fn greater(
        &self,
        model: &str,
        (a, b): (&str, &str),
        metric: Metric,
        window: Window,
        margin: f64,
    ) -> Measured {
        let gap = self.over_seeds(&[a, b], |s| {
            self.window_mean(model, a, s, metric, window)
                - self.window_mean(model, b, s, metric, window)
        });
        Measured {
            value: gap.mean,
            outcome: gap.at_least(margin),
            interval: gap.interval(),
            bound: format!(">= {margin:e}"),
            what: format!(
                "{model}: {metric}({a}) − {metric}({b}), mean over epochs {}-{} and seeds",
                window[0], window[1]
            ),
            name: format!("gap_{metric}_{a}_vs_{b}"),
            floor: margin,
            derived_bound: None,
        }
    }

    /// [`Check::AngularUpdate`]: the angular update of `run` over `window` against the one
    /// predicted from `claimed_run`'s η, λ and γ.
    fn angular_update(
        &self,
        model: &str,
        run: &str,
        claimed_run: &str,
        window: Window,
        tolerance: f64,
    ) -> Measured {
        let r = self.run_spec(claimed_run);
        let measured = self.mean_over_seeds(&[run, claimed_run], |s| {
            self.window_mean(model, run, s, Metric::AngularUpdate, window)
        });
        // THEORY.md §8: sqrt(2ηλ/(1+γ)) at equilibrium, with each epoch's η.
        let predicted = self.mean_over_seeds(&[run, claimed_run], |s| {
            let lrs = self.curve(model, claimed_run, s, Metric::Lr);
            let part = &lrs[window[0] - 1..window[1]];
            part.iter()
                .map(|lr| (2.0 * lr * r.weight_decay / (1.0 + r.momentum)).sqrt())
                .sum::<f64>()
                / part.len() as f64
        });
        Measured::at_most(
            (measured / predicted - 1.0).abs(),
            tolerance,
            format!(
                "{model}: |measured/predicted − 1| of the angular update of {run} over epochs {}-{} (measured {measured:.4e}, predicted {predicted:.4e})",
                window[0], window[1]
            ),
            format!("angular_update_{run}"),
        )
    }

    /// [`Check::NearlyConstant`]: the largest relative deviation of `metric` of `run` (mean
    /// over seeds) from its mean over `window`.
    fn nearly_constant(
        &self,
        model: &str,
        run: &str,
        metric: Metric,
        window: Window,
        tolerance: f64,
    ) -> Measured {
        let curve: Vec<f64> = (window[0]..=window[1])
            .map(|e| self.mean_over_seeds(&[run], |s| self.curve(model, run, s, metric)[e - 1]))
            .collect();
        let mean = curve.iter().sum::<f64>() / curve.len() as f64;
        let value = curve
            .iter()
            .map(|x| (x / mean - 1.0).abs())
            .fold(0.0, f64::max);
        Measured::at_most(
            value,
            tolerance,
            format!(
                "{model}: largest relative deviation of {metric}({run}) from its mean over epochs {}-{}",
                window[0], window[1]
            ),
            format!("spread_{metric}_{run}"),
        )
    }
}

impl Measured {
    /// A statistic held to `value <= bound` (no confidence bounds), the bound in words.
    fn at_most(value: f64, bound: f64, what: String, name: String) -> Measured {
        Measured {
            value,
            outcome: Outcome::of(value <= bound),
            interval: None,
            bound: format!("<= {bound:e}"),
            what,
            name,
            floor: bound,
            derived_bound: None,
        }
    }
}

/// The claim's checks and controls on `ev`, recorded into `summary` with the verdict.
pub fn evaluate(ev: &Evidence<'_>, summary: &mut Summary) -> Result<(), ExperimentError> {
    let spec = ev.spec;
    for model in spec.models.keys() {
        let checks = spec.checks_of(model);
        for (i, check) in checks.iter().enumerate() {
            let m = ev.measure(check, check, model)?;
            summary.metric(format!("{model}.{i}_{}", m.name), m.value);
            if let Check::WeightDistance {
                a, b, epoch, steps, ..
            } = check
            {
                // The distance as it grows over the first updates: recorded, not bounded.
                for &step in steps {
                    let d = ev.mean_distance(model, (a, b), SnapshotAt::Step(step))?;
                    summary.metric(format!("{model}.{i}_{}_step_{step}", m.name), d);
                }
                // Its reference: how far apart `a`'s first two seeds are at the same epoch.
                let reference = seed_reference(spec, a).filter(|_| !steps.is_empty());
                if let Some((s0, s1)) = reference {
                    let d = (ev.distance)(model, (a, s0), (a, s1), SnapshotAt::Epoch(*epoch))?;
                    summary.metric(format!("{model}.{i}_{}_seeds_{s0}_vs_{s1}", m.name), d);
                }
            }
            if let Some((bound, sd)) = m.derived_bound {
                summary.metric(format!("{model}.{i}_{}_bound", m.name), bound);
                summary.metric(format!("{model}.{i}_{}_seed_sd", m.name), sd);
            }
            summary.check(
                format!("{model}.{i}_{}", check_kind(check)),
                CheckResult {
                    what: m.what,
                    value: m.value,
                    bound: m.bound,
                    outcome: m.outcome,
                    interval: m.interval,
                    reason: Some(check.reason().to_string()),
                    premise: check.is_premise(),
                },
            );
        }
        for (name, control) in spec.controls.iter().filter(|(n, _)| spec.trains(n, model)) {
            let mut measures = ControlMeasures::default();
            for (i, check) in checks.iter().enumerate() {
                if check.is_premise() || !check.runs().contains(&control.replaces.as_str()) {
                    continue;
                }
                let swapped = check.with_run_replaced(&control.replaces, name);
                let m = ev.measure(&swapped, check, model)?;
                let key = format!("{model}.{i}_{}", check_kind(check));
                measures.values.insert(key.clone(), m.value);
                if let Some(interval) = m.interval {
                    measures.intervals.insert(key.clone(), interval);
                }
                match m.outcome {
                    Outcome::Pass => {}
                    Outcome::Fail => measures.failed.push(key),
                    Outcome::Undecided => measures.undecided.push(key),
                }
            }
            summary.control(format!("{model}.{name}"), control, measures);
        }
    }
    Ok(())
}

/// The key word of a check in the summary (`weight_distance`, `window_gap`, …).
fn check_kind(check: &Check) -> &'static str {
    match check {
        Check::WeightDistance { .. } => "weight_distance",
        Check::WindowGap { .. } => "window_gap",
        Check::Greater { .. } => "greater",
        Check::AngularUpdate { .. } => "angular_update",
        Check::NearlyConstant { .. } => "nearly_constant",
        Check::Reaches { .. } => "reaches",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use explr_manifest::spec::{ControlKind, Precision, Verdict};
    use explr_results::summary::round_sig;

    /// Runs `a` and `b` and controls `same` (b's copy) and `off` (b shifted by 0.3) over
    /// seeds 0 and 1, 4 epochs; `test_acc` of seed s is `0.5 + 0.1·s + shift`, `lr` 0.1 and
    /// the angular update sqrt(2·0.1·λ/1.9)·(1 + angle_error) with λ = 0.01.
    fn records(b_shift: f64, angle_error: f64) -> AllRecords {
        records_by_epoch(&|_| b_shift, angle_error)
    }

    /// [`records`] with b's shift a function of the epoch (1-based).
    fn records_by_epoch(b_shift: &dyn Fn(usize) -> f64, angle_error: f64) -> AllRecords {
        let mut all = AllRecords::new();
        let zero = |_: usize| 0.0;
        let off = |e: usize| b_shift(e) + 0.3;
        let runs: [(&str, &dyn Fn(usize) -> f64); 5] = [
            ("a", &zero),
            ("b", b_shift),
            ("same", b_shift),
            ("off", &off),
            ("copy_of_a", &zero),
        ];
        for (run, shift) in runs {
            for seed in [0u64, 1] {
                let curve = (1..=4)
                    .map(|e| EpochRecord {
                        epoch: e,
                        step: e as u64 * 10,
                        lr: 0.1,
                        train_loss: 1.0,
                        train_acc: 0.5,
                        test_loss: 1.0,
                        test_acc: 0.5 + 0.1 * seed as f64 + shift(e),
                        si_norm: 1.0 + e as f64,
                        layer_norm: 1.0,
                        norm_sq_over_lr: 10.0,
                        effective_lr: 0.1,
                        angular_update: (2.0 * 0.1 * 0.01 / 1.9f64).sqrt() * (1.0 + angle_error),
                        wall_s: 1.0,
                    })
                    .collect();
                all.insert(("m".into(), run.into(), seed), curve);
            }
        }
        all
    }

    fn spec(checks: &str) -> Training {
        serde_yaml::from_str(&format!(
            r#"
models: {{m: {{arch: preresnet, depth: 8}}}}
data: {{dataset: synthetic, batch_size: 4}}
seeds: [0, 1]
epochs: 4
runs:
  a: {{weight_decay: 0.01, momentum: 0.9, schedule: {{kind: constant, lr: 0.1}}}}
  b: {{schedule: {{kind: constant, lr: 0.1}}}}
controls:
  same: {{replaces: b, why: a copy of b, run: {{schedule: {{kind: constant, lr: 0.1}}}}}}
  off: {{replaces: b, why: shifted, run: {{schedule: {{kind: constant, lr: 0.2}}}}}}
checks:
{checks}
"#
        ))
        .unwrap()
    }

    /// The summary of `checks` on `records`, with weight distances 1e-6 between a and b and
    /// 1e-2 against `off`.
    fn run(checks: &str, records: &AllRecords) -> Summary {
        judge(&spec(checks), records)
    }

    /// The summary of `spec`'s checks and controls on `records`, with the distances of [`run`].
    fn judge(spec: &Training, records: &AllRecords) -> Summary {
        let distance = |_: &str, (_, sa): (&str, u64), (b, seed): (&str, u64), at: SnapshotAt| {
            Ok(match at {
                _ if sa != seed => 1.4,
                _ if b == "off" => 1e-2,
                SnapshotAt::Epoch(_) => 1e-6 * (1 + seed) as f64,
                SnapshotAt::Step(step) => 1e-7 * (step * (1 + seed)) as f64,
            })
        };
        let mut s = Summary::default();
        evaluate(
            &Evidence {
                spec,
                records,
                distance: &distance,
            },
            &mut s,
        )
        .unwrap();
        s
    }

    const GAP: &str = "  - {check: window_gap, a: a, b: b, metric: test_acc, windows: [[2, 3], [4, 4]], bound: 0.05, reason: r}";

    #[test]
    fn window_gap_is_the_paired_mean_over_windows_and_seeds() {
        let s = run(GAP, &records(0.04, 0.0));
        let c = &s.checks()["m.0_window_gap"];
        assert!((c.value - 0.04).abs() < 1e-12, "{}", c.value);
        assert!(c.pass());
        assert!(!run(GAP, &records(0.06, 0.0)).checks()["m.0_window_gap"].pass());
        let relative = GAP.replace("bound: 0.05", "bound: 0.05, relative: true");
        let v = run(&relative, &records(0.06, 0.0)).checks()["m.0_window_gap"].value;
        // Seeds: 0.5/0.56 − 1 and 0.6/0.66 − 1, averaged.
        let want: f64 = ((0.5 / 0.56 - 1.0) + (0.6 / 0.66 - 1.0)) / 2.0;
        assert!((v - want.abs()).abs() < 1e-12, "{v} vs {want}");
    }

    /// A gap counts against the bound whatever its sign and in whichever window it opens: a
    /// twin that trails (or leads) only in the last window, or only in the first, fails; the
    /// same twin within the bound everywhere passes.
    #[test]
    fn window_gap_counts_a_gap_of_either_sign_in_any_window() {
        // Windows [2, 3] and [4, 4]; a gap of 0.06 against a bound of 0.05.
        for sign in [1.0, -1.0] {
            for (opens, shift) in [
                (
                    "only in epoch 4",
                    (|e| if e == 4 { 0.06 } else { 0.0 }) as fn(usize) -> f64,
                ),
                ("only in epochs 2-3", |e| {
                    if (2..=3).contains(&e) {
                        0.06
                    } else {
                        0.0
                    }
                }),
            ] {
                let recs = records_by_epoch(&|e| sign * shift(e), 0.0);
                let summary = run(GAP, &recs);
                let c = &summary.checks()["m.0_window_gap"];
                assert!(!c.pass(), "a gap of {} {opens} passed: {c:?}", sign * 0.06);
                assert!((c.value - 0.06).abs() < 1e-12, "{opens}: {}", c.value);
            }
            let within = records_by_epoch(&|e| if e == 4 { sign * 0.04 } else { 0.0 }, 0.0);
            assert!(run(GAP, &within).checks()["m.0_window_gap"].pass());
        }
    }

    /// With `seed_spread`, the bound is `factor` × the seed standard deviation of a run's
    /// window means where that is above the floor, and the mean gap alone decides.
    #[test]
    fn a_seed_spread_bound_is_the_seeds_own_scatter_and_the_mean_decides() {
        let spread = |factor: f64| {
            GAP.replace(
                "bound: 0.05,",
                &format!("bound: 0.05, seed_spread: {{run: a, factor: {factor}}},"),
            )
        };
        // a's seeds are 0.5 and 0.6 in every epoch: their standard deviation is 0.1/√2.
        let sd = 0.1 / 2f64.sqrt();
        let s = run(&spread(1.0), &records(0.06, 0.0));
        let c = &s.checks()["m.0_window_gap"];
        assert!(c.pass(), "a gap of 0.06 within one sd ({sd}): {c:?}");
        assert!(c
            .bound
            .contains("max(5e-2, 1 × the seed standard deviation of test_acc(a))"));
        let bound = s.to_value("X", "p")["metrics"]["m.0_window_gap_test_acc_a_vs_b_bound"]
            .as_f64()
            .unwrap();
        assert!((bound - round_sig(sd, 4)).abs() < 1e-12, "{bound}");
        // Half a standard deviation is below the floor, which then holds the gap.
        let c = run(&spread(0.5), &records(0.06, 0.0)).checks()["m.0_window_gap"].clone();
        assert_eq!(c.outcome, Outcome::Fail, "{c:?}");
        assert!(run(&spread(0.5), &records(0.04, 0.0)).checks()["m.0_window_gap"].pass());
        // Seeds that scatter (gaps 0.03 and 0.05): the interval straddles 0.05, so the plain
        // bound is undecided, while the seed-spread bound (0.0707) takes the mean, 0.04.
        let mut recs = records(0.03, 0.0);
        for r in recs.get_mut(&("m".into(), "b".into(), 1)).unwrap() {
            r.test_acc += 0.02;
        }
        let plain = run(GAP, &recs).checks()["m.0_window_gap"].clone();
        assert_eq!(plain.outcome, Outcome::Undecided, "{plain:?}");
        let from_seeds = run(&spread(1.0), &recs).checks()["m.0_window_gap"].clone();
        assert_eq!(from_seeds.outcome, Outcome::Pass, "{from_seeds:?}");
        assert!((from_seeds.value - 0.04).abs() < 1e-12);
        // The control shifted by 0.3 is rejected by the same derived bound.
        let s = run(&spread(1.0), &records(0.06, 0.0));
        assert_eq!(s.controls()["m.off"].failed, ["m.0_window_gap"]);
    }

    /// A weight distance with `steps` records the paired distance after each of those updates
    /// (mean over seeds), beside the bounded one at the end of its epoch.
    #[test]
    fn a_weight_distance_records_its_curve_over_the_first_updates() {
        let wd = "  - {check: weight_distance, a: a, b: b, epoch: 2, steps: [1, 4], bound: 1.0e-4, reason: r}";
        let s = run(wd, &records(0.0, 0.0));
        let metrics = &s.to_value("X", "p")["metrics"];
        let at = |k: &str| metrics[k].as_f64().unwrap();
        // Seeds 0 and 1: 1e-7·step·(1 + seed), averaged.
        assert!((at("m.0_weight_distance_a_vs_b_step_1") - 1.5e-7).abs() < 1e-20);
        assert!((at("m.0_weight_distance_a_vs_b_step_4") - 6e-7).abs() < 1e-20);
        assert!((s.checks()["m.0_weight_distance"].value - 1.5e-6).abs() < 1e-18);
        // Beside it, how far `a`'s seeds 0 and 1 are apart (1.4 here): the drift's reference.
        assert_eq!(at("m.0_weight_distance_a_vs_b_seeds_0_vs_1"), 1.4);
        // Without a curve, no reference is recorded.
        let plain = run(&wd.replace("steps: [1, 4], ", ""), &records(0.0, 0.0));
        let keys = plain.to_value("X", "p")["metrics"]
            .as_mapping()
            .unwrap()
            .clone();
        assert!(
            !keys.keys().any(|k| k.as_str().unwrap().contains("seeds")),
            "{keys:?}"
        );
    }

    /// A control that trains some seeds only is paired with the claimed runs on those seeds.
    #[test]
    fn a_control_on_fewer_seeds_is_paired_on_its_own_seeds() {
        let mut spec = spec(GAP);
        spec.controls.get_mut("off").unwrap().seeds = Some(vec![1]);
        let mut recs = records(0.0, 0.0);
        // Seed 0 of `off` is not trained: its records, if read, would make the gap 10.
        for r in recs.get_mut(&("m".into(), "off".into(), 0)).unwrap() {
            r.test_acc += 10.0;
        }
        let s = judge(&spec, &recs);
        let off = &s.controls()["m.off"];
        assert!(
            (off.values["m.0_window_gap"] - 0.3).abs() < 1e-12,
            "{off:?}"
        );
        assert!(
            off.intervals.is_empty(),
            "one seed has no interval: {off:?}"
        );
        assert_eq!(off.failed, ["m.0_window_gap"]);
        assert_eq!(spec.seeds_of("off"), [1]);
        assert_eq!(spec.common_seeds(&["a", "off"]), [1]);
        assert_eq!(spec.common_seeds(&["a", "b"]), [0, 1]);
    }

    /// A model with its own checks is judged by them alone, and a control that lists other
    /// models is neither trained nor judged on it.
    #[test]
    fn a_model_with_its_own_checks_is_judged_by_them_and_controls_keep_to_their_models() {
        let mut spec = spec(GAP);
        spec.models.insert("m2".into(), spec.models["m"].clone());
        let level =
            "{check: reaches, run: a, metric: test_acc, window: [3, 4], at_least: 0.5, reason: r}";
        let gap = GAP.trim_start_matches("  - ");
        spec.per_model.insert(
            "m2".into(),
            serde_yaml::from_str(&format!("{{dtype: f64, checks: [{level}, {gap}]}}")).unwrap(),
        );
        spec.controls.get_mut("off").unwrap().models = Some(vec!["m".into()]);
        let mut recs = records(0.0, 0.0);
        let m2: Vec<_> = recs
            .iter()
            .filter(|((_, run, _), _)| run != "off")
            .map(|((_, run, seed), r)| (("m2".to_string(), run.clone(), *seed), r.clone()))
            .collect();
        recs.extend(m2);
        let s = judge(&spec, &recs);
        let keys: Vec<&String> = s.checks().keys().collect();
        assert_eq!(keys, ["m.0_window_gap", "m2.0_reaches", "m2.1_window_gap"]);
        let controls: Vec<&String> = s.controls().keys().collect();
        assert_eq!(controls, ["m.off", "m.same", "m2.same"]);
        assert_eq!(spec.dtype_of("m2"), Precision::F64);
        assert_eq!(spec.dtype_of("m"), spec.dtype);
        assert!(spec.trains("off", "m") && !spec.trains("off", "m2") && spec.trains("a", "m2"));
    }

    /// A `reaches` premise that misses leaves the verdict inconclusive, whatever the other
    /// checks say, and judges no control.
    #[test]
    fn a_missed_premise_makes_the_verdict_inconclusive_and_judges_no_control() {
        let level = |at_least: f64| {
            format!(
                "{GAP}\n  - {{check: reaches, run: a, metric: test_acc, window: [3, 4], at_least: {at_least}, reason: it learns}}"
            )
        };
        // a's test accuracy is 0.5 and 0.6 over the seeds: 0.55 on the mean.
        let s = run(&level(0.55), &records(0.06, 0.0));
        let c = &s.checks()["m.1_reaches"];
        assert!(c.pass() && c.premise, "{c:?}");
        assert!((c.value - 0.55).abs() < 1e-12);
        assert_eq!(
            s.verdict(),
            Verdict::Fail,
            "the gap of 0.06 fails the claim"
        );
        let s = run(&level(0.56), &records(0.06, 0.0));
        assert_eq!(s.checks()["m.1_reaches"].outcome, Outcome::Fail);
        assert_eq!(s.verdict(), Verdict::Inconclusive);
        assert!(s
            .controls()
            .values()
            .all(|c| !c.values.contains_key("m.1_reaches")));
        assert_eq!(
            s.to_value("X", "p")["checks"]["m.1_reaches"]["premise"],
            serde_yaml::Value::from(true)
        );
    }

    #[test]
    fn a_control_that_passes_every_check_makes_the_verdict_inconclusive() {
        // `same` is b's copy: it passes the gap, so the profile cannot tell right from wrong.
        let s = run(GAP, &records(0.0, 0.0));
        assert_eq!(s.verdict(), Verdict::Inconclusive);
        assert!(!s.controls()["m.same"].rejected());
        assert_eq!(s.controls()["m.off"].failed, ["m.0_window_gap"]);
        // The weight distance rejects `off` but not `same` either.
        let wd = "  - {check: weight_distance, a: a, b: b, epoch: 2, bound: 1.0e-4, reason: r}";
        let s = run(wd, &records(0.0, 0.0));
        let c = &s.checks()["m.0_weight_distance"];
        assert!((c.value - 1.5e-6).abs() < 1e-18 && c.pass(), "{}", c.value);
        assert_eq!(s.verdict(), Verdict::Inconclusive);
        // The claimed pair failing is a fail, whatever the controls do.
        assert_eq!(run(GAP, &records(0.2, 0.0)).verdict(), Verdict::Fail);
    }

    #[test]
    fn the_verdict_is_pass_only_when_every_control_fails_a_check() {
        let mut spec = spec(GAP);
        spec.controls.remove("same");
        let recs = records(0.0, 0.0);
        let distance = |_: &str, _: (&str, u64), _: (&str, u64), _: SnapshotAt| Ok(0.0);
        let mut s = Summary::default();
        evaluate(
            &Evidence {
                spec: &spec,
                records: &recs,
                distance: &distance,
            },
            &mut s,
        )
        .unwrap();
        assert_eq!(s.verdict(), Verdict::Pass);
        // The control's own statistic is recorded beside the claim's.
        let v = s.to_value("E0", "smoke");
        assert_eq!(
            v["controls"]["m.off"]["values"]["m.0_window_gap"].as_f64(),
            Some(0.3)
        );
        assert_eq!(v["checks"]["m.0_window_gap"]["value"].as_f64(), Some(0.0));
        assert_eq!(v["controls"]["m.off"]["rejected"].as_bool(), Some(true));
    }

    #[test]
    fn a_positive_control_decides_whether_a_failing_check_is_a_fail() {
        // A copy of `a` in place of b, as a positive control, passes the gap whatever b does:
        // the profile can see the effect, so the verdict is what the claimed pair and the
        // negative `off` (rejected) make it.
        let mut spec = spec(GAP);
        spec.controls.remove("same");
        let mut copy = spec.controls["off"].clone();
        copy.kind = ControlKind::Positive;
        spec.controls.insert("copy_of_a".into(), copy);
        assert_eq!(judge(&spec, &records(0.0, 0.0)).verdict(), Verdict::Pass);
        assert_eq!(judge(&spec, &records(0.2, 0.0)).verdict(), Verdict::Fail);
        // `off` as a positive control fails the gap (0.3): the profile cannot see the effect,
        // and neither a failing nor a holding claimed pair is evidence.
        spec.controls.get_mut("off").unwrap().kind = ControlKind::Positive;
        let s = judge(&spec, &records(0.2, 0.0));
        assert_eq!(s.verdict(), Verdict::Inconclusive);
        assert!(!s.controls()["m.off"].as_required());
        assert!(s.controls()["m.copy_of_a"].as_required());
        assert_eq!(
            judge(&spec, &records(0.0, 0.0)).verdict(),
            Verdict::Inconclusive
        );
        // The kind is written into the summary only when positive (the goldens' default).
        let v = s.to_value("E0", "smoke");
        assert_eq!(v["controls"]["m.off"]["kind"].as_str(), Some("positive"));
        spec.controls.get_mut("off").unwrap().kind = ControlKind::Negative;
        let v = judge(&spec, &records(0.2, 0.0)).to_value("E0", "smoke");
        assert!(v["controls"]["m.off"].get("kind").is_none());
    }

    #[test]
    fn greater_angular_update_and_nearly_constant() {
        let checks = "  - {check: greater, a: b, b: a, metric: test_acc, window: [3, 4], margin: 0.05, reason: r}\n  \
                      - {check: angular_update, run: a, window: [2, 4], tolerance: 0.1, reason: r}\n  \
                      - {check: nearly_constant, run: a, metric: si_norm, window: [1, 4], tolerance: 0.5, reason: r}";
        let s = run(checks, &records(0.1, 0.05));
        let c = s.checks();
        assert!((c["m.0_greater"].value - 0.1).abs() < 1e-12 && c["m.0_greater"].pass());
        assert!((c["m.1_angular_update"].value - 0.05).abs() < 1e-12);
        assert!(c["m.1_angular_update"].pass());
        // si_norm 2, 3, 4, 5: mean 3.5, largest deviation 1.5/3.5.
        assert!((c["m.2_nearly_constant"].value - 1.5 / 3.5).abs() < 1e-12);
        let s = run(checks, &records(0.0, 0.2));
        assert!(!s.checks()["m.0_greater"].pass() && !s.checks()["m.1_angular_update"].pass());
    }

    /// P(T <= t) for Student's t with `dof` degrees of freedom, by Simpson's rule on the
    /// density from 0 to t.
    fn t_cdf(t: f64, dof: usize) -> f64 {
        let v = dof as f64;
        // Γ((v+1)/2)/Γ(v/2) by the recurrence Γ(x+1) = x·Γ(x) from v = 1 or 2.
        let mut ratio = if dof % 2 == 1 {
            1.0 / std::f64::consts::PI.sqrt()
        } else {
            std::f64::consts::PI.sqrt() / 2.0
        };
        let mut k = 2 - dof % 2;
        while k < dof {
            ratio *= (k as f64 + 1.0) / k as f64;
            k += 2;
        }
        let c = ratio / (v * std::f64::consts::PI).sqrt();
        let f = |x: f64| c * (1.0 + x * x / v).powf(-(v + 1.0) / 2.0);
        let n = 20_000;
        let h = t / n as f64;
        let inner: f64 = (1..n)
            .map(|i| if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * h))
            .sum();
        0.5 + h / 3.0 * (f(0.0) + inner + f(t))
    }

    #[test]
    fn t95_is_the_one_sided_95_percent_quantile_of_students_t() {
        for dof in (1..=40).chain([60, 200, 1000]) {
            let p = t_cdf(t95(dof), dof);
            assert!(
                (p - 0.95).abs() < 1e-6,
                "dof {dof}: P(T <= {}) = {p}",
                t95(dof)
            );
        }
    }

    #[test]
    fn a_mean_over_seeds_decides_only_beyond_its_confidence_bounds() {
        // E5's first cpu record: TEXP − TEXP-- per seed, mean 0.0073, against the margin 0.02.
        let gap = SeedMean::of(&[-0.0003, 0.0072, 0.015]);
        let [lo, hi] = gap.interval().unwrap();
        // Standard deviation 0.00765 over 3 seeds: half-width 2.92·0.00765/√3 = 0.0129.
        assert!(((hi - lo) / 2.0 - 0.0129).abs() < 1e-4, "{lo} {hi}");
        assert_eq!(gap.at_least(0.02), Outcome::Undecided);
        assert_eq!(gap.at_least(0.021), Outcome::Fail);
        assert_eq!(gap.at_least(-0.006), Outcome::Pass);
        assert_eq!(
            SeedMean::of(&[0.03, 0.031, 0.029]).at_least(0.02),
            Outcome::Pass
        );
        // One seed: no scatter to weigh, the value decides.
        let one = SeedMean::of(&[0.019]);
        assert_eq!(one.interval(), None);
        assert_eq!(one.at_least(0.02), Outcome::Fail);
        assert_eq!(one.within(0.02), Outcome::Pass);
        // Equivalence within ±bound, on either side.
        assert_eq!(
            SeedMean::of(&[0.0, 0.001, 0.002]).within(0.05),
            Outcome::Pass
        );
        assert_eq!(
            SeedMean::of(&[0.04, 0.06, 0.05]).within(0.05),
            Outcome::Undecided
        );
        assert_eq!(
            SeedMean::of(&[-0.2, -0.21, -0.19]).within(0.05),
            Outcome::Fail
        );
        assert_eq!(SeedMean::of(&[0.2, 0.21, 0.19]).within(0.05), Outcome::Fail);
    }

    /// Runs `a` and `b` (b's test accuracy shifted by `shifts[seed]`), a control `never` in
    /// place of b shifted by `never[seed]`, over as many seeds as `shifts` has.
    fn scattered(shifts: &[f64], never: &[f64], kind: ControlKind) -> Summary {
        let mut spec = spec(
            "  - {check: greater, a: a, b: b, metric: test_acc, window: [3, 4], margin: 0.02, reason: r}",
        );
        spec.seeds = (0..shifts.len() as u64).collect();
        spec.controls.clear();
        let mut control: explr_manifest::spec::Control = serde_yaml::from_str(
            "{replaces: b, why: never decays, run: {schedule: {kind: constant, lr: 0.1}}}",
        )
        .unwrap();
        control.kind = kind;
        spec.controls.insert("never".into(), control);
        let mut all = AllRecords::new();
        let base = records(0.0, 0.0);
        for (seed, (shift, off)) in shifts.iter().zip(never).enumerate() {
            for (run, by) in [("a", 0.0), ("b", -shift), ("never", -off)] {
                let mut curve = base[&("m".to_string(), "a".to_string(), 0)].clone();
                for r in &mut curve {
                    r.test_acc += by;
                }
                all.insert(("m".into(), run.into(), seed as u64), curve);
            }
        }
        judge(&spec, &all)
    }

    #[test]
    fn seeds_that_scatter_across_the_bound_leave_the_verdict_inconclusive() {
        use ControlKind::{Negative, Positive};
        let clear = [0.05, 0.051, 0.049];
        // The claimed gap is clearly above the margin and the negative control clearly below.
        assert_eq!(
            scattered(&clear, &[0.0, 0.001, -0.001], Negative).verdict(),
            Verdict::Pass
        );
        // The claimed gap's seeds straddle the margin: undecided, so inconclusive, not fail.
        let s = scattered(&[-0.0003, 0.0072, 0.015], &[0.0; 3], Negative);
        let c = &s.checks()["m.0_greater"];
        assert_eq!(c.outcome, Outcome::Undecided);
        assert!((c.value - 0.0073).abs() < 1e-12, "{}", c.value);
        assert_eq!(s.verdict(), Verdict::Inconclusive);
        let v = s.to_value("E0", "cpu");
        assert_eq!(
            v["checks"]["m.0_greater"]["undecided"].as_bool(),
            Some(true)
        );
        assert_eq!(
            v["checks"]["m.0_greater"]["interval"]
                .as_sequence()
                .map(Vec::len),
            Some(2)
        );
        // Clearly below the margin: fail, when the positive control clearly passes.
        let below = [0.0, 0.001, -0.001];
        assert_eq!(scattered(&below, &clear, Positive).verdict(), Verdict::Fail);
        // A positive control whose seeds straddle the margin cannot show that the profile sees
        // the effect: inconclusive, even though the claimed gap clearly misses.
        let s = scattered(&below, &[0.0103, 0.022, 0.0417], Positive);
        assert_eq!(s.controls()["m.never"].undecided, ["m.0_greater"]);
        assert!(!s.controls()["m.never"].as_required());
        assert_eq!(s.verdict(), Verdict::Inconclusive);
        // A negative control the seeds cannot decide is not rejected.
        let s = scattered(&clear, &[-0.0003, 0.0072, 0.015], Negative);
        assert!(!s.controls()["m.never"].rejected());
        assert_eq!(s.verdict(), Verdict::Inconclusive);
    }
}
