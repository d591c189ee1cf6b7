//! `explr-replicate`: the runner that replays every claim of the paper from a YAML manifest.
pub mod device;
pub mod exactness;
pub mod golden;
pub mod io;
pub mod manifest;
pub mod plan;
pub mod plot;
pub mod report;
pub mod runner;
pub mod spec;
pub mod summary;
pub mod toy;
pub mod train;
pub mod training;
