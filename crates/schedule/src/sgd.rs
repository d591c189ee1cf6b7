//! SGD in PyTorch's form (THEORY.md §2) with parameter groups, exponential twins (§3–§5),
//! momentum pre-fill and state IO.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result, ScheduleError};
use crate::schedule::{Schedule, WeightDecay};
use crate::twin::Twin;

/// Which update rule [`Sgd`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SgdVariant {
    /// `torch.optim.SGD`: v = γv + (1−d)(g + λθ) (v starts at g + λθ); θ −= η·v
    /// (Nesterov: θ −= η·(g + λθ + γv)). The form the theorem needs (THEORY.md §2).
    #[default]
    PyTorch,
    /// Heavy ball with the LR inside the buffer: v = γv + η(g + λθ); θ −= v. Not exactly
    /// equivalent when η changes; for ablations only (THEORY.md §2).
    HeavyBall,
}

/// Settings shared by every group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Momentum γ (0 disables the buffer).
    pub momentum: f64,
    /// Dampening d (PyTorch variant only).
    pub dampening: f64,
    /// Nesterov momentum (PyTorch variant only; needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// The update rule.
    pub variant: SgdVariant,
}

impl SgdConfig {
    /// Plain momentum γ, PyTorch form.
    pub fn momentum(momentum: f64) -> Self {
        Self {
            momentum,
            ..Self::default()
        }
    }
}

/// A group's LR: a scale of the optimizer's main schedule, a schedule of its own, or an
/// exponential twin.
#[derive(Clone, Debug)]
pub enum GroupLr {
    /// `scale · main_lr(step)` (1.0: the main schedule itself).
    Scale(f64),
    /// Its own schedule (THEORY.md §1: the head keeps η_t while the scale-invariant group
    /// gets the exponential LR).
    Schedule(Schedule),
    /// The twin's LR, and at the group's updates the twin's momentum pre-fill (first update)
    /// and corrections (THEORY.md §3–§5). The group has no weight decay: the twin replaces it.
    Twin(Twin),
}

impl GroupLr {
    /// The LR of update `step`; a [`GroupLr::Scale`] multiplies `main` (an error without one).
    pub fn lr(&self, main: Option<&Schedule>, step: u64) -> Result<f64> {
        match self {
            GroupLr::Scale(s) => Ok(s * main.ok_or_else(|| no_main_schedule("lr"))?.lr(step)?),
            GroupLr::Schedule(schedule) => schedule.lr(step),
            GroupLr::Twin(twin) => twin.lr(step),
        }
    }
}

/// `field`, a group's LR scale, has no main schedule to scale.
fn no_main_schedule(field: &str) -> ScheduleError {
    invalid(
        field,
        "a scale of the main schedule",
        "a schedule or twin of its own (there is no main schedule)",
    )
}

/// Named variables with their own LR and weight decay.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    /// Group name (for errors and state files).
    pub name: String,
    /// The variables, sorted by name by [`Sgd::new`].
    pub vars: Vec<(String, Var)>,
    /// The group's LR.
    pub lr: GroupLr,
    /// The group's coupled weight decay λ_k (a constant or a schedule).
    pub weight_decay: WeightDecay,
}

impl ParamGroup {
    /// A group on the main schedule (scale 1) without weight decay.
    pub fn new(name: impl Into<String>, vars: Vec<(String, Var)>) -> Self {
        Self {
            name: name.into(),
            vars,
            lr: GroupLr::Scale(1.0),
            weight_decay: WeightDecay::Constant(0.0),
        }
    }

    /// A group on the main schedule over every variable of a candle-nn `VarMap`, named and
    /// sorted as the map names them (so that a saved state finds its variables again).
    pub fn from_varmap(name: impl Into<String>, varmap: &candle_nn::VarMap) -> Self {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Self::new(name, vars)
    }

