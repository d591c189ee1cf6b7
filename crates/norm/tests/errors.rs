//! Every user error is a typed `Err` carrying the offending values, never a panic.

use candle_core::{DType, Device, Tensor};
use explr_nn::ParamStore;
use explr_norm::{
    BatchNorm2d, GroupNorm, InstanceNorm2d, Kernel, LayerNorm2d, NormConfig, NormError, NormKind,
};

fn cfg() -> NormConfig {
    NormConfig::default()
}

fn build(kind: &str, channels: usize, cfg: &NormConfig) -> Result<explr_norm::Norm, NormError> {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    kind.parse::<NormKind>()?
        .build(&store.root(), channels, cfg)
}

/// Runs `kind` (4 channels, f64) on a zero tensor of `shape` in training mode.
fn run(kind: &str, shape: &[usize], train: bool) -> Result<Tensor, NormError> {
    let layer = build(kind, 4, &cfg())?;
    let x = Tensor::zeros(shape, DType::F64, &Device::Cpu)?;
    layer.forward_t(&x, train)
}

/// Asserts that `result` is an error whose message contains every piece of `expect`.
fn check<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, NormError>,
    matches: impl Fn(&NormError) -> bool,
    expect: &[&str],
) {
    let err = match result {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e,
    };
    assert!(matches(&err), "{what}: wrong variant {err:?}");
    let msg = err.to_string();
    for piece in expect {
        assert!(
            msg.contains(piece),
            "{what}: message `{msg}` lacks `{piece}`"
        );
    }
}

#[test]
fn wrong_rank_is_reported_with_the_shape() {
    for kind in ["bn", "gn:2", "ln", "in"] {
        for shape in [&[2usize, 4, 3][..], &[2, 4, 3, 3, 1], &[4]] {
            check(
                &format!("{kind} {shape:?}"),
                run(kind, shape, true),
                |e| matches!(e, NormError::Rank { .. }),
                &["4-D", &format!("{shape:?}")],
            );
        }
    }
}

#[test]
fn wrong_channel_count_is_reported() {
    for kind in ["bn", "gn:2", "ln", "in"] {
        for train in [true, false] {
            check(
                &format!("{kind} train={train}"),
                run(kind, &[2, 5, 3, 3], train),
                |e| matches!(e, NormError::Channels { expected: 4, .. }),
                &["4 channels", "[2, 5, 3, 3]"],
            );
        }
    }
}

#[test]
fn groups_must_divide_channels() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    for (i, (groups, channels)) in [(4, 6), (0, 6), (7, 6), (5, 16)].into_iter().enumerate() {
        check(
            &format!("gn {groups}/{channels}"),
            GroupNorm::new(&store.root().push(i), groups, channels, &cfg()),
            move |e| matches!(e, NormError::Groups { groups: g, channels: c } if (*g, *c) == (groups, channels)),
            &[&format!("{groups} groups"), &format!("{channels} channels")],
        );
    }
    check(
        "gn:4 built for 6 channels",
        build("gn:4", 6, &cfg()),
        |e| {
            matches!(
                e,
                NormError::Groups {
                    groups: 4,
                    channels: 6
                }
            )
        },
        &["divide"],
    );
}

#[test]
fn bad_eps_and_momentum_are_rejected_by_every_kind() {
    let bad = [
        (cfg().with_eps(-1e-5), "-0.00001"),
        (cfg().with_eps(f64::NAN), "NaN"),
        (cfg().with_eps(f64::INFINITY), "inf"),
        (
            NormConfig {
                momentum: Some(-0.1),
                ..cfg()
            },
            "-0.1",
        ),
        (
            NormConfig {
                momentum: Some(1.5),
                ..cfg()
            },
            "1.5",
        ),
        (
            NormConfig {
                momentum: Some(f64::NAN),
                ..cfg()
            },
            "NaN",
        ),
    ];
    for kind in ["bn", "gn:2", "ln", "in"] {
        for (c, value) in &bad {
            check(
                &format!("{kind} {c:?}"),
                build(kind, 4, c),
                |e| matches!(e, NormError::Config(_)),
                &[value],
            );
        }
    }
}

#[test]
fn edge_configs_are_accepted() {
    for kind in ["bn", "gn:2", "ln", "in"] {
        for c in [
            cfg().with_eps(0.0),
            NormConfig {
                momentum: Some(0.0),
                ..cfg()
            },
            NormConfig {
                momentum: Some(1.0),
                ..cfg()
            },
        ] {
            assert!(build(kind, 4, &c).is_ok(), "{kind} {c:?}");
        }
    }
}

#[test]
fn instance_norm_tracking_needs_a_momentum() {
    let c = NormConfig {
        momentum: None,
        track_running_stats: Some(true),
        ..cfg()
    };
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    check(
        "in momentum None",
        InstanceNorm2d::new(&store.root(), 4, &c),
        |e| matches!(e, NormError::Config(_)),
        &["momentum"],
    );
}

#[test]
fn zero_channels_are_rejected() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let root = store.root();
    check(
        "bn",
        BatchNorm2d::new(&root.push("a"), 0, &cfg()),
        |e| matches!(e, NormError::Config(_)),
        &["0"],
    );
    check(
        "ln",
        LayerNorm2d::new(&root.push("b"), 0, &cfg()),
        |e| matches!(e, NormError::Config(_)),
        &["0"],
    );
    check(
        "in",
        InstanceNorm2d::new(&root.push("c"), 0, &cfg()),
        |e| matches!(e, NormError::Config(_)),
        &["0"],
    );
}

#[test]
fn a_single_value_per_statistic_is_rejected_in_training() {
    for (kind, shape) in [
        ("bn", [1usize, 4, 1, 1]),
        ("in", [3, 4, 1, 1]),
        ("gn:4", [2, 4, 1, 1]),
    ] {
        check(
            &format!("{kind} {shape:?}"),
            run(kind, &shape, true),
            |e| matches!(e, NormError::TooFewValues { .. }),
            &["more than one value"],
        );
    }
    // Evaluation with running statistics needs no batch statistics.
    assert!(run("bn", &[1, 4, 1, 1], false).is_ok());
}

#[test]
fn wrong_dtype_is_reported() {
    for kind in ["bn", "gn:2", "ln", "in"] {
        let layer = build(kind, 4, &cfg()).unwrap();
        let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        check(
            kind,
            layer.forward_t(&x, true),
            |e| {
                matches!(
                    e,
                    NormError::DType {
                        expected: DType::F64,
                        got: DType::F32,
                        ..
                    }
                )
            },
            &["F64", "F32"],
        );
    }
}

#[test]
fn fused_kernel_on_an_unsupported_dtype_is_an_error() {
    for kind in ["bn", "gn:2", "ln", "in"] {
        let store = ParamStore::new(&Device::Cpu, DType::BF16, 0);
        let layer = kind
            .parse::<NormKind>()
            .unwrap()
            .build(&store.root(), 4, &cfg())
            .unwrap();
        let x = Tensor::ones((2, 4, 3, 3), DType::BF16, &Device::Cpu).unwrap();
        check(
            kind,
            layer.forward_with(&x, true, Kernel::Fused),
            |e| {
                matches!(
                    e,
                    NormError::KernelUnavailable {
                        dtype: DType::BF16,
                        ..
                    }
                )
            },
            &["Kernel::Auto"],
        );
        // Auto falls back to the composite path for BF16.
        let y = layer.forward_with(&x, true, Kernel::Auto).unwrap();
        assert_eq!(y.dims(), x.dims());
    }
}
