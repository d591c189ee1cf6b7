//! Fuzzing the two parsers that read files a user hands us: the manifest parser and the CIFAR-10
//! binary reader. Neither may panic or hang on any input; errors are fine.

mod common;

use std::path::Path;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use explr_data::{load_cifar10, Completeness, IMAGE_BYTES};
use explr_replicate::manifest::{self, ManifestError, Resolved};
use proptest::prelude::*;

use common::TempDir;

/// Longest a single parse may take before we call it a hang (generous: the machine is loaded).
const PARSE_LIMIT: Duration = Duration::from_secs(10);

/// Parses `text` at `profile` on a worker thread: the result, or a test failure when the parser
/// panics (the worker's channel closes) or does not answer within [`PARSE_LIMIT`].
fn parse_bounded(
    text: String,
    profile: &'static str,
) -> Result<Result<Resolved, ManifestError>, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The seed manifest's id is F1: the file's name must be its id.
        let r = manifest::parse(&text, Path::new("fuzz.yaml"), "f1", profile);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(PARSE_LIMIT) {
        Ok(r) => Ok(r),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {PARSE_LIMIT:?}")),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the parser panicked".into()),
    }
}

/// A valid manifest (with a profile override) to mutate.
const SEED_MANIFEST: &str = "\
id: F1
title: fuzz
paper: none
claim: nothing
training:
  models:
    tiny: {arch: preresnet, depth: 8, width: 2}
  data: {dataset: synthetic, train_size: 64, batch_size: 32}
  seeds: [0]
  epochs: 4
  runs:
    step_decay:
      weight_decay: 5.0e-4
      schedule: {kind: multistep, lr: 0.1, milestones: [2, 3], gamma: 0.1}
    texp:
      derive: {from: step_decay, transform: texp}
  checks:
    - {check: window_gap, a: step_decay, b: texp, metric: train_acc, windows: [[3, 4]], bound: 0.05, reason: r}
profiles:
  smoke:
    training:
      epochs: 3
      runs:
        step_decay:
          schedule: {milestones: [1, 2]}
";

/// YAML-ish tokens: the manifest's own keys and values plus YAML's structural characters
/// (anchors, aliases, tags, flow collections, block scalars).
const TOKENS: &[&str] = &[
    "id",
    "title",
    "training",
    "exactness",
    "toy",
    "scale_invariance",
    "profiles",
    "smoke",
    "cpu",
    "paper",
    "models",
    "data",
    "runs",
    "derive",
    "from",
    "schedule",
    "kind",
    "milestones",
    "epochs",
    "seeds",
    "checks",
    "check",
    "lr",
    "gamma",
    "weight_decay",
    "momentum",
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n    ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!binary ",
    "<<: ",
    "|",
    ">",
    "'",
    "\"",
    "#",
    "? ",
    "---",
    "...",
    "~",
    "null",
    "true",
    "-1",
    "0",
    "1e308",
    ".nan",
    ".inf",
    "0x1F",
    "18446744073709551616",
    // Numbers that parse but size the work: validation must refuse them, not do the work.
    "18446744073709551615",
    "1000000000",
    "\"../x\"",
    "é",
    "\t",
    "%YAML 1.2\n",
];

fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

