//! What every experiment is handed: where and how to run ([`RunnerOptions`]), where the result
//! came from ([`Provenance`]), where progress goes ([`Progress`]) and whether to stop
//! ([`StopSignal`]). The binary fills these in; nothing below it reads the environment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Map, Value};

/// Where and how to run.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Root of the results tree (`results/`).
    pub results_dir: PathBuf,
    /// Resume runs from their last checkpoint.
    pub resume: bool,
    /// CIFAR data directory (resolved by the binary from --data-dir, $EXPLR_DATA or the cache).
    pub data_dir: Option<PathBuf>,
    /// Where every tensor lives (opened once, by [`crate::device::DeviceSpec::open`]).
    pub device: candle_core::Device,
    /// Train at most this many epochs of each training run (a short check of a long profile);
    /// the summary then covers those epochs only and drops checks that need later ones.
    /// Other experiment kinds run in full.
    pub max_epochs: Option<usize>,
    /// What the binary knows about where it runs (recorded in every `metadata.json`).
    pub provenance: Provenance,
    /// Set when the process is asked to stop (a signal before a Slurm time limit): a training
    /// run then checkpoints at the end of its epoch and stops.
    pub stop: StopSignal,
}

impl RunnerOptions {
    /// A run from scratch into `results_dir`, on the CPU, every epoch, with no data folder, no
    /// provenance and no stop signal: where tests and tools start (set the fields they need).
    pub fn on_cpu(results_dir: impl Into<PathBuf>) -> Self {
        Self {
            results_dir: results_dir.into(),
            resume: false,
            data_dir: None,
            device: candle_core::Device::Cpu,
            max_epochs: None,
            provenance: Provenance::default(),
            stop: StopSignal::default(),
        }
    }
}

/// A request to stop, polled by the trainer between epochs: set by the binary's signal handler
/// (`SIGUSR1`, `SIGTERM`), never by the library. The default is never set.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopSignal(Option<&'static AtomicBool>);

impl StopSignal {
    /// A signal that reads `flag` (a static the signal handler sets).
    pub fn new(flag: &'static AtomicBool) -> Self {
        Self(Some(flag))
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.is_some_and(|f| f.load(Ordering::SeqCst))
    }
}

/// Where a result came from, as far as the binary can tell: recorded, with what the library
/// knows (versions, device, CPU features, times), in the `metadata.json` next to every
/// manifest's summary and every training run's metrics.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// `git rev-parse HEAD` of the checkout that ran, with `+dirty` when tracked files had
    /// uncommitted changes; `None` outside a git checkout.
    pub git_revision: Option<String>,
    /// The command line.
    pub command: Vec<String>,
    /// The machine's host name (several nodes may share a results folder).
    pub host: Option<String>,
    /// The thread settings the process ran with, by name (`RAYON_NUM_THREADS`,
    /// `CANDLE_NUM_THREADS`, …), as the binary read them: f32 results depend on them only
    /// through the kernels' summation order, which the thread count never changes, but a
    /// reader comparing wall times needs them.
    pub threads: Vec<(String, Option<String>)>,
}

impl Provenance {
    /// How a lock on a results folder names this process (with its pid): the command line and
    /// the host.
    pub fn holder(&self) -> String {
        let command = self.command.join(" ");
        match &self.host {
            Some(host) => format!("{command}, on {host}"),
            None => command,
        }
    }
}

/// The metadata of a result: `fields` (what the result is) and the provenance.
pub fn metadata(opts: &RunnerOptions, fields: Map<String, Value>, wall_s: f64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let device = match opts.device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    };
    let mut threads = Map::new();
    threads.insert(
        "available".into(),
        json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    for (name, value) in &opts.provenance.threads {
        threads.insert(name.clone(), json!(value));
    }
    let mut m = fields;
    for (k, v) in [
        ("wall_s", json!(wall_s)),
        ("finished_at_unix_s", json!(now)),
        ("device", json!(device)),
        ("git_revision", json!(opts.provenance.git_revision)),
        ("command", json!(opts.provenance.command)),
        ("host", json!(opts.provenance.host)),
        (
            "versions",
            json!({
                "explr": env!("CARGO_PKG_VERSION"),
                "locked": env!("EXPLR_LOCKED_VERSIONS"),
                "rustc": env!("EXPLR_RUSTC_VERSION"),
            }),
        ),
        ("threads", Value::Object(threads)),
        ("os", json!(std::env::consts::OS)),
        ("arch", json!(std::env::consts::ARCH)),
        ("cpu_features", json!(cpu_features())),
    ] {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// The SIMD extensions the kernels may use here: f32 results depend on them (summation order).
fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        if std::arch::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        f
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Receives progress; the binary draws bars or prints lines, the library never prints.
pub trait Progress: Sync {
    /// A unit of work (a run) starts with `total` steps.
    fn start(&self, key: &str, total: u64);
    /// `done` of the run's steps are finished; `message` says how it is going.
    fn update(&self, key: &str, done: u64, message: &str);
    /// The run finished.
    fn finish(&self, key: &str, message: &str);
}

/// A [`Progress`] that ignores everything (tests).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn update(&self, _: &str, _: u64, _: &str) {}
    fn finish(&self, _: &str, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_records_the_result_then_its_provenance() {
        let opts = RunnerOptions {
            provenance: Provenance {
                git_revision: Some("0123abcd+dirty".into()),
                command: vec!["explr".into(), "replicate".into(), "e3".into()],
                host: Some("node-7".into()),
                threads: vec![
                    ("RAYON_NUM_THREADS".into(), Some("2".into())),
                    ("CANDLE_NUM_THREADS".into(), None),
                ],
            },
            ..RunnerOptions::on_cpu("results")
        };
        let mut fields = Map::new();
        fields.insert("run".into(), "texp".into());
        let m = metadata(&opts, fields, 12.5);
        assert_eq!(m["run"], "texp");
        assert_eq!(m["wall_s"], 12.5);
        assert_eq!(m["device"], "cpu");
        assert_eq!(m["git_revision"], "0123abcd+dirty");
        assert_eq!(m["command"][2], "e3");
        assert_eq!(m["host"], "node-7");
        assert_eq!(m["versions"]["explr"], env!("CARGO_PKG_VERSION"));
        // candle-core is the vendored, patched copy: a path dependency.
        let locked = m["versions"]["locked"].as_str().unwrap();
        assert!(locked.contains("candle-core 0.11.1 (path)"), "{locked}");
        assert!(locked.contains("gemm "), "{locked}");
        assert!(
            m["versions"]["rustc"]
                .as_str()
                .unwrap()
                .starts_with("rustc "),
            "{m}"
        );
        assert!(m["threads"]["available"].as_u64().unwrap() >= 1);
        // The thread settings are the binary's, passed in: the library reads no environment.
        assert_eq!(m["threads"]["RAYON_NUM_THREADS"], "2");
        assert!(m["threads"]["CANDLE_NUM_THREADS"].is_null());
        assert_eq!(m["os"], std::env::consts::OS);
    }
}
