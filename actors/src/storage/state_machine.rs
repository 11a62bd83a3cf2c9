//! The sled-backed [`RaftStateMachine`]. Apply runs in `spawn_blocking`, stages a whole run of
//! entries through [`Staged`] and commits it with `last_applied` in one transaction, then
//! announces `StateEvent::Applied`. Snapshots are built and installed in `spawn_blocking` too;
//! a lock keeps apply out while a snapshot copies the tables, so every snapshot is exact.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError};
use tokio::sync::broadcast;

use super::graph::{self, META_CLOCK, META_LAST_APPLIED, META_MEMBERSHIP};
use super::snapshot::{decode_body, encode_body, Rows, SnapshotFiles};
use super::staged::Staged;
use super::{be, decode, encode, flush_durably, from_be, Db, Table};
use crate::command::{BatchResults, CommandResult, Proposal};
use crate::health::Metrics;
use crate::typ::{Entry, LogId, SnapshotMeta, StoredMembership};
use crate::TypeConfig;

/// Idempotency keys are remembered for this many log entries after they were applied.
pub const IDEMPOTENCY_WINDOW: u64 = 100_000;
/// Marks a snapshot install in progress (in the raft meta tree, which installs never clear).
const KEY_INSTALL_PENDING: &[u8] = b"install_pending";

/// What the state machine announces to in-memory indexes and waiters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    /// Entries up to `index` are applied.
    Applied { index: u64 },
    /// The whole state was replaced by a snapshot ending at `index`.
    SnapshotInstalled { index: u64 },
}

/// The state shared by the state machine handle, its snapshot builders and the readers.
pub struct StateMachineCore {
    pub db: Db,
    files: SnapshotFiles,
    /// Held by apply, snapshot copy and install, so each sees a whole state.
    write_lock: Mutex<()>,
    events: broadcast::Sender<StateEvent>,
    metrics: Arc<Metrics>,
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_state_machine(openraft::AnyError::error(e.to_string())).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, openraft::AnyError::error(e.to_string())).into()
}

impl StateMachineCore {
    /// Opens the state machine, finishing a snapshot install a crash interrupted.
    pub fn open(db: Db, snapshot_dir: std::path::PathBuf, metrics: Arc<Metrics>) -> io::Result<Arc<Self>> {
        let core = Arc::new(StateMachineCore {
            files: SnapshotFiles::open(snapshot_dir)?,
            write_lock: Mutex::new(()),
            events: broadcast::channel(1024).0,
            db,
            metrics,
        });
        if core.db.raft_meta.get(KEY_INSTALL_PENDING).map_err(io::Error::other)?.is_some() {
            let (meta, body) = core.files.read_current()?.ok_or_else(|| {
                io::Error::other("an interrupted snapshot install has no snapshot file to redo it from")
            })?;
            tracing::warn!(snapshot = %meta.snapshot_id, "redoing a snapshot install a crash interrupted");
            core.install(&meta, &body)?;
        }
        Ok(core)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock leaves sled consistent (writes are transactional).
        self.write_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.db.table(Table::Meta).get(key).map_err(io::Error::other)? {
            Some(bytes) => Ok(Some(decode(&bytes, "state machine meta")?)),
            None => Ok(None),
        }
    }

    pub fn last_applied(&self) -> io::Result<Option<LogId>> {
        self.meta(META_LAST_APPLIED)
    }

    pub fn membership(&self) -> io::Result<StoredMembership> {
        Ok(self.meta(META_MEMBERSHIP)?.unwrap_or_default())
    }

    /// Applies a run of entries in one transaction and returns one result per entry.
    pub fn apply(&self, entries: Vec<Entry>) -> io::Result<Vec<BatchResults>> {
        let Some(last) = entries.last().map(|e| e.log_id) else { return Ok(Vec::new()) };
        let started = Instant::now();
        let _guard = self.lock();
        let mut st = Staged::new(&self.db);
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
        st.commit().map_err(io::Error::other)?;
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.apply_batch_entries.observe(entries.len() as f64);
        let _ = self.events.send(StateEvent::Applied { index: last.index });
        Ok(results)
    }

    fn apply_proposal(
        &self,
        st: &mut Staged,
        index: u64,
        now: u64,
        p: &Proposal,
    ) -> io::Result<CommandResult> {
        graph::expire_sessions(st, now).map_err(io::Error::other)?;
        st.keep();
        if !p.key.is_empty() {
            if let Some(bytes) = st.get(Table::Idempotency, p.key.as_bytes()).map_err(io::Error::other)? {
                let (_, first): (u64, CommandResult) = decode(&bytes, "idempotency record")?;
                return Ok(first);
            }
        }
        let result = match graph::apply(st, now, &p.command).map_err(io::Error::other)? {
            Ok(result) => result,
            Err(error) => {
                st.discard();
                CommandResult::Rejected { error }
            }
        };
        if !p.key.is_empty() {
            st.put(Table::Idempotency, p.key.as_bytes(), encode(&(index, &result)));
            st.put(Table::IdempotencyOrder, [&be(index)[..], p.key.as_bytes()].concat(), []);
        }
        if index > IDEMPOTENCY_WINDOW {
            let cutoff = be(index - IDEMPOTENCY_WINDOW);
            for (key, _) in st.scan_up_to(Table::IdempotencyOrder, &cutoff).map_err(io::Error::other)? {
                st.remove(Table::Idempotency, key[8..].to_vec());
                st.remove(Table::IdempotencyOrder, key);
            }
        }
        Ok(result)
    }

