//! Parameter counts (buffers excluded, as `sum(p.numel() for p in model.parameters())`).
//! Every number below was produced by the PyTorch twins (scripts/pytorch/zoo_fixtures.py
//! writes them to tests/fixtures/zoo_fixtures.json); each model is checked against both.

mod common;

use candle_core::DType;
use common::{build, fixture_json, spec};
use explr_nn::Role;
use explr_zoo::ModelSpec;

fn check(yaml: &str, expected: usize) {
    let s = spec(yaml);
    let model = build(&s, DType::F32, 0);
    assert_eq!(model.num_params(), expected, "{yaml}");
    let json = fixture_json();
    let twin = json["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| serde_json::from_value::<ModelSpec>(c["spec"].clone()).unwrap() == s)
        .unwrap_or_else(|| panic!("{yaml}: not in zoo_fixtures.json"));
    assert_eq!(
        twin["params"].as_u64(),
        Some(expected as u64),
        "{yaml}: twin"
    );
    if let Some(with_bias) = twin["params_with_conv_bias"].as_u64() {
        // kuangliu's published VGG has a bias on every conv; ours drops the biases of convs
        // that feed a norm: the difference is the total number of conv output channels.
        let conv_channels: usize = model
            .scale_invariant()
            .iter()
            .map(|(_, v)| v.dims()[0])
            .sum();
        assert_eq!(
            with_bias as usize,
            expected + conv_channels,
            "{yaml}: with bias"
        );
    }
}

#[test]
fn preresnet_counts() {
    check("{arch: preresnet, depth: 20}", 272_282);
    check("{arch: preresnet, depth: 32}", 466_714);
    check("{arch: preresnet, depth: 56}", 855_578);
    check("{arch: preresnet, depth: 110}", 1_730_522);
    check("{arch: preresnet, depth: 32, norm: none}", 464_442);
    check("{arch: preresnet, depth: 32, norm: 'gn:16'}", 466_714);
    check("{arch: preresnet, depth: 32, norm: ln}", 466_714);
    check("{arch: preresnet, depth: 32, norm: in}", 466_714);
    check("{arch: preresnet, depth: 32, num_classes: 100}", 472_564);
}

#[test]
fn resnet_counts_match_akamaster() {
    // akamaster's README: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    check("{arch: resnet, depth: 20}", 269_722);
    check("{arch: resnet, depth: 32}", 464_154);
    check("{arch: resnet, depth: 44}", 658_586);
    check("{arch: resnet, depth: 56}", 853_018);
    check("{arch: resnet, depth: 110}", 1_727_962);
    check("{arch: resnet, depth: 20, norm: none}", 268_346);
}

#[test]
fn vgg_counts() {
    check("{arch: vgg, depth: 11}", 9_228_362);
    check("{arch: vgg, depth: 13}", 9_413_066);
    check("{arch: vgg, depth: 16}", 14_724_042);
    check("{arch: vgg, depth: 19}", 20_035_018);
    check("{arch: vgg, depth: 16, norm: none}", 14_719_818);
    check("{arch: vgg, depth: 11, num_classes: 100}", 9_274_532);
}

#[test]
fn every_fixture_count_is_checked_here() {
    // Guards against the script growing a case this file forgets.
    let json = fixture_json();
    assert_eq!(json["counts"].as_array().unwrap().len(), 21);
}

#[test]
fn paper_model_groups() {
    // PreResNet-32 in the paper's setup: only the scale-invariant convs and the 1×1
    // projection shortcuts (2 of them: 16→32 and 32→64) are trainable.
    let model = build(&ModelSpec::paper(), DType::F32, 0);
    let g = model.trainable_groups();
    assert_eq!(
        g.keys().copied().collect::<Vec<_>>(),
        [Role::ScaleInvariant, Role::Other]
    );
    let other: Vec<&str> = g[&Role::Other].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        other,
        [
            "layer2.0.downsample.0.weight",
            "layer3.0.downsample.0.weight"
        ]
    );
    let n: usize = g[&Role::ScaleInvariant]
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum();
    // 466 714 − fc (64·10 + 10) − γ/β (2 × norm channels: layer1 16·10, layer2 16 + 32·9,
    // layer3 32 + 64·9, final 64) − shortcuts (16·32 + 32·64).
    let norm_channels = 16 * 10 + (16 + 32 * 9) + (32 + 64 * 9) + 64;
    assert_eq!(n, 466_714 - 650 - 2 * norm_channels - 512 - 2048);
}
