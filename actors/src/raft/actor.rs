//! RaftActor: owns `openraft::Raft` on its own Arbiter, so HTTP workers never run Raft work.
//! Every handler returns a `ResponseFuture`, so concurrent writes overlap instead of queueing
//! behind each other. On the leader it proposes a periodic `Tick` (the cluster's clock).
//!
//! Accepts: [`Write`], [`ReadBarrier`], [`AppendEntries`], [`RequestVote`],
//! [`InstallSnapshot`], [`ForwardedWrite`], [`ReadIndex`], [`Initialize`], [`AddLearner`],
//! [`ChangeMembership`], [`GetStatus`], [`TriggerSnapshot`], [`WatchMetrics`], [`Shutdown`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message, ResponseFuture};
use openraft::{ChangeMembers, ServerState};
use tokio::sync::{oneshot, watch};

use super::batcher::{Batcher, BatcherLimits, Committed};
use super::metrics::RaftMetricsFamilies as Metrics;
use super::network::PeerNetwork;
use super::ops::{self, status_of};
use crate::command::{Command, Proposal};
use crate::error::{Error, Result};
use crate::storage::{LogStore, StateMachine};
use crate::typ::*;

pub use super::ops::{StatusReport, WriteOutcome};

/// Raft timing and policy, from the node's configuration.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    pub node_id: NodeId,
    pub cluster_name: String,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind the last snapshot (for slow followers).
    pub keep_entries_after_snapshot: u64,
    /// How often the leader proposes a `Tick`.
    pub tick_interval: Duration,
    /// How long a write may wait for commit (including forwarding and elections).
    pub write_timeout: Duration,
    /// How long a linearizable read may wait for its barrier.
    pub read_timeout: Duration,
    /// Entries a leader keeps in flight before it batches waiting proposals into one.
    pub max_in_flight: usize,
    /// Largest encoded entry (proposals are batched up to this size).
    pub max_entry_bytes: usize,
    /// Proposals that may wait on the leader for an in-flight slot; more answer 503.
    pub max_queued_writes: usize,
    /// How long the leader waits for a snapshot chunk's answer; the last one waits for the
    /// follower's whole install, minutes at a million atoms.
    pub install_snapshot_timeout_ms: u64,
    /// What the leader's ticks ask every replica to do (retention, space deletion budget).
    pub maintenance: crate::command::Maintenance,
}

/// Proposes a client write; forwards it to the leader when this node is not the leader.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome>")]
pub struct Write(pub Proposal);

/// Waits until this node may answer a linearizable read; answers the applied index to read at.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct ReadBarrier;

/// A peer's AppendEntries RPC.
#[derive(Message)]
#[rtype(result = "std::result::Result<AppendEntriesResponse, RaftError>")]
pub struct AppendEntries(pub AppendEntriesRequest);

/// A peer's RequestVote RPC.
#[derive(Message)]
#[rtype(result = "std::result::Result<VoteResponse, RaftError>")]
pub struct RequestVote(pub VoteRequest);

/// A peer's InstallSnapshot RPC (one chunk).
#[derive(Message)]
#[rtype(result = "std::result::Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>")]
pub struct InstallSnapshot(pub InstallSnapshotRequest);

/// A proposal of this node's own housekeeping (an attention step): submitted here while this
/// node leads, never forwarded nor retried elsewhere; on another node it answers not-leader.
#[derive(Message)]
#[rtype(result = "Committed")]
pub struct ProposeAsLeader(pub Proposal);

/// A write a follower forwarded to this node; it is not forwarded again. Answers its log index
/// and result, or why it was not committed (the follower maps that to its client's answer).
#[derive(Message)]
#[rtype(result = "Committed")]
pub struct ForwardedWrite(pub Proposal);

/// A follower asks for the log id its linearizable read must wait for.
#[derive(Message)]
#[rtype(result = "std::result::Result<Option<LogId>, RaftError<CheckIsLeaderError>>")]
pub struct ReadIndex;

/// Initialises a new cluster with these voters.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Initialize(pub BTreeMap<NodeId, Node>);

/// Adds a learner and waits until it has caught up; answers the membership log index.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct AddLearner {
    pub id: NodeId,
    pub addr: String,
}

