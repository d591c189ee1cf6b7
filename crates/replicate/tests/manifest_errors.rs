//! Manifest errors name the file, the field and the right line, and every manifest in
//! `experiments/` parses (and builds its optimizer plans) at every profile.
//!
//! The expected line of an error is marked in the case's text with a `# HERE` comment, so the
//! reference is the text itself, not a number copied from a previous run.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use explr_replicate::dataset::steps_per_epoch;
use explr_replicate::manifest::{self, ManifestError, OPTIONAL_PROFILES, PROFILES};
use explr_replicate::plan;
use explr_replicate::spec::Experiment;
use explr_replicate::validate;

/// A valid training manifest; cases edit it with string replacements.
const BASE: &str = "\
id: Q1
title: a test manifest
paper: none
claim: nothing
training:
  models:
    tiny: {arch: preresnet, depth: 8, width: 2}
  data:
    dataset: synthetic
    train_size: 64
    batch_size: 32
  seeds: [0]
  epochs: 4
  runs:
    step_decay:
      weight_decay: 5.0e-4
      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}
    texp:
      derive: {from: step_decay, transform: texp}
  checks:
    - {check: window_gap, a: step_decay, b: texp, metric: train_acc, windows: [[3, 3]], bound: 0.05, reason: r}
profiles:
  smoke:
    training:
      epochs: 3
      runs:
        step_decay:
          schedule: {milestones: [1, 2]}
  cpu: {}
";

const FILE: &str = "experiments/q1.yaml";

/// `BASE` with each `(from, to)` replaced once (the `from` must occur).
fn edit(edits: &[(&str, &str)]) -> String {
    let mut text = BASE.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` is not in the base manifest");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The 1-based line holding `# HERE`, or 0 when no line is marked.
fn marked_line(text: &str) -> usize {
    text.lines()
        .position(|l| l.contains("# HERE"))
        .map_or(0, |i| i + 1)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `ManifestError::Parse` (syntax, type, unknown key or unknown profile).
    Parse,
    /// `ManifestError::Invalid` naming this dotted field.
    Invalid(&'static str),
}

/// Parsing `text` at `profile` fails with an error of `kind` on the `# HERE` line whose message
/// names the file and contains every needle.
fn check(case: &str, text: &str, profile: &str, kind: Kind, needles: &[&str]) {
    let err = match manifest::parse(text, Path::new(FILE), "q1", profile) {
        Ok(r) => panic!("{case}: parsed, but should fail: {:?}", r.manifest),
        Err(e) => e,
    };
    let want_line = marked_line(text);
    let (line, path) = match (&err, kind) {
        (ManifestError::Parse { line, path, .. }, Kind::Parse) => (*line, path),
        (
            ManifestError::Invalid {
                line, path, field, ..
            },
            Kind::Invalid(want_field),
        ) => {
            assert_eq!(field, want_field, "{case}: wrong field in `{err}`");
            (*line, path)
        }
        _ => panic!("{case}: wanted a {kind:?} error, got {err:?}"),
    };
    assert_eq!(path, &PathBuf::from(FILE), "{case}");
    assert_eq!(line, want_line, "{case}: wrong line in `{err}`");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("{FILE}:{want_line}:")),
        "{case}: `{msg}` does not start with file:line"
    );
    for n in needles {
        assert!(msg.contains(n), "{case}: `{msg}` lacks `{n}`");
    }
}

#[test]
fn the_base_manifest_is_valid_at_every_profile() {
    for profile in PROFILES
        .into_iter()
        .filter(|p| !OPTIONAL_PROFILES.contains(p))
    {
        let r = manifest::parse(BASE, Path::new(FILE), "q1", profile).unwrap();
        let Experiment::Training(t) = r.experiment() else {
            panic!("not a training manifest");
        };
        // The smoke override applies; the others keep the base values.
        let want_epochs = if profile == "smoke" { 3 } else { 4 };
        assert_eq!(t.epochs, want_epochs, "{profile}");
        assert_eq!(r.profile, profile);
        assert_eq!(r.name, "q1");
    }
}

/// An optional profile is run only where the manifest defines it: elsewhere the base is the
/// paper's full scale, never what the profile means.
#[test]
fn an_optional_profile_the_manifest_does_not_define_is_an_error_that_says_so() {
    for profile in OPTIONAL_PROFILES {
        let err = manifest::parse(BASE, Path::new(FILE), "q1", profile).unwrap_err();
        let ManifestError::NotDefined { defined, .. } = &err else {
            panic!("{profile}: wanted NotDefined, got {err:?}");
        };
        assert!(defined.contains(&"cpu".to_string()), "{defined:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(FILE) && msg.contains(&format!("no profile `{profile}`")),
            "{msg}"
        );
        let with = edit(&[("  cpu: {}\n", &format!("  cpu: {{}}\n  {profile}: {{}}\n"))]);
        let r = manifest::parse(&with, Path::new(FILE), "q1", profile).unwrap();
        assert_eq!(r.profile, profile);
    }
}

#[test]
fn unknown_keys_are_located() {
    check(
        "unknown top-level key",
        &edit(&[("claim: nothing\n", "claim: nothing\nbogus: 1 # HERE\n")]),
        "smoke",
        Kind::Parse,
        &["bogus"],
    );
    check(
        "unknown key in a nested section",
        &edit(&[(
            "    batch_size: 32\n",
            "    batch_size: 32\n    colour: red # HERE\n",
        )]),
        "smoke",
        Kind::Parse,
        &["colour", "training.data"],
    );
    check(
        "unknown key in a run",
        &edit(&[(
            "      weight_decay: 5.0e-4\n",
            "      weight_decay: 5.0e-4\n      nesterov: true # HERE\n",
        )]),
        "cpu",
        Kind::Parse,
        &["nesterov"],
    );
    check(
        "unknown key inside a profile override",
        &edit(&[(
            "      epochs: 3\n",
            "      epochs: 3\n      epochz: 5 # HERE\n",
        )]),
        "smoke",
        Kind::Parse,
        &["epochz", "smoke"],
    );
    check(
        "unknown key nested inside a profile override",
        &edit(&[(
            "          schedule: {milestones: [1, 2]}\n",
            "          schedule: {milestones: [1, 2]}\n          lr_scale: 2 # HERE\n",
        )]),
        "smoke",
        Kind::Parse,
        &["lr_scale", "smoke"],
    );
    check(
        "unknown key inside another profile, parsed at that profile",
        &edit(&[("  cpu: {}\n", "  cpu:\n    colour: red # HERE\n")]),
        "cpu",
        Kind::Parse,
        &["colour", "cpu"],
    );
}

