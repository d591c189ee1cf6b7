//! Spec parsing, errors, roles, determinism, dtypes and save/load.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{batch, build, rel_diff, spec};
use explr_nn::{ParamStore, Role};
use explr_zoo::{Arch, Model, ModelSpec, ZooError};

fn build_err(yaml: &str) -> ZooError {
    let s = spec(yaml);
    match Model::new(&s, &ParamStore::new(&Device::Cpu, DType::F32, 0)) {
        Ok(_) => panic!("{yaml}: built"),
        Err(e) => e,
    }
}

#[test]
fn spec_defaults_and_unknown_keys() {
    let s = spec("{arch: preresnet, depth: 32}");
    assert_eq!(s, ModelSpec::new(Arch::PreResNet, 32));
    assert_eq!((s.num_classes, s.eps, s.resolved_width()), (10, 1e-5, 16));
    assert_eq!(spec("{arch: vgg, depth: 16}").resolved_width(), 64);
    let err = serde_yaml::from_str::<ModelSpec>("{arch: resnet, depth: 20, dropout: 0.1}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `dropout`"), "{err}");
    let err = serde_yaml::from_str::<ModelSpec>("{arch: resnet, depth: 20, norm: 'gn'}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("group count"), "{err}");
    let back: ModelSpec =
        serde_yaml::from_str(&serde_yaml::to_string(&ModelSpec::paper()).unwrap()).unwrap();
    assert_eq!(back, ModelSpec::paper());
}

#[test]
fn invalid_specs_are_typed_errors() {
    fn check(yaml: &str, want: fn(&ZooError) -> bool, msg: &str) {
        let e = build_err(yaml);
        assert!(want(&e), "{yaml}: {e:?}");
        assert!(e.to_string().contains(msg), "{yaml}: `{e}` lacks `{msg}`");
    }
    check(
        "{arch: preresnet, depth: 21}",
        |e| matches!(e, ZooError::Depth { depth: 21, .. }),
        "6k+2",
    );
    check(
        "{arch: resnet, depth: 2}",
        |e| matches!(e, ZooError::Depth { .. }),
        "6k+2",
    );
    check(
        "{arch: vgg, depth: 12}",
        |e| matches!(e, ZooError::Depth { .. }),
        "11, 13, 16 and 19",
    );
    check(
        "{arch: resnet, depth: 8, width: 3}",
        |e| matches!(e, ZooError::Width { width: 3, .. }),
        "even",
    );
    check(
        "{arch: vgg, depth: 11, width: 0}",
        |e| matches!(e, ZooError::Width { .. }),
        "positive",
    );
    check(
        "{arch: vgg, depth: 11, num_classes: 0}",
        |e| matches!(e, ZooError::NumClasses(0)),
        "at least 1",
    );
    check(
        "{arch: preresnet, depth: 8, width: 4, norm: 'gn:3'}",
        |e| matches!(e, ZooError::Norm(_)),
        "divide",
    );
    check(
        "{arch: preresnet, depth: 8, eps: -1}",
        |e| matches!(e, ZooError::Norm(_)),
        "eps",
    );
    check(
        "{arch: vgg, depth: 11, width: 4, final_norm: bn}",
        |e| matches!(e, ZooError::FinalNorm { .. }),
        "preresnet only",
    );
    check(
        "{arch: preresnet, depth: 8, width: 4, norm: in, final_norm: none}",
        |e| matches!(e, ZooError::FinalNorm { .. }),
        "not none",
    );
    check(
        "{arch: preresnet, depth: 8, width: 4, norm: none, final_norm: bn}",
        |e| matches!(e, ZooError::FinalNorm { .. }),
        "not none",
    );
}

/// `final_norm` replaces only the norm before the head: the blocks keep `norm`.
#[test]
fn final_norm_replaces_only_the_norm_before_the_head() {
    let yaml = "{arch: preresnet, depth: 8, width: 4, norm: in, final_norm: bn}";
    // BatchNorm alone keeps running statistics: only the final norm has them.
    let running = |yaml: &str| -> Vec<String> {
        build(&spec(yaml), DType::F32, 0)
            .store()
            .buffers()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.contains("running_mean"))
            .collect()
    };
    assert_eq!(running(yaml), ["bn.running_mean"]);
    assert!(running("{arch: preresnet, depth: 8, width: 4, norm: in}").is_empty());
    assert!(running("{arch: preresnet, depth: 8, width: 4}").len() > 1);
}

