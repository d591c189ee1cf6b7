//! The trainer: one run (model × optimizer plan × seed) for a number of epochs, recording what
//! the paper plots, with atomic checkpoints, exact resume and NaN detection.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use explr_data::{Dataset, Loader, LoaderConfig};
use explr_nn::ParamStore;
use explr_zoo::{Model, ModelSpec};

use crate::checkpoint::{self, Fingerprint};
use crate::context::Progress;
use crate::records::{write_records, EpochRecord};
use explr_io::{write_atomic, IoError};
use explr_manifest::plan::OptimizerPlan;

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading or writing a file of the run failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The metrics file could not be read or written.
    #[error(transparent)]
    Records(#[from] crate::records::RecordsError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Batching the data failed.
    #[error(transparent)]
    Data(#[from] explr_data::DataError),
    /// Building or running the model failed.
    #[error(transparent)]
    Zoo(#[from] explr_zoo::ZooError),
    /// Saving or loading parameters failed.
    #[error(transparent)]
    Nn(#[from] explr_nn::NnError),
    /// The schedule or the optimizer failed.
    #[error(transparent)]
    Schedule(#[from] explr_schedule::ScheduleError),
    /// The optimizer of the plan could not be built.
    #[error(transparent)]
    Plan(#[from] explr_manifest::plan::PlanError),
    /// A checkpoint could not be written, or could not be trusted on resume.
    #[error("{run}")]
    Checkpoint {
        /// The run.
        run: String,
        /// What went wrong.
        #[source]
        source: Box<crate::checkpoint::CheckpointError>,
    },
    /// Training diverged.
    #[error("{run}: {quantity} is {value} at epoch {epoch}, step {step}; the run stopped{}", match checkpoint {
        Some(c) => format!(" and its last good checkpoint is kept in {}", c.display()),
        None => " before any checkpoint was written".to_string(),
    })]
    NonFinite {
        /// The run.
        run: String,
        /// Epoch (1-based).
        epoch: usize,
        /// Updates done.
        step: u64,
        /// What went non-finite.
        quantity: String,
        /// Its value.
        value: f64,
        /// The last good checkpoint.
        checkpoint: Option<PathBuf>,
    },
    /// The process was asked to stop (a signal): the run stopped between epochs, its last
    /// epoch checkpointed.
    #[error("{run}: stopped on request after epoch {epoch} of {epochs}{}; --resume continues it", match checkpoint {
        Some(c) => format!(", checkpoint in {}", c.display()),
        None => ", before its first epoch".to_string(),
    })]
    Stopped {
        /// The run.
        run: String,
        /// Epochs done.
        epoch: usize,
        /// Epochs of the run.
        epochs: usize,
        /// The checkpoint it continues from.
        checkpoint: Option<PathBuf>,
    },
    /// A weight snapshot could not be read.
    #[error("{}: {message}; rerun without --resume to train the run again", path.display())]
    Snapshot {
        /// The file (or run folder).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Everything one run needs.
pub struct TrainingSetup<'a> {
    /// Key for progress and messages (`model/run/seed-0`).
    pub key: String,
    /// The model.
    pub model: &'a ModelSpec,
    /// The data.
    pub dataset: &'a Dataset,
    /// Minibatch size.
    pub batch_size: usize,
    /// Standard augmentation.
    pub augment: bool,
    /// Precision.
    pub dtype: DType,
    /// Device.
    pub device: &'a Device,
    /// Seed of init, shuffling and augmentation.
    pub seed: u64,
    /// Epochs.
    pub epochs: usize,
    /// Optimizer.
    pub plan: OptimizerPlan,
    /// Checkpoint every N epochs (0: at the end only).
    pub checkpoint_every: usize,
    /// Where the scale-invariant weights are kept ([`read_snapshot`]): at the end of an epoch
    /// or after an update, for checks that compare two runs in weight space.
    pub snapshots: Vec<SnapshotAt>,
    /// Folder of this run's results.
    pub dir: PathBuf,
    /// Continue from the last checkpoint when there is one.
    pub resume: bool,
    /// Polled before each epoch: when set, the run checkpoints what it has and stops with
    /// [`TrainError::Stopped`].
    pub stop: crate::context::StopSignal,
}

