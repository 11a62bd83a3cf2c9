//! Snapshot files, outside sled, written and read as streams (never a whole state in memory).
//!
//! Layout: `COGRAFTS` (8 bytes) | version (1) | meta length (u32) | meta (msgpack, named) |
//! body | body length (u64) | BLAKE3 of meta and body (32). The body is one zstd stream of
//! records `[table][key length u32][key][value length u32][value]` closed by an end record
//! `[0xFF][row count u64]`, so a truncated stream is an error, never a clean end. A file is
//! checked against its checksum before anything is installed from it, and every length it
//! claims is bounded before it is allocated.
//!
//! Files are written tmp -> fsync -> rename -> fsync of the directory. The directory keeps the
//! newest snapshot; writing one removes only older ones (by index), and a file someone else
//! removed first is not an error. The state machine serialises builds and installs.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::durable::{create_dir_durably, sync_dir};
use super::{decode, encode, Table, MAX_KEY_LEN};
use crate::typ::SnapshotMeta;

const MAGIC: &[u8; 8] = b"COGRAFTS";
/// 3: with the Attention table (a version-2 file would install without it).
const FORMAT_VERSION: u8 = 3;
const EXTENSION: &str = "snap";
const END: u8 = 0xFF;
/// Largest value a snapshot record may claim (every stored value is far smaller).
const MAX_VALUE_LEN: usize = 16 << 20;
const MAX_META_LEN: usize = 1 << 20;
const TRAILER_LEN: u64 = 8 + 32;

/// The snapshot directory of one node.
#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("snapshot {}: {what}", path.display()))
}

/// `fs::remove_file` that does not mind the file being gone already.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl SnapshotFiles {
    /// Opens the directory (creating it durably) and removes what a crash left half-written.
    pub fn open(dir: PathBuf) -> io::Result<SnapshotFiles> {
        create_dir_durably(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                remove_if_present(&path)?;
            }
        }
        Ok(SnapshotFiles { dir })
    }

    fn index_of(meta: &SnapshotMeta) -> (u64, u64) {
        meta.last_log_id.map(|l| (l.index, l.leader_id.term)).unwrap_or((0, 0))
    }

    fn path_for(&self, meta: &SnapshotMeta) -> PathBuf {
        let (index, term) = Self::index_of(meta);
        self.dir.join(format!("snapshot-{index:020}-{term:010}.{EXTENSION}"))
    }

    /// A fresh temporary path in the directory (for a build or a snapshot being received).
    pub fn temp_path(&self, purpose: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.dir.join(format!("{purpose}-{nanos:x}-{}.tmp", std::process::id()))
    }

    /// Starts writing a snapshot of `meta`.
    pub fn writer(&self, meta: &SnapshotMeta) -> io::Result<SnapshotWriter> {
        SnapshotWriter::create(self.temp_path("build"), meta.clone())
    }

    /// Makes a complete file at `tmp` the snapshot of its meta: fsync, rename, fsync of the
    /// directory, then removal of older snapshots. Answers its final path.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<PathBuf> {
        File::open(tmp)?.sync_all()?;
        let path = self.path_for(meta);
        fs::rename(tmp, &path)?;
        sync_dir(&self.dir)?;
        let (index, _) = Self::index_of(meta);
        for (old_meta, old) in self.list()? {
            if Self::index_of(&old_meta).0 < index {
                remove_if_present(&old)?;
            }
        }
        Ok(path)
    }

    /// Checks a snapshot received from the leader (checksum, and that it is the snapshot
    /// `meta` names) and publishes it.
    pub fn adopt(&self, received: &Path, meta: &SnapshotMeta) -> io::Result<PathBuf> {
        let inside = verify(received).inspect_err(|_| {
            let _ = remove_if_present(received);
        })?;
        if inside.snapshot_id != meta.snapshot_id || inside.last_log_id != meta.last_log_id {
            return Err(bad(
                received,
                format!("holds snapshot {} but the leader sent {}", inside.snapshot_id, meta.snapshot_id),
            ));
        }
        self.publish(received, meta)
    }

    /// The snapshots present with their meta, oldest first (names sort by index). Files that
    /// cannot be read are skipped with a warning.
    fn list(&self) -> io::Result<Vec<(SnapshotMeta, PathBuf)>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        files.sort();
        let mut out = Vec::with_capacity(files.len());
        for path in files {
            match read_meta(&path) {
                Ok(meta) => out.push((meta, path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "ignoring an unreadable snapshot file"),
            }
        }
        Ok(out)
    }

    /// The newest snapshot's meta and path, if any.
    pub fn current(&self) -> io::Result<Option<(SnapshotMeta, PathBuf)>> {
        Ok(self.list()?.pop())
    }
}

