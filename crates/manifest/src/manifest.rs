//! Reading a manifest: one YAML file per claim of the paper (EXPERIMENTS.md), with profiles
//! (`smoke`, `cpu`, `paper`) that override fields of the same file. The schema itself is
//! [`crate::spec`]'s plain data.
//!
//! Parsing is strict: unknown keys are rejected, values are validated ([`crate::validate`]),
//! and every error names the file, the field path and the line, and says what would be valid.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml::Value;

use crate::spec::Experiment;
pub use crate::spec::Manifest;

/// The profiles a manifest may define.
pub const PROFILES: [&str; 5] = ["smoke", "cpu", "cpu-long", "cpu-full", "paper"];

/// The profiles only the manifests that need them define: `cpu-long`, for claims the cpu
/// profile's hour cannot decide, and `cpu-full`, the practical regime (float32, BatchNorm eps
/// 1e-5, the whole CIFAR-10 with augmentation) on two cores. A manifest asked for one it does
/// not define is [`ManifestError::NotDefined`] (its base is the paper's full scale, never what
/// such a profile means), and a run of every manifest at such a profile skips it.
pub const OPTIONAL_PROFILES: [&str; 2] = ["cpu-long", "cpu-full"];

/// A manifest with one profile applied: what actually runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resolved {
    /// Manifest file stem (`e3`), used for result folders and goldens.
    pub name: String,
    /// The profile applied.
    pub profile: String,
    /// The manifest with the profile merged in (its `profiles` emptied).
    pub manifest: Manifest,
}

impl Resolved {
    /// The experiment to run (validated to be exactly one).
    pub fn experiment(&self) -> Experiment<'_> {
        self.manifest
            .experiment()
            .expect("a resolved manifest has exactly one experiment section")
    }
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// YAML syntax or a type/unknown-key error.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong, with the field path.
        message: String,
    },
    /// An optional profile ([`OPTIONAL_PROFILES`]) the manifest does not define.
    #[error("{path} defines no profile `{profile}` (it defines {}): only the claims that need it do; run it at one of those", defined.join(", "))]
    NotDefined {
        /// The file.
        path: PathBuf,
        /// The profile asked for.
        profile: String,
        /// The profiles it defines.
        defined: Vec<String>,
    },
    /// A value that parses but is impossible.
    #[error("{path}:{line}: `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the field (0 when unknown).
        line: usize,
        /// Dotted field path.
        field: String,
        /// What is wrong and what would be valid.
        message: String,
    },
}

/// Reads and validates `path` with `profile` applied.
pub fn load(path: &Path, profile: &str) -> Result<Resolved, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&text, path, &name, profile)
}

/// Parses manifest `text` (named `path` in errors) with `profile` applied.
pub fn parse(
    text: &str,
    path: &Path,
    name: &str,
    profile: &str,
) -> Result<Resolved, ManifestError> {
    let parse_err = |line: usize, message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    // A byte-order mark (some Windows editors write one) is not part of the YAML.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // 1. The file as written: serde_yaml reports the line of a syntax, type or unknown-key error.
    let base: Manifest = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        parse_err(line, e.to_string())
    })?;
    for key in base.profiles.keys() {
        if !PROFILES.contains(&key.as_str()) {
            return Err(parse_err(
                find_line(text, &["profiles", key]),
                format!(
                    "unknown profile `{key}`; valid profiles are {}",
                    PROFILES.join(", ")
                ),
            ));
        }
    }
    // The file's own fields, before any profile: a profile cannot hide a broken base.
    apply_profile(text, &base, path, name, "")?;
    if !PROFILES.contains(&profile) {
        return Err(parse_err(
            0,
            format!(
                "unknown profile `{profile}`; valid profiles are {}",
                PROFILES.join(", ")
            ),
        ));
    }
    if OPTIONAL_PROFILES.contains(&profile) && !base.profiles.contains_key(profile) {
        return Err(ManifestError::NotDefined {
            path: path.to_path_buf(),
            profile: profile.to_string(),
            defined: base.profiles.keys().cloned().collect(),
        });
    }
    // 2. Every profile's overrides, deep-merged onto the file's fields, so that a typo in one
    //    profile is caught whichever profile runs; the requested one is returned.
    for other in base.profiles.keys().filter(|p| p.as_str() != profile) {
        apply_profile(text, &base, path, name, other)?;
    }
    let manifest = apply_profile(text, &base, path, name, profile)?;
    Ok(Resolved {
        name: name.to_string(),
        profile: profile.to_string(),
        manifest,
    })
}

