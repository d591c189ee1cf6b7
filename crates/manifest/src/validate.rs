//! Everything a run would reject, rejected when the manifest is parsed, so that `--dry-run` can
//! be trusted: each rule builds what the run builds (models, schedules, optimizer plans) with
//! the same constructors, from the same values.
//!
//! [`validate`] collects every problem it finds as a [`FieldError`] (a dotted field path and a
//! message); the manifest layer locates each in the file and reports the first by line, so the
//! user sees the problem nearest the top of what they edited. A derived run is planned only
//! when its base run is valid, so an error in the base is reported at the base.
//!
//! Validation costs the same whatever the manifest's numbers: every count that sizes work or
//! memory (epochs, updates, images, a model's parameters) is held to a stated limit
//! ([`MAX_EPOCHS`], [`MAX_UPDATES`], [`max_sizes`], [`MAX_PARAMS`], [`MAX_RESNET_DEPTH`])
//! before anything is built or looped over, and arithmetic on those numbers is checked. The
//! limits are generous for the paper's scale (docs/MANIFESTS.md, "Limits").

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device};
use explr_nn::ParamStore;
use explr_schedule::GroupLr;
use explr_zoo::{Model, ModelSpec};

use explr_data::DatasetName;
use explr_zoo::Arch;

use crate::dataset::{full_sizes, sizes, steps_per_epoch};
use crate::plan::{self, PlanError};
use crate::spec::{
    Check, DataSection, Exactness, Experiment, FieldError, Manifest, RunSpec, ScaleInvariance,
    ScheduleSection, SlurmSection, Toy, Training,
};

/// Most epochs a training manifest may ask for (the paper trains 160).
pub const MAX_EPOCHS: usize = 10_000;

pub use crate::spec::MAX_UPDATES;

/// Most parameters a model may have, counted from its spec before it is built (VGG-19 at the
/// reference width 64 has about 20 million).
pub const MAX_PARAMS: u64 = 50_000_000;

/// Deepest ResNet or PreResNet (6k+2) a model may be: ResNet-1202, the deepest of He et al.
pub const MAX_RESNET_DEPTH: usize = 1202;

/// The synthetic twin's largest splits: CIFAR's published sizes.
pub const SYNTHETIC_MAX_SIZES: (usize, usize) = (50_000, 10_000);

/// Most images a data section may ask for, as (train, test): the published splits of CIFAR
/// ([`full_sizes`]), [`SYNTHETIC_MAX_SIZES`] for the synthetic twin.
pub fn max_sizes(dataset: DatasetName) -> (usize, usize) {
    match dataset {
        DatasetName::Synthetic => SYNTHETIC_MAX_SIZES,
        other => full_sizes(other),
    }
}