/// Everything that decides a run's numbers except its length: the model, the data (its
/// identity, sizes and classes), batch size, augmentation, dtype, device kind, seed, schedule
/// and optimizer.
pub struct RunIdentity<'a> {
    /// The model.
    pub model: &'a ModelSpec,
    /// Training images, test images, classes.
    pub data: [usize; 3],
    /// The data's identity ([`explr_manifest::dataset::identity`]: its name and a digest of its bytes);
    /// `None` where the data was not read (a run's state judged from the manifest alone), and
    /// then the fingerprint leaves it out.
    pub data_identity: Option<String>,
    /// The device; `None` where it is not known (a run's state judged from another machine),
    /// and then the fingerprint leaves it out.
    pub device: Option<&'a Device>,
    /// Minibatch size.
    pub batch_size: usize,
    /// Standard augmentation.
    pub augment: bool,
    /// Precision.
    pub dtype: DType,
    /// Seed.
    pub seed: u64,
    /// Optimizer.
    pub plan: &'a OptimizerPlan,
}

/// The kind of `device` (`cpu`, `cuda`, `metal`): kernels differ between kinds, so a run
/// resumes only on the kind it started on.
pub fn device_kind(device: &Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else if device.is_metal() {
        "metal"
    } else {
        "cpu"
    }
}

impl RunIdentity<'_> {
    /// A fingerprint of the configuration, component by component: `model`, `data` (identity),
    /// `data_sizes`, `batch_size`, `augment`, `dtype`, `device`, `seed`, `schedule` (each
    /// group's LR) and `optimizer` (momentum, each group's weight decay). A checkpoint resumes
    /// only into a run with the same fingerprint, so that a manifest edited since (another
    /// batch size, schedule, width or data) starts over instead of continuing the old run, and
    /// the refusal names the components that changed. The specs are hashed as JSON (FNV-1a, as
    /// the manifest describes them), so a field added later with its default left out of the
    /// JSON keeps old checkpoints valid.
    pub fn fingerprint(&self) -> Fingerprint {
        let plan = self.plan;
        let [train, test, classes] = self.data;
        let hash = |v: serde_json::Value| explr_io::fingerprint(&v.to_string());
        let (si, others) = (plan.scale_invariant.describe(), plan.others.describe());
        let mut components = vec![
            ("model", hash(serde_json::json!(self.model))),
            (
                "data_sizes",
                format!("train {train}, test {test}, classes {classes}"),
            ),
            ("batch_size", self.batch_size.to_string()),
            ("augment", self.augment.to_string()),
            ("dtype", format!("{:?}", self.dtype)),
            ("seed", self.seed.to_string()),
            (
                "schedule",
                hash(serde_json::json!({
                    "scale_invariant": si["lr"],
                    "others": others["lr"],
                })),
            ),
            (
                "optimizer",
                hash(serde_json::json!({
                    "momentum": plan.momentum,
                    "weight_decay": {
                        "scale_invariant": si["weight_decay"],
                        "others": others["weight_decay"],
                    },
                })),
            ),
        ];
        if let Some(identity) = &self.data_identity {
            components.push(("data", identity.clone()));
        }
        if let Some(device) = self.device {
            components.push(("device", device_kind(device).to_string()));
        }
        Fingerprint::new(components)
    }
}

/// The fingerprint of `setup`'s configuration ([`RunIdentity::fingerprint`]), every component
/// included (the data's identity hashes the data's bytes: tens of milliseconds for CIFAR-10).
pub fn config_fingerprint(setup: &TrainingSetup<'_>) -> Fingerprint {
    RunIdentity {
        model: setup.model,
        data: [
            setup.dataset.train().len(),
            setup.dataset.test().len(),
            setup.dataset.num_classes(),
        ],
        data_identity: Some(explr_manifest::dataset::identity(setup.dataset)),
        device: Some(setup.device),
        batch_size: setup.batch_size,
        augment: setup.augment,
        dtype: setup.dtype,
        seed: setup.seed,
        plan: &setup.plan,
    }
    .fingerprint()
}

/// Mean cross-entropy and the number of correct predictions.
pub fn loss_and_correct(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, f64), TrainError> {
    let (loss, correct) = loss_and_correct_on_device(logits, labels)?;
    Ok((loss, correct.to_scalar::<f64>()?))
}

