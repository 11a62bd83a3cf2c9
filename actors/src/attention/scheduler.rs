//! AttentionScheduler: on the leader, every `interval`, proposes one [`Command::Attention`]
//! step with the leader's [`AttentionStep`]: through this node's own Raft (never forwarded, so
//! a node deposed meanwhile proposes nothing), when some atom holds attention (an idle graph
//! gets no entries), when the previous step has finished (steps never pile up behind a slow
//! commit) and while the node serves (shutdown stops it first). After a step that changed
//! nothing it waits [`IDLE_INTERVALS`] intervals before the next. Followers do nothing: the
//! step reaches them through the log. Accepts no messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use openraft::ServerState;
use tokio::sync::watch;

use super::metrics::AttentionMetrics;
use crate::command::{AttentionStep, Command, CommandResult, Proposal};
use crate::model::DEFAULT_SPACE;
use crate::raft::actor::ProposeAsLeader;
use crate::raft::RaftActor;
use crate::storage::actor::{Query, StorageActor};
use crate::typ::{NodeId, RaftMetrics};

/// Intervals skipped after a step that changed no attention value.
pub const IDLE_INTERVALS: u32 = 30;

/// What the scheduler works with.
pub struct SchedulerParts {
    pub node_id: NodeId,
    pub step: AttentionStep,
    pub interval: Duration,
    pub raft: Addr<RaftActor>,
    pub raft_metrics: watch::Receiver<RaftMetrics>,
    pub storage: Addr<StorageActor>,
    /// Cleared when shutdown begins.
    pub serving: Arc<AtomicBool>,
    pub metrics: AttentionMetrics,
}

pub struct AttentionScheduler {
    parts: SchedulerParts,
    running: bool,
    /// Intervals still to skip.
    resting: u32,
}

/// How one proposal went.
enum Outcome {
    /// No atom holds attention.
    Idle,
    /// Committed; the step changed this many values.
    Changed(u64),
    Failed,
}

impl AttentionScheduler {
    pub fn new(parts: SchedulerParts) -> Self {
        AttentionScheduler { parts, running: false, resting: 0 }
    }

    fn is_leader(&self) -> bool {
        let m = self.parts.raft_metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.parts.node_id)
    }

    /// Proposes one step if some atom holds attention, and counts how it went.
    async fn propose(
        step: AttentionStep,
        raft: Addr<RaftActor>,
        storage: Addr<StorageActor>,
        metrics: AttentionMetrics,
    ) -> Outcome {
        match storage.send(Query::new(|v| v.holds_any_attention())).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Outcome::Idle,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "attention: cannot read the attention table");
                return Outcome::Failed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "attention: the storage actor is gone");
                return Outcome::Failed;
            }
        }
        let proposal = Proposal {
            key: String::new(),
            time_ms: crate::now_ms(),
            space: DEFAULT_SPACE.to_string(),
            command: Command::Attention { step },
        };
        match raft.send(ProposeAsLeader(proposal)).await {
            Ok(Ok((_, CommandResult::Attended { changed, .. }))) => {
                metrics.step("committed");
                metrics.changed.inc_by(changed);
                Outcome::Changed(changed)
            }
            Ok(Ok((_, other))) => {
                metrics.step("failed");
                tracing::warn!(result = ?other, "attention step answered something else");
                Outcome::Failed
            }
            Ok(Err(e)) => {
                metrics.step("failed");
                tracing::debug!(error = %e, "attention step not committed");
                Outcome::Failed
            }
            Err(e) => {
                metrics.step("failed");
                tracing::warn!(error = %e, "attention: the Raft actor is gone");
                Outcome::Failed
            }
        }
    }
}

impl Actor for AttentionScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.parts.interval, |act, ctx| {
            if !act.parts.serving.load(Ordering::Relaxed) {
                return ctx.stop();
            }
            if act.resting > 0 {
                act.resting -= 1;
                return;
            }
            if act.running || !act.is_leader() {
                return;
            }
            act.running = true;
            let p = &act.parts;
            let work = Self::propose(p.step, p.raft.clone(), p.storage.clone(), p.metrics.clone());
            ctx.spawn(work.into_actor(act).map(|outcome, act, _| {
                act.running = false;
                if matches!(outcome, Outcome::Changed(0)) {
                    act.resting = IDLE_INTERVALS;
                }
            }));
        });
    }
}
