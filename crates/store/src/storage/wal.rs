//! The write-ahead log in front of the device's engine (D43, D56): small
//! applied batches are made durable by appending them to this file and
//! `fdatasync`ing it once per flush, instead of by the engine's own durable
//! commit (redb's: two syncs and every page the batches dirtied). The LSM
//! store has no journal of its own: this log is its only one.
//!
//! A record is `len: u32 LE`, `seq: u64 LE`, `hash: 16 bytes`, then `len`
//! bytes of batch: each write as `tag: u8` (1 put, 0 delete), `key_len:
//! u32 LE`, the key, and for a put `value_len: u32 LE` and the value. The
//! hash is BLAKE3's first 16 bytes over the other 12 header bytes and the
//! batch. Records carry the sequence number of their apply; the store
//! records in the engine, with each apply, the last one applied. On
//! opening, the records after the engine's last apply that survived are
//! applied again, in order; the log ends at the first
//! record that is short, too long or fails its hash (the torn tail of an
//! append that was never synced, so never acknowledged); one whose hash
//! holds but whose body does not decode is refused as corrupt.
//!
//! The file is allocated ahead, with zeros, in steps of [`ALLOCATE`], and
//! reused from its start after each checkpoint, never shrunk: a sync then
//! writes data alone, never the file's size (which would be one more write
//! to the disk on every sync). A round's records are numbered one after
//! another; a record of an earlier round past the current end does not
//! continue them (it is numbered at or below the checkpoint that started
//! the round), so a reopen stops there.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::kv::{Batch, StoreError};

/// A record's header: length, sequence number, hash.
const HEADER: usize = 4 + 8 + 16;
/// The largest batch encoding logged: a whole group of a first sync
/// (16,384 rows of small cells with their commits) fits. Larger batches
/// are committed to redb durably instead, so a record held in memory
/// until its flush stays bounded (D51).
pub(super) const MAX_RECORD: usize = 8 << 20;
/// Logged bytes past which the next apply commits redb durably (a
/// checkpoint) and starts the log over, which bounds the log and the time a
/// reopen spends applying it again.
pub(super) const CHECKPOINT_BYTES: u64 = 32 << 20;
/// The step by which the file is allocated ahead.
const ALLOCATE: u64 = 4 << 20;

/// The log file and the records applied but not yet written to it.
#[derive(Debug)]
pub(super) struct Log {
    file: File,
    path: PathBuf,
    /// Where the next record goes: the bytes of this round's records.
    len: u64,
    /// The file's size.
    allocated: u64,
    /// Records of applies since the last flush, in order.
    pending: Vec<u8>,
    /// The last apply on disk, in the log or in a durable redb commit.
    pub(super) synced: u64,
    /// Why the log cannot be trusted any more: a write or sync of it
    /// failed, so what the file holds past the last sync is unknown.
    failed: Option<String>,
}

impl Log {
    /// Opens (creating if needed) the log at `path` and reads the records
    /// of its last round numbered past `after` (the engine's last apply),
    /// with their sequence numbers: up to the first torn record or the
    /// first left from a round before, which is hashed but neither decoded
    /// nor read past. Records at or below `after` are hashed, not decoded
    /// (after a first sync those can be 32 MiB). The file is not changed.
    pub(super) fn open(path: &Path, after: u64) -> Result<(Self, Vec<(u64, Batch)>), StoreError> {
        let io = |source| StoreError::Sync { path: path.to_path_buf(), source };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let allocated = file.metadata().map_err(io)?.len();
        let records = read_records(&file, path, after)?;
        let log = Self {
            file,
            path: path.to_path_buf(),
            len: 0,
            allocated,
            pending: Vec::new(),
            synced: 0,
            failed: None,
        };
        Ok((log, records))
    }

    /// Stages the record of apply `seq`, to be written by the next
    /// [`Log::sync`].
    pub(super) fn stage(&mut self, seq: u64, batch: &Batch) {
        encode_record(seq, batch, &mut self.pending);
    }

    /// Whether logging a batch of `encoded` more bytes would pass
    /// [`CHECKPOINT_BYTES`].
    pub(super) fn is_full_with(&self, encoded: usize) -> bool {
        self.len + (self.pending.len() + encoded + HEADER) as u64 > CHECKPOINT_BYTES
    }

