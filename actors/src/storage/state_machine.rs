//! The sled-backed [`RaftStateMachine`]. Apply runs in `spawn_blocking`, stages a whole run of
//! entries through [`Staged`] and commits it with `last_applied` in one transaction, then
//! announces `StateEvent::Applied`. Snapshot builds, installs and the digest (`whole_state`) run
//! in `spawn_blocking` too, against point-in-time views, so apply never waits for them.
//!
//! Three locks, always taken in this order: `snapshot_lock` (one build, install or digest at a
//! time: they share the snapshot files and the trees an install replaces), `write_lock` (apply,
//! and the instants at which a view opens or an install switches trees), `read_gate` (readers
//! share it; apply's commit and the install's switch take it alone, so a read never sees half
//! a transaction or half a state).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError};
use tokio::sync::broadcast;

use super::apply::{self, maintenance, META_CLOCK, META_LAST_APPLIED, META_MEMBERSHIP};
use super::events::StateEvent;
use super::keys::idempotency_key;
use super::metrics::StorageMetrics as Metrics;
use super::snapshot::SnapshotFiles;
use super::staged::Staged;
use super::view::Views;
use super::{be, decode, encode, from_be, Db, Table, Tables};
use crate::command::{BatchResults, CommandResult, Proposal};
use crate::typ::{Entry, LogId, SnapshotMeta, StoredMembership};
use crate::TypeConfig;

/// Idempotency keys are remembered for this many log entries after they were applied.
pub const IDEMPOTENCY_WINDOW: u64 = 100_000;

