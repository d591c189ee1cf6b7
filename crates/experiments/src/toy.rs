//! The toy example of THEORY.md §7: logistic regression where BN alone or WD alone converges,
//! but BN + WD does not.
//!
//! Data: x ~ N(0, I_m), y = sign(x₁), loss ln(1 + e^(−y·u)), plain gradient descent (no
//! momentum). Three variants: WD only (u = xᵀw, λ > 0), BN only (u = xᵀw/‖w‖, λ = 0), BN + WD.
//! The train error of any w is (1/π)·arccos(w₁/‖w‖) (THEORY.md §7), so no test set is sampled.
//!
//! *Population* gradients are exact expectations: starting in span(e₁, e₂), w stays there and the
//! margin y·u = v₁·|x₁| + v₂·g with g ~ N(0, 1) independent of |x₁|, so the expectation is a 2-D
//! integral computed by fixed quadrature. *Minibatch* gradients draw x from a seeded ChaCha8 RNG.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::error::ExperimentError;
pub use super::error::ToyError;
use explr_io::write_atomic;
use explr_manifest::spec::Toy;
pub use explr_manifest::spec::ToyConfig;
use explr_results::plot::{Chart, Series};
use explr_results::summary::Summary;
use explr_train::context::Progress;

/// Which of the three toy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ToyVariant {
    /// u = xᵀw with weight decay: strongly convex.
    WdOnly,
    /// u = xᵀw/‖w‖ without weight decay: scale invariant.
    BnOnly,
    /// u = xᵀw/‖w‖ with weight decay: does not converge.
    BnWd,
}

impl ToyVariant {
    /// Every variant, in report order.
    pub const ALL: [ToyVariant; 3] = [ToyVariant::WdOnly, ToyVariant::BnOnly, ToyVariant::BnWd];

    /// snake_case name used in result files.
    pub fn as_str(self) -> &'static str {
        match self {
            ToyVariant::WdOnly => "wd_only",
            ToyVariant::BnOnly => "bn_only",
            ToyVariant::BnWd => "bn_wd",
        }
    }

    fn normalized(self) -> bool {
        !matches!(self, ToyVariant::WdOnly)
    }

    fn decays(self) -> bool {
        !matches!(self, ToyVariant::BnOnly)
    }
}

/// What a toy run records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToyTrace {
    /// Steps at which the trace was recorded.
    pub step: Vec<usize>,
    /// Train error (1/π)·arccos(w₁/‖w‖).
    pub error: Vec<f64>,
    /// ln‖w‖.
    pub log_norm: Vec<f64>,
}