/// The manifest with `profile`'s overrides merged in, deserialized and validated (its id
/// against the file's `name`).
fn apply_profile(
    text: &str,
    base: &Manifest,
    path: &Path,
    name: &str,
    profile: &str,
) -> Result<Manifest, ManifestError> {
    let parse_err = |line: usize, message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut merged: Value = serde_yaml::from_str(text).map_err(|e| parse_err(0, e.to_string()))?;
    if let Value::Mapping(m) = &mut merged {
        m.remove("profiles");
    }
    if let Some(over) = base.profiles.get(profile) {
        merge(&mut merged, over.clone());
    }
    default_num_classes(&mut merged);
    let manifest: Manifest = serde_path_to_error::deserialize(merged).map_err(|e| {
        let field = e.path().to_string();
        let parts: Vec<&str> = field.split('.').collect();
        let mut lookup = vec!["profiles", profile];
        lookup.extend(parts.iter().copied());
        let line = match find_line(text, &lookup) {
            0 => find_line(text, &parts),
            l => l,
        };
        parse_err(
            line,
            format!("profile `{profile}`, field `{field}`: {}", e.inner()),
        )
    })?;
    validate(&manifest, text, path, name, profile)?;
    Ok(manifest)
}

/// Every problem [`crate::validate::validate`] finds, located in the file; the one nearest the
/// top of the file is reported (in the profile's override when the field is set there). An id
/// must also be the file's `name` (up to case): `explr replicate E3` finds `e3.yaml`, and
/// results and goldens are filed under the name.
fn validate(
    m: &Manifest,
    text: &str,
    path: &Path,
    name: &str,
    profile: &str,
) -> Result<(), ManifestError> {
    let mut problems = crate::validate::validate(m);
    if !name.is_empty()
        && crate::validate::id_problem(&m.id).is_none()
        && !m.id.eq_ignore_ascii_case(name)
    {
        problems.push(crate::spec::FieldError::new(
            "id",
            format!(
                "`{}` is not the file's name `{name}`: a claim is found by its id (`explr \
                 replicate {}` reads `{}.yaml`); make the id `{}` or rename the file",
                m.id,
                m.id,
                m.id.to_ascii_lowercase(),
                name.to_ascii_uppercase()
            ),
        ));
    }
    let located = problems.into_iter().map(|e| {
        let parts: Vec<&str> = e.field.split('.').collect();
        let mut in_profile = vec!["profiles", profile];
        in_profile.extend(parts.iter().copied());
        let line = match (profile.is_empty(), find_line(text, &in_profile)) {
            (false, l) if l > 0 => l,
            _ => find_line(text, &parts),
        };
        (line, e)
    });
    // Unlocated errors (line 0) sort last: a located one tells the user where to look.
    let first = located.min_by_key(|(line, _)| if *line == 0 { usize::MAX } else { *line });
    let Some((line, e)) = first else {
        return Ok(());
    };
    let message = if profile.is_empty() {
        e.message
    } else {
        format!("with profile `{profile}`: {}", e.message)
    };
    Err(ManifestError::Invalid {
        path: path.to_path_buf(),
        line,
        field: e.field,
        message,
    })
}

/// A model's `num_classes` defaults to its dataset's class count: the merged manifest gets the
/// dataset's count wherever a model leaves it out, so the resolved manifest records what runs;
/// a count that is written and differs is left for validation to reject.
fn default_num_classes(merged: &mut Value) {
    let Value::Mapping(top) = merged else {
        return;
    };
    for (section, models_key) in [("training", "models"), ("exactness", "model")] {
        let Some(Value::Mapping(sec)) = top.get_mut(section) else {
            continue;
        };
        let classes = sec
            .get("data")
            .and_then(|d| d.get("dataset"))
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<explr_data::DatasetName>().ok())
            .map(|d| d.num_classes());
        let Some(classes) = classes else {
            continue;
        };
        let fill = |model: &mut Value| {
            if let Value::Mapping(m) = model {
                if !m.contains_key("num_classes") {
                    m.insert("num_classes".into(), Value::Number((classes as u64).into()));
                }
            }
        };
        match sec.get_mut(models_key) {
            Some(Value::Mapping(models)) if models_key == "models" => {
                models.iter_mut().for_each(|(_, m)| fill(m));
            }
            Some(model) if models_key == "model" => fill(model),
            _ => {}
        }
    }
}