/// [`loss_and_correct`] with the count left on the logits' device (an f64 scalar tensor), so
/// that a training or evaluation step reads nothing back to the host.
pub fn loss_and_correct_on_device(
    logits: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor), TrainError> {
    let loss = candle_nn::loss::cross_entropy(logits, labels)?;
    let pred = logits.argmax(D::Minus1)?;
    let correct = pred.eq(labels)?.to_dtype(DType::F64)?.sum_all()?;
    Ok((loss, correct))
}

/// The scale-invariant group flattened into one f64 vector (sorted by name).
fn flat(vars: &[(String, Var)]) -> Result<Tensor, TrainError> {
    let parts: Vec<Tensor> = vars
        .iter()
        .map(|(_, v)| v.as_tensor().detach().flatten_all()?.to_dtype(DType::F64))
        .collect::<candle_core::Result<_>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

fn norm(t: &Tensor) -> Result<f64, TrainError> {
    Ok(t.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt())
}

/// ‖t‖ as a scalar tensor on t's device.
fn norm_on_device(t: &Tensor) -> Result<Tensor, TrainError> {
    Ok(t.sqr()?.sum_all()?.sqrt()?)
}

/// The two norms ‖â − b̂‖ and ‖â + b̂‖ (â = a/‖a‖) whose `2·atan2` is the angle between two
/// vectors (accurate for tiny angles), as a `[2]` tensor on the vectors' device: each step
/// records one, and [`AngleLog::sum`] reads them back once per epoch.
fn angle_parts(a: &Tensor, b: &Tensor) -> Result<Tensor, TrainError> {
    let ua = a.broadcast_mul(&norm_on_device(a)?.recip()?)?;
    let ub = b.broadcast_mul(&norm_on_device(b)?.recip()?)?;
    Ok(Tensor::stack(
        &[
            norm_on_device(&(&ua - &ub)?)?,
            norm_on_device(&(&ua + &ub)?)?,
        ],
        0,
    )?)
}

/// The angles between consecutive θ of one epoch, kept on the device until the epoch's readout.
#[derive(Default)]
struct AngleLog {
    parts: Vec<Tensor>,
}

impl AngleLog {
    /// Records the angle between `a` and `b`.
    fn push(&mut self, a: &Tensor, b: &Tensor) -> Result<(), TrainError> {
        self.parts.push(angle_parts(a, b)?);
        Ok(())
    }

    /// The sum of the recorded angles in order (one copy to the host); 0 when none.
    fn sum(&self) -> Result<f64, TrainError> {
        if self.parts.is_empty() {
            return Ok(0.0);
        }
        let parts = Tensor::stack(&self.parts, 0)?.to_vec2::<f64>()?;
        Ok(parts.iter().map(|p| 2.0 * p[0].atan2(p[1])).sum())
    }
}

/// The training losses of one epoch's steps, kept on the device until the epoch's readout.
#[derive(Default)]
struct StepLosses {
    /// Each step's mean loss as an f64 scalar tensor.
    losses: Vec<Tensor>,
    /// Each step's batch size.
    sizes: Vec<usize>,
}

/// What [`StepLosses::read`] found.
enum LossReadout {
    /// Every loss is finite: Σ loss·batch (summed in step order) and Σ batch.
    Finite { weighted_sum: f64, seen: usize },
    /// The first non-finite loss: its step within the epoch and its value.
    NonFinite { index: usize, value: f64 },
}

impl StepLosses {
    /// Records one step's mean loss over a batch of `size`.
    fn push(&mut self, loss: &Tensor, size: usize) -> Result<(), TrainError> {
        self.losses.push(loss.detach().to_dtype(DType::F64)?);
        self.sizes.push(size);
        Ok(())
    }

    /// Reads the losses back (one copy to the host) and checks them.
    fn read(&self) -> Result<LossReadout, TrainError> {
        if self.losses.is_empty() {
            return Ok(LossReadout::Finite {
                weighted_sum: 0.0,
                seen: 0,
            });
        }
        let values = Tensor::stack(&self.losses, 0)?.to_vec1::<f64>()?;
        let (mut weighted_sum, mut seen) = (0.0, 0usize);
        for (index, (&value, &size)) in values.iter().zip(&self.sizes).enumerate() {
            if !value.is_finite() {
                return Ok(LossReadout::NonFinite { index, value });
            }
            weighted_sum += value * size as f64;
            seen += size;
        }
        Ok(LossReadout::Finite { weighted_sum, seen })
    }
}

/// Evaluates `model` on `split` in evaluation mode: (mean loss, accuracy). The sums stay on
/// the device until the end.
pub fn evaluate(model: &Model, loader: &Loader) -> Result<(f64, f64), TrainError> {
    let zero = || Tensor::zeros((), DType::F64, loader.device());
    let (mut loss_sum, mut correct, mut n) = (zero()?, zero()?, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        // Detached: the weights are variables, so the forward pass records a graph; summed
        // into `loss_sum`, every batch's graph (and its activations) would live until the end
        // of the split (tests/eval_memory.rs).
        let logits = model.forward_t(&batch.images, false)?.detach();
        let (loss, c) = loss_and_correct_on_device(&logits, &batch.labels)?;
        let b = batch.indices.len();
        loss_sum = (loss_sum + loss.to_dtype(DType::F64)?.affine(b as f64, 0.0)?)?;
        correct = (correct + c)?;
        n += b;
    }
    let (loss_sum, correct) = (loss_sum.to_scalar::<f64>()?, correct.to_scalar::<f64>()?);
    Ok((loss_sum / n.max(1) as f64, correct / n.max(1) as f64))
}

/// The name of the layer whose weight norm is recorded: the first conv of the second residual
/// block (the paper's Figure 1 layer), or the first scale-invariant weight.
fn tracked_layer(model: &Model) -> Option<String> {
    let si = model.scale_invariant();
    si.iter()
        .map(|(n, _)| n.clone())
        .find(|n| n == "layer1.1.conv1.weight")
        .or_else(|| si.first().map(|(n, _)| n.clone()))
}

/// Trains one run, writing `metrics.jsonl`, `metrics.csv`, `meta.json` and checkpoints under
/// `setup.dir`; returns every epoch's record.
pub fn train(
    setup: &TrainingSetup<'_>,
    progress: &dyn Progress,
) -> Result<Vec<EpochRecord>, TrainError> {
    let mut run = TrainingRun::new(setup)?;
    let (start_epoch, mut records) = run.resume_or_clear()?;
    progress.start(&setup.key, setup.epochs as u64);
    let resumed = if start_epoch > 0 {
        format!("resumed from its checkpoint after epoch {start_epoch}")
    } else {
        String::new()
    };
    progress.update(&setup.key, start_epoch as u64, &resumed);
    // The epochs the latest checkpoint holds.
    let mut checkpointed = start_epoch;
    for epoch in start_epoch..setup.epochs {
        if setup.stop.requested() {
            if records.len() > checkpointed {
                run.save(&records)?;
            }
            return Err(TrainError::Stopped {
                run: setup.key.clone(),
                epoch,
                epochs: setup.epochs,
                checkpoint: run.last_checkpoint(),
            });
        }
        records.push(run.epoch(epoch)?);
        if setup.snapshots.contains(&SnapshotAt::Epoch(epoch + 1)) {
            write_snapshot(
                &setup.dir,
                SnapshotAt::Epoch(epoch + 1),
                &run.si_vars,
                &run.config,
            )?;
        }
        write_records(&setup.dir, &records)?;
        let last = epoch + 1 == setup.epochs;
        if last || (setup.checkpoint_every > 0 && (epoch + 1) % setup.checkpoint_every == 0) {
            run.save(&records)?;
            checkpointed = epoch + 1;
        }
        let r = records.last().expect("just pushed");
        progress.update(
            &setup.key,
            (epoch + 1) as u64,
            &format!(
                "loss {:.3} train {:.3} test {:.3}",
                r.train_loss, r.train_acc, r.test_acc
            ),
        );
    }
    let r = records.last();
    progress.finish(
        &setup.key,
        &match r {
            Some(r) => format!("test acc {:.4}, train loss {:.4}", r.test_acc, r.train_loss),
            None => "no epochs".into(),
        },
    );
    Ok(records)
}

/// One run being trained ([`train`]): its model, optimizer, data and checkpoint folder.
struct TrainingRun<'s, 'a> {
    setup: &'s TrainingSetup<'a>,
    store: ParamStore,
    model: Model,
    sgd: explr_schedule::Sgd,
    train_loader: Loader,
    test_loader: Loader,
    /// The layer whose weight norm is recorded ([`tracked_layer`]).
    layer: Option<String>,
    /// The scale-invariant group.
    si_vars: Vec<(String, Var)>,
    config: Fingerprint,
    ckpt: PathBuf,
}

/// One epoch's pass over the training split, still on the device.
struct EpochPass {
    losses: StepLosses,
    /// The number of correct training predictions (an f64 scalar tensor).
    correct: Tensor,
    angles: AngleLog,
    /// θ of the scale-invariant group after the epoch's last step.
    si: Tensor,
}

impl<'s, 'a> TrainingRun<'s, 'a> {
    /// The model (initialised from the seed), its optimizer and the run's loaders.
    fn new(setup: &'s TrainingSetup<'a>) -> Result<Self, TrainError> {
        let store = ParamStore::new(setup.device, setup.dtype, setup.seed);
        let model = Model::new(setup.model, &store)?;
        let sgd = setup.plan.build_sgd(&model)?;
        let train_cfg = LoaderConfig {
            augment: if setup.augment {
                LoaderConfig::train(1, 0).augment
            } else {
                None
            },
            ..LoaderConfig::train(setup.batch_size, setup.seed)
        }
        .with_dtype(setup.dtype);
        let train_loader = Loader::new(setup.dataset.train(), train_cfg, setup.device)?;
        let test_loader = Loader::new(
            setup.dataset.test(),
            LoaderConfig::eval(setup.batch_size.max(256)).with_dtype(setup.dtype),
            setup.device,
        )?;
        let layer = tracked_layer(&model);
        let si_vars = model.scale_invariant();
        Ok(Self {
            config: config_fingerprint(setup),
            ckpt: checkpoint::folder(&setup.dir),
            setup,
            store,
            model,
            sgd,
            train_loader,
            test_loader,
            layer,
            si_vars,
        })
    }

    /// With `--resume`, restores the last checkpoint (when there is one) and rewrites the
    /// metrics it holds; otherwise deletes any old checkpoint. Returns the epochs done and
    /// their records.
    fn resume_or_clear(&mut self) -> Result<(usize, Vec<EpochRecord>), TrainError> {
        let setup = self.setup;
        if !setup.resume {
            checkpoint::clear(&setup.dir)?;
            return Ok((0, Vec::new()));
        }
        let restored = checkpoint::restore(
            &setup.dir,
            &self.store,
            &mut self.sgd,
            &self.config,
            setup.epochs,
        )
        .map_err(|e| TrainError::Checkpoint {
            run: setup.key.clone(),
            source: Box::new(e),
        })?;
        let Some(r) = restored else {
            return Ok((0, Vec::new()));
        };
        // The metrics may run ahead of the checkpoint: those epochs are trained again.
        write_records(&setup.dir, &r.records)?;
        Ok((r.epoch, r.records))
    }

    /// Checkpoints the run after `records.len()` epochs.
    fn save(&self, records: &[EpochRecord]) -> Result<(), TrainError> {
        checkpoint::save(
            &self.setup.dir,
            &self.store,
            &self.sgd,
            &self.config,
            records,
        )
        .map_err(|e| TrainError::Checkpoint {
            run: self.setup.key.clone(),
            source: Box::new(e),
        })
    }

    /// The checkpoint folder, when a checkpoint was written.
    fn last_checkpoint(&self) -> Option<PathBuf> {
        self.ckpt.join("LATEST").exists().then(|| self.ckpt.clone())
    }

    /// The error of a non-finite `quantity` at `epoch` (1-based) and `step`.
    fn non_finite(&self, epoch: usize, step: u64, quantity: &str, value: f64) -> TrainError {
        TrainError::NonFinite {
            run: self.setup.key.clone(),
            epoch,
            step,
            quantity: quantity.into(),
            value,
            checkpoint: self.last_checkpoint(),
        }
    }

    /// Trains epoch `epoch` (0-based), evaluates the model and returns the epoch's record,
    /// every watched quantity checked finite.
    fn epoch(&mut self, epoch: usize) -> Result<EpochRecord, TrainError> {
        let started = Instant::now();
        let epoch_start_step = self.sgd.step_count();
        let pass = self.train_pass(epoch)?;
        let (loss_sum, seen) = match pass.losses.read()? {
            LossReadout::Finite { weighted_sum, seen } => (weighted_sum, seen),
            LossReadout::NonFinite { index, value } => {
                // Later steps of this epoch trained on from the diverged weights, but nothing of
                // the epoch is recorded or checkpointed.
                let step = epoch_start_step + index as u64;
                return Err(self.non_finite(epoch + 1, step, "training loss", value));
            }
        };
        let (correct, angle_sum) = (pass.correct.to_scalar::<f64>()?, pass.angles.sum()?);
        let (test_loss, test_acc) = evaluate(&self.model, &self.test_loader)?;
        let si_norm = norm(&pass.si)?;
        let step = self.sgd.step_count();
        let lr = self
            .setup
            .plan
            .scale_invariant
            .lr_at(step.saturating_sub(1))?;
        let layer_norm = match &self.layer {
            Some(name) => self.model.weight_norm(name)?,
            None => f64::NAN,
        };
        let steps_per_epoch = self.train_loader.steps_per_epoch() as u64;
        let record = EpochRecord {
            epoch: epoch + 1,
            step,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct / seen.max(1) as f64,
            test_loss,
            test_acc,
            si_norm,
            layer_norm,
            norm_sq_over_lr: si_norm * si_norm / lr,
            effective_lr: lr / (si_norm * si_norm),
            angular_update: angle_sum / steps_per_epoch.max(1) as f64,
            wall_s: started.elapsed().as_secs_f64(),
        };
        // Every quantity a checkpoint must hold finite (the training loss was checked above).
        for (quantity, value) in record.watched() {
            if !value.is_finite() {
                return Err(self.non_finite(epoch + 1, step, quantity, value));
            }
        }
        Ok(record)
    }

    /// One pass over the training split, one optimizer step per batch. Nothing is read back
    /// to the host during the epoch (on a GPU a read waits for every queued kernel): the
    /// losses, the accuracy count and the angles stay on the device until the epoch's end,
    /// which also checks the losses for the first non-finite one.
    fn train_pass(&mut self, epoch: usize) -> Result<EpochPass, TrainError> {
        let mut losses = StepLosses::default();
        let mut correct = Tensor::zeros((), DType::F64, self.setup.device)?;
        let mut angles = AngleLog::default();
        // θ_t of the scale-invariant group; each step's θ_{t+1} becomes the next step's θ_t.
        let mut si = flat(&self.si_vars)?;
        for batch in self.train_loader.epoch(epoch as u64) {
            let batch = batch?;
            let logits = self.model.forward_t(&batch.images, true)?;
            let (loss, c) = loss_and_correct_on_device(&logits, &batch.labels)?;
            losses.push(&loss, batch.indices.len())?;
            let grads = loss.backward()?;
            self.sgd.step(&grads)?;
            let at = SnapshotAt::Step(self.sgd.step_count());
            if self.setup.snapshots.contains(&at) {
                write_snapshot(&self.setup.dir, at, &self.si_vars, &self.config)?;
            }
            let after = flat(&self.si_vars)?;
            angles.push(&si, &after)?;
            si = after;
            correct = (correct + c)?;
        }
        Ok(EpochPass {
            losses,
            correct,
            angles,
            si,
        })
    }
}

/// Where in a run a weight snapshot is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SnapshotAt {
    /// At the end of an epoch (1-based).
    Epoch(usize),
    /// After an update (the run's update count, from 1), e.g. inside the first epoch, to see
    /// when two runs part.
    Step(u64),
}

