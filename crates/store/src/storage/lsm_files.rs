//! Checks the files `lsm-tree` reads as it opens a tree, before it reads
//! them. It trusts some counts and lengths in them: a damaged byte there
//! can make it allocate without bound, which aborts the process, or
//! panic. Checked here, against checksums `lsm-tree` writes and never
//! reads back at opening:
//! - the current version file, whole, against the checksum in `current`;
//! - the table of contents of each table it names, against the checksum
//!   in the table's trailer (`sfa` archives, version 1).
//!
//! Tables the version does not name (orphans a crash left, which
//! `lsm-tree` deletes) are not read. What `lsm-tree` checks itself, each
//! block's checksum as it reads the block, is left to it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_128;

use super::kv::StoreError;

/// Names the current version and holds its checksum.
const CURRENT: &str = "current";
/// Where the tables are.
const TABLES: &str = "tables";
/// An archive's trailer: magic, version, checksum type, the table of
/// contents' checksum, position and length.
const TRAILER_LEN: usize = 4 + 1 + 1 + 16 + 8 + 8;

/// Refuses the tree in `dir` if a file `lsm-tree` reads as it opens is
/// damaged; a tree not made yet (no `current`) passes.
pub(super) fn check(dir: &Path) -> Result<(), StoreError> {
    let current = match std::fs::read(dir.join(CURRENT)) {
        Ok(current) => current,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io(error)),
    };
    let damaged = |reason: String| StoreError::Corrupt {
        what: "LSM store",
        reason: format!("{}: {reason}", dir.display()),
    };
    let mut reader = Reader(&current);
    let (id, checksum, kind) = (reader.u64(), reader.u128(), reader.u8());
    let (Some(id), Some(checksum), Some(0), true) = (id, checksum, kind, reader.0.is_empty())
    else {
        return Err(damaged(format!("`{CURRENT}` is damaged")));
    };
    let name = format!("v{id}");
    let version = std::fs::read(dir.join(&name)).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => damaged(format!("its version file {name} is missing")),
        _ => io(error),
    })?;
    if xxh3_128(&version) != checksum {
        return Err(damaged(format!("its version file {name} does not match its checksum")));
    }
    let tables = tables_named(&version).map_err(|reason| damaged(format!("{name}: {reason}")))?;
    for table in tables {
        let path = dir.join(TABLES).join(table.to_string());
        let file = File::open(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => {
                damaged(format!("table {table}, named by {name}, is missing"))
            }
            _ => io(error),
        })?;
        let len = file.metadata().map_err(io)?.len();
        table_of_contents(len, |at, buf| file.read_exact_at(buf, at))
            .map_err(|reason| damaged(format!("table {table}: {reason}")))?;
    }
    Ok(())
}

/// The ids of the tables a (checked) version file names, from its
/// `tables` section: levels, runs in each, tables in each run.
fn tables_named(version: &[u8]) -> Result<Vec<u64>, String> {
    let len = version.len() as u64;
    let toc = table_of_contents(len, |at, buf| {
        let start = usize::try_from(at).map_err(std::io::Error::other)?;
        let bytes = start.checked_add(buf.len()).and_then(|end| version.get(start..end));
        buf.copy_from_slice(bytes.ok_or(std::io::ErrorKind::UnexpectedEof)?);
        Ok(())
    })?;
    let (pos, section_len) = section(&toc, b"tables")?;
    let section = usize::try_from(pos)
        .ok()
        .zip(usize::try_from(section_len).ok())
        .and_then(|(pos, len)| version.get(pos..pos.checked_add(len)?))
        .ok_or("its `tables` section lies outside it")?;
    let mut reader = Reader(section);
    let short = "its `tables` section ends early";
    let mut tables = Vec::new();
    for _ in 0..reader.u8().ok_or(short)? {
        for _ in 0..reader.u8().ok_or(short)? {
            for _ in 0..reader.u32().ok_or(short)? {
                let id = reader.u64().ok_or(short)?;
                // Checksum type, the table's checksum, its global seqno.
                reader.take(1 + 16 + 8).ok_or(short)?;
                tables.push(id);
            }
        }
    }
    Ok(tables)
}

/// The table of contents of an archive of `len` bytes read by
/// `read_at`, checked against the checksum in its trailer.
fn table_of_contents(
    len: u64,
    read_at: impl Fn(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<Vec<u8>, String> {
    let trailer_at = len.checked_sub(TRAILER_LEN as u64).ok_or("it is shorter than a trailer")?;
    let mut trailer = [0; TRAILER_LEN];
    read_at(trailer_at, &mut trailer).map_err(|e| format!("reading its trailer: {e}"))?;
    let mut reader = Reader(&trailer);
    if reader.take(4) != Some(b"SFA!") || reader.u8() != Some(1) || reader.u8() != Some(0) {
        return Err("its trailer is damaged".into());
    }
    let (checksum, toc_at, toc_len) = (reader.u128(), reader.u64(), reader.u64());
    let (Some(checksum), Some(toc_at), Some(toc_len)) = (checksum, toc_at, toc_len) else {
        return Err("its trailer is damaged".into());
    };
    if toc_at.checked_add(toc_len) != Some(trailer_at) {
        return Err("its trailer does not point at its table of contents".into());
    }
    let mut toc = vec![0; usize::try_from(toc_len).map_err(|e| e.to_string())?];
    read_at(toc_at, &mut toc).map_err(|e| format!("reading its table of contents: {e}"))?;
    if xxh3_128(&toc) != checksum {
        return Err("its table of contents does not match its checksum".into());
    }
    Ok(toc)
}

/// Where the section `name` lies in the archive whose (checked) table of
/// contents is `toc`: its position and length.
fn section(toc: &[u8], name: &[u8]) -> Result<(u64, u64), String> {
    let mut reader = Reader(toc);
    let short = "its table of contents ends early";
    if reader.take(4) != Some(b"TOC!") {
        return Err("its table of contents is damaged".into());
    }
    for _ in 0..reader.u32().ok_or(short)? {
        let (pos, len) = (reader.u64().ok_or(short)?, reader.u64().ok_or(short)?);
        let name_len = reader.u16().ok_or(short)?;
        if reader.take(usize::from(name_len)).ok_or(short)? == name {
            return Ok((pos, len));
        }
    }
    Err(format!("it has no `{}` section", String::from_utf8_lossy(name)))
}

/// Little-endian fields read off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn u128(&mut self) -> Option<u128> {
        self.array().map(u128::from_le_bytes)
    }
}

fn io(error: std::io::Error) -> StoreError {
    StoreError::Lsm(Box::new(::lsm_tree::Error::Io(error)))
}
