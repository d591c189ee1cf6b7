//! Subcommands of the `explr` binary.
pub mod data;
pub mod replicate;
