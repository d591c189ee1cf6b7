//! candle-nn interop: candle-nn layers built through `Path::var_builder` live in the store
//! (role, seeded init, running statistics as buffers), and `trainable_vars`/`to_var_map` hand
//! an optimizer the trainable parameters only.

use std::collections::BTreeSet;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{BatchNormConfig, Conv2dConfig, Optimizer};
use explr_nn::{Init, ParamStore, Role};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("a tensor converts to a Vec<f64>")
}

fn names<T>(items: &[(String, T)]) -> Vec<&str> {
    items.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn candle_nn_layers_register_in_the_store_with_the_path_role() -> TestResult {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 1);
    let conv = candle_nn::conv2d_no_bias(
        3,
        4,
        3,
        Conv2dConfig::default(),
        store
            .root()
            .push("features")
            .push(0)
            .var_builder(Role::ScaleInvariant),
    )?;
    let fc = candle_nn::linear(4, 2, store.root().push("fc").var_builder(Role::Head))?;
    let params = store.params();
    assert_eq!(
        names(&params),
        ["fc.bias", "fc.weight", "features.0.weight"]
    );
    let roles: Vec<Role> = params.iter().map(|(_, p)| p.role).collect();
    assert_eq!(roles, [Role::Head, Role::Head, Role::ScaleInvariant]);
    assert!(params.iter().all(|(_, p)| p.trainable));

    // The layers hold the store's variables: a change through the store reaches them.
    let x = Tensor::ones((1, 3, 3, 3), DType::F64, &Device::Cpu)?;
    let before = conv.forward(&x)?;
    let w = &params[2].1.var;
    w.set(&w.as_tensor().affine(2.0, 0.0)?)?;
    let after = conv.forward(&x)?;
    assert_eq!(values(&after), values(&before.affine(2.0, 0.0)?));
    assert_eq!(fc.forward(&after.flatten_from(1)?)?.dims(), [1, 2]);
    Ok(())
}

#[test]
fn candle_nn_inits_are_drawn_from_the_store_seed() -> TestResult {
    // candle-nn 0.11's conv2d: weight Kaiming normal (fan-in, ReLU gain √2), bias uniform on
    // ±1/√in_channels (candle-nn's bound, not PyTorch's ±1/√fan_in). The same draws from an
    // explr store with those distributions written out.
    let (cin, cout, k) = (3, 5, 3);
    let fan_in = cin * k * k;
    let build = |seed| -> candle_core::Result<Vec<Vec<f64>>> {
        let store = ParamStore::new(&Device::Cpu, DType::F64, seed);
        let conv = candle_nn::conv2d(cin, cout, k, Conv2dConfig::default(), store.var_builder())?;
        Ok(vec![
            values(conv.weight()),
            values(conv.bias().expect("conv2d has a bias")),
        ])
    };
    let expected = {
        let store = ParamStore::new(&Device::Cpu, DType::F64, 7);
        let std = 2f64.sqrt() / (fan_in as f64).sqrt();
        let w = store.root().param(
            "weight",
            (cout, cin, k, k),
            Init::Normal { mean: 0.0, std },
            Role::Other,
        )?;
        let bound = 1.0 / (cin as f64).sqrt();
        let b = store.root().param(
            "bias",
            cout,
            Init::Uniform {
                lo: -bound,
                hi: bound,
            },
            Role::Other,
        )?;
        vec![values(w.as_tensor()), values(b.as_tensor())]
    };
    assert_eq!(
        build(7)?,
        expected,
        "same seed, same distributions: same values"
    );
    assert_eq!(build(7)?, build(7)?);
    assert_ne!(build(7)?, build(8)?);
    Ok(())
}

