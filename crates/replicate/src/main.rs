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
            if e.downcast_ref::<cli::replicate::Stopped>().is_some() {
                std::process::ExitCode::from(explr_replicate::slurm::EXIT_STOPPED)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