    /// Keeps only the variables whose name passes `keep` (e.g. the convolutions that feed a
    /// normalization, for a twin; the rest in a second group).
    ///
    /// ```
    /// # use candle_core::{DType, Device};
    /// use explr_schedule::ParamGroup;
    ///
    /// let varmap = candle_nn::VarMap::new();
    /// for name in ["conv1.weight", "conv2.weight", "fc.weight"] {
    ///     varmap.get((2,), name, candle_nn::Init::Const(1.0), DType::F64, &Device::Cpu)?;
    /// }
    /// let convs = ParamGroup::from_varmap("convs", &varmap).only(|n| n.starts_with("conv"));
    /// let rest = ParamGroup::from_varmap("rest", &varmap).only(|n| !n.starts_with("conv"));
    /// assert_eq!((convs.vars.len(), rest.vars.len()), (2, 1));
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn only(mut self, keep: impl Fn(&str) -> bool) -> Self {
        self.vars.retain(|(name, _)| keep(name));
        self
    }

    /// Sets the weight decay: a constant λ, or a [`Schedule`] whose value at update `k` is
    /// λ_k (e.g. divided by 10 at milestones, EXPERIMENTS.md E6).
    pub fn weight_decay(mut self, weight_decay: impl Into<WeightDecay>) -> Self {
        self.weight_decay = weight_decay.into();
        self
    }

    /// Runs the group at `scale` times the main LR.
    pub fn lr_scale(mut self, scale: f64) -> Self {
        self.lr = GroupLr::Scale(scale);
        self
    }

    /// Gives the group its own schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.lr = GroupLr::Schedule(schedule);
        self
    }

    /// Trains the group as the exponential twin `twin`: its LR, its momentum pre-fill and its
    /// corrections (THEORY.md §3–§5). The group must have no weight decay.
    pub fn twin(mut self, twin: Twin) -> Self {
        self.lr = GroupLr::Twin(twin);
        self
    }

    /// Sets the group's LR.
    pub fn lr(mut self, lr: GroupLr) -> Self {
        self.lr = lr;
        self
    }
}

