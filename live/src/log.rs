//! The server's durable log: an append-only file of the model's storage [`Record`]s.
//!
//! The file starts with [`LOG_MAGIC`] and a format version; then each record is a frame: its
//! payload length (u32, little-endian), the CRC32 of the payload (u32, little-endian), and the
//! payload (the record in MessagePack). Frames are only ever appended.
//!
//! Reading it back ([`read_log`]) tells three endings apart:
//! - a clean end: every frame whole and its checksum right;
//! - a **torn tail**: the last frame is cut short, or is whole but fails its checksum with
//!   nothing after it — what a crash in the middle of a write leaves. It is reported and
//!   truncated ([`LogFile::open`]); the records before it are intact, and the model never
//!   acknowledged anything in it, because only a finished `fdatasync` is reported as a sync;
//! - **corruption**: a bad frame with more data after it, an impossible length, or a payload
//!   that passes its checksum but is not a record. That is never skipped or truncated: it is a
//!   hard error naming the file and the byte offset of the frame.
//!
//! [`LogFile`] is the writer. `append` encodes a frame into its own buffer; nothing reaches the
//! file until `take_through` hands the buffered frames to [`write_and_sync`], which writes them
//! and calls `fdatasync` (the driver runs it off the event loop). So a SIGKILL of the server
//! loses exactly the records the model has not been told are synced, as a power cut would.

use crate::StorageError;
use imsim_model::Record;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The first bytes of a log file.
pub const LOG_MAGIC: &[u8; 8] = b"imsimlog";
/// The frame format after the magic (u32, little-endian).
pub const LOG_FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: usize = LOG_MAGIC.len() + 4;
/// Length and checksum before each payload.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest payload a frame may claim. A record is a message (body at most the protocol's
/// `body_bytes_max`) or a few ids; a larger length is corruption, not a record.
pub const RECORD_BYTES_MAX: usize = 1 << 20;
/// How nested a record's MessagePack may be (a record nests three levels).
const NESTING_MAX: usize = 16;

/// What reading a log found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogContents {
    pub records: Vec<Record>,
    /// The byte offset of each record's frame, for errors that name a record.
    pub offsets: Vec<u64>,
    /// The length of the file's valid prefix: header and whole, checked frames.
    pub valid_bytes: u64,
    /// A torn last frame, if the file ends in one.
    pub torn: Option<TornTail>,
}

/// A partial last record: `bytes` bytes from `offset` to the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// Encodes one record as a frame.
pub fn encode_frame(record: &Record) -> Vec<u8> {
    let mut payload = Vec::new();
    // Encoding a record into a Vec cannot fail: every type in it is a plain serde type with
    // no map keys that MessagePack cannot carry.
    record
        .serialize(&mut rmp_serde::Serializer::new(&mut payload))
        .expect("a record always encodes");
    assert!(
        payload.len() <= RECORD_BYTES_MAX,
        "record beyond the frame limit"
    );
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend((payload.len() as u32).to_le_bytes());
    frame.extend(crc32fast::hash(&payload).to_le_bytes());
    frame.extend(payload);
    frame
}

fn header() -> Vec<u8> {
    let mut header = LOG_MAGIC.to_vec();
    header.extend(LOG_FORMAT_VERSION.to_le_bytes());
    header
}

/// Parses a whole log file's bytes. `path` only names the file in errors.
pub fn parse_log(path: &Path, bytes: &[u8]) -> Result<LogContents, StorageError> {
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let header = header();
    if bytes.len() < HEADER_BYTES {
        // A crash while the file was being created leaves a prefix of the header.
        if header.starts_with(bytes) {
            let torn = (!bytes.is_empty()).then(|| TornTail {
                offset: 0,
                bytes: bytes.len() as u64,
                reason: "partial file header".to_string(),
            });
            return Ok(LogContents {
                torn,
                ..LogContents::default()
            });
        }
        return Err(corrupt(0, "not an imsim log (bad magic)".to_string()));
    }
    if bytes[..LOG_MAGIC.len()] != LOG_MAGIC[..] {
        return Err(corrupt(0, "not an imsim log (bad magic)".to_string()));
    }
    if bytes[..HEADER_BYTES] != header[..] {
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        return Err(corrupt(
            8,
            format!("log format version {version}, expected {LOG_FORMAT_VERSION}"),
        ));
    }
    let mut records = Vec::new();
    let mut offsets = Vec::new();
    let mut offset = HEADER_BYTES;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let torn = |reason: &str| TornTail {
            offset: offset as u64,
            bytes: rest.len() as u64,
            reason: reason.to_string(),
        };
        if rest.len() < FRAME_HEADER_BYTES {
            return Ok(LogContents {
                records,
                offsets,
                valid_bytes: offset as u64,
                torn: Some(torn("partial frame header")),
            });
        }
        let length = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if length == 0 || length > RECORD_BYTES_MAX {
            return Err(corrupt(
                offset,
                format!("frame length {length} outside 1..={RECORD_BYTES_MAX}"),
            ));
        }
        let end = FRAME_HEADER_BYTES + length;
        if rest.len() < end {
            return Ok(LogContents {
                records,
                offsets,
                valid_bytes: offset as u64,
                torn: Some(torn("partial record")),
            });
        }
        let payload = &rest[FRAME_HEADER_BYTES..end];
        if crc32fast::hash(payload) != checksum {
            if rest.len() == end {
                return Ok(LogContents {
                    records,
                    offsets,
                    valid_bytes: offset as u64,
                    torn: Some(torn("last record fails its checksum")),
                });
            }
            return Err(corrupt(
                offset,
                format!(
                    "record fails its checksum with {} bytes after it",
                    rest.len() - end
                ),
            ));
        }
        records.push(decode_record(payload).map_err(|reason| corrupt(offset, reason))?);
        offsets.push(offset as u64);
        offset += end;
    }
    Ok(LogContents {
        records,
        offsets,
        valid_bytes: offset as u64,
        torn: None,
    })
}

