//! The `explr` binary: replays the paper's experiments and exposes the crates' tools.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "explr",
    version,
    about = "Replicate \"An Exponential Learning Rate Schedule for Deep Learning\" (Li & Arora, ICLR 2020)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run experiment manifests and check them against the goldens.
    Replicate(cli::replicate::ReplicateArgs),
    /// Dataset tools: preview, stats.
    Data(cli::data::DataArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Replicate(args) => cli::replicate::run(args),
        Command::Data(args) => cli::data::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
