//! What a training run records: one [`EpochRecord`] per epoch, kept as `metrics.jsonl` (the
//! record, read back bit for bit on resume and when a summary is collected from disk) and
//! `metrics.csv` (for plotting elsewhere), both written whole and atomically. A metric that is
//! not finite (‖θ‖²/η once a schedule reaches η = 0) is written as the string `"inf"`, `"-inf"`
//! or `"NaN"`, which JSON numbers cannot hold.

use std::path::Path;

use serde::{Deserialize, Serialize};

use explr_io::{write_atomic, IoError};
use explr_manifest::spec::Metric;

/// What one epoch of a run measured (THEORY.md §3 and §8 for the norm quantities). Two
/// records are equal when every number has the same bits (so a record with a NaN equals its
/// copy read back from disk).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch index (1-based: the record after `epoch` epochs of training).
    pub epoch: usize,
    /// Updates done so far.
    pub step: u64,
    /// LR of the scale-invariant group at the epoch's last update.
    #[serde(with = "any_f64")]
    pub lr: f64,
    /// Mean training loss over the epoch (train-mode forward, augmented data).
    #[serde(with = "any_f64")]
    pub train_loss: f64,
    /// Training accuracy over the epoch.
    #[serde(with = "any_f64")]
    pub train_acc: f64,
    /// Test loss (evaluation mode).
    #[serde(with = "any_f64")]
    pub test_loss: f64,
    /// Test accuracy (evaluation mode).
    #[serde(with = "any_f64")]
    pub test_acc: f64,
    /// ‖θ‖ of the scale-invariant group.
    #[serde(with = "any_f64")]
    pub si_norm: f64,
    /// ‖w‖ of the named layer.
    #[serde(with = "any_f64")]
    pub layer_norm: f64,
    /// ‖θ‖²/η of the scale-invariant group (constant at the WD equilibrium; §3).
    #[serde(with = "any_f64")]
    pub norm_sq_over_lr: f64,
    /// Effective LR η/‖θ‖² of the scale-invariant group (§8).
    #[serde(with = "any_f64")]
    pub effective_lr: f64,
    /// Mean angle (radians) between θ_t and θ_{t+1} over the epoch's updates (§8).
    #[serde(with = "any_f64")]
    pub angular_update: f64,
    /// Wall time of the epoch in seconds.
    #[serde(with = "any_f64")]
    pub wall_s: f64,
}

impl PartialEq for EpochRecord {
    fn eq(&self, other: &Self) -> bool {
        self.epoch == other.epoch
            && self.step == other.step
            && self.wall_s.to_bits() == other.wall_s.to_bits()
            && self
                .measured()
                .iter()
                .zip(other.measured())
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

/// An `f64` in JSON: a number when finite, else `"inf"`, `"-inf"` or `"NaN"`.
mod any_f64 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *x {
            x if x.is_finite() => s.serialize_f64(x),
            x if x.is_nan() => s.serialize_str("NaN"),
            x if x > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrWord {
        Number(f64),
        Word(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumberOrWord::deserialize(d)? {
            NumberOrWord::Number(x) => Ok(x),
            NumberOrWord::Word(w) => match w.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "NaN" => Ok(f64::NAN),
                _ => Err(de::Error::custom(format!(
                    "`{w}` is not a number (nor inf, -inf or NaN)"
                ))),
            },
        }
    }
}

impl EpochRecord {
    /// The quantities the trainer watches for divergence, by the name its error gives them:
    /// a record, and a checkpoint, holds finite values of these only.
    pub fn watched(&self) -> [(&'static str, f64); 3] {
        [
            ("training loss", self.train_loss),
            ("weight norm", self.si_norm),
            ("test loss", self.test_loss),
        ]
    }

    /// What the epoch measured: every `f64` of the record but its wall time, in field order (a
    /// field added later cannot be left out: the pattern names them all). Records compare with
    /// these to the bit; a rerun's comparison leaves out the wall time by using them alone.
    pub fn measured(&self) -> [f64; 10] {
        let Self {
            epoch: _,
            step: _,
            lr,
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            si_norm,
            layer_norm,
            norm_sq_over_lr,
            effective_lr,
            angular_update,
            wall_s: _,
        } = *self;
        [
            lr,
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            si_norm,
            layer_norm,
            norm_sq_over_lr,
            effective_lr,
            angular_update,
        ]
    }

    /// The value of `metric` in this epoch.
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Lr => self.lr,
            Metric::TrainLoss => self.train_loss,
            Metric::TrainAcc => self.train_acc,
            Metric::TestLoss => self.test_loss,
            Metric::TestAcc => self.test_acc,
            Metric::SiNorm => self.si_norm,
            Metric::LayerNorm => self.layer_norm,
            Metric::NormSqOverLr => self.norm_sq_over_lr,
            Metric::EffectiveLr => self.effective_lr,
            Metric::AngularUpdate => self.angular_update,
        }
    }
}

/// Why a metrics file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A line is not a record.
    #[error("{}:{line}: not a metrics record ({message}); the file is damaged: rerun without --resume to train the run again", path.display())]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
}

