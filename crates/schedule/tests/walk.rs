//! `Twin::walk` streams a twin's updates in constant memory and gives, bit for bit, the LR,
//! scale and correction that the cached `Twin::lr`, `scale` and `correction` give, for each kind
//! of twin; `phases` (built on it) finds TEXP's phase starts with their corrections.

use explr_schedule::{Schedule, Twin, Unit};

#[test]
fn walking_a_twin_gives_the_cached_numbers() {
    let step_decay = Schedule::multistep(0.1, &[3, 5], 0.1, Unit::Epochs(7)).unwrap();
    let cosine = Schedule::cosine(0.1, 6, 1e-3, Unit::Epochs(7)).unwrap();
    let twins = [
        ("exact", Twin::exact(&step_decay, 5e-4, 0.9).unwrap()),
        ("texp", Twin::texp(&step_decay, 5e-4, 0.9).unwrap()),
        (
            "texp plain",
            Twin::texp(&step_decay, 5e-4, 0.9).unwrap().plain(),
        ),
        ("texp--", Twin::texp_minus(&step_decay, 5e-4, 0.9).unwrap()),
        ("exp cosine", Twin::exact(&cosine, 5e-4, 0.9).unwrap()),
    ];
    for (name, twin) in twins {
        let mut n = 0;
        for row in twin.walk().take(50) {
            let row = row.unwrap();
            let k = row.step;
            assert_eq!(k, n, "{name}");
            assert_eq!(
                row.lr.to_bits(),
                twin.lr(k).unwrap().to_bits(),
                "{name} lr {k}"
            );
            assert_eq!(
                row.scale.to_bits(),
                twin.scale(k).unwrap().to_bits(),
                "{name} P {k}"
            );
            assert_eq!(
                row.correction.to_bits(),
                twin.correction(k).unwrap().to_bits(),
                "{name} c {k}"
            );
            n += 1;
        }
        assert_eq!(n, 50, "{name}");
    }
    let texp = Twin::texp(&step_decay, 5e-4, 0.9).unwrap();
    let phases = texp.phases(50).unwrap();
    let starts: Vec<u64> = phases.iter().map(|p| p.start).collect();
    assert_eq!(starts, [0, 21, 35]);
    assert!(phases[1].correction != 0.0 && phases[2].correction != 0.0);
}
