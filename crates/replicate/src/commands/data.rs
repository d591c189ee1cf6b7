//! `explr data preview|stats`: look at a dataset before training on it.

use std::io::Write;
use std::path::PathBuf;

use crate::commands::DataRoots;
use crate::error::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use explr_data::{load_dataset, preview_png, Completeness, Dataset, DatasetName, SyntheticConfig};

/// `explr data ...`
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Write a PNG grid of the first images with their class names.
    Preview {
        #[command(flatten)]
        source: Source,
        /// Output PNG file.
        #[arg(long)]
        out: PathBuf,
        /// Number of images.
        #[arg(long, default_value_t = 64)]
        count: usize,
        /// Images per row.
        #[arg(long, default_value_t = 8)]
        columns: usize,
    },
    /// Print split sizes and per-channel mean/std of the [0, 1]-scaled pixels.
    Stats {
        #[command(flatten)]
        source: Source,
    },
}

#[derive(Args, Debug)]
struct Source {
    /// cifar10, cifar100, cifar100-coarse or synthetic.
    #[arg(long)]
    dataset: String,
    /// Directory holding the data (default: $EXPLR_DATA, else the per-user cache directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Which split.
    #[arg(long, value_enum, default_value_t = SplitName::Train)]
    split: SplitName,
    /// Seed of the synthetic dataset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitName {
    Train,
    Test,
}

fn load(source: &Source, roots: &DataRoots) -> Result<Dataset> {
    let name: DatasetName = source.dataset.parse()?;
    let root = roots.resolve(source.data_dir.as_deref())?;
    let synthetic = SyntheticConfig {
        seed: source.seed,
        ..Default::default()
    };
    load_dataset(name, &root, Completeness::AllowSubset, &synthetic)
        .with_context(|| format!("loading {} from {}", source.dataset, root.display()))
}

/// Runs `explr data ...`, writing what it reports to `report`.
pub fn run(args: DataArgs, roots: &DataRoots, report: &mut dyn Write) -> Result<()> {
    match args.command {
        DataCommand::Preview {
            source,
            out,
            count,
            columns,
        } => {
            // The preview is a PNG: another extension would name a file of the wrong format.
            if !out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            {
                crate::error::bail!(
                    "--out {}: the preview is written as PNG; give a file name ending in .png",
                    out.display()
                );
            }
            let data = load(&source, roots)?;
            let split = match source.split {
                SplitName::Train => data.train(),
                SplitName::Test => data.test(),
            };
            let png = preview_png(split, data.class_names(), count, columns)?;
            explr_io::write_atomic(&out, &png)?;
            writeln!(
                report,
                "wrote {} ({} {:?} images of {})",
                out.display(),
                count.min(split.len()),
                source.split,
                data.name()
            )?;
        }
        DataCommand::Stats { source } => {
            let data = load(&source, roots)?;
            writeln!(
                report,
                "{}: {} train, {} test images, {} classes",
                data.name(),
                data.train().len(),
                data.test().len(),
                data.num_classes()
            )?;
            for (name, split) in [("train", data.train()), ("test", data.test())] {
                let m = split.channel_means();
                let s = split.channel_stds();
                writeln!(
                    report,
                    "{name}: mean R {:.4} G {:.4} B {:.4}; std R {:.4} G {:.4} B {:.4}",
                    m[0], m[1], m[2], s[0], s[1], s[2]
                )?;
            }
        }
    }
    Ok(())
}