#[test]
fn candle_nn_batch_norm_running_statistics_become_buffers() -> TestResult {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let bn = candle_nn::batch_norm(
        2,
        BatchNormConfig::default(),
        store.root().push("bn").var_builder(Role::NormAffine),
    )?;
    assert_eq!(names(&store.params()), ["bn.bias", "bn.weight"]);
    assert_eq!(
        names(&store.buffers()),
        ["bn.running_mean", "bn.running_var"]
    );
    assert_eq!(store.trainable_vars().len(), 2);

    // candle-nn's training forward updates the running mean it got from the store:
    // 0.9·0 + 0.1·(batch mean), batch means 1.5 and 3.5.
    let x = Tensor::new(&[[[[1.0f64, 2.0]], [[3.0, 4.0]]]], &Device::Cpu)?;
    bn.forward_t(&x, true)?;
    let running_mean = &store.buffers()[0].1;
    let got = values(running_mean.as_tensor());
    for (g, want) in got.iter().zip([0.15, 0.35]) {
        assert!((g - want).abs() <= 1e-15, "running mean {got:?}");
    }
    Ok(())
}

#[test]
fn trainable_vars_and_var_map_hold_only_trainable_parameters() -> TestResult {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let root = store.root();
    root.param("b", 2, Init::Ones, Role::Other)?;
    root.param("a", 2, Init::Ones, Role::ScaleInvariant)?;
    root.param("frozen", 2, Init::Ones, Role::Head)?;
    root.set_trainable("frozen", false);
    root.buffer("running_mean", Tensor::zeros(2, DType::F64, &Device::Cpu)?)?;

    let by_name = store.params();
    let vars = store.trainable_vars();
    assert_eq!(vars.len(), 2);
    // Name order: a, b.
    assert!(vars[0].as_tensor().id() == by_name[0].1.var.as_tensor().id());
    assert!(vars[1].as_tensor().id() == by_name[1].1.var.as_tensor().id());

    let map = store.to_var_map();
    let keys: BTreeSet<String> = map
        .data()
        .lock()
        .expect("an unpoisoned map")
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, BTreeSet::from(["a".to_string(), "b".to_string()]));

    // A candle-nn optimizer over the map trains the store's variables and nothing else.
    let mut loss = Tensor::zeros((), DType::F64, &Device::Cpu)?;
    for v in map.all_vars() {
        loss = (loss + v.as_tensor().sqr()?.sum_all()?)?;
    }
    let mut sgd = candle_nn::SGD::new(map.all_vars(), 0.25)?;
    sgd.backward_step(&loss)?;
    let after: Vec<Vec<f64>> = store.state_dict().values().map(values).collect();
    // a, b: 1 − 0.25·2 = 0.5; frozen and the buffer unchanged.
    assert_eq!(
        after,
        [
            vec![0.5, 0.5],
            vec![0.5, 0.5],
            vec![1.0, 1.0],
            vec![0.0, 0.0]
        ]
    );
    Ok(())
}

#[test]
fn asking_again_returns_the_registered_tensor() -> TestResult {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let vb = store.root().push("emb").var_builder(Role::Other);
    let first = vb.get_with_hints((3, 2), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
    let again = vb.get((3, 2), "weight")?;
    assert!(first.id() == again.id(), "tied weights share one variable");
    assert_eq!(store.params().len(), 1);
    assert!(vb.contains_tensor("weight"));
    assert!(!vb.contains_tensor("bias"));
    assert!(vb.get_unchecked("weight")?.id() == first.id());

    let err = vb.get((2, 3), "weight").expect_err("another shape");
    assert!(
        err.to_string().contains(
            "`emb.weight` is registered with shape [3, 2] but asked for again with shape [2, 3]"
        ),
        "{err}"
    );
    let err = vb.get_unchecked("bias").expect_err("never registered");
    assert!(
        err.to_string().contains("`emb.bias` is not in the store"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_builder_moved_to_another_dtype_or_device_is_refused() -> TestResult {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let vb = store.var_builder().set_dtype(DType::F32);
    let err = candle_nn::linear(2, 2, vb).expect_err("an f32 builder over an f64 store");
    let msg = err.to_string();
    assert!(
        msg.contains("`weight` was asked for as F32") && msg.contains("no set_dtype"),
        "{msg}"
    );
    assert!(
        store.params().is_empty(),
        "nothing registered: {:?}",
        store.params()
    );
    Ok(())
}