fn decode_record(payload: &[u8]) -> Result<Record, String> {
    let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
    deserializer.set_max_depth(NESTING_MAX);
    let record = Record::deserialize(&mut deserializer)
        .map_err(|error| format!("checksum right but not a record: {error}"))?;
    let trailing = payload.len() - deserializer.position() as usize;
    if trailing > 0 {
        return Err(format!("{trailing} bytes after the record in its frame"));
    }
    Ok(record)
}

/// An open log: the file, the frames waiting for a sync, and how many records it holds.
pub struct LogFile {
    path: PathBuf,
    file: Arc<File>,
    /// Encoded frames not yet handed to a write, with the record number each ends at.
    pending: Vec<(u64, Vec<u8>)>,
    /// Records appended so far (in the file or pending): the next record's number.
    appended: u64,
}

impl LogFile {
    /// Opens (or creates) the log at `path`, replays it and truncates a torn tail. Returns the
    /// log, ready to append after the last whole record, and what was read.
    pub fn open(path: &Path) -> Result<(LogFile, LogContents), StorageError> {
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| StorageError::Io { path, op, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        let contents = parse_log(path, &bytes)?;
        if contents.torn.is_some() {
            file.set_len(contents.valid_bytes).map_err(io("truncate"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        // Appends go after the valid prefix (the file is only written from here, so O_APPEND
        // is not needed).
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(contents.valid_bytes))
            .map_err(io("seek"))?;
        if contents.valid_bytes == 0 {
            file.write_all(&header()).map_err(io("write"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        let log = LogFile {
            path: path.to_path_buf(),
            file: Arc::new(file),
            pending: Vec::new(),
            appended: contents.records.len() as u64,
        };
        Ok((log, contents))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records appended so far, written or pending.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Buffers a record; it reaches the file at the next `take_through` that covers it.
    pub fn append(&mut self, record: &Record) {
        self.appended += 1;
        self.pending.push((self.appended, encode_frame(record)));
    }

    /// Takes the frames of records numbered below `through` for one write: the bytes and a
    /// handle to the file, to give to [`write_and_sync`].
    pub fn take_through(&mut self, through: u64) -> (Arc<File>, Vec<u8>) {
        let count = self
            .pending
            .iter()
            .take_while(|(end, _)| *end <= through)
            .count();
        let bytes = self.pending.drain(..count).flat_map(|(_, f)| f).collect();
        (self.file.clone(), bytes)
    }
}

/// Writes `bytes` at the end of the log and waits for `fdatasync`. Blocking: the driver calls it
/// on a blocking thread. A failed sync is never retried (after a failed fsync the kernel may
/// have dropped the dirty pages; retrying would report data durable that is not).
pub fn write_and_sync(path: &Path, file: &File, bytes: &[u8]) -> Result<(), StorageError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| StorageError::Io { path, op, source }
    };
    let mut writer = file;
    writer.write_all(bytes).map_err(io("write"))?;
    file.sync_data().map_err(io("fdatasync"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imsim_model::{ClientMsgId, ClientSeq, ConvId, DeviceId, Message, Rejection, Seq, UserId};

    fn record(seq: u64) -> Record {
        Record::Committed(Message {
            conv: ConvId(1),
            seq: Seq(seq),
            sender_user: UserId(1),
            sender_device: DeviceId(1),
            client_msg_id: ClientMsgId(seq),
            client_seq: ClientSeq(seq),
            body: format!("message {seq}"),
            client_time_ms: seq,
            change: None,
        })
    }

    fn refused() -> Record {
        Record::Refused {
            conv: ConvId(2),
            sender_device: DeviceId(3),
            client_msg_id: ClientMsgId(4),
            client_seq: ClientSeq(5),
            reason: Rejection::NotMember,
        }
    }

    /// A log holding `count` records, synced.
    fn log_with(dir: &Path, count: u64) -> PathBuf {
        let path = dir.join("log");
        let (mut log, contents) = LogFile::open(&path).unwrap();
        assert!(contents.records.is_empty());
        for seq in 1..=count {
            log.append(&record(seq));
        }
        let (file, bytes) = log.take_through(count);
        write_and_sync(&path, &file, &bytes).unwrap();
        path
    }

    #[test]
    fn synced_records_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 3);
        let (mut log, contents) = LogFile::open(&path).unwrap();
        assert_eq!(contents.records, vec![record(1), record(2), record(3)]);
        assert_eq!(contents.torn, None);
        assert_eq!(log.appended(), 3);
        log.append(&refused());
        let (file, bytes) = log.take_through(4);
        write_and_sync(&path, &file, &bytes).unwrap();
        let (_, contents) = LogFile::open(&path).unwrap();
        assert_eq!(contents.records.len(), 4);
        assert_eq!(contents.records[3], refused());
    }

    #[test]
    fn appended_records_stay_in_the_buffer_until_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = LogFile::open(&path).unwrap();
        log.append(&record(1));
        log.append(&record(2));
        // A crash now (the process gone, its buffer with it) leaves no record in the file.
        assert!(LogFile::open(&path).unwrap().1.records.is_empty());
        let (file, bytes) = log.take_through(1);
        write_and_sync(&path, &file, &bytes).unwrap();
        assert_eq!(LogFile::open(&path).unwrap().1.records, vec![record(1)]);
        let (_, rest) = log.take_through(2);
        assert_eq!(rest, encode_frame(&record(2)));
    }

    #[test]
    fn a_torn_tail_is_reported_and_truncated_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 2);
        let whole = std::fs::read(&path).unwrap();
        let last = encode_frame(&record(2)).len();
        let second_starts = whole.len() - last;
        for cut in second_starts + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (_, contents) = LogFile::open(&path).unwrap();
            assert_eq!(contents.records, vec![record(1)], "cut at {cut}");
            let torn = contents.torn.expect("torn tail reported");
            assert_eq!(torn.offset, second_starts as u64);
            assert_eq!(torn.bytes, (cut - second_starts) as u64);
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                second_starts as u64
            );
            // Reopened once truncated, the log is clean.
            assert_eq!(LogFile::open(&path).unwrap().1.torn, None);
        }
    }

