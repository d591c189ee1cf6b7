//! Typed accessors reach the very variables the store registered (γ/β, running statistics),
//! and every layer is a candle-nn `ModuleT`.

mod common;

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use common::randn;
use explr_nn::ParamStore;
use explr_norm::{
    Affine, BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm2d, Norm, NormConfig, NormKind,
};

/// What each accessor returns, as the store name of the variable (`None`: absent).
#[derive(Debug, PartialEq)]
struct Reached {
    name: Option<String>,
    weight: Option<String>,
    bias: Option<String>,
    running_mean: Option<String>,
    running_var: Option<String>,
    num_batches_tracked: Option<String>,
}

fn store_name(store: &ParamStore, var: Option<&Var>) -> Option<String> {
    let id = var?.as_tensor().id();
    let params = store.params().into_iter().map(|(n, p)| (n, p.var));
    let mut all = params.chain(store.buffers());
    Some(
        all.find(|(_, v)| v.as_tensor().id() == id)
            .map(|(n, _)| n)
            .unwrap_or_else(|| "<not in the store>".into()),
    )
}

fn check(kind: &str, cfg: NormConfig, weight: bool, running: bool) {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let norm = kind
        .parse::<NormKind>()
        .and_then(|k| k.build(&store.root().push("block").push("bn"), 4, &cfg))
        .expect("a valid norm");
    let reached = Reached {
        name: norm.name().map(str::to_string),
        weight: store_name(&store, norm.weight()),
        bias: store_name(&store, norm.bias()),
        running_mean: store_name(&store, norm.running_mean()),
        running_var: store_name(&store, norm.running_var()),
        num_batches_tracked: store_name(&store, norm.num_batches_tracked()),
    };
    let at = |on: bool, s: &str| on.then(|| format!("block.bn.{s}"));
    let expected = Reached {
        name: Some("block.bn".into()),
        weight: at(weight, "weight"),
        bias: at(weight, "bias"),
        running_mean: at(running, "running_mean"),
        running_var: at(running, "running_var"),
        num_batches_tracked: at(running, "num_batches_tracked"),
    };
    assert_eq!(reached, expected, "{kind} {cfg:?}");
}

#[test]
fn accessors_reach_the_registered_variables() {
    let d = NormConfig::default();
    let none = NormConfig {
        affine: Affine::None,
        ..d.clone()
    };
    let tracking = NormConfig {
        track_running_stats: Some(true),
        ..d.clone()
    };
    let untracked = NormConfig {
        track_running_stats: Some(false),
        ..d.clone()
    };
    check("bn", d.clone(), true, true);
    check("bn", d.clone().frozen(), true, true);
    check("bn", none.clone(), false, true);
    check("bn", untracked, true, false);
    check("gn:2", d.clone(), true, false);
    check("gn:2", none.clone(), false, false);
    check("ln", d.clone(), true, false);
    check("ln", none, false, false);
    check("in", d, true, false);
    check("in", tracking, true, true);
}

#[test]
fn identity_has_nothing_to_reach() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let norm = NormKind::None
        .build(&store.root().push("bn"), 4, &NormConfig::default())
        .expect("identity");
    assert!(norm.name().is_none() && norm.weight().is_none() && norm.running_mean().is_none());
}

#[test]
fn accessors_see_training_updates() -> Result<(), Box<dyn std::error::Error>> {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let bn = BatchNorm2d::new(&store.root().push("bn"), 3, &NormConfig::default())?;
    let x = randn(1, &[4, 3, 2, 2], 2.0, 1.0, DType::F64);
    bn.forward_t(&x, true)?;
    // PyTorch's update from the initial (0, 1): 0.1 · batch mean, 0.9 + 0.1 · unbiased var.
    let mean = x
        .mean_keepdim(0)?
        .mean_keepdim(2)?
        .mean_keepdim(3)?
        .flatten_all()?;
    let centred = x.broadcast_sub(&mean.reshape((1, 3, 1, 1))?)?;
    let unbiased = (centred
        .sqr()?
        .sum_keepdim(0)?
        .sum_keepdim(2)?
        .sum_keepdim(3)?
        / 15.0)?;
    let want_mean = (mean * 0.1)?;
    let want_var = ((unbiased.flatten_all()? * 0.1)? + 0.9)?;
    let running_mean = bn.running_mean().ok_or("bn keeps running statistics")?;
    let running_var = bn.running_var().ok_or("bn keeps running statistics")?;
    assert!(common::rel_err(running_mean.as_tensor(), &want_mean) <= 1e-14);
    assert!(common::rel_err(running_var.as_tensor(), &want_var) <= 1e-14);
    let batches = bn.num_batches_tracked().ok_or("bn counts batches")?;
    assert_eq!(batches.as_tensor().to_scalar::<i64>()?, 1);
    Ok(())
}

#[test]
fn every_layer_is_a_candle_nn_module_t() -> Result<(), Box<dyn std::error::Error>> {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let cfg = NormConfig::default();
    let root = store.root();
    let layers: Vec<(Box<dyn ModuleT>, Norm)> = vec![
        (
            Box::new(BatchNorm2d::new(&root.push("a"), 4, &cfg)?),
            NormKind::Batch.build(&root.push("b"), 4, &cfg)?,
        ),
        (
            Box::new(GroupNorm::new(&root.push("c"), 2, 4, &cfg)?),
            NormKind::Group(2).build(&root.push("d"), 4, &cfg)?,
        ),
        (
            Box::new(LayerNorm2d::new(&root.push("e"), 4, &cfg)?),
            NormKind::Layer.build(&root.push("f"), 4, &cfg)?,
        ),
        (
            Box::new(InstanceNorm2d::new(&root.push("g"), 4, &cfg)?),
            NormKind::Instance.build(&root.push("h"), 4, &cfg)?,
        ),
    ];
    let x = randn(2, &[2, 4, 3, 3], 1.5, -0.5, DType::F64);
    for (module, norm) in &layers {
        for train in [true, false] {
            let via_candle = module.forward_t(&x, train)?;
            let direct = norm.forward_t(&x, train)?;
            assert_eq!(
                via_candle.flatten_all()?.to_vec1::<f64>()?,
                direct.flatten_all()?.to_vec1::<f64>()?,
                "{:?} train={train}",
                norm.name()
            );
        }
        // A candle-nn caller gets the layer's own error, wrapped.
        let wrong = Tensor::zeros((2, 3, 3, 3), DType::F64, &Device::Cpu)?;
        let err = module
            .forward_t(&wrong, true)
            .expect_err("3 channels into a 4-channel norm");
        assert!(
            err.to_string().contains("was built for 4 channels"),
            "{err}"
        );
    }
    Ok(())
}
