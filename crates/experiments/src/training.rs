//! Training manifests (E1–E6, N1, A1): every model × run × seed, the claimed runs and the
//! negative controls alike ([`TrainingPlan::runs`]). Each run trains on its own
//! ([`TrainingPlan::train`]: a thread of the local pool or a Slurm array task) into its own
//! folder under its own lock; the summary is then built from what the runs left on disk
//! ([`TrainingPlan::summarize_runs`]: final metrics as mean ± std over seeds, the claim's checks and
//! controls with the verdict, [`super::checks`]) with the paper-style figures (seed mean with
//! a min–max band, controls dashed, milestones marked).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use explr_data::Dataset;
use explr_zoo::ModelSpec;

use super::checks::{self, AllRecords, Evidence};
use super::error::ExperimentError;
use explr_execute::executor::{UnitKey, UnitState};
use explr_io::{remove_leftovers, FolderLock};
use explr_manifest::dataset::{dtype, load_data};
use explr_manifest::plan::{self, OptimizerPlan};
use explr_manifest::spec::{Check, Metric, Precision, Training};
use explr_results::plot::{Chart, Series};
use explr_results::summary::Summary;
use explr_train::checkpoint::{self, CheckpointError};
use explr_train::context::{Progress, RunnerOptions};
use explr_train::records::EpochRecord;
use explr_train::trainer::{self, SnapshotAt, TrainingSetup};

/// One training run of a manifest: a model, a run (claimed or control) and a seed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId {
    /// The model's name in the manifest.
    pub model: String,
    /// The run's name (a claimed run or a control).
    pub run: String,
    /// The seed.
    pub seed: u64,
}

impl std::fmt::Display for RunId {
    /// `model/run/seed-N`: the run's folder under the manifest's, and its key on the command
    /// line (`explr replicate --task`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/seed-{}", self.model, self.run, self.seed)
    }
}

/// A training manifest ready to run: every run's optimizer planned. The data is read when a
/// run first trains (a submission or a collection reads none: the steps per epoch and the data
/// a run's fingerprint names are known from the manifest, [`explr_manifest::dataset::sizes`]).
pub struct TrainingPlan {
    /// The section, cut to `--max-epochs` when given.
    spec: Training,
    data_dir: Option<PathBuf>,
    /// Read by the first run that trains.
    dataset: Mutex<Option<Arc<Dataset>>>,
    steps_per_epoch: u64,
    plans: BTreeMap<String, OptimizerPlan>,
    /// Where a check compares weights: each run keeps a snapshot there.
    snapshots: Vec<SnapshotAt>,
    /// The manifest's results folder.
    dir: PathBuf,
    /// The manifest's name (its file stem).
    manifest: String,
}

impl TrainingPlan {
    /// Plans every run of `spec` (of manifest `manifest`), whose results go under `dir`.
    pub fn new(
        spec: &Training,
        manifest: &str,
        dir: &Path,
        opts: &RunnerOptions,
    ) -> Result<Self, ExperimentError> {
        let spec = match opts.max_epochs {
            Some(m) => limit_epochs(spec, m),
            None => spec.clone(),
        };
        let steps_per_epoch = explr_manifest::dataset::steps_per_epoch(&spec.data);
        let runs = spec.all_runs();
        let plans = runs
            .keys()
            .map(|name| Ok((name.clone(), plan::plan(&runs, name, steps_per_epoch)?)))
            .collect::<Result<_, ExperimentError>>()?;
        let snapshots: BTreeSet<SnapshotAt> = spec
            .check_lists()
            .into_iter()
            .flat_map(|(_, checks)| checks)
            .flat_map(|c| match c {
                Check::WeightDistance { epoch, steps, .. } => {
                    std::iter::once(SnapshotAt::Epoch(*epoch))
                        .chain(steps.iter().map(|&s| SnapshotAt::Step(s)))
                        .collect()
                }
                _ => Vec::new(),
            })
            .collect();
        Ok(Self {
            spec,
            data_dir: opts.data_dir.clone(),
            dataset: Mutex::new(None),
            steps_per_epoch,
            plans,
            snapshots: snapshots.into_iter().collect(),
            dir: dir.to_path_buf(),
            manifest: manifest.to_string(),
        })
    }

