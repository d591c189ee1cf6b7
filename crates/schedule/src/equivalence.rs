//! The equivalence checker: a weight-decay run beside its exponential twin.

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};
use serde::Serialize;

use crate::error::{invalid, Result};
use crate::sgd::Sgd;

/// Something that computes the loss and the gradients for a set of variables: a closure over
/// a toy objective, or a network's forward + backward.
pub trait Objective {
    /// Loss and gradients at the current values of `vars` (the variables of the optimizer
    /// this objective drives) before update `step`.
    fn loss_and_grads(
        &mut self,
        step: u64,
        vars: &[(String, Var)],
    ) -> candle_core::Result<(f64, GradStore)>;
}

impl<F> Objective for F
where
    F: FnMut(u64, &[(String, Var)]) -> candle_core::Result<(f64, GradStore)>,
{
    fn loss_and_grads(
        &mut self,
        step: u64,
        vars: &[(String, Var)],
    ) -> candle_core::Result<(f64, GradStore)> {
        self(step, vars)
    }
}

/// The comparison after `step` updates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StepDeviation {
    /// Updates done.
    pub step: u64,
    /// The scale P_t applied to the weight-decay run.
    pub scale: f64,
    /// ‖P_t·θ_t − θ̃_t‖ / ‖θ̃_t‖ over the compared variables.
    pub deviation: f64,
    /// The angle (radians) between θ_t and θ̃_t.
    pub angle: f64,
    /// Loss of the weight-decay run before this step's update (NaN at the final row).
    pub loss: f64,
    /// Loss of the twin before this step's update (NaN at the final row).
    pub twin_loss: f64,
}

/// Per-step comparison of the two runs (row 0: the initial weights).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EquivalenceReport {
    /// One row per step, 0..=steps.
    pub rows: Vec<StepDeviation>,
}

impl EquivalenceReport {
    /// The largest relative deviation over all steps.
    pub fn max_deviation(&self) -> f64 {
        self.rows.iter().map(|r| r.deviation).fold(0.0, f64::max)
    }

    /// The largest angle over all steps.
    pub fn max_angle(&self) -> f64 {
        self.rows.iter().map(|r| r.angle).fold(0.0, f64::max)
    }
}

/// What to compare and for how long.
pub struct CheckOptions<'a> {
    /// Number of updates of each run.
    pub steps: u64,
    /// P_t for t = 0..=steps (e.g. `|t| twin.scale(t)` for a [`Twin`](crate::Twin)).
    pub scale: &'a dyn Fn(u64) -> Result<f64>,
    /// Names of the variables compared (present in both optimizers); empty: every variable
    /// of the weight-decay run.
    pub compare: Vec<String>,
}

fn all_vars(sgd: &Sgd) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = sgd
        .groups()
        .iter()
        .flat_map(|g| g.vars.iter().cloned())
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn dot(a: &Var, b: &Var) -> Result<f64> {
    let a = a.as_tensor().detach().to_dtype(DType::F64)?;
    let b = b.as_tensor().detach().to_dtype(DType::F64)?;
    Ok((a * b)?.sum_all()?.to_scalar::<f64>()?)
}