#[test]
fn bad_inputs_and_names_are_typed_errors() {
    let vgg = build(&spec("{arch: vgg, depth: 11, width: 2}"), DType::F64, 0);
    let pre = build(
        &spec("{arch: preresnet, depth: 8, width: 4}"),
        DType::F64,
        0,
    );
    fn input_err(m: &Model, x: &Tensor) -> String {
        match m.forward_t(x, false) {
            Err(e @ ZooError::Input { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        }
    }
    assert!(input_err(&vgg, &batch(2, 16, DType::F64)).contains("(N, 3, 32×32)"));
    assert!(input_err(&pre, &batch(2, 8, DType::F32)).contains("F64"));
    let gray = Tensor::zeros((2, 1, 8, 8), DType::F64, &Device::Cpu).unwrap();
    assert!(input_err(&pre, &gray).contains("[2, 1, 8, 8]"));
    match pre.weight_norm("layer9.conv") {
        Err(ZooError::UnknownParam { name, example }) => {
            assert_eq!(name, "layer9.conv");
            assert!(example.ends_with(".weight"));
        }
        other => panic!("{other:?}"),
    }
    for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(pre.scale_scale_invariant(c), Err(ZooError::Scale(_))),
            "{c}"
        );
    }
}

#[test]
fn roles_follow_the_architecture() {
    // (spec, parameter, expected role)
    let cases = [
        (
            "{arch: preresnet, depth: 8, width: 4}",
            "conv1.weight",
            Role::ScaleInvariant,
        ),
        (
            "{arch: preresnet, depth: 8, width: 4}",
            "layer2.0.conv1.weight",
            Role::ScaleInvariant,
        ),
        (
            "{arch: preresnet, depth: 8, width: 4}",
            "layer2.0.downsample.0.weight",
            Role::Other,
        ),
        (
            "{arch: preresnet, depth: 8, width: 4}",
            "bn.weight",
            Role::NormAffine,
        ),
        (
            "{arch: preresnet, depth: 8, width: 4}",
            "fc.bias",
            Role::Head,
        ),
        (
            "{arch: preresnet, depth: 8, width: 4, norm: none}",
            "conv1.weight",
            Role::Other,
        ),
        (
            "{arch: resnet, depth: 8, width: 4}",
            "layer3.0.conv2.weight",
            Role::ScaleInvariant,
        ),
        (
            "{arch: resnet, depth: 8, width: 4}",
            "bn1.bias",
            Role::NormAffine,
        ),
        (
            "{arch: resnet, depth: 8, width: 4}",
            "linear.weight",
            Role::Head,
        ),
        (
            "{arch: vgg, depth: 11, width: 4}",
            "features.0.weight",
            Role::ScaleInvariant,
        ),
        (
            "{arch: vgg, depth: 11, width: 4}",
            "features.1.weight",
            Role::NormAffine,
        ),
        (
            "{arch: vgg, depth: 11, width: 4}",
            "features.4.weight",
            Role::ScaleInvariant,
        ),
        (
            "{arch: vgg, depth: 11, width: 4}",
            "classifier.weight",
            Role::Head,
        ),
        (
            "{arch: vgg, depth: 11, width: 4, norm: none}",
            "features.0.bias",
            Role::Other,
        ),
        (
            "{arch: vgg, depth: 11, width: 4, norm: 'gn:2'}",
            "features.1.bias",
            Role::NormAffine,
        ),
    ];
    for (yaml, name, role) in cases {
        let m = build(&spec(yaml), DType::F32, 0);
        let found = m.store().params().into_iter().find(|(n, _)| n == name);
        assert_eq!(found.map(|(_, p)| p.role), Some(role), "{yaml} {name}");
    }
    // VGG convs feeding a norm have no bias.
    let m = build(&spec("{arch: vgg, depth: 11, width: 4}"), DType::F32, 0);
    assert!(m
        .store()
        .params()
        .iter()
        .all(|(n, _)| n != "features.0.bias"));
}

