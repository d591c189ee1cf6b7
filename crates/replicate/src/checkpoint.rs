//! A run's checkpoints, written and read as one unit.
//!
//! Each checkpoint is a folder `checkpoints/epoch-N/` holding the model (`model.safetensors`),
//! the optimizer (`optimizer.safetensors`, `optimizer.json`) and `meta.json` (epoch, step, the
//! run's configuration fingerprint, and every epoch's record so far). The folder is written in
//! full and synced first; then `checkpoints/LATEST`, one line naming it, is replaced atomically:
//! that one rename is the moment the checkpoint exists. A reader follows `LATEST` only, so it
//! sees the old checkpoint or the new one, never a mix; folders `LATEST` does not name are the
//! leftovers of an interrupted write or of older checkpoints, and are removed.
//!
//! Resume verifies before it trusts: the fingerprint (the same model, data, dtype, seed and
//! optimizer plan), the epoch (not past the run's end), the step (the optimizer's own count),
//! and `metrics.jsonl` (it must begin with exactly the checkpoint's records).

use std::path::{Path, PathBuf};

use explr_nn::ParamStore;
use explr_schedule::Sgd;
use serde::{Deserialize, Serialize};

use crate::io::{err as io, write_atomic, IoError};
use crate::records::{read_records, EpochRecord, RecordsError};

/// The folder of a run's checkpoints.
pub fn folder(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// What a checkpoint says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    /// Epochs done.
    epoch: usize,
    /// Updates done.
    step: u64,
    /// The configuration fingerprint of the run that wrote it.
    config: String,
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
    #[error("the checkpoint in {} was written by a run with another model, data, batch size, dtype, seed or optimizer plan (the manifest changed since it was written); run without --resume to start this run over", path.display())]
    OtherConfiguration {
        /// The checkpoint folder.
        path: PathBuf,
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

/// Writes the checkpoint after `records.len()` epochs: the folder in full, then `LATEST`.
pub fn save(
    run_dir: &Path,
    store: &ParamStore,
    sgd: &Sgd,
    config: &str,
    records: &[EpochRecord],
) -> Result<(), CheckpointError> {
    let root = folder(run_dir);
    let epoch = records.len();
    let name = format!("epoch-{epoch}");
    let dir = root.join(&name);
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
    let meta = Meta {
        epoch,
        step: sgd.step_count(),
        config: config.to_string(),
        records: records.to_vec(),
    };
    // Plain numbers and strings: serializing cannot fail.
    let text = serde_json::to_string_pretty(&meta).unwrap_or_default();
    write_atomic(&dir.join("meta.json"), text.as_bytes())?;
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
    ] {
        let path = dir.join(f);
        std::fs::File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(io("syncing", &path))?;
    }
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
/// the run's configuration fingerprint `config`, its length `epochs` and its `metrics.jsonl`)
/// but without loading it: what a resume would continue from. `None` when the run has no
/// checkpoint.
pub fn inspect(
    run_dir: &Path,
    config: &str,
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
    config: &str,
    epochs: usize,
) -> Result<Option<(PathBuf, Meta)>, CheckpointError> {
    let root = folder(run_dir);
    let latest = root.join("LATEST");
    let Some(text) = crate::io::read_if_exists(&latest)? else {
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
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|e| inconsistent(&meta_path, format!("not a checkpoint's metadata ({e})")))?;
    if meta.config != config {
        return Err(CheckpointError::OtherConfiguration { path: dir });
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
    Ok(Some((dir, meta)))
}

/// Restores the latest checkpoint of the run in `run_dir` into `store` and `sgd`, after
/// checking it against the run's configuration fingerprint `config`, its length `epochs` and
/// its `metrics.jsonl`; `None` when the run has no checkpoint.
pub fn restore(
    run_dir: &Path,
    store: &ParamStore,
    sgd: &mut Sgd,
    config: &str,
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