/// SGD over parameter groups. Touches only the variables handed in.
///
/// The LR of update `k` is the group's schedule (or twin) at `k`; the step count is the whole
/// schedule state, so a resumed run needs only the count and the momentum buffers
/// ([`Sgd::save`]).
#[derive(Debug)]
pub struct Sgd {
    /// The schedule of groups on [`GroupLr::Scale`] (absent for [`Sgd::from_groups`]).
    schedule: Option<Schedule>,
    groups: Vec<ParamGroup>,
    config: SgdConfig,
    step: u64,
    buffers: BTreeMap<String, Tensor>,
    /// A learning rate given to `candle_nn::Optimizer::set_learning_rate` that cannot be
    /// applied, with what would be valid: the next [`Sgd::step`] reports it.
    pub(crate) rejected_lr: Option<(f64, &'static str)>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    step: u64,
    config: SgdConfig,
    groups: Vec<GroupState>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupState {
    name: String,
    vars: Vec<String>,
}

const STATE_FORMAT: &str = "explr-schedule/sgd-state/1";

/// What one group does at one update.
struct GroupStep {
    lr: f64,
    weight_decay: f64,
    /// The twin's pre-fill p for a variable without a buffer at update 0 (ṽ_0 = p·θ_0).
    prefill: Option<f64>,
    /// The twin's correction c_k (THEORY.md §5), 0 otherwise.
    correction: f64,
}

impl Sgd {
    /// An optimizer driving `groups`, those on [`GroupLr::Scale`] with the main `schedule`.
    /// Validates the settings (momentum ≥ 0, dampening in [0, 1], Nesterov only with momentum
    /// and no dampening, weight decays ≥ 0, unique variable names, twins only in PyTorch form
    /// without dampening or Nesterov, with the optimizer's momentum and no weight decay) and
    /// sorts each group's variables by name.
    pub fn new(schedule: Schedule, groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Self> {
        Self::with_main(Some(schedule), groups, config)
    }

    /// An optimizer whose groups all have their own schedule or twin (no main schedule);
    /// validated like [`Sgd::new`], and a group on [`GroupLr::Scale`] is an error.
    pub fn from_groups(groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Self> {
        Self::with_main(None, groups, config)
    }

    fn with_main(
        schedule: Option<Schedule>,
        mut groups: Vec<ParamGroup>,
        config: SgdConfig,
    ) -> Result<Self> {
        if !(config.momentum >= 0.0 && config.momentum.is_finite()) {
            return Err(invalid("momentum", config.momentum, "a finite number >= 0"));
        }
        if !(0.0..=1.0).contains(&config.dampening) {
            return Err(invalid("dampening", config.dampening, "a number in [0, 1]"));
        }
        if config.nesterov && (config.momentum == 0.0 || config.dampening != 0.0) {
            return Err(invalid(
                "nesterov",
                true,
                &format!(
                    "Nesterov needs momentum > 0 and dampening 0 (got momentum {}, dampening {})",
                    config.momentum, config.dampening
                ),
            ));
        }
        if config.variant == SgdVariant::HeavyBall && (config.nesterov || config.dampening != 0.0) {
            return Err(invalid(
                "variant",
                "heavy_ball",
                "heavy ball without nesterov and dampening, or variant pytorch",
            ));
        }
        let mut seen = BTreeSet::new();
        for g in groups.iter_mut() {
            g.weight_decay
                .validate(&format!("groups.{}.weight_decay", g.name))?;
            match &g.lr {
                GroupLr::Scale(s) if !(*s >= 0.0 && s.is_finite()) => {
                    return Err(invalid(
                        &format!("groups.{}.lr_scale", g.name),
                        s,
                        "a finite number >= 0",
                    ));
                }
                GroupLr::Scale(_) if schedule.is_none() => {
                    return Err(no_main_schedule(&format!("groups.{}.lr", g.name)))
                }
                GroupLr::Twin(twin) => check_twin_group(g, twin, &config)?,
                _ => {}
            }
            g.vars.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, _) in &g.vars {
                if !seen.insert(name.clone()) {
                    return Err(invalid(
                        "vars",
                        name,
                        "each variable in exactly one group, under a unique name",
                    ));
                }
            }
        }
        Ok(Self {
            schedule,
            groups,
            config,
            step: 0,
            buffers: BTreeMap::new(),
            rejected_lr: None,
        })
    }

    /// Number of updates done so far (the next update uses `lr(step_count())`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The main schedule (of the groups on [`GroupLr::Scale`]), if there is one.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// Replaces the main schedule (the groups on [`GroupLr::Scale`] follow it from the next
    /// update on).
    pub fn set_schedule(&mut self, schedule: Schedule) {
        self.schedule = Some(schedule);
    }

    /// The groups, each with its variables sorted by name.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// The settings.
    pub fn config(&self) -> SgdConfig {
        self.config
    }

    /// The LR the next update applies to group `index`.
    pub fn group_lr(&self, index: usize) -> Result<f64> {
        let g = self.groups.get(index).ok_or_else(|| {
            invalid(
                "group index",
                index,
                &format!("an index below {}", self.groups.len()),
            )
        })?;
        self.lr_of(g, self.step)
    }

    fn lr_of(&self, g: &ParamGroup, step: u64) -> Result<f64> {
        g.lr.lr(self.schedule.as_ref(), step)
    }

    fn group_step(&self, g: &ParamGroup) -> Result<GroupStep> {
        let (prefill, correction) = match &g.lr {
            GroupLr::Twin(twin) => (
                (self.step == 0).then(|| twin.prefill_coefficient()),
                twin.correction(self.step)?,
            ),
            GroupLr::Scale(_) | GroupLr::Schedule(_) => (None, 0.0),
        };
        Ok(GroupStep {
            lr: self.lr_of(g, self.step)?,
            weight_decay: g.weight_decay.at(self.step)?,
            prefill,
            correction,
        })
    }

    /// The momentum buffer of variable `name`, once it exists.
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.get(name)
    }

    /// Pre-fills the momentum buffer of every variable in the named groups (all groups when
    /// `groups` is empty) with `coefficient · θ` (THEORY.md §3: ṽ_0 = (α−1)θ_0/(αη), for a
    /// plain exponential schedule; a group on a [`Twin`] is pre-filled by the twin).
    pub fn prefill_momentum(&mut self, coefficient: f64, groups: &[&str]) -> Result<()> {
        for name in groups {
            if !self.groups.iter().any(|g| g.name == *name) {
                return Err(invalid(
                    "groups",
                    name,
                    "the name of one of this optimizer's groups",
                ));
            }
        }
        for g in &self.groups {
            if groups.is_empty() || groups.contains(&g.name.as_str()) {
                for (name, var) in &g.vars {
                    let v = var.as_tensor().detach();
                    self.buffers
                        .insert(name.clone(), v.affine(coefficient, 0.0)?);
                }
            }
        }
        Ok(())
    }

    /// One update of every variable that has a gradient in `grads` (variables without one
    /// are skipped, like PyTorch's `grad is None`). Increments the step count.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        if let Some((value, expected)) = self.rejected_lr {
            return Err(invalid("learning_rate", value, expected));
        }
        let c = self.config;
        let steps = self
            .groups
            .iter()
            .map(|g| self.group_step(g))
            .collect::<Result<Vec<_>>>()?;
        for (g, s) in self.groups.iter().zip(steps) {
            for (name, var) in &g.vars {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                let theta = var.as_tensor().detach();
                let grad = grad.detach();
                // THEORY.md §2: d = g + λθ (coupled weight decay).
                let d_p = if s.weight_decay != 0.0 {
                    (&grad + theta.affine(s.weight_decay, 0.0)?)?
                } else {
                    grad
                };
                let new = match c.variant {
                    SgdVariant::PyTorch => {
                        let dir = if c.momentum != 0.0 {
                            let previous = match (self.buffers.get(name), s.prefill) {
                                (Some(b), _) => Some(b.clone()),
                                // THEORY.md §3: a twin starts from ṽ_0 = p·θ_0.
                                (None, Some(p)) => Some(theta.affine(p, 0.0)?),
                                (None, None) => None,
                            };
                            let mut buf = match previous {
                                None => d_p.copy()?,
                                // ×(1 − 0) is exact, so the undamped case skips that pass.
                                Some(b) if c.dampening == 0.0 => {
                                    (b.affine(c.momentum, 0.0)? + &d_p)?
                                }
                                Some(b) => {
                                    (b.affine(c.momentum, 0.0)?
                                        + d_p.affine(1.0 - c.dampening, 0.0)?)?
                                }
                            };
                            if s.correction != 0.0 {
                                // THEORY.md §5: ṽ ← ṽ + c_k·θ̃_k after the momentum update.
                                buf = (buf + theta.affine(s.correction, 0.0)?)?;
                            }
                            let dir = if c.nesterov {
                                (&d_p + buf.affine(c.momentum, 0.0)?)?
                            } else {
                                buf.clone()
                            };
                            self.buffers.insert(name.clone(), buf);
                            dir
                        } else if s.correction != 0.0 {
                            (d_p + theta.affine(s.correction, 0.0)?)?
                        } else {
                            d_p
                        };
                        // θ ← θ − η·d
                        (&theta + dir.affine(-s.lr, 0.0)?)?
                    }
                    SgdVariant::HeavyBall => {
                        let step = d_p.affine(s.lr, 0.0)?;
                        let buf = match self.buffers.get(name) {
                            Some(b) if c.momentum != 0.0 => (b.affine(c.momentum, 0.0)? + step)?,
                            _ => step,
                        };
                        let new = (&theta - &buf)?;
                        if c.momentum != 0.0 {
                            self.buffers.insert(name.clone(), buf);
                        }
                        new
                    }
                };
                var.set(&new)?;
            }
        }
        self.step += 1;
        Ok(())
    }