#[test]
fn freezing_removes_groups_from_training() {
    let m = build(
        &spec("{arch: resnet, depth: 8, width: 4, freeze_norm_affine: true, freeze_head: true}"),
        DType::F32,
        0,
    );
    let g = m.trainable_groups();
    assert_eq!(
        g.keys().copied().collect::<Vec<_>>(),
        [Role::ScaleInvariant]
    );
    // Frozen γ/β sit at 1/0 and are still registered (saved under PyTorch's names).
    let all = m.groups();
    for (name, v) in &all[&Role::NormAffine] {
        let want = if name.ends_with("weight") { 1.0 } else { 0.0 };
        let vals = v.as_tensor().to_vec1::<f32>().unwrap();
        assert!(vals.iter().all(|&x| x == want), "{name}");
    }
    assert_eq!(all[&Role::Head].len(), 2);
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let s = spec("{arch: preresnet, depth: 8, width: 4}");
    let a = build(&s, DType::F64, 5);
    let b = build(&s, DType::F64, 5);
    let c = build(&s, DType::F64, 6);
    for ((na, pa), ((_, pb), (_, pc))) in a
        .store()
        .params()
        .iter()
        .zip(b.store().params().iter().zip(c.store().params().iter()))
    {
        let d_same = rel_diff(pa.var.as_tensor(), pb.var.as_tensor());
        assert_eq!(d_same, 0.0, "{na}");
        if pa.role == Role::ScaleInvariant {
            assert!(
                rel_diff(pa.var.as_tensor(), pc.var.as_tensor()) > 0.1,
                "{na}"
            );
        }
    }
}

#[test]
fn init_scales_follow_the_references() {
    // std of a conv weight: bearpaw/VGG N(0, 2/(9·cout)) (fan-out), akamaster N(0, 2/(9·cin))
    // (fan-in). Wide layers make the sample std close to the target.
    fn std(m: &Model, name: &str) -> f64 {
        let v = m
            .store()
            .params()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .var;
        let t = v.as_tensor().flatten_all().unwrap();
        let n = t.elem_count() as f64;
        (t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            / n)
            .sqrt()
    }
    let cases = [
        (
            "{arch: preresnet, depth: 8}",
            "layer2.0.conv1.weight",
            (2.0f64 / (9.0 * 32.0)).sqrt(),
        ),
        (
            "{arch: resnet, depth: 8}",
            "layer2.0.conv1.weight",
            (2.0f64 / (9.0 * 16.0)).sqrt(),
        ),
        (
            "{arch: resnet, depth: 8}",
            "conv1.weight",
            (2.0f64 / 27.0).sqrt(),
        ),
        (
            "{arch: resnet, depth: 8}",
            "linear.weight",
            (2.0f64 / 64.0).sqrt(),
        ),
        (
            "{arch: vgg, depth: 11}",
            "features.4.weight",
            (2.0f64 / (9.0 * 128.0)).sqrt(),
        ),
    ];
    for (yaml, name, target) in cases {
        let m = build(&spec(yaml), DType::F64, 11);
        let s = std(&m, name);
        assert!(
            (s / target - 1.0).abs() < 0.15,
            "{yaml} {name}: std {s} vs {target}"
        );
    }
}

#[test]
fn f32_and_f64_agree_and_weight_norms_track_scaling() {
    let s = spec("{arch: resnet, depth: 8, width: 4}");
    let m64 = build(&s, DType::F64, 1);
    let m32 = build(&s, DType::F32, 1);
    let y64 = m64.forward_t(&batch(2, 16, DType::F64), true).unwrap();
    let y32 = m32.forward_t(&batch(2, 16, DType::F32), true).unwrap();
    assert_eq!(y32.dims(), &[2, 10]);
    assert!(rel_diff(&y32, &y64) < 1e-4, "{}", rel_diff(&y32, &y64));
    let before = m64.weight_norm("layer1.0.conv1").unwrap();
    assert_eq!(before, m64.weight_norm("layer1.0.conv1.weight").unwrap());
    let group = m64.scale_invariant_norm().unwrap();
    m64.scale_scale_invariant(3.0).unwrap();
    let after = m64.weight_norm("layer1.0.conv1").unwrap();
    assert!((after / before - 3.0).abs() < 1e-12);
    assert!((m64.scale_invariant_norm().unwrap() / group - 3.0).abs() < 1e-12);
}

