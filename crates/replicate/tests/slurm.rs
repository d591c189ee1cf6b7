//! The Slurm executor against a real Slurm: `scripts/slurm-cluster.sh` starts a one-node
//! cluster on this machine (munged, slurmctld, slurmd; 2 CPUs), and the smoke profile of E1 (a
//! training manifest: 5 runs, controls included) and T1 (the toy example: one task) goes
//! through `explr replicate --executor slurm`:
//!
//! - one E1 task is cancelled mid-run (`scancel`): it checkpoints at the end of its epoch;
//!   `--collect` reports it (not complete, with its job id and log), and a second submission
//!   submits that run alone, which resumes from the checkpoint;
//! - another E1 task gets `SIGUSR1` mid-run (`scancel --signal=USR1 --batch`, what Slurm
//!   sends before a time limit): it checkpoints at the end of its epoch, exits 75 and
//!   requeues itself; its second start resumes from that checkpoint;
//! - `--collect --wait --check` then summarizes both manifests against goldens blessed by a
//!   local run of the same manifests, and every summary, verdict and golden comparison equals
//!   the local run's.
//!
//! Without the Slurm packages the test fails and says how to install them (`.ci/run` does).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The one-node cluster, up while this lives: the script runs in its own process group until
/// its stdin closes (when this is dropped, or this process dies).
struct Cluster {
    script: Child,
    stdin: Option<std::process::ChildStdin>,
    conf: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        let mut script = Command::new(repo().join("scripts/slurm-cluster.sh"))
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("running scripts/slurm-cluster.sh");
        let stdin = script.stdin.take();
        let started = Instant::now();
        while !dir.join("ready").exists() {
            if let Some(status) = script.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = script.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).unwrap();
                }
                panic!(
                    "the Slurm test needs a one-node cluster and scripts/slurm-cluster.sh could \
                     not start one ({status}):\n{err}"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the cluster did not come up in 120 s; logs in {}",
                dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Cluster {
            script,
            stdin,
            conf: dir.join("slurm.conf"),
        }
    }

    /// A Slurm client command against this cluster; its output, which must be a success.
    fn client(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `JOB_INDEX STATE` of every task Slurm holds.
    fn queue(&self) -> String {
        self.client("squeue", &["--noheader", "--array", "--format=%i %T"])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing its stdin takes the cluster down: jobs cancelled, daemons stopped.
        drop(self.stdin.take());
        let _ = self.script.wait();
    }
}

