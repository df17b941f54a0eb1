//! The wire codec: one model [`Packet`] per UDP datagram.
//!
//! A datagram is a version byte ([`WIRE_VERSION`]) followed by the packet in MessagePack
//! (rmp-serde, structs as arrays: field names are not sent). The whole datagram is at most
//! [`DATAGRAM_BYTES_MAX`] bytes, both ways: a packet that encodes larger is refused by the sender
//! (the driver counts and drops it), a larger datagram is refused by the receiver.
//!
//! Why MessagePack and not postcard or bincode: the model's `Packet` is an internally tagged
//! serde enum (`#[serde(tag = "kind")]`, so a trace and a history read well) and `Message`
//! leaves out a `None` membership change. Decoding either needs a self-describing format;
//! postcard and bincode would need a mirror of every packet type, kept in step by hand.
//! rmp-serde is a long-maintained serde codec, binary and compact (small integers take one
//! byte), and its decoder reads a length-prefixed string or array only as far as the bytes
//! that are there, so a hostile length cannot make it allocate more than the datagram holds.
//!
//! Decoding never panics: an empty, wrong-version, oversized, malformed or truncated datagram,
//! or one with bytes after the packet, is a [`DecodeError`] (the property test at the end feeds
//! random and mutated bytes).

use imsim_model::Packet;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The format this build speaks. A datagram with another first byte is refused, not guessed at.
pub const WIRE_VERSION: u8 = 1;

/// The largest datagram sent or accepted, version byte included. Below IPv4's 65,507-byte UDP
/// payload limit, so a packet never depends on IP fragmentation limits of the path being larger.
pub const DATAGRAM_BYTES_MAX: usize = 60_000;

/// How deep MessagePack arrays and maps may nest in a datagram. A packet nests four levels at
/// most (`ReceiptState` → counts → pair → `ReadCount`); the limit keeps a crafted datagram of
/// nested arrays from recursing deep.
const NESTING_MAX: usize = 16;

