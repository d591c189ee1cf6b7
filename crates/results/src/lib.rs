//! `explr-results`: what a replayed manifest leaves behind, and how it is judged and shown.
//!
//! - [`summary`]: a manifest's [`summary::Summary`] (its checks and verdict), rounded for its
//!   golden;
//! - [`golden`]: the insta-format goldens a summary is checked against (and pending snapshots);
//! - [`index`]: `results/index.json`, the verdict of every manifest at every profile;
//! - [`report`]: the generated `docs/REPLICATION*.md` and the recorded wall times;
//! - [`plot`]: the SVG figures ([`plot::Chart`]).
//!
//! ```
//! use std::path::Path;
//!
//! let path = explr_results::golden::golden_path(Path::new("golden"), "e3", "smoke");
//! assert_eq!(path, Path::new("golden/e3.smoke.snap"));
//! ```

pub mod golden;
pub mod index;
pub mod plot;
pub mod report;
pub mod summary;
