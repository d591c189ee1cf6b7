//! Save/load of the optimizer state: a run resumed mid-way continues to bit-identical
//! numbers. Named after the resume bugs PyTorch users hit with chainable schedulers.

mod common;

use std::path::PathBuf;

use candle_core::{DType, Var};
use explr_schedule::{ParamGroup, Schedule, ScheduleError, Sgd, SgdConfig, SgdVariant, Unit};

use common::Toy;

const STEPS: u64 = 160;

struct TempDir(PathBuf);
impl TempDir {
    /// A fresh folder; the counter keeps the tests running side by side apart.
    fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("explr-schedule-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the `theta` group is trained.
#[derive(Clone, Copy)]
enum Theta {
    /// Weight decay on the main schedule.
    WeightDecay,
    /// As the main schedule's twin (its pre-fill and momentum corrections), no weight decay.
    Twin,
}

/// Two groups on the toy objective: `theta` and `head` (its own constant schedule, no weight
/// decay).
fn build(toy: &Toy, schedule: &Schedule, config: SgdConfig, theta: Theta) -> (Sgd, Vec<Var>) {
    let (w, h) = (toy.var(1.0), toy.var(0.5));
    let group = ParamGroup::new("scale_invariant", vec![("theta".into(), w.clone())]);
    let sgd = Sgd::new(
        schedule.clone(),
        vec![
            match theta {
                Theta::WeightDecay => group.weight_decay(5e-4),
                Theta::Twin => group.twin(schedule.twin().unwrap()),
            },
            ParamGroup::new("head", vec![("head".into(), h.clone())])
                .schedule(Schedule::constant(0.01).unwrap()),
        ],
        config,
    )
    .unwrap();
    (sgd, vec![w, h])
}

fn step(toy: &Toy, sgd: &mut Sgd, vars: &[Var]) -> Vec<f64> {
    let t = sgd.step_count();
    let lr = sgd.group_lr(0).unwrap();
    let (_, mut g) = toy
        .loss_and_grads(t, &[("theta".into(), vars[0].clone())])
        .unwrap();
    let (_, gh) = toy
        .loss_and_grads(t + 1, &[("head".into(), vars[1].clone())])
        .unwrap();
    g.insert(
        vars[1].as_tensor(),
        gh.get(vars[1].as_tensor()).unwrap().clone(),
    );
    sgd.step(&g).unwrap();
    vec![lr]
}

fn values(vars: &[Var]) -> Vec<u64> {
    vars.iter()
        .flat_map(|v| {
            v.as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .map(f64::to_bits)
        .collect()
}

/// Runs `yaml` for STEPS updates uninterrupted, and again with a save at `stop`, a fresh
/// optimizer and fresh variables restored from disk, and the rest of the run; asserts the
/// LRs and the final weights are bit-identical.
fn check(yaml: &str, stop: u64, dtype: DType, config: SgdConfig) {
    check_with(yaml, stop, dtype, config, Theta::WeightDecay)
}

fn check_with(yaml: &str, stop: u64, dtype: DType, config: SgdConfig, theta: Theta) {
    let toy = Toy::new(3, dtype);
    let schedule = Schedule::from_yaml(yaml, Unit::Steps).unwrap();
    let (mut a, va) = build(&toy, &schedule, config, theta);
    let mut lrs_a = Vec::new();
    for _ in 0..STEPS {
        lrs_a.extend(step(&toy, &mut a, &va));
    }

    let dir = TempDir::new(&format!("{stop}-{dtype:?}"));
    let state = dir.0.join("optimizer.safetensors");
    let (mut b, vb) = build(&toy, &schedule, config, theta);
    let mut lrs_b = Vec::new();
    for _ in 0..stop {
        lrs_b.extend(step(&toy, &mut b, &vb));
    }
    b.save(&state).unwrap();
    let weights: Vec<candle_core::Tensor> =
        vb.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    drop(b);
    // A new process: the schedule is rebuilt from its spec, the optimizer from scratch.
    let rebuilt = Schedule::from_yaml(yaml, Unit::Steps).unwrap();
    let (mut c, vc) = build(&toy, &rebuilt, config, theta);
    for (v, w) in vc.iter().zip(&weights) {
        v.set(w).unwrap();
    }
    c.load(&state).unwrap();
    assert_eq!(c.step_count(), stop);
    for _ in stop..STEPS {
        lrs_b.extend(step(&toy, &mut c, &vc));
    }
    assert_eq!(lrs_a, lrs_b, "{yaml} resumed at {stop}: LRs differ");
    assert_eq!(
        values(&va),
        values(&vc),
        "{yaml} resumed at {stop} ({dtype:?}): weights differ"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the state files remain, no temporaries: {leftovers:?}"
    );
}

const MULTISTEP: &str = "kind: multistep\nlr: 0.1\nmilestones: [40, 80, 120]\ngamma: 0.1";

#[test]
fn multistep_lr_after_load_state_dict() {
    // torch: a MultiStepLR rebuilt on resume (or loaded into a scheduler whose optimizer LR is
    // already decayed) re-applies or skips the decay, since its get_lr() is chainable. Here the
    // LR is a function of the step alone; resume before, at and after each milestone.
    for stop in [1, 39, 40, 41, 80, 121] {
        check(MULTISTEP, stop, DType::F64, SgdConfig::momentum(0.9));
    }
    check(MULTISTEP, 80, DType::F32, SgdConfig::momentum(0.9));
}

#[test]
fn sequential_lr_restored_mid_way() {
    // torch: restoring SequentialLR re-runs the sub-schedulers' initial step and the
    // boundary's step(0), so the LR right after a restore differs from the uninterrupted run.
    let seq = "kind: sequential\nmilestones: [20, 90]\nschedules:\n  - {kind: warmup, lr: 0.1, start_factor: 0.1, total_iters: 20}\n  - {kind: cosine, lr: 0.1, t_max: 70, eta_min: 0.001}\n  - {kind: texp, lr: 0.01, milestones: [30], gamma: 0.1, weight_decay: 5.0e-4, momentum: 0.9}";
    for stop in [19, 20, 21, 89, 90, 91, 125] {
        check(seq, stop, DType::F64, SgdConfig::momentum(0.9));
    }
}

#[test]
fn texp_twin_resumed_around_its_corrections() {
    // The twin's pre-fill (update 0) and momentum corrections (first update of each phase) are
    // functions of the step: a run resumed before, at or after one continues bit for bit.
    let texp = "kind: texp\nlr: 0.1\nmilestones: [40, 80]\ngamma: 0.1\nweight_decay: 5.0e-4\nmomentum: 0.9";
    let minus = "kind: texp_minus\nlr: 0.1\nmilestones: [40, 80]\ngamma: 0.1\nweight_decay: 5.0e-4\nmomentum: 0.9";
    for stop in [0, 1, 39, 40, 41, 81] {
        check_with(
            texp,
            stop,
            DType::F64,
            SgdConfig::momentum(0.9),
            Theta::Twin,
        );
    }
    check_with(minus, 40, DType::F64, SgdConfig::momentum(0.9), Theta::Twin);
    check_with(texp, 80, DType::F32, SgdConfig::momentum(0.9), Theta::Twin);
}

#[test]
fn resume_with_every_optimizer_variant() {
    let nesterov = SgdConfig {
        momentum: 0.9,
        nesterov: true,
        ..Default::default()
    };
    let dampening = SgdConfig {
        momentum: 0.9,
        dampening: 0.3,
        ..Default::default()
    };
    let heavy = SgdConfig {
        momentum: 0.9,
        variant: SgdVariant::HeavyBall,
        ..Default::default()
    };
    let twin = "kind: exp_equivalent\nweight_decay: 5.0e-4\nmomentum: 0.9\nbase: {kind: cosine, lr: 0.1, t_max: 100, eta_min: 0.001}";
    for config in [nesterov, dampening, heavy, SgdConfig::default()] {
        check(twin, 77, DType::F64, config);
        check(MULTISTEP, 50, DType::F32, config);
    }
}

#[test]
fn load_rejects_a_state_from_another_optimizer() {
    let toy = Toy::new(3, DType::F64);
    let schedule = Schedule::from_yaml(MULTISTEP, Unit::Steps).unwrap();
    let dir = TempDir::new("mismatch");
    let state = dir.0.join("opt.safetensors");
    let (mut a, va) = build(
        &toy,
        &schedule,
        SgdConfig::momentum(0.9),
        Theta::WeightDecay,
    );
    step(&toy, &mut a, &va);
    a.save(&state).unwrap();
    let (mut b, _) = build(
        &toy,
        &schedule,
        SgdConfig::momentum(0.5),
        Theta::WeightDecay,
    );
    let e = b.load(&state).unwrap_err();
    assert!(matches!(e, ScheduleError::StateMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("momentum: 0.9"), "{e}");
    let missing = dir.0.join("absent.safetensors");
    let e = b.load(&missing).unwrap_err();
    assert!(matches!(e, ScheduleError::Io { .. }), "{e:?}");
}