/// Changes the voter set (`retain`: keep removed voters as learners).
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct ChangeMembership {
    pub change: ChangeMembers<NodeId, Node>,
    pub retain: bool,
}

/// Reports role, term, indexes, membership and (on the leader) replication lag.
#[derive(Message)]
#[rtype(result = "StatusReport")]
pub struct GetStatus;

/// Builds a snapshot now (the log is purged behind it by policy).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct TriggerSnapshot;

/// Hands out a receiver of openraft's metrics (for readiness and status without a round trip).
#[derive(Message)]
#[rtype(result = "watch::Receiver<RaftMetrics>")]
pub struct WatchMetrics;

/// Stops Raft; later messages answer `ShuttingDown`.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Shutdown;

pub struct RaftActor {
    raft: Raft,
    batcher: Arc<Batcher>,
    settings: Arc<RaftSettings>,
    peers: PeerNetwork,
    metrics: Arc<Metrics>,
    reads: ops::ReadPaths,
}

impl RaftActor {
    /// Builds Raft on a new Arbiter and starts the actor there.
    pub async fn spawn(
        settings: RaftSettings,
        log: LogStore,
        state_machine: StateMachine,
        peers: PeerNetwork,
        metrics: Arc<Metrics>,
    ) -> Result<(Addr<RaftActor>, Arbiter)> {
        let arbiter = Arbiter::new();
        let (tx, rx) = oneshot::channel();
        let config = openraft::Config {
            cluster_name: settings.cluster_name.clone(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_after_entries),
            max_in_snapshot_log_to_keep: settings.keep_entries_after_snapshot,
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: settings.install_snapshot_timeout_ms,
            max_payload_entries: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Invalid(format!("raft settings: {e}")))?;
        arbiter.spawn(async move {
            let started =
                Raft::new(settings.node_id, Arc::new(config), peers.clone(), log, state_machine).await;
            let answer = started.map(|raft| {
                let limits = BatcherLimits {
                    max_in_flight: settings.max_in_flight,
                    max_entry_bytes: settings.max_entry_bytes,
                    max_queued: settings.max_queued_writes,
                    commit_timeout: settings.write_timeout,
                };
                let batcher = Batcher::new(raft.clone(), limits, (*metrics).clone());
                let reads = ops::ReadPaths::new(&metrics, settings.read_timeout);
                RaftActor { raft, batcher, settings: Arc::new(settings), peers, metrics, reads }.start()
            });
            let _ = tx.send(answer.map_err(|e| Error::Raft(e.to_string())));
        });
        let addr = rx.await.map_err(|_| Error::Raft("the Raft arbiter stopped while starting".into()))??;
        Ok((addr, arbiter))
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.settings.node_id)
    }
}

impl Actor for RaftActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        actix::spawn(ops::export_metrics(self.raft.metrics(), self.metrics.clone()));
        ctx.run_interval(self.settings.tick_interval, |act, _| {
            if !act.is_leader() {
                return;
            }
            let batcher = act.batcher.clone();
            let time_ms = crate::now_ms();
            let maintenance = act.settings.maintenance;
            actix::spawn(async move {
                let tick = Proposal {
                    key: String::new(),
                    time_ms,
                    space: crate::model::DEFAULT_SPACE.to_string(),
                    command: Command::Tick { maintenance },
                };
                if let Err(e) = batcher.submit(tick).await {
                    tracing::debug!(error = %e, "tick not committed");
                }
            });
        });
    }
}

impl Handler<Write> for RaftActor {
    type Result = ResponseFuture<Result<WriteOutcome>>;
    fn handle(&mut self, msg: Write, _: &mut Context<Self>) -> Self::Result {
        Box::pin(ops::write(
            self.raft.clone(),
            self.batcher.clone(),
            self.peers.clone(),
            self.settings.clone(),
            msg.0,
        ))
    }
}

impl Handler<ReadBarrier> for RaftActor {
    type Result = ResponseFuture<Result<u64>>;
    fn handle(&mut self, _: ReadBarrier, _: &mut Context<Self>) -> Self::Result {
        Box::pin(ops::read_barrier(
            self.raft.clone(),
            self.peers.clone(),
            self.settings.clone(),
            self.reads.clone(),
        ))
    }
}

