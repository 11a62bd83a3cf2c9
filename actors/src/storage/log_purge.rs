//! Log purging off openraft's core task. openraft 0.9 awaits `purge` inside RaftCore, so while
//! a purge runs no heartbeat, append or commit goes out: removing the thousands of entries
//! behind a snapshot (and flushing first) stalled writes for over a second at WordNet size.
//!
//! [`Purger::ask`] does the part whose order matters, at once, on openraft's call: it writes the
//! purge marker (without a flush: sled recovers a prefix of its log, so the marker can never
//! survive a crash without the state it follows, and every append after it is flushed with it;
//! a marker written later, from another thread, could reach the disk after appends past it and
//! leave a hole at restart). It records the point in memory, where the log's reads and its log
//! state honour it, and leaves the removal of the entries to the purge thread, which removes what
//! the marker covers in chunks. A crash before it finishes leaves entries behind the marker,
//! which nothing reads; openraft purges them again after its next snapshot. Removals that queue
//! up while one runs are merged.

use std::ops::Bound;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use super::manifest::{last_purged, KEY_LAST_PURGED};
use super::metrics::StorageMetrics as Metrics;
use super::{be, decode, encode, Db};
use crate::typ::{Entry, LogId};

enum Request {
    Upto(LogId),
    /// Answered once every request before it has run.
    Settle(mpsc::Sender<()>),
}

/// The purge thread's handle, shared by every clone of the log store.
#[derive(Clone)]
pub struct Purger {
    db: Db,
    tx: mpsc::Sender<Request>,
    /// The newest purge point openraft asked for in this process.
    asked: Arc<Mutex<Option<LogId>>>,
}

impl Purger {
    /// Starts the purge thread (which ends when the last handle drops).
    pub fn start(db: Db, metrics: Arc<Metrics>) -> std::io::Result<Purger> {
        let (tx, rx) = mpsc::channel();
        let thread_db = db.clone();
        std::thread::Builder::new()
            .name("cograft-log-purge".into())
            .spawn(move || run(&thread_db, &metrics, rx))?;
        Ok(Purger { db, tx, asked: Arc::default() })
    }

    /// Records openraft's purge up to `upto` (inclusive): writes the marker, and queues the
    /// removal of the entries it covers.
    pub fn ask(&self, upto: LogId) -> std::io::Result<()> {
        {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            if asked.is_some_and(|a| a.index >= upto.index) {
                return Ok(());
            }
            *asked = Some(upto);
        }
        let Some(marked) = mark(&self.db, upto)? else { return Ok(()) };
        self.tx.send(Request::Upto(marked)).map_err(|_| std::io::Error::other("the purge thread stopped"))
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
            // The marker covers `upto` already (`mark`).
            match remove_range(db, (Bound::Unbounded, Bound::Included(be(upto.index)))) {
                Ok(removed) => {
                    metrics.log_purge_seconds.observe(started.elapsed().as_secs_f64());
                    tracing::debug!(upto = upto.index, removed, "purged the log");
                }
                // Nothing is lost: the entries stay behind the marker, where nothing reads them.
                Err(e) => {
                    tracing::error!(error = %e, upto = upto.index, "removing purged log entries failed")
                }
            }
        }
        for done in settled {
            let _ = done.send(());
        }
    }
}

/// Writes the purge marker for a purge up to `upto`, or less while a snapshot from the leader
/// is being received: answers the point marked (`None`: nothing new to mark).
fn mark(db: &Db, upto: LogId) -> std::io::Result<Option<LogId>> {
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
            None => return Ok(None),
        }
    };
    let marked = last_purged(db)?;
    if marked.is_some_and(|p| p.index >= upto.index) {
        return Ok(None);
    }
    db.raft_meta.insert(KEY_LAST_PURGED, encode(&upto)).map_err(std::io::Error::other)?;
    Ok(Some(upto))
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

/// At open, before Raft starts: closes a gap that a purge limited during an install can leave
/// behind the snapshot. openraft purges a follower's log up to a received snapshot once, as it
/// hands the snapshot over; while the install runs the marker stays at what was applied, and
/// the entries the follower never had (between its old log and the snapshot) are followed by
/// new ones past the snapshot. openraft loads every log id from the marker on, so that gap would
/// stop it at start. When the state machine has applied the published snapshot, everything up
/// to the snapshot is covered: the marker moves there and the entries behind it go. Answers
/// whether it moved.
pub fn close_gap_behind_snapshot(
    db: &Db,
    snapshot: Option<LogId>,
    applied: Option<LogId>,
) -> std::io::Result<bool> {
    let Some(snapshot) = snapshot else { return Ok(false) };
    if applied.is_none_or(|a| a.index < snapshot.index) {
        return Ok(false);
    }
    let marked = last_purged(db)?;
    let from = marked.map_or(0, |m| m.index) + 1;
    if from > snapshot.index {
        return Ok(false);
    }
    // Contiguous from the marker through the snapshot: no gap.
    let mut expected = from;
    for key in db.log.range(be(from)..=be(snapshot.index)).keys() {
        if super::from_be(&key.map_err(std::io::Error::other)?) != expected {
            break;
        }
        expected += 1;
    }
    if expected > snapshot.index {
        return Ok(false);
    }
    tracing::warn!(
        from = marked.map(|m| m.index),
        to = snapshot.index,
        missing = expected,
        "the log has a gap behind the applied snapshot; purging up to the snapshot"
    );
    db.raft_meta.insert(KEY_LAST_PURGED, encode(&snapshot)).map_err(std::io::Error::other)?;
    remove_range(db, (Bound::Unbounded, Bound::Included(be(snapshot.index))))
        .map_err(std::io::Error::other)?;
    super::flush_durably(db)?;
    Ok(true)
}
