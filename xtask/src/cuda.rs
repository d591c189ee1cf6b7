//! What `--features cuda` needs, checked before cargo or a CUDA binary starts, so that a missing
//! toolkit or GPU gives one clear message instead of a build-script panic or a loader error.
//!
//! - Building needs `nvcc` on PATH (candle-kernels compiles its kernels with it, cudarc reads the
//!   CUDA version from it) and a compute capability: `CUDA_COMPUTE_CAP` or a working
//!   `nvidia-smi`. `scripts/cuda-toolchain.sh` installs and exports both without a GPU.
//! - Running needs the NVIDIA driver (`libcuda.so.1`, which a CUDA build of explr links to) and
//!   a GPU it can see: [`probe_driver`] loads the driver and asks it.
//! - `cargo xtask check-cuda` installs the toolchain and runs the compile check in one command.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

/// Names the driver library [`probe_driver`] loads instead of `libcuda.so.1` (the tests point
/// it at a missing file to take the no-driver path on any machine).
pub const DRIVER_ENV: &str = "EXPLR_CUDA_DRIVER";

/// Whether `explr` arguments ask for a CUDA device (`--device cuda…` or `--device=cuda…`).
pub fn wants_cuda(args: &[String]) -> bool {
    let is_cuda = |v: &str| v.trim().to_ascii_lowercase().starts_with("cuda");
    args.iter()
        .enumerate()
        .any(|(i, a)| match a.strip_prefix("--device=") {
            Some(v) => is_cuda(v),
            None => a == "--device" && args.get(i + 1).is_some_and(|v| is_cuda(v)),
        })
}

/// The CUDA ordinal `--device cuda:N` names (0 for `cuda`), if any.
pub fn cuda_ordinal(args: &[String]) -> Option<usize> {
    let value = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--device=").map(str::to_string).or_else(|| {
            (a == "--device")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    })?;
    let v = value.trim().to_ascii_lowercase();
    match v.as_str() {
        "cuda" => Some(0),
        _ => v.strip_prefix("cuda:")?.parse().ok(),
    }
}

/// The first `nvcc` in the `PATH`-style list `path`, if any.
pub fn find_nvcc(path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

const TOOLCHAIN_HINT: &str = "install one without a GPU with \
    `eval \"$(scripts/cuda-toolchain.sh DIR)\"` (add --link to link binaries; README, \"CUDA\")";

/// Checks what a `--features cuda` build needs: `nvcc` on PATH and a compute capability.
pub fn check_build_toolchain() -> Result<()> {
    let Some(nvcc) = find_nvcc(std::env::var_os("PATH").as_deref()) else {
        bail!(
            "building with --features cuda needs the CUDA compiler, but there is no `nvcc` on \
             PATH; {TOOLCHAIN_HINT}"
        );
    };
    if std::env::var_os("CUDA_COMPUTE_CAP").is_none()
        && !Command::new("nvidia-smi")
            .arg("-L")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        bail!(
            "building with --features cuda needs the GPU's compute capability: set \
             CUDA_COMPUTE_CAP (e.g. 90 for H100/H200, 80 for A100) or make `nvidia-smi` work \
             (nvcc found at {})",
            nvcc.display()
        );
    }
    Ok(())
}

/// Names of the CUDA driver errors a probe can meet.
fn cuda_error_name(code: i32) -> &'static str {
    match code {
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        34 => "CUDA_ERROR_STUB_LIBRARY",
        35 => "CUDA_ERROR_INSUFFICIENT_DRIVER",
        46 => "CUDA_ERROR_DEVICES_UNAVAILABLE",
        100 => "CUDA_ERROR_NO_DEVICE",
        101 => "CUDA_ERROR_INVALID_DEVICE",
        999 => "CUDA_ERROR_UNKNOWN",
        _ => "see cuda.h",
    }
}

/// Loads the NVIDIA driver (`libcuda.so.1`, or `$EXPLR_CUDA_DRIVER`), initializes it and checks
/// that it sees GPU `ordinal`; returns the number of GPUs. `what` names the command for the
/// messages.
pub fn probe_driver(ordinal: usize, what: &str) -> Result<usize> {
    let lib = std::env::var(DRIVER_ENV).unwrap_or_else(|_| "libcuda.so.1".into());
    probe_library(&lib, ordinal, what)
}

