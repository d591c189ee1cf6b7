//! Logit parity with the PyTorch twins (scripts/pytorch/zoo_fixtures.py): the twin's weights
//! load under our names (a strict load, so the names match exactly), and in float64 our eval-
//! and train-mode logits and the running statistics a training forward leaves behind match
//! the twin's within 1e-10 relative.

mod common;

use candle_core::{DType, Device};
use common::{build, fixture_json, fixtures, rel_diff};
use explr_zoo::ModelSpec;

const TOL: f64 = 1e-10;

fn check(case: &str) {
    let json = fixture_json();
    let entry = &json["parity"][case];
    let spec: ModelSpec = serde_json::from_value(entry["spec"].clone()).unwrap();
    let model = build(&spec, DType::F64, 99);
    assert_eq!(
        model.num_params() as u64,
        entry["params"].as_u64().unwrap(),
        "{case}: parameter count"
    );
    let dir = fixtures();
    model
        .store()
        .load(&dir.join(format!("{case}.weights.safetensors")))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let io =
        candle_core::safetensors::load(dir.join(format!("{case}.io.safetensors")), &Device::Cpu)
            .unwrap();
    let x = io["x"].to_dtype(DType::F64).unwrap();

    let eval = model.forward_t(&x, false).unwrap();
    let d = rel_diff(&eval, &io["logits_eval"]);
    assert!(d <= TOL, "{case}: eval logits differ by {d:e} (relative)");

    let train = model.forward_t(&x, true).unwrap();
    let d = rel_diff(&train, &io["logits_train"]);
    assert!(d <= TOL, "{case}: train logits differ by {d:e} (relative)");

    let buffers: std::collections::BTreeMap<_, _> = model.store().buffers().into_iter().collect();
    let mut compared = 0;
    for (name, expected) in io.iter().filter(|(k, _)| k.starts_with("after_train.")) {
        let ours = &buffers[name.trim_start_matches("after_train.")];
        let d = rel_diff(ours.as_tensor(), expected);
        assert!(d <= TOL, "{case}: {name} differs by {d:e} (relative)");
        compared += 1;
    }
    let expected_running = buffers.keys().filter(|k| k.contains("running")).count();
    assert_eq!(
        compared, expected_running,
        "{case}: running buffers compared"
    );
}

#[test]
fn preresnet32_bn_matches_pytorch() {
    check("preresnet32_bn_w4");
}

#[test]
fn resnet20_bn_matches_pytorch() {
    check("resnet20_bn_w4");
}

#[test]
fn vgg11_bn_matches_pytorch() {
    check("vgg11_bn_w4");
}

#[test]
fn preresnet8_groupnorm_matches_pytorch() {
    check("preresnet8_gn2_w4");
}

#[test]
fn resnet8_instancenorm_matches_pytorch() {
    check("resnet8_in_w4");
}

#[test]
fn vgg11_without_norm_matches_pytorch() {
    check("vgg11_none_w2");
}

#[test]
fn fixtures_record_the_torch_version() {
    let json = fixture_json();
    let v = json["torch_version"].as_str().unwrap_or("");
    assert!(v.starts_with("2."), "torch version recorded: {v:?}");
}
