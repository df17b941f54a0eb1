//! Identifiers. Every id is a plain newtype so the compiler keeps a `Seq` from being used as a
//! `ClientSeq`; all are `Ord` because the model only uses ordered maps (iteration order reaches
//! the wire and the history, and must not depend on a hasher's seed).

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A person; owns one or more devices.
    UserId(u32), "u"
);
id_type!(
    /// One device (one app install) of one user. Unique across all users.
    DeviceId(u32), "d"
);
id_type!(
    /// A conversation: a 1:1 pair or a group.
    ConvId(u32), "c"
);
id_type!(
    /// The server's position of a message in a conversation's timeline. The first message is
    /// seq 1; `Seq(0)` means "before the first message", so a fresh cursor is `Seq(0)`.
    Seq(u64), "#"
);
id_type!(
    /// The sending device's name for a message, unique per device.
    ClientMsgId(u64), "m"
);
id_type!(
    /// Per device and conversation: 1, 2, 3 … in the order the user pressed send.
    ClientSeq(u64), "cs"
);
id_type!(
    /// A logged-in session, handed out by the server.
    SessionId(u64), "s"
);
id_type!(
    /// A transport address, opaque to the model (the simulator maps it to a socket address).
    Address(u32), "a"
);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl ClientSeq {
    pub fn next(self) -> ClientSeq {
        ClientSeq(self.0 + 1)
    }
}
