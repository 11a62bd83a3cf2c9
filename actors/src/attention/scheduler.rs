//! AttentionScheduler: on the leader, every `interval`, proposes one [`Command::Attention`]
//! step with the leader's [`AttentionStep`], when some atom holds attention (an idle graph
//! gets no entries) and the previous step has finished (steps never pile up behind a slow
//! commit). Followers do nothing: the step reaches them through the log. Accepts no messages.

use std::time::Duration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use openraft::ServerState;
use tokio::sync::watch;

use super::metrics::AttentionMetrics;
use crate::command::{AttentionStep, Command, CommandResult, Proposal};
use crate::model::DEFAULT_SPACE;
use crate::raft::actor::Write;
use crate::raft::RaftActor;
use crate::storage::actor::{Query, StorageActor};
use crate::typ::{NodeId, RaftMetrics};

pub struct AttentionScheduler {
    node_id: NodeId,
    step: AttentionStep,
    interval: Duration,
    raft: Addr<RaftActor>,
    raft_metrics: watch::Receiver<RaftMetrics>,
    storage: Addr<StorageActor>,
    metrics: AttentionMetrics,
    running: bool,
}

impl AttentionScheduler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        step: AttentionStep,
        interval: Duration,
        raft: Addr<RaftActor>,
        raft_metrics: watch::Receiver<RaftMetrics>,
        storage: Addr<StorageActor>,
        metrics: AttentionMetrics,
    ) -> Self {
        AttentionScheduler { node_id, step, interval, raft, raft_metrics, storage, metrics, running: false }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft_metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// Proposes one step if some atom holds attention, and counts how it went.
    async fn propose(
        step: AttentionStep,
        raft: Addr<RaftActor>,
        storage: Addr<StorageActor>,
        metrics: AttentionMetrics,
    ) {
        match storage.send(Query::new(|v| v.holds_any_attention())).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return,
            Ok(Err(e)) => return tracing::warn!(error = %e, "attention: cannot read the attention table"),
            Err(e) => return tracing::warn!(error = %e, "attention: the storage actor is gone"),
        }
        let proposal = Proposal {
            key: String::new(),
            time_ms: crate::now_ms(),
            space: DEFAULT_SPACE.to_string(),
            command: Command::Attention { step },
        };
        match raft.send(Write(proposal)).await {
            Ok(Ok(outcome)) => {
                metrics.step("committed");
                if let CommandResult::Attended { changed, .. } = outcome.result {
                    metrics.changed.inc_by(changed);
                }
            }
            Ok(Err(e)) => {
                metrics.step("failed");
                tracing::debug!(error = %e, "attention step not committed");
            }
            Err(e) => {
                metrics.step("failed");
                tracing::warn!(error = %e, "attention: the Raft actor is gone");
            }
        }
    }
}

impl Actor for AttentionScheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| {
            if act.running || !act.is_leader() {
                return;
            }
            act.running = true;
            let work = Self::propose(act.step, act.raft.clone(), act.storage.clone(), act.metrics.clone());
            ctx.spawn(work.into_actor(act).map(|_, act, _| act.running = false));
        });
    }
}
