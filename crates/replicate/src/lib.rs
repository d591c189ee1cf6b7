//! `explr-replicate`: the runner that replays every claim of the paper from a YAML manifest.
pub mod golden;
pub mod io;
pub mod manifest;
pub mod plot;
pub mod runner;
pub mod spec;
pub mod summary;
pub mod toy;
