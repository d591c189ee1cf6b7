//! The `explr` binary: parses the command line and calls the library's command (`cli/`).

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // SAFETY: the first statement of main, before any thread starts (the function's contract).
    unsafe { explr_nn::tune_cpu_process() };
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error and its causes, as `a: b: c`.
            let mut line = format!("error: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                line.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("{line}");
            // A run stopped on request (a signal) with its work checkpointed, whichever way
            // it ran (a local pool, a Slurm task): a Slurm task's script answers this status by
            // requeueing the task.
            if e.is_stop() {
                std::process::ExitCode::from(explr_replicate::slurm::EXIT_STOPPED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
