//! What kind of thing each recorded event is, for people reading a run (the report colours its
//! timeline by it). Decided by an exhaustive match over the event types, so a new event type does
//! not build until someone says where it belongs.

use crate::record::Entry;
use imsim_model::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Send,
    Commit,
    Ack,
    Display,
    Pull,
    Session,
    Retry,
    Buffer,
    Failure,
    Other,
}

impl Category {
    pub const ALL: [Category; 10] = [
        Category::Send,
        Category::Commit,
        Category::Ack,
        Category::Display,
        Category::Pull,
        Category::Session,
        Category::Retry,
        Category::Buffer,
        Category::Failure,
        Category::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Category::Send => "send",
            Category::Commit => "commit",
            Category::Ack => "ack",
            Category::Display => "display",
            Category::Pull => "pull",
            Category::Session => "session",
            Category::Retry => "retry",
            Category::Buffer => "buffer",
            Category::Failure => "failure",
            Category::Other => "other",
        }
    }

    /// The category of a record's event; harness events (faults, phases) are `Other`.
    pub fn of(entry: &Entry) -> Category {
        match entry {
            Entry::Protocol(event) => Category::of_event(event),
            Entry::Harness(_) => Category::Other,
        }
    }

    pub fn of_event(event: &Event) -> Category {
        match event {
            Event::SendRequested { .. } => Category::Send,
            Event::Committed { .. } => Category::Commit,
            Event::SendAcked { .. } | Event::AckSent { .. } => Category::Ack,
            Event::Displayed { .. } => Category::Display,
            Event::PullSent { .. } => Category::Pull,
            Event::LoggedIn { .. }
            | Event::SessionLost { .. }
            | Event::LoginSent { .. }
            | Event::LoginFailed { .. }
            | Event::SessionOpened { .. }
            | Event::SessionClosed { .. }
            | Event::Recovered { .. }
            | Event::RouteStale { .. }
            | Event::FailedOver { .. } => Category::Session,
            Event::Retransmitted { .. }
            | Event::RetransmitDeduplicated { .. }
            | Event::OutOfOrderDropped { .. } => Category::Retry,
            Event::HeldBack { .. }
            | Event::DuplicateDropped { .. }
            | Event::HoldBackOverflow { .. }
            | Event::CursorAdvanced { .. } => Category::Buffer,
            Event::SendRefused { .. }
            | Event::SendFailed { .. }
            | Event::Rejected { .. }
            | Event::PushAbandoned { .. } => Category::Failure,
            Event::ConversationOpened { .. }
            | Event::ReadMarked { .. }
            | Event::ReadSeen { .. }
            | Event::ReadCountSeen { .. }
            | Event::ReadersSeen { .. }
            | Event::PresenceSeen { .. }
            | Event::ReadAdvanced { .. }
            | Event::ReadIgnored { .. }
            | Event::PresenceChanged { .. } => Category::Other,
        }
    }
}