    /// The data, read once.
    fn dataset(&self) -> Result<Arc<Dataset>, ExperimentError> {
        let mut slot = self
            .dataset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Arc::new(load_data(&self.spec.data, self.data_dir.as_deref())?);
        *slot = Some(d.clone());
        Ok(d)
    }

    /// The run a unit's key names (`model/run/seed-N`).
    pub fn run_id(&self, unit: &UnitKey) -> Result<RunId, ExperimentError> {
        let runs = self.runs();
        match runs.iter().find(|id| id.to_string() == unit.0) {
            Some(id) => Ok(id.clone()),
            None => Err(ExperimentError::UnknownUnit {
                unit: unit.to_string(),
                manifest: self.manifest.clone(),
                known: runs.iter().map(RunId::to_string).collect(),
            }),
        }
    }

    /// Every run: each model × each run (claimed runs and controls, by name, each control on
    /// its own models) × each seed (a control's own seeds).
    pub fn runs(&self) -> Vec<RunId> {
        let mut ids = Vec::new();
        for model in self.spec.models.keys() {
            for run in self.plans.keys().filter(|r| self.spec.trains(r, model)) {
                for &seed in self.spec.seeds_of(run) {
                    ids.push(RunId {
                        model: model.clone(),
                        run: run.clone(),
                        seed,
                    });
                }
            }
        }
        ids
    }