impl std::fmt::Display for SnapshotAt {
    /// `epoch-3` or `step-8`: the snapshot's file stem.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotAt::Epoch(e) => write!(f, "epoch-{e}"),
            SnapshotAt::Step(s) => write!(f, "step-{s}"),
        }
    }
}

/// The file of the weight snapshot the run in `dir` keeps at `at`
/// (`weights/epoch-N.safetensors`, `weights/step-N.safetensors`).
pub fn snapshot_path(dir: &Path, at: SnapshotAt) -> PathBuf {
    dir.join("weights").join(format!("{at}.safetensors"))
}

/// The record of the weight snapshot at `at` ([`snapshot_path`]): which run wrote it (its
/// configuration fingerprint) and the digest of the file, `weights/epoch-N.json`.
pub fn snapshot_record_path(dir: &Path, at: SnapshotAt) -> PathBuf {
    snapshot_path(dir, at).with_extension("json")
}

/// What `weights/epoch-N.json` (or `step-N.json`) says of its snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotRecord {
    /// The epoch after which the weights were kept (an epoch snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<usize>,
    /// The update after which the weights were kept (a step snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<u64>,
    /// The digest ([`explr_io::digest`]) of the snapshot file.
    digest: String,
    /// The configuration fingerprint of the run that wrote it.
    config: Fingerprint,
}

