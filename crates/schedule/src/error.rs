//! The error type of explr-schedule.

/// Everything that can go wrong in this crate. Each variant carries the offending values.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A tensor operation failed inside candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A schedule or optimizer field holds a value outside its valid range.
    #[error("`{field}` = {value} is invalid: {expected}")]
    InvalidField {
        /// The field (as spelled in the YAML spec or the constructor).
        field: String,
        /// The offending value, printed.
        value: String,
        /// What would be valid.
        expected: String,
    },
    /// The quadratic of THEORY.md §3 has no real root: the weight decay is too strong for
    /// this LR and momentum.
    #[error(
        "no exponential equivalent exists for lr = {lr}, weight_decay = {weight_decay}, \
         momentum = {momentum}: lr·weight_decay = {product} exceeds (1 − √momentum)² = {bound}; \
         lower the LR or the weight decay"
    )]
    NoRealAlpha {
        /// The learning rate η.
        lr: f64,
        /// The weight decay λ.
        weight_decay: f64,
        /// The momentum γ.
        momentum: f64,
        /// λη.
        product: f64,
        /// (1 − √γ)².
        bound: f64,
    },
    /// The §4 recursion produced a non-positive α_t (the base schedule changes too abruptly,
    /// or its LR reached zero).
    #[error(
        "the exact exponential transform breaks down at step {step}: α = {alpha}, base lr = {lr}; \
         give the base schedule a positive floor (e.g. cosine `eta_min` > 0)"
    )]
    TransformBreaksDown {
        /// The step t of α_t.
        step: u64,
        /// The offending α_t.
        alpha: f64,
        /// The base LR η_{t−1}.
        lr: f64,
    },
    /// The schedule kind has no quantity of this name (e.g. the twin scale of a plain cosine).
    #[error("a `{kind}` schedule has no {what}; {hint}")]
    NotAvailable {
        /// The schedule kind.
        kind: &'static str,
        /// The quantity asked for.
        what: &'static str,
        /// What to use instead.
        hint: &'static str,
    },
    /// A saved optimizer state does not fit this optimizer.
    #[error("optimizer state in {path} does not match: {what} is {saved} in the file but {current} here; resume with the same optimizer settings and parameters")]
    StateMismatch {
        /// The state file.
        path: std::path::PathBuf,
        /// What differs.
        what: String,
        /// Value in the file.
        saved: String,
        /// Value in this optimizer.
        current: String,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] explr_io::IoError),
    /// A file that should hold the momentum buffers is not safetensors (truncated, or another
    /// format).
    #[error("{}: not a safetensors file ({message}); it is truncated or was written by something else", path.display())]
    NotSafetensors {
        /// The file.
        path: std::path::PathBuf,
        /// What the reader found wrong.
        message: String,
    },
    /// A JSON state file is malformed.
    #[error("{} is not a valid optimizer state file", path.display())]
    Json {
        /// The file.
        path: std::path::PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A YAML schedule spec is malformed (unknown field, wrong type, unknown `kind`).
    #[error("invalid schedule spec: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ScheduleError>;

pub(crate) fn invalid(field: &str, value: impl std::fmt::Display, expected: &str) -> ScheduleError {
    ScheduleError::InvalidField {
        field: field.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}