/// Bytes a snapshot writer lets pile up in the page cache before it syncs them: one fsync of
/// a whole snapshot at the end would stall the log's fdatasyncs on the same disk for seconds.
const SYNC_EVERY: u64 = 8 << 20;

/// Hashes and counts what passes through to the file, syncing it every [`SYNC_EVERY`] bytes.
struct Hashing {
    inner: BufWriter<File>,
    hasher: blake3::Hasher,
    bytes: u64,
    synced: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes - self.synced >= SYNC_EVERY {
            self.inner.flush()?;
            self.inner.get_ref().sync_data()?;
            self.synced = self.bytes;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A snapshot being written, row by row.
pub struct SnapshotWriter {
    path: PathBuf,
    meta: SnapshotMeta,
    /// `None` once finished.
    encoder: Option<zstd::Encoder<'static, Hashing>>,
    rows: u64,
}

impl SnapshotWriter {
    fn create(path: PathBuf, meta: SnapshotMeta) -> io::Result<SnapshotWriter> {
        let mut file = BufWriter::new(File::create(&path)?);
        let meta_bytes = encode(&meta);
        file.write_all(MAGIC)?;
        file.write_all(&[FORMAT_VERSION])?;
        file.write_all(&(meta_bytes.len() as u32).to_be_bytes())?;
        file.write_all(&meta_bytes)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&meta_bytes);
        let encoder = zstd::Encoder::new(Hashing { inner: file, hasher, bytes: 0, synced: 0 }, 3)?;
        Ok(SnapshotWriter { path, meta, encoder: Some(encoder), rows: 0 })
    }

    fn encoder(&mut self) -> &mut zstd::Encoder<'static, Hashing> {
        self.encoder.as_mut().expect("a snapshot writer is used only until it is finished")
    }