/// Train error of the linear classifier sign(xᵀw) against y = sign(x₁) under x ~ N(0, I).
pub fn train_error(w: &[f64]) -> f64 {
    let norm = dot(w, w).sqrt();
    (w[0] / norm).clamp(-1.0, 1.0).acos() / std::f64::consts::PI
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Quadrature for E over s = |x₁| (half-normal, Simpson on [0, 8]) and g ~ N(0, 1)
/// (trapezoid on [−8, 8], exponentially accurate for smooth Gaussian integrands).
struct Quadrature {
    nodes: Vec<(f64, f64, f64)>, // (s, g, weight)
}

impl Quadrature {
    fn new() -> Self {
        let phi = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let (ns, hs) = (80usize, 0.1);
        let s_nodes: Vec<(f64, f64)> = (0..=ns)
            .map(|i| {
                let s = i as f64 * hs;
                let simpson = if i == 0 || i == ns {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                (s, simpson * hs / 3.0 * 2.0 * phi(s))
            })
            .collect();
        let hg = 0.25;
        let g_nodes: Vec<(f64, f64)> = (-32..=32)
            .map(|j| {
                let g = j as f64 * hg;
                (g, hg * phi(g))
            })
            .collect();
        let nodes = s_nodes
            .iter()
            .flat_map(|&(s, ws)| g_nodes.iter().map(move |&(g, wg)| (s, g, ws * wg)))
            .collect();
        Self { nodes }
    }

    /// ∇_v E[ln(1 + e^(−m))] with m = v₁·s + v₂·g.
    fn gradient(&self, v: [f64; 2]) -> [f64; 2] {
        let mut grad = [0.0; 2];
        for &(s, g, w) in &self.nodes {
            let coeff = -sigmoid(-(v[0] * s + v[1] * g)) * w;
            grad[0] += coeff * s;
            grad[1] += coeff * g;
        }
        grad
    }
}

/// Runs one toy variant and returns its trace.
pub fn simulate(cfg: &ToyConfig, variant: ToyVariant) -> Result<ToyTrace, ToyError> {
    cfg.check()
        .map_err(|(field, message)| ToyError::Invalid { field, message })?;
    let dim = if cfg.batch_size.is_some() { cfg.dim } else { 2 };
    let mut w = vec![0.0; dim];
    for (dst, src) in w.iter_mut().zip(&cfg.w0) {
        *dst = *src;
    }
    let lambda = if variant.decays() {
        cfg.weight_decay
    } else {
        0.0
    };
    let quadrature = Quadrature::new();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut trace = ToyTrace::default();
    let record = |step: usize, w: &[f64], trace: &mut ToyTrace| {
        trace.step.push(step);
        trace.error.push(train_error(w));
        trace.log_norm.push(dot(w, w).sqrt().ln());
    };
    record(0, &w, &mut trace);
    for step in 1..=cfg.steps {
        let norm = dot(&w, &w).sqrt();
        let v: Vec<f64> = if variant.normalized() {
            w.iter().map(|x| x / norm).collect()
        } else {
            w.clone()
        };
        // ∇ of the data loss with respect to v = u's weight vector.
        let grad_v = match cfg.batch_size {
            None => quadrature.gradient([v[0], v[1]]).to_vec(),
            Some(b) => minibatch_gradient(&v, b, &mut rng),
        };
        // Chain rule through v = w/‖w‖ (THEORY.md §1: the gradient is orthogonal to w and
        // scales as 1/‖w‖).
        let grad_w: Vec<f64> = if variant.normalized() {
            let radial = dot(&grad_v, &v);
            grad_v
                .iter()
                .zip(&v)
                .map(|(g, vi)| (g - radial * vi) / norm)
                .collect()
        } else {
            grad_v
        };
        for (wi, gi) in w.iter_mut().zip(&grad_w) {
            *wi -= cfg.lr * (gi + lambda * *wi);
        }
        if step % cfg.record_every == 0 || step == cfg.steps {
            record(step, &w, &mut trace);
        }
    }
    Ok(trace)
}

fn minibatch_gradient(v: &[f64], batch: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut grad = vec![0.0; v.len()];
    let mut x = vec![0.0; v.len()];
    for _ in 0..batch {
        for xi in x.iter_mut() {
            *xi = StandardNormal.sample(rng);
        }
        let y = if x[0] >= 0.0 { 1.0 } else { -1.0 };
        let coeff = -sigmoid(-y * dot(&x, v)) * y / batch as f64;
        for (g, xi) in grad.iter_mut().zip(&x) {
            *g += coeff * xi;
        }
    }
    grad
}

fn write_csv(
    path: &Path,
    header: &str,
    rows: impl Iterator<Item = String>,
) -> Result<(), ExperimentError> {
    let mut text = String::from(header);
    text.push('\n');
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    Ok(write_atomic(path, text.as_bytes())?)
}

fn write_figure(
    dir: &Path,
    name: &str,
    chart: &Chart,
    figures: &mut Vec<PathBuf>,
) -> Result<(), ExperimentError> {
    let path = dir.join(format!("{name}.svg"));
    write_atomic(&path, chart.to_svg().as_bytes())?;
    figures.push(path);
    Ok(())
}

/// Upward crossings of `level` by the error after step `from`.
fn jumps(trace: &ToyTrace, from: usize, level: f64) -> usize {
    (1..trace.error.len())
        .filter(|&i| trace.step[i] > from && trace.error[i] > level && trace.error[i - 1] <= level)
        .count()
}

/// Mean error over the last fifth of the recorded trace.
fn tail_error(trace: &ToyTrace) -> f64 {
    let n = trace.error.len();
    let tail = &trace.error[n - (n / 5).max(1)..];
    tail.iter().sum::<f64>() / tail.len() as f64
}

/// T1 (THEORY.md §7): WD alone or BN alone converges, BN + WD keeps jumping back up.
pub fn run_toy(
    spec: &Toy,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<(Summary, Vec<PathBuf>), ExperimentError> {
    let mut summary = Summary::default();
    let mut figures = Vec::new();
    for (regime, cfg) in [
        ("population", &spec.population),
        ("minibatch", &spec.minibatch),
    ] {
        let traces = run_variants(regime, cfg, dir, progress)?;
        let warmup = cfg.steps / 4;
        record_metrics(&mut summary, regime, warmup, &traces);
        record_checks(&mut summary, regime, warmup, &traces);
        write_figures(dir, regime, &traces, &mut figures)?;
    }
    Ok((summary, figures))
}

/// Runs every variant of one regime, each trace written to `<regime>/<variant>.csv`.
fn run_variants(
    regime: &str,
    cfg: &ToyConfig,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Vec<(ToyVariant, ToyTrace)>, ExperimentError> {
    let mut traces = Vec::new();
    for variant in ToyVariant::ALL {
        let key = format!("{regime}/{}", variant.as_str());
        progress.start(&key, cfg.steps as u64);
        let trace = simulate(cfg, variant)?;
        let rows = (0..trace.step.len()).map(|i| {
            format!(
                "{},{:e},{:e}",
                trace.step[i], trace.error[i], trace.log_norm[i]
            )
        });
        write_csv(
            &dir.join(&key).with_extension("csv"),
            "step,train_error,log_norm",
            rows,
        )?;
        progress.finish(
            &key,
            &format!(
                "final error {:.4}",
                trace.error.last().copied().unwrap_or(f64::NAN)
            ),
        );
        traces.push((variant, trace));
    }
    Ok(traces)
}

/// The numbers of each variant of one regime (jumps after `warmup` for the population one).
fn record_metrics(
    summary: &mut Summary,
    regime: &str,
    warmup: usize,
    traces: &[(ToyVariant, ToyTrace)],
) {
    for (variant, trace) in traces {
        let name = format!("{regime}.{}", variant.as_str());
        summary.metric(
            format!("{name}.final_error"),
            *trace.error.last().unwrap_or(&f64::NAN),
        );
        summary.metric(format!("{name}.tail_error"), tail_error(trace));
        summary.metric(
            format!("{name}.final_log_norm"),
            *trace.log_norm.last().unwrap_or(&f64::NAN),
        );
        summary.metric(
            format!("{name}.max_error_after_warmup"),
            trace
                .error
                .iter()
                .zip(&trace.step)
                .filter(|(_, s)| **s > warmup)
                .map(|(e, _)| *e)
                .fold(0.0, f64::max),
        );
        if regime == "population" {
            summary.count(format!("{name}.error_jumps"), jumps(trace, warmup, 0.05));
        }
    }
}

/// The checks of one regime: with population gradients WD only and BN only converge and
/// BN + WD keeps jumping; with minibatches BN + WD has the higher error floor.
fn record_checks(
    summary: &mut Summary,
    regime: &str,
    warmup: usize,
    traces: &[(ToyVariant, ToyTrace)],
) {
    let get = |v: ToyVariant| {
        &traces
            .iter()
            .find(|(x, _)| *x == v)
            .expect("all variants ran")
            .1
    };
    if regime == "population" {
        summary.check_le(
            "population_wd_only_converges",
            "WD only: final train error",
            *get(ToyVariant::WdOnly).error.last().unwrap_or(&1.0),
            0.01,
        );
        summary.check_le(
            "population_bn_only_converges",
            "BN only: final train error",
            *get(ToyVariant::BnOnly).error.last().unwrap_or(&1.0),
            0.01,
        );
        summary.check_ge(
            "population_bn_wd_keeps_jumping",
            "BN + WD: error jumps above 0.05 after the first quarter",
            jumps(get(ToyVariant::BnWd), warmup, 0.05) as f64,
            2.0,
        );
    } else {
        let others = tail_error(get(ToyVariant::WdOnly)).max(tail_error(get(ToyVariant::BnOnly)));
        summary.check_ge(
            "minibatch_bn_wd_has_higher_error_floor",
            "BN + WD tail error over the larger of WD-only and BN-only",
            tail_error(get(ToyVariant::BnWd)) / others,
            1.5,
        );
    }
}

/// The train error and ln ‖w‖ figures of one regime.
fn write_figures(
    dir: &Path,
    regime: &str,
    traces: &[(ToyVariant, ToyTrace)],
    figures: &mut Vec<PathBuf>,
) -> Result<(), ExperimentError> {
    let series = |f: fn(&ToyTrace) -> &Vec<f64>| -> Vec<Series> {
        traces
            .iter()
            .map(|(v, t)| {
                let points = t.step.iter().map(|s| *s as f64).zip(f(t).iter().copied());
                Series::line(v.as_str(), points.collect())
            })
            .collect()
    };
    write_figure(
        dir,
        &format!("{regime}-train-error"),
        &Chart {
            title: format!("T1 toy example ({regime}): train error"),
            x_label: "step".into(),
            y_label: "train error".into(),
            log_y: false,
            log_x: false,
            series: series(|t| &t.error),
            markers: Vec::new(),
        },
        figures,
    )?;
    write_figure(
        dir,
        &format!("{regime}-log-norm"),
        &Chart {
            title: format!("T1 toy example ({regime}): ln ‖w‖"),
            x_label: "step".into(),
            y_label: "ln ‖w‖".into(),
            log_y: false,
            log_x: false,
            series: series(|t| &t.log_norm),
            markers: Vec::new(),
        },
        figures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn population(steps: usize) -> ToyConfig {
        ToyConfig {
            lr: 0.1,
            weight_decay: 0.01,
            steps,
            w0: vec![0.2, 1.0],
            dim: 2,
            batch_size: None,
            seed: 0,
            record_every: 100,
        }
    }

    #[test]
    fn train_error_is_the_angle_over_pi() {
        assert!(train_error(&[1.0, 0.0]).abs() < 1e-15);
        assert!((train_error(&[0.0, 1.0]) - 0.5).abs() < 1e-15);
        assert!((train_error(&[-1.0, 0.0]) - 1.0).abs() < 1e-15);
        assert!((train_error(&[1.0, 1.0]) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn quadrature_gradient_matches_monte_carlo() {
        let q = Quadrature::new();
        let v = [0.7, -0.4];
        let exact = q.gradient(v);
        let mc = minibatch_gradient(&v, 400_000, &mut ChaCha8Rng::seed_from_u64(3));
        for k in 0..2 {
            assert!((exact[k] - mc[k]).abs() < 3e-3, "{exact:?} vs {mc:?}");
        }
    }

    #[test]
    fn bn_gradient_is_orthogonal_so_bn_only_norm_never_shrinks() {
        let trace = simulate(&population(3000), ToyVariant::BnOnly).unwrap();
        assert!(trace.log_norm.windows(2).all(|p| p[1] >= p[0] - 1e-15));
        assert!(
            *trace.error.last().unwrap() < 0.02,
            "{:?}",
            trace.error.last()
        );
    }

    #[test]
    fn wd_only_converges() {
        let trace = simulate(&population(3000), ToyVariant::WdOnly).unwrap();
        assert!(
            *trace.error.last().unwrap() < 1e-3,
            "{:?}",
            trace.error.last()
        );
    }

    #[test]
    fn bn_with_wd_error_jumps_back_up_repeatedly() {
        let mut cfg = population(8000);
        cfg.record_every = 1;
        let bn_wd = simulate(&cfg, ToyVariant::BnWd).unwrap();
        let bn_only = simulate(&cfg, ToyVariant::BnOnly).unwrap();
        assert!(
            jumps(&bn_wd, 3000, 0.05) >= 2,
            "BN + WD should keep jumping"
        );
        assert_eq!(
            jumps(&bn_only, 3000, 0.01),
            0,
            "BN alone should stay converged"
        );
        // Between jumps WD shrinks ‖w‖ while the effective LR η/‖w‖² grows (THEORY.md §7).
        let max_norm = bn_wd.log_norm[3000..]
            .iter()
            .cloned()
            .fold(f64::MIN, f64::max);
        assert!(max_norm < bn_wd.log_norm[0] - 1.0, "{max_norm}");
    }

    #[test]
    fn invalid_configs_are_errors() {
        let mut c = population(10);
        c.lr = -1.0;
        assert!(matches!(
            simulate(&c, ToyVariant::BnWd),
            Err(ToyError::Invalid { field: "lr", .. })
        ));
        let mut c = population(10);
        c.w0 = vec![0.0, 0.0];
        assert!(simulate(&c, ToyVariant::BnWd).is_err());
        let mut c = population(10);
        c.batch_size = Some(0);
        assert!(simulate(&c, ToyVariant::BnWd).is_err());
    }
}
