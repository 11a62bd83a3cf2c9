//! Proposal batching: group commit on the leader. openraft 0.9.25's core appends one entry at a
//! time and awaits its `LogFlushed` before it takes the next message (`append_to_log` in
//! `core/raft_core.rs`), so concurrent `client_write`s each pay a full flush + fdatasync in
//! turn. The batcher keeps up to `max_in_flight` entries in flight; proposals that arrive while
//! they are busy wait in a queue and go out together as one entry (bounded by the entry size
//! limit), each still applied on its own with its own result.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::command::{CommandResult, Proposal, ProposalBatch};
use crate::typ::{ClientWriteError, Raft, RaftError};

/// A committed proposal: its log index and its own result.
pub type Committed = Result<(u64, CommandResult), RaftError<ClientWriteError>>;

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

pub struct Batcher {
    raft: Raft,
    queue: Mutex<Queue>,
    max_in_flight: usize,
    max_entry_bytes: usize,
}

impl Batcher {
    pub fn new(raft: Raft, max_in_flight: usize, max_entry_bytes: usize) -> Arc<Batcher> {
        Arc::new(Batcher {
            raft,
            queue: Mutex::default(),
            max_in_flight: max_in_flight.max(1),
            max_entry_bytes,
        })
    }

    /// Proposes `proposal`, alone or together with others; answers once its entry is applied.
    pub async fn submit(self: &Arc<Self>, proposal: Proposal) -> Committed {
        let size = rmp_serde::to_vec_named(&proposal).map(|b| b.len()).unwrap_or(self.max_entry_bytes);
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().expect("batcher queue lock");
            q.waiting.push(Pending { proposal, size, reply });
            (q.in_flight < self.max_in_flight).then(|| {
                q.in_flight += 1;
                self.take(&mut q)
            })
        };
        if let Some(batch) = start {
            let me = self.clone();
            actix::spawn(async move { me.run(batch).await });
        }
        answer.await.unwrap_or(Err(RaftError::Fatal(openraft::error::Fatal::Stopped)))
    }

    /// Takes waiting proposals up to the entry size limit (at least one).
    fn take(&self, q: &mut Queue) -> Vec<Pending> {
        let mut bytes = 0;
        let count = q
            .waiting
            .iter()
            .take_while(|p| {
                bytes += p.size;
                bytes <= self.max_entry_bytes
            })
            .count()
            .max(1);
        q.waiting.drain(..count.min(q.waiting.len())).collect()
    }

    /// Proposes batches until the queue is empty.
    async fn run(self: Arc<Self>, mut batch: Vec<Pending>) {
        loop {
            let proposals = batch.iter().map(|p| p.proposal.clone()).collect();
            let outcome = self.raft.client_write(ProposalBatch { proposals }).await;
            match outcome {
                Ok(response) => {
                    let index = response.log_id.index;
                    let mut results = response.data.results.into_iter();
                    for pending in batch {
                        let result = results.next().unwrap_or(CommandResult::Noop);
                        let _ = pending.reply.send(Ok((index, result)));
                    }
                }
                Err(e) => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(e.clone()));
                    }
                }
            }
            let mut q = self.queue.lock().expect("batcher queue lock");
            if q.waiting.is_empty() {
                q.in_flight -= 1;
                return;
            }
            batch = self.take(&mut q);
        }
    }
}