#[test]
fn type_errors_are_located() {
    check(
        "a string where a count belongs",
        &edit(&[("  epochs: 4\n", "  epochs: many # HERE\n")]),
        "cpu",
        Kind::Parse,
        &["epochs", "many"],
    );
    check(
        "a negative count",
        &edit(&[("    batch_size: 32\n", "    batch_size: -1 # HERE\n")]),
        "cpu",
        Kind::Parse,
        &["batch_size"],
    );
    check(
        "a type error inside a profile override",
        &edit(&[("      epochs: 3\n", "      epochs: [3] # HERE\n")]),
        "smoke",
        Kind::Parse,
        &["epochs", "smoke"],
    );
    check(
        "an unknown enum value",
        &edit(&[("    dataset: synthetic\n", "    dataset: mnist # HERE\n")]),
        "cpu",
        Kind::Parse,
        &["mnist", "synthetic"],
    );
    check(
        "broken YAML",
        &edit(&[("  epochs: 4\n", "  epochs: 4: 5 # HERE\n")]),
        "cpu",
        Kind::Parse,
        &[],
    );
}

#[test]
fn unknown_profiles_are_rejected() {
    check(
        "an unknown profile in the file",
        &edit(&[("  cpu: {}\n", "  cpu: {}\n  turbo: {} # HERE\n")]),
        "smoke",
        Kind::Parse,
        &["turbo", "smoke, cpu, cpu-long, cpu-full, paper"],
    );
    // On the command line there is no line to point at: line 0.
    check(
        "an unknown profile on the command line",
        BASE,
        "fast",
        Kind::Parse,
        &["`fast`", "smoke, cpu, cpu-long, cpu-full, paper"],
    );
}

#[test]
fn impossible_values_are_located() {
    check(
        "a milestone past the end",
        &edit(&[(
            "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}\n",
            "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 4], gamma: 0.1} # HERE\n",
        )]),
        "cpu",
        Kind::Invalid("training.runs.step_decay.schedule.milestones"),
        &["milestone 4", "4 epochs"],
    );
    check(
        "a milestone past the end only once a profile shortens training",
        &edit(&[(
            "      runs:\n        step_decay:\n          schedule: {milestones: [1, 2]}\n",
            "      runs:\n        step_decay:\n          schedule: {milestones: [1, 3]} # HERE\n",
        )]),
        "smoke",
        Kind::Invalid("training.runs.step_decay.schedule.milestones"),
        &["milestone 3", "3 epochs", "profile `smoke`"],
    );
    check(
        "a derived run naming a missing run",
        &edit(&[(
            "      derive: {from: step_decay, transform: texp}\n",
            "      derive: {from: step_dekay, transform: texp} # HERE\n",
        )]),
        "cpu",
        Kind::Invalid("training.runs.texp.derive.from"),
        &["`step_dekay`", "step_decay, texp"],
    );
    check(
        "a check naming a missing run",
        &edit(&[(
            "    - {check: window_gap, a: step_decay, b: texp,",
            "    - {check: window_gap, a: step_decay, b: tex, # HERE\n      ",
        )]),
        "cpu",
        Kind::Invalid("training.checks.0"),
        &["`tex`", "step_decay, texp"],
    );
    check(
        "no seeds",
        &edit(&[("  seeds: [0]\n", "  seeds: [] # HERE\n")]),
        "cpu",
        Kind::Invalid("training.seeds"),
        &["at least one seed"],
    );
    check(
        "zero epochs",
        &edit(&[("  epochs: 4\n", "  epochs: 0 # HERE\n")]),
        "cpu",
        Kind::Invalid("training.epochs"),
        &["positive"],
    );
    check(
        "momentum of 1",
        &edit(&[(
            "      weight_decay: 5.0e-4\n",
            "      weight_decay: 5.0e-4\n      momentum: 1.0 # HERE\n",
        )]),
        "cpu",
        Kind::Invalid("training.runs.step_decay.momentum"),
        &["[0, 1)"],
    );
}

#[test]
fn a_seed_spread_needs_seeds_snapshot_steps_lie_inside_the_epoch_and_premises_judge_no_control() {
    let gap = "    - {check: window_gap, a: step_decay, b: texp, metric: train_acc, windows: [[3, 3]], bound: 0.05, reason: r}\n";
    let spread = gap.replace(
        "bound: 0.05,",
        "bound: 0.05, seed_spread: {run: step_decay, factor: 2.0},",
    );
    check(
        "a seed spread over one seed",
        &edit(&[(gap, &spread.replace('\n', " # HERE\n"))]),
        "cpu",
        Kind::Invalid("training.checks.0.seed_spread"),
        &["two seeds or more", "has 1"],
    );
    check(
        "a seed spread of no deviations",
        &edit(&[
            (
                gap,
                &spread
                    .replace("factor: 2.0", "factor: 0.0")
                    .replace('\n', " # HERE\n"),
            ),
            ("seeds: [0]", "seeds: [0, 1]"),
        ]),
        "cpu",
        Kind::Invalid("training.checks.0.seed_spread.factor"),
        &["> 0"],
    );
    // 64 images at batch 32: 2 updates an epoch, so update 2 ends epoch 1.
    let distance = "    - {check: weight_distance, a: step_decay, b: texp, epoch: 1, steps: [1, 2], bound: 0.1, reason: r} # HERE\n";
    check(
        "a step at the epoch's end",
        &edit(&[(gap, distance)]),
        "cpu",
        Kind::Invalid("training.checks.0.steps"),
        &["update 2", "from 1 to 1"],
    );
    let level = "    - {check: reaches, run: step_decay, metric: train_acc, window: [3, 3], at_least: 0.5, reason: r}\n";
    check(
        "a control judged by a premise alone",
        &edit(&[
            (gap, level),
            (
                "profiles:\n",
                "  controls:\n    other:\n      replaces: step_decay # HERE\n      why: w\n      run: {schedule: {kind: constant, lr: 0.1}}\nprofiles:\n",
            ),
        ]),
        "cpu",
        Kind::Invalid("training.controls.other.replaces"),
        &["a `reaches` premise judges no control"],
    );
    // The same manifests are valid with two seeds and a step inside the epoch.
    for text in [
        edit(&[(gap, &spread), ("seeds: [0]", "seeds: [0, 1]")]),
        edit(&[(gap, &distance.replace("[1, 2]", "[1]"))]),
        edit(&[(gap, &format!("{gap}{level}"))]),
    ] {
        if let Err(e) = manifest::parse(&text, Path::new(FILE), "q1", "cpu") {
            panic!("{e}\n{text}");
        }
    }
}