    /// Writes the staged records and `fdatasync`s the file: every apply up
    /// to `covered` is then on disk.
    pub(super) fn sync(&mut self, covered: u64) -> Result<(), StoreError> {
        self.usable()?;
        let end = self.len + self.pending.len() as u64;
        let written = self
            .allocate(end)
            .and_then(|()| write_at(&self.file, &self.pending, self.len))
            .and_then(|()| self.file.sync_data());
        self.fail_on(written)?;
        self.len = end;
        self.pending.clear();
        self.synced = covered;
        Ok(())
    }

    /// Extends the file with zeros, in steps of [`ALLOCATE`], to hold
    /// `end` bytes (synced with the records written next).
    fn allocate(&mut self, end: u64) -> std::io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        if end <= self.allocated {
            return Ok(());
        }
        let size = end.div_ceil(ALLOCATE) * ALLOCATE;
        while self.allocated < size {
            let step = (size - self.allocated).min(ZEROS.len() as u64);
            write_at(&self.file, &ZEROS[..step as usize], self.allocated)?;
            self.allocated += step;
        }
        Ok(())
    }

    /// Starts the log over after a durable redb commit that covers every
    /// apply up to `covered`: the next record goes at the file's start.
    pub(super) fn checkpointed(&mut self, covered: u64) {
        self.pending.clear();
        self.synced = covered;
        self.len = 0;
    }

    /// Puts `file` in the log file's place (a test's failing disk).
    #[cfg(test)]
    pub(super) fn replace_file(&mut self, file: File) {
        self.file = file;
    }

    /// Bytes of this round's records.
    #[cfg(test)]
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Whether records were staged since the last checkpoint.
    pub(super) fn has_records(&self) -> bool {
        self.len > 0 || !self.pending.is_empty()
    }

    /// Bytes of the file.
    pub(super) fn allocated(&self) -> u64 {
        self.allocated
    }

    /// An error if a write or sync of the log failed before.
    pub(super) fn usable(&self) -> Result<(), StoreError> {
        match &self.failed {
            None => Ok(()),
            Some(cause) => Err(StoreError::Sync {
                path: self.path.clone(),
                source: std::io::Error::other(format!("the log failed earlier: {cause}")),
            }),
        }
    }

    /// `result`, remembering a failure: after one, the file's tail is not
    /// known, so nothing more may be appended after it.
    fn fail_on(&mut self, result: std::io::Result<()>) -> Result<(), StoreError> {
        result.map_err(|source| {
            self.failed = Some(source.to_string());
            StoreError::Sync { path: self.path.clone(), source }
        })
    }
}

/// Writes all of `bytes` into `file` at `offset`.
fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// The size of `batch`'s encoding in a record.
pub(super) fn encoded_len(batch: &Batch) -> usize {
    batch
        .writes
        .iter()
        .map(|(key, value)| 1 + 4 + key.len() + value.as_ref().map_or(0, |v| 4 + v.len()))
        .sum()
}

/// Appends the record of apply `seq` writing `batch` to `out`.
fn encode_record(seq: u64, batch: &Batch, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    for (key, value) in &batch.writes {
        out.push(u8::from(value.is_some()));
        push_bytes(out, key);
        if let Some(value) = value {
            push_bytes(out, value);
        }
    }
    let len = u32::try_from(out.len() - start - HEADER).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 12].copy_from_slice(&seq.to_le_bytes());
    let hash = record_hash(&out[start..start + 12], &out[start + HEADER..]);
    out[start + 12..start + HEADER].copy_from_slice(&hash);
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn record_hash(len_and_seq: &[u8], body: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(len_and_seq);
    hasher.update(body);
    let mut hash = [0; 16];
    hash.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    hash
}