/// The state shared by the state machine handle, its snapshot builders and the readers.
pub struct StateMachineCore {
    pub db: Db,
    pub(super) files: SnapshotFiles,
    /// One snapshot build, install or digest at a time.
    pub(super) snapshot_lock: Mutex<()>,
    /// Held by apply; a view opens and an install switches trees under it.
    pub(super) write_lock: Mutex<()>,
    /// Shared by readers; taken alone by apply's commit and by the install's switch.
    pub(super) read_gate: RwLock<()>,
    pub(super) views: Arc<Views>,
    /// Where the snapshot now being received from the leader is written.
    pub(super) receiving: Mutex<Option<PathBuf>>,
    pub(super) events: broadcast::Sender<StateEvent>,
    pub(super) metrics: Arc<Metrics>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(openraft::AnyError::error(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, openraft::AnyError::error(e.to_string())).into()
}

/// Takes a lock even if a panicking holder poisoned it: sled's writes are transactional, so
/// what a panic interrupted left no partial state behind.
pub(super) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateMachineCore {
    /// Opens the state machine, finishing an install a crash interrupted. Such a crash leaves
    /// the state from before the install (the half-filled trees belong to an unused generation,
    /// which `Db::open` dropped) beside the published snapshot file, which is ahead of it; the
    /// install is redone from that file before Raft starts, since openraft requires the state
    /// machine to be at least as far as the snapshot it reports.
    pub fn open(db: Db, snapshot_dir: PathBuf, metrics: Arc<Metrics>) -> io::Result<Arc<Self>> {
        let core = Self::new(db, snapshot_dir, metrics)?;
        if let Some((meta, path)) = core.files.current()? {
            core.db.note_published_snapshot(meta.last_log_id.map(|l| l.index).unwrap_or(0));
            let applied = core.last_applied()?.map(|l| l.index);
            if meta.last_log_id.map(|l| l.index) > applied {
                tracing::warn!(
                    snapshot = %meta.snapshot_id,
                    applied = ?applied,
                    "redoing the snapshot install a crash interrupted"
                );
                super::snapshot::verify(&path)?;
                core.install(&meta, &path)?;
            }
        }
        Ok(core)
    }

    fn new(db: Db, snapshot_dir: PathBuf, metrics: Arc<Metrics>) -> io::Result<Arc<Self>> {
        Ok(Arc::new(StateMachineCore {
            files: SnapshotFiles::open(snapshot_dir)?,
            snapshot_lock: Mutex::new(()),
            write_lock: Mutex::new(()),
            read_gate: RwLock::new(()),
            views: Arc::default(),
            receiving: Mutex::new(None),
            events: broadcast::channel(1024).0,
            db,
            metrics,
        }))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    /// Runs a read with the read gate held, against the trees now in use: it sees whole
    /// transactions and one state, even across a snapshot install.
    pub fn read<T>(&self, read: impl FnOnce(&Tables) -> T) -> T {
        let waited = Instant::now();
        let _gate: RwLockReadGuard<'_, ()> = self.read_gate.read().unwrap_or_else(|p| p.into_inner());
        self.metrics.read_gate_wait_seconds.observe(waited.elapsed().as_secs_f64());
        read(&self.db.tables())
    }

    pub(super) fn meta_in<T: serde::de::DeserializeOwned>(
        tables: &Tables,
        key: &[u8],
    ) -> io::Result<Option<T>> {
        match tables.get(Table::Meta).get(key).map_err(io::Error::other)? {
            Some(bytes) => Ok(Some(decode(&bytes, "state machine meta")?)),
            None => Ok(None),
        }
    }

    pub fn last_applied(&self) -> io::Result<Option<LogId>> {
        self.read(|t| Self::meta_in(t, META_LAST_APPLIED))
    }

    pub fn membership(&self) -> io::Result<StoredMembership> {
        Ok(self.read(|t| Self::meta_in(t, META_MEMBERSHIP))?.unwrap_or_default())
    }

    /// Applies a run of entries in one transaction and returns one result per entry.
    pub fn apply(&self, entries: Vec<Entry>) -> io::Result<Vec<BatchResults>> {
        let Some(last) = entries.last().map(|e| e.log_id) else { return Ok(Vec::new()) };
        let started = Instant::now();
        let _guard = locked(&self.write_lock);
        let mut lock_wait = started.elapsed();
        let tables = self.db.tables();
        let mut st = Staged::new(&tables);
        let mut clock =
            st.get(Table::Meta, META_CLOCK).map_err(io::Error::other)?.map(|v| from_be(&v)).unwrap_or(0);
        let mut results = Vec::with_capacity(entries.len());
        for entry in &entries {
            let mut answers = BatchResults::default();
            match &entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    st.put(Table::Meta, META_MEMBERSHIP, encode(&stored));
                }
                EntryPayload::Normal(batch) => {
                    for proposal in &batch.proposals {
                        clock = clock.max(proposal.time_ms);
                        answers.results.push(self.apply_proposal(
                            &mut st,
                            entry.log_id.index,
                            clock,
                            proposal,
                        )?);
                        st.keep();
                    }
                }
            }
            st.keep();
            results.push(answers);
        }
        st.put(Table::Meta, META_CLOCK, be(clock));
        st.put(Table::Meta, META_LAST_APPLIED, encode(&Some(last)));
        let changes = {
            let waited = Instant::now();
            let _alone = self.read_gate.write().unwrap_or_else(|p| p.into_inner());
            lock_wait += waited.elapsed();
            st.commit(&self.views).map_err(io::Error::other)?
        };
        self.metrics.apply_lock_wait_seconds.observe(lock_wait.as_secs_f64());
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.apply_batch_entries.observe(entries.len() as f64);
        let first = entries.first().map(|e| e.log_id.index).unwrap_or(last.index);
        let _ =
            self.events.send(StateEvent::Applied { first, index: last.index, changes: Arc::new(changes) });
        Ok(results)
    }

    fn apply_proposal(
        &self,
        st: &mut Staged,
        index: u64,
        now: u64,
        p: &Proposal,
    ) -> io::Result<CommandResult> {
        maintenance::expire_sessions(st, now, maintenance::PER_PROPOSAL_EXPIRY).map_err(io::Error::other)?;
        if index > IDEMPOTENCY_WINDOW {
            let cutoff = index - IDEMPOTENCY_WINDOW - 1;
            maintenance::evict_idempotency(st, cutoff, maintenance::PER_PROPOSAL_EVICTION)
                .map_err(io::Error::other)?;
        }
        st.keep();
        let key = idempotency_key(&p.space, &p.key);
        if !p.key.is_empty() {
            if let Some(bytes) = st.get(Table::Idempotency, &key).map_err(io::Error::other)? {
                let (_, first): (u64, CommandResult) = decode(&bytes, "idempotency record")?;
                return Ok(first);
            }
        }
        let result = match apply::apply(st, now, &p.space, &p.command).map_err(io::Error::other)? {
            Ok(result) => result,
            Err(error) => {
                st.discard();
                CommandResult::Rejected { error }
            }
        };
        if !p.key.is_empty() {
            st.put(Table::Idempotency, key.clone(), encode(&(index, &result.for_idempotency())));
            st.put(Table::IdempotencyOrder, [&be(index)[..], &key].concat(), []);
        }
        Ok(result)
    }
}

