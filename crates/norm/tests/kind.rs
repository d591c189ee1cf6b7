//! `NormKind` parsing, display round trip and building.

use candle_core::{DType, Device};
use explr_nn::ParamStore;
use explr_norm::{Norm, NormConfig, NormError, NormKind};

fn check_ok(input: &str, expected: NormKind, display: &str) {
    let kind: NormKind = input
        .parse()
        .unwrap_or_else(|e| panic!("`{input}` should parse: {e}"));
    assert_eq!(kind, expected, "`{input}`");
    assert_eq!(kind.to_string(), display, "`{input}` displays");
    assert_eq!(
        display.parse::<NormKind>().unwrap(),
        kind,
        "round trip of `{display}`"
    );
    let json = serde_json::to_string(&kind).unwrap();
    assert_eq!(json, format!("\"{display}\""));
    assert_eq!(serde_json::from_str::<NormKind>(&json).unwrap(), kind);
}

fn check_err(input: &str, reason: &str) {
    match input.parse::<NormKind>() {
        Ok(k) => panic!("`{input}` should not parse, got {k:?}"),
        Err(NormError::ParseKind {
            input: got,
            reason: why,
        }) => {
            assert_eq!(got, input);
            assert!(
                why.contains(reason),
                "`{input}`: reason `{why}` lacks `{reason}`"
            );
            let msg = NormError::ParseKind {
                input: got,
                reason: why,
            }
            .to_string();
            assert!(
                msg.contains("`bn`, `gn:<groups>`"),
                "message lists the kinds: {msg}"
            );
        }
        Err(e) => panic!("`{input}`: wrong error {e:?}"),
    }
}

#[test]
fn known_kinds_parse_and_round_trip() {
    check_ok("bn", NormKind::Batch, "bn");
    check_ok("BN", NormKind::Batch, "bn");
    check_ok(" ln ", NormKind::Layer, "ln");
    check_ok("in", NormKind::Instance, "in");
    check_ok("none", NormKind::None, "none");
    check_ok("gn:16", NormKind::Group(16), "gn:16");
    check_ok("gn:1", NormKind::Group(1), "gn:1");
    check_ok("GN:32", NormKind::Group(32), "gn:32");
}

#[test]
fn unknown_kinds_are_explained() {
    check_err("gn", "needs a group count");
    check_err("gn:0", "must be positive");
    check_err("gn:x", "positive integer");
    check_err("gn:-2", "positive integer");
    check_err("gn:", "positive integer");
    check_err("batchnorm", "not a known kind");
    check_err("", "not a known kind");
    check_err("bn2", "not a known kind");
    assert!(serde_json::from_str::<NormKind>("\"gn:0\"").is_err());
}

#[test]
fn build_gives_the_matching_layer() {
    let store = ParamStore::new(&Device::Cpu, DType::F64, 0);
    let cfg = NormConfig::default();
    type IsKind = fn(&Norm) -> bool;
    let cases: [(&str, IsKind); 5] = [
        ("bn", |n| matches!(n, Norm::Batch(_))),
        ("gn:2", |n| matches!(n, Norm::Group(_))),
        ("ln", |n| matches!(n, Norm::Layer(_))),
        ("in", |n| matches!(n, Norm::Instance(_))),
        ("none", |n| matches!(n, Norm::Identity)),
    ];
    for (i, (s, is)) in cases.into_iter().enumerate() {
        let kind: NormKind = s.parse().unwrap();
        let norm = kind.build(&store.root().push(i), 4, &cfg).unwrap();
        assert!(is(&norm), "{s} built {norm:?}");
        assert_eq!(kind.is_scale_invariant(), s != "none");
    }
}
