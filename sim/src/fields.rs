//! Checks of one scenario value, each error naming the field and the allowed range.

/// `value` must lie in `min..=max`.
pub(crate) fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!(
            "{field} = {value} is out of range: it must be between {min} and {max}"
        ));
    }
    Ok(())
}

/// `value` must be a probability.
pub(crate) fn check_probability(field: &str, value: f64) -> Result<(), String> {
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "{field} = {value} is not a probability: it must be between 0 and 1"
        ));
    }
    Ok(())
}
