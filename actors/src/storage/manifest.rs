//! The durability manifest: a small file beside sled recording how far this node's state was
//! known to be durable (applied index, vote term, last log index). sled 0.34 recovers silently from damaged
//! files by dropping everything after the damage, or starts empty when its files are
//! unreadable; comparing what sled recovered with the manifest turns that silent loss into a
//! refusal to start. The flusher rewrites the manifest at most once a second, always after an
//! fdatasync that covered the values it records, and at every explicit sync (votes, shutdown).
//! The log index catches a node that lost acknowledged entries it had not applied yet: without
//! it, such a node would rejoin with a hole in its log. A truncation lowers it first.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::apply::META_LAST_APPLIED;
use super::{decode, from_be, Db, Table};
use crate::typ::{LogId, Vote};

const FILE: &str = "MANIFEST.json";
/// The data directory format this build reads and writes. 1: the first release (sled segments
/// of 512 KiB, blob files possible). 2: 16 MiB segments, hashed long index keys, memory
/// spaces in every key, generations of state-machine trees. 3: the Attention table (atoms
/// holding attention, for ECAN steps and the focus), which a format-2 directory lacks.
pub const FORMAT: u32 = 3;
pub const KEY_VOTE: &[u8] = b"vote";
pub const KEY_LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The state machine had applied at least this far, durably.
    pub applied_index: u64,
    /// The saved vote was at least this term, durably.
    pub vote_term: u64,
    /// The log (entries or purged prefix) reached at least this index, durably.
    #[serde(default)]
    pub log_index: u64,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Reads the manifest, if the directory has one.
pub fn read(data_dir: &Path) -> io::Result<Option<Manifest>> {
    match fs::read(path(data_dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{FILE}: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the manifest durably (tmp -> fsync -> rename -> fsync of the directory).
pub fn write(data_dir: &Path, manifest: &Manifest) -> io::Result<()> {
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path(data_dir))?;
    File::open(data_dir)?.sync_all()
}

/// What sled holds now (call before a flush: after it, these values are durable). A snapshot
/// install may drop the trees it read from in between: then it reads the new ones.
pub fn observe(db: &Db) -> io::Result<Manifest> {
    observe_once(db).or_else(|_| observe_once(db))
}

fn observe_once(db: &Db) -> io::Result<Manifest> {
    let applied: Option<LogId> =
        match db.table(Table::Meta).get(META_LAST_APPLIED).map_err(io::Error::other)? {
            Some(bytes) => decode(&bytes, "last applied")?,
            None => None,
        };
    let vote: Option<Vote> = match db.raft_meta.get(KEY_VOTE).map_err(io::Error::other)? {
        Some(bytes) => Some(decode(&bytes, "vote")?),
        None => None,
    };
    let last_entry = db.log.last().map_err(io::Error::other)?.map(|(key, _)| from_be(&key));
    let purged = last_purged(db)?;
    Ok(Manifest {
        format: FORMAT,
        applied_index: applied.map(|l| l.index).unwrap_or(0),
        vote_term: vote.map(|v| v.leader_id.term).unwrap_or(0),
        log_index: last_entry.unwrap_or(0).max(purged.map(|l| l.index).unwrap_or(0)),
    })
}

/// The log's purge marker: entries up to it are gone (or going).
pub fn last_purged(db: &Db) -> io::Result<Option<LogId>> {
    match db.raft_meta.get(KEY_LAST_PURGED).map_err(io::Error::other)? {
        Some(bytes) => Ok(Some(decode(&bytes, "last purged")?)),
        None => Ok(None),
    }
}

/// Checks the directory is of this build's format (before sled opens it).
pub fn check_format(data_dir: &Path, manifest: Option<&Manifest>) -> Result<(), String> {
    match manifest {
        Some(m) if m.format == FORMAT => Ok(()),
        Some(m) => Err(format!(
            "{} has data directory format {}, and this build of cograft reads only format {FORMAT}. \
             There is no in-place migration from format {}: start this node empty (move the \
             directory away) and add it back to its cluster, or run the cograft release that \
             wrote it",
            path(data_dir).display(),
            m.format,
            m.format
        )),
        None if data_dir.join("sled").exists() => Err(format!(
            "{} holds a sled database but no {FILE}, so its format is unknown",
            data_dir.display()
        )),
        None => Ok(()),
    }
}

/// Checks that sled recovered at least what the manifest says was durable.
pub fn verify(db: &Db, manifest: &Manifest) -> Result<(), String> {
    let had_data = manifest.applied_index > 0 || manifest.vote_term > 0;
    if had_data && !db.sled.was_recovered() {
        return Err("sled found no database, but this directory held a node's data".into());
    }
    let now = observe(db).map_err(|e| e.to_string())?;
    if now.applied_index < manifest.applied_index {
        return Err(format!(
            "sled recovered the state up to index {} but index {} had been made durable: sled dropped data",
            now.applied_index, manifest.applied_index
        ));
    }
    if now.log_index < manifest.log_index {
        return Err(format!(
            "sled recovered the log up to index {} but index {} had been made durable: \
             acknowledged entries are missing",
            now.log_index, manifest.log_index
        ));
    }
    if now.vote_term < manifest.vote_term {
        return Err(format!(
            "sled recovered a vote of term {} but term {} had been saved",
            now.vote_term, manifest.vote_term
        ));
    }
    Ok(())
}