    pub fn row(&mut self, table: Table, key: &[u8], value: &[u8]) -> io::Result<()> {
        let encoder = self.encoder();
        encoder.write_all(&[table as u8])?;
        encoder.write_all(&(key.len() as u32).to_be_bytes())?;
        encoder.write_all(key)?;
        encoder.write_all(&(value.len() as u32).to_be_bytes())?;
        encoder.write_all(value)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the body, writes the trailer and publishes the file in `files`.
    pub fn finish(mut self, files: &SnapshotFiles) -> io::Result<PathBuf> {
        let rows = self.rows;
        let mut encoder = self.encoder.take().expect("finished once");
        encoder.write_all(&[END])?;
        encoder.write_all(&rows.to_be_bytes())?;
        let Hashing { inner: mut file, hasher, bytes, .. } = encoder.finish()?;
        file.write_all(&bytes.to_be_bytes())?;
        file.write_all(hasher.finalize().as_bytes())?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        files.publish(&self.path, &self.meta)
    }
}

impl Drop for SnapshotWriter {
    /// An unfinished writer leaves no file behind (`finish` renamed it already).
    fn drop(&mut self) {
        let _ = remove_if_present(&self.path);
    }
}

/// The header of a snapshot file: its meta and where the body starts.
fn read_header(path: &Path, file: &mut impl Read) -> io::Result<(SnapshotMeta, Vec<u8>)> {
    let mut head = [0u8; 13];
    file.read_exact(&mut head).map_err(|_| bad(path, "shorter than its header"))?;
    if &head[..8] != MAGIC || head[8] != FORMAT_VERSION {
        return Err(bad(path, "not a cograft snapshot of this format"));
    }
    let meta_len = u32::from_be_bytes([head[9], head[10], head[11], head[12]]) as usize;
    if meta_len > MAX_META_LEN {
        return Err(bad(path, format!("claims a {meta_len}-byte meta")));
    }
    let mut meta_bytes = vec![0u8; meta_len];
    file.read_exact(&mut meta_bytes).map_err(|_| bad(path, "truncated meta"))?;
    Ok((decode(&meta_bytes, "snapshot meta")?, meta_bytes))
}

fn read_meta(path: &Path) -> io::Result<SnapshotMeta> {
    let mut file = BufReader::new(File::open(path)?);
    Ok(read_header(path, &mut file)?.0)
}

/// Checks a file end to end (header, body length, BLAKE3) and answers its meta.
pub fn verify(path: &Path) -> io::Result<SnapshotMeta> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    let mut reader = BufReader::new(&mut file);
    let (meta, meta_bytes) = read_header(path, &mut reader)?;
    let body_start = 13 + meta_bytes.len() as u64;
    if total < body_start + TRAILER_LEN {
        return Err(bad(path, "shorter than its trailer"));
    }
    let body_len = total - body_start - TRAILER_LEN;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&meta_bytes);
    let copied = io::copy(&mut (&mut reader).take(body_len), &mut hasher)?;
    let mut trailer = [0u8; TRAILER_LEN as usize];
    reader.read_exact(&mut trailer)?;
    let claimed_len = u64::from_be_bytes(trailer[..8].try_into().expect("8 bytes"));
    if copied != body_len || claimed_len != body_len {
        return Err(bad(path, format!("body is {body_len} bytes but the trailer says {claimed_len}")));
    }
    if hasher.finalize().as_bytes() != &trailer[8..] {
        return Err(bad(path, "checksum mismatch: the file is damaged or incomplete"));
    }
    Ok(meta)
}

/// Calls `row` for every record of a verified snapshot file, in order; answers the row count.
pub fn read_rows(
    path: &Path,
    mut row: impl FnMut(Table, Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    let (_, meta_bytes) = read_header(path, &mut BufReader::new(&mut file))?;
    let body_start = 13 + meta_bytes.len() as u64;
    file.seek(SeekFrom::Start(body_start))?;
    let body = BufReader::new(file).take(total.saturating_sub(body_start + TRAILER_LEN));
    let mut decoder = zstd::Decoder::new(body)?;
    let mut rows = 0u64;
    loop {
        let mut tag = [0u8; 1];
        decoder.read_exact(&mut tag).map_err(|_| bad(path, "the body ends before its end record"))?;
        if tag[0] == END {
            let mut count = [0u8; 8];
            decoder.read_exact(&mut count).map_err(|_| bad(path, "truncated end record"))?;
            let count = u64::from_be_bytes(count);
            if count != rows {
                return Err(bad(path, format!("holds {rows} rows but its end record says {count}")));
            }
            return Ok(rows);
        }
        let table = *Table::ALL.get(tag[0] as usize).ok_or_else(|| bad(path, "unknown table"))?;
        let key = read_chunk(&mut decoder, MAX_KEY_LEN).map_err(|e| bad(path, e))?;
        let value = read_chunk(&mut decoder, MAX_VALUE_LEN).map_err(|e| bad(path, e))?;
        row(table, key, value)?;
        rows += 1;
    }
}

fn read_chunk(reader: &mut impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).map_err(|_| "truncated record".to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(format!("a record claims {len} bytes, more than the {limit} allowed"));
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).map_err(|_| "truncated record".to_string())?;
    Ok(buf)
}
