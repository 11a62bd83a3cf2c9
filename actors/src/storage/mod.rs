//! Durable storage on one sled database per node: the Raft log and vote (`log_store`), the
//! state machine (`state_machine`, applying through `graph`), file snapshots (`snapshot`) and
//! the read-side actor (`actor`). This module opens the database and names its trees.

pub mod actor;
pub mod apply;
pub mod content;
pub mod durable;
pub mod events;
pub mod keys;
pub mod log_purge;
pub mod log_store;
pub mod manifest;
pub mod metrics;
pub mod reached;
pub mod reads;
pub mod snapshot;
pub mod staged;
pub mod state_machine;
pub mod view;
pub mod whole_state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::typ;

pub use events::StateEvent;
pub use log_store::LogStore;
pub use state_machine::{StateMachine, StateMachineCore};

/// sled's segment size: its largest, 16 MiB. sled writes any page whose encoding exceeds a
/// quarter of a segment to a separate blob file, and blobs are a durability hazard (sled never
/// syncs them, and its own data file can reach the disk pointing at one that did not: see
/// `durable`). At 16 MiB the threshold is 4 MiB, and the largest page cograft can make is far
/// below it: a leaf splits above 16 entries and an index node above 256 children, every
/// value is bounded by the log entry limit (100 KiB) and every key by [`MAX_KEY_LEN`], so a
/// leaf holds at most ~1.7 MiB and an index node ~0.2 MiB. `storage::tests` checks that a
/// workload of near-limit entries writes no blob; [`durable::SledFiles`] still syncs any.
pub const SLED_SEGMENT_SIZE: usize = 16 << 20;

/// Rows removed per sled batch when a tree or a log prefix is emptied: sled's batches take its
/// one process-wide write lock, so long ones would stall appends and the flusher.
pub const REMOVE_CHUNK: usize = 1000;

/// The longest key cograft writes into any tree (index keys hash long names; see `graph`).
pub const MAX_KEY_LEN: usize = 1024;

/// Raft log entries, keyed by big-endian index.
pub const TREE_LOG: &str = "log";
/// Vote, last purged log id, committed log id.
pub const TREE_RAFT_META: &str = "raft_meta";

/// The state machine's trees, in the order a snapshot and the digest walk them (`keys` has
/// the layout of each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// last_applied, membership, counters, clock, maintenance policy.
    Meta,
    /// id -> Atom.
    Atoms,
    /// space, type, name -> node id.
    NodeIndex,
    /// space, type, outgoing ids -> link id.
    LinkIndex,
    /// space, type, id -> (): atoms of a type in id order (lists, space deletion).
    TypeIndex,
    /// target id ++ link id -> ().
    Incoming,
    /// atom id ++ key -> JSON value.
    Values,
    /// space -> SpaceInfo.
    Spaces,
    /// space, id -> Session.
    Sessions,
    /// deadline ms ++ session id -> space: when a session next changes status by itself.
    SessionDeadlines,
    /// space, subject, id -> Observation.
    Observations,
    /// id -> recorded ms, space, subject: every observation in time order (age retention).
    ObservationOrder,
    /// space, subject -> SubjectTotals.
    SubjectTotals,
    /// space, idempotency key -> (index, result).
    Idempotency,
    /// applied index ++ space, key -> (): eviction order of the idempotency table.
    IdempotencyOrder,
    /// space, id -> STI: every atom whose attention value is not zero (ECAN steps, the focus).
    Attention,
    /// space, id, model -> the atom's vector under that model (f32, little-endian).
    Embeddings,
    /// space, model -> ModelVectors: each model's dimension and vector count in a space.
    EmbeddingModels,
}