    fn setup<'a>(
        &'a self,
        id: &RunId,
        dataset: &'a Dataset,
        opts: &'a RunnerOptions,
    ) -> TrainingSetup<'a> {
        TrainingSetup {
            key: id.to_string(),
            model: &self.spec.models[&id.model],
            dataset,
            batch_size: self.spec.data.batch_size,
            augment: self.spec.data.augment,
            dtype: dtype(self.spec.dtype_of(&id.model)),
            device: &opts.device,
            seed: id.seed,
            epochs: self.spec.epochs,
            plan: self.plans[&id.run].clone(),
            checkpoint_every: self.spec.checkpoint_every,
            snapshots: self.snapshots.clone(),
            dir: run_dir(&self.dir, id),
            resume: opts.resume,
            stop: opts.stop,
        }
    }

    /// Trains run `id` into its folder, holding the folder's lock (a second process on the
    /// same run fails at once, naming this one), and writes its `metadata.json`.
    pub fn train(
        &self,
        id: &RunId,
        opts: &RunnerOptions,
        progress: &dyn Progress,
    ) -> Result<(), ExperimentError> {
        let dataset = self.dataset()?;
        let setup = self.setup(id, &dataset, opts);
        let _lock = FolderLock::acquire(&setup.dir, &opts.provenance.holder())?;
        remove_leftovers(&setup.dir)?;
        let records = trainer::train(&setup, progress)?;
        let mut fields = serde_json::Map::new();
        fields.insert("model".into(), id.model.clone().into());
        fields.insert("run".into(), id.run.clone().into());
        fields.insert("seed".into(), id.seed.into());
        fields.insert("dtype".into(), format!("{:?}", setup.dtype).into());
        // The data section it trained on: a run's state is judged without reading the data,
        // so this is what tells a complete run from one whose manifest names other data since.
        fields.insert("data".into(), self.data_section());
        fields.insert("epochs".into(), records.len().into());
        fields.insert("steps".into(), records.last().map_or(0, |r| r.step).into());
        // The epochs' own wall times: a resumed run counts the epochs before the resume too.
        let wall_s = records.iter().map(|r| r.wall_s).sum::<f64>();
        explr_io::write_json(
            &setup.dir.join(RUN_METADATA),
            &explr_train::context::metadata(opts, fields, wall_s),
        )?;
        Ok(())
    }

    /// Where run `id` stands, from its folder: complete (its last checkpoint is its last epoch
    /// and verifies, its weight snapshots and metadata are there), partial, not started, busy
    /// (another process holds its lock) or unusable (what is there cannot be resumed, and why).
    pub fn run_state(&self, id: &RunId) -> Result<UnitState, ExperimentError> {
        Ok(match self.on_disk(id)? {
            OnDisk::Complete(_) => UnitState::Complete,
            OnDisk::State(state) => state,
        })
    }

    fn on_disk(&self, id: &RunId) -> Result<OnDisk, ExperimentError> {
        let dir = run_dir(&self.dir, id);
        if !dir.exists() {
            return Ok(OnDisk::State(UnitState::NotStarted));
        }
        if let Some(holder) = FolderLock::holder(&dir)? {
            return Ok(OnDisk::State(UnitState::Busy { holder }));
        }
        let config = self.config(id);
        let epochs = self.spec.epochs;
        let found = match checkpoint::inspect(&dir, &config, epochs) {
            Ok(found) => found,
            Err(CheckpointError::Io(e)) => return Err(e.into()),
            Err(e) => {
                return Ok(OnDisk::State(UnitState::Unusable {
                    reason: e.to_string(),
                }))
            }
        };
        let Some(found) = found else {
            return Ok(OnDisk::State(UnitState::NotStarted));
        };
        if found.epoch < epochs {
            return Ok(OnDisk::State(UnitState::Partial {
                epoch: found.epoch,
                epochs,
            }));
        }
        // Trained to the end: the snapshots a check compares and the metadata must be there
        // too (a resume writes the metadata; a missing snapshot nothing can bring back), each
        // snapshot the one this run wrote.
        for &at in &self.snapshots {
            let path = trainer::snapshot_path(&dir, at);
            if !path.exists() {
                return Ok(OnDisk::State(UnitState::Unusable {
                    reason: format!(
                        "{} is missing: the run finished without the weights a check compares",
                        path.display()
                    ),
                }));
            }
            match trainer::verify_snapshot(&dir, at, &config) {
                Ok(_) => {}
                Err(trainer::TrainError::Io(e)) => return Err(e.into()),
                Err(e) => {
                    return Ok(OnDisk::State(UnitState::Unusable {
                        reason: e.to_string(),
                    }))
                }
            }
        }
        let metadata = dir.join(RUN_METADATA);
        let recorded = explr_io::read_if_exists(&metadata)?
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v.get("data").cloned());
        let Some(recorded) = recorded else {
            // No metadata (or an older explr's, without the data): a resume writes it.
            return Ok(OnDisk::State(UnitState::Partial {
                epoch: found.epoch,
                epochs,
            }));
        };
        let now = self.data_section();
        if recorded != now {
            return Ok(OnDisk::State(UnitState::Unusable {
                reason: format!(
                    "{}: the run trained on the data section {recorded}, the manifest now names \
                     {now}; rerun without --resume to train it on the data named now",
                    metadata.display()
                ),
            }));
        }
        Ok(OnDisk::Complete(found.records))
    }

    /// The manifest's data section as JSON, as a run's `metadata.json` records it.
    fn data_section(&self) -> serde_json::Value {
        // Plain fields: serializing cannot fail.
        serde_json::to_value(&self.spec.data).unwrap_or_default()
    }

    /// The fingerprint of run `id` as the manifest alone tells it ([`trainer::RunIdentity`]):
    /// every component but the data's identity (the data is not read to judge a run's state)
    /// and the device (a run may be judged on another machine than the one it trained on).
    /// Resume compares those two as well.
    fn config(&self, id: &RunId) -> checkpoint::Fingerprint {
        let (train, test) = explr_manifest::dataset::sizes(&self.spec.data);
        trainer::RunIdentity {
            model: &self.spec.models[&id.model],
            data: [train, test, self.spec.data.dataset.num_classes()],
            data_identity: None,
            device: None,
            batch_size: self.spec.data.batch_size,
            augment: self.spec.data.augment,
            dtype: dtype(self.spec.dtype_of(&id.model)),
            seed: id.seed,
            plan: &self.plans[&id.run],
        }
        .fingerprint()
    }

    /// The summary and figures of the manifest, from every run's records on disk (the ones its
    /// final checkpoint verified), and the time training took: the sum of every run's epochs'
    /// own wall times, wherever and in however many sittings they ran. Every run must be
    /// complete ([`Self::run_state`]).
    pub fn summarize_runs(&self) -> Result<(Summary, Vec<PathBuf>, f64), ExperimentError> {
        let mut records = AllRecords::new();
        for id in self.runs() {
            let found = match self.on_disk(&id)? {
                OnDisk::Complete(found) => found,
                OnDisk::State(state) => {
                    return Err(ExperimentError::Incomplete {
                        unit: id.to_string(),
                        state: state.to_string(),
                    })
                }
            };
            records.insert((id.model, id.run, id.seed), found);
        }
        let spec = &self.spec;
        let config = |id: &RunId| self.config(id);
        // The checks and the drift figures read the same distances: each is computed once.
        let known = RefCell::new(BTreeMap::new());
        let distance = |model: &str, a: (&str, u64), b: (&str, u64), at: SnapshotAt| {
            let key = (
                model.to_string(),
                a.0.to_string(),
                a.1,
                b.0.to_string(),
                b.1,
                at,
            );
            if let Some(&d) = known.borrow().get(&key) {
                return Ok(d);
            }
            let d = weight_distance(&self.dir, &records, &self.plans, &config, model, at, (a, b))?;
            known.borrow_mut().insert(key, d);
            Ok(d)
        };
        let mut summary = Summary::default();
        summary.count("steps_per_epoch", self.steps_per_epoch as usize);
        final_metrics(spec, &records, &mut summary);
        checks::evaluate(
            &Evidence {
                spec,
                records: &records,
                distance: &distance,
            },
            &mut summary,
        )?;
        if let Some(expect) = &spec.expect {
            summary.expect(expect.verdict, &expect.reason);
        }
        let mut figures = figures(spec, &records, &self.dir)?;
        figures.extend(drift_figures(
            spec,
            &distance,
            self.steps_per_epoch,
            &self.dir,
        )?);
        let trained_s = records
            .values()
            .flat_map(|run| run.iter().map(|r| r.wall_s))
            .sum();
        Ok((summary, figures, trained_s))
    }
}