/// The records of `file` (at `path`) from its start, up to its end or the
/// first one that is torn (short, too long, or failing its hash). A record
/// whose hash holds but whose body does not decode is refused as corrupt:
/// only a bug or deliberate damage makes one, and the records after it
/// may be acknowledged writes.
fn read_records(file: &File, path: &Path, after: u64) -> Result<Vec<(u64, Batch)>, StoreError> {
    let io = |source| StoreError::Sync { path: path.to_path_buf(), source };
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut previous: Option<u64> = None;
    loop {
        let mut header = [0; HEADER];
        if !read_full(&mut reader, &mut header).map_err(io)? {
            return Ok(records);
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_RECORD {
            return Ok(records);
        }
        let mut body = vec![0; len];
        if !read_full(&mut reader, &mut body).map_err(io)?
            || record_hash(&header[..12], &body) != header[12..]
        {
            return Ok(records);
        }
        let mut seq = [0; 8];
        seq.copy_from_slice(&header[4..12]);
        let seq = u64::from_le_bytes(seq);
        // A round is the run of consecutive numbers from the file's start
        // (after a checkpoint that covers every record before it): the
        // first record that does not continue it is from a round before.
        if previous.is_some_and(|previous| seq != previous + 1) {
            return Ok(records);
        }
        previous = Some(seq);
        if seq <= after {
            continue;
        }
        let Some(batch) = decode_batch(&body) else {
            return Err(StoreError::Corrupt {
                what: "write-ahead log",
                reason: format!("record {seq} has a valid hash but does not decode"),
            });
        };
        records.push((seq, batch));
    }
}

/// Fills `buf` from `reader`: `false` if the reader ended first.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// The batch a record's body holds, `None` if it does not decode.
fn decode_batch(mut body: &[u8]) -> Option<Batch> {
    let mut batch = Batch::default();
    while let Some((&tag, rest)) = body.split_first() {
        body = rest;
        let key = take_bytes(&mut body)?;
        match tag {
            0 => batch.delete(key),
            1 => batch.put(key, take_bytes(&mut body)?),
            _ => return None,
        }
    }
    Some(batch)
}

fn take_bytes(body: &mut &[u8]) -> Option<Vec<u8>> {
    let (len, rest) = body.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let bytes = rest.get(..len)?.to_vec();
    *body = &rest[len..];
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn batch(writes: &[(&[u8], Option<&[u8]>)]) -> Batch {
        let mut batch = Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.put(key.to_vec(), value.to_vec()),
                None => batch.delete(key.to_vec()),
            }
        }
        batch
    }

    /// Appends a record of apply `seq` holding `body` as it is, under a
    /// valid hash (a body `encode_record` would never write).
    fn raw_record(seq: u64, body: &[u8], bytes: &mut Vec<u8>) {
        let mut header = [0; HEADER];
        header[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        header[4..12].copy_from_slice(&seq.to_le_bytes());
        let hash = record_hash(&header[..12], body);
        header[12..].copy_from_slice(&hash);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(body);
    }

    fn records(bytes: &[u8]) -> Vec<(u64, Batch)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, bytes).unwrap();
        Log::open(&path, 0).unwrap().1
    }

    #[test]
    fn records_read_back_as_written() {
        let mut bytes = Vec::new();
        let first = batch(&[(b"a", Some(b"1")), (b"b", None), (b"", Some(b""))]);
        let second = batch(&[(b"c", Some(&[7; 300]))]);
        encode_record(4, &first, &mut bytes);
        encode_record(5, &second, &mut bytes);
        assert_eq!(encoded_len(&first) + encoded_len(&second) + 2 * HEADER, bytes.len());
        let read = records(&bytes);
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].0, &read[0].1.writes), (4, &first.writes));
        assert_eq!((read[1].0, &read[1].1.writes), (5, &second.writes));
    }

    /// Reading stops at the first record of a round before (one that does
    /// not continue the numbers of the records before it): it is not
    /// decoded, and nothing after it is read.
    #[test]
    fn a_record_from_a_round_before_ends_the_reading() {
        let mut bytes = Vec::new();
        encode_record(8, &batch(&[(b"new", Some(b"1"))]), &mut bytes);
        // Left from before the checkpoint at 7: a body that would not
        // decode, under a valid hash.
        raw_record(3, &[9, 9, 9], &mut bytes);
        encode_record(9, &batch(&[(b"never", Some(b"2"))]), &mut bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, &bytes).unwrap();
        for after in [0, 7] {
            let (_, read) = Log::open(&path, after).unwrap();
            assert_eq!(read.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [8], "after {after}");
        }
    }

    /// Records of the round that the engine holds already (at or below
    /// `after`, as the engine may hold more than its last checkpoint) are read
    /// past without being decoded; the ones after them are returned.
    #[test]
    fn records_the_engine_holds_are_read_past_not_decoded() {
        let mut bytes = Vec::new();
        raw_record(5, &[9, 9, 9], &mut bytes);
        encode_record(6, &batch(&[(b"held", Some(b"1"))]), &mut bytes);
        encode_record(7, &batch(&[(b"new", Some(b"2"))]), &mut bytes);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, &bytes).unwrap();
        let (_, read) = Log::open(&path, 6).unwrap();
        assert_eq!(read.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [7]);
        assert!(Log::open(&path, 4).is_err(), "record 5 is decoded, and its body is corrupt");
    }

    /// A log cut anywhere in its last record, or with any byte of it
    /// changed, reads as the records before it: never a panic, never a
    /// record that was not written.
    #[test]
    fn a_torn_or_damaged_last_record_ends_the_log() {
        let mut bytes = Vec::new();
        encode_record(1, &batch(&[(b"kept", Some(b"yes"))]), &mut bytes);
        let first = bytes.len();
        encode_record(2, &batch(&[(b"torn", Some(b"no")), (b"gone", None)]), &mut bytes);
        for cut in first..bytes.len() {
            assert_eq!(records(&bytes[..cut]).len(), 1, "cut at {cut}");
        }
        for at in first..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let read = records(&damaged);
            assert_eq!(read.len(), 1, "byte {at} changed");
            assert_eq!(read[0].0, 1);
        }
        // Zeros where the file was extended but never written.
        let mut zeroed = bytes[..first].to_vec();
        zeroed.extend_from_slice(&[0; 64]);
        assert_eq!(records(&zeroed).len(), 1);
    }

    /// A length past the largest record is refused before anything is
    /// allocated for it.
    #[test]
    fn a_length_past_the_largest_record_ends_the_log() {
        let mut bytes = Vec::new();
        encode_record(1, &batch(&[(b"k", Some(b"v"))]), &mut bytes);
        bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(records(&bytes).is_empty());
    }

    /// A record whose hash holds but whose body does not decode is
    /// refused as corrupt, not taken for the log's end: the records after
    /// it may be acknowledged writes.
    #[test]
    fn a_hashed_body_that_does_not_decode_is_refused() {
        for body in [&[2u8, 0, 0, 0, 0][..], &[1, 9, 0, 0, 0, 1], &[1, 0, 0, 0, 0, 5, 0]] {
            assert!(decode_batch(body).is_none(), "{body:?}");
            let mut bytes = Vec::new();
            raw_record(7, body, &mut bytes);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            std::fs::write(&path, &bytes).unwrap();
            let error = Log::open(&path, 0).unwrap_err();
            assert!(
                matches!(error, StoreError::Corrupt { what: "write-ahead log", .. }),
                "{error}"
            );
        }
    }

    fn arbitrary_batch() -> impl Strategy<Value = Batch> {
        let write = (
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        );
        proptest::collection::vec(write, 0..20).prop_map(|writes| {
            let mut batch = Batch::default();
            for (key, value) in writes {
                match value {
                    Some(value) => batch.put(key, value),
                    None => batch.delete(key),
                }
            }
            batch
        })
    }

    proptest! {
        /// Any batches read back as written, in order, with their numbers.
        #[test]
        fn any_records_read_back_as_written(
            batches in proptest::collection::vec(arbitrary_batch(), 1..8),
            first in 1u64..1_000_000,
        ) {
            let mut bytes = Vec::new();
            for (seq, batch) in (first..).zip(&batches) {
                encode_record(seq, batch, &mut bytes);
            }
            let read = records(&bytes);
            prop_assert_eq!(read.len(), batches.len());
            for ((seq, batch), (read_seq, read_batch)) in (first..).zip(&batches).zip(&read) {
                prop_assert_eq!(seq, *read_seq);
                prop_assert_eq!(&batch.writes, &read_batch.writes);
            }
        }

        /// Whatever follows a record (a torn append, stale records, noise),
        /// opening never panics, and the record before it reads intact.
        #[test]
        fn any_bytes_after_a_record_leave_it_intact(
            batch in arbitrary_batch(),
            tail in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = Vec::new();
            encode_record(1, &batch, &mut bytes);
            bytes.extend_from_slice(&tail);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            std::fs::write(&path, &bytes).unwrap();
            // Noise cannot forge a record's hash, so it is never corrupt.
            let opened = Log::open(&path, 0);
            prop_assert!(opened.is_ok(), "{:?}", opened.err());
            let read = opened.map(|(_, read)| read).unwrap_or_default();
            prop_assert!(!read.is_empty());
            prop_assert_eq!(read[0].0, 1);
            prop_assert_eq!(&read[0].1.writes, &batch.writes);
        }
    }
}
