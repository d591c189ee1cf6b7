//! The `explr` binary under the inputs and events a user's shell gives it: arguments that are
//! not UTF-8, an id named twice, a stop request, a reader that goes away, a schedule spec
//! written inline. Each case is one an audit found mishandled.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;

fn explr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_explr"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A path argument that is not UTF-8 (a Latin-1 file name) is a path like any other: the dry
/// run validates, instead of panicking while it records the command line.
#[test]
fn a_path_argument_that_is_not_utf8_does_not_panic() {
    let dir = TempDir::new("non-utf8");
    let mut data_dir = dir.0.clone().into_os_string().into_vec();
    data_dir.extend_from_slice(b"/donn\xe9es");
    let out = explr()
        .current_dir(repo())
        .args(["replicate", "e1", "--dry-run", "--data-dir"])
        .arg(OsString::from_vec(data_dir))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{}: {err}", out.status);
    assert!(err.contains("valid"), "{err}");
}

/// `explr replicate e1 e1 E1` runs E1 once: ids name manifests, whatever their case, and a
/// manifest named twice is still one manifest.
#[test]
fn an_id_named_twice_runs_once() {
    let out = explr()
        .current_dir(repo())
        .args(["replicate", "e1", "e1", "E1", "t1", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let valid: Vec<&str> = err.lines().filter(|l| l.contains(": valid")).collect();
    assert_eq!(valid.len(), 2, "{err}");
    assert!(
        valid[0].starts_with("E1 ") && valid[1].starts_with("T1 "),
        "{err}"
    );
}

/// SIGTERM (and SIGUSR1) to a local run: it checkpoints at the end of its epoch, says how to
/// continue, and exits 75 (`EX_TEMPFAIL`), as documented; `--resume` then finishes it (shown
/// once, after SIGTERM).
#[test]
fn a_stop_request_exits_75_and_the_run_resumes() {
    for signal in [libc::SIGTERM, libc::SIGUSR1] {
        let dir = TempDir::new("stop-75");
        std::fs::create_dir_all(dir.0.join("experiments")).unwrap();
        let text = std::fs::read_to_string(repo().join("experiments/e4.yaml")).unwrap();
        let edited = text.replace(
            "      epochs: 8\n      checkpoint_every: 0\n",
            "      epochs: 8\n      checkpoint_every: 1\n",
        );
        assert_ne!(edited, text, "e4's smoke profile changed: update this test");
        std::fs::write(dir.0.join("experiments/e4.yaml"), edited).unwrap();
        let command = |resume: bool| {
            let mut c = explr();
            c.current_dir(&dir.0)
                .args(["replicate", "e4", "--bless", "--results-dir", "results"])
                .args(["--golden-dir", "golden", "--experiments-dir", "experiments"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if resume {
                c.arg("--resume");
            }
            c
        };
        let mut child = command(false).spawn().unwrap();
        // Wait for the first checkpoint, then ask the run to stop.
        let latest = dir
            .0
            .join("results/e4/smoke/preresnet32/cosine/seed-0/checkpoints/LATEST");
        let started = Instant::now();
        while !latest.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no checkpoint at {} after 120 s",
                latest.display()
            );
            assert!(child.try_wait().unwrap().is_none(), "the run ended first");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: sends a signal to our own child, which is still running (it has not been
        // waited for).
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(75), "signal {signal}: {err}");
        assert!(err.contains("stopped on request"), "{err}");
        assert!(err.contains("--resume"), "{err}");
        if signal != libc::SIGTERM {
            continue;
        }
        let resumed = command(true).output().unwrap();
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(dir.0.join("results/e4/smoke/summary.yaml").exists());
    }
}

/// `explr schedule … | head -3`: when the reader goes away, the command ends as `seq` does, by
/// SIGPIPE's default action, with nothing on stderr (no "error: writing CSV: Broken pipe").
#[test]
fn a_closed_pipe_ends_the_schedule_quietly() {
    let mut child = explr()
        .args(["schedule", "--kind", "constant", "--lr", "0.1"])
        .args(["--steps-per-epoch", "1000", "--epochs", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{}: {err}",
        out.status
    );
    assert!(err.is_empty(), "{err}");
}

/// `--spec` takes the YAML spec itself, as its help says (and as `--weight-decay-schedule`
/// does), or the path of a file holding it; both give the same rows, and a value that is
/// neither says so.
#[test]
fn spec_takes_yaml_or_a_file() {
    let yaml = "{kind: multistep, lr: 0.1, milestones: [2, 4], gamma: 0.1}";
    let dir = TempDir::new("spec-arg");
    let file = dir.0.join("spec.yaml");
    std::fs::write(&file, yaml).unwrap();
    let rows = |spec: &std::ffi::OsStr| {
        let out = explr()
            .args([
                "schedule",
                "--steps-per-epoch",
                "3",
                "--epochs",
                "6",
                "--spec",
            ])
            .arg(spec)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let inline = rows(yaml.as_ref());
    assert_eq!(inline, rows(file.as_os_str()));
    assert_eq!(inline.lines().count(), 1 + 18, "{inline}");
    let out = explr()
        .args(["schedule", "--spec", "no-such-spec.yaml"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("neither a file nor a YAML spec"), "{err}");
}