/// The seed manifest with a few byte-level edits: deletions, insertions of tokens, truncation.
fn mutated() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0usize..3,
        prop::sample::select(TOKENS),
    );
    (
        prop::collection::vec(edit, 1..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(edits, cut)| {
            let mut text: Vec<char> = SEED_MANIFEST.chars().collect();
            for (at, action, token) in edits {
                let i = at.index(text.len() + 1);
                match action {
                    0 if i < text.len() => {
                        text.remove(i);
                    }
                    1 => {
                        for (k, c) in token.chars().enumerate() {
                            text.insert(i + k, c);
                        }
                    }
                    _ => text.truncate(i.max(text.len() / 2)),
                }
            }
            let keep = cut.index(text.len() + 1).max(text.len() * 3 / 4);
            text.truncate(keep);
            text.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_or_hang(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let r = parse_bounded(text, "smoke");
        prop_assert!(r.is_ok(), "{:?}", r.err());
    }

    #[test]
    fn yamlish_strings_never_panic_or_hang(text in yamlish()) {
        let r = parse_bounded(text, "smoke");
        prop_assert!(r.is_ok(), "{:?}", r.err());
    }

    /// Mutations of a valid manifest: no panic, no hang, and whatever parses is valid (its
    /// experiment section is exactly one, which `Resolved::experiment` would otherwise panic on).
    #[test]
    fn mutated_manifests_never_panic_or_hang(text in mutated(), smoke in any::<bool>()) {
        let profile = if smoke { "smoke" } else { "paper" };
        match parse_bounded(text, profile) {
            Err(e) => prop_assert!(false, "{}", e),
            Ok(Ok(r)) => {
                prop_assert!(r.manifest.experiment().is_ok());
                prop_assert!(r.manifest.profiles.is_empty());
            }
            Ok(Err(e)) => {
                // Every error names the file.
                prop_assert!(e.to_string().starts_with("fuzz.yaml"), "{}", e);
            }
        }
    }
}

/// Peak resident memory of this process in KiB (Linux), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The "billion laughs" anchors: `bomb0` a list of 9 strings, each `bombN` a list of 9 aliases
/// of the one before (9^9 ≈ 3.9e8 strings when fully expanded), as mapping entries indented by
/// `indent` spaces.
fn alias_bomb(indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut s = format!("{pad}bomb0: &a0 [{}]\n", ["\"lol\""; 9].join(", "));
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        s.push_str(&format!("{pad}bomb{i}: &a{i} [{refs}]\n"));
    }
    s
}

/// Alias bombs as unknown top-level keys, inside a free-form profile override (parsed as a
/// YAML value, where nothing stops an expansion but the parser itself), and aliased into a
/// typed section, are all rejected quickly and without expanding the bomb.
#[test]
fn alias_bombs_are_rejected_quickly() {
    let cases = [
        (
            "as unknown top-level keys",
            format!("{}{SEED_MANIFEST}", alias_bomb(0)),
            "unknown field `bomb0`",
        ),
        (
            "inside a profile override",
            format!("{SEED_MANIFEST}  cpu:\n{}", alias_bomb(4)),
            "repetition limit exceeded",
        ),
        (
            "aliased into a typed section",
            format!(
                "{SEED_MANIFEST}  cpu:\n{}  paper:\n    training: *a8\n",
                alias_bomb(4)
            ),
            "repetition limit exceeded",
        ),
        (
            "aliased into the selected profile",
            format!(
                "{SEED_MANIFEST}  cpu:\n{}    training:\n      seeds: *a8\n",
                alias_bomb(4)
            ),
            "repetition limit exceeded",
        ),
    ];
    for (case, text, needle) in cases {
        for profile in ["smoke", "cpu", "paper"] {
            let started = Instant::now();
            let r = parse_bounded(text.clone(), profile).unwrap_or_else(|e| panic!("{case}: {e}"));
            let took = started.elapsed();
            match r {
                Ok(_) => panic!("{case} at {profile}: a bomb parsed"),
                Err(e) => assert!(e.to_string().contains(needle), "{case} at {profile}: {e}"),
            }
            assert!(
                took < Duration::from_secs(5),
                "{case} at {profile}: took {took:?}"
            );
        }
    }
    // Fully expanded, the bomb would take gigabytes; 1 GiB of peak RSS means it was expanded.
    if let Some(kib) = peak_rss_kib() {
        assert!(
            kib < 1 << 20,
            "peak RSS {kib} KiB: an alias bomb was expanded"
        );
    }
}

/// CIFAR-10 record: one label byte then the image.
const RECORD: usize = 1 + IMAGE_BYTES;

/// File contents near record boundaries (whole records ± a few bytes, or empty), random bytes.
fn cifar_file() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..3,
        prop::sample::select(vec![-2i64, -1, 0, 0, 0, 1, 7]),
        any::<u64>(),
    )
        .prop_map(|(records, delta, seed)| {
            let len = (records as i64 * RECORD as i64 + delta).max(0) as usize;
            // A cheap deterministic byte stream (xorshift), labels included.
            let mut x = seed | 1;
            (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly valid labels (0..10) at record starts, so some files load.
                    if i % RECORD == 0 && x % 4 != 0 {
                        (x % 10) as u8
                    } else {
                        x as u8
                    }
                })
                .collect()
        })
}

/// The generator's well-formed shape does load (so the `Ok` branch below is reachable): two
/// records with labels 3 and 9, and one test record.
#[test]
fn well_formed_cifar10_files_load() {
    let dir = TempDir::new("ok");
    let mut train = vec![7u8; 2 * RECORD];
    (train[0], train[RECORD]) = (3, 9);
    std::fs::write(dir.0.join("data_batch_1.bin"), &train).unwrap();
    std::fs::write(dir.0.join("test_batch.bin"), &train[RECORD..]).unwrap();
    let d = load_cifar10(&dir.0, Completeness::AllowSubset).unwrap();
    assert_eq!(d.train().labels(), &[3, 9]);
    assert_eq!(d.test().labels(), &[9]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary `data_batch_1.bin` / `test_batch.bin`: never a panic; when they load, the split
    /// sizes are the record counts and every label is a CIFAR-10 class.
    #[test]
    fn arbitrary_cifar10_files_never_panic(train in cifar_file(), test in cifar_file()) {
        let dir = TempDir::new("cifar");
        std::fs::write(dir.0.join("data_batch_1.bin"), &train).unwrap();
        std::fs::write(dir.0.join("test_batch.bin"), &test).unwrap();
        let loaded = std::panic::catch_unwind(|| load_cifar10(&dir.0, Completeness::AllowSubset));
        prop_assert!(loaded.is_ok(), "load_cifar10 panicked");
        if let Ok(Ok(d)) = loaded {
            prop_assert!(train.len() % RECORD == 0 && !train.is_empty());
            prop_assert!(test.len() % RECORD == 0 && !test.is_empty());
            prop_assert_eq!(d.train().len(), train.len() / RECORD);
            prop_assert_eq!(d.test().len(), test.len() / RECORD);
            prop_assert!(d.train().labels().iter().chain(d.test().labels()).all(|&l| l < 10));
        }
    }

    /// Fully arbitrary bytes (no structure at all) as both files.
    #[test]
    fn random_bytes_as_cifar10_never_panic(train in prop::collection::vec(any::<u8>(), 0..64), test in prop::collection::vec(any::<u8>(), 0..64)) {
        let dir = TempDir::new("bytes");
        std::fs::write(dir.0.join("data_batch_1.bin"), &train).unwrap();
        std::fs::write(dir.0.join("test_batch.bin"), &test).unwrap();
        let loaded = std::panic::catch_unwind(|| load_cifar10(&dir.0, Completeness::AllowSubset));
        prop_assert!(loaded.is_ok(), "load_cifar10 panicked");
        // Shorter than one record: never a dataset.
        prop_assert!(loaded.unwrap().is_err());
    }
}
