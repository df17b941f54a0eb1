//! Black-box histories: the record format clients of a server we did not write can produce,
//! and the judging of imsim's invariants on it from the outside.

pub mod format;
mod index;
pub mod judge;
mod receipts;
pub mod report;
mod verdict;

pub use format::{
    ArchiveEntry, BlackBoxEvent, BlackBoxHistory, BlackBoxRecord, ClientInfo, ConversationInfo,
    ConversationKind, MarkerKind, Via,
};
pub use judge::{judge, Verdict};