/// `explr replicate ARGS` in `dir` (which holds `experiments/`) against `cluster`.
fn explr(dir: &Path, cluster: Option<&Cluster>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_explr"));
    c.current_dir(dir).arg("replicate").args(args);
    if let Some(cluster) = cluster {
        c.env("SLURM_CONF", &cluster.conf);
    }
    c.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits until `what` holds, checking every 100 ms, for at most `limit`.
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records in a run's `metrics.jsonl` (0 when it has none).
fn epochs_done(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

/// The submissions record of a manifest's results folder.
fn submissions(manifest_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(manifest_dir.join("slurm/submissions.json")).unwrap();
    serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
}

#[test]
fn smoke_arrays_resume_after_cancel_and_collect_as_a_local_run() {
    let sandbox = TempDir::new("slurm");
    let root = &sandbox.0;
    std::fs::create_dir_all(root.join("experiments")).unwrap();
    for m in ["e1", "t1"] {
        std::fs::copy(
            repo().join(format!("experiments/{m}.yaml")),
            root.join(format!("experiments/{m}.yaml")),
        )
        .unwrap();
    }
    // The local run the array must equal: its summaries become the goldens the array is
    // checked against.
    let local = explr(
        root,
        None,
        &[
            "e1",
            "t1",
            "--jobs",
            "2",
            "--results-dir",
            "local",
            "--golden-dir",
            "golden",
            "--bless",
        ],
    );
    assert!(local.status.success(), "local run:\n{}", stderr(&local));

    let cluster = Cluster::start(&root.join("cluster"));
    let submit = |extra: &[&str]| {
        let mut args = vec![
            "e1",
            "t1",
            "--executor",
            "slurm",
            "--results-dir",
            "array",
            "--slurm-opt",
            "time=00:20:00",
        ];
        args.extend_from_slice(extra);
        explr(root, Some(&cluster), &args)
    };
    let first = submit(&[]);
    assert!(first.status.success(), "submit:\n{}", stderr(&first));
    let e1 = root.join("array/e1/smoke");
    let job = submissions(&e1)[0]["job_id"].as_str().unwrap().to_string();
    let tasks = submissions(&e1)[0]["tasks"].clone();
    let unit = |i: usize| tasks[i.to_string()].as_str().unwrap().to_string();
    assert_eq!(tasks.as_object().unwrap().len(), 5, "{tasks}");
    assert!(stderr(&first).contains(&format!("submitted job {job}, 5 task(s)")));
    let script = std::fs::read_to_string(e1.join("slurm/array.sbatch")).unwrap();
    for line in [
        "#SBATCH --array=0-4",
        "#SBATCH --signal=B:USR1@300",
        "#SBATCH --time=00:20:00",
        "#SBATCH --requeue",
    ] {
        assert!(script.contains(line), "no `{line}` in\n{script}");
    }

    // Task 0 is cancelled mid-run (`scancel`: SIGTERM, then SIGKILL if it lingers).
    let cancelled = e1.join(unit(0));
    let mid_run = |run: &Path| (1..8).contains(&epochs_done(run));
    wait_until("task 0 to be mid-run", Duration::from_secs(120), || {
        mid_run(&cancelled)
    });
    cluster.client("scancel", &[&format!("{job}_0")]);
    wait_until(
        "the cancelled task to leave the queue",
        Duration::from_secs(60),
        || !cluster.queue().contains(&format!("{job}_0 ")),
    );

    // Collecting now reports what is missing, with the job id and the log, and writes nothing.
    let early = explr(
        root,
        Some(&cluster),
        &["e1", "--collect", "--results-dir", "array"],
    );
    let report = stderr(&early);
    assert!(!early.status.success(), "{report}");
    let cancelled_line = report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{}:", unit(0))))
        .unwrap_or_else(|| panic!("no line for {} in\n{report}", unit(0)));
    for needle in [
        "partial".to_string(),
        format!("task {job}_0 no longer queued"),
        format!("log array/e1/smoke/slurm/logs/{job}_0.out"),
    ] {
        assert!(
            cancelled_line.contains(&needle),
            "`{needle}` not in `{cancelled_line}`"
        );
    }
    assert!(!e1.join("summary.yaml").exists());

    // A second submission: only the cancelled run (the others are complete, running or
    // queued), under a new job.
    let second = submit(&[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let records = submissions(&e1);
    assert_eq!(records.len(), 2, "{}", stderr(&second));
    let job2 = records[1]["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        records[1]["tasks"],
        serde_json::json!({"0": unit(0)}),
        "{}",
        stderr(&second)
    );

    // Task 4 gets the warning before a time limit mid-run: `SIGUSR1` to the task's shell. It
    // is the array's last task, so nothing of the array is pending any more (Slurm 22.05's
    // `scancel --signal --batch` on a task of an array with pending tasks delivers the signal
    // but answers "Job is in transitional state" and retries, signalling again every few
    // seconds).
    let warned = e1.join(unit(4));
    wait_until("task 4 to be mid-run", Duration::from_secs(240), || {
        mid_run(&warned)
    });
    cluster.client(
        "scancel",
        &["--signal=USR1", "--batch", &format!("{job}_4")],
    );

    let collect = explr(
        root,
        Some(&cluster),
        &[
            "e1",
            "t1",
            "--collect",
            "--wait",
            "--check",
            "--results-dir",
            "array",
            "--golden-dir",
            "golden",
        ],
    );
    assert!(collect.status.success(), "collect:\n{}", stderr(&collect));

    // Both interrupted runs resumed from the checkpoint their interruption wrote.
    let log = |job: &str, i: usize| {
        std::fs::read_to_string(e1.join(format!("slurm/logs/{job}_{i}.out"))).unwrap()
    };
    let warned_log = log(&job, 4);
    for needle in [
        "stopped on request after epoch",
        "checkpointed before the time limit; requeueing",
        "start 2",
        "resumed from its checkpoint after epoch",
    ] {
        assert!(
            warned_log.contains(needle),
            "task 4's log lacks `{needle}`:\n{warned_log}"
        );
    }
    let resumed_log = log(&job2, 0);
    assert!(
        resumed_log.contains("resumed from its checkpoint after epoch"),
        "the resubmitted run started over:\n{resumed_log}"
    );

    // Everything equals the local run: summaries byte for byte, verdicts, golden comparisons.
    for m in ["e1", "t1"] {
        let read = |dir: &str| {
            std::fs::read_to_string(root.join(dir).join(m).join("smoke/summary.yaml")).unwrap()
        };
        assert_eq!(read("array"), read("local"), "{m}: summaries differ");
    }
    let index = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(dir).join("index.json")).unwrap())
            .unwrap()
    };
    let (array_index, local_index) = (index("array"), index("local"));
    for i in 0..2 {
        let (a, l) = (&array_index["entries"][i], &local_index["entries"][i]);
        assert_eq!(a["manifest"], l["manifest"]);
        assert_eq!(a["verdict"], l["verdict"], "{a}");
        assert_eq!(a["checks"], l["checks"], "{a}");
        assert_eq!(l["golden"], "written");
        assert_eq!(a["golden"], "match", "{a}");
    }
    // Nothing left to submit.
    let third = submit(&[]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(
        stderr(&third).contains("nothing to submit (5 complete, 0 running or queued"),
        "{}",
        stderr(&third)
    );
}
