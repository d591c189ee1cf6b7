//! THEORY.md's reference numbers (§3, §5) and the relations between the schedule kinds.

use explr_schedule::{alpha, Schedule, ScheduleError, Twin, Unit};

const SPE: u64 = 391;

fn texp(kind: &str) -> Schedule {
    Schedule::from_yaml(
        &format!("kind: {kind}\nlr: 0.1\nmilestones: [80, 120]\ngamma: 0.1\nweight_decay: 5.0e-4\nmomentum: 0.9"),
        Unit::Epochs(SPE),
    )
    .unwrap()
}

/// `value` is within `rel` (relative) of `reference`.
fn check(what: &str, value: f64, reference: f64, rel: f64) {
    let err = ((value - reference) / reference).abs();
    assert!(
        err <= rel,
        "{what}: {value} vs reference {reference} (rel err {err:.2e} > {rel:.0e})"
    );
}

#[test]
fn theory_reference_numbers() {
    let a = alpha(0.1, 5e-4, 0.9).unwrap();
    // THEORY.md §3 (numbers given to 11 significant digits).
    check("alpha", a, 0.99949772837, 1e-11);
    check("per-step growth", a.powi(-2), 1.0010053006, 1e-10);
    check("per-epoch growth", a.powi(-2 * SPE as i32), 1.48123, 5e-6);
    check("alpha ≈ 1 − λη/(1−γ)", a, 1.0 - 0.1 * 5e-4 / 0.1, 1e-5);
    // γ = 0: α = 1 − λη exactly.
    check(
        "alpha without momentum",
        alpha(0.1, 5e-4, 0.0).unwrap(),
        1.0 - 5e-5,
        1e-15,
    );
    // THEORY.md §5 (TEXP, ÷10 at epochs 80 and 120).
    let t = texp("texp");
    check("TEXP lr(0) = η/α", t.lr(0).unwrap(), 0.1 / a, 1e-15);
    check("TEXP lr(391)", t.lr(391).unwrap(), 0.148198, 5e-6);
    check(
        "TEXP lr before the first boundary",
        t.lr(80 * SPE - 1).unwrap(),
        4.46e12,
        5e-3,
    );
    check(
        "TEXP lr at the end of 160 epochs",
        t.lr(160 * SPE - 1).unwrap(),
        2.5e11,
        2e-2,
    );
}

#[test]
fn texp_boundaries_decay_and_switch_growth() {
    let (t, tm) = (texp("texp"), texp("texp_minus"));
    let phases = t.twin().unwrap().phases(160 * SPE).unwrap();
    assert_eq!(
        phases.iter().map(|p| p.start).collect::<Vec<_>>(),
        vec![0, 80 * SPE, 120 * SPE]
    );
    for p in &phases {
        check(
            "phase alpha",
            p.alpha,
            alpha(p.base_lr, 5e-4, 0.9).unwrap(),
            1e-15,
        );
        let s = p.start + 7;
        check(
            "growth inside a phase",
            t.lr(s + 1).unwrap() / t.lr(s).unwrap(),
            p.per_step_growth,
            1e-12,
        );
    }
    // THEORY.md §5: at a phase start, ×(η_I/η_{I−1})·(α*_{I−1}α*_I)^−1; TEXP-- without the ratio.
    let b = 80 * SPE;
    let jump = (phases[0].alpha * phases[1].alpha).recip();
    check(
        "TEXP boundary",
        t.lr(b).unwrap() / t.lr(b - 1).unwrap(),
        0.1 * jump,
        1e-12,
    );
    check(
        "TEXP-- boundary",
        tm.lr(b).unwrap() / tm.lr(b - 1).unwrap(),
        jump,
        1e-12,
    );
    check(
        "TEXP-- equals TEXP before the first boundary",
        tm.lr(b - 1).unwrap(),
        t.lr(b - 1).unwrap(),
        1e-15,
    );
}

