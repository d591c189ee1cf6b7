//! The `explr` command line: one module per subcommand.

pub mod data;
pub mod replicate;
pub mod schedule;

/// explr: replicate Li & Arora, "An Exponential Learning Rate Schedule for Deep Learning".
#[derive(Debug, clap::Parser)]
#[command(name = "explr", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run experiment manifests and check them against the goldens.
    Replicate(replicate::ReplicateArgs),
    /// Print a learning-rate schedule per step or per epoch (CSV or JSON), optionally plot it.
    Schedule(schedule::ScheduleArgs),
    /// Dataset tools: preview, stats.
    Data(data::DataArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Replicate(args) => replicate::run(args),
        Command::Schedule(args) => {
            let stdout = std::io::stdout();
            schedule::run(&args, &mut stdout.lock())
        }
        Command::Data(args) => data::run(args),
    }
}