/// What a run's folder holds.
enum OnDisk {
    /// Every epoch's record, verified by the final checkpoint.
    Complete(Vec<EpochRecord>),
    /// Anything else.
    State(UnitState),
}

/// The file a finished run writes last: its provenance.
const RUN_METADATA: &str = "metadata.json";

/// The folder of one run's results.
fn run_dir(dir: &Path, id: &RunId) -> PathBuf {
    dir.join(&id.model)
        .join(&id.run)
        .join(format!("seed-{}", id.seed))
}

/// ‖(P^b_t/P^a_t)·θ^a_t − θ^b_t‖ / ‖θ^b_t‖ of the scale-invariant group at `at` (THEORY.md
/// §3–§5), from the weight snapshots of run `a` trained from seed `sa` and run `b` from `sb`,
/// summed over tensors in name order (float64).
fn weight_distance(
    dir: &Path,
    records: &AllRecords,
    plans: &BTreeMap<String, OptimizerPlan>,
    config: &dyn Fn(&RunId) -> checkpoint::Fingerprint,
    model: &str,
    at: SnapshotAt,
    ((a, sa), (b, sb)): ((&str, u64), (&str, u64)),
) -> Result<f64, ExperimentError> {
    let step = match at {
        SnapshotAt::Epoch(epoch) => {
            records[&(model.to_string(), a.to_string(), sa)][epoch - 1].step
        }
        SnapshotAt::Step(step) => step,
    };
    let p = plans[b].scale(step)? / plans[a].scale(step)?;
    let id = |run: &str, seed: u64| RunId {
        model: model.to_string(),
        run: run.to_string(),
        seed,
    };
    let folder = |run: &str, seed: u64| run_dir(dir, &id(run, seed));
    let load = |run: &str, seed: u64| {
        trainer::read_snapshot(
            &folder(run, seed),
            at,
            &config(&id(run, seed)),
            &Device::Cpu,
        )
    };
    let (wa, wb) = (load(a, sa)?, load(b, sb)?);
    let (mut diff, mut norm) = (0.0, 0.0);
    for (name, tb) in &wb {
        let ta = wa.get(name).ok_or_else(|| trainer::TrainError::Snapshot {
            path: folder(a, sa),
            message: format!("has no tensor `{name}`"),
        })?;
        let (ta, tb) = (ta.to_dtype(DType::F64)?, tb.to_dtype(DType::F64)?);
        diff += sum_sq(&(ta.affine(p, 0.0)? - &tb)?)?;
        norm += sum_sq(&tb)?;
    }
    Ok(diff.sqrt() / norm.sqrt())
}

fn sum_sq(t: &Tensor) -> Result<f64, ExperimentError> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f64>()?)
}

/// `spec` cut to its first `max_epochs` epochs (at least 1): the schedules stay those of the
/// full run (they are built from the runs, in epochs), only training stops early; checks that
/// need later epochs are dropped.
pub fn limit_epochs(spec: &Training, max_epochs: usize) -> Training {
    let epochs = spec.epochs.min(max_epochs.max(1));
    let mut limited = spec.clone();
    limited.epochs = epochs;
    let within = |c: &Check| c.windows().iter().all(|w| w[1] <= epochs);
    limited.checks.retain(within);
    for p in limited.per_model.values_mut() {
        if let Some(checks) = &mut p.checks {
            checks.retain(within);
        }
    }
    limited
}

