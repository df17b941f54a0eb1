//! Time as the model sees it: milliseconds on the local clock of the node that handles an input.
//! The model never reads a clock; every `handle_*` call is told what time it is.

use serde::{Deserialize, Serialize};

/// A point on a node's local clock, in milliseconds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    pub fn plus_ms(self, duration_ms: u64) -> Time {
        Time(self.0.saturating_add(duration_ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since_ms(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
