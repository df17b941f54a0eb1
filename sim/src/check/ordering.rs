//! (placeholder until the checkers land)
use super::{HistoryIndex, Violation};
use crate::history::History;
pub(super) fn check(_history: &History, _index: &HistoryIndex) -> Vec<Violation> {
    Vec::new()
}
