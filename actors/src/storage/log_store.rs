//! The Raft log and vote in sled. `append` writes entries into sled and returns; one flusher
//! thread loops `flush()` -> fdatasync of sled's data file -> completes every `LogFlushed`
//! callback that was waiting, so appends that arrive during a flush share the next one.
//! (openraft 0.9.25 awaits each append's callback before the next, so on the leader the real
//! group commit comes from batching proposals into one entry: see `raft::batcher`.)
//! `save_vote` goes through the same thread and returns only once the vote is durable, and so
//! does `truncate`, which first lowers the manifest's durable log index (see `manifest`). When
//! no request comes for a while the flusher still syncs, so what sled writes in the background
//! (page rewrites that may produce blob files) becomes durable within [`IDLE_SYNC`]. `purge`
//! returns at once and leaves the removal to its own thread (`log_purge`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageError, StorageIOError};
use tokio::sync::oneshot;

use super::log_purge::{self, Purger};
use super::metrics::StorageMetrics as Metrics;
use super::{be, decode, encode, flush_durably, Db};
use crate::typ::{Entry, LogId, Vote};
use crate::TypeConfig;

use super::manifest::{self, KEY_LAST_PURGED, KEY_VOTE};
const KEY_COMMITTED: &[u8] = b"committed";

/// Work for the flusher thread.
enum FlushRequest {
    /// Complete this callback once everything written before it is durable.
    Append { callback: LogFlushed<TypeConfig>, writes: usize },
    /// Answer once everything written before it is durable.
    Sync { done: oneshot::Sender<std::io::Result<()>> },
    /// Remove the entries from `from` on, durably, lowering the manifest's log index first.
    Truncate { from: u64, done: oneshot::Sender<std::io::Result<()>> },
}

