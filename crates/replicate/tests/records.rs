//! metrics.jsonl reads back bit for bit (a resumed run reproduces its earlier epochs exactly,
//! and a summary collected from disk equals the one built in memory), non-finite metrics too.
use explr_replicate::records::{read_records, EpochRecord};

#[test]
fn metrics_jsonl_reads_back_bit_for_bit() {
    // A value the texp twin of resume.rs records as its epoch-3 LR.
    let lr = 0.010084238137283727_f64;
    let r = EpochRecord {
        epoch: 3,
        step: 12,
        lr,
        train_loss: 1.0,
        train_acc: 0.5,
        test_loss: 1.0,
        test_acc: 0.5,
        si_norm: 1.0,
        layer_norm: 1.0,
        norm_sq_over_lr: 1.0,
        effective_lr: 1.0,
        angular_update: 0.1,
        wall_s: 0.1,
    };
    let dir = std::env::temp_dir().join(format!("explr-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("metrics.jsonl");
    std::fs::write(&path, format!("{}\n", serde_json::to_string(&r).unwrap())).unwrap();
    let back = read_records(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        back[0].lr.to_bits(),
        lr.to_bits(),
        "read back {:e}",
        back[0].lr
    );
}

/// ‖θ‖²/η is infinite once a schedule reaches η = 0, and an angle can be NaN: such records
/// read back equal (same bits), not as JSON's `null`, which no f64 reads from.
#[test]
fn non_finite_metrics_read_back() {
    let r = EpochRecord {
        epoch: 3,
        step: 12,
        lr: 0.0,
        train_loss: 1.0,
        train_acc: 0.5,
        test_loss: 1.0,
        test_acc: 0.5,
        si_norm: 1.0,
        layer_norm: f64::NEG_INFINITY,
        norm_sq_over_lr: f64::INFINITY,
        effective_lr: 1.0,
        angular_update: f64::NAN,
        wall_s: 0.1,
    };
    let line = serde_json::to_string(&r).unwrap();
    assert!(
        line.contains(r#""norm_sq_over_lr":"inf""#) && line.contains(r#""angular_update":"NaN""#),
        "{line}"
    );
    let dir = std::env::temp_dir().join(format!("explr-nonfinite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("metrics.jsonl");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let back = read_records(&path).unwrap();
    std::fs::write(&path, line.replace(r#""NaN""#, r#""nan?""#)).unwrap();
    let err = read_records(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(back, vec![r.clone()]);
    assert!(back[0].angular_update.is_nan());
    assert_eq!(back[0].layer_norm, f64::NEG_INFINITY);
    // Equality is by bits: with the other zero it is another record.
    let other_zero = EpochRecord {
        lr: -0.0,
        ..r.clone()
    };
    assert_ne!(other_zero, r);
    assert!(err.contains("`nan?` is not a number"), "{err}");
}