    /// Copies every table under the lock, then compresses and writes the file without it.
    pub fn build_snapshot(&self) -> io::Result<(SnapshotMeta, Vec<u8>)> {
        let started = Instant::now();
        let (meta, tables) = {
            let _guard = self.lock();
            let last_log_id = self.last_applied()?;
            let last_membership = self.membership()?;
            let mut tables: Vec<(Table, Rows)> = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                let rows = self
                    .db
                    .table(table)
                    .iter()
                    .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())))
                    .collect::<sled::Result<Rows>>()
                    .map_err(io::Error::other)?;
                tables.push((table, rows));
            }
            let nonce = started.elapsed().as_nanos() ^ u128::from(std::process::id());
            let snapshot_id = match last_log_id {
                Some(l) => format!("{}-{}-{nonce:x}", l.leader_id.term, l.index),
                None => format!("empty-{nonce:x}"),
            };
            (SnapshotMeta { last_log_id, last_membership, snapshot_id }, tables)
        };
        let body = encode_body(&tables)?;
        self.files.write(&meta, &body)?;
        self.metrics.snapshot_build_seconds.observe(started.elapsed().as_secs_f64());
        Ok((meta, body))
    }

    /// Replaces the whole state with a snapshot's. Crash-safe: the file is durable first and a
    /// marker makes `open` redo an install that did not finish.
    pub fn install(&self, meta: &SnapshotMeta, body: &[u8]) -> io::Result<()> {
        let _guard = self.lock();
        let already_on_disk =
            self.files.read_current()?.is_some_and(|(m, _)| m.snapshot_id == meta.snapshot_id);
        if !already_on_disk {
            self.files.write(meta, body)?;
        }
        self.db
            .raft_meta
            .insert(KEY_INSTALL_PENDING, meta.snapshot_id.as_bytes())
            .map_err(io::Error::other)?;
        flush_durably(&self.db)?;
        for table in Table::ALL {
            self.db.table(table).clear().map_err(io::Error::other)?;
        }
        let mut batches: Vec<sled::Batch> = Table::ALL.iter().map(|_| sled::Batch::default()).collect();
        decode_body(body, |table, key, value| {
            batches[table as usize].insert(key, value);
            Ok(())
        })?;
        for (table, batch) in Table::ALL.iter().zip(batches) {
            self.db.table(*table).apply_batch(batch).map_err(io::Error::other)?;
        }
        let meta_table = self.db.table(Table::Meta);
        meta_table.insert(META_LAST_APPLIED, encode(&meta.last_log_id)).map_err(io::Error::other)?;
        meta_table.insert(META_MEMBERSHIP, encode(&meta.last_membership)).map_err(io::Error::other)?;
        self.db.raft_meta.remove(KEY_INSTALL_PENDING).map_err(io::Error::other)?;
        flush_durably(&self.db)?;
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let _ = self.events.send(StateEvent::SnapshotInstalled { index });
        Ok(())
    }

    /// The newest snapshot file, if any.
    pub fn current_snapshot(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        self.files.read_current()
    }

    /// A hash of every data table with the applied index it reflects (equal on all replicas at
    /// the same index). Bookkeeping (clock, idempotency table) is left out.
    pub fn digest(&self) -> io::Result<(u64, String)> {
        let _guard = self.lock();
        let index = self.last_applied()?.map(|l| l.index).unwrap_or(0);
        let mut hasher = blake3::Hasher::new();
        for table in Table::ALL.into_iter().filter(|t| t.is_data()) {
            hasher.update(table.name().as_bytes());
            for item in self.db.table(table).iter() {
                let (k, v) = item.map_err(io::Error::other)?;
                hasher.update(&(k.len() as u64).to_be_bytes());
                hasher.update(&k);
                hasher.update(&(v.len() as u64).to_be_bytes());
                hasher.update(&v);
            }
        }
        Ok((index, hasher.finalize().to_hex().to_string()))
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

fn to_snapshot((meta, body): (SnapshotMeta, Vec<u8>)) -> Snapshot<TypeConfig> {
    Snapshot { meta, snapshot: Box::new(Cursor::new(body)) }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.blocking(snap_err, |core| core.build_snapshot()).await.map(to_snapshot)
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let meta = meta.clone();
        self.blocking(snap_err, move |core| core.install(&meta, snapshot.get_ref())).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        self.blocking(snap_err, |core| core.current_snapshot()).await.map(|s| s.map(to_snapshot))
    }
}
