//! The `explr` binary: replays the paper's experiments and exposes the crates' tools.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "explr",
    version,
    about = "Replicate \"An Exponential Learning Rate Schedule for Deep Learning\""
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run experiment manifests and check them against the goldens.
    Replicate(cli::replicate::ReplicateArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replicate(args) => cli::replicate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