/// A control's own seeds are some of the training's, each once.
#[test]
fn a_controls_seeds_are_some_of_the_trainings() {
    let control = |seeds: &str| {
        edit(&[
            (
                "profiles:\n",
                &format!("  controls:\n    other: {{replaces: texp, why: w, seeds: {seeds}, run: {{schedule: {{kind: constant, lr: 0.1}}}}}} # HERE\nprofiles:\n"),
            ),
            ("seeds: [0]", "seeds: [0, 1]"),
        ])
    };
    check(
        "a seed the claimed runs do not train",
        &control("[1, 2]"),
        "cpu",
        Kind::Invalid("training.controls.other.seeds"),
        &["some of training.seeds (0, 1)", "not so: 2"],
    );
    check(
        "a seed twice",
        &control("[1, 1]"),
        "cpu",
        Kind::Invalid("training.controls.other.seeds"),
        &["each once", "not so: 1"],
    );
    check(
        "no seed",
        &control("[]"),
        "cpu",
        Kind::Invalid("training.controls.other.seeds"),
        &["some of training.seeds"],
    );
    assert!(manifest::parse(&control("[1]"), Path::new(FILE), "q1", "cpu").is_ok());
}

/// A model's own checks are validated at their own field; `per_model` names models, and a
/// control's `models` are some of them.
#[test]
fn per_model_checks_and_a_controls_models_name_models() {
    let per_model =
        |body: &str| edit(&[("profiles:\n", &format!("  per_model:\n{body}profiles:\n"))]);
    check(
        "a model's check past the end",
        &per_model("    tiny:\n      dtype: f64\n      checks:\n        - {check: window_gap, a: step_decay, b: texp, metric: test_acc, windows: [[3, 9]], bound: 0.1, reason: r} # HERE\n"),
        "cpu",
        Kind::Invalid("training.per_model.tiny.checks.0"),
        &["epochs 3-9"],
    );
    check(
        "a model that is not there",
        &per_model("    huge: # HERE\n      dtype: f64\n"),
        "cpu",
        Kind::Invalid("training.per_model.huge"),
        &["no model named `huge`", "models: tiny"],
    );
    check(
        "a control on a model that is not there",
        &edit(&[(
            "profiles:\n",
            "  controls:\n    other: {replaces: texp, why: w, models: [tiny, huge], run: {schedule: {kind: constant, lr: 0.1}}} # HERE\nprofiles:\n",
        )]),
        "cpu",
        Kind::Invalid("training.controls.other.models"),
        &["some of training.models (tiny)", "not so: huge"],
    );
    assert!(manifest::parse(
        &per_model("    tiny: {dtype: f64}\n"),
        Path::new(FILE),
        "q1",
        "cpu"
    )
    .is_ok());
}

/// A profile sets a key to null to drop it: a control of the base, here.
#[test]
fn a_profile_drops_what_it_sets_to_null() {
    let text = edit(&[
        (
            "profiles:\n",
            "  controls:\n    other: {replaces: texp, why: w, run: {schedule: {kind: constant, lr: 0.1}}}\nprofiles:\n",
        ),
        ("  cpu: {}\n", "  cpu: {training: {controls: {other: ~}}}\n"),
    ]);
    let controls = |profile: &str| match manifest::parse(&text, Path::new(FILE), "q1", profile)
        .unwrap()
        .experiment()
    {
        Experiment::Training(t) => t.controls.keys().cloned().collect::<Vec<_>>(),
        _ => unreachable!("a training manifest"),
    };
    assert_eq!(controls("smoke"), ["other"]);
    assert!(controls("cpu").is_empty());
}

#[test]
fn checks_need_a_reason_a_window_inside_the_run_and_claimed_runs() {
    let gap = "    - {check: window_gap, a: step_decay, b: texp, metric: train_acc, windows: [[3, 3]], bound: 0.05, reason: r}\n";
    let with_check = |check: &str| edit(&[(gap, check)]);
    check(
        "no reason",
        &with_check(&gap.replace("reason: r}", "reason: ' '} # HERE")),
        "cpu",
        Kind::Invalid("training.checks.0.reason"),
        &["where the bound comes from"],
    );
    check(
        "a window past the end",
        &with_check(
            &gap.replace("[[3, 3]]", "[[3, 5]]")
                .replace('\n', " # HERE\n"),
        ),
        "cpu",
        Kind::Invalid("training.checks.0"),
        &["epochs 3-5", "<= 4"],
    );
    check(
        "a check naming a control",
        &edit(&[
            (gap, &gap.replace("b: texp", "b: wrong").replace('\n', " # HERE\n")),
            (
                "profiles:\n",
                "  controls:\n    wrong: {replaces: texp, why: w, run: {derive: {from: step_decay, transform: exact}}}\nprofiles:\n",
            ),
        ]),
        "cpu",
        Kind::Invalid("training.checks.0"),
        &["`wrong`", "it is a control"],
    );
    check(
        "a control replacing a run no check names",
        &edit(&[(
            "profiles:\n",
            "  controls:\n    other:\n      replaces: step_dekay # HERE\n      why: w\n      run: {schedule: {kind: constant, lr: 0.1}}\nprofiles:\n",
        )]),
        "cpu",
        Kind::Invalid("training.controls.other.replaces"),
        &["`step_dekay`"],
    );
    check(
        "an expected pass",
        &edit(&[(
            "profiles:\n",
            "  expect: {verdict: pass, reason: r} # HERE\nprofiles:\n",
        )]),
        "cpu",
        Kind::Invalid("training.expect.verdict"),
        &["other than pass"],
    );
}

