//! Log purging off openraft's core task. openraft 0.9 awaits `purge` inside RaftCore, so while
//! a purge runs no heartbeat, append or commit goes out: removing the thousands of entries
//! behind a snapshot (and first flushing the state machine they are behind) stalled writes for
//! over a second at WordNet size. [`LogStore::purge`](super::log_store::LogStore) now records
//! openraft's purge point here, in memory, where the log's reads and its log state honour it at
//! once, and this thread does the removal.
//!
//! The removal is ordered for a crash at any point: the state machine is flushed durably, then
//! the purge marker is written, then the entries go in chunks. A crash before it finishes leaves
//! entries behind the last marker written, and the log state read at start says so (openraft
//! purges them again after its next snapshot). Purges that queue up while one runs are merged.

use std::ops::Bound;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use super::manifest::KEY_LAST_PURGED;
use super::metrics::StorageMetrics as Metrics;
use super::{be, decode, encode, flush_durably, Db};
use crate::typ::{Entry, LogId};

enum Request {
    Upto(LogId),
    /// Answered once every request before it has run.
    Settle(mpsc::Sender<()>),
}

/// The purge thread's handle, shared by every clone of the log store.
#[derive(Clone)]
pub struct Purger {
    tx: mpsc::Sender<Request>,
    /// The newest purge point openraft asked for in this process.
    asked: Arc<Mutex<Option<LogId>>>,
}

impl Purger {
    /// Starts the purge thread (which ends when the last handle drops).
    pub fn start(db: Db, metrics: Arc<Metrics>) -> std::io::Result<Purger> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new().name("cograft-log-purge".into()).spawn(move || run(&db, &metrics, rx))?;
        Ok(Purger { tx, asked: Arc::default() })
    }

    /// Records openraft's purge up to `upto` (inclusive) and queues the removal.
    pub fn ask(&self, upto: LogId) -> std::io::Result<()> {
        {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            if asked.is_some_and(|a| a.index >= upto.index) {
                return Ok(());
            }
            *asked = Some(upto);
        }
        self.tx.send(Request::Upto(upto)).map_err(|_| std::io::Error::other("the purge thread stopped"))
    }

    /// The newest purge point asked for since start (entries up to it are gone for openraft).
    pub fn asked(&self) -> Option<LogId> {
        *self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until every purge asked for before the call has run.
    pub fn settle(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Request::Settle(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

fn run(db: &Db, metrics: &Metrics, rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut upto: Option<LogId> = None;
        let mut settled = Vec::new();
        for request in std::iter::once(first).chain(rx.try_iter()) {
            match request {
                Request::Upto(id) => upto = upto.max(Some(id)),
                Request::Settle(done) => settled.push(done),
            }
        }
        if let Some(upto) = upto {
            let started = Instant::now();
            match purge(db, upto) {
                Ok(removed) => {
                    metrics.log_purge_seconds.observe(started.elapsed().as_secs_f64());
                    tracing::debug!(upto = upto.index, removed, "purged the log");
                }
                // Nothing is lost: the entries stay until the next purge, and a failed sync is
                // sticky, so no later write is acknowledged either.
                Err(e) => tracing::error!(error = %e, upto = upto.index, "purging the log failed"),
            }
        }
        for done in settled {
            let _ = done.send(());
        }
    }
}

/// Removes the entries up to `upto`, or less while a snapshot from the leader is being
/// received: answers how many went.
fn purge(db: &Db, upto: LogId) -> std::io::Result<usize> {
    // The state machine shares this database: make its applied state durable first, so it can
    // never be found behind the purged log after a crash.
    flush_durably(db)?;
    // openraft purges a follower's log as soon as it hands a received snapshot to the state
    // machine, before the install (or even the file) is durable. While one is in progress,
    // entries beyond what is applied or published stay until a later purge: a crash in between
    // must find them to replay.
    let covered = db.purge_limit()?;
    let upto = if covered >= upto.index {
        upto
    } else {
        match db.log.get(be(covered)).map_err(std::io::Error::other)? {
            Some(bytes) => decode::<Entry>(&bytes, "log entry")?.log_id,
            None => return Ok(0),
        }
    };
    let purged: Option<LogId> = match db.raft_meta.get(KEY_LAST_PURGED).map_err(std::io::Error::other)? {
        Some(bytes) => decode(&bytes, "last purged")?,
        None => None,
    };
    if purged.is_some_and(|p| p.index >= upto.index) {
        return Ok(0);
    }
    db.raft_meta.insert(KEY_LAST_PURGED, encode(&upto)).map_err(std::io::Error::other)?;
    remove_range(db, (Bound::Unbounded, Bound::Included(be(upto.index)))).map_err(std::io::Error::other)
}

/// Removes the log entries in `range` in chunks: answers how many.
pub(super) fn remove_range(db: &Db, range: (Bound<[u8; 8]>, Bound<[u8; 8]>)) -> sled::Result<usize> {
    let mut batch = sled::Batch::default();
    let (mut pending, mut removed) = (0, 0);
    for item in db.log.range(range) {
        batch.remove(item?.0);
        pending += 1;
        removed += 1;
        if pending == super::REMOVE_CHUNK {
            db.log.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    db.log.apply_batch(batch)?;
    Ok(removed)
}