impl Handler<AppendEntries> for RaftActor {
    type Result = ResponseFuture<std::result::Result<AppendEntriesResponse, RaftError>>;
    fn handle(&mut self, msg: AppendEntries, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move { raft.append_entries(msg.0).await })
    }
}

impl Handler<RequestVote> for RaftActor {
    type Result = ResponseFuture<std::result::Result<VoteResponse, RaftError>>;
    fn handle(&mut self, msg: RequestVote, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move { raft.vote(msg.0).await })
    }
}

impl Handler<InstallSnapshot> for RaftActor {
    type Result =
        ResponseFuture<std::result::Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>>;
    fn handle(&mut self, msg: InstallSnapshot, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move { raft.install_snapshot(msg.0).await })
    }
}

impl Handler<ForwardedWrite> for RaftActor {
    type Result = ResponseFuture<Committed>;
    fn handle(&mut self, msg: ForwardedWrite, _: &mut Context<Self>) -> Self::Result {
        let batcher = self.batcher.clone();
        Box::pin(async move { batcher.submit(msg.0).await })
    }
}

impl Handler<ProposeAsLeader> for RaftActor {
    type Result = ResponseFuture<Committed>;
    fn handle(&mut self, msg: ProposeAsLeader, _: &mut Context<Self>) -> Self::Result {
        if !self.is_leader() {
            return Box::pin(async { Err(ops::not_leader()) });
        }
        let batcher = self.batcher.clone();
        Box::pin(async move { batcher.submit(msg.0).await })
    }
}

impl Handler<ReadIndex> for RaftActor {
    type Result = ResponseFuture<std::result::Result<Option<LogId>, RaftError<CheckIsLeaderError>>>;
    fn handle(&mut self, _: ReadIndex, _: &mut Context<Self>) -> Self::Result {
        // Joins this node's read rounds, so the followers' reads and its own share them.
        let (raft, reads) = (self.raft.clone(), self.reads.clone());
        Box::pin(async move {
            match reads.confirm_here(&raft).await {
                ops::Confirmed::Read(read) => Ok(read),
                ops::Confirmed::Stopped => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
                ops::Confirmed::Unconfirmed => Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(
                    openraft::error::ForwardToLeader::empty(),
                ))),
            }
        })
    }
}

impl Handler<Initialize> for RaftActor {
    type Result = ResponseFuture<Result<()>>;
    fn handle(&mut self, msg: Initialize, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            raft.initialize(msg.0).await.map_err(|e| match e {
                RaftError::APIError(openraft::error::InitializeError::NotAllowed(_)) => {
                    Error::AlreadyInitialized
                }
                other => Error::Raft(other.to_string()),
            })
        })
    }
}

impl Handler<AddLearner> for RaftActor {
    type Result = ResponseFuture<Result<u64>>;
    fn handle(&mut self, msg: AddLearner, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            let node = Node { addr: msg.addr };
            let response = raft.add_learner(msg.id, node, true).await.map_err(ops::membership_error)?;
            Ok(response.log_id.index)
        })
    }
}

impl Handler<ChangeMembership> for RaftActor {
    type Result = ResponseFuture<Result<u64>>;
    fn handle(&mut self, msg: ChangeMembership, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move {
            let response =
                raft.change_membership(msg.change, msg.retain).await.map_err(ops::membership_error)?;
            Ok(response.log_id.index)
        })
    }
}

impl Handler<GetStatus> for RaftActor {
    type Result = actix::MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(status_of(&self.raft.metrics().borrow()))
    }
}

impl Handler<TriggerSnapshot> for RaftActor {
    type Result = ResponseFuture<Result<()>>;
    fn handle(&mut self, _: TriggerSnapshot, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move { raft.trigger().snapshot().await.map_err(|e| Error::Raft(e.to_string())) })
    }
}

impl Handler<WatchMetrics> for RaftActor {
    type Result = actix::MessageResult<WatchMetrics>;
    fn handle(&mut self, _: WatchMetrics, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.raft.metrics())
    }
}

impl Handler<Shutdown> for RaftActor {
    type Result = ResponseFuture<Result<()>>;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let raft = self.raft.clone();
        Box::pin(async move { raft.shutdown().await.map_err(|e| Error::Raft(e.to_string())) })
    }
}
