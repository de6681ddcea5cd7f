//! The Raft log's journal: what makes an append durable, in place of a
//! sled flush.
//!
//! sled 0.34's flush writes its buffer with `sync_file_range` (a wait for
//! the device) and then needs an `fdatasync` of its file for the drive's
//! cache and the file's size: two device round trips and a hand-off to
//! sled's I/O thread on every commit. The journal is one file written by
//! the log's flusher thread itself: an append's entries (already encoded
//! for sled) go into a record at the next offset of a file filled with
//! zeros when it was made, and one `fdatasync` makes every record written
//! since the last one durable. sled still holds the log (openraft reads it
//! there) and is flushed only when the journal turns over.
//!
//! The file (`raft.journal` in the data directory):
//! - two header slots (at 0 and at 512): magic, generation, CRC-32. The
//!   valid slot with the higher generation is the current one;
//! - records from [`DATA_START`]: generation (u64), payload length (u32),
//!   CRC-32 of the three (u32), payload: `(index u64, length u32, value)`
//!   for each entry. Integers are little-endian.
//!
//! Replay at open reads records of the current generation from
//! [`DATA_START`] until the first that is torn, fails its CRC or belongs to
//! another generation (what an earlier turn left behind), and writes their
//! entries back into sled's log tree.
//!
//! A turn ([`Journal::turn`]): sled is flushed, so everything written to it
//! so far is durable there, then the next generation's header goes into
//! the other slot and is synced; the old records are dead from then on. A
//! crash while the header is written leaves the old slot current, whose
//! records replay as the same values over a log that holds them.
//!
//! Why replaying old records over a newer sled is safe: between two turns
//! the log only gains entries at new indexes (openraft never rewrites an
//! index without truncating first), and removals are purges below a
//! snapshot. Truncating and purging therefore turn the journal before they
//! return ([`super::LogStore`]): no record from before a truncation can
//! replay over entries written after it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::kv::MemDisk;

/// The journal's file name in a node's data directory.
pub const FILE_NAME: &str = "raft.journal";
/// The journal's size, filled with zeros when it is made so that a record
/// never extends the file (an `fdatasync` that must also persist a new
/// size or newly allocated blocks costs a journal commit of the file
/// system's). sled is flushed once per this many bytes of entries.
pub const CAPACITY: u64 = 16 * 1024 * 1024;
/// The journal's size on a memory disk (simulations): small, so that a run
/// turns it often and the turns are tested too.
pub const MEMORY_CAPACITY: u64 = 64 * 1024;
/// Where the first record starts.
pub const DATA_START: u64 = 4096;
const MAGIC: &[u8; 8] = b"TGRJRNL1";
const SLOT_OFFSETS: [u64; 2] = [0, 512];
const HEADER_LEN: usize = 20;
const RECORD_HEADER_LEN: usize = 16;

/// Entries as `(index, value)`, in the order they were written.
pub type Entries = Vec<(u64, Vec<u8>)>;

/// Where a journal's bytes are: a file, or a memory disk's file.
enum Backing {
    File(File),
    Memory(MemDisk),
}

impl Backing {
    fn len(&self) -> io::Result<u64> {
        match self {
            Backing::File(file) => Ok(file.metadata()?.len()),
            Backing::Memory(disk) => disk.file_len()?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the memory disk has no journal")
            }),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Backing::File(file) => file.read_exact_at(buf, offset),
            Backing::Memory(disk) => disk.file_read(offset, buf),
        }
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Backing::File(file) => file.write_all_at(data, offset),
            Backing::Memory(disk) => disk.file_write(offset, data),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        match self {
            Backing::File(file) => file.sync_data(),
            Backing::Memory(disk) => disk.file_sync(),
        }
    }
}

/// One open journal, owned by the flusher thread.
pub struct Journal {
    file: Backing,
    generation: u64,
    offset: u64,
    capacity: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("generation", &self.generation)
            .field("offset", &self.offset)
            .finish()
    }
}

/// A record's payload under construction: entries as `(index, value)`.
#[derive(Debug, Default)]
pub struct Record {
    bytes: Vec<u8>,
}