/// Why a datagram was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    WrongVersion {
        found: u8,
    },
    Oversized {
        bytes: usize,
    },
    /// The payload is not a packet (truncated, wrong types, unknown kind …).
    Malformed {
        reason: String,
    },
    /// A packet, followed by bytes that belong to nothing.
    TrailingBytes {
        bytes: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty datagram"),
            DecodeError::WrongVersion { found } => {
                write!(f, "wire version {found}, expected {WIRE_VERSION}")
            }
            DecodeError::Oversized { bytes } => {
                write!(f, "datagram of {bytes} bytes, limit {DATAGRAM_BYTES_MAX}")
            }
            DecodeError::Malformed { reason } => write!(f, "malformed packet: {reason}"),
            DecodeError::TrailingBytes { bytes } => {
                write!(f, "{bytes} bytes after the packet")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a packet was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The packet encodes to more than `DATAGRAM_BYTES_MAX` bytes (a pull page of long bodies).
    Oversized {
        kind: &'static str,
        bytes: usize,
    },
    Codec {
        kind: &'static str,
        reason: String,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Oversized { kind, bytes } => write!(
                f,
                "{kind} packet encodes to {bytes} bytes, limit {DATAGRAM_BYTES_MAX}"
            ),
            EncodeError::Codec { kind, reason } => write!(f, "cannot encode {kind}: {reason}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encodes a packet as one datagram.
pub fn encode(packet: &Packet) -> Result<Vec<u8>, EncodeError> {
    let mut datagram = vec![WIRE_VERSION];
    let mut serializer = rmp_serde::Serializer::new(&mut datagram);
    packet
        .serialize(&mut serializer)
        .map_err(|error| EncodeError::Codec {
            kind: packet.kind(),
            reason: error.to_string(),
        })?;
    if datagram.len() > DATAGRAM_BYTES_MAX {
        return Err(EncodeError::Oversized {
            kind: packet.kind(),
            bytes: datagram.len(),
        });
    }
    Ok(datagram)
}

/// Decodes one datagram.
pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
    let (&version, payload) = datagram.split_first().ok_or(DecodeError::Empty)?;
    if datagram.len() > DATAGRAM_BYTES_MAX {
        return Err(DecodeError::Oversized {
            bytes: datagram.len(),
        });
    }
    if version != WIRE_VERSION {
        return Err(DecodeError::WrongVersion { found: version });
    }
    let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
    deserializer.set_max_depth(NESTING_MAX);
    let packet =
        Packet::deserialize(&mut deserializer).map_err(|error| DecodeError::Malformed {
            reason: error.to_string(),
        })?;
    let trailing = payload.len() - deserializer.position() as usize;
    if trailing > 0 {
        return Err(DecodeError::TrailingBytes { bytes: trailing });
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_model::{
        ClientMsgId, ClientSeq, ConvId, DeviceId, Head, MembershipChange, Message, PresenceEntry,
        ReadCount, Rejection, Seq, SessionId, UserId,
    };
    use proptest::prelude::*;

    fn message(seq: u64, change: Option<MembershipChange>) -> Message {
        Message {
            conv: ConvId(3),
            seq: Seq(seq),
            sender_user: UserId(1),
            sender_device: DeviceId(2),
            client_msg_id: ClientMsgId(77),
            client_seq: ClientSeq(5),
            body: "u1/d2 #5".to_string(),
            client_time_ms: 1_000_012_345,
            change,
        }
    }

    /// One packet of every shape the codec must carry: unit, struct and newtype kinds, a
    /// skipped `None`, nested vectors and tuples.
    fn samples() -> Vec<Packet> {
        vec![
            Packet::Login {
                user: UserId(1),
                device: DeviceId(2),
                token: 0x5eed_0000_0002,
                connection: 3,
            },
            Packet::Logout { connection: 3 },
            Packet::Heartbeat,
            Packet::Send {
                conv: ConvId(3),
                sender: UserId(1),
                client_msg_id: ClientMsgId(9),
                client_seq: ClientSeq(4),
                body: "hello".to_string(),
                client_time_ms: 42,
                change: Some(MembershipChange::Add(UserId(7))),
            },
            Packet::Deliver {
                message: message(12, None),
            },
            Packet::PullResponse {
                conv: ConvId(3),
                messages: vec![message(1, Some(MembershipChange::Leave)), message(2, None)],
                head: Seq(2),
            },
            Packet::LoginOk {
                session: SessionId(1 << 40 | 3),
                heads: vec![Head {
                    conv: ConvId(3),
                    seq: Seq(8),
                    floor: Seq(2),
                }],
            },
            Packet::Error {
                reason: Rejection::NotLoggedIn,
                refused: "send".to_string(),
            },
            Packet::ReceiptState {
                watermarks: vec![],
                counts: vec![(
                    ConvId(4),
                    vec![ReadCount {
                        seq: Seq(1),
                        readers: 3,
                    }],
                )],
            },
            Packet::Presence(PresenceEntry {
                user: UserId(2),
                online: true,
                version: u64::MAX,
            }),
            Packet::PresenceQuery { conv: None },
        ]
    }

    #[test]
    fn every_sample_packet_round_trips() {
        for packet in samples() {
            let datagram = encode(&packet).unwrap();
            assert_eq!(datagram[0], WIRE_VERSION);
            assert_eq!(decode(&datagram), Ok(packet.clone()), "{packet:?}");
        }
    }

    #[test]
    fn a_deliver_is_compact() {
        let datagram = encode(&Packet::Deliver {
            message: message(12, None),
        })
        .unwrap();
        // The field names are not sent: the body and about a byte per small number.
        assert!(datagram.len() < 50, "{} bytes", datagram.len());
    }

    #[test]
    fn wrong_version_empty_trailing_and_oversized_are_refused() {
        let mut datagram = encode(&Packet::Heartbeat).unwrap();
        datagram[0] = 2;
        assert_eq!(
            decode(&datagram),
            Err(DecodeError::WrongVersion { found: 2 })
        );
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        let mut trailing = encode(&Packet::Heartbeat).unwrap();
        trailing.push(0);
        assert_eq!(
            decode(&trailing),
            Err(DecodeError::TrailingBytes { bytes: 1 })
        );
        let huge = vec![WIRE_VERSION; DATAGRAM_BYTES_MAX + 1];
        assert!(matches!(decode(&huge), Err(DecodeError::Oversized { .. })));
    }

    #[test]
    fn a_packet_too_large_for_one_datagram_is_refused_by_the_sender() {
        let long = Message {
            body: "x".repeat(4_096),
            ..message(1, None)
        };
        let page = Packet::PullResponse {
            conv: ConvId(3),
            messages: vec![long; 50],
            head: Seq(50),
        };
        assert!(matches!(
            encode(&page),
            Err(EncodeError::Oversized {
                kind: "pull_response",
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_of_a_packet_is_an_error() {
        for packet in samples() {
            let datagram = encode(&packet).unwrap();
            for cut in 0..datagram.len() {
                assert!(decode(&datagram[..cut]).is_err(), "{packet:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn deeply_nested_arrays_are_refused_without_recursing() {
        // 0x91: an array of one element, 20,000 times.
        let mut datagram = vec![WIRE_VERSION];
        datagram.extend(std::iter::repeat_n(0x91, 20_000));
        assert!(matches!(
            decode(&datagram),
            Err(DecodeError::Malformed { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any bytes at all: the decoder answers, it never panics or hangs.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend(&bytes);
            let _ = decode(&versioned);
        }

        /// A real packet with a few bytes flipped, inserted or removed: never a panic, and
        /// whatever decodes encodes again to a datagram that decodes to the same packet.
        #[test]
        fn mutated_packets_never_panic(
            which in 0usize..11,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let packets = samples();
            let mut datagram = encode(&packets[which % packets.len()]).unwrap();
            for (position, byte, action) in edits {
                let at = position % (datagram.len() + 1);
                match action {
                    0 if at < datagram.len() => datagram[at] = byte,
                    1 => datagram.insert(at, byte),
                    _ if at < datagram.len() => { datagram.remove(at); }
                    _ => {}
                }
            }
            if let Ok(packet) = decode(&datagram) {
                let again = encode(&packet).unwrap();
                prop_assert_eq!(decode(&again), Ok(packet));
            }
        }
    }
}
