//! Subcommands of the `explr` binary.
pub mod replicate;