#[test]
fn experiment_sections_must_be_exactly_one() {
    check(
        "no experiment section",
        "id: Q1 # HERE\ntitle: t\npaper: p\nclaim: c\n",
        "smoke",
        Kind::Invalid("id"),
        &["exactly one of", "found 0"],
    );
    let toy = "toy:\n  population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}\n  \
               minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1, batch_size: 4}\n";
    check(
        "two experiment sections",
        &edit(&[
            ("id: Q1\n", "id: Q1 # HERE\n"),
            ("profiles:\n", &format!("{toy}profiles:\n")),
        ]),
        "cpu",
        Kind::Invalid("id"),
        &["exactly one of", "found 2"],
    );
}

#[test]
fn a_golden_tolerance_outside_zero_one_is_rejected() {
    check(
        "golden tolerance of 2",
        &edit(&[(
            "claim: nothing\n",
            "claim: nothing\ngolden_tolerance: 2 # HERE\n",
        )]),
        "smoke",
        Kind::Invalid("golden_tolerance"),
        &["golden_tolerance", "between 0 and 1", "got 2"],
    );
}

/// A valid toy manifest (the `slurm` section is the same for every kind).
const TOY: &str = "\
id: Q1
title: a toy
paper: none
claim: nothing
toy:
  population: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1}
  minibatch: {lr: 0.1, weight_decay: 0.01, steps: 10, w0: [0.2, 1.0], dim: 2, seed: 0, record_every: 1, batch_size: 4}
profiles:
  smoke: {}
  cpu: {}
";

/// The resources of a Slurm task: a time Slurm reads, a stop signal at least 60 s (Slurm's
/// resolution) and less than the limit before it, at least one CPU, memory in Slurm's units,
/// no unknown key; checked at every profile, where the profile sets them too.
#[test]
fn slurm_resources_are_checked() {
    let toy = |from: &str, to: &str| {
        assert!(TOY.contains(from));
        TOY.replacen(from, to, 1)
    };
    let with = |slurm: &str| toy("claim: nothing\n", &format!("claim: nothing\n{slurm}"));
    for (case, slurm, field, needles) in [
        (
            "a time Slurm cannot read",
            "slurm: {time: \"4 hours\"} # HERE\n",
            "slurm.time",
            &["`4 hours` is not a Slurm time limit", "HH:MM:SS"][..],
        ),
        (
            "a zero time",
            "slurm: {time: \"0\"} # HERE\n",
            "slurm.time",
            &["above zero"][..],
        ),
        (
            "a stop signal after the limit",
            "slurm: {time: \"05:00\", stop_before_limit_s: 600} # HERE\n",
            "slurm.stop_before_limit_s",
            &["600 s is not before the time limit `05:00` (300 s)"][..],
        ),
        (
            "a stop signal under Slurm's resolution",
            "slurm: {stop_before_limit_s: 30} # HERE\n",
            "slurm.stop_before_limit_s",
            &["at least 60", "got 30"][..],
        ),
        (
            "no CPU",
            "slurm: {cpus_per_task: 0} # HERE\n",
            "slurm.cpus_per_task",
            &["at least 1"][..],
        ),
        (
            "memory in other units",
            "slurm: {mem: 16GB} # HERE\n",
            "slurm.mem",
            &["`16GB` is not a Slurm memory size", "16G"][..],
        ),
    ] {
        check(case, &with(slurm), "smoke", Kind::Invalid(field), needles);
    }
    check(
        "an unknown key",
        &with("slurm: {gpus: 1} # HERE\n"),
        "smoke",
        Kind::Parse,
        &["unknown field `gpus`", "time"],
    );
    // A profile's resources are validated whichever profile runs.
    check(
        "a profile's bad time",
        &toy(
            "  cpu: {}\n",
            "  cpu:\n    slurm: {time: \"1:2:3:4\"} # HERE\n",
        ),
        "smoke",
        Kind::Invalid("slurm.time"),
        &["with profile `cpu`", "`1:2:3:4` is not a Slurm time limit"],
    );
    // Each of Slurm's forms reads, and the defaults are valid.
    for time in ["90", "90:30", "04:00:00", "2-12", "2-12:30", "2-12:30:15"] {
        let text = with(&format!("slurm: {{time: \"{time}\"}}\n"));
        manifest::parse(&text, Path::new(FILE), "q1", "smoke")
            .unwrap_or_else(|e| panic!("{time}: {e}"));
    }
}

/// With γ = 0.9 a real α needs ηλ ≤ (1 − √γ)² ≈ 2.6e-3 (THEORY.md §3); lr 1, wd 0.01 breaks it.
#[test]
fn a_schedule_with_no_real_alpha_is_rejected() {
    // A written TEXP schedule is built while validating: a parse-time error.
    check(
        "a texp schedule with no real alpha",
        &edit(&[(
            "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}\n",
            "      schedule: {kind: texp, lr: 1.0, milestones: [2, 3], gamma: 0.1, weight_decay: 0.01, momentum: 0.9} # HERE\n",
        )]),
        "cpu",
        Kind::Invalid("training.runs.step_decay.schedule"),
        &["no exponential equivalent", "lr = 1", "lower the LR or the weight decay"],
    );
    // A derived run's twin is built while validating too: the error names the derived run.
    check(
        "a derived run whose base has no real alpha",
        &edit(&[
            (
                "      weight_decay: 5.0e-4\n      schedule: {kind: multistep, lr: 0.1,",
                "      weight_decay: 0.01\n      schedule: {kind: multistep, lr: 1.0,",
            ),
            (
                "      derive: {from: step_decay, transform: texp}\n",
                "      derive: {from: step_decay, transform: texp} # HERE\n",
            ),
        ]),
        "cpu",
        Kind::Invalid("training.runs.texp.derive"),
        &[
            "no exponential equivalent",
            "lower the LR or the weight decay",
        ],
    );
}