impl Record {
    pub fn push(&mut self, index: u64, value: &[u8]) {
        self.bytes.extend_from_slice(&index.to_le_bytes());
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(value);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn header(generation: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn parse_header(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().ok()?);
    if crc32fast::hash(&bytes[..16]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(bytes[8..16].try_into().ok()?))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Journal {
    /// Opens the journal in `dir`, or makes it (a data directory from
    /// before the journal gets one; everything its log holds is in sled,
    /// flushed). Returns the journal and the entries its current
    /// generation holds, in the order written, for the caller to write
    /// back into sled before it [`Self::turn`]s.
    pub fn open(dir: &Path) -> io::Result<(Journal, Entries)> {
        Self::open_with_capacity(dir, CAPACITY)
    }

    pub(crate) fn open_with_capacity(dir: &Path, capacity: u64) -> io::Result<(Journal, Entries)> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            Self::create(dir, capacity)?;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Self::open_backing(Backing::File(file), &path.display().to_string())
    }

    /// The journal on a memory disk (made there, `MEMORY_CAPACITY` bytes,
    /// when missing).
    pub fn open_memory(disk: MemDisk) -> io::Result<(Journal, Entries)> {
        if disk.file_len()?.is_none() {
            disk.file_create(MEMORY_CAPACITY)?;
            disk.file_write(SLOT_OFFSETS[1], &header(1))?;
            disk.file_sync()?;
        }
        Self::open_backing(Backing::Memory(disk), "the memory disk's journal")
    }

    fn open_backing(file: Backing, name: &str) -> io::Result<(Journal, Entries)> {
        let len = file.len()?;
        if len < DATA_START {
            return Err(invalid(format!(
                "{name} is {len} bytes, shorter than its header"
            )));
        }
        let mut slots = [[0u8; HEADER_LEN]; 2];
        for (slot, offset) in slots.iter_mut().zip(SLOT_OFFSETS) {
            file.read_exact_at(slot, offset)?;
        }
        let generation = match (parse_header(&slots[0]), parse_header(&slots[1])) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => {
                return Err(invalid(format!(
                    "{name}: neither header is valid; the log's journal is damaged"
                )))
            }
        };
        let mut journal = Journal {
            file,
            generation,
            offset: DATA_START,
            // The file's own size: one made with another capacity keeps it.
            capacity: len,
        };
        let entries = journal.replay()?;
        Ok((journal, entries))
    }

    fn create(dir: &Path, capacity: u64) -> io::Result<()> {
        let staging = dir.join(format!("{FILE_NAME}.new"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&staging)?;
        let zeros = vec![0u8; 1024 * 1024];
        let mut at = 0;
        while at < capacity {
            let n = zeros.len().min((capacity - at) as usize);
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.write_all_at(&header(1), SLOT_OFFSETS[1])?;
        file.sync_all()?;
        std::fs::rename(&staging, dir.join(FILE_NAME))?;
        File::open(dir)?.sync_all()
    }

    /// Reads the current generation's records from the start; leaves the
    /// offset after the last good one.
    fn replay(&mut self) -> io::Result<Entries> {
        let mut entries = Vec::new();
        let mut offset = DATA_START;
        let mut head = [0u8; RECORD_HEADER_LEN];
        while offset + RECORD_HEADER_LEN as u64 <= self.capacity {
            self.file.read_exact_at(&mut head, offset)?;
            let generation = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as u64;
            let crc = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
            let end = offset + RECORD_HEADER_LEN as u64 + len;
            if generation != self.generation || end > self.capacity {
                break;
            }
            let mut payload = vec![0u8; len as usize];
            self.file
                .read_exact_at(&mut payload, offset + RECORD_HEADER_LEN as u64)?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&head[..12]);
            hasher.update(&payload);
            if hasher.finalize() != crc {
                break;
            }
            let Some(parsed) = parse_payload(&payload) else {
                // The CRC held, so this is not a torn write: refuse rather
                // than replay part of what was acknowledged.
                return Err(invalid(format!(
                    "journal record at {offset} passes its CRC but does not parse"
                )));
            };
            entries.extend(parsed);
            offset = end;
        }
        self.offset = offset;
        Ok(entries)
    }

    /// Whether a record of `payload` bytes still fits before a turn.
    pub fn fits(&self, payload: usize) -> bool {
        self.offset + (RECORD_HEADER_LEN + payload) as u64 <= self.capacity
    }

    /// Whether a record of `payload` bytes fits in a journal just turned.
    pub fn ever_fits(&self, payload: usize) -> bool {
        DATA_START + ((RECORD_HEADER_LEN + payload) as u64) <= self.capacity
    }

    /// Writes `record` at the next offset (not yet durable: [`Self::sync`]).
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        if !self.fits(record.len()) {
            return Err(io::Error::other("journal record does not fit"));
        }
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + record.len());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&out[..12]);
        hasher.update(&record.bytes);
        out.extend_from_slice(&hasher.finalize().to_le_bytes());
        out.extend_from_slice(&record.bytes);
        self.file.write_all_at(&out, self.offset)?;
        self.offset += out.len() as u64;
        Ok(())
    }

    /// Makes every record written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Starts the next generation. The caller has just made everything the
    /// records held durable elsewhere (a sled flush).
    pub fn turn(&mut self) -> io::Result<()> {
        let next = self.generation + 1;
        let slot = SLOT_OFFSETS[(next % 2) as usize];
        self.file.write_all_at(&header(next), slot)?;
        self.file.sync_data()?;
        self.generation = next;
        self.offset = DATA_START;
        Ok(())
    }

    #[cfg(test)]
    fn generation(&self) -> u64 {
        self.generation
    }
}