/// Reads `metrics.jsonl`.
pub fn read_records(path: &Path) -> Result<Vec<EpochRecord>, RecordsError> {
    let text = std::fs::read_to_string(path).map_err(|source| IoError {
        action: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RecordsError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Writes `metrics.jsonl` and `metrics.csv` in `dir` (whole files, atomically). The CSV's
/// columns are the epoch, the step, every [`Metric`] in [`Metric::ALL`]'s order and the wall
/// time.
pub fn write_records(dir: &Path, records: &[EpochRecord]) -> Result<(), RecordsError> {
    let mut jsonl = String::new();
    let mut csv = String::from("epoch,step");
    for m in Metric::ALL {
        csv.push(',');
        csv.push_str(m.name());
    }
    csv.push_str(",wall_s\n");
    for r in records {
        // A record is plain numbers: serializing it cannot fail.
        jsonl.push_str(&serde_json::to_string(r).unwrap_or_default());
        jsonl.push('\n');
        csv.push_str(&format!("{},{}", r.epoch, r.step));
        for m in Metric::ALL {
            csv.push_str(&format!(",{:e}", r.get(m)));
        }
        csv.push_str(&format!(",{:.3}\n", r.wall_s));
    }
    write_atomic(&dir.join("metrics.jsonl"), jsonl.as_bytes())?;
    write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_follow_the_metrics_and_malformed_lines_are_located() {
        let dir = std::env::temp_dir().join(format!("explr-records-{}", std::process::id()));
        let r = EpochRecord {
            epoch: 1,
            step: 4,
            lr: 0.1,
            train_loss: 2.0,
            train_acc: 0.25,
            test_loss: 2.1,
            test_acc: 0.5,
            si_norm: 3.0,
            layer_norm: 1.5,
            norm_sq_over_lr: 90.0,
            effective_lr: 0.1 / 9.0,
            angular_update: 0.01,
            wall_s: 1.25,
        };
        write_records(&dir, std::slice::from_ref(&r)).unwrap();
        let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let row: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header.len(), Metric::ALL.len() + 3);
        for m in Metric::ALL {
            let col = header.iter().position(|h| *h == m.name()).unwrap();
            assert_eq!(row[col].parse::<f64>().unwrap(), r.get(m), "{m}");
        }
        assert_eq!(read_records(&dir.join("metrics.jsonl")).unwrap(), vec![r]);
        std::fs::write(dir.join("metrics.jsonl"), "\n{\"epoch\": 1}\n").unwrap();
        let err = read_records(&dir.join("metrics.jsonl")).unwrap_err();
        assert!(
            matches!(err, RecordsError::Malformed { line: 2, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
