//! Records, for the results' metadata, the versions this build resolved (from the workspace's
//! Cargo.lock) and the compiler that built it. Nothing else is generated.

use std::path::Path;

/// Dependencies whose versions decide the numbers a run produces.
const RECORDED: &[&str] = &["candle-core", "candle-nn", "gemm", "pulp", "rayon"];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let lock = Path::new(&manifest_dir).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let versions = std::fs::read_to_string(&lock)
        .map(|text| locked_versions(&text))
        .unwrap_or_else(|_| "unknown (no Cargo.lock)".into());
    println!("cargo:rustc-env=EXPLR_LOCKED_VERSIONS={versions}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EXPLR_RUSTC_VERSION={rustc_version}");
}

/// `name version[ (path)]` for each recorded package in the lock file, comma-separated; a
/// package without a `source` is a path dependency (e.g. the vendored, patched candle-core).
fn locked_versions(lock: &str) -> String {
    let mut found = Vec::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.trim().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(version)) = (field("name "), field("version ")) {
            if RECORDED.contains(&name.as_str()) {
                let path = if field("source ").is_none() {
                    " (path)"
                } else {
                    ""
                };
                found.push(format!("{name} {version}{path}"));
            }
        }
    }
    found.sort();
    found.join(", ")
}
