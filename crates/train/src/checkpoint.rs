//! A run's checkpoints, written and read as one unit.
//!
//! Each checkpoint is a folder `checkpoints/epoch-N/` holding the model (`model.safetensors`),
//! the optimizer (`optimizer.safetensors`, `optimizer.json`) and `meta.json` (epoch, step, the
//! run's configuration fingerprint component by component, a digest of each of the other
//! files, and every epoch's record so far). The folder is written in full and synced first;
//! then `checkpoints/LATEST`, one line naming it, is replaced atomically: that one rename is the
//! moment the checkpoint exists. A reader follows `LATEST` only, so it sees the old checkpoint
//! or the new one, never a mix; folders `LATEST` does not name are the leftovers of an
//! interrupted write or of older checkpoints, and are removed. A checkpoint holds finite
//! numbers only: one whose records or tensors are not finite is never named by `LATEST`, so the
//! latest checkpoint is always a good one.
//!
//! Resume verifies before it trusts: the fingerprint (the same model, data, batching, dtype,
//! device, seed, schedule and optimizer; a difference names the components that changed), each
//! file's digest (a damaged or replaced file is named), the tensors (finite), the epoch (not
//! past the run's end), the step (the optimizer's own count), and `metrics.jsonl` (it must
//! begin with exactly the checkpoint's records).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use explr_nn::ParamStore;
use explr_schedule::Sgd;
use serde::{Deserialize, Serialize};

use crate::records::{read_records, EpochRecord, RecordsError};
use explr_io::{err as io, write_atomic, IoError};

/// The folder of a run's checkpoints.
pub fn folder(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Everything that decides a run's numbers, component by component (`model`, `data`,
/// `dtype`, …), each as a short value or a hash of its description. A checkpoint or weight
/// snapshot records the fingerprint of the run that wrote it; a reader compares the components
/// it knows ([`Fingerprint::changed`]), so that a refusal names what changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(BTreeMap<String, String>);

impl Fingerprint {
    /// A fingerprint of `components` (name, value).
    pub fn new<'a>(components: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        Self(
            components
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The components by name.
    pub fn components(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The components of `self` that `recorded` holds with another value or not at all, each
    /// as ``"`name` (recorded value, now value)"``. Components `recorded` holds and `self` does
    /// not are not compared: `self` leaves out what its caller cannot know (the data's bytes,
    /// when the data was not read).
    pub fn changed(&self, recorded: &Fingerprint) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| recorded.0.get(*k) != Some(*v))
            .map(|(k, v)| match recorded.0.get(k) {
                Some(was) => format!("`{k}` ({was}, now {v})"),
                None => format!("`{k}` (not recorded, now {v})"),
            })
            .collect()
    }
}

/// The files of a checkpoint folder whose digests `meta.json` records.
const FILES: [&str; 3] = [
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
];

/// What a checkpoint says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    /// Epochs done.
    epoch: usize,
    /// Updates done.
    step: u64,
    /// The configuration fingerprint of the run that wrote it.
    config: Fingerprint,
    /// The digest ([`explr_io::digest`]) of each of [`FILES`], by name.
    files: BTreeMap<String, String>,
    /// Every epoch's record up to `epoch`.
    records: Vec<EpochRecord>,
}

