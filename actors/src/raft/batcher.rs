//! Proposal batching: group commit on the leader. openraft 0.9.25's core appends one entry at a
//! time and awaits its `LogFlushed` before it takes the next message (`append_to_log` in
//! `core/raft_core.rs`), so concurrent `client_write`s each pay a full flush + fdatasync in
//! turn. The batcher keeps up to `max_in_flight` entries in flight; proposals that arrive while
//! they are busy wait in a bounded queue and go out together as one entry (bounded by the entry
//! size limit), each still applied on its own with its own result.
//!
//! Every `client_write` is bounded by the commit timeout. openraft 0.9 never answers a write
//! whose entry a deposed leader loses when it catches up by snapshot (its log is shorter than
//! the snapshot, so it skips the truncation that would fail the waiters); an unbounded wait
//! would hold an in-flight slot forever, and after `max_in_flight` such losses the node would
//! never propose again. On timeout the slot is freed and the waiters learn that their write is
//! unconfirmed: it may still commit, so they retry with the same idempotency key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::metrics::RaftMetricsFamilies;
use crate::command::{CommandResult, Proposal, ProposalBatch};
use crate::typ::{ClientWriteError, Raft, RaftError};

/// Why a proposal was not committed.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum SubmitError {
    /// openraft refused or failed it (not the leader, a membership error, Raft stopped).
    #[error(transparent)]
    Raft(Box<RaftError<ClientWriteError>>),
    /// Proposed, but not committed within the commit timeout: it may still apply.
    #[error("the entry was proposed but not committed within {timeout_ms} ms; it may still apply")]
    Unconfirmed { timeout_ms: u64 },
    /// The leader's queue of waiting proposals is full.
    #[error("{queued} writes are already waiting on the leader; retry shortly")]
    Overloaded { queued: usize },
}

/// A committed proposal: its log index and its own result.
pub type Committed = Result<(u64, CommandResult), SubmitError>;

struct Pending {
    proposal: Proposal,
    size: usize,
    reply: oneshot::Sender<Committed>,
}

#[derive(Default)]
struct Queue {
    in_flight: usize,
    waiting: Vec<Pending>,
}

/// The limits a batcher works within.
#[derive(Clone, Copy, Debug)]
pub struct BatcherLimits {
    pub max_in_flight: usize,
    pub max_entry_bytes: usize,
    /// Proposals that may wait for a slot; more are refused as overload.
    pub max_queued: usize,
    /// How long one entry may wait for its commit.
    pub commit_timeout: Duration,
}

pub struct Batcher {
    raft: Raft,
    queue: Mutex<Queue>,
    limits: BatcherLimits,
    metrics: RaftMetricsFamilies,
}

impl Batcher {
    pub fn new(raft: Raft, limits: BatcherLimits, metrics: RaftMetricsFamilies) -> Arc<Batcher> {
        let limits = BatcherLimits { max_in_flight: limits.max_in_flight.max(1), ..limits };
        Arc::new(Batcher { raft, queue: Mutex::default(), limits, metrics })
    }

    /// Proposes `proposal`, alone or together with others; answers once its entry is applied,
    /// or within the commit timeout that it is unconfirmed.
    pub async fn submit(self: &Arc<Self>, proposal: Proposal) -> Committed {
        let size = rmp_serde::to_vec_named(&proposal).map(|b| b.len()).unwrap_or(self.limits.max_entry_bytes);
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.waiting.len() >= self.limits.max_queued {
                self.metrics.writes_overloaded.inc();
                return Err(SubmitError::Overloaded { queued: q.waiting.len() });
            }
            q.waiting.push(Pending { proposal, size, reply });
            self.metrics.writes_queued.set(q.waiting.len() as i64);
            (q.in_flight < self.limits.max_in_flight).then(|| {
                q.in_flight += 1;
                self.take(&mut q)
            })
        };
        if let Some(batch) = start {
            let me = self.clone();
            actix::spawn(async move { me.run(batch).await });
        }
        answer
            .await
            .unwrap_or(Err(SubmitError::Raft(Box::new(RaftError::Fatal(openraft::error::Fatal::Stopped)))))
    }

    /// Entries in flight and proposals waiting (for tests and metrics).
    pub fn load(&self) -> (usize, usize) {
        let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        (q.in_flight, q.waiting.len())
    }

    /// Takes waiting proposals up to the entry size limit (at least one).
    fn take(&self, q: &mut Queue) -> Vec<Pending> {
        let mut bytes = 0;
        let count = q
            .waiting
            .iter()
            .take_while(|p| {
                bytes += p.size;
                bytes <= self.limits.max_entry_bytes
            })
            .count()
            .max(1);
        let taken = q.waiting.drain(..count.min(q.waiting.len())).collect();
        self.metrics.writes_queued.set(q.waiting.len() as i64);
        taken
    }

    /// Proposes batches until the queue is empty, each bounded by the commit timeout.
    async fn run(self: Arc<Self>, mut batch: Vec<Pending>) {
        loop {
            let proposals = batch.iter().map(|p| p.proposal.clone()).collect();
            let write = self.raft.client_write(ProposalBatch { proposals });
            match tokio::time::timeout(self.limits.commit_timeout, write).await {
                Ok(Ok(response)) => {
                    let index = response.log_id.index;
                    let mut results = response.data.results.into_iter();
                    for pending in batch {
                        let result = results.next().unwrap_or(CommandResult::Noop);
                        let _ = pending.reply.send(Ok((index, result)));
                    }
                }
                Ok(Err(e)) => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(SubmitError::Raft(Box::new(e.clone()))));
                    }
                }
                Err(_) => {
                    let timeout_ms = self.limits.commit_timeout.as_millis() as u64;
                    self.metrics.writes_unconfirmed.inc_by(batch.len() as u64);
                    tracing::warn!(timeout_ms, proposals = batch.len(), "an entry was not committed in time");
                    for pending in batch {
                        let _ = pending.reply.send(Err(SubmitError::Unconfirmed { timeout_ms }));
                    }
                }
            }
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.waiting.is_empty() {
                q.in_flight -= 1;
                return;
            }
            batch = self.take(&mut q);
        }
    }
}
