//! What makes sled's files durable. sled 0.34.7 fdatasyncs nothing itself on the write path: its
//! `flush()` ends with `sync_file_range`, which does not survive a power loss (sled#1452); it
//! writes items over `segment_size / 4` (and whole tree nodes when it consolidates, splits or
//! relocates a page) to `blobs/<lsn>` with `write_all` and no sync; it writes `conf` once with no
//! sync; it renames `snap.<lsn>` at open without syncing the directory. [`SledFiles::sync`]
//! closes those holes: it fsyncs every file in the sled directory and `blobs/` that it has not
//! yet synced at its current length (the data file `db` is fdatasynced by the caller through its
//! own descriptor), then fsyncs each directory whose set of entries changed.
//!
//! A file is synced again whenever its length changed since it was last synced (a blob may still
//! be growing when a pass first sees it). Each pass lists both directories and stats each entry:
//! cheap, as the sled directory holds a handful of files and `blobs/` stays empty (see the
//! segment size in `storage`).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// sled's data file, which the flusher fdatasyncs through its own descriptor.
pub const DATA_FILE: &str = "db";
const BLOBS: &str = "blobs";

/// fsyncs a directory, so the entries it gained or lost survive a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) and makes each new entry durable in its parent.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(parent)
}

/// What one [`SledFiles::sync`] did (for metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub files_synced: usize,
    pub dirs_synced: usize,
}

#[derive(Default)]
struct DirState {
    /// Entry names at the last directory fsync (`None`: never synced by us).
    entries: Option<BTreeSet<OsString>>,
    /// Length each file had when it was last fsynced.
    synced_len: HashMap<OsString, u64>,
}

/// Tracks and syncs the files sled writes beside its data file.
pub struct SledFiles {
    dirs: Vec<PathBuf>,
    state: Mutex<Vec<DirState>>,
}

impl SledFiles {
    /// Watches `sled_dir` and its `blobs/` directory.
    pub fn new(sled_dir: &Path) -> SledFiles {
        let dirs = vec![sled_dir.to_path_buf(), sled_dir.join(BLOBS)];
        let state = Mutex::new(dirs.iter().map(|_| DirState::default()).collect());
        SledFiles { dirs, state }
    }

    /// fsyncs every file not yet synced at its current length, then every directory whose
    /// entries changed since its last fsync. Files sled removes meanwhile are skipped.
    pub fn sync(&self) -> io::Result<SyncReport> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = SyncReport::default();
        for (dir, st) in self.dirs.iter().zip(state.iter_mut()) {
            let names = match list_files(dir) {
                Ok(names) => names,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for name in &names {
                if name == DATA_FILE && dir == &self.dirs[0] {
                    continue;
                }
                let path = dir.join(name);
                let len = match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if st.synced_len.get(name) == Some(&len) {
                    continue;
                }
                match File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                report.files_synced += 1;
                st.synced_len.insert(name.clone(), len);
            }
            st.synced_len.retain(|name, _| names.contains(name));
            if st.entries.as_ref() != Some(&names) {
                sync_dir(dir)?;
                report.dirs_synced += 1;
                st.entries = Some(names);
            }
        }
        Ok(report)
    }
}

/// Names of the regular files and directories in `dir`.
fn list_files(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    fs::read_dir(dir)?.map(|entry| entry.map(|e| e.file_name())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_new_and_grown_files_once_and_directories_when_entries_change() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        fs::create_dir_all(sled_dir.join(BLOBS)).unwrap();
        fs::write(sled_dir.join("conf"), b"segment_size: 524288").unwrap();
        fs::write(sled_dir.join(DATA_FILE), b"log").unwrap();
        let files = SledFiles::new(&sled_dir);
        let first = files.sync().unwrap();
        // conf and the blobs directory entry; db is the caller's; both directories are new.
        assert_eq!(first, SyncReport { files_synced: 2, dirs_synced: 2 });
        assert_eq!(files.sync().unwrap(), SyncReport::default(), "nothing changed, nothing synced");

        fs::write(sled_dir.join(BLOBS).join("4096"), b"partial").unwrap();
        assert_eq!(files.sync().unwrap(), SyncReport { files_synced: 1, dirs_synced: 1 });
        // The blob grows after it was first seen: the next pass syncs it again.
        fs::write(sled_dir.join(BLOBS).join("4096"), b"partial and the rest").unwrap();
        assert_eq!(files.sync().unwrap(), SyncReport { files_synced: 1, dirs_synced: 0 });
        assert_eq!(files.sync().unwrap(), SyncReport::default());

        fs::remove_file(sled_dir.join(BLOBS).join("4096")).unwrap();
        assert_eq!(files.sync().unwrap(), SyncReport { files_synced: 0, dirs_synced: 1 });
    }

    #[test]
    fn creating_a_directory_durably_makes_every_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a").join("b").join("c");
        create_dir_durably(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durably(&deep).unwrap();
    }
}
