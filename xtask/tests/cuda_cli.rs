//! Where there is no GPU, `cargo xtask gpu-check` and `cargo xtask replicate --device cuda` stop
//! at once with a message that says so, before building anything. The driver library is pointed
//! at a file that cannot exist (`EXPLR_CUDA_DRIVER`), so this holds on every machine, GPU or
//! not.

use std::process::Command;
use std::time::{Duration, Instant};

fn xtask_without_driver(args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("EXPLR_CUDA_DRIVER", "/nonexistent/explr-test/libcuda.so.1")
        // A cargo started by mistake would show up as a long run; make sure it cannot build.
        .env("CARGO", "/nonexistent/explr-test/cargo")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .expect("xtask runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn gpu_check_without_a_driver_fails_at_once_with_a_clear_message() {
    let (ok, err, took) = xtask_without_driver(&["gpu-check"]);
    assert!(!ok, "gpu-check succeeded without a driver:\n{err}");
    assert!(err.contains("gpu-check: no NVIDIA driver"), "{err}");
    assert!(
        err.contains("/nonexistent/explr-test/libcuda.so.1"),
        "{err}"
    );
    assert!(err.contains("NVIDIA GPU"), "{err}");
    assert!(
        !err.contains("gpu-check: cargo") && !err.contains("starting cargo"),
        "it tried to build:\n{err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[test]
fn gpu_check_prebuilt_without_a_driver_fails_the_same_way() {
    let (ok, err, _) = xtask_without_driver(&["gpu-check", "--prebuilt", "/nonexistent"]);
    assert!(!ok);
    assert!(err.contains("no NVIDIA driver"), "{err}");
}

#[test]
fn replicate_on_cuda_without_a_driver_fails_before_building() {
    let (ok, err, _) = xtask_without_driver(&["replicate", "t1", "--device", "cuda"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("replicate --device cuda: no NVIDIA driver"),
        "{err}"
    );
    assert!(err.contains("--device cpu"), "{err}");
}
