//! explr's `Sgd` from candle-nn code: the `candle_nn::Optimizer` trait on a plain candle-nn
//! model (schedules, weight decay, twins), and gradients accumulated over micro-batches.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use explr_schedule::{
    GradAccumulator, ParamGroup, Schedule, Sgd, SgdConfig, SgdOptimizerConfig, Twin, Unit,
};

/// A candle-nn `Linear(4 → 2)` with fixed weights (candle's own init is not seeded), and its map.
fn model() -> (candle_nn::Linear, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let linear = candle_nn::linear(4, 2, vb).unwrap();
    let w: Vec<f64> = (0..8).map(|i| (i as f64 * 0.37).sin()).collect();
    let mut vm = varmap.clone();
    vm.set_one("weight", Tensor::from_vec(w, (2, 4), &Device::Cpu).unwrap())
        .unwrap();
    vm.set_one("bias", Tensor::new(&[0.1f64, -0.2], &Device::Cpu).unwrap())
        .unwrap();
    (linear, varmap)
}

/// Inputs and targets of `n` samples starting at sample `from` (a fixed pattern).
fn data(from: usize, n: usize) -> (Tensor, Tensor) {
    let x: Vec<f64> = (from * 4..(from + n) * 4)
        .map(|i| (i as f64 * 0.71).cos())
        .collect();
    let y: Vec<f64> = (from * 2..(from + n) * 2)
        .map(|i| (i as f64 * 0.29).sin())
        .collect();
    (
        Tensor::from_vec(x, (n, 4), &Device::Cpu).unwrap(),
        Tensor::from_vec(y, (n, 2), &Device::Cpu).unwrap(),
    )
}

fn mse(model: &candle_nn::Linear, x: &Tensor, y: &Tensor) -> Tensor {
    candle_nn::loss::mse(&model.forward(x).unwrap(), y).unwrap()
}