/// Deep merge, as a JSON merge patch (RFC 7386): mappings merge key by key, a key set to
/// null (`~`) is removed (a profile drops a control or a field it does not want), anything
/// else is replaced. No manifest field gives null a meaning of its own: every optional field
/// is absent when null.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                    continue;
                }
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Best-effort 1-based line of the key at `path` (mapping keys; numeric parts index sequence
/// items), found by indentation; 0 when not found.
pub fn find_line(text: &str, path: &[&str]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut lo, mut hi, mut min_indent) = (0usize, lines.len(), 0usize);
    let mut found = 0usize;
    for part in path {
        let mut hit = None;
        if let Ok(index) = part.parse::<usize>() {
            // The index-th "- " item at the shallowest indent inside the block.
            let mut count = 0usize;
            let mut item_indent = None;
            for (i, l) in lines.iter().enumerate().take(hi).skip(lo) {
                let t = l.trim_start();
                if t.starts_with("- ") || t == "-" {
                    let ind = indent(l);
                    if ind < min_indent || item_indent.is_some_and(|x| ind > x) {
                        continue;
                    }
                    item_indent.get_or_insert(ind);
                    if count == index {
                        hit = Some((i, ind + 2));
                        break;
                    }
                    count += 1;
                }
            }
        } else {
            for (i, l) in lines.iter().enumerate().take(hi).skip(lo) {
                let t = l.trim_start().trim_start_matches("- ");
                let ind = indent(l) + (l.trim_start().len() - t.len());
                if ind >= min_indent
                    && (t.starts_with(&format!("{part}:")) || t.starts_with(&format!("{part} :")))
                {
                    hit = Some((i, ind + 1));
                    break;
                }
            }
        }
        let Some((i, next_indent)) = hit else {
            return found;
        };
        found = i + 1;
        // The block of this key: following lines indented deeper than the key itself.
        let key_indent = next_indent.saturating_sub(1);
        let end = (i + 1..hi)
            .find(|&j| {
                !lines[j].trim().is_empty()
                    && indent(lines[j]) <= key_indent.min(indent(lines[i]))
                    && !lines[j].trim_start().starts_with('#')
            })
            .unwrap_or(hi);
        lo = i;
        hi = end;
        min_indent = next_indent;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_line_follows_indentation_and_sequences() {
        let text = "a: 1\nb:\n  c: 2\n  runs:\n    - name: x\n      lr: 1\n    - name: y\n      lr: 2\nprofiles:\n  smoke:\n    b:\n      c: 3\n";
        assert_eq!(find_line(text, &["a"]), 1);
        assert_eq!(find_line(text, &["b", "c"]), 3);
        assert_eq!(find_line(text, &["b", "runs", "1", "lr"]), 8);
        assert_eq!(find_line(text, &["b", "runs", "0", "name"]), 5);
        assert_eq!(find_line(text, &["profiles", "smoke", "b", "c"]), 12);
        assert_eq!(find_line(text, &["zzz"]), 0);
    }

    #[test]
    fn merge_is_deep_for_mappings_and_replaces_the_rest() {
        let mut base: Value = serde_yaml::from_str("a: {b: 1, c: [1, 2]}\nd: 4").unwrap();
        let over: Value = serde_yaml::from_str("a: {c: [3]}\ne: 5").unwrap();
        merge(&mut base, over);
        let want: Value = serde_yaml::from_str("a: {b: 1, c: [3]}\nd: 4\ne: 5").unwrap();
        assert_eq!(base, want);
    }

    #[test]
    fn merge_removes_the_keys_a_profile_sets_to_null() {
        let mut base: Value =
            serde_yaml::from_str("a: {b: 1, c: {x: 1}, d: 2}\ne: 4\nf: [1]").unwrap();
        let over: Value = serde_yaml::from_str("a: {c: ~, d: null, g: ~}\nf: ~").unwrap();
        merge(&mut base, over);
        let want: Value = serde_yaml::from_str("a: {b: 1}\ne: 4").unwrap();
        assert_eq!(base, want);
    }
}
