//! Snapshot files, outside sled. A file is `[version][meta length][meta (msgpack, named)][body]`
//! where the body is a zstd stream of `[table][key length][key][value length][value]` records.
//! Files are written tmp -> fsync -> rename -> fsync of the directory; only the newest is kept.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{decode, encode, Table};
use crate::typ::SnapshotMeta;

const FORMAT_VERSION: u8 = 1;
const EXTENSION: &str = "snap";

/// One table's rows, as copied out of sled.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// The snapshot directory of one node.
#[derive(Clone, Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    pub fn open(dir: PathBuf) -> io::Result<SnapshotFiles> {
        super::durable::create_dir_durably(&dir)?;
        Ok(SnapshotFiles { dir })
    }

    fn path_for(&self, meta: &SnapshotMeta) -> PathBuf {
        let (term, index) = meta.last_log_id.map(|l| (l.leader_id.term, l.index)).unwrap_or((0, 0));
        self.dir.join(format!("snapshot-{index:020}-{term:010}.{EXTENSION}"))
    }

    /// Writes a snapshot durably and removes older ones.
    pub fn write(&self, meta: &SnapshotMeta, body: &[u8]) -> io::Result<PathBuf> {
        let path = self.path_for(meta);
        let tmp = path.with_extension("tmp");
        {
            let mut file = File::create(&tmp)?;
            let meta_bytes = encode(meta);
            file.write_all(&[FORMAT_VERSION])?;
            file.write_all(&(meta_bytes.len() as u32).to_be_bytes())?;
            file.write_all(&meta_bytes)?;
            file.write_all(body)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        for old in self.list()? {
            if old != path {
                fs::remove_file(old)?;
            }
        }
        Ok(path)
    }

    /// Snapshot files present, oldest first (names sort by index).
    fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        files.sort();
        Ok(files)
    }

    /// The newest snapshot's meta and body, if any.
    pub fn read_current(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        match self.list()?.pop() {
            Some(path) => read_file(&path).map(Some),
            None => Ok(None),
        }
    }
}

fn read_file(path: &Path) -> io::Result<(SnapshotMeta, Vec<u8>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let bytes = fs::read(path)?;
    if bytes.first() != Some(&FORMAT_VERSION) || bytes.len() < 5 {
        return Err(bad("not a cograft snapshot of a known version"));
    }
    let meta_len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let body_start = 5 + meta_len;
    if bytes.len() < body_start {
        return Err(bad("truncated meta"));
    }
    let meta = decode(&bytes[5..body_start], "snapshot meta")?;
    Ok((meta, bytes[body_start..].to_vec()))
}

/// Compresses the tables' rows into a snapshot body.
pub fn encode_body(tables: &[(Table, Rows)]) -> io::Result<Vec<u8>> {
    let mut encoder = zstd::Encoder::new(Vec::new(), 3)?;
    for (table, rows) in tables {
        for (key, value) in rows {
            encoder.write_all(&[*table as u8])?;
            encoder.write_all(&(key.len() as u32).to_be_bytes())?;
            encoder.write_all(key)?;
            encoder.write_all(&(value.len() as u32).to_be_bytes())?;
            encoder.write_all(value)?;
        }
    }
    encoder.finish()
}

/// Calls `row` for every record of a snapshot body, in order.
pub fn decode_body(
    body: &[u8],
    mut row: impl FnMut(Table, Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    let mut decoder = zstd::Decoder::new(body)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot body: {what}"));
    loop {
        let mut tag = [0u8; 1];
        match decoder.read_exact(&mut tag) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let table = *Table::ALL.get(tag[0] as usize).ok_or_else(|| bad("unknown table"))?;
        let key = read_chunk(&mut decoder)?;
        let value = read_chunk(&mut decoder)?;
        row(table, key, value)?;
    }
}

fn read_chunk(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    reader.read_exact(&mut buf)?;
    Ok(buf)
}