    /// Writes the state: momentum buffers to `path` (safetensors, under the variables'
    /// names) and the step count and settings to `path` with extension `json`, each written
    /// to a temporary sibling and renamed into place.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = safetensors::serialize(self.buffers.iter().map(|(k, v)| (k.as_str(), v)), None)
            .map_err(|e| ScheduleError::NotSafetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        explr_io::write_atomic(path, &bytes)?;
        let state = StateFile {
            format: STATE_FORMAT.to_string(),
            step: self.step,
            config: self.config,
            groups: self
                .groups
                .iter()
                .map(|g| GroupState {
                    name: g.name.clone(),
                    vars: g.vars.iter().map(|(n, _)| n.clone()).collect(),
                })
                .collect(),
        };
        let json_path = path.with_extension("json");
        let text = serde_json::to_string_pretty(&state).map_err(|source| ScheduleError::Json {
            path: json_path.clone(),
            source,
        })?;
        Ok(explr_io::write_atomic(&json_path, text.as_bytes())?)
    }

    /// Restores a state written by [`Sgd::save`]: step count and momentum buffers (converted
    /// to each variable's dtype and device). The settings and the group/variable names must
    /// match this optimizer's.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let json_path = path.with_extension("json");
        let text =
            std::fs::read_to_string(&json_path).map_err(explr_io::err("reading", &json_path))?;
        let state: StateFile =
            serde_json::from_str(&text).map_err(|source| ScheduleError::Json {
                path: json_path.clone(),
                source,
            })?;
        let mismatch = |what: &str, saved: String, current: String| ScheduleError::StateMismatch {
            path: json_path.clone(),
            what: what.to_string(),
            saved,
            current,
        };
        if state.format != STATE_FORMAT {
            return Err(mismatch("format", state.format, STATE_FORMAT.to_string()));
        }
        if state.config != self.config {
            return Err(mismatch(
                "the optimizer config",
                format!("{:?}", state.config),
                format!("{:?}", self.config),
            ));
        }
        let current: Vec<(String, Vec<String>)> = self
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.vars.iter().map(|(n, _)| n.clone()).collect(),
                )
            })
            .collect();
        let saved: Vec<(String, Vec<String>)> =
            state.groups.into_iter().map(|g| (g.name, g.vars)).collect();
        if saved != current {
            return Err(mismatch(
                "the groups and their variables",
                format!("{saved:?}"),
                format!("{current:?}"),
            ));
        }
        let vars: BTreeMap<&str, &Var> = self
            .groups
            .iter()
            .flat_map(|g| g.vars.iter().map(|(n, v)| (n.as_str(), v)))
            .collect();
        let mut buffers = BTreeMap::new();
        let device = vars
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let bytes = std::fs::read(path).map_err(explr_io::err("reading", path))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &device).map_err(|e| {
            ScheduleError::NotSafetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        for (name, t) in tensors {
            let var = vars.get(name.as_str()).ok_or_else(|| {
                mismatch(
                    "a momentum buffer",
                    name.clone(),
                    "no such variable".to_string(),
                )
            })?;
            if t.dims() != var.dims() {
                return Err(mismatch(
                    &format!("the shape of `{name}`"),
                    format!("{:?}", t.dims()),
                    format!("{:?}", var.dims()),
                ));
            }
            buffers.insert(name, t.to_dtype(var.dtype())?.to_device(var.device())?);
        }
        self.buffers = buffers;
        self.step = state.step;
        Ok(())
    }
}

/// A twin group trains in PyTorch's form without dampening or Nesterov (THEORY.md §2), with
/// the twin's momentum and no weight decay of its own.
fn check_twin_group(g: &ParamGroup, twin: &Twin, config: &SgdConfig) -> Result<()> {
    let field = format!("groups.{}.twin", g.name);
    if config.variant != SgdVariant::PyTorch || config.nesterov || config.dampening != 0.0 {
        return Err(invalid(
            &field,
            format!("{:?}", config),
            "variant pytorch without dampening or Nesterov (the form the equivalence needs, THEORY.md §2)",
        ));
    }
    if twin.momentum() != config.momentum {
        return Err(invalid(
            &field,
            format!("a twin for momentum {}", twin.momentum()),
            &format!("a twin for this optimizer's momentum {}", config.momentum),
        ));
    }
    if !g.weight_decay.is_zero() {
        return Err(invalid(
            &format!("groups.{}.weight_decay", g.name),
            format!("{:?}", g.weight_decay),
            "0: a twin group has no weight decay (the twin replaces it)",
        ));
    }
    Ok(())
}