    #[test]
    fn a_whole_last_record_with_a_bad_checksum_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 2);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, contents) = LogFile::open(&path).unwrap();
        assert_eq!(contents.records, vec![record(1)]);
        assert!(contents.torn.unwrap().reason.contains("checksum"));
    }

    #[test]
    fn a_bad_record_in_the_middle_is_a_hard_error_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 3);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER_BYTES + encode_frame(&record(1)).len();
        bytes[second + FRAME_HEADER_BYTES + 2] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = LogFile::open(&path).err().expect("corruption refused");
        assert_eq!(
            error,
            StorageError::Corrupt {
                path: path.clone(),
                offset: second as u64,
                reason: error_reason(&error),
            }
        );
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("offset {second}")), "{text}");
        // Nothing was truncated or rewritten.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    fn error_reason(error: &StorageError) -> String {
        match error {
            StorageError::Corrupt { reason, .. } => reason.clone(),
            other => panic!("not corruption: {other}"),
        }
    }

    #[test]
    fn an_impossible_length_and_a_foreign_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = parse_log(&path, &bytes).unwrap_err();
        assert!(error.to_string().contains("frame length"), "{error}");
        let foreign = parse_log(&path, b"hello, this is my diary").unwrap_err();
        assert!(foreign.to_string().contains("bad magic"), "{foreign}");
    }

    #[test]
    fn a_checksummed_payload_that_is_not_a_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = header();
        let payload = b"\x93\x01\x02\x03";
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(crc32fast::hash(payload).to_le_bytes());
        bytes.extend(payload);
        let error = parse_log(&path, &bytes).unwrap_err();
        assert!(error.to_string().contains("not a record"), "{error}");
    }

    #[test]
    fn a_partial_header_from_a_crash_at_creation_is_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, &LOG_MAGIC[..5]).unwrap();
        let (_, contents) = LogFile::open(&path).unwrap();
        assert_eq!(contents.torn.unwrap().offset, 0);
        assert_eq!(std::fs::read(&path).unwrap(), header());
    }
}