/// Every file in `experiments/` defines smoke, cpu and paper (and may define cpu-long), parses
/// at each profile it defines, keeps its
/// experiment kind, every run's optimizer plan (base and derived twins) builds, and so does
/// every model (a GroupNorm's groups must divide the narrowed widths of a small profile).
#[test]
fn every_experiment_manifest_parses_at_every_profile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "found only {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let raw: manifest::Manifest = serde_yaml::from_str(&text).unwrap();
        let defined: Vec<&str> = raw.profiles.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = PROFILES
            .into_iter()
            .filter(|p| !OPTIONAL_PROFILES.contains(p) || defined.contains(p))
            .collect();
        want.sort();
        assert_eq!(defined, want, "{}: profiles", file.display());
        let kind = |r: &manifest::Resolved| match r.experiment() {
            Experiment::Training(_) => "training",
            Experiment::Exactness(_) => "exactness",
            Experiment::ScaleInvariance(_) => "scale_invariance",
            Experiment::Toy(_) => "toy",
        };
        let mut kinds = Vec::new();
        for profile in want {
            let r = manifest::load(file, profile)
                .unwrap_or_else(|e| panic!("{} at {profile}: {e}", file.display()));
            assert_eq!(r.profile, profile);
            assert_eq!(r.manifest.id.to_lowercase(), r.name, "{}", file.display());
            kinds.push(kind(&r));
            let runs = match r.experiment() {
                Experiment::Training(t) => Some((&t.runs, steps_per_epoch(&t.data))),
                Experiment::Exactness(x) => Some((&x.runs, 1)),
                _ => None,
            };
            let models: Vec<&explr_zoo::ModelSpec> = match r.experiment() {
                Experiment::Training(t) => t.models.values().collect(),
                Experiment::Exactness(x) => vec![&x.model],
                Experiment::ScaleInvariance(s) => s.models.values().collect(),
                Experiment::Toy(_) => vec![],
            };
            for spec in models {
                let store = explr_nn::ParamStore::new(&Device::Cpu, DType::F32, 0);
                if let Err(e) = explr_zoo::Model::new(spec, &store) {
                    panic!("{} at {profile}: model {spec:?}: {e}", file.display());
                }
            }
            if let Some((runs, spe)) = runs {
                for name in runs.keys() {
                    plan::plan(runs, name, spe).unwrap_or_else(|e| {
                        panic!("{} at {profile}: run {name}: {e}", file.display())
                    });
                }
            }
        }
        assert!(kinds.windows(2).all(|w| w[0] == w[1]), "{}", file.display());
    }
}

#[test]
fn typo_in_another_profile_is_caught_whichever_profile_runs() {
    check(
        "unknown key inside another profile, parsed at smoke",
        &edit(&[("  cpu: {}\n", "  cpu:\n    colour: red # HERE\n")]),
        "smoke",
        Kind::Parse,
        &["colour", "cpu"],
    );
}

/// One case per rule that a run would otherwise apply only at run start (or never): each is
/// rejected when the manifest is parsed, so `--dry-run` can be trusted, at the line the user
/// edited and naming the field.
#[test]
fn everything_a_run_would_reject_is_rejected_by_parsing() {
    let model = "    tiny: {arch: preresnet, depth: 8, width: 2}\n";
    /// (case, edits of the base manifest, the error, words its message must contain)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Kind, &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "a misspelt check metric",
            &[("metric: train_acc,", "metric: train_accuracy, # HERE\n     ")],
            Kind::Parse,
            &["train_accuracy", "train_acc", "test_acc"],
        ),
        (
            "a ResNet depth that is not 6k+2",
            &[(model, "    tiny: {arch: preresnet, depth: 33, width: 2} # HERE\n")],
            Kind::Invalid("training.models.tiny"),
            &["33", "6k+2"],
        ),
        (
            "width 0",
            &[(model, "    tiny: {arch: preresnet, depth: 8, width: 0} # HERE\n")],
            Kind::Invalid("training.models.tiny"),
            &["width"],
        ),
        (
            "GroupNorm groups that do not divide the channels",
            &[(
                model,
                "    tiny: {arch: preresnet, depth: 8, width: 8, norm: \"gn:3\"} # HERE\n",
            )],
            Kind::Invalid("training.models.tiny"),
            &["3", "8"],
        ),
        (
            "a negative eps",
            &[(model, "    tiny: {arch: preresnet, depth: 8, width: 2, eps: -1.0} # HERE\n")],
            Kind::Invalid("training.models.tiny.eps"),
            &["eps", "-1"],
        ),
        (
            "a weight-decay schedule with unsorted milestones",
            &[(
                "      weight_decay: 5.0e-4\n",
                "      weight_decay_schedule: {kind: multistep, lr: 5.0e-4, milestones: [3, 2], gamma: 0.1} # HERE\n",
            )],
            Kind::Invalid("training.runs.step_decay.weight_decay_schedule"),
            &["strictly increasing"],
        ),
        (
            "both a weight decay and a weight-decay schedule",
            &[(
                "      weight_decay: 5.0e-4\n",
                "      weight_decay: 5.0e-4 # HERE\n      weight_decay_schedule: {kind: constant, lr: 5.0e-4}\n",
            )],
            Kind::Invalid("training.runs.step_decay.weight_decay"),
            &["not both"],
        ),
        (
            "test_size 0",
            &[("    train_size: 64\n", "    train_size: 64\n    test_size: 0 # HERE\n")],
            Kind::Invalid("training.data.test_size"),
            &["positive"],
        ),
        (
            "num_classes unlike the dataset's",
            &[(model, "    tiny: {arch: preresnet, depth: 8, width: 2, num_classes: 5} # HERE\n")],
            Kind::Invalid("training.models.tiny.num_classes"),
            &["10 classes", "got 5"],
        ),
        (
            "a seed listed twice",
            &[("  seeds: [0]\n", "  seeds: [0, 1, 0] # HERE\n")],
            Kind::Invalid("training.seeds"),
            &["seed 0", "twice"],
        ),
        (
            "an error in a base run is reported at the base, not at its twin",
            &[(
                "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}\n",
                "      schedule: {kind: multistep, lr: -0.1, milestones: [2, 3], gamma: 0.1} # HERE\n",
            )],
            Kind::Invalid("training.runs.step_decay.schedule"),
            &["lr"],
        ),
        (
            "of two errors, the one nearest the top of the file",
            &[
                ("  seeds: [0]\n", "  seeds: [] # HERE\n"),
                ("  epochs: 4\n", "  epochs: 0\n"),
            ],
            Kind::Invalid("training.seeds"),
            &["at least one seed"],
        ),
        (
            "an exact twin whose §4 recursion breaks down late in the run (cosine down to 0)",
            &[
                (
                    "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}\n",
                    "      schedule: {kind: cosine, lr: 0.1, t_max: 3}\n",
                ),
                (
                    "      derive: {from: step_decay, transform: texp}\n",
                    "      derive: {from: step_decay, transform: exact} # HERE\n",
                ),
            ],
            Kind::Invalid("training.runs.texp.derive"),
            &["breaks down", "eta_min"],
        ),
        (
            "an angular_update check on a run without weight decay",
            &[(
                "  checks:\n",
                "  checks:\n    - {check: angular_update, run: texp, window: [2, 4], tolerance: 0.1, reason: r} # HERE\n",
            )],
            Kind::Invalid("training.checks.0.run"),
            &["constant weight decay"],
        ),
    ];
    for (case, edits, kind, needles) in cases {
        check(case, &edit(edits), "cpu", *kind, needles);
    }
}

