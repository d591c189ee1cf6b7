//! The `explr` binary: a thin dispatcher over the subcommands in `cli/`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before any thread starts: see the function's docs.
    explr_nn::tune_cpu_process();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