#[test]
fn texp_corrects_the_momentum_once_entering_each_phase() {
    let (lambda, gamma) = (5e-4, 0.9);
    for (kind, decayed_lambda) in [("texp", lambda), ("texp_minus", lambda * 0.1)] {
        let twin = texp(kind).twin().unwrap();
        let b = 80 * SPE;
        // THEORY.md §5 at the first update k = b of phase 1: α_rec = 1 − η_bλ_b +
        // γ(η_b/η_{b−1})(1 − 1/α*_0), and the twin jumps to α*_1; c_b·η_b·P_b² is the difference.
        let (eta0, eta1) = if kind == "texp" {
            (0.1, 0.01)
        } else {
            (0.1, 0.1)
        };
        let (a0, a1) = (
            alpha(0.1, lambda, gamma).unwrap(),
            alpha(eta1, decayed_lambda, gamma).unwrap(),
        );
        let recursion = 1.0 - eta1 * decayed_lambda + gamma * (eta1 / eta0) * (1.0 - 1.0 / a0);
        let p = twin.scale(b).unwrap();
        // Both sides subtract numbers near 1 good to a few ulps (~5e-16) from a jump of
        // ~1e-6..1e-5: agreement to 1e-9 relative leaves a margin over that cancellation.
        check(
            &format!("{kind}: α jump at the phase start"),
            twin.correction(b).unwrap() * eta1 * p * p,
            a1 - recursion,
            1e-9,
        );
        check(
            &format!("{kind}: α_(b+1)"),
            twin.alpha(b + 1).unwrap(),
            a1,
            1e-15,
        );
        // Inside a phase the root is the recursion's fixed point: only rounding is left.
        for k in [1, 390, b - 1, b + 1, b + 500] {
            let eta = twin.base().lr(k).unwrap();
            let jump = twin.correction(k).unwrap() * eta * twin.scale(k).unwrap().powi(2);
            assert!(jump.abs() <= 1e-15, "{kind}: α jump {jump:e} at update {k}");
        }
        assert_eq!(twin.clone().plain().correction(b).unwrap(), 0.0);
    }
}

#[test]
fn exact_transform_of_a_constant_is_the_section_3_schedule() {
    let (lr, wd, m) = (0.1, 5e-4, 0.9);
    let twin = Twin::exact(&Schedule::constant(lr).unwrap(), wd, m).unwrap();
    let a = alpha(lr, wd, m).unwrap();
    for k in [0u64, 1, 2, 10, 391, 5000] {
        // THEORY.md §3: η̃_k = η·α^(−2k−1); P_k = α^(−k). The recursion's α_t sits within
        // rounding of α, a bias that P_k multiplies k times: allow 1e-13 + k·5e-15.
        let tol = 1e-13 + k as f64 * 5e-15;
        check(
            "η̃_k",
            twin.lr(k).unwrap(),
            lr * a.powf(-((2 * k + 1) as f64)),
            tol,
        );
        check("P_k", twin.scale(k).unwrap(), a.powf(-(k as f64)), tol);
    }
    check(
        "pre-fill",
        twin.prefill_coefficient(),
        (a - 1.0) / (a * lr),
        1e-15,
    );
}

#[test]
fn exact_transform_relaxes_to_texp_after_a_boundary() {
    let t = texp("texp");
    let step_decay = Schedule::multistep(0.1, &[80, 120], 0.1, Unit::Epochs(SPE)).unwrap();
    let exact = Twin::exact(&step_decay, 5e-4, 0.9).unwrap();
    // Identical in phase 0; after the boundary the exact α_t relaxes to α*_1 (THEORY.md §5),
    // so the per-step growth of both agrees again a few hundred steps later.
    check(
        "phase 0",
        exact.lr(1000).unwrap(),
        t.lr(1000).unwrap(),
        1e-10,
    );
    let s = 80 * SPE + 2000;
    let g_exact = exact.lr(s + 1).unwrap() / exact.lr(s).unwrap();
    let g_texp = t.lr(s + 1).unwrap() / t.lr(s).unwrap();
    check("growth after relaxation", g_exact, g_texp, 1e-12);
}

#[test]
fn alpha_errors_state_the_bound() {
    let check_err = |lr: f64, wd: f64, m: f64, needle: &str| {
        let e = alpha(lr, wd, m).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        e
    };
    let e = check_err(0.1, 1.0, 0.9, "exceeds (1 − √momentum)²");
    match e {
        ScheduleError::NoRealAlpha { product, bound, .. } => {
            assert_eq!(product, 0.1);
            assert!((bound - (1.0 - 0.9f64.sqrt()).powi(2)).abs() < 1e-15);
        }
        other => panic!("expected NoRealAlpha, got {other:?}"),
    }
    check_err(-0.1, 5e-4, 0.9, "`lr` = -0.1");
    check_err(0.1, -1.0, 0.9, "`weight_decay` = -1");
    check_err(0.1, 5e-4, 1.0, "`momentum` = 1");
    check_err(2.0, 1.0, 0.0, "lr·weight_decay = 2");
}
