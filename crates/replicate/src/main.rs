//! The `explr` binary: placeholder until the runner issue lands; `explr data` works.

mod cli {
    pub mod data;
}

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "explr", about = "Replicate Li & Arora (ICLR 2020)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dataset tools: preview, stats.
    Data(cli::data::DataArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(args) => cli::data::run(args),
    }
}