/// Why a checkpoint could not be written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The metrics file could not be read.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// Saving or loading the model failed (the cause names the file and the OS error).
    #[error("the model in checkpoint {}", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: explr_nn::NnError,
    },
    /// Saving or loading the optimizer failed (the cause says why).
    #[error("the optimizer state in checkpoint {}", path.display())]
    Optimizer {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: explr_schedule::ScheduleError,
    },
    /// The checkpoint was written by a run with another configuration.
    #[error("the checkpoint in {} was written by a run with another {} (the manifest, the data or the device changed since it was written); run without --resume to start this run over", path.display(), changed.join(", "))]
    OtherConfiguration {
        /// The checkpoint folder.
        path: PathBuf,
        /// The components of the fingerprint that changed ([`Fingerprint::changed`]).
        changed: Vec<String>,
    },
    /// The checkpoint was written by an older explr, which recorded neither the fingerprint's
    /// components nor the files' digests.
    #[error("{}: the checkpoint was written by an older explr, which recorded neither what its run's configuration was made of nor digests of its files; run without --resume to train this run again from the start", path.display())]
    OlderFormat {
        /// Its `meta.json`.
        path: PathBuf,
    },
    /// A file of the checkpoint is not the one that was written (a flipped bit, a copy from
    /// elsewhere).
    #[error("{} does not match the digest its checkpoint recorded when it was written (recorded {recorded}, found {found}): the file was damaged or replaced since; run without --resume to train this run again from the start", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The digest `meta.json` records.
        recorded: String,
        /// The file's digest now.
        found: String,
    },
    /// The checkpoint holds a value that is not finite: it is not a good checkpoint, and is
    /// neither written nor resumed.
    #[error("{}: {what} is not finite, so this is not a good checkpoint; run without --resume to train this run again from the start", path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// What is not finite (a tensor, a record's quantity).
        what: String,
    },
    /// The checkpoint contradicts itself or the run's metrics.
    #[error("{}: {what}; run without --resume to train this run again from the start", path.display())]
    Inconsistent {
        /// The file found wanting.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// The first record of `records` with a watched quantity ([`EpochRecord::watched`]) that is
/// not finite, as `"<quantity> of epoch <n>"`.
fn non_finite_record(records: &[EpochRecord]) -> Option<String> {
    records.iter().find_map(|r| {
        r.watched()
            .into_iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(q, v)| format!("the {q} of epoch {} ({v})", r.epoch))
    })
}

/// The first tensor of a safetensors file's `bytes` with a value that is not finite, as
/// `"tensor `name`"`; `Ok(None)` when all are finite. Floating-point dtypes are checked.
fn non_finite_tensor(bytes: &[u8]) -> Result<Option<String>, String> {
    use safetensors::Dtype;
    let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    for (name, view) in tensors.iter() {
        let data = view.data();
        let finite = match view.dtype() {
            Dtype::F64 => data
                .chunks_exact(8)
                .all(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])).is_finite()),
            Dtype::F32 => data
                .chunks_exact(4)
                .all(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])).is_finite()),
            // The exponent bits all set: inf or NaN.
            Dtype::F16 => data
                .chunks_exact(2)
                .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 != 0x7c00),
            Dtype::BF16 => data
                .chunks_exact(2)
                .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 != 0x7f80),
            _ => true,
        };
        if !finite {
            return Ok(Some(format!("tensor `{name}`")));
        }
    }
    Ok(None)
}

/// Reads the checkpoint file at `path` back: its digest, after checking it against the digest
/// `recorded` for it (when given: a damaged or replaced file is [`CheckpointError::Corrupt`])
/// and that a safetensors file holds finite tensors only.
fn digest_checked(path: &Path, recorded: Option<&str>) -> Result<String, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io("reading", path))?;
    let digest = explr_io::digest(&bytes);
    if let Some(recorded) = recorded.filter(|r| *r != digest) {
        return Err(CheckpointError::Corrupt {
            path: path.to_path_buf(),
            recorded: recorded.to_string(),
            found: digest,
        });
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        let found = non_finite_tensor(&bytes).map_err(|e| CheckpointError::Inconsistent {
            path: path.to_path_buf(),
            what: format!("not a safetensors file ({e})"),
        })?;
        if let Some(what) = found {
            return Err(CheckpointError::NonFinite {
                path: path.to_path_buf(),
                what,
            });
        }
    }
    Ok(digest)
}

