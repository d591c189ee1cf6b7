//! The `explr` command line: clap parses the arguments into the library's typed requests
//! ([`explr_replicate::commands`]); this module adds what only a process knows (the terminal,
//! the environment, signals) and calls the command's entry point.

mod environment;
mod terminal;

use explr_replicate::commands::{data, replicate, schedule};
use explr_replicate::error::CommandError;

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
pub fn run(cli: Cli) -> Result<(), CommandError> {
    match cli.command {
        Command::Replicate(args) => {
            let console = terminal::Terminal::new();
            let env = environment::of_this_process(&args, &console);
            replicate::run(&args, &env)
        }
        Command::Schedule(args) => {
            end_quietly_on_a_closed_pipe();
            let stdout = std::io::stdout();
            schedule::run(&args, &mut stdout.lock())
        }
        Command::Data(args) => {
            end_quietly_on_a_closed_pipe();
            let stdout = std::io::stdout();
            data::run(args, &environment::data_roots(), &mut stdout.lock())
        }
    }
}

/// The subcommands that print tables (`schedule`, `data`) end as `cat` or `seq` do when the
/// reader of their output goes away (`explr schedule … | head -3`): silently, by `SIGPIPE`'s
/// default action, which Rust's runtime replaces with an error on every write. (`replicate`
/// keeps the runtime's choice: it writes files and talks to child processes, and a failed
/// write there is an error to report.)
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