/// openraft's handle on the state machine; also its snapshot builder.
#[derive(Clone)]
pub struct StateMachine {
    core: Arc<StateMachineCore>,
}

impl StateMachine {
    pub fn new(core: Arc<StateMachineCore>) -> Self {
        StateMachine { core }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        err: fn(io::Error) -> StorageError<u64>,
        work: impl FnOnce(&StateMachineCore) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StorageError<u64>> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || work(&core))
            .await
            .map_err(|e| err(io::Error::other(e)))?
            .map_err(err)
    }
}

/// openraft's view of a snapshot file: its meta and the file, opened for reading.
async fn to_snapshot((meta, path): (SnapshotMeta, PathBuf)) -> io::Result<Snapshot<TypeConfig>> {
    let file = tokio::fs::File::open(&path).await?;
    Ok(Snapshot { meta, snapshot: Box::new(file) })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let built = self.blocking(snap_err, |core| core.build_snapshot()).await?;
        to_snapshot(built).await.map_err(snap_err)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError<u64>> {
        self.blocking(sm_err, |core| Ok((core.last_applied()?, core.membership()?))).await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResults>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.blocking(sm_err, move |core| core.apply(entries)).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// The leader's chunks go into a temporary file in the snapshot directory.
    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        self.core.db.set_receiving_snapshot(true);
        let path = self.core.files.temp_path("receiving");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(snap_err)?;
        let stale = locked(&self.core.receiving).replace(path);
        if let Some(stale) = stale {
            let _ = tokio::fs::remove_file(stale).await;
        }
        Ok(Box::new(file))
    }

    /// Checks the received file (checksum, identity), publishes it, then installs from it.
    /// openraft hands back the file `begin_receiving_snapshot` made, filled with the leader's
    /// chunks; any other file (openraft's test suite passes another snapshot's) is copied first.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        use std::os::unix::fs::MetadataExt;
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let mut file = *snapshot;
        file.flush().await.map_err(snap_err)?;
        let received = locked(&self.core.receiving).take();
        let given = file.metadata().await.map_err(snap_err)?;
        let ours = match &received {
            Some(path) => tokio::fs::metadata(path)
                .await
                .is_ok_and(|m| (m.dev(), m.ino()) == (given.dev(), given.ino())),
            None => false,
        };
        let path = match received {
            Some(path) if ours => path,
            other => {
                if let Some(unused) = other {
                    let _ = tokio::fs::remove_file(unused).await;
                }
                let copy = self.core.files.temp_path("receiving");
                let mut out = tokio::fs::File::create(&copy).await.map_err(snap_err)?;
                file.seek(std::io::SeekFrom::Start(0)).await.map_err(snap_err)?;
                tokio::io::copy(&mut file, &mut out).await.map_err(snap_err)?;
                out.flush().await.map_err(snap_err)?;
                copy
            }
        };
        drop(file);
        let meta = meta.clone();
        let installed = self
            .blocking(snap_err, move |core| {
                // openraft retries a snapshot whose install outlasted its RPC timeout; the
                // state may already be there, or past it (an install must never go back).
                let snapshot_index = meta.last_log_id.map(|l| l.index);
                if snapshot_index.is_some() && core.last_applied()?.map(|l| l.index) >= snapshot_index {
                    tracing::info!(snapshot = %meta.snapshot_id, "this snapshot's state is applied already");
                    let _ = std::fs::remove_file(&path);
                    return Ok(());
                }
                let published = core.files.adopt(&path, &meta)?;
                core.db.note_published_snapshot(meta.last_log_id.map(|l| l.index).unwrap_or(0));
                core.install(&meta, &published)
            })
            .await;
        // Only a finished install lifts the purge limit: after a failed one the entries the
        // snapshot would have covered must stay for the replay.
        if installed.is_ok() {
            self.core.db.set_receiving_snapshot(false);
        }
        installed
    }

    /// The newest snapshot. A build publishing a newer one may remove the file between the
    /// listing and the open: then the listing is taken again.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(current) = self.blocking(snap_err, |core| core.files.current()).await? else {
                return Ok(None);
            };
            match to_snapshot(current).await {
                Ok(snapshot) => return Ok(Some(snapshot)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 10 => continue,
                Err(e) => return Err(snap_err(e)),
            }
        }
    }
}