/// Every parameter value, sorted by name, as bits.
fn bits(varmap: &VarMap) -> Vec<u64> {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    names
        .into_iter()
        .flat_map(|n| {
            data[n]
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .map(f64::to_bits)
        .collect()
}

/// Trains 12 steps through `candle_nn::Optimizer` (built by `new`), and the same 12 steps
/// through explr's group API (`build`); both must end bit for bit equal.
fn same_through_the_trait(new: impl Fn(Vec<Var>) -> Sgd, build: impl Fn(ParamGroup) -> Sgd) {
    let (a, map_a) = model();
    let (b, map_b) = model();
    let mut trait_sgd = new(map_a.all_vars());
    let mut group_sgd = build(ParamGroup::from_varmap("params", &map_b));
    let (x, y) = data(0, 8);
    for _ in 0..12 {
        Optimizer::backward_step(&mut trait_sgd, &mse(&a, &x, &y)).unwrap();
        group_sgd
            .step(&mse(&b, &x, &y).backward().unwrap())
            .unwrap();
    }
    assert_eq!(bits(&map_a), bits(&map_b));
    assert_ne!(bits(&map_a), bits(&model().1), "the model did not train");
}

#[test]
fn sgd_is_a_candle_nn_optimizer() {
    let schedule = || Schedule::multistep(0.1, &[1, 2], 0.5, Unit::Epochs(4)).unwrap();
    let config = SgdConfig::momentum(0.9);
    same_through_the_trait(
        |vars| {
            let c = SgdOptimizerConfig::new(schedule(), config).weight_decay(5e-4);
            <Sgd as Optimizer>::new(vars, c).unwrap()
        },
        |group| Sgd::new(schedule(), vec![group.weight_decay(5e-4)], config).unwrap(),
    );
    // A weight-decay schedule and a twin go through the trait too.
    let wd = || Schedule::multistep(5e-4, &[5], 0.1, Unit::Steps).unwrap();
    same_through_the_trait(
        |vars| {
            let c = SgdOptimizerConfig::new(schedule(), config).weight_decay(wd());
            <Sgd as Optimizer>::new(vars, c).unwrap()
        },
        |group| Sgd::new(schedule(), vec![group.weight_decay(wd())], config).unwrap(),
    );
    let texp = || Twin::texp(&schedule(), 5e-4, 0.9).unwrap();
    same_through_the_trait(
        |vars| <Sgd as Optimizer>::new(vars, SgdOptimizerConfig::twin(texp(), config)).unwrap(),
        |group| Sgd::from_groups(vec![group.twin(texp())], config).unwrap(),
    );
}

#[test]
fn learning_rate_follows_the_schedule_and_set_learning_rate_replaces_it() {
    let (m, map) = model();
    let schedule = Schedule::multistep(0.1, &[2], 0.5, Unit::Steps).unwrap();
    let mut sgd = <Sgd as Optimizer>::new(
        map.all_vars(),
        SgdOptimizerConfig::new(schedule, SgdConfig::default()),
    )
    .unwrap();
    let (x, y) = data(0, 4);
    let mut lrs = Vec::new();
    for _ in 0..3 {
        lrs.push(sgd.learning_rate());
        sgd.backward_step(&mse(&m, &x, &y)).unwrap();
    }
    assert_eq!(lrs, vec![0.1, 0.1, 0.05]);
    sgd.set_learning_rate(0.02);
    assert_eq!(sgd.learning_rate(), 0.02);
    // Without momentum the update is −0.02·g exactly.
    let before = bits(&map);
    let grads = mse(&m, &x, &y).backward().unwrap();
    let g = grads
        .get(m.weight())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let w0 = m.weight().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    sgd.step(&grads).unwrap();
    let w1 = m.weight().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for i in 0..8 {
        assert_eq!(w1[i], w0[i] + g[i] * -0.02);
    }
    assert_ne!(before, bits(&map));
    // An LR the optimizer cannot take makes the next step fail, naming it; a valid one heals.
    sgd.set_learning_rate(-1.0);
    let e = sgd.step(&grads).unwrap_err();
    assert!(e.to_string().contains("`learning_rate` = -1"), "{e}");
    sgd.set_learning_rate(0.01);
    sgd.step(&grads).unwrap();
}

#[test]
fn set_learning_rate_cannot_change_a_twin() {
    let (m, map) = model();
    let texp = Twin::texp(&Schedule::constant(0.1).unwrap(), 5e-4, 0.9).unwrap();
    let mut sgd = <Sgd as Optimizer>::new(
        map.all_vars(),
        SgdOptimizerConfig::twin(texp.clone(), SgdConfig::momentum(0.9)),
    )
    .unwrap();
    assert_eq!(sgd.learning_rate(), texp.lr(0).unwrap());
    sgd.set_learning_rate(0.5);
    let (x, y) = data(0, 4);
    let e = sgd.backward_step(&mse(&m, &x, &y)).unwrap_err();
    assert!(e.to_string().contains("group on the main schedule"), "{e}");
}

#[test]
fn micro_batches_accumulate_to_the_big_batch() {
    // The mean loss over 8 samples is 3/8 of the mean over the first 3 plus 5/8 of the mean
    // over the other 5; summing their gradients gives the big batch's up to the order of the
    // sums (a few ulps: 1e-14 relative).
    let (big, big_map) = model();
    let (small, small_map) = model();
    let group = |map: &VarMap| vec![ParamGroup::from_varmap("all", map).weight_decay(5e-4)];
    let schedule = || Schedule::constant(0.1).unwrap();
    let mut sgd_big = Sgd::new(schedule(), group(&big_map), SgdConfig::momentum(0.9)).unwrap();
    let mut sgd_small = Sgd::new(schedule(), group(&small_map), SgdConfig::momentum(0.9)).unwrap();
    let mut sum = GradAccumulator::for_optimizer(&sgd_small);
    let (x, y) = data(0, 8);
    for _ in 0..5 {
        let g_big = mse(&big, &x, &y).backward().unwrap();
        for (from, n) in [(0, 3), (3, 5)] {
            let (xs, ys) = data(from, n);
            sum.backward(&(mse(&small, &xs, &ys) * (n as f64 / 8.0)).unwrap())
                .unwrap();
        }
        assert_eq!(sum.passes(), 2);
        let bias = |m: &candle_nn::Linear| m.bias().unwrap().clone();
        for (b, s) in [
            (big.weight().clone(), small.weight().clone()),
            (bias(&big), bias(&small)),
        ] {
            let flat = |g: &Tensor| g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let (gb, gs) = (
                flat(g_big.get(&b).unwrap()),
                flat(sum.grads().get(&s).unwrap()),
            );
            let scale = gb.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (u, v) in gb.iter().zip(&gs) {
                assert!((u - v).abs() <= 1e-14 * scale, "{gb:?} vs {gs:?}");
            }
        }
        sgd_big.step(&g_big).unwrap();
        sgd_small.step(sum.grads()).unwrap();
        sum.clear();
        assert_eq!(sum.passes(), 0);
    }
    let (a, b) = (bits(&big_map), bits(&small_map));
    for (u, v) in a.iter().zip(&b) {
        let (u, v) = (f64::from_bits(*u), f64::from_bits(*v));
        assert!((u - v).abs() <= 1e-14 * u.abs().max(1.0), "{u} vs {v}");
    }
}
