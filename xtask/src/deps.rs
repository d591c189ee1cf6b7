//! `cargo xtask unused-deps`: no dead dependency declarations.
//!
//! Two rules, checked offline from the manifests (`cargo metadata --no-deps --offline` for the
//! members, the root `Cargo.toml` for `[workspace.dependencies]`) and the sources:
//! - every `[workspace.dependencies]` entry is a dependency of some member;
//! - every dependency of a member is named in the code that can use it, as a path root
//!   (`name::`, `use name`, `extern crate name`, with `-` read as `_`, or its `package` rename):
//!   `[dependencies]` in `src/`, `[build-dependencies]` in `build.rs`, `[dev-dependencies]`
//!   anywhere in the package (tests, benches, examples, doctests, test modules).
//!
//! Like cargo-machete, it reads text, so a crate named only inside a comment counts as used
//! (doctests live in comments); it never reports a used dependency as unused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Which manifest section a dependency is declared in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Normal,
    Dev,
    Build,
}

impl Section {
    fn table(self) -> &'static str {
        match self {
            Section::Normal => "[dependencies]",
            Section::Dev => "[dev-dependencies]",
            Section::Build => "[build-dependencies]",
        }
    }

    /// Where code that may use a dependency of this section lives, in words.
    fn scope(self) -> &'static str {
        match self {
            Section::Normal => "src/",
            Section::Dev => "the package (src, tests, benches, examples)",
            Section::Build => "build.rs",
        }
    }
}

/// One dependency of one member.
#[derive(Debug)]
struct Dependency {
    /// The name the code uses: the rename, else the package name.
    key: String,
    section: Section,
}

/// One workspace member.
#[derive(Debug)]
struct Member {
    name: String,
    dir: PathBuf,
    dependencies: Vec<Dependency>,
}

