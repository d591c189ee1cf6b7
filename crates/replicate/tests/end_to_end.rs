//! The `explr replicate` binary end to end on T1 (the toy example, ~1 s at the smoke profile):
//! bless, then check; an edited golden fails the check naming the field; unknown ids, profiles
//! and devices fail with messages that say what would be valid.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under the system temp dir holding a copy of `experiments/t1.yaml` under
/// `experiments/`; removed on drop.
struct Sandbox(PathBuf);

impl Sandbox {
    fn new() -> Self {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("explr-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("experiments")).unwrap();
        std::fs::copy(
            experiments_dir().join("t1.yaml"),
            p.join("experiments/t1.yaml"),
        )
        .unwrap();
        Self(p)
    }

    fn golden(&self) -> PathBuf {
        self.0.join("golden/t1.smoke.snap")
    }

    /// Runs `explr replicate ARGS` in the sandbox with its own folders; (success, stderr).
    fn replicate(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_explr"))
            .current_dir(&self.0)
            .arg("replicate")
            .args(args)
            .args([
                "--experiments-dir",
                "experiments",
                "--results-dir",
                "results",
                "--golden-dir",
                "golden",
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments")
}

/// The golden's body (after insta's `---` header) as YAML.
fn golden_yaml(text: &str) -> serde_yaml::Value {
    let body = text.splitn(3, "---\n").nth(2).expect("insta header");
    serde_yaml::from_str(body).unwrap()
}

/// Replaces the value on the golden's line `key: value` by `f(value)`.
fn edit_line(text: &str, key: &str, f: impl Fn(&str) -> Option<String>) -> String {
    let prefix = format!("{key}: ");
    let mut hit = false;
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| match l.trim_start().strip_prefix(&prefix) {
            Some(v) => {
                hit = true;
                let indent = &l[..l.len() - l.trim_start().len()];
                f(v).map(|nv| format!("{indent}{prefix}{nv}"))
            }
            None => Some(l.to_string()),
        })
        .collect();
    assert!(hit, "no line `{key}: …` in the golden");
    lines.join("\n") + "\n"
}

fn scale(by: f64) -> impl Fn(&str) -> Option<String> {
    move |v| Some(format!("{}", v.parse::<f64>().unwrap() * by))
}

/// One golden edit: after it, `--check` passes exactly when `passes`; when it fails, stderr
/// names `field` (the dotted path in the summary). The check never rewrites the golden.
fn check(sandbox: &Sandbox, blessed: &str, case: &str, edited: String, passes: bool, field: &str) {
    std::fs::write(sandbox.golden(), &edited).unwrap();
    let (ok, err) = sandbox.replicate(&["t1", "--check"]);
    assert_eq!(ok, passes, "{case}: stderr:\n{err}");
    if !passes {
        for needle in ["differs from", "golden/t1.smoke.snap", field] {
            assert!(
                err.contains(needle),
                "{case}: stderr lacks `{needle}`:\n{err}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(sandbox.golden()).unwrap(),
        edited,
        "{case}: --check rewrote the golden"
    );
    std::fs::write(sandbox.golden(), blessed).unwrap();
}

#[test]
fn bless_then_check_and_edited_goldens_fail_naming_the_field() {
    let sandbox = Sandbox::new();
    // Checking before any golden exists fails and says how to create one.
    let (ok, err) = sandbox.replicate(&["t1", "--check"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("no golden") && err.contains("--bless"),
        "{err}"
    );

    let (ok, err) = sandbox.replicate(&["t1", "--bless"]);
    assert!(ok, "bless failed:\n{err}");
    let blessed = std::fs::read_to_string(sandbox.golden()).unwrap();
    // The golden is the run's summary, and the claim's checks passed.
    let summary: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(sandbox.0.join("results/t1/smoke/summary.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(golden_yaml(&blessed), summary);
    assert_eq!(summary["id"], "T1");
    assert_eq!(summary["verdict"], "pass");
    // Provenance next to the summary: what ran, where, with which versions.
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sandbox.0.join("results/t1/smoke/metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["manifest"], "t1");
    assert_eq!(meta["profile"], "smoke");
    assert_eq!(meta["verdict"], "pass");
    assert_eq!(meta["device"], "cpu");
    assert!(meta["command"][1] == "replicate", "{meta}");
    assert!(
        meta["versions"]["locked"]
            .as_str()
            .is_some_and(|v| v.contains("candle-core 0.11")),
        "{meta}"
    );
    assert!(meta["wall_s"].as_f64().is_some_and(|w| w > 0.0), "{meta}");
    for f in [
        "manifest.resolved.yaml",
        "population/bn_wd.csv",
        "population-train-error.svg",
    ] {
        assert!(
            sandbox.0.join("results/t1/smoke").join(f).is_file(),
            "no {f}"
        );
    }

    let (ok, err) = sandbox.replicate(&["t1", "--check"]);
    assert!(ok, "check after bless failed:\n{err}");
    assert!(err.contains("matches its golden"), "{err}");

    let metric = "minibatch.bn_wd.tail_error";
    let cases = [
        ("unchanged", blessed.clone(), true, ""),
        (
            "a metric within the relative tolerance (1e-4 < 2e-3)",
            edit_line(&blessed, metric, scale(1.0 + 1e-4)),
            true,
            "",
        ),
        (
            "a metric 50% off",
            edit_line(&blessed, metric, scale(1.5)),
            false,
            "metrics.minibatch.bn_wd.tail_error",
        ),
        (
            "a count off by one",
            edit_line(&blessed, "population.bn_wd.error_jumps", |v| {
                Some((v.parse::<i64>().unwrap() + 1).to_string())
            }),
            false,
            "metrics.population.bn_wd.error_jumps",
        ),
        (
            "the verdict",
            edit_line(&blessed, "verdict", |_| Some("fail".into())),
            false,
            "verdict",
        ),
        (
            "a metric missing from the golden",
            edit_line(&blessed, metric, |_| None),
            false,
            "metrics.minibatch.bn_wd.tail_error",
        ),
    ];
    for (case, edited, passes, field) in cases {
        check(&sandbox, &blessed, case, edited, passes, field);
    }
}

/// A failing command whose stderr contains every needle.
fn check_err(args: &[&str], needles: &[String]) {
    let sandbox = Sandbox::new();
    let (ok, err) = sandbox.replicate(args);
    assert!(!ok, "{args:?} succeeded:\n{err}");
    for n in needles {
        assert!(
            err.contains(n.as_str()),
            "{args:?}: stderr lacks `{n}`:\n{err}"
        );
    }
    // Nothing ran, so nothing was written.
    assert!(
        !sandbox.0.join("results").exists(),
        "{args:?} wrote results"
    );
    assert!(!sandbox.0.join("golden").exists(), "{args:?} wrote goldens");
}

#[test]
fn bad_arguments_fail_with_clear_messages() {
    // Unknown id: the message lists the manifests that do exist (here: the sandbox's t1).
    check_err(&["t9"], &["no manifest `t9`".into(), "known: t1".into()]);
    #[cfg(not(feature = "cuda"))]
    check_err(
        &["t1", "--device", "cuda"],
        &[
            "--device cuda".into(),
            "no CUDA support".into(),
            "--device cpu".into(),
        ],
    );
    // A CUDA build (which runs only where the driver is installed): no GPU has ordinal 99.
    #[cfg(feature = "cuda")]
    check_err(
        &["t1", "--device", "cuda:99"],
        &[
            "--device cuda:99".into(),
            "cannot open the CUDA device".into(),
            "--device cpu".into(),
        ],
    );
    check_err(
        &["t1", "--device", "tpu"],
        &["unknown device `tpu`".into(), "cpu, cuda or cuda:N".into()],
    );
    check_err(
        &["t1", "--max-epochs", "1", "--check"],
        &["--max-epochs".into(), "--check".into()],
    );
    check_err(
        &["t1", "--max-epochs", "0"],
        &["--max-epochs must be at least 1".into()],
    );
    check_err(
        &["t1", "--profile", "turbo"],
        &[
            "unknown profile `turbo`".into(),
            "smoke, cpu, cpu-long, cpu-full, paper".into(),
        ],
    );
    // A claim asked for an optional profile it does not define (its base is the paper's
    // scale, never what cpu-long means).
    check_err(
        &["t1", "--profile", "cpu-long"],
        &[
            "defines no profile `cpu-long`".into(),
            "it defines cpu, paper, smoke".into(),
        ],
    );
    check_err(
        &["t1", "--check", "--bless"],
        &["--check".into(), "--bless".into()],
    );
}

/// Against the real experiments folder, an unknown id lists every manifest there.
#[test]
fn unknown_id_lists_every_known_manifest() {
    let mut stems: Vec<String> = std::fs::read_dir(experiments_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    let sandbox = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_explr"))
        .current_dir(&sandbox.0)
        .args(["replicate", "nope", "--experiments-dir"])
        .arg(experiments_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("known: {}", stems.join(", "))),
        "{err}"
    );
}