impl Table {
    /// A snapshot tags each row with the table's position here: new tables go at the end.
    pub const ALL: [Table; 18] = [
        Table::Meta,
        Table::Atoms,
        Table::NodeIndex,
        Table::LinkIndex,
        Table::TypeIndex,
        Table::Incoming,
        Table::Values,
        Table::Spaces,
        Table::Sessions,
        Table::SessionDeadlines,
        Table::Observations,
        Table::ObservationOrder,
        Table::SubjectTotals,
        Table::Idempotency,
        Table::IdempotencyOrder,
        Table::Attention,
        Table::Embeddings,
        Table::EmbeddingModels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "sm_meta",
            Table::Atoms => "atoms",
            Table::NodeIndex => "node_index",
            Table::LinkIndex => "link_index",
            Table::TypeIndex => "type_index",
            Table::Incoming => "incoming",
            Table::Values => "values",
            Table::Spaces => "spaces",
            Table::Sessions => "sessions",
            Table::SessionDeadlines => "session_deadlines",
            Table::Observations => "observations",
            Table::ObservationOrder => "observation_order",
            Table::SubjectTotals => "subject_totals",
            Table::Idempotency => "idempotency",
            Table::IdempotencyOrder => "idempotency_order",
            Table::Attention => "attention",
            Table::Embeddings => "embeddings",
            Table::EmbeddingModels => "embedding_models",
        }
    }

    /// Whether the table is user-visible data (hashed by the digest). Meta (clock, applied
    /// index) and the idempotency tables are bookkeeping.
    pub fn is_data(self) -> bool {
        !matches!(self, Table::Meta | Table::Idempotency | Table::IdempotencyOrder)
    }
}

/// In the raft meta tree: the generation of the state machine's trees now in use.
const KEY_GENERATION: &[u8] = b"sm_generation";

/// One generation of the state machine's trees (`atoms@3`, `values@3`, ...). A snapshot is
/// installed into the next generation and then swapped in at once, so readers see the old
/// state or the new one, never a mix, and a crash mid-install leaves the old one intact.
pub struct Tables {
    pub generation: u64,
    trees: Vec<sled::Tree>,
}

impl Tables {
    pub fn get(&self, table: Table) -> &sled::Tree {
        &self.trees[table as usize]
    }

    fn tree_name(table: Table, generation: u64) -> String {
        format!("{}@{generation}", table.name())
    }
}

/// The open sled database with every tree cograft uses.
#[derive(Clone)]
pub struct Db {
    pub dir: PathBuf,
    pub sled: sled::Db,
    pub log: sled::Tree,
    pub raft_meta: sled::Tree,
    tables: Arc<std::sync::RwLock<Arc<Tables>>>,
    /// sled's data file, opened once for fdatasync.
    data_file: Arc<std::fs::File>,
    /// The files sled writes beside it (blobs, conf, snap.*), synced after each flush.
    files: Arc<durable::SledFiles>,
    /// The index of the newest snapshot file published (durable, redone at open if needed).
    published_snapshot: Arc<std::sync::atomic::AtomicU64>,
    /// Set while a snapshot from the leader is being received or installed.
    receiving_snapshot: Arc<std::sync::atomic::AtomicBool>,
    /// The first failed sync, kept: Linux reports a writeback error once per file, so a sync
    /// after a failed one may succeed although the data it should cover was lost.
    sync_failed: Arc<std::sync::Mutex<Option<String>>>,
    /// Held while older generations of trees are dropped in the background (one at a time).
    dropping: Arc<std::sync::Mutex<()>>,
}

impl Db {
    /// Opens (or creates) the database under `dir/sled`. Corruption is reported as
    /// [`Error::Corrupted`] naming the directory and the recovery, and so is a panic inside
    /// sled while it recovers (sled 0.34 panics on some damaged directories instead of
    /// answering an error); nothing is wiped.
    pub fn open(dir: &Path) -> Result<Db> {
        Db::open_with(dir, SLED_SEGMENT_SIZE, StorageOptions::default().cache_capacity_bytes)
    }