/// Writes the checkpoint after `records.len()` epochs: the folder in full, then `LATEST`.
/// A checkpoint whose records (the quantities the trainer watches) or tensors (the model's,
/// the optimizer's) are not finite is refused before `LATEST` names it: the latest checkpoint
/// is always a good one.
pub fn save(
    run_dir: &Path,
    store: &ParamStore,
    sgd: &Sgd,
    config: &Fingerprint,
    records: &[EpochRecord],
) -> Result<(), CheckpointError> {
    let root = folder(run_dir);
    let epoch = records.len();
    let name = format!("epoch-{epoch}");
    let dir = root.join(&name);
    if let Some(what) = non_finite_record(records) {
        return Err(CheckpointError::NonFinite {
            path: dir.join("meta.json"),
            what,
        });
    }
    if dir.exists() {
        // An earlier write of this epoch that LATEST never named: start it over.
        std::fs::remove_dir_all(&dir).map_err(io("removing the unfinished checkpoint", &dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let model = dir.join("model.safetensors");
    store
        .save(&model)
        .map_err(|source| CheckpointError::Model {
            path: model.clone(),
            source,
        })?;
    let optimizer = dir.join("optimizer.safetensors");
    sgd.save(&optimizer)
        .map_err(|source| CheckpointError::Optimizer {
            path: optimizer.clone(),
            source,
        })?;
    let mut files = BTreeMap::new();
    for f in FILES {
        let path = dir.join(f);
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(io("syncing", &path))?;
        // What is on disk is what the digest covers: the file read back. A refusal leaves the
        // folder unnamed by LATEST, a leftover the next save or restore removes.
        files.insert(f.to_string(), digest_checked(&path, None)?);
    }
    let meta = Meta {
        epoch,
        step: sgd.step_count(),
        config: config.clone(),
        files,
        records: records.to_vec(),
    };
    // Plain numbers and strings: serializing cannot fail.
    let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
    write_atomic(&dir.join("meta.json"), text.as_bytes())?;
    // The one rename that makes the checkpoint exist.
    write_atomic(&root.join("LATEST"), format!("{name}\n").as_bytes())?;
    remove_unnamed(&root, &name)
}

/// Removes every checkpoint folder of `root` but `keep`.
fn remove_unnamed(root: &Path, keep: &str) -> Result<(), CheckpointError> {
    for entry in std::fs::read_dir(root)
        .map_err(io("listing", root))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("epoch-") && name != keep {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(io("removing the old checkpoint", &path))?;
        }
    }
    Ok(())
}

/// A checkpoint restored into a run, or found by [`inspect`].
#[derive(Debug)]
pub struct Restored {
    /// Epochs done.
    pub epoch: usize,
    /// Their records.
    pub records: Vec<EpochRecord>,
}

/// The latest checkpoint of the run in `run_dir`, verified as [`restore`] verifies it (against
/// the run's configuration fingerprint `config`, its length `epochs`, its `metrics.jsonl` and
/// the digests of its files) but without loading it: what a resume would continue from. `None` when the run has no
/// checkpoint.
pub fn inspect(
    run_dir: &Path,
    config: &Fingerprint,
    epochs: usize,
) -> Result<Option<Restored>, CheckpointError> {
    Ok(
        verified(run_dir, config, epochs)?.map(|(_, meta)| Restored {
            epoch: meta.epoch,
            records: meta.records,
        }),
    )
}

/// The folder and metadata of the latest checkpoint, verified.
fn verified(
    run_dir: &Path,
    config: &Fingerprint,
    epochs: usize,
) -> Result<Option<(PathBuf, Meta)>, CheckpointError> {
    let root = folder(run_dir);
    let latest = root.join("LATEST");
    let Some(text) = explr_io::read_if_exists(&latest)? else {
        return Ok(None);
    };
    let name = text.trim().to_string();
    let inconsistent = |path: &Path, what: String| CheckpointError::Inconsistent {
        path: path.to_path_buf(),
        what,
    };
    if !name.starts_with("epoch-") || name.contains('/') {
        return Err(inconsistent(
            &latest,
            format!("names `{name}`, not a checkpoint folder"),
        ));
    }
    let dir = root.join(&name);
    let meta_path = dir.join("meta.json");
    let text = std::fs::read_to_string(&meta_path).map_err(io("reading", &meta_path))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| inconsistent(&meta_path, format!("not a checkpoint's metadata ({e})")))?;
    // An older explr wrote one fingerprint string and no digests.
    if value
        .get("config")
        .is_some_and(serde_json::Value::is_string)
        || value.get("files").is_none()
    {
        return Err(CheckpointError::OlderFormat { path: meta_path });
    }
    let meta: Meta = serde_json::from_value(value)
        .map_err(|e| inconsistent(&meta_path, format!("not a checkpoint's metadata ({e})")))?;
    let changed = config.changed(&meta.config);
    if !changed.is_empty() {
        return Err(CheckpointError::OtherConfiguration { path: dir, changed });
    }
    if let Some(what) = non_finite_record(&meta.records) {
        return Err(CheckpointError::NonFinite {
            path: meta_path,
            what,
        });
    }
    if meta.epoch > epochs {
        return Err(inconsistent(
            &meta_path,
            format!(
                "the checkpoint is at epoch {}, past the run's {epochs} epochs",
                meta.epoch
            ),
        ));
    }
    let last_step = meta.records.last().map_or(0, |r| r.step);
    if meta.records.len() != meta.epoch || last_step != meta.step {
        return Err(inconsistent(
            &meta_path,
            format!(
                "epoch {} and step {} disagree with its {} records (last step {last_step})",
                meta.epoch,
                meta.step,
                meta.records.len()
            ),
        ));
    }
    let metrics = run_dir.join("metrics.jsonl");
    let on_disk = if metrics.exists() {
        read_records(&metrics)?
    } else {
        Vec::new()
    };
    // The metrics are written before each checkpoint: they may run ahead of it (a run killed
    // in between), never behind it, and never differ from it.
    if on_disk.len() < meta.epoch || on_disk[..meta.epoch] != meta.records[..] {
        return Err(inconsistent(
            &metrics,
            format!(
                "holds {} records that do not begin with the checkpoint's {} (epoch {}): the file was changed or replaced since",
                on_disk.len(),
                meta.epoch,
                meta.epoch
            ),
        ));
    }
    for f in FILES {
        let path = dir.join(f);
        let Some(recorded) = meta.files.get(f) else {
            return Err(inconsistent(
                &meta_path,
                format!("records no digest of {f}"),
            ));
        };
        digest_checked(&path, Some(recorded))?;
    }
    Ok(Some((dir, meta)))
}

/// Restores the latest checkpoint of the run in `run_dir` into `store` and `sgd`, after
/// checking it against the run's configuration fingerprint `config`, its length `epochs`, its
/// `metrics.jsonl` and the digests of its files; `None` when the run has no checkpoint.
pub fn restore(
    run_dir: &Path,
    store: &ParamStore,
    sgd: &mut Sgd,
    config: &Fingerprint,
    epochs: usize,
) -> Result<Option<Restored>, CheckpointError> {
    let Some((dir, meta)) = verified(run_dir, config, epochs)? else {
        return Ok(None);
    };
    let root = folder(run_dir);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = dir.join("model.safetensors");
    store
        .load(&model)
        .map_err(|source| CheckpointError::Model {
            path: model.clone(),
            source,
        })?;
    let optimizer = dir.join("optimizer.safetensors");
    sgd.load(&optimizer)
        .map_err(|source| CheckpointError::Optimizer {
            path: optimizer.clone(),
            source,
        })?;
    if sgd.step_count() != meta.step {
        return Err(CheckpointError::Inconsistent {
            path: optimizer,
            what: format!(
                "the optimizer is at step {}, the checkpoint at step {}",
                sgd.step_count(),
                meta.step
            ),
        });
    }
    remove_unnamed(&root, &name)?;
    Ok(Some(Restored {
        epoch: meta.epoch,
        records: meta.records,
    }))
}

/// Removes everything a former attempt of the run in `run_dir` left (checkpoints, metrics,
/// weight snapshots): a run without `--resume` starts clean and never reuses them.
pub fn clear(run_dir: &Path) -> Result<(), IoError> {
    for name in ["checkpoints", "weights"] {
        let path = run_dir.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(io("removing the former", &path))?;
        }
    }
    for name in ["metrics.jsonl", "metrics.csv", "metadata.json"] {
        let path = run_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io("removing the former", &path))?;
        }
    }
    Ok(())
}