#[test]
fn save_then_load_reproduces_the_logits() {
    let s = spec("{arch: vgg, depth: 11, width: 2, norm: 'gn:2', num_classes: 7}");
    let a = build(&s, DType::F64, 1);
    let x = batch(2, 32, DType::F64);
    let ya = a.forward_t(&x, false).unwrap();
    let path =
        std::env::temp_dir().join(format!("explr-zoo-test-{}.safetensors", std::process::id()));
    a.store().save(&path).unwrap();
    let b = build(&s, DType::F64, 2);
    assert!(rel_diff(&b.forward_t(&x, false).unwrap(), &ya) > 1e-3);
    b.store().load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(rel_diff(&b.forward_t(&x, false).unwrap(), &ya), 0.0);
    assert_eq!(ya.dims(), &[2, 7]);
}

#[test]
fn resnets_take_any_input_size() {
    for yaml in [
        "{arch: preresnet, depth: 8, width: 4}",
        "{arch: resnet, depth: 8, width: 4}",
    ] {
        let m = build(&spec(yaml), DType::F32, 0);
        for sz in [7, 16, 33] {
            let y = m.forward_t(&batch(2, sz, DType::F32), true).unwrap();
            assert_eq!(y.dims(), &[2, 10], "{yaml} {sz}");
        }
    }
}

#[test]
fn layer_accessors_cover_every_tensor_of_the_store() {
    // Each accessor's variables, by store name: together they are the whole state dict, each
    // tensor reached once, and the conv order is the forward order.
    let stem = [
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer2.0.conv1",
    ];
    let vgg = ["features.0", "features.4", "features.8", "features.11"];
    for (yaml, first_convs, head_name) in [
        ("{arch: preresnet, depth: 8, width: 4}", stem, "fc"),
        (
            "{arch: resnet, depth: 8, width: 4, norm: 'gn:2'}",
            stem,
            "linear",
        ),
        (
            "{arch: vgg, depth: 11, width: 2, norm: none}",
            vgg,
            "classifier",
        ),
    ] {
        let model = build(&spec(yaml), DType::F32, 0);
        let store = model.store();
        let name_of = |var: &candle_core::Var| -> String {
            let id = var.as_tensor().id();
            let params = store.params().into_iter().map(|(n, p)| (n, p.var));
            let found = params
                .chain(store.buffers())
                .find(|(_, v)| v.as_tensor().id() == id);
            found
                .map(|(n, _)| n)
                .unwrap_or_else(|| "<not in the store>".into())
        };
        let mut reached = Vec::new();
        let convs = model.convs();
        for conv in &convs {
            reached.extend(
                std::iter::once(conv.weight())
                    .chain(conv.bias())
                    .map(name_of),
            );
        }
        for norm in model.norms() {
            let vars = [
                norm.weight(),
                norm.bias(),
                norm.running_mean(),
                norm.running_var(),
                norm.num_batches_tracked(),
            ];
            for var in vars.into_iter().flatten() {
                let name = name_of(var);
                assert!(
                    name.starts_with(norm.name().unwrap_or("?")),
                    "{yaml}: {name}"
                );
                reached.push(name);
            }
        }
        let head = model.head();
        reached.extend(
            std::iter::once(head.weight())
                .chain(head.bias())
                .map(name_of),
        );
        assert_eq!(head.name(), head_name, "{yaml}");
        let conv_names: Vec<&str> = convs.iter().take(4).map(|c| c.name()).collect();
        assert_eq!(conv_names, first_convs, "{yaml}");
        let reached_count = reached.len();
        reached.sort();
        reached.dedup();
        assert_eq!(
            reached.len(),
            reached_count,
            "{yaml}: a tensor reached twice"
        );
        let all: Vec<String> = store.state_dict().into_keys().collect();
        assert_eq!(reached, all, "{yaml}");
    }
}