    fn open_with(dir: &Path, segment_size: usize, cache_capacity: u64) -> Result<Db> {
        let path = dir.join("sled");
        let corrupted = |cause: String| Error::Corrupted { dir: path.clone(), cause };
        // sled creates its directory without syncing the one that holds it.
        durable::create_dir_durably(&path)
            .map_err(|e| Error::Storage { dir: path.clone(), cause: e.to_string() })?;
        let config = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::LowSpace)
            .segment_size(segment_size)
            .cache_capacity(cache_capacity);
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())).map_err(|panic| {
                corrupted(format!("sled panicked while opening it: {}", panic_message(&panic)))
            })?;
        let sled = opened.map_err(|e| match e {
            sled::Error::Corruption { .. } => corrupted(e.to_string()),
            other => Error::Storage { dir: path.clone(), cause: other.to_string() },
        })?;
        let storage_err = |e: sled::Error| Error::Storage { dir: path.clone(), cause: e.to_string() };
        let io_err = |e: std::io::Error| Error::Storage { dir: path.clone(), cause: e.to_string() };
        let log = sled.open_tree(TREE_LOG).map_err(storage_err)?;
        let raft_meta = sled.open_tree(TREE_RAFT_META).map_err(storage_err)?;
        let generation =
            raft_meta.get(KEY_GENERATION).map_err(storage_err)?.map(|v| from_be(&v)).unwrap_or(0);
        let tables = open_generation(&sled, generation).map_err(storage_err)?;
        let data_file = Arc::new(std::fs::File::open(path.join(durable::DATA_FILE)).map_err(io_err)?);
        let files = Arc::new(durable::SledFiles::new(&path));
        let tables = Arc::new(std::sync::RwLock::new(Arc::new(tables)));
        let published_snapshot = Arc::default();
        let db = Db {
            dir: path.clone(),
            sled,
            log,
            raft_meta,
            tables,
            data_file,
            files,
            published_snapshot,
            receiving_snapshot: Arc::default(),
            sync_failed: Arc::default(),
            dropping: Arc::default(),
        };
        // Trees of other generations are what a crash left of an unfinished install (newer:
        // dropped now, before a new install could reuse the generation) or of the cleanup after
        // a finished one (older: dropped in the background, which can take minutes).
        db.drop_generations(|g| g > generation).map_err(storage_err)?;
        db.drop_older_generations_in_background(generation);
        // What sled wrote while opening (conf, snap.*, blobs/) becomes durable before anything
        // is acknowledged.
        flush_durably(&db).map_err(io_err)?;
        Ok(db)
    }

    /// The node's data directory (the parent of `sled/`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// The state machine's trees now in use.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One tree of the generation now in use (a cheap handle).
    pub fn table(&self, table: Table) -> sled::Tree {
        self.tables().get(table).clone()
    }

    /// Opens (creating, empty) the trees of `generation`, for an install to fill.
    pub fn fresh_generation(&self, generation: u64) -> sled::Result<Tables> {
        for table in Table::ALL {
            self.sled.drop_tree(Tables::tree_name(table, generation))?;
        }
        open_generation(&self.sled, generation)
    }

    /// Makes `tables` the state machine's trees, durably. The caller excludes apply and readers.
    pub fn switch_to(&self, tables: Tables) -> std::io::Result<()> {
        self.raft_meta.insert(KEY_GENERATION, &be(tables.generation)).map_err(std::io::Error::other)?;
        flush_durably(self)?;
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tables);
        Ok(())
    }

    /// Drops the generations older than `current` on a thread of their own, after an install
    /// switched to `current`: emptying a million-atom generation took minutes, during which
    /// the install (and so the follower's apply and its answers to the leader) would wait.
    /// Only older ones: a later install may have switched to a newer generation meanwhile. A
    /// failure or a crash leaves the trees for the next open to drop.
    pub fn drop_older_generations_in_background(&self, current: u64) {
        let db = self.clone();
        let spawned = std::thread::Builder::new().name("cograft-drop-generation".into()).spawn(move || {
            let _one = db.dropping.lock().unwrap_or_else(|p| p.into_inner());
            let started = std::time::Instant::now();
            match db.drop_generations(|g| g < current) {
                Ok(()) => tracing::info!(
                    below = current,
                    seconds = started.elapsed().as_secs_f64(),
                    "dropped the trees of older generations"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "dropping older trees failed; the next start drops them")
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start dropping older trees; the next start drops them");
        }
    }

    /// Drops the trees of the generations `doomed` picks. Each is emptied and flushed first:
    /// sled's `drop_tree` unnames a tree before it frees its pages, so a crash in the middle
    /// would leak them for good; a tree emptied under its name is redone at the next open.
    fn drop_generations(&self, doomed: impl Fn(u64) -> bool) -> sled::Result<()> {
        for name in self.sled.tree_names() {
            let name = String::from_utf8_lossy(&name).to_string();
            let Some((_, generation)) = name.rsplit_once('@') else { continue };
            if generation.parse::<u64>().is_ok_and(&doomed) {
                let tree = self.sled.open_tree(name.as_bytes())?;
                empty(&tree)?;
                drop(tree);
                self.sled.flush()?;
                self.sled.drop_tree(name.as_bytes())?;
            }
        }
        Ok(())
    }

    /// The applied index of the state machine's current trees (durable after a flush).
    pub fn applied_index(&self) -> std::io::Result<u64> {
        let applied: Option<Option<typ::LogId>> = match self.table(Table::Meta).get(apply::META_LAST_APPLIED)
        {
            Ok(Some(bytes)) => Some(decode(&bytes, "last applied")?),
            Ok(None) => None,
            Err(e) => return Err(std::io::Error::other(e)),
        };
        Ok(applied.flatten().map(|l| l.index).unwrap_or(0))
    }

    /// Records that a snapshot up to `index` is published in the snapshot directory.
    pub fn note_published_snapshot(&self, index: u64) {
        self.published_snapshot.fetch_max(index, std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks a snapshot from the leader as being received (until its install ends).
    pub fn set_receiving_snapshot(&self, receiving: bool) {
        self.receiving_snapshot.store(receiving, std::sync::atomic::Ordering::SeqCst);
    }

    /// How far the log may be purged now: anywhere, except while a snapshot from the leader is
    /// being received or installed, when only up to what the state machine applied (durable
    /// once flushed) or the newest published snapshot covers.
    pub fn purge_limit(&self) -> std::io::Result<u64> {
        if !self.receiving_snapshot.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(u64::MAX);
        }
        Ok(self.applied_index()?.max(self.published_snapshot.load(std::sync::atomic::Ordering::SeqCst)))
    }

    /// Bytes sled occupies on disk (for the space-amplification metric).
    pub fn size_on_disk(&self) -> u64 {
        self.sled.size_on_disk().unwrap_or(0)
    }
}

/// Removes every key of `tree`, a chunk at a time, each chunk read from where the last one
/// ended (an iterator kept open across the removals crawled through the emptied nodes).
fn empty(tree: &sled::Tree) -> sled::Result<()> {
    let mut after: Option<sled::IVec> = None;
    loop {
        let from =
            after.as_ref().map_or(std::ops::Bound::Unbounded, |k| std::ops::Bound::Excluded(k.clone()));
        let keys: Vec<sled::IVec> = tree
            .range::<sled::IVec, _>((from, std::ops::Bound::Unbounded))
            .keys()
            .take(REMOVE_CHUNK)
            .collect::<sled::Result<_>>()?;
        let Some(last) = keys.last().cloned() else { return Ok(()) };
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
        after = Some(last);
    }
}

fn open_generation(sled: &sled::Db, generation: u64) -> sled::Result<Tables> {
    let trees = Table::ALL
        .iter()
        .map(|t| sled.open_tree(Tables::tree_name(*t, generation)))
        .collect::<sled::Result<Vec<_>>>()?;
    Ok(Tables { generation, trees })
}

/// Makes everything written so far durable: sled's flush (which ends with `sync_file_range`,
/// not durable on power loss), an fdatasync of its data file through our own descriptor, then
/// the files sled writes beside it and the directories that gained or lost entries. Answers
/// how many such side files it synced.
///
/// A failure is final for this process: every later call answers it too, so nothing written
/// after a lost write is ever acknowledged (the node must restart and recover from its log).
pub fn flush_durably(db: &Db) -> std::io::Result<usize> {
    let mut failed = db.sync_failed.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(first) = failed.as_ref() {
        return Err(std::io::Error::other(format!(
            "an earlier sync of the data directory failed ({first}); restart the node"
        )));
    }
    let outcome = db
        .sled
        .flush()
        .map_err(std::io::Error::other)
        .and_then(|_| db.data_file.sync_data())
        .and_then(|_| db.files.sync());
    match outcome {
        Ok(report) => Ok(report.files_synced),
        Err(e) => {
            tracing::error!(error = %e, dir = %db.dir.display(), "syncing the data directory failed; no write is acknowledged from now on");
            *failed = Some(e.to_string());
            Err(e)
        }
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Big-endian key of an integer, so sled's byte order matches numeric order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a big-endian integer key or value.
pub fn from_be(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

/// Encodes persisted data with named fields, so adding a field never breaks stored data.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("msgpack encoding of an in-memory value cannot fail")
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> std::io::Result<T> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("decoding {what}: {e}")))
}

/// A node's opened storage: the Raft log, the state machine, and its shared core for readers.
pub struct Stores {
    pub db: Db,
    pub log: LogStore,
    pub state_machine: StateMachine,
    pub core: Arc<StateMachineCore>,
}

/// How a node's storage is opened (from the node's configuration).
#[derive(Clone, Copy, Debug)]
pub struct StorageOptions {
    /// The most memory sled's page cache may use.
    pub cache_capacity_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { cache_capacity_bytes: 256 << 20 }
    }
}

/// Opens (or creates) all of a node's storage under `data_dir`.
pub fn open(
    data_dir: &Path,
    options: StorageOptions,
    metrics: Arc<metrics::StorageMetrics>,
) -> Result<Stores> {
    let corrupted = |cause: String| Error::Corrupted { dir: data_dir.to_path_buf(), cause };
    durable::create_dir_durably(data_dir)
        .map_err(|e| Error::Storage { dir: data_dir.to_path_buf(), cause: e.to_string() })?;
    let durable = manifest::read(data_dir).map_err(|e| corrupted(e.to_string()))?;
    manifest::check_format(data_dir, durable.as_ref())
        .map_err(|cause| Error::Format { dir: data_dir.to_path_buf(), cause })?;
    if durable.is_none() {
        // A new directory records its format before sled writes anything into it.
        manifest::write(data_dir, &manifest::Manifest { format: manifest::FORMAT, ..Default::default() })
            .map_err(|e| Error::Storage { dir: data_dir.to_path_buf(), cause: e.to_string() })?;
    }
    let db = Db::open_with(data_dir, SLED_SEGMENT_SIZE, options.cache_capacity_bytes)?;
    if let Some(durable) = &durable {
        manifest::verify(&db, durable).map_err(corrupted)?;
    }
    let storage_err = |e: std::io::Error| Error::Storage { dir: db.dir.clone(), cause: e.to_string() };
    let log = LogStore::open(db.clone(), metrics.clone()).map_err(storage_err)?;
    let core =
        StateMachineCore::open(db.clone(), data_dir.join("snapshots"), metrics).map_err(storage_err)?;
    let snapshot = core.files.current().map_err(storage_err)?.and_then(|(meta, _)| meta.last_log_id);
    log_purge::close_gap_behind_snapshot(&db, snapshot, core.last_applied().map_err(storage_err)?)
        .map_err(storage_err)?;
    Ok(Stores { db, log, state_machine: StateMachine::new(core.clone()), core })
}

#[cfg(test)]
mod tests;