/// Why `id` cannot name a claim: empty, or more than letters, digits, `-` and `_` (an id
/// names its file and the folders of its results).
pub fn id_problem(id: &str) -> Option<String> {
    if id.trim().is_empty() {
        return Some("must not be empty (e.g. `E3`)".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Some(format!(
            "`{id}` is not a name: an id names its manifest file and its results' folders, so \
             use only letters, digits, `-` and `_` (e.g. `E3`)"
        ));
    }
    None
}

/// Every problem of `m` (empty when it is valid).
pub fn validate(m: &Manifest) -> Vec<FieldError> {
    let mut errors = Errors::default();
    if let Some(problem) = id_problem(&m.id) {
        errors.push("id", problem);
    }
    if let Some(t) = m.golden_tolerance {
        if !(t > 0.0 && t < 1.0) {
            errors.push(
                "golden_tolerance",
                format!("must be a relative tolerance between 0 and 1 (e.g. 0.1), got {t}"),
            );
        }
    }
    if let Some(s) = &m.slurm {
        slurm(s, &mut errors);
    }
    match m.experiment() {
        Ok(Experiment::Training(t)) => training(t, &mut errors),
        Ok(Experiment::Exactness(x)) => exactness(x, &mut errors),
        Ok(Experiment::ScaleInvariance(s)) => scale_invariance(s, &mut errors),
        Ok(Experiment::Toy(t)) => toy(t, &mut errors),
        Err(e) => errors.0.push(e),
    }
    errors.0
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    fn positive(&mut self, field: &str, v: usize) {
        if v == 0 {
            self.push(field, "must be a positive integer");
        }
    }
}

/// The resources a Slurm array task asks for: a time limit Slurm reads, at least one CPU,
/// memory in Slurm's units, and a stop signal that comes at least 60 s (Slurm's resolution)
/// before the limit, and not before the task starts.
fn slurm(s: &SlurmSection, errors: &mut Errors) {
    let SlurmSection {
        time,
        cpus_per_task,
        mem,
        stop_before_limit_s,
    } = s;
    match s.time_limit_s() {
        None | Some(0) => errors.push(
            "slurm.time",
            format!(
                "`{time}` is not a Slurm time limit; write `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, \
                 `D-HH:MM` or `D-HH:MM:SS` (e.g. `04:00:00`), above zero"
            ),
        ),
        Some(limit) if *stop_before_limit_s >= limit => errors.push(
            "slurm.stop_before_limit_s",
            format!(
                "{stop_before_limit_s} s is not before the time limit `{time}` ({limit} s): \
                 lower it, or raise `slurm.time`"
            ),
        ),
        Some(_) => {}
    }
    if *stop_before_limit_s < 60 {
        errors.push(
            "slurm.stop_before_limit_s",
            format!(
                "must be at least 60 (Slurm may send the signal up to 60 s early), got \
                 {stop_before_limit_s}"
            ),
        );
    }
    if *cpus_per_task == 0 {
        errors.push("slurm.cpus_per_task", "must be at least 1");
    }
    if let Some(mem) = mem {
        let digits = mem.trim_end_matches(['K', 'M', 'G', 'T']);
        let suffix = mem.len() - digits.len();
        if digits.is_empty()
            || suffix > 1
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.bytes().all(|b| b == b'0')
        {
            errors.push(
                "slurm.mem",
                format!(
                    "`{mem}` is not a Slurm memory size; write a positive whole number with an \
                     optional K, M, G or T suffix (e.g. `16G`)"
                ),
            );
        }
    }
}

fn names<V>(m: &BTreeMap<String, V>) -> String {
    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// The sizes of a data section; whether they are within [`max_sizes`] (so the steps per epoch
/// can be computed and the run's length checked).
fn data(field: &str, d: &DataSection, errors: &mut Errors) -> bool {
    errors.positive(&format!("{field}.batch_size"), d.batch_size);
    let (max_train, max_test) = max_sizes(d.dataset);
    let mut within = true;
    for (key, size, max, split) in [
        ("train_size", d.train_size, max_train, "training"),
        ("test_size", d.test_size, max_test, "test"),
    ] {
        match size {
            Some(0) => errors.push(
                format!("{field}.{key}"),
                "must be a positive number of images (leave it out to use the whole split)",
            ),
            Some(n) if n > max => {
                within = false;
                errors.push(
                    format!("{field}.{key}"),
                    format!(
                        "{n} images is more than the {max} of {}'s {split} split (the limit \
                         for this dataset); lower it, or leave it out to use the whole split",
                        d.dataset
                    ),
                );
            }
            _ => {}
        }
    }
    let train = sizes(d).0;
    if within && d.batch_size > train {
        errors.push(
            format!("{field}.batch_size"),
            format!(
                "{} is more than the {train} training images: every epoch would be one partial \
                 batch; lower batch_size to at most {train}, or raise train_size",
                d.batch_size
            ),
        );
    }
    if let Some(tint) = d.synthetic_tint {
        if !(tint.is_finite() && (0.0..=1.0).contains(&tint)) {
            errors.push(
                format!("{field}.synthetic_tint"),
                format!(
                    "must be a number from 0 to 1 (the share of the class colour; default \
                     0.35), got {tint}"
                ),
            );
        }
    }
    within
}

/// An upper bound on the parameters of `spec` (convolutions, norms with two per channel, and
/// the head), counted from the spec alone; `None` when it overflows. Depths the zoo rejects
/// count as the nearest it accepts below: [`Model::new`] reports them.
pub fn param_count(spec: &ModelSpec) -> Option<u64> {
    let w = u64::try_from(spec.resolved_width()).ok()?;
    let classes = u64::try_from(spec.num_classes).ok()?;
    let mut total: u64 = 0;
    let mut add = |n: Option<u64>| -> Option<()> {
        total = total.checked_add(n?)?;
        Some(())
    };
    // A k×k conv from `cin` to `cout` channels, with its bias and a norm after it.
    let conv = |k: u64, cin: u64, cout: u64| -> Option<u64> {
        k.checked_mul(k)?
            .checked_mul(cin)?
            .checked_mul(cout)?
            .checked_add(cout.checked_mul(3)?)
    };
    let last = match spec.arch {
        Arch::PreResNet | Arch::ResNet => {
            let n = u64::try_from(spec.depth.saturating_sub(2) / 6).ok()?;
            add(conv(3, 3, w))?;
            let mut cin = w;
            for mult in [1, 2, 4] {
                let planes = w.checked_mul(mult)?;
                // The first block (with its projection), then n − 1 blocks of planes → planes.
                add(conv(3, cin, planes))?;
                add(conv(3, planes, planes))?;
                add(conv(1, cin, planes))?;
                add(conv(3, planes, planes)?
                    .checked_mul(2)?
                    .checked_mul(n.saturating_sub(1)))?;
                cin = planes;
            }
            cin
        }
        Arch::Vgg => {
            let mults: &[u64] = match spec.depth {
                11 => &[1, 2, 4, 4, 8, 8, 8, 8],
                13 => &[1, 1, 2, 2, 4, 4, 8, 8, 8, 8],
                16 => &[1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8],
                _ => &[1, 1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8],
            };
            let mut cin = 3;
            for m in mults {
                let cout = w.checked_mul(*m)?;
                add(conv(3, cin, cout))?;
                cin = cout;
            }
            cin
        }
    };
    // The norm before the head, and the head with its bias.
    add(last.checked_mul(2))?;
    add(last.checked_add(1)?.checked_mul(classes))?;
    Some(total)
}

/// The model builds exactly as the run will build it (on the CPU; the device does not change
/// what is valid), for a dataset of `classes` classes; the model when it does.
fn model(
    field: &str,
    spec: &ModelSpec,
    classes: Option<usize>,
    errors: &mut Errors,
) -> Option<Model> {
    if let Some(classes) = classes {
        if spec.num_classes != classes {
            errors.push(
                format!("{field}.num_classes"),
                format!(
                    "the dataset has {classes} classes, so the model needs {classes} outputs; \
                     got {} (leave num_classes out to take the dataset's)",
                    spec.num_classes
                ),
            );
            return None;
        }
    }
    if !(spec.eps.is_finite() && spec.eps >= 0.0) {
        errors.push(
            format!("{field}.eps"),
            format!(
                "must be a finite number >= 0 (0 makes scale invariance exact), got {}",
                spec.eps
            ),
        );
        return None;
    }
    if matches!(spec.arch, Arch::PreResNet | Arch::ResNet) && spec.depth > MAX_RESNET_DEPTH {
        errors.push(
            format!("{field}.depth"),
            format!(
                "{} is deeper than the limit of {MAX_RESNET_DEPTH} (ResNet-1202); give a \
                 depth 6k+2 up to {MAX_RESNET_DEPTH} (the paper's is 32)",
                spec.depth
            ),
        );
        return None;
    }
    match param_count(spec) {
        Some(n) if n <= MAX_PARAMS => {}
        count => {
            let at = if spec.width.is_some() {
                format!("{field}.width")
            } else {
                field.to_string()
            };
            let about = count.map_or("more than 2^64".into(), |n| format!("about {n}"));
            errors.push(
                at,
                format!(
                    "{} at depth {} and width {} has {about} parameters, over the limit of \
                     {MAX_PARAMS}; lower the width (the reference's is {}) or the depth",
                    spec.arch,
                    spec.depth,
                    spec.resolved_width(),
                    spec.arch.default_width()
                ),
            );
            return None;
        }
    }
    let store = ParamStore::new(&Device::Cpu, DType::F32, 0);
    Model::new(spec, &store)
        .map_err(|e| errors.push(field, e.to_string()))
        .ok()
}

/// A schedule written in epochs builds and has no milestone at or past the end.
fn schedule(field: &str, spec: &ScheduleSection, epochs: Option<usize>, errors: &mut Errors) {
    if let Err(e) = spec.build(explr_schedule::Unit::Steps) {
        errors.push(field, e.to_string());
        return;
    }
    if let (Some(m), Some(epochs)) = (spec.last_milestone(), epochs) {
        if m >= epochs as u64 {
            errors.push(
                format!("{field}.milestones"),
                format!(
                    "milestone {m} is not before the end of training ({epochs} epochs); \
                     milestones are in epochs and must be < epochs"
                ),
            );
        }
    }
}

/// How long the runs of a section train, for planning them as the run will.
struct Length {
    /// Epochs (training), which milestones must precede; `None` for step-level experiments.
    epochs: Option<usize>,
    /// Updates per epoch.
    steps_per_epoch: u64,
    /// Updates in all.
    steps: u64,
}

/// The runs' own fields first, then (for derived runs whose base is valid) their twins,
/// planned with the steps per epoch the run will have; each plan's optimizer is built over
/// `model` (when one built) and its LR and weight decay evaluated at every update of the run
/// (the §4 recursion can break down at a late step).
fn runs(
    field: &dyn Fn(&str) -> String,
    runs: &BTreeMap<String, RunSpec>,
    length: &Length,
    model: Option<&Model>,
    errors: &mut Errors,
) {
    let epochs = length.epochs;
    let mut valid = BTreeSet::new();
    for (name, r) in runs {
        let here = field(name);
        let before = errors.0.len();
        if !(0.0..1.0).contains(&r.momentum) {
            errors.push(
                format!("{here}.momentum"),
                format!("must lie in [0, 1), got {}", r.momentum),
            );
        }
        if !(r.weight_decay.is_finite() && r.weight_decay >= 0.0) {
            errors.push(
                format!("{here}.weight_decay"),
                format!("must be >= 0, got {}", r.weight_decay),
            );
        }
        if let Some(wd) = &r.weight_decay_schedule {
            if r.weight_decay != 0.0 {
                errors.push(
                    format!("{here}.weight_decay"),
                    "give either `weight_decay` or `weight_decay_schedule`, not both",
                );
            }
            if r.derive.is_some() {
                errors.push(
                    format!("{here}.weight_decay_schedule"),
                    "a derived run has no weight decay on its scale-invariant group (the \
                     transform removes it); drop the field",
                );
            }
            schedule(&format!("{here}.weight_decay_schedule"), wd, epochs, errors);
        }
        match (&r.schedule, &r.derive) {
            (Some(spec), None) => schedule(&format!("{here}.schedule"), spec, epochs, errors),
            (None, Some(_)) if r.weight_decay != 0.0 => errors.push(
                format!("{here}.weight_decay"),
                format!(
                    "a derived run has no weight decay on its scale-invariant group (the \
                     transform removes it); drop the field, got {}",
                    r.weight_decay
                ),
            ),
            (None, Some(d))
                if !(d.weight_decay_factor.is_finite() && d.weight_decay_factor > 0.0) =>
            {
                errors.push(
                    format!("{here}.derive.weight_decay_factor"),
                    format!("must be a positive number, got {}", d.weight_decay_factor),
                )
            }
            (None, Some(d)) => match runs.get(&d.from) {
                Some(base) if base.derive.is_none() => {}
                Some(_) => errors.push(
                    format!("{here}.derive.from"),
                    format!(
                        "`{}` is itself derived; derive from a run with a schedule",
                        d.from
                    ),
                ),
                None => errors.push(
                    format!("{here}.derive.from"),
                    format!("no run named `{}`; runs: {}", d.from, names(runs)),
                ),
            },
            _ => errors.push(here.clone(), "give exactly one of `schedule` or `derive`"),
        }
        if errors.0.len() == before {
            valid.insert(name.as_str());
        }
    }
    // Plan every run whose own fields (and, for a twin, its base's) are valid, exactly as the
    // run will: building a twin checks that an exponential equivalent exists (THEORY.md §3).
    for (name, r) in runs {
        let base_ok = r
            .derive
            .as_ref()
            .is_none_or(|d| valid.contains(d.from.as_str()));
        if !(valid.contains(name.as_str()) && base_ok) {
            continue;
        }
        let at = if r.derive.is_some() {
            "derive"
        } else {
            "schedule"
        };
        if let Err(e) = plan_run(runs, name, length, model) {
            errors.push(format!("{}.{at}", field(name)), e.to_string());
        }
    }
}

/// What the run does with its plan before and while it trains, short of training (and what
/// the checks ask of it afterwards: the twin's scale P_t at every step).
fn plan_run(
    runs: &BTreeMap<String, RunSpec>,
    name: &str,
    length: &Length,
    model: Option<&Model>,
) -> Result<(), PlanError> {
    let p = plan::plan(runs, name, length.steps_per_epoch)?;
    if let Some(model) = model {
        p.build_sgd(model)?;
    }
    // A twin's P_t and LR, walked forward in constant memory (the run caches them; here the
    // cache would grow with the run's length). `length.steps` is at most MAX_UPDATES.
    let steps = usize::try_from(length.steps).unwrap_or(usize::MAX);
    for group in [&p.scale_invariant, &p.others] {
        if let GroupLr::Twin(twin) = &group.lr {
            for row in twin.walk().take(steps) {
                row?;
            }
        }
    }
    for step in 0..length.steps {
        for group in [&p.scale_invariant, &p.others] {
            if !matches!(group.lr, GroupLr::Twin(_)) {
                group.lr_at(step)?;
            }
            group.weight_decay.at(step)?;
        }
    }
    Ok(())
}

/// The length of a run of `epochs` epochs over `data`, when both are within their limits
/// ([`MAX_EPOCHS`], [`MAX_UPDATES`]); otherwise the error, at `epochs_field`.
fn training_length(
    epochs_field: &str,
    epochs: usize,
    data: &DataSection,
    errors: &mut Errors,
) -> Option<Length> {
    if epochs > MAX_EPOCHS {
        errors.push(
            epochs_field,
            format!("{epochs} is more than the limit of {MAX_EPOCHS} epochs; lower it"),
        );
        return None;
    }
    let steps_per_epoch = steps_per_epoch(data);
    let steps = steps_per_epoch
        .checked_mul(epochs as u64)
        .filter(|s| *s <= MAX_UPDATES);
    let Some(steps) = steps else {
        errors.push(
            epochs_field,
            format!(
                "{epochs} epochs of {steps_per_epoch} updates (train_size / batch_size) are more \
                 than the limit of {MAX_UPDATES} updates per run; lower epochs or train_size, or \
                 raise batch_size"
            ),
        );
        return None;
    };
    Some(Length {
        epochs: Some(epochs),
        steps_per_epoch,
        steps,
    })
}

fn training(t: &Training, errors: &mut Errors) {
    errors.positive("training.epochs", t.epochs);
    let sizes_ok = data("training.data", &t.data, errors);
    if t.seeds.is_empty() {
        errors.push("training.seeds", "give at least one seed, e.g. [0]");
    }
    let mut seen = BTreeSet::new();
    for s in &t.seeds {
        if !seen.insert(s) {
            errors.push(
                "training.seeds",
                format!("seed {s} is listed twice; each seed is one run, give each once"),
            );
        }
    }
    if t.models.is_empty() {
        errors.push("training.models", "give at least one model");
    }
    let classes = t.data.dataset.num_classes();
    let mut built = None;
    for (name, m) in &t.models {
        let m = model(&format!("training.models.{name}"), m, Some(classes), errors);
        built = built.or(m);
    }
    let length = (t.data.batch_size > 0 && sizes_ok)
        .then(|| training_length("training.epochs", t.epochs, &t.data, errors))
        .flatten();
    if let Some(length) = &length {
        // The controls' runs are planned beside the claimed runs they derive from. A control
        // named like a run is reported by `controls` alone: it does not replace the run here.
        let mut all = t.runs.clone();
        for (name, c) in &t.controls {
            if !t.runs.contains_key(name) {
                all.insert(name.clone(), c.run.clone());
            }
        }
        let field = |name: &str| {
            if t.runs.contains_key(name) {
                format!("training.runs.{name}")
            } else {
                format!("training.controls.{name}.run")
            }
        };
        if t.runs.is_empty() {
            errors.push("training.runs", "give at least one run");
        } else {
            runs(&field, &all, length, built.as_ref(), errors);
        }
    }
    for (field, checks) in t.check_lists() {
        for (i, c) in checks.iter().enumerate() {
            check(t, &format!("{field}.{i}"), c, length.as_ref(), errors);
        }
    }
    for name in t.per_model.keys() {
        if !t.models.contains_key(name) {
            errors.push(
                format!("training.per_model.{name}"),
                format!("no model named `{name}`; models: {}", names(&t.models)),
            );
        }
    }
    controls(t, errors);
}

fn check(t: &Training, here: &str, c: &Check, length: Option<&Length>, errors: &mut Errors) {
    let here = here.to_string();
    for w in c.windows() {
        if w[0] == 0 || w[0] > w[1] || w[1] > t.epochs {
            errors.push(
                here.clone(),
                format!(
                    "epochs {}-{} are not a window of this run: give 1 <= from <= to <= {} (the epochs)",
                    w[0], w[1], t.epochs
                ),
            );
        }
    }
    if c.reason().trim().is_empty() {
        errors.push(
            format!("{here}.reason"),
            "say in one line where the bound comes from (the maths, or a control it must reject)",
        );
    }
    let bound = match c {
        Check::WeightDistance { bound, .. } | Check::WindowGap { bound, .. } => Some(*bound),
        Check::AngularUpdate { tolerance, .. } | Check::NearlyConstant { tolerance, .. } => {
            Some(*tolerance)
        }
        Check::Greater { margin, .. } => margin.is_finite().then_some(0.0),
        Check::Reaches { at_least, .. } => at_least.is_finite().then_some(0.0),
    };
    match bound {
        Some(b) if b.is_finite() && b >= 0.0 => {}
        _ => errors.push(
            here.clone(),
            "the bound (bound, tolerance, margin or at_least) must be a finite number, and >= 0 for a bound or tolerance",
        ),
    }
    if let Check::WindowGap { windows, .. } = c {
        if windows.is_empty() {
            errors.push(
                format!("{here}.windows"),
                "give at least one window, e.g. [[7, 8]]",
            );
        }
    }
    seed_spread(t, &here, c, errors);
    snapshot_steps(&here, c, length, errors);
    if let Check::AngularUpdate { run, .. } = c {
        if let Some(r) = t.runs.get(run) {
            if r.derive.is_some() || r.weight_decay_schedule.is_some() || r.weight_decay <= 0.0 {
                errors.push(
                    format!("{here}.run"),
                    format!(
                        "the equilibrium angle sqrt(2ηλ/(1+γ)) needs a run with a schedule and a constant weight decay > 0; `{run}` has none"
                    ),
                );
            }
        }
    }
    for r in c.runs() {
        if !t.runs.contains_key(r) {
            let hint = if t.controls.contains_key(r) {
                " (it is a control: checks name claimed runs, and each control is judged in place of the run it replaces)"
            } else {
                ""
            };
            errors.push(
                here.clone(),
                format!(
                    "names run `{r}`, which is not in `runs` ({}){hint}",
                    names(&t.runs)
                ),
            );
        }
    }
}

/// A [`Check::WindowGap`]'s `seed_spread`: two seeds or more, a positive factor, a claimed run.
fn seed_spread(t: &Training, here: &str, c: &Check, errors: &mut Errors) {
    if let Check::WindowGap {
        seed_spread: Some(spread),
        ..
    } = c
    {
        if t.seeds.len() < 2 {
            errors.push(
                format!("{here}.seed_spread"),
                format!(
                    "a bound from the seeds' scatter needs two seeds or more; training.seeds has {}",
                    t.seeds.len()
                ),
            );
        }
        if !(spread.factor.is_finite() && spread.factor > 0.0) {
            errors.push(
                format!("{here}.seed_spread.factor"),
                "give a finite number of standard deviations > 0, e.g. 2.0",
            );
        }
        if !t.runs.contains_key(&spread.run) {
            errors.push(
                format!("{here}.seed_spread.run"),
                format!(
                    "names run `{}`, which is not in `runs` ({})",
                    spread.run,
                    names(&t.runs)
                ),
            );
        }
    }
}

/// A [`Check::WeightDistance`]: two different runs, and its `steps` inside its epochs.
fn snapshot_steps(here: &str, c: &Check, length: Option<&Length>, errors: &mut Errors) {
    if let Check::WeightDistance {
        a, b, epoch, steps, ..
    } = c
    {
        if a == b {
            errors.push(here, "compare two different runs");
        }
        let last = length.map(|l| l.steps_per_epoch.saturating_mul(*epoch as u64));
        for &step in steps {
            if step == 0 || last.is_some_and(|last| step >= last) {
                errors.push(
                    format!("{here}.steps"),
                    format!(
                        "update {step} is not inside the first {epoch} epoch(s): give update counts from 1 to {} (the end of epoch {epoch} is the check's own snapshot)",
                        last.map_or("the epoch's last".to_string(), |l| (l.max(1) - 1).to_string())
                    ),
                );
            }
        }
    }
}

/// `given` (a control's `models` or `seeds`) must be some of `allowed` (the field `of`), each
/// once.
fn some_of(field: &str, of: &str, given: &[String], allowed: &[String], errors: &mut Errors) {
    let mut seen = BTreeSet::new();
    let stray: Vec<&str> = given
        .iter()
        .filter(|g| !allowed.contains(g) || !seen.insert(g.as_str()))
        .map(String::as_str)
        .collect();
    if given.is_empty() || !stray.is_empty() {
        errors.push(
            field,
            format!(
                "give some of {of} ({}), each once{}",
                allowed.join(", "),
                if stray.is_empty() {
                    String::new()
                } else {
                    format!("; not so: {}", stray.join(", "))
                }
            ),
        );
    }
}

fn controls(t: &Training, errors: &mut Errors) {
    for (name, c) in &t.controls {
        let here = format!("training.controls.{name}");
        if t.runs.contains_key(name) {
            errors.push(
                here.clone(),
                format!("`{name}` is also a run: a control needs a name of its own"),
            );
        }
        if let Some(models) = &c.models {
            let allowed: Vec<String> = t.models.keys().cloned().collect();
            some_of(
                &format!("{here}.models"),
                "training.models",
                models,
                &allowed,
                errors,
            );
        }
        if let Some(seeds) = &c.seeds {
            let text = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>();
            some_of(
                &format!("{here}.seeds"),
                "training.seeds",
                &text(seeds),
                &text(&t.seeds),
                errors,
            );
        }
        if c.why.trim().is_empty() {
            errors.push(
                format!("{here}.why"),
                "say in one line why this run is not equivalent to the one it replaces",
            );
        }
        if !t.runs.contains_key(&c.replaces) {
            errors.push(
                format!("{here}.replaces"),
                format!("no run named `{}`; runs: {}", c.replaces, names(&t.runs)),
            );
        } else if !t.models.keys().filter(|m| t.trains(name, m)).any(|m| {
            t.checks_of(m)
                .iter()
                .any(|k| !k.is_premise() && k.runs().contains(&c.replaces.as_str()))
        }) {
            errors.push(
                format!("{here}.replaces"),
                format!(
                    "no check names `{}` (a `reaches` premise judges no control), so nothing would judge this control",
                    c.replaces
                ),
            );
        }
        if let Some(d) = &c.run.derive {
            if !t.runs.contains_key(&d.from) {
                errors.push(
                    format!("{here}.run.derive.from"),
                    format!(
                        "derive a control from a claimed run; runs: {}",
                        names(&t.runs)
                    ),
                );
            }
        }
    }
    if let Some(e) = &t.expect {
        if e.verdict == crate::spec::Verdict::Pass {
            errors.push(
                "training.expect.verdict",
                "pass is what every claim aims for: declare only a verdict other than pass",
            );
        }
        if e.reason.trim().is_empty() {
            errors.push(
                "training.expect.reason",
                "say why this profile reaches that verdict",
            );
        }
    }
}

fn exactness(x: &Exactness, errors: &mut Errors) {
    errors.positive("exactness.steps", x.steps);
    if u64::try_from(x.steps).map_or(true, |s| s > MAX_UPDATES) {
        errors.push(
            "exactness.steps",
            format!(
                "{} is more than the limit of {MAX_UPDATES} updates per run; lower it",
                x.steps
            ),
        );
    }
    let sizes_ok = data("exactness.data", &x.data, errors);
    let built = model(
        "exactness.model",
        &x.model,
        Some(x.data.dataset.num_classes()),
        errors,
    );
    if x.data.batch_size > 0 && sizes_ok && u64::try_from(x.steps).is_ok_and(|s| s <= MAX_UPDATES) {
        let length = Length {
            epochs: None,
            steps_per_epoch: steps_per_epoch(&x.data),
            steps: x.steps as u64,
        };
        if x.runs.is_empty() {
            errors.push("exactness.runs", "give at least one run");
        } else {
            let field = |name: &str| format!("exactness.runs.{name}");
            runs(&field, &x.runs, &length, built.as_ref(), errors);
        }
    }
    if !x.runs.values().any(|r| r.derive.is_none()) {
        errors.push(
            "exactness.runs",
            "give a run with a schedule (the weight-decay run) and its derived twins",
        );
    }
    let derived: Vec<&str> = x
        .runs
        .iter()
        .filter(|(_, r)| r.derive.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    let named = x
        .tolerance
        .keys()
        .map(|n| (n, format!("exactness.tolerance.{n}")))
        .chain(
            x.variants
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("exactness.variants.{i}"))),
        );
    for (name, field) in named {
        if !derived.contains(&name.as_str()) {
            errors.push(
                field,
                format!(
                    "must name a derived run; derived runs here: {}",
                    derived.join(", ")
                ),
            );
        }
    }
    for name in &derived {
        let bounded = x.tolerance.contains_key(*name);
        let recorded = x.variants.iter().filter(|v| v == name).count();
        if usize::from(bounded) + recorded != 1 {
            errors.push(
                format!("exactness.runs.{name}"),
                "a derived run is either held to a bound (`tolerance`) or recorded as a variant \
                 (`variants`), exactly once",
            );
        }
    }
    for (name, tolerance) in &x.tolerance {
        if !(tolerance.is_finite() && *tolerance > 0.0) {
            errors.push(
                format!("exactness.tolerance.{name}"),
                format!("must be a positive relative deviation, got {tolerance}"),
            );
        }
    }
}

fn scale_invariance(s: &ScaleInvariance, errors: &mut Errors) {
    errors.positive("scale_invariance.batch_size", s.batch_size);
    // The probe batch is a synthetic training split of exactly batch_size images.
    let max = SYNTHETIC_MAX_SIZES.0;
    if s.batch_size > max {
        errors.push(
            "scale_invariance.batch_size",
            format!(
                "{} images is more than the synthetic set's limit of {max}; lower it (the \
                 paper's probe batch is 32)",
                s.batch_size
            ),
        );
    }
    if s.factors.is_empty() || s.factors.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
        errors.push(
            "scale_invariance.factors",
            "give positive finite factors, e.g. [0.1, 10]",
        );
    }
    if !(s.tolerance.is_finite() && s.tolerance > 0.0) {
        errors.push(
            "scale_invariance.tolerance",
            format!(
                "must be a positive relative difference, got {}",
                s.tolerance
            ),
        );
    }
    if s.models.is_empty() {
        errors.push("scale_invariance.models", "give at least one model");
    }
    for (name, m) in &s.models {
        model(&format!("scale_invariance.models.{name}"), m, None, errors);
    }
}

fn toy(t: &Toy, errors: &mut Errors) {
    if t.population.batch_size.is_some() {
        errors.push(
            "toy.population.batch_size",
            "must be absent (population gradients are exact expectations)",
        );
    }
    if t.minibatch.batch_size.is_none() {
        errors.push("toy.minibatch.batch_size", "give a minibatch size, e.g. 32");
    }
    for (regime, cfg) in [("population", &t.population), ("minibatch", &t.minibatch)] {
        if let Err((field, message)) = cfg.check() {
            errors.push(format!("toy.{regime}.{field}"), message);
        }
    }
}