/// [`probe_driver`] with the driver library named.
fn probe_library(lib: &str, ordinal: usize, what: &str) -> Result<usize> {
    let name = CString::new(lib).context("the driver library name has a NUL byte")?;
    let advice = "use --device cpu, or run on a machine with an NVIDIA GPU and its driver \
                  (README, \"CUDA\")";
    // SAFETY: dlopen/dlsym/dlerror are called with NUL-terminated strings; the two symbols are
    // called with the signatures of cuda.h (CUresult cuInit(unsigned int),
    // CUresult cuDeviceGetCount(int *)), and the handle is closed after the last call.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let err = libc::dlerror();
            let why = if err.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            bail!(
                "{what}: no NVIDIA driver on this machine ({lib} cannot be loaded: {why}); \
                 {advice}"
            );
        }
        let sym = |s: &CStr| libc::dlsym(handle, s.as_ptr());
        let (init, count) = (sym(c"cuInit"), sym(c"cuDeviceGetCount"));
        if init.is_null() || count.is_null() {
            libc::dlclose(handle);
            bail!("{what}: {lib} is not a CUDA driver library (no cuInit/cuDeviceGetCount)");
        }
        let init: unsafe extern "C" fn(u32) -> i32 = std::mem::transmute(init);
        let count: unsafe extern "C" fn(*mut i32) -> i32 = std::mem::transmute(count);
        let code = init(0);
        let mut n = 0i32;
        let code = if code == 0 { count(&mut n) } else { code };
        libc::dlclose(handle);
        if code != 0 {
            bail!(
                "{what}: the NVIDIA driver is installed but finds no usable GPU (CUDA error \
                 {code}, {}; `nvidia-smi` shows what it sees); {advice}",
                cuda_error_name(code)
            );
        }
        let n = n.max(0) as usize;
        if ordinal >= n {
            bail!(
                "{what}: CUDA device {ordinal} was asked for but the driver sees {n} GPU(s); \
                 use --device cuda:0…cuda:{} or --device cpu",
                n.saturating_sub(1)
            );
        }
        Ok(n)
    }
}

/// Options of `cargo xtask check-cuda`.
#[derive(Args, Debug)]
pub struct CheckCudaArgs {
    /// Where the CUDA toolchain is installed (and reused): a folder `scripts/cuda-toolchain.sh`
    /// fills from PyPI (default: target/cuda-toolchain).
    #[arg(long, value_name = "DIR")]
    pub toolchain: Option<PathBuf>,
    /// Run clippy (`-D warnings`) instead of `cargo check`: the same compile, plus the lints.
    #[arg(long)]
    pub clippy: bool,
}

/// `cargo xtask check-cuda`: the toolchain install, then the compile check with `--features
/// cuda` (all targets), each timed.
pub fn check_cuda(root: &Path, args: &CheckCudaArgs) -> Result<()> {
    let dir = args
        .toolchain
        .clone()
        .unwrap_or_else(|| root.join("target/cuda-toolchain"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let check: &[&str] = if args.clippy {
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "cuda",
            "--",
            "-D",
            "warnings",
        ]
    } else {
        &[
            "check",
            "--workspace",
            "--all-targets",
            "--features",
            "cuda",
        ]
    };
    // One shell: the script prints the exports, the check runs with them.
    let script = r#"set -e
        t0=$(date +%s)
        exports=$(scripts/cuda-toolchain.sh "$1")
        eval "$exports"
        t1=$(date +%s)
        echo "check-cuda: toolchain ready in $((t1 - t0)) s" >&2
        shift
        "$@""#;
    let started = Instant::now();
    let status = Command::new("bash")
        .current_dir(root)
        .args(["-c", script, "check-cuda"])
        .arg(&dir)
        .arg(&cargo)
        .args(check)
        .status()
        .context("starting bash")?;
    if !status.success() {
        bail!(
            "check-cuda failed ({status}) after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "check-cuda: passed, {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cuda_is_recognized_in_both_flag_forms() {
        assert!(wants_cuda(&s(&["e3", "--device", "cuda"])));
        assert!(wants_cuda(&s(&["--device=cuda:1", "e3"])));
        assert!(!wants_cuda(&s(&["e3", "--device", "cpu"])));
        assert!(!wants_cuda(&s(&["e3", "cuda"])));
        assert!(!wants_cuda(&s(&["--device"])));
        assert_eq!(cuda_ordinal(&s(&["--device", "cuda"])), Some(0));
        assert_eq!(cuda_ordinal(&s(&["--device=cuda:2"])), Some(2));
        assert_eq!(cuda_ordinal(&s(&["--device", "cpu"])), None);
    }

    #[test]
    fn nvcc_is_found_on_a_path_list_only_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let path = std::env::join_paths([dir.path(), bin.as_path()]).unwrap();
        assert_eq!(find_nvcc(Some(&path)), None);
        std::fs::write(bin.join("nvcc"), "").unwrap();
        assert_eq!(find_nvcc(Some(&path)), Some(bin.join("nvcc")));
        assert_eq!(find_nvcc(None), None);
    }

    #[test]
    fn a_missing_driver_library_is_a_clear_error() {
        // A name that cannot exist takes the no-driver path whatever this machine has.
        let e = probe_library("/nonexistent/explr/libcuda.so.1", 0, "gpu-check")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no NVIDIA driver"), "{e}");
        assert!(e.contains("/nonexistent/explr/libcuda.so.1"), "{e}");
        assert!(e.contains("--device cpu"), "{e}");
    }
}