/// The sled-backed [`RaftLogStorage`]. Cloning shares the database and the flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    flusher: mpsc::Sender<FlushRequest>,
    purger: Purger,
    metrics: Arc<Metrics>,
    /// The newest commit index openraft reported (for readiness).
    committed: Arc<AtomicU64>,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(openraft::AnyError::error(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(openraft::AnyError::error(e.to_string())).into()
}

impl LogStore {
    /// Opens the log in `db` and starts its flusher thread (which ends when the last clone drops).
    pub fn open(db: Db, metrics: Arc<Metrics>) -> std::io::Result<LogStore> {
        let (tx, rx) = mpsc::channel();
        let (flush_db, flush_metrics) = (db.clone(), metrics.clone());
        let written = manifest::read(&db.data_dir())?.unwrap_or_default();
        std::thread::Builder::new()
            .name("cograft-flusher".into())
            .spawn(move || Flusher::new(flush_db, flush_metrics, written).run(rx))?;
        let purger = Purger::start(db.clone(), metrics.clone())?;
        Ok(LogStore { db, flusher: tx, purger, metrics, committed: Arc::default() })
    }

    /// The newest commit index this node has heard of (0 before any).
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    /// Forgets, durably, that this node led before it stopped: a committed vote for itself
    /// becomes an uncommitted one (same term, same candidate, so it still never votes twice).
    ///
    /// openraft 0.9.25 resumes leadership at start-up when the saved vote is committed for this
    /// node (`Engine::startup`), reusing the term's first log id as its no-op. Its read index is
    /// then max(that no-op, the commit index it recovered), and the recovered commit index can
    /// lag what the cluster acknowledged before the crash: linearizable reads served right after
    /// the restart missed acknowledged writes (found by the chaos suite after "kill every node").
    /// Without the committed vote the node must win a new election, whose fresh no-op makes the
    /// read index cover everything committed before. Call before Raft starts.
    pub fn forget_leadership(&self, node_id: u64) -> std::io::Result<bool> {
        let Some(mut vote) = self.get_meta::<Vote>(KEY_VOTE).map_err(io_err)? else { return Ok(false) };
        if !(vote.committed && vote.leader_id.node_id == node_id) {
            return Ok(false);
        }
        vote.committed = false;
        self.db.raft_meta.insert(KEY_VOTE, encode(&vote)).map_err(io_err)?;
        flush_durably(&self.db)?;
        Ok(true)
    }

    /// Blocks until every purge asked for so far has run (tests; see `log_purge`).
    pub fn settle_purges(&self) {
        self.purger.settle();
    }

    /// Makes every write so far durable, from the flusher thread.
    pub async fn sync(&self) -> std::io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.flusher.send(FlushRequest::Sync { done }).map_err(|_| io_err("flusher stopped"))?;
        wait.await.map_err(|_| io_err("flusher stopped"))?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError<u64>> {
        match self.db.raft_meta.get(key).map_err(read_err)? {
            Some(bytes) => Ok(Some(decode(&bytes, "raft meta").map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn last_log_id(&self) -> Result<Option<LogId>, StorageError<u64>> {
        match self.db.log.last().map_err(read_err)? {
            Some((_, bytes)) => Ok(Some(decode::<Entry>(&bytes, "log entry").map_err(read_err)?.log_id)),
            None => Ok(None),
        }
    }
}

/// How often the flusher records durable progress in the manifest.
const MANIFEST_INTERVAL: Duration = Duration::from_secs(1);
/// How long the flusher waits for a request before it syncs anyway.
pub const IDLE_SYNC: Duration = Duration::from_millis(500);

/// The flusher thread's state: the database, and the manifest it last wrote.
struct Flusher {
    db: Db,
    metrics: Arc<Metrics>,
    data_dir: std::path::PathBuf,
    written: manifest::Manifest,
    manifest_written: Instant,
}

impl Flusher {
    fn new(db: Db, metrics: Arc<Metrics>, written: manifest::Manifest) -> Flusher {
        let data_dir = db.data_dir();
        Flusher { db, metrics, data_dir, written, manifest_written: Instant::now() - MANIFEST_INTERVAL }
    }

    fn run(mut self, rx: mpsc::Receiver<FlushRequest>) {
        let mut queue: VecDeque<FlushRequest> = VecDeque::new();
        loop {
            if queue.is_empty() {
                match rx.recv_timeout(IDLE_SYNC) {
                    Ok(first) => queue.push_back(first),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.idle_sync();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            queue.extend(rx.try_iter());
            if let Some(FlushRequest::Truncate { .. }) = queue.front() {
                let Some(FlushRequest::Truncate { from, done }) = queue.pop_front() else { unreachable!() };
                let _ = done.send(self.truncate(from));
                continue;
            }
            // Everything up to the next truncation shares one flush.
            let until = queue.iter().position(|r| matches!(r, FlushRequest::Truncate { .. }));
            let waiting: Vec<FlushRequest> = queue.drain(..until.unwrap_or(queue.len())).collect();
            self.flush_and_answer(waiting);
        }
    }

    fn flush_and_answer(&mut self, waiting: Vec<FlushRequest>) {
        let explicit_sync = waiting.iter().any(|r| matches!(r, FlushRequest::Sync { .. }));
        // Observed before the flush, so the flush makes what it records durable.
        let observed = manifest::observe(&self.db);
        let started = Instant::now();
        let mut result = flush_durably(&self.db).map(|synced| {
            self.metrics.side_files_synced.inc_by(synced as u64);
        });
        self.metrics.log_flush_seconds.observe(started.elapsed().as_secs_f64());
        // An explicit sync (vote, shutdown) records the manifest before it answers; appends
        // are answered first and the manifest follows at most once a second.
        if result.is_ok() && explicit_sync {
            result = observed.as_ref().map_err(clone_err).and_then(|m| self.write_manifest(m));
        }
        let writes: usize = waiting
            .iter()
            .map(|r| match r {
                FlushRequest::Append { writes, .. } => *writes,
                _ => 0,
            })
            .sum();
        if writes > 0 {
            self.metrics.log_flush_batch_writes.observe(writes as f64);
        }
        for request in waiting {
            let outcome = result.as_ref().map(|_| ()).map_err(clone_err);
            match request {
                FlushRequest::Append { callback, .. } => callback.log_io_completed(outcome),
                FlushRequest::Sync { done } | FlushRequest::Truncate { done, .. } => {
                    let _ = done.send(outcome);
                }
            }
        }
        if result.is_ok() && self.manifest_written.elapsed() >= MANIFEST_INTERVAL {
            if let Err(e) = observed.and_then(|m| self.write_manifest(&m)) {
                tracing::error!(error = %e, "could not record durable progress in the manifest");
            }
        }
    }

    /// Nothing asked for a flush for a while: make sled's background writes durable anyway.
    fn idle_sync(&mut self) {
        let observed = manifest::observe(&self.db);
        match flush_durably(&self.db) {
            Ok(synced) => {
                self.metrics.side_files_synced.inc_by(synced as u64);
            }
            Err(e) => {
                tracing::error!(error = %e, "idle sync of the data directory failed");
                return;
            }
        }
        if self.manifest_written.elapsed() >= MANIFEST_INTERVAL {
            if let Err(e) = observed.and_then(|m| self.write_manifest(&m)) {
                tracing::error!(error = %e, "could not record durable progress in the manifest");
            }
        }
    }

    /// Removes the log from `from` on. The manifest's durable log index is lowered first, so a
    /// crash in between never leaves a manifest claiming entries the log no longer has.
    fn truncate(&mut self, from: u64) -> std::io::Result<()> {
        if self.written.log_index >= from {
            let lowered = manifest::Manifest { log_index: from.saturating_sub(1), ..self.written };
            self.write_manifest(&lowered)?;
        }
        log_purge::remove_range(&self.db, (Bound::Included(be(from)), Bound::Unbounded)).map_err(io_err)?;
        flush_durably(&self.db).map(|_| ())
    }

    fn write_manifest(&mut self, m: &manifest::Manifest) -> std::io::Result<()> {
        manifest::write(&self.data_dir, m)?;
        self.written = *m;
        self.manifest_written = Instant::now();
        Ok(())
    }
}

fn clone_err(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        // Entries openraft purged may wait for the purge thread: they are not there for it.
        let first = self.purger.asked().map_or(0, |l| l.index + 1);
        let start = match range.start_bound() {
            Bound::Included(i) if *i >= first => Bound::Included(be(*i)),
            Bound::Excluded(i) if *i >= first => Bound::Excluded(be(*i)),
            _ => Bound::Included(be(first)),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(be(*i)),
            Bound::Excluded(i) => Bound::Excluded(be(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.db
            .log
            .range((start, end))
            .map(|item| {
                let (_, bytes) = item.map_err(read_err)?;
                decode::<Entry>(&bytes, "log entry").map_err(read_err)
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let stored: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_purged_log_id = stored.max(self.purger.asked());
        // A purge can pass the last entry (behind an installed snapshot).
        let last_log_id = self.last_log_id()?.max(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<u64>> {
        let write_vote_err = |e: std::io::Error| -> StorageError<u64> {
            StorageIOError::write_vote(openraft::AnyError::error(e.to_string())).into()
        };
        self.db.raft_meta.insert(KEY_VOTE, encode(vote)).map_err(|e| write_vote_err(io_err(e)))?;
        self.sync().await.map_err(write_vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<u64>> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<u64>> {
        let index = committed.map(|l| l.index).unwrap_or(0);
        self.committed.fetch_max(index, Ordering::Relaxed);
        self.metrics.committed_index.set(index as i64);
        // Not synced: a lost commit index is only re-learned from the leader.
        self.db.raft_meta.insert(KEY_COMMITTED, encode(&committed)).map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<u64>> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in entries {
            // Group commit is counted in client writes: one entry may carry many proposals.
            count += match &entry.payload {
                openraft::EntryPayload::Normal(proposals) => proposals.proposals.len(),
                _ => 1,
            };
            batch.insert(&be(entry.log_id.index), encode(&entry));
        }
        self.db.log.apply_batch(batch).map_err(write_err)?;
        self.metrics.log_append_seconds.observe(started.elapsed().as_secs_f64());
        self.flusher
            .send(FlushRequest::Append { callback, writes: count })
            .map_err(|_| write_err("the flusher thread stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let (done, wait) = oneshot::channel();
        self.flusher
            .send(FlushRequest::Truncate { from: log_id.index, done })
            .map_err(|_| write_err("the flusher thread stopped"))?;
        wait.await.map_err(|_| write_err("the flusher thread stopped"))?.map_err(write_err)
    }

    /// Returns at once: the entries are gone for openraft, and the purge thread removes them
    /// (see `log_purge`).
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        self.purger.ask(log_id).map_err(write_err)
    }
}
