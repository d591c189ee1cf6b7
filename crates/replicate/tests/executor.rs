//! The executors through the `explr` binary, without a cluster (tests/slurm.rs has the real
//! one): a submission leaves complete runs alone and plans the rest, `--collect` summarizes
//! exactly as the local run did or reports what is missing, `--task` trains one run and
//! nothing else, bad combinations of options fail saying what to do, and the committed
//! `--emit-only` example of the paper profile (docs/slurm/paper/) is what explr writes today.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A folder holding copies of `manifests` under `experiments/`.
fn sandbox(tag: &str, manifests: &[&str]) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::create_dir_all(dir.0.join("experiments")).unwrap();
    for m in manifests {
        std::fs::copy(
            repo().join(format!("experiments/{m}.yaml")),
            dir.0.join(format!("experiments/{m}.yaml")),
        )
        .unwrap();
    }
    dir
}

/// `explr replicate ARGS` in `dir`: (success, stderr). No Slurm is reachable: `PATH` holds no
/// `sbatch` or `squeue`.
fn explr(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_explr"))
        .current_dir(dir)
        .arg("replicate")
        .args(args)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn submissions_skip_complete_runs_and_collect_equals_the_local_run() {
    let sb = sandbox("executor", &["e1", "t1"]);
    let root = &sb.0;
    let (ok, err) = explr(root, &["e1", "t1", "--max-epochs", "1", "--jobs", "2"]);
    assert!(ok, "local run:\n{err}");
    let local_e1 = read(&root.join("results/e1/smoke/summary.yaml"));
    let local_t1 = read(&root.join("results/t1/smoke/summary.yaml"));

    // At the length they ran, every run is complete: nothing to submit, no script.
    let emit = ["--executor", "slurm", "--emit-only"];
    let (ok, err) = explr(
        root,
        &[&["e1", "t1", "--max-epochs", "1"][..], &emit].concat(),
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("E1: nothing to submit (5 complete, 0 running"),
        "{err}"
    );
    assert!(
        err.contains("T1: nothing to submit (1 complete, 0 running"),
        "{err}"
    );
    assert!(!root.join("results/e1/smoke/slurm/array.sbatch").exists());

    // At their full 8 epochs the training runs are partial: all five are planned; T1 stays
    // complete. Nothing is submitted (no sbatch here, and --emit-only asks for none).
    let (ok, err) = explr(root, &[&["e1", "t1"][..], &emit].concat());
    assert!(ok, "{err}");
    assert!(
        err.contains("E1: 5 task(s) written to results/e1/smoke/slurm/array.sbatch"),
        "{err}"
    );
    let script = read(&root.join("results/e1/smoke/slurm/array.sbatch"));
    assert!(script.contains("#SBATCH --array=0-4\n"), "{script}");
    assert!(!root
        .join("results/e1/smoke/slurm/submissions.json")
        .exists());

    // Collecting at 8 epochs: each run is reported, nothing is written.
    let (ok, err) = explr(root, &["e1", "--collect"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("E1: 5 of 5 unit(s) not complete; nothing written"),
        "{err}"
    );
    assert!(
        err.contains(
            "preresnet32/step_decay/seed-0: partial: 1 of 8 epochs checkpointed; never submitted"
        ),
        "{err}"
    );
    assert_eq!(read(&root.join("results/e1/smoke/summary.yaml")), local_e1);

    // Collecting at the length they ran writes the local run's summaries again, to the byte.
    std::fs::remove_file(root.join("results/e1/smoke/summary.yaml")).unwrap();
    let (ok, err) = explr(root, &["e1", "t1", "--collect", "--max-epochs", "1"]);
    assert!(ok, "{err}");
    assert_eq!(read(&root.join("results/e1/smoke/summary.yaml")), local_e1);
    assert_eq!(read(&root.join("results/t1/smoke/summary.yaml")), local_t1);

    // A run whose folder cannot be resumed stops the submission, which names it.
    let run = root.join("results/e1/smoke/preresnet32/exp_lr/seed-0");
    std::fs::write(run.join("metrics.jsonl"), "").unwrap();
    let (ok, err) = explr(root, &[&["e1"][..], &emit].concat());
    assert!(!ok, "{err}");
    for needle in [
        "1 run(s) in results/e1/smoke hold results a task cannot continue from",
        "preresnet32/exp_lr/seed-0: ",
        "metrics.jsonl",
        "remove those run folders",
    ] {
        assert!(err.contains(needle), "`{needle}` not in:\n{err}");
    }
}

#[test]
fn a_task_trains_its_run_and_nothing_else() {
    let sb = sandbox("task", &["e1"]);
    let root = &sb.0;
    let unit = "preresnet32/no_weight_decay/seed-0";
    let (ok, err) = explr(root, &["e1", "--task", unit, "--max-epochs", "1"]);
    assert!(ok, "{err}");
    assert!(err.contains(&format!("E1: {unit} complete")), "{err}");
    let manifest = root.join("results/e1/smoke");
    assert!(manifest.join(unit).join("metrics.jsonl").is_file());
    assert!(manifest.join(unit).join("metadata.json").is_file());
    let trained: Vec<String> = std::fs::read_dir(manifest.join("preresnet32"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(trained, ["no_weight_decay"]);
    assert!(!manifest.join("summary.yaml").exists());

    let (ok, err) = explr(root, &["e1", "--task", "preresnet32/nope/seed-0"]);
    assert!(!ok);
    assert!(
        err.contains(
            "has no unit `preresnet32/nope/seed-0`; its units are: preresnet32/exp_lr/seed-0, "
        ),
        "{err}"
    );
}

#[test]
fn options_that_do_not_go_together_are_refused_with_the_way_out() {
    let sb = sandbox("options", &["e1", "t1"]);
    let root = &sb.0;
    for (args, needle) in [
        (&["--emit-only"][..], "options of --executor slurm"),
        (
            &["--slurm-opt", "partition=gpu"][..],
            "options of --executor slurm",
        ),
        (
            &["--executor", "slurm", "--jobs", "2"][..],
            "--jobs is for --executor local",
        ),
        (
            &["--executor", "slurm", "--check"][..],
            "run with --collect --check",
        ),
        (
            &["--executor", "slurm", "--device", "cuda:1"][..],
            "pass --device cuda",
        ),
        (
            &["--executor", "slurm", "--slurm-opt", "array=0-3"][..],
            "explr sets --array itself",
        ),
        (
            &["--executor", "slurm", "--slurm-opt", "partition"][..],
            "write KEY=VALUE",
        ),
        (
            &["--task", "experiment"][..],
            "name exactly one manifest id",
        ),
        (
            &["--collect", "--jobs", "2"][..],
            "--collect trains nothing",
        ),
        (&["--wait"][..], "--collect"),
    ] {
        let (ok, err) = explr(root, &[&["e1", "t1"][..], args].concat());
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: `{needle}` not in:\n{err}");
    }
    // Submitting needs sbatch: without it, the error says so.
    let (ok, err) = explr(root, &["t1", "--executor", "slurm"]);
    assert!(!ok);
    assert!(
        err.contains(
            "`sbatch --parsable results/t1/smoke/slurm/array.sbatch` could not be started"
        ),
        "{err}"
    );
    assert!(err.contains("is Slurm's client installed"), "{err}");
}

/// docs/slurm/paper/ holds what `explr replicate --profile paper --device cuda --executor slurm
/// --emit-only --slurm-explr target/gpu/explr` writes from the repository's root, one script
/// per manifest (copied from `results/<manifest>/paper/slurm/array.sbatch`): every manifest has
/// one, and nothing else is there.
#[test]
fn the_committed_paper_example_is_what_emit_only_writes() {
    let examples = repo().join("docs/slurm/paper");
    let stems = |dir: &Path, ext: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(ext).map(str::to_string)
            })
            .collect();
        names.sort();
        names
    };
    let names = stems(&examples, ".sbatch");
    assert_eq!(
        names,
        stems(&repo().join("experiments"), ".yaml"),
        "docs/slurm/paper/ needs one script per manifest: write them with the command in \
         docs/slurm/README.md"
    );
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let sb = sandbox("example", &refs);
    let args = [
        &refs[..],
        &[
            "--profile",
            "paper",
            "--device",
            "cuda",
            "--executor",
            "slurm",
            "--emit-only",
            "--slurm-explr",
            "target/gpu/explr",
        ],
    ]
    .concat();
    let (ok, err) = explr(&sb.0, &args);
    assert!(ok, "{err}");
    for name in &names {
        let written = read(
            &sb.0
                .join(format!("results/{name}/paper/slurm/array.sbatch")),
        );
        let committed = read(&examples.join(format!("{name}.sbatch")));
        assert!(
            written == committed,
            "docs/slurm/paper/{name}.sbatch is not what --emit-only writes now; regenerate it \
             (docs/slurm/README.md):\n{written}"
        );
    }
}
