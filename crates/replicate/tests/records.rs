//! metrics.jsonl reads back bit for bit (a resumed run reproduces its earlier epochs exactly).
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
