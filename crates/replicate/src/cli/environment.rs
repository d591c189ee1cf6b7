//! What only this process knows, gathered for the library: where the data is, where the
//! results come from (git, host, command line, thread settings), whether this is CI, this
//! program's path for Slurm tasks, and the signal handlers that ask runs to stop.

use std::sync::atomic::{AtomicBool, Ordering};

use explr_replicate::commands::replicate::{Console, Environment, ReplicateArgs};
use explr_replicate::commands::DataRoots;
use explr_replicate::context::{Provenance, StopSignal};

/// The environment of `explr replicate`.
pub fn of_this_process<'a>(args: &ReplicateArgs, console: &'a dyn Console) -> Environment<'a> {
    Environment {
        data_dir: data_roots().resolve(args.data_dir.as_deref()).ok(),
        provenance: Provenance {
            git_revision: git_revision(),
            // Lossy: a path argument need not be UTF-8.
            command: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            host: host_name(),
            threads: ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
                .into_iter()
                .map(|k| (k.to_string(), std::env::var(k).ok()))
                .collect(),
        },
        program: this_program(),
        ci: ci(),
        stop_on_signals: &stop_on_signals,
        console,
    }
}

/// `$EXPLR_DATA` and the per-user cache folder.
pub fn data_roots() -> DataRoots {
    DataRoots {
        explr_data: std::env::var_os("EXPLR_DATA"),
        cache: explr_data::user_cache_dir(
            std::env::var_os("XDG_CACHE_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        ),
    }
}

/// This program, as the Slurm tasks run it: relative to the current folder when it lies inside
/// it.
fn this_program() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let cwd = std::env::current_dir().ok()?;
    Some(match exe.strip_prefix(&cwd) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => exe.display().to_string(),
    })
}

/// `git rev-parse HEAD` of the current directory's checkout, `+dirty` when tracked files have
/// uncommitted changes; `None` without git or outside a checkout.
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// Set by the signal handler: stop at the end of the epoch.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// `SIGUSR1` (Slurm's warning before a time limit) and `SIGTERM` (scancel, preemption) ask the
/// training runs to checkpoint at the end of their epoch and stop; the process then exits with
/// [`explr_replicate::slurm::EXIT_STOPPED`]. (Slurm may deliver a signal twice, to the task's shell and to its
/// processes: a repeat changes nothing. `SIGINT` and `SIGKILL` still end it at once.)
fn stop_on_signals() -> StopSignal {
    for signal in [libc::SIGUSR1, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
        // sigaction struct is fully initialized (zeroed, then its mask emptied).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    StopSignal::new(&STOP)
}

/// Whether this runs under CI (`CI` set to anything but `false` or `0`, as insta reads it):
/// then a golden check writes nothing.
fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v != "false" && v != "0" && !v.is_empty())
}

/// The host name, for locks and metadata (several nodes may share a results folder).
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}
