//! The α solver of THEORY.md §3.

use crate::error::{invalid, Result, ScheduleError};

/// The larger root α of x² − (1 + γ − λη)·x + γ = 0 (THEORY.md §3): SGD with LR `lr`,
/// weight decay `weight_decay` and momentum `momentum` on a scale-invariant loss equals SGD
/// without weight decay and LR η·α^(−2k−1) at update k.
///
/// Errors when the inputs are out of range (lr ≤ 0, weight_decay < 0, momentum ∉ [0, 1)) and
/// when no real root exists (λη > (1 − √γ)²), stating the bound.
///
/// ```
/// let a = explr_schedule::alpha(0.1, 5e-4, 0.9)?;
/// assert!((a - 0.99949772837).abs() < 1e-11);
/// # Ok::<(), explr_schedule::ScheduleError>(())
/// ```
pub fn alpha(lr: f64, weight_decay: f64, momentum: f64) -> Result<f64> {
    check_positive("lr", lr)?;
    if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
        return Err(invalid(
            "weight_decay",
            weight_decay,
            "a finite number >= 0",
        ));
    }
    if !(0.0..1.0).contains(&momentum) {
        return Err(invalid("momentum", momentum, "a number in [0, 1)"));
    }
    // THEORY.md §3: α = [(1+γ−λη) + sqrt((1+γ−λη)² − 4γ)] / 2.
    let product = lr * weight_decay;
    let bound = (1.0 - momentum.sqrt()).powi(2);
    let b = 1.0 + momentum - product;
    let disc = b * b - 4.0 * momentum;
    if product > bound || disc < 0.0 || b <= 0.0 {
        return Err(ScheduleError::NoRealAlpha {
            lr,
            weight_decay,
            momentum,
            product,
            bound,
        });
    }
    Ok((b + disc.sqrt()) / 2.0)
}

pub(crate) fn check_positive(field: &str, v: f64) -> Result<()> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(invalid(field, v, "a finite number > 0"))
    }
}
