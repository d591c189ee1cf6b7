//! The one place that chooses where tensors live: `--device cpu` or `--device cuda[:N]`.
//!
//! Every experiment kind receives the [`Device`] opened here (through
//! [`crate::context::RunnerOptions::device`]) and builds its parameter store, data loaders and
//! probes on it; nothing else in explr names a device.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device as the command line names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU (the default, and the only device of a build without the `cuda` feature).
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

/// Why a device could not be named or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The name is neither `cpu` nor `cuda[:N]`.
    #[error("unknown device `{0}`: use cpu, cuda or cuda:N (e.g. cuda:1)")]
    Unknown(String),
    /// CUDA was asked for but this build has no CUDA support.
    #[error(
        "--device {0}: this build of explr has no CUDA support; rebuild it with \
         `--features cuda` (e.g. `cargo xtask replicate --device cuda …`, which does) on a \
         machine with the CUDA toolkit (README, \"CUDA\"), or use --device cpu"
    )]
    NotBuilt(DeviceSpec),
    /// CUDA is built in but the device could not be opened (no GPU, no driver, bad ordinal).
    #[error(
        "--device {spec}: cannot open the CUDA device ({cause}); check that this machine has \
         an NVIDIA GPU with that ordinal and a working driver (`nvidia-smi`), or use --device cpu"
    )]
    Unavailable {
        /// The device asked for.
        spec: DeviceSpec,
        /// candle's error, without the backtrace candle attaches when `RUST_BACKTRACE` is set.
        cause: candle_core::Error,
    },
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::Unknown(s.to_string())),
        }
    }
}

impl DeviceSpec {
    /// Whether this build of explr has CUDA support (the `cuda` cargo feature).
    pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

    /// Opens the device: the CPU always; a CUDA device when built with the `cuda` feature and
    /// the machine has that GPU and a driver.
    ///
    /// # Errors
    /// [`DeviceError::NotBuilt`] for CUDA in a build without the feature,
    /// [`DeviceError::Unavailable`] when candle cannot open the GPU.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !Self::CUDA_BUILT => Err(DeviceError::NotBuilt(self)),
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| DeviceError::Unavailable {
                spec: self,
                cause: without_backtrace(e),
            }),
        }
    }
}

/// `e` without the backtraces candle wraps around an error when `RUST_BACKTRACE` is set (the
/// message is for a person; the backtrace points into candle's device set-up).
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda_ordinals() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(" CPU ".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["", "cuda:", "cuda:x", "metal", "cuda:-1", "cpu:0"] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.to_string().contains("cuda:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn candle_backtraces_are_dropped_from_the_message() {
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("no GPU".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(without_backtrace(e).to_string(), "no GPU");
    }

    #[test]
    fn cpu_always_opens() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let e = DeviceSpec::Cuda(0).open().unwrap_err();
        assert!(matches!(e, DeviceError::NotBuilt(_)));
        let msg = e.to_string();
        assert!(msg.contains("--features cuda"), "{msg}");
        assert!(msg.contains("--device cpu"), "{msg}");
    }
}