/// Each run's final metrics (mean over seeds, and the spread of accuracies), and per model the
/// best final test accuracy of the claimed runs: the level the claim was tested at.
fn final_metrics(spec: &Training, records: &AllRecords, s: &mut Summary) {
    let runs = spec.all_runs();
    for model in spec.models.keys() {
        let mut best_test = 0.0f64;
        for run in runs.keys().filter(|r| spec.trains(r, model)) {
            for metric in [
                Metric::TrainLoss,
                Metric::TrainAcc,
                Metric::TestAcc,
                Metric::SiNorm,
                Metric::AngularUpdate,
            ] {
                let seeds = spec.seeds_of(run);
                let finals: Vec<f64> = seeds
                    .iter()
                    .map(|seed| {
                        records[&(model.clone(), run.clone(), *seed)]
                            .last()
                            .expect("epochs > 0")
                            .get(metric)
                    })
                    .collect();
                let mean = finals.iter().sum::<f64>() / finals.len() as f64;
                let std = checks::sample_sd(&finals);
                s.metric(format!("{model}.{run}.final_{metric}"), mean);
                let accuracy = matches!(metric, Metric::TrainAcc | Metric::TestAcc);
                if seeds.len() > 1 && accuracy {
                    s.metric(format!("{model}.{run}.final_{metric}_std"), std);
                }
                if metric == Metric::TestAcc && spec.runs.contains_key(run) {
                    best_test = best_test.max(mean);
                }
            }
        }
        s.metric(format!("{model}.best_final_test_acc"), best_test);
    }
}

/// "PreResNet-20 (bn, width 8)": the model actually trained, for figure titles.
/// With its own precision where the model has one ([`explr_manifest::spec::PerModel`]).
fn model_title(spec: &Training, model: &str) -> String {
    let m: &ModelSpec = &spec.models[model];
    let arch = match m.arch {
        explr_zoo::Arch::PreResNet => "PreResNet",
        explr_zoo::Arch::ResNet => "ResNet",
        explr_zoo::Arch::Vgg => "VGG",
    };
    let precision = match spec.per_model.get(model).and_then(|p| p.dtype) {
        Some(Precision::F32) => ", float32",
        Some(Precision::F64) => ", float64",
        None => "",
    };
    format!(
        "{arch}-{} ({}, width {}{precision})",
        m.depth,
        m.norm,
        m.resolved_width()
    )
}

/// For each `weight_distance` check with `steps`: the distance of the two runs after each of
/// those updates and at the end of its epoch (log-log; the mean over seeds, the band their
/// range), i.e. how fast rounding parts them.
fn drift_figures(
    spec: &Training,
    distance: &checks::Distance<'_>,
    steps_per_epoch: u64,
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    let mut out = Vec::new();
    for model in spec.models.keys() {
        for (i, check) in spec.checks_of(model).iter().enumerate() {
            let Check::WeightDistance {
                a, b, epoch, steps, ..
            } = check
            else {
                continue;
            };
            if steps.is_empty() {
                continue;
            }
            let end = steps_per_epoch * *epoch as u64;
            let mut at: Vec<(f64, SnapshotAt)> = steps
                .iter()
                .map(|&s| (s as f64, SnapshotAt::Step(s)))
                .collect();
            at.push((end as f64, SnapshotAt::Epoch(*epoch)));
            // The reference: two seeds of `a`, as far apart as two trainings can be.
            let seed_pair = checks::seed_reference(spec, a);
            let (mut points, mut band, mut apart) = (Vec::new(), Vec::new(), Vec::new());
            for (x, snapshot) in at {
                let per_seed = spec
                    .common_seeds(&[a, b])
                    .into_iter()
                    .map(|seed| distance(model, (a, seed), (b, seed), snapshot))
                    .collect::<Result<Vec<f64>, _>>()?;
                if let Some((s0, s1)) = seed_pair {
                    apart.push((x, distance(model, (a, s0), (a, s1), snapshot)?));
                }
                let mean = per_seed.iter().sum::<f64>() / per_seed.len() as f64;
                let lo = per_seed.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = per_seed.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                points.push((x, mean));
                band.push((x, lo, hi));
            }
            let seeds = spec.common_seeds(&[a, b]).len();
            let chart = Chart {
                title: format!("{}: how far {b} is from {a}", model_title(spec, model)),
                x_label: "update".into(),
                y_label: if seeds > 1 {
                    format!("‖P·θ({a}) − θ({b})‖/‖θ({b})‖, mean and range of {seeds} seeds")
                } else {
                    format!("‖P·θ({a}) − θ({b})‖/‖θ({b})‖")
                },
                log_y: true,
                log_x: true,
                series: std::iter::once(Series {
                    label: format!("{b} vs {a}"),
                    points,
                    band: if seeds > 1 { band } else { Vec::new() },
                    dashed: false,
                })
                .chain(seed_pair.map(|(s0, s1)| Series {
                    label: format!("{a}: seed {s1} vs seed {s0}"),
                    points: apart,
                    band: Vec::new(),
                    dashed: true,
                }))
                .collect(),
                markers: vec![(end as f64, format!("end of epoch {epoch}"))],
            };
            let path = dir.join(format!("{model}-weight_distance-{i}.svg"));
            explr_io::write_atomic(&path, chart.to_svg().as_bytes())?;
            out.push(path);
        }
    }
    Ok(out)
}

