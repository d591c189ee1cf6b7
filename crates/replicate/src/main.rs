//! The `explr` binary: a thin dispatcher over the subcommands in `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // SAFETY: the first statement of main, before any thread starts (the function's contract).
    unsafe { explr_nn::tune_cpu_process() };
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A run stopped on request (a signal) with its work checkpointed, whichever way
            // it ran (a local pool, a Slurm task): a Slurm task's script answers this status by
            // requeueing the task.
            let stopped = e.chain().any(|cause| {
                cause
                    .downcast_ref::<explr_replicate::experiments::RunError>()
                    .is_some_and(explr_replicate::experiments::RunError::is_stop)
            });
            if stopped {
                std::process::ExitCode::from(explr_replicate::slurm::EXIT_STOPPED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