#[test]
fn a_byte_order_mark_is_accepted_and_num_classes_comes_from_the_dataset() {
    let with_bom = format!("\u{feff}{BASE}");
    let r = manifest::parse(&with_bom, Path::new(FILE), "q1", "cpu").unwrap();
    let Experiment::Training(t) = r.experiment() else {
        panic!("not a training manifest");
    };
    // Left out in the file: the resolved manifest records the dataset's count.
    assert_eq!(t.models["tiny"].num_classes, 10);
}

/// A valid exactness manifest; cases edit it with string replacements.
const EXACT: &str = "\
id: Q1
title: an exactness test
paper: none
claim: nothing
exactness:
  model: {arch: preresnet, depth: 8, width: 2, eps: 0.0}
  data: {dataset: synthetic, train_size: 64, test_size: 8, batch_size: 32}
  steps: 10
  runs:
    constant_wd:
      weight_decay: 5.0e-4
      schedule: {kind: constant, lr: 0.1}
    exp_lr:
      derive: {from: constant_wd, transform: exact}
  tolerance: {exp_lr: 1.0e-10}
profiles:
  smoke: {}
  cpu: {}
";

/// A valid scale-invariance manifest.
const SCALE: &str = "\
id: Q1
title: a scale-invariance test
paper: none
claim: nothing
scale_invariance:
  factors: [0.1, 10.0]
  batch_size: 8
  tolerance: 1.0e-10
  models:
    m: {arch: preresnet, depth: 8, width: 2, eps: 0.0}
profiles:
  smoke: {}
  cpu: {}
";