/// Deviation and angle of `p·a` against `b` over paired variables, summed in sorted order.
fn compare_pairs(pairs: &[(Var, Var)], p: f64) -> Result<(f64, f64)> {
    let (mut aa, mut bb) = (0.0, 0.0);
    for (a, b) in pairs {
        aa += dot(a, a)?;
        bb += dot(b, b)?;
    }
    // ‖p·a − b‖ is summed from the differences (expanding the square cancels badly).
    let mut diff = 0.0;
    let (mut d_unit, mut s_unit) = (0.0, 0.0);
    let (na, nb) = (aa.sqrt(), bb.sqrt());
    for (a, b) in pairs {
        let a = a.as_tensor().detach().to_dtype(DType::F64)?;
        let b = b.as_tensor().detach().to_dtype(DType::F64)?;
        diff += (a.affine(p, 0.0)? - &b)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
        let (ua, ub) = (a.affine(1.0 / na, 0.0)?, b.affine(1.0 / nb, 0.0)?);
        d_unit += (&ua - &ub)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        s_unit += (&ua + &ub)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    // Angle via 2·atan2(‖â − b̂‖, ‖â + b̂‖): accurate for tiny angles, unlike acos.
    Ok((diff.sqrt() / nb, 2.0 * d_unit.sqrt().atan2(s_unit.sqrt())))
}

/// Runs `reference` (the weight-decay run) and `twin` (its exponential counterpart) side by
/// side for `options.steps` updates and reports, per step, ‖P_t·θ_t − θ̃_t‖/‖θ̃_t‖ and the
/// angle between θ_t and θ̃_t (THEORY.md §3–§6). [`check_equivalences`] with one twin.
pub fn check_equivalence<A: Objective, B: Objective>(
    reference: &mut Sgd,
    reference_objective: &mut A,
    twin: &mut Sgd,
    twin_objective: &mut B,
    options: &CheckOptions<'_>,
) -> Result<EquivalenceReport> {
    let mut twins = [TwinRun {
        sgd: twin,
        objective: twin_objective,
        scale: options.scale,
    }];
    let reports = check_equivalences(
        reference,
        reference_objective,
        &mut twins,
        options.steps,
        &options.compare,
    )?;
    Ok(reports.into_iter().next().unwrap_or_default())
}

/// One exponential twin of a [`check_equivalences`] run: its optimizer, its objective and its
/// own P_t.
pub struct TwinRun<'a> {
    /// The twin's optimizer (no weight decay).
    pub sgd: &'a mut Sgd,
    /// Loss and gradients of the twin's network.
    pub objective: &'a mut dyn Objective,
    /// P_t for t = 0..=steps, by which the weight-decay run is rescaled for this twin.
    pub scale: &'a dyn Fn(u64) -> Result<f64>,
}

/// Runs `reference` (the weight-decay run) and every one of `twins` side by side for `steps`
/// updates, the reference trained once for all of them, and reports for each twin, in order,
/// what [`check_equivalence`] reports for the pair: per step, ‖P_t·θ_t − θ̃_t‖/‖θ̃_t‖ (each twin
/// with its own P_t) and the angle between θ_t and θ̃_t, over the variables named in `compare`
/// (empty: every variable of the reference). Each run's updates are those it would make alone.
pub fn check_equivalences(
    reference: &mut Sgd,
    reference_objective: &mut dyn Objective,
    twins: &mut [TwinRun<'_>],
    steps: u64,
    compare: &[String],
) -> Result<Vec<EquivalenceReport>> {
    let ref_vars = all_vars(reference);
    let names: Vec<String> = if compare.is_empty() {
        ref_vars.iter().map(|(n, _)| n.clone()).collect()
    } else {
        compare.to_vec()
    };
    let find = |vars: &[(String, Var)], n: &str, which: &str| {
        vars.iter()
            .find(|(m, _)| m == n)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                invalid(
                    "compare",
                    n,
                    &format!("a variable of the {which} optimizer"),
                )
            })
    };
    if names.is_empty() {
        return Err(invalid("compare", "[]", "at least one variable to compare"));
    }
    // Per twin: its variables, and the (reference, twin) pairs compared.
    let mut paired = Vec::with_capacity(twins.len());
    for twin in twins.iter() {
        let twin_vars = all_vars(twin.sgd);
        let pairs = names
            .iter()
            .map(|n| {
                Ok((
                    find(&ref_vars, n, "reference")?,
                    find(&twin_vars, n, "twin")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        paired.push((twin_vars, pairs));
    }
    let mut reports: Vec<EquivalenceReport> = (0..twins.len())
        .map(|_| EquivalenceReport {
            rows: Vec::with_capacity(steps as usize + 1),
        })
        .collect();
    for t in 0..=steps {
        let mut rows = Vec::with_capacity(twins.len());
        for (twin, (_, pairs)) in twins.iter().zip(&paired) {
            let p = (twin.scale)(t)?;
            let (deviation, angle) = compare_pairs(pairs, p)?;
            rows.push(StepDeviation {
                step: t,
                scale: p,
                deviation,
                angle,
                loss: f64::NAN,
                twin_loss: f64::NAN,
            });
        }
        if t < steps {
            let (loss, g) = reference_objective.loss_and_grads(t, &ref_vars)?;
            reference.step(&g)?;
            for ((twin, (vars, _)), row) in twins.iter_mut().zip(&paired).zip(&mut rows) {
                let (twin_loss, g) = twin.objective.loss_and_grads(t, vars)?;
                twin.sgd.step(&g)?;
                (row.loss, row.twin_loss) = (loss, twin_loss);
            }
        }
        for (report, row) in reports.iter_mut().zip(rows) {
            report.rows.push(row);
        }
    }
    Ok(reports)
}