fn figures(
    spec: &Training,
    records: &AllRecords,
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    let mut out = Vec::new();
    let panels = [
        (Metric::TrainLoss, "train loss", false),
        (Metric::TestAcc, "test accuracy", false),
        (Metric::TrainAcc, "train accuracy", false),
        (Metric::Lr, "learning rate", true),
        (Metric::SiNorm, "‖θ‖ of the scale-invariant group", true),
        (Metric::NormSqOverLr, "‖θ‖²/η", true),
        (Metric::AngularUpdate, "angular update per step (rad)", true),
    ];
    let runs = spec.all_runs();
    let milestones: BTreeSet<u64> = spec
        .runs
        .values()
        .filter_map(|r| r.schedule.as_ref())
        .chain(
            spec.runs
                .values()
                .filter_map(|r| r.weight_decay_schedule.as_ref()),
        )
        .flat_map(|s| s.milestones())
        .collect();
    for model in spec.models.keys() {
        for (metric, label, log_y) in panels {
            let series = runs
                .keys()
                .filter(|r| spec.trains(r, model))
                .map(|run| {
                    let seeds = spec.seeds_of(run);
                    let per_epoch: Vec<Vec<f64>> = (0..spec.epochs)
                        .map(|e| {
                            seeds
                                .iter()
                                .map(|seed| {
                                    records[&(model.clone(), run.clone(), *seed)][e].get(metric)
                                })
                                .collect()
                        })
                        .collect();
                    let x = |e: usize| (e + 1) as f64;
                    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
                    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let control = spec.controls.contains_key(run);
                    Series {
                        label: if control {
                            format!("{run} (control)")
                        } else {
                            run.clone()
                        },
                        points: per_epoch
                            .iter()
                            .enumerate()
                            .map(|(e, v)| (x(e), mean(v)))
                            .collect(),
                        band: if seeds.len() > 1 {
                            per_epoch
                                .iter()
                                .enumerate()
                                .map(|(e, v)| (x(e), min(v), max(v)))
                                .collect()
                        } else {
                            Vec::new()
                        },
                        dashed: control,
                    }
                })
                .collect();
            let chart = Chart {
                title: format!("{}: {label}", model_title(spec, model)),
                x_label: "epoch".into(),
                y_label: match spec.seeds.len() {
                    1 => label.into(),
                    _ if spec.controls.values().any(|c| c.seeds.is_some()) => {
                        format!("{label}, mean and range of the seeds (a control on fewer)")
                    }
                    n => format!("{label}, mean and range of {n} seeds"),
                },
                log_y,
                log_x: false,
                series,
                markers: milestones
                    .iter()
                    // A milestone at epoch m starts epoch m + 1: the line sits between them.
                    .map(|&m| (m as f64 + 0.5, format!("milestone {m}")))
                    .collect(),
            };
            let path = dir.join(format!("{model}-{metric}.svg"));
            explr_io::write_atomic(&path, chart.to_svg().as_bytes())?;
            out.push(path);
        }
    }
    Ok(out)
}