/// `text` with each `(from, to)` replaced once (the `from` must occur).
fn edit_of(text: &str, edits: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` is not in the manifest");
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn the_other_base_manifests_are_valid() {
    for (kind, text) in [
        ("exactness", EXACT),
        ("scale_invariance", SCALE),
        ("toy", TOY),
    ] {
        for profile in ["smoke", "cpu"] {
            manifest::parse(text, Path::new(FILE), "q1", profile)
                .unwrap_or_else(|e| panic!("{kind} at {profile}: {e}"));
        }
    }
}

/// Every number that sizes the work or memory of validation (and of the run) is held to a
/// stated limit before anything is built or looped over, and arithmetic on it cannot
/// overflow: each case is an error at its field and line that names the limit, quickly.
#[test]
fn numbers_past_their_limits_are_rejected_before_anything_is_built() {
    let model = "    tiny: {arch: preresnet, depth: 8, width: 2}\n";
    let data = "    dataset: synthetic\n    train_size: 64\n";
    /// (case, base manifest, edits, the error, words its message must contain)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        Kind,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "a billion epochs",
            BASE,
            &[("  epochs: 4\n", "  epochs: 1000000000 # HERE\n")],
            Kind::Invalid("training.epochs"),
            &["1000000000", "limit of 10000 epochs"],
        ),
        (
            "u64::MAX epochs (steps per epoch × epochs overflowed)",
            BASE,
            &[("  epochs: 4\n", "  epochs: 18446744073709551615 # HERE\n")],
            Kind::Invalid("training.epochs"),
            &["limit of 10000 epochs"],
        ),
        (
            "a billion epochs in the profile that runs",
            BASE,
            &[("      epochs: 3\n", "      epochs: 1000000000 # HERE\n")],
            Kind::Invalid("training.epochs"),
            &["profile `smoke`", "limit of 10000 epochs"],
        ),
        (
            "more updates per run than the limit (50000 images, batch 1, 1000 epochs)",
            BASE,
            &[
                ("    train_size: 64\n", "    train_size: 50000\n"),
                ("    batch_size: 32\n", "    batch_size: 1\n"),
                ("  epochs: 4\n", "  epochs: 1000 # HERE\n"),
            ],
            Kind::Invalid("training.epochs"),
            &["50000 updates", "limit of 10000000 updates per run"],
        ),
        (
            "a training set larger than the synthetic limit",
            BASE,
            &[(
                "    train_size: 64\n",
                "    train_size: 100000000000 # HERE\n",
            )],
            Kind::Invalid("training.data.train_size"),
            &["100000000000 images", "the 50000 of synthetic"],
        ),
        (
            "train_size 1e11 (a float in YAML) is a type error",
            BASE,
            &[("    train_size: 64\n", "    train_size: 1e11 # HERE\n")],
            Kind::Parse,
            &["train_size"],
        ),
        (
            "a test set larger than the synthetic limit",
            BASE,
            &[(
                "    train_size: 64\n",
                "    train_size: 64\n    test_size: 18446744073709551615 # HERE\n",
            )],
            Kind::Invalid("training.data.test_size"),
            &["the 10000 of synthetic"],
        ),
        (
            "more CIFAR-10 training images than it has",
            BASE,
            &[(data, "    dataset: cifar10\n    train_size: 60000 # HERE\n")],
            Kind::Invalid("training.data.train_size"),
            &["60000 images", "the 50000 of cifar10's training split"],
        ),
        (
            "a model a million wide",
            BASE,
            &[(
                model,
                "    tiny: {arch: preresnet, depth: 8, width: 1000000} # HERE\n",
            )],
            Kind::Invalid("training.models.tiny.width"),
            &["parameters", "limit of 50000000", "lower the width"],
        ),
        (
            "a model whose parameter count overflows",
            BASE,
            &[(
                model,
                "    tiny: {arch: preresnet, depth: 8, width: 18446744073709551615} # HERE\n",
            )],
            Kind::Invalid("training.models.tiny.width"),
            &["more than 2^64 parameters"],
        ),
        (
            "a VGG too wide",
            BASE,
            &[(
                model,
                "    tiny: {arch: vgg, depth: 11, width: 4096} # HERE\n",
            )],
            Kind::Invalid("training.models.tiny.width"),
            &["VGG", "limit of 50000000"],
        ),
        (
            "a PreResNet a million deep",
            BASE,
            &[(
                model,
                "    tiny: {arch: preresnet, depth: 1000004, width: 2} # HERE\n",
            )],
            Kind::Invalid("training.models.tiny.depth"),
            &["1000004", "limit of 1202"],
        ),
        (
            "exactness steps past the limit",
            EXACT,
            &[("  steps: 10\n", "  steps: 18446744073709551615 # HERE\n")],
            Kind::Invalid("exactness.steps"),
            &["limit of 10000000 updates"],
        ),
        (
            "an exactness training set past the limit",
            EXACT,
            &[(
                "train_size: 64,",
                "train_size: 100000000000, # HERE\n        ",
            )],
            Kind::Invalid("exactness.data.train_size"),
            &["the 50000 of synthetic"],
        ),
        (
            "a probe batch past the synthetic limit",
            SCALE,
            &[("  batch_size: 8\n", "  batch_size: 100000000000 # HERE\n")],
            Kind::Invalid("scale_invariance.batch_size"),
            &["limit of 50000"],
        ),
        (
            "a scale-invariance model a million wide",
            SCALE,
            &[(
                "    m: {arch: preresnet, depth: 8, width: 2, eps: 0.0}\n",
                "    m: {arch: preresnet, depth: 8, width: 1000000, eps: 0.0} # HERE\n",
            )],
            Kind::Invalid("scale_invariance.models.m.width"),
            &["limit of 50000000"],
        ),
        (
            "toy steps past the limit",
            TOY,
            &[(
                "  population: {lr: 0.1, weight_decay: 0.01, steps: 10,",
                "  population: {lr: 0.1, weight_decay: 0.01, steps: 100000000000, # HERE\n    ",
            )],
            Kind::Invalid("toy.population.steps"),
            &["limit of 10000000 updates"],
        ),
        (
            "a toy input dimension past the limit",
            TOY,
            &[(
                "dim: 2, seed: 0, record_every: 1, batch_size: 4}",
                "dim: 100000000000, seed: 0, record_every: 1, batch_size: 4} # HERE",
            )],
            Kind::Invalid("toy.minibatch.dim"),
            &["limit of 100000"],
        ),
        (
            "a Slurm time too long to count in seconds",
            TOY,
            &[(
                "claim: nothing\n",
                "claim: nothing\nslurm: {time: \"999999999999999999-1\"} # HERE\n",
            )],
            Kind::Invalid("slurm.time"),
            &["not a Slurm time limit"],
        ),
    ];
    for (case, base, edits, kind, needles) in cases {
        check(case, &edit_of(base, edits), "smoke", *kind, needles);
    }
}

/// The limits leave room for the paper's scale: the largest values every existing manifest
/// uses, and more, are valid (the experiments themselves are checked at every profile above).
#[test]
fn values_within_the_limits_are_valid() {
    let model = "    tiny: {arch: preresnet, depth: 8, width: 2}\n";
    for (case, edits) in [
        (
            "the whole CIFAR-10 training set at batch 128 for 160 epochs (the paper's)",
            &[
                (
                    "    dataset: synthetic\n    train_size: 64\n",
                    "    dataset: cifar10\n    train_size: 50000\n",
                ),
                ("    batch_size: 32\n", "    batch_size: 128\n"),
                ("  epochs: 4\n", "  epochs: 160\n"),
            ][..],
        ),
        (
            "10000 epochs",
            &[("  epochs: 4\n", "  epochs: 10000\n")][..],
        ),
        (
            "VGG-19 at the reference width",
            &[(model, "    tiny: {arch: vgg, depth: 19}\n")][..],
        ),
        (
            "PreResNet-110 at the reference width",
            &[(model, "    tiny: {arch: preresnet, depth: 110}\n")][..],
        ),
        (
            "a batch as large as the training set",
            &[("    batch_size: 32\n", "    batch_size: 64\n")][..],
        ),
        (
            "a tint of 0 and of 1",
            &[(
                "    batch_size: 32\n",
                "    batch_size: 32\n    synthetic_tint: 0\n",
            )][..],
        ),
    ] {
        manifest::parse(&edit(edits), Path::new(FILE), "q1", "cpu")
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    }
}

/// The parameter count that [`validate::param_count`] reads from a spec bounds the count of
/// the model the zoo builds, closely (so the limit means what it says).
#[test]
fn the_parameter_count_from_the_spec_bounds_the_built_models() {
    use explr_zoo::{Arch, ModelSpec};
    for (arch, depth, width) in [
        (Arch::PreResNet, 8, 2),
        (Arch::PreResNet, 32, 16),
        (Arch::ResNet, 20, 4),
        (Arch::ResNet, 56, 16),
        (Arch::Vgg, 11, 4),
        (Arch::Vgg, 13, 4),
        (Arch::Vgg, 16, 8),
        (Arch::Vgg, 19, 8),
    ] {
        let spec = ModelSpec::new(arch, depth).with_width(width);
        let store = explr_nn::ParamStore::new(&Device::Cpu, DType::F32, 0);
        let built = explr_zoo::Model::new(&spec, &store).unwrap().num_params() as u64;
        let counted = validate::param_count(&spec).unwrap();
        assert!(
            counted >= built && counted <= built + built / 10,
            "{arch} {depth} width {width}: counted {counted}, built {built}"
        );
    }
}

/// Ids become folder names and find their file: only letters, digits, `-` and `_`, and the
/// file's name up to case.
#[test]
fn ids_are_names_and_name_their_file() {
    for (case, id, needles) in [
        (
            "a path",
            "\"../../etc\"",
            &["`../../etc` is not a name", "letters, digits"][..],
        ),
        ("a slash", "a/b", &["`a/b` is not a name"][..]),
        ("a dot", "Q.1", &["`Q.1` is not a name"][..]),
        ("whitespace", "\"Q 1\"", &["`Q 1` is not a name"][..]),
        ("empty", "\"\"", &["must not be empty"][..]),
        (
            "another file's id",
            "Q9",
            &["`Q9` is not the file's name `q1`", "Q1"][..],
        ),
    ] {
        check(
            case,
            &edit(&[("id: Q1\n", &format!("id: {id} # HERE\n"))]),
            "cpu",
            Kind::Invalid("id"),
            needles,
        );
    }
    // Case does not matter, and `-` and `_` are name characters.
    manifest::parse(
        &edit(&[("id: Q1\n", "id: q1\n")]),
        Path::new(FILE),
        "q1",
        "cpu",
    )
    .unwrap();
    let named = edit(&[("id: Q1\n", "id: Q1-b_2\n")]);
    manifest::parse(&named, Path::new("q1-b_2.yaml"), "q1-b_2", "cpu").unwrap();
}

/// A batch larger than the training set would train one partial batch per epoch.
#[test]
fn a_batch_larger_than_the_training_set_is_rejected() {
    check(
        "training",
        &edit(&[
            ("    train_size: 64\n", "    train_size: 512\n"),
            ("    batch_size: 32\n", "    batch_size: 1024 # HERE\n"),
        ]),
        "cpu",
        Kind::Invalid("training.data.batch_size"),
        &["1024 is more than the 512 training images", "at most 512"],
    );
    check(
        "training, in the profile that runs",
        &edit(&[(
            "      epochs: 3\n",
            "      epochs: 3\n      data: {batch_size: 65} # HERE\n",
        )]),
        "smoke",
        Kind::Invalid("training.data.batch_size"),
        &["profile `smoke`", "65 is more than the 64 training images"],
    );
    check(
        "exactness",
        &edit_of(EXACT, &[("batch_size: 32}", "batch_size: 128} # HERE")]),
        "cpu",
        Kind::Invalid("exactness.data.batch_size"),
        &["128 is more than the 64 training images"],
    );
}

/// Every float a manifest gives is finite and in its range, rejected at its own line (the
/// synthetic tint was only checked when the data was generated, without file or line).
#[test]
fn non_finite_floats_are_rejected_at_their_line() {
    let run = "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}\n";
    let cases: &[(&str, &str, &str, Kind)] = &[
        (
            "a NaN tint",
            "    batch_size: 32\n",
            "    batch_size: 32\n    synthetic_tint: .nan # HERE\n",
            Kind::Invalid("training.data.synthetic_tint"),
        ),
        (
            "an infinite tint",
            "    batch_size: 32\n",
            "    batch_size: 32\n    synthetic_tint: .inf # HERE\n",
            Kind::Invalid("training.data.synthetic_tint"),
        ),
        (
            "a tint above 1",
            "    batch_size: 32\n",
            "    batch_size: 32\n    synthetic_tint: 1.5 # HERE\n",
            Kind::Invalid("training.data.synthetic_tint"),
        ),
        (
            "a negative tint",
            "    batch_size: 32\n",
            "    batch_size: 32\n    synthetic_tint: -0.1 # HERE\n",
            Kind::Invalid("training.data.synthetic_tint"),
        ),
        (
            "a NaN LR",
            run,
            "      schedule: {kind: multistep, lr: .nan, milestones: [2, 3], gamma: 0.1} # HERE\n",
            Kind::Invalid("training.runs.step_decay.schedule"),
        ),
        (
            "a NaN gamma",
            run,
            "      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: .nan} # HERE\n",
            Kind::Invalid("training.runs.step_decay.schedule"),
        ),
        (
            "a NaN momentum",
            "      weight_decay: 5.0e-4\n",
            "      weight_decay: 5.0e-4\n      momentum: .nan # HERE\n",
            Kind::Invalid("training.runs.step_decay.momentum"),
        ),
        (
            "a NaN weight decay",
            "      weight_decay: 5.0e-4\n",
            "      weight_decay: .nan # HERE\n",
            Kind::Invalid("training.runs.step_decay.weight_decay"),
        ),
        (
            "a NaN eps",
            "    tiny: {arch: preresnet, depth: 8, width: 2}\n",
            "    tiny: {arch: preresnet, depth: 8, width: 2, eps: .nan} # HERE\n",
            Kind::Invalid("training.models.tiny.eps"),
        ),
        (
            "a NaN bound",
            "bound: 0.05, reason: r}\n",
            "bound: .nan, reason: r} # HERE\n",
            Kind::Invalid("training.checks.0"),
        ),
        (
            "a NaN golden tolerance",
            "claim: nothing\n",
            "claim: nothing\ngolden_tolerance: .nan # HERE\n",
            Kind::Invalid("golden_tolerance"),
        ),
    ];
    for (case, from, to, kind) in cases {
        check(case, &edit(&[(from, to)]), "cpu", *kind, &[]);
    }
    check(
        "a NaN tint names the field and the range",
        &edit(&[(
            "    batch_size: 32\n",
            "    batch_size: 32\n    synthetic_tint: .nan # HERE\n",
        )]),
        "cpu",
        Kind::Invalid("training.data.synthetic_tint"),
        &["from 0 to 1", "got NaN"],
    );
    check(
        "a NaN exactness tolerance",
        &edit_of(
            EXACT,
            &[(
                "  tolerance: {exp_lr: 1.0e-10}\n",
                "  tolerance: {exp_lr: .nan} # HERE\n",
            )],
        ),
        "cpu",
        Kind::Invalid("exactness.tolerance.exp_lr"),
        &["got NaN"],
    );
    check(
        "a NaN scale factor",
        &edit_of(
            SCALE,
            &[(
                "  factors: [0.1, 10.0]\n",
                "  factors: [0.1, .nan] # HERE\n",
            )],
        ),
        "cpu",
        Kind::Invalid("scale_invariance.factors"),
        &["finite"],
    );
}

/// A control named like a run is reported as such, first and alone: it must not replace the
/// run while the runs are planned (which said a twin of that run was "itself derived").
#[test]
fn a_control_named_like_a_run_gets_the_right_message() {
    for (case, control) in [
        (
            "a derived control named like the base run",
            "    step_decay: # HERE\n      replaces: texp\n      why: w\n      run: {derive: {from: step_decay, transform: exact}}\n",
        ),
        (
            "a control with a schedule named like the twin",
            "    texp: # HERE\n      replaces: texp\n      why: w\n      run: {schedule: {kind: constant, lr: 0.05}}\n",
        ),
    ] {
        let text = edit(&[("profiles:\n", &format!("  controls:\n{control}profiles:\n"))]);
        let name = control.trim().split(':').next().unwrap();
        let err = manifest::parse(&text, Path::new(FILE), "q1", "cpu").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("itself derived"), "{case}: {msg}");
        check(
            case,
            &text,
            "cpu",
            Kind::Invalid(if name == "step_decay" {
                "training.controls.step_decay"
            } else {
                "training.controls.texp"
            }),
            &[&format!("`{name}` is also a run: a control needs a name of its own")],
        );
    }
}