/// Checks the workspace at `root` and fails listing every dead declaration.
pub fn run(root: &Path) -> Result<()> {
    let problems = check(root)?;
    if problems.is_empty() {
        println!("unused-deps: every declared dependency is used");
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    bail!(
        "{} unused dependency declaration(s): remove each, or move it to the section whose \
         code uses it",
        problems.len()
    )
}

/// Every dead declaration of the workspace at `root`, one sentence each, in a stable order.
pub fn check(root: &Path) -> Result<Vec<String>> {
    let members = members(root)?;
    let workspace = workspace_dependencies(root)?;
    let mut problems = Vec::new();
    let declared: BTreeSet<&str> = members
        .iter()
        .flat_map(|m| m.dependencies.iter().map(|d| d.key.as_str()))
        .collect();
    for name in &workspace {
        if !declared.contains(name.as_str()) {
            problems.push(format!(
                "Cargo.toml: [workspace.dependencies] `{name}` is a dependency of no member"
            ));
        }
    }
    for member in &members {
        let sources = [Section::Normal, Section::Dev, Section::Build]
            .into_iter()
            .map(|s| Ok((s, read_sources(&member.dir, s)?)))
            .collect::<Result<BTreeMap<Section, String>>>()?;
        for dep in &member.dependencies {
            if !names_crate(&sources[&dep.section], &dep.key.replace('-', "_")) {
                let manifest = member.dir.join("Cargo.toml");
                let manifest = manifest.strip_prefix(root).unwrap_or(&manifest);
                problems.push(format!(
                    "{} ({}): {} `{}` is not used in {}",
                    manifest.display(),
                    member.name,
                    dep.section.table(),
                    dep.key,
                    dep.section.scope()
                ));
            }
        }
    }
    Ok(problems)
}

/// The members and their dependencies, from `cargo metadata --no-deps --offline`.
fn members(root: &Path) -> Result<Vec<Member>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .output()
        .with_context(|| format!("starting `{cargo} metadata`"))?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata has no `packages`")?;
    let text = |v: &Value, what: &str| -> Result<String> {
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("cargo metadata: a package without `{what}`"))
    };
    let mut members = Vec::new();
    for p in packages {
        let manifest = PathBuf::from(text(&p["manifest_path"], "manifest_path")?);
        let mut dependencies = Vec::new();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let section = match d["kind"].as_str() {
                None => Section::Normal,
                Some("dev") => Section::Dev,
                Some("build") => Section::Build,
                Some(other) => bail!("cargo metadata: unknown dependency kind `{other}`"),
            };
            let key = match d["rename"].as_str() {
                Some(rename) => rename.to_string(),
                None => text(&d["name"], "dependencies.name")?,
            };
            dependencies.push(Dependency { key, section });
        }
        members.push(Member {
            name: text(&p["name"], "name")?,
            dir: manifest
                .parent()
                .context("a manifest path has a parent")?
                .to_path_buf(),
            dependencies,
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

/// The keys of the root manifest's `[workspace.dependencies]`.
fn workspace_dependencies(root: &Path) -> Result<Vec<String>> {
    let path = root.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let doc =
        toml_edit::Document::parse(text).with_context(|| format!("parsing {}", path.display()))?;
    let table = doc
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table_like());
    Ok(table
        .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
        .unwrap_or_default())
}

/// All `.rs` files that may use a dependency of `section`, concatenated.
fn read_sources(dir: &Path, section: Section) -> Result<String> {
    let mut files = Vec::new();
    match section {
        Section::Normal => collect_rs(&dir.join("src"), &mut files)?,
        Section::Dev => collect_rs(dir, &mut files)?,
        Section::Build => files.push(dir.join("build.rs")),
    }
    let mut text = String::new();
    for f in files.iter().filter(|f| f.is_file()) {
        text += &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        text.push('\n');
    }
    Ok(text)
}

/// Every `.rs` file below `dir` (not entering `target/`), in name order.
fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                collect_rs(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// True when `text` names the crate `name` as a path root: `name::`, `use name`,
/// `extern crate name`, where `name` is a whole identifier not preceded by `::`.
fn names_crate(text: &str, name: &str) -> bool {
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    text.match_indices(name).any(|(at, _)| {
        let end = at + name.len();
        let before_ok = at == 0 || (!ident(bytes[at - 1]) && !text[..at].ends_with("::"));
        let after_ident = bytes.get(end).is_some_and(|&b| ident(b));
        if !before_ok || after_ident {
            return false;
        }
        let head = text[..at].trim_end();
        text[end..].starts_with("::")
            || ends_with_word(head, "use")
            || ends_with_word(head, "extern crate")
    })
}

/// True when `text` ends with `word` and no identifier character comes right before it.
fn ends_with_word(text: &str, word: &str) -> bool {
    text.strip_suffix(word).is_some_and(|before| {
        !before
            .bytes()
            .next_back()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_counts_only_as_a_path_root() {
        let cases = [
            ("use half::f16;", "half", true),
            ("let x = half::f16::ZERO;", "half", true),
            ("use candle_core as candle;", "candle_core", true),
            ("extern crate md5;", "md5", true),
            ("#[derive(serde::Serialize)]", "serde", true),
            (
                "//! let s = serde_yaml::from_str(\"{}\")?;",
                "serde_yaml",
                true,
            ),
            // Not the crate: words, longer names, paths inside other crates.
            ("pads half the input channels", "half", false),
            ("use halfway::f16;", "half", false),
            ("use my_half::f16;", "half", false),
            ("let y = candle_core::half::f16::ONE;", "half", false),
            ("let tar = 1; star::x();", "tar", false),
            ("we reuse half of it", "half", false),
        ];
        for (text, name, used) in cases {
            assert_eq!(names_crate(text, name), used, "`{name}` in `{text}`");
        }
    }

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn reports_each_dead_declaration_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        write(
            root,
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"a\", \"b\"]\n\
             [workspace.dependencies]\nserde = \"1\"\nhalf = \"2\"\nanyhow = \"1\"\n\
             b = { path = \"b\" }\n",
        );
        let package = |name: &str| {
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        };
        write(
            root,
            "a/Cargo.toml",
            &(package("a")
                + "[dependencies]\nserde.workspace = true\nanyhow.workspace = true\n\
                   png-renamed = { version = \"0.18\", package = \"png\" }\n\
                   [dev-dependencies]\nb.workspace = true\n\
                   [build-dependencies]\ncc = \"1\"\n"),
        );
        // serde used in src; anyhow only in a test (so not usable from src); png_renamed used
        // under its rename; b used by a test; cc never (build.rs does not use it).
        write(
            root,
            "a/src/lib.rs",
            "pub use serde::Serialize;\nfn f() { png_renamed::x() }\n",
        );
        write(root, "a/tests/t.rs", "use anyhow::Result;\nuse b::B;\n");
        write(root, "a/build.rs", "fn main() {}\n");
        write(root, "b/Cargo.toml", &package("b"));
        write(root, "b/src/lib.rs", "pub struct B;\n");
        assert_eq!(
            check(root)?,
            [
                "Cargo.toml: [workspace.dependencies] `half` is a dependency of no member",
                "a/Cargo.toml (a): [dependencies] `anyhow` is not used in src/",
                "a/Cargo.toml (a): [build-dependencies] `cc` is not used in build.rs",
            ]
        );
        Ok(())
    }
}