impl SnapshotRecord {
    /// Where the record says its snapshot was kept.
    fn at(&self) -> Option<SnapshotAt> {
        match (self.epoch, self.step) {
            (Some(e), None) => Some(SnapshotAt::Epoch(e)),
            (None, Some(s)) => Some(SnapshotAt::Step(s)),
            _ => None,
        }
    }
}

/// Keeps the scale-invariant weights at `at` in `dir/weights/` (safetensors, atomically), then
/// their record (the digest of the file and the run's fingerprint `config`, atomically).
fn write_snapshot(
    dir: &Path,
    at: SnapshotAt,
    vars: &[(String, Var)],
    config: &Fingerprint,
) -> Result<(), TrainError> {
    let path = snapshot_path(dir, at);
    let tensors: Vec<(&str, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_tensor().detach()))
        .collect();
    let bytes = safetensors::serialize(tensors, None).map_err(|e| TrainError::Snapshot {
        path: path.clone(),
        message: format!("cannot serialize the weights ({e})"),
    })?;
    write_atomic(&path, &bytes)?;
    let (epoch, step) = match at {
        SnapshotAt::Epoch(e) => (Some(e), None),
        SnapshotAt::Step(s) => (None, Some(s)),
    };
    let record = SnapshotRecord {
        epoch,
        step,
        digest: explr_io::digest(&bytes),
        config: config.clone(),
    };
    // Plain numbers and strings: serializing cannot fail.
    let text = serde_json::to_string_pretty(&record).unwrap_or_default();
    Ok(write_atomic(
        &snapshot_record_path(dir, at),
        text.as_bytes(),
    )?)
}

