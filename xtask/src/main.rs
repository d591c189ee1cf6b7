//! `cargo xtask`: project tasks. A thin dispatcher; each task lives in its own module.

mod fetch;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "explr project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download a dataset's official binary tarball, verify its MD5 and install it.
    FetchData {
        /// Which dataset.
        dataset: FetchDataset,
        /// Where to install (default: $EXPLR_DATA, else the per-user cache directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FetchDataset {
    Cifar10,
    Cifar100,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::FetchData { dataset, data_dir } => {
            let spec = match dataset {
                FetchDataset::Cifar10 => fetch::FetchSpec::cifar10(),
                FetchDataset::Cifar100 => fetch::FetchSpec::cifar100(),
            };
            fetch::run(&spec, data_dir.as_deref())
        }
    }
}