fn parse_payload(mut payload: &[u8]) -> Option<Entries> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        if payload.len() < 12 {
            return None;
        }
        let index = u64::from_le_bytes(payload[..8].try_into().ok()?);
        let len = u32::from_le_bytes(payload[8..12].try_into().ok()?) as usize;
        let rest = &payload[12..];
        if rest.len() < len {
            return None;
        }
        out.push((index, rest[..len].to_vec()));
        payload = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(entries: &[(u64, &[u8])]) -> Record {
        let mut r = Record::default();
        for (i, v) in entries {
            r.push(*i, v);
        }
        r
    }

    fn owned(entries: &[(u64, &[u8])]) -> Entries {
        entries.iter().map(|(i, v)| (*i, v.to_vec())).collect()
    }

    #[test]
    fn what_was_synced_replays_in_order_and_a_turn_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, replayed) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        assert!(replayed.is_empty(), "a new journal holds nothing");
        j.write(&record(&[(1, b"one"), (2, b"two")])).unwrap();
        j.write(&record(&[(3, b"three")])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, replayed) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        assert_eq!(replayed, owned(&[(1, b"one"), (2, b"two"), (3, b"three")]));
        // Records written after a reopen follow the replayed ones.
        j.write(&record(&[(4, b"four")])).unwrap();
        j.sync().unwrap();
        drop(j);
        let (mut j, replayed) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        assert_eq!(replayed.len(), 4);
        let generation = j.generation();
        j.turn().unwrap();
        j.write(&record(&[(5, b"five")])).unwrap();
        j.sync().unwrap();
        drop(j);
        // The turn's own records only: the older ones, still on disk past
        // the new record, are of the generation before.
        let (j, replayed) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        assert_eq!(j.generation(), generation + 1);
        assert_eq!(replayed, owned(&[(5, b"five")]));
    }

    #[test]
    fn a_torn_or_damaged_tail_replays_everything_before_it_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        j.write(&record(&[(1, b"kept")])).unwrap();
        let tail_at = j.offset;
        j.write(&record(&[(2, b"the last record, cut or damaged")]))
            .unwrap();
        let end = j.offset;
        j.sync().unwrap();
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let pristine = std::fs::read(&path).unwrap();
        // A write cut at every byte of the last record (what was not
        // written reads as the zeros the file was made of), then a flipped
        // byte anywhere in it.
        let mut cases: Vec<Vec<u8>> = (tail_at..end)
            .map(|cut| {
                let mut bytes = pristine.clone();
                bytes[cut as usize..end as usize].fill(0);
                bytes
            })
            .collect();
        cases.extend((tail_at..end).map(|at| {
            let mut bytes = pristine.clone();
            bytes[at as usize] ^= 0x40;
            bytes
        }));
        for (n, bytes) in cases.iter().enumerate() {
            std::fs::write(&path, bytes).unwrap();
            let (j, replayed) = Journal::open_with_capacity(dir.path(), 64 * 1024)
                .unwrap_or_else(|e| panic!("case {n}: {e}"));
            assert_eq!(replayed, owned(&[(1, b"kept")]), "case {n}");
            assert_eq!(
                j.offset, tail_at,
                "case {n}: the next record goes where the bad one was"
            );
        }
    }

    #[test]
    fn a_turn_whose_header_was_torn_leaves_the_generation_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        j.write(&record(&[(7, b"seven")])).unwrap();
        j.sync().unwrap();
        let generation = j.generation();
        let next_slot = SLOT_OFFSETS[((generation + 1) % 2) as usize] as usize;
        drop(j);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // Half of the next generation's header made it.
        bytes[next_slot..next_slot + 10].copy_from_slice(&header(generation + 1)[..10]);
        std::fs::write(&path, &bytes).unwrap();
        let (j, replayed) = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap();
        assert_eq!(j.generation(), generation);
        assert_eq!(replayed, owned(&[(7, b"seven")]));
    }

    #[test]
    fn a_journal_with_no_valid_header_is_refused_and_a_short_one_too() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap());
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..1024].fill(0xff);
        std::fs::write(&path, &bytes).unwrap();
        let error = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap_err();
        assert!(
            error.to_string().contains("neither header is valid"),
            "{error}"
        );
        std::fs::write(&path, [0u8; 100]).unwrap();
        let error = Journal::open_with_capacity(dir.path(), 64 * 1024).unwrap_err();
        assert!(
            error.to_string().contains("shorter than its header"),
            "{error}"
        );
    }

    #[test]
    fn a_full_journal_says_so_before_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open_with_capacity(dir.path(), 8 * 1024).unwrap();
        let big = vec![9u8; 3000];
        assert!(j.ever_fits(4000));
        assert!(!j.ever_fits(5000));
        j.write(&record(&[(1, &big)])).unwrap();
        assert!(!j.fits(3100));
        assert!(j.write(&record(&[(2, &big)])).is_err());
        j.turn().unwrap();
        assert!(j.fits(3100));
    }

    #[test]
    fn on_a_memory_disk_a_power_cut_keeps_what_was_synced() {
        let disk = MemDisk::new();
        let (mut j, replayed) = Journal::open_memory(disk.clone()).unwrap();
        assert!(replayed.is_empty());
        j.write(&record(&[(1, b"synced")])).unwrap();
        j.sync().unwrap();
        j.write(&record(&[(2, b"written, not synced")])).unwrap();
        drop(j);
        let after = disk.crash(0);
        let (_, replayed) = Journal::open_memory(after).unwrap();
        assert_eq!(replayed, owned(&[(1, b"synced")]));
        // A cut that kept the unsynced write too replays it.
        let disk = MemDisk::new();
        let (mut j, _) = Journal::open_memory(disk.clone()).unwrap();
        j.write(&record(&[(1, b"synced")])).unwrap();
        j.sync().unwrap();
        j.write(&record(&[(2, b"kept by luck")])).unwrap();
        drop(j);
        let (_, replayed) = Journal::open_memory(disk.crash(1)).unwrap();
        assert_eq!(replayed, owned(&[(1, b"synced"), (2, b"kept by luck")]));
    }

    #[test]
    fn on_a_memory_disk_a_failing_fsync_is_an_error_and_makes_nothing_durable() {
        let disk = MemDisk::new();
        let (mut j, _) = Journal::open_memory(disk.clone()).unwrap();
        j.write(&record(&[(1, b"one")])).unwrap();
        disk.set_faults(crate::kv::Faults {
            fail_writes: false,
            fail_flushes: true,
        });
        assert!(j.sync().is_err());
        drop(j);
        let (_, replayed) = Journal::open_memory(disk.crash(0)).unwrap();
        assert!(replayed.is_empty(), "{replayed:?}");
    }
}
