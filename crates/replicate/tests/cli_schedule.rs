//! `explr schedule`, run as a binary.

use std::process::Command;

/// Runs `explr schedule ARGS`; returns (success, stdout, stderr).
fn explr(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_explr"))
        .arg("schedule")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The command fails and its message contains every needle.
fn check_err(args: &[&str], needles: &[&str]) {
    let (ok, _, err) = explr(args);
    assert!(!ok, "{args:?} succeeded");
    for n in needles {
        assert!(err.contains(n), "{args:?}: stderr `{err}` lacks `{n}`");
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    ((a - b) / b).abs() <= rel
}

#[test]
fn texp_json_has_theory_numbers() {
    let (ok, out, err) = explr(&[
        "--kind",
        "texp",
        "--lr",
        "0.1",
        "--milestones",
        "80,120",
        "--gamma",
        "0.1",
        "--weight-decay",
        "5e-4",
        "--momentum",
        "0.9",
        "--steps-per-epoch",
        "391",
        "--epochs",
        "160",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 160 * 391);
    // THEORY.md §3, §5 reference values.
    assert!(close(v["alpha"].as_f64().unwrap(), 0.99949772837, 1e-11));
    assert!(close(
        v["phases"][0]["per_step_growth"].as_f64().unwrap(),
        1.0010053006,
        1e-10
    ));
    assert!(close(
        v["phases"][0]["per_epoch_growth"].as_f64().unwrap(),
        1.48123,
        5e-6
    ));
    assert_eq!(v["phases"][1]["start_step"].as_u64().unwrap(), 80 * 391);
    assert!(close(rows[391]["lr"].as_f64().unwrap(), 0.148198, 5e-6));
    assert!(close(rows[391]["epoch"].as_f64().unwrap(), 1.0, 0.0));
}

#[test]
fn csv_per_epoch_and_spec_file() {
    let (ok, out, err) = explr(&[
        "--kind",
        "multistep",
        "--lr",
        "1",
        "--milestones",
        "2",
        "--gamma",
        "0.5",
        "--steps-per-epoch",
        "10",
        "--epochs",
        "4",
        "--per",
        "epoch",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "step,epoch,lr\n0,0,1e0\n10,1,1e0\n20,2,5e-1\n30,3,5e-1\n"
    );

    let dir = std::env::temp_dir().join(format!("explr-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("s.yaml");
    std::fs::write(&spec, "kind: step\nlr: 1\nstep_size: 2\ngamma: 0.5\n").unwrap();
    let plot = dir.join("p.svg");
    let (ok, out, err) = explr(&[
        "--spec",
        spec.to_str().unwrap(),
        "--steps",
        "5",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "step,epoch,lr\n0,,1e0\n1,,1e0\n2,,5e-1\n3,,5e-1\n4,,2.5e-1\n"
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("log scale"),
        "{svg}"
    );
    std::fs::write(&spec, "kind: step\nlr: 1\nstep_sise: 2\ngamma: 0.5\n").unwrap();
    check_err(
        &["--spec", spec.to_str().unwrap(), "--steps", "5"],
        &["--spec", "unknown field `step_sise`"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exp_twin_and_exponential_report_growth() {
    let (ok, out, err) = explr(&[
        "--kind",
        "constant",
        "--lr",
        "0.1",
        "--twin",
        "exact",
        "--weight-decay",
        "5e-4",
        "--momentum",
        "0.9",
        "--steps",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("# alpha=9.994977283678"), "{out}");
    assert!(out.contains("per_step_growth=1.00100530060"), "{out}");
    // The exact twin is its own reference: ratio 1, no corrections.
    assert!(
        out.contains("step,epoch,lr,scale,correction,lr_over_exact\n"),
        "{out}"
    );
    assert!(out.ends_with(",0e0,1e0\n"), "{out}");
    let (ok, out, err) = explr(&[
        "--kind",
        "exponential",
        "--lr",
        "0.1",
        "--factor",
        "2",
        "--steps-per-epoch",
        "4",
        "--steps",
        "5",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("per_epoch_growth=2e0"), "{out}");
    assert!(out.ends_with("4,1,2e-1\n"), "{out}");
}

/// `explr schedule ARGS --format json`, parsed.
fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let (ok, out, err) = explr(&all);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn texp_twins_show_their_corrections_and_the_ratio_to_the_exact_lr() {
    // THEORY.md §5 with 10 steps per epoch: ÷10 at epochs 8 and 12 (updates 80 and 120).
    let common = [
        "--lr",
        "0.1",
        "--momentum",
        "0.9",
        "--steps-per-epoch",
        "10",
        "--epochs",
        "16",
    ];
    let step_decay = [
        &common[..],
        &[
            "--kind",
            "multistep",
            "--milestones",
            "8,12",
            "--gamma",
            "0.1",
        ],
    ]
    .concat();
    let texp = json(
        &[
            &step_decay[..],
            &["--twin", "texp", "--weight-decay", "5e-4"],
        ]
        .concat(),
    );
    let rows = texp["rows"].as_array().unwrap();
    let field = |k: usize, f: &str| rows[k][f].as_f64().unwrap();
    assert_eq!(texp["twin"]["rule"], "root");
    // The one-time corrections: at each phase start, and rounding-level elsewhere.
    let phases = texp["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3);
    for (phase, k) in phases.iter().zip([0usize, 80, 120]) {
        assert_eq!(phase["start_step"].as_u64(), Some(k as u64));
        assert_eq!(phase["correction"].as_f64(), rows[k]["correction"].as_f64());
    }
    assert!(field(80, "correction") > 0.0 && field(120, "correction") > 0.0);
    // Elsewhere the root differs from the recursion's fixed point by rounding (a few ulps of
    // α, ≤ 1e-15) against a jump of ~1e-6..1e-5 at the phase start, and c is that over η_k·P_k²
    // (η 10× larger before the boundary): below 1e-8 of the phase start's.
    assert!(field(79, "correction").abs() < 1e-8 * field(80, "correction"));
    // TEXP's LR equals the recursion's in phase 0 and is ≈4.1e-6 below it after the ÷10.
    assert!((field(79, "lr_over_exact") - 1.0).abs() < 1e-12);
    let after = 1.0 - field(100, "lr_over_exact");
    assert!(after > 3e-6 && after < 5e-6, "TEXP/exact − 1 = {after:e}");
    // The same LR as `--kind texp`, which is the same twin.
    let kind = json(
        &[
            &common[..],
            &[
                "--kind",
                "texp",
                "--milestones",
                "8,12",
                "--gamma",
                "0.1",
                "--weight-decay",
                "5e-4",
            ],
        ]
        .concat(),
    );
    for k in [0, 79, 80, 150] {
        let rel = (kind["rows"][k]["lr"].as_f64().unwrap() / field(k, "lr") - 1.0).abs();
        assert!(rel < 1e-14, "update {k}: {rel:e}");
        assert_eq!(
            kind["rows"][k]["correction"].as_f64(),
            rows[k]["correction"].as_f64()
        );
    }

    // TEXP-- of a constant LR with the weight decay divided at the same epochs: ≈0.8 % off the
    // exact twin's LR after a boundary (THEORY.md §5), corrected at 80 and 120.
    let wd = "{kind: multistep, lr: 5.0e-4, milestones: [8, 12], gamma: 0.1}";
    let minus = json(
        &[
            &common[..],
            &[
                "--kind",
                "constant",
                "--twin",
                "texp-minus",
                "--weight-decay-schedule",
                wd,
            ],
        ]
        .concat(),
    );
    let rows = minus["rows"].as_array().unwrap();
    let off = (0..160)
        .map(|k| (rows[k]["lr_over_exact"].as_f64().unwrap() - 1.0).abs())
        .fold(0.0, f64::max);
    assert!(
        off > 5e-3 && off < 1.2e-2,
        "TEXP-- is {off:e} off the exact LR"
    );
    assert!(rows[80]["correction"].as_f64().unwrap() > 0.0);
    let exact = json(
        &[
            &common[..],
            &[
                "--kind",
                "constant",
                "--twin",
                "exact",
                "--weight-decay-schedule",
                wd,
            ],
        ]
        .concat(),
    );
    assert_eq!(exact["twin"]["rule"], "recursion");
    assert!(exact["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["correction"] == 0.0));
}

#[test]
fn errors_name_the_flag() {
    check_err(
        &[
            "--kind",
            "multistep",
            "--lr",
            "0.1",
            "--gamma",
            "0.1",
            "--steps",
            "5",
        ],
        &["--milestones"],
    );
    check_err(
        &["--kind", "constant", "--lr", "-1", "--steps", "5"],
        &["--lr is wrong", "> 0"],
    );
    check_err(
        &[
            "--kind", "cosine", "--lr", "0.1", "--t-max", "0", "--steps", "5",
        ],
        &["--t-max is wrong"],
    );
    check_err(&["--kind", "constant", "--lr", "0.1"], &["--steps"]);
    check_err(
        &[
            "--kind", "constant", "--lr", "0.1", "--steps", "3", "--per", "epoch",
        ],
        &["--per epoch needs --steps-per-epoch"],
    );
    check_err(
        &[
            "--kind",
            "texp",
            "--lr",
            "0.1",
            "--milestones",
            "5",
            "--gamma",
            "0.1",
            "--weight-decay",
            "1",
            "--momentum",
            "0.9",
            "--steps",
            "5",
        ],
        &["--weight-decay", "(1 − √momentum)²"],
    );
    check_err(&["--lr", "0.1", "--steps", "5"], &["--kind"]);
    check_err(
        &[
            "--kind",
            "constant",
            "--lr",
            "0.1",
            "--twin",
            "texp",
            "--momentum",
            "0.9",
            "--steps",
            "5",
        ],
        &["--twin texp needs --weight-decay"],
    );
    check_err(
        &[
            "--kind",
            "cosine",
            "--lr",
            "0.1",
            "--t-max",
            "9",
            "--twin",
            "texp-minus",
            "--weight-decay",
            "5e-4",
            "--momentum",
            "0.9",
            "--steps",
            "5",
        ],
        &["--twin texp-minus", "TEXP-- twins a `multistep` LR"],
    );
    check_err(
        &[
            "--kind",
            "constant",
            "--lr",
            "0.1",
            "--twin",
            "exact",
            "--momentum",
            "0.9",
            "--weight-decay-schedule",
            "{kind: multistep, lr: 5.0e-4}",
            "--steps",
            "5",
        ],
        &["--weight-decay-schedule", "missing field `milestones`"],
    );
}

/// CSV streams: its rows equal JSON's row for row (the walk of a twin and the rows in memory
/// are one computation), JSON refuses more rows than it holds in memory and says what to use,
/// and the plot marks the phase starts.
#[test]
fn csv_streams_the_rows_json_holds_and_json_refuses_a_huge_table() {
    let twin = [
        "--kind",
        "texp",
        "--lr",
        "0.1",
        "--milestones",
        "3,5",
        "--gamma",
        "0.1",
        "--weight-decay",
        "5e-4",
        "--momentum",
        "0.9",
        "--steps-per-epoch",
        "7",
        "--steps",
        "50",
    ];
    let dir = std::env::temp_dir().join(format!("explr-cli-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.join("lr.svg");
    let mut with_plot = twin.to_vec();
    with_plot.extend(["--plot", plot.to_str().unwrap()]);
    let (ok, csv, err) = explr(&with_plot);
    assert!(ok, "{err}");
    let doc = json(&twin);
    let rows = doc["rows"].as_array().unwrap();
    let lines: Vec<&str> = csv
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .collect();
    assert_eq!(lines.len(), rows.len());
    assert_eq!(rows.len(), 50);
    for (line, row) in lines.iter().zip(rows) {
        let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[0], row["step"].as_f64().unwrap());
        for (i, key) in [
            (2, "lr"),
            (3, "scale"),
            (4, "correction"),
            (5, "lr_over_exact"),
        ] {
            assert_eq!(f[i], row[key].as_f64().unwrap(), "{key} at {line}");
        }
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    // Two milestones: two phase markers after the first phase.
    assert!(
        svg.contains("phase at 21") && svg.contains("phase at 35"),
        "{svg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let mut huge = twin.to_vec();
    huge.truncate(huge.len() - 2);
    huge.extend(["--steps", "1000001", "--format", "json"]);
    check_err(&huge, &["1000001 rows", "--format csv"]);
}