/// The bytes of the weight snapshot the run in `dir` kept at `at`, verified against its
/// record: the file's digest, and the fingerprint of the run that wrote it against `config`
/// (the components `config` holds, [`Fingerprint::changed`]). A snapshot without a record
/// (written by an older explr, or copied in), damaged, replaced or written by another run is
/// an error naming the file.
pub fn verify_snapshot(
    dir: &Path,
    at: SnapshotAt,
    config: &Fingerprint,
) -> Result<Vec<u8>, TrainError> {
    let path = snapshot_path(dir, at);
    let record_path = snapshot_record_path(dir, at);
    let refuse = |message: String| TrainError::Snapshot {
        path: path.clone(),
        message,
    };
    let Some(text) = explr_io::read_if_exists(&record_path)? else {
        return Err(refuse(format!(
            "has no record of the run that wrote it ({} is missing: written by an older explr, \
             or copied in)",
            record_path.display()
        )));
    };
    let record: SnapshotRecord = serde_json::from_str(&text).map_err(|e| {
        refuse(format!(
            "its record {} cannot be read ({e})",
            record_path.display()
        ))
    })?;
    let bytes = std::fs::read(&path).map_err(|source| IoError {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    let found = explr_io::digest(&bytes);
    if found != record.digest || record.at() != Some(at) {
        return Err(refuse(format!(
            "does not match the digest {} recorded for {} (found {found}): the file was \
             damaged or replaced since it was written",
            record.digest,
            record
                .at()
                .map_or("no snapshot".to_string(), |a| a.to_string())
        )));
    }
    let changed = config.changed(&record.config);
    if !changed.is_empty() {
        return Err(refuse(format!(
            "was written by a run with another {} than this run's",
            changed.join(", ")
        )));
    }
    Ok(bytes)
}

/// The scale-invariant weights a run in `dir` kept at `at` (see [`TrainingSetup::snapshots`]),
/// by name, on `device`, verified ([`verify_snapshot`]) against the run's fingerprint `config`.
pub fn read_snapshot(
    dir: &Path,
    at: SnapshotAt,
    config: &Fingerprint,
    device: &Device,
) -> Result<std::collections::BTreeMap<String, Tensor>, TrainError> {
    let path = snapshot_path(dir, at);
    let bytes = verify_snapshot(dir, at, config)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        TrainError::Snapshot {
            path: path.clone(),
            message: format!("not a weight snapshot ({e})"),
        }
    })?;
    Ok(tensors.into_iter().collect())
}
