//! The Raft actor's async work: writes with forwarding to the leader, linearizable read
//! barriers (leader lease check or follower read-index), status, and metrics export.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError as CwError;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, timeout_at, Instant};

use super::actor::RaftSettings;
use super::batcher::{Batcher, Committed, SubmitError};
use super::metrics::{RaftMetricsFamilies as Metrics, ReadPathLabels, RoleLabels};
use super::network::{PeerError, PeerNetwork};
use super::path;
use super::read_rounds::Rounds;
use crate::command::{CommandResult, Proposal};
use crate::error::{Error, Result};
use crate::typ::*;

/// What a committed write answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Log index of the entry.
    pub index: u64,
    /// The leader that committed it.
    pub leader_id: NodeId,
    pub result: CommandResult,
}

/// Membership as the status report shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MembershipReport {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Every member's advertised address.
    pub nodes: BTreeMap<NodeId, String>,
}

/// A peer's replication progress, on the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerReplication {
    pub matched_index: Option<u64>,
    /// Entries the peer is behind the leader's last log index.
    pub lag: u64,
}

/// `GET /admin/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub node_id: NodeId,
    /// The data format this node's build reads and writes (peers must agree).
    pub format: u32,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub membership: MembershipReport,
    /// Per peer, on the leader only.
    pub replication: Option<BTreeMap<NodeId, PeerReplication>>,
    pub millis_since_quorum_ack: Option<u64>,
}

pub fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

pub fn status_of(m: &RaftMetrics) -> StatusReport {
    let membership = m.membership_config.membership();
    let last = m.last_log_index.unwrap_or(0);
    StatusReport {
        node_id: m.id,
        format: crate::storage::manifest::FORMAT,
        role: role_name(m.state).to_string(),
        term: m.current_term,
        leader_id: m.current_leader,
        last_log_index: m.last_log_index,
        last_applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        membership: MembershipReport {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        },
        replication: m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, matched)| {
                    let matched_index = matched.map(|l| l.index);
                    let lag = last.saturating_sub(matched_index.unwrap_or(0));
                    (*id, PeerReplication { matched_index, lag })
                })
                .collect()
        }),
        millis_since_quorum_ack: m.millis_since_quorum_ack,
    }
}

/// Where to send a request this node cannot serve itself.
fn leader_of(raft: &Raft) -> Option<(NodeId, Node)> {
    let m = raft.metrics();
    let m = m.borrow();
    let leader = m.current_leader?;
    let node = m.membership_config.membership().get_node(&leader)?.clone();
    Some((leader, node))
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((25u64 << attempt.min(5)).min(500))
}

/// Commits `proposal`: through this node's batcher when it leads, else straight to the leader
/// (never through the local batcher, whose slots belong to this node's own leadership). Retries
/// through elections until `write_timeout`; a retry is safe because the proposal keeps its
/// idempotency key. At the deadline the answer says whether the write may still apply: once it
/// was handed to a leader (proposed, or sent and unanswered) it is a timeout (504, retry with
/// the same key); if no leader ever took it, there was no leader (503).
pub async fn write(
    raft: Raft,
    batcher: Arc<Batcher>,
    peers: PeerNetwork,
    settings: Arc<RaftSettings>,
    proposal: Proposal,
) -> Result<WriteOutcome> {
    let deadline = Instant::now() + settings.write_timeout;
    let mut attempt = 0;
    let mut may_have_applied = false;
    let mut last_error = "no leader was known".to_string();
    loop {
        attempt += 1;
        let leader = leader_of(&raft);
        let answer = match &leader {
            Some((id, _)) if *id == settings.node_id => {
                match timeout_at(deadline, batcher.submit(proposal.clone())).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        may_have_applied = true;
                        break;
                    }
                }
            }
            Some((id, node)) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let forwarded: std::result::Result<Committed, PeerError> =
                    peers.call(*id, node, path::FORWARD, &proposal, remaining).await;
                match forwarded {
                    Ok(answer) => answer,
                    Err(e) => {
                        may_have_applied |= e.may_have_arrived();
                        last_error = format!("forwarding to the leader, node {id}: {e}");
                        Err(not_leader())
                    }
                }
            }
            None => Err(not_leader()),
        };
        match answer {
            Ok((index, result)) => {
                let leader_id = leader.map(|(id, _)| id).unwrap_or(settings.node_id);
                return Ok(WriteOutcome { index, leader_id, result });
            }
            Err(SubmitError::Raft(e)) => match *e {
                RaftError::APIError(CwError::ForwardToLeader(_)) => {}
                RaftError::APIError(CwError::ChangeMembershipError(e)) => {
                    return Err(Error::Raft(e.to_string()))
                }
                RaftError::Fatal(_) => return Err(Error::ShuttingDown),
            },
            Err(SubmitError::Unconfirmed { timeout_ms }) => {
                may_have_applied = true;
                last_error = format!("the leader did not commit it within {timeout_ms} ms");
            }
            Err(e @ SubmitError::Overloaded { .. }) => return Err(Error::Overloaded(e.to_string())),
        }
        if Instant::now() + backoff(attempt) >= deadline {
            break;
        }
        sleep(backoff(attempt)).await;
    }
    Err(if may_have_applied {
        Error::Timeout(format!(
            "the write was not confirmed within {:?} ({last_error}); it may still apply: retry \
             with the same Idempotency-Key",
            settings.write_timeout
        ))
    } else {
        Error::NoLeader(format!("{last_error} within {:?}; nothing was written", settings.write_timeout))
    })
}

/// "Not the leader, none known": try again after a back-off.
pub(super) fn not_leader() -> SubmitError {
    SubmitError::Raft(Box::new(RaftError::APIError(CwError::ForwardToLeader(
        openraft::error::ForwardToLeader::empty(),
    ))))
}

/// What one read-index round confirmed.
#[derive(Clone, Debug)]
pub enum Confirmed {
    /// Reads that joined the round wait until this log id is applied.
    Read(Option<LogId>),
    /// No leadership was confirmed (not the leader, no quorum in time, no leader known).
    Unconfirmed,
    /// Raft is stopping.
    Stopped,
}

/// The read-index rounds of one node: `here` confirms this node's own leadership (for its
/// reads while it leads, and for the followers' read-index calls), `at_leader` asks the leader
/// (for its reads while it follows).
#[derive(Clone)]
pub struct ReadPaths {
    here: Arc<Rounds<Confirmed>>,
    at_leader: Arc<Rounds<Confirmed>>,
    /// How long one round may take: the same for every round, whoever started it (a bound
    /// taken from the first reader's remaining time would hand a reader near its deadline's
    /// few milliseconds to every round after it while readers keep coming).
    limit: Duration,
}

impl ReadPaths {
    pub fn new(metrics: &Metrics, limit: Duration) -> ReadPaths {
        let readers = |path: &str| {
            metrics.read_round_readers.get_or_create(&ReadPathLabels { path: path.to_string() }).clone()
        };
        ReadPaths { here: Rounds::new(readers("here")), at_leader: Rounds::new(readers("at_leader")), limit }
    }

    /// Joins the next round that confirms this node's leadership with a quorum. A round that
    /// ended without an answer (it panicked) counts as unconfirmed: the reader tries again.
    pub async fn confirm_here(&self, raft: &Raft) -> Confirmed {
        let (raft, limit) = (raft.clone(), self.limit);
        let confirm = move || {
            let raft = raft.clone();
            async move {
                match timeout(limit, raft.get_read_log_id()).await {
                    Ok(Ok((read, _applied))) => Confirmed::Read(read),
                    Ok(Err(RaftError::Fatal(_))) => Confirmed::Stopped,
                    Ok(Err(_)) | Err(_) => Confirmed::Unconfirmed,
                }
            }
        };
        self.here.join(confirm).await.unwrap_or(Confirmed::Unconfirmed)
    }

    /// Joins the next round that asks the leader this node knows for its read log id.
    async fn confirm_at_leader(&self, raft: &Raft, peers: &PeerNetwork) -> Confirmed {
        let (raft, peers, limit) = (raft.clone(), peers.clone(), self.limit);
        let confirm = move || {
            let (raft, peers) = (raft.clone(), peers.clone());
            async move {
                let Some((id, node)) = leader_of(&raft) else { return Confirmed::Unconfirmed };
                let answer: std::result::Result<
                    std::result::Result<Option<LogId>, RaftError<CheckIsLeaderError>>,
                    _,
                > = peers.call(id, &node, path::READ_INDEX, &(), limit).await;
                match answer {
                    Ok(Ok(read)) => Confirmed::Read(read),
                    _ => Confirmed::Unconfirmed,
                }
            }
        };
        self.at_leader.join(confirm).await.unwrap_or(Confirmed::Unconfirmed)
    }
}

/// Waits until a linearizable read may be served here; answers the applied index to read at.
/// The leader confirms its leadership with a quorum; a follower asks the leader for its read
/// log id and waits until it has applied that far. Either way through a batched round
/// (`read_rounds`), so concurrent reads share one confirmation.
pub async fn read_barrier(
    raft: Raft,
    peers: PeerNetwork,
    settings: Arc<RaftSettings>,
    reads: ReadPaths,
) -> Result<u64> {
    let deadline = Instant::now() + settings.read_timeout;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let confirmed = match leader_of(&raft) {
            Some((id, _)) if id == settings.node_id => timeout_at(deadline, reads.confirm_here(&raft)).await,
            Some(_) => timeout_at(deadline, reads.confirm_at_leader(&raft, &peers)).await,
            None => Ok(Confirmed::Unconfirmed),
        };
        match confirmed {
            Ok(Confirmed::Read(read)) => {
                let index = read.map(|l| l.index).unwrap_or(0);
                let remaining = deadline.saturating_duration_since(Instant::now());
                let m = raft
                    .wait(Some(remaining))
                    .applied_index_at_least(read.map(|l| l.index), "linearizable read")
                    .await
                    .map_err(|e| Error::Timeout(format!("applying up to the read index {index}: {e}")))?;
                return Ok(m.last_applied.map(|l| l.index).unwrap_or(0).max(index));
            }
            Ok(Confirmed::Stopped) => return Err(Error::ShuttingDown),
            Ok(Confirmed::Unconfirmed) | Err(_) => {}
        }
        if Instant::now() + backoff(attempt) >= deadline {
            return Err(Error::NoLeader(format!(
                "could not confirm a leader for a linearizable read within {:?}; use \
                 ?consistency=stale to read this node's state",
                settings.read_timeout
            )));
        }
        sleep(backoff(attempt)).await;
    }
}

/// Maps a membership change's failure, naming the leader when this node is not it.
pub fn membership_error(e: RaftError<ClientWriteError>) -> Error {
    match e {
        RaftError::APIError(CwError::ForwardToLeader(f)) => {
            Error::NotLeader { leader_id: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) }
        }
        RaftError::APIError(CwError::ChangeMembershipError(e)) => Error::Invalid(e.to_string()),
        RaftError::Fatal(_) => Error::ShuttingDown,
    }
}

/// Mirrors openraft's metrics into the Prometheus registry until Raft stops.
pub async fn export_metrics(mut rx: watch::Receiver<RaftMetrics>, metrics: Arc<Metrics>) {
    let mut last_leader = None;
    let mut last_state = None;
    loop {
        {
            let m = rx.borrow_and_update();
            for state in
                [ServerState::Leader, ServerState::Follower, ServerState::Candidate, ServerState::Learner]
            {
                let labels = RoleLabels { role: role_name(state).to_string() };
                metrics.role.get_or_create(&labels).set(i64::from(m.state == state));
            }
            if m.state == ServerState::Candidate && last_state != Some(ServerState::Candidate) {
                metrics.elections.inc();
            }
            if m.current_leader != last_leader {
                metrics.leader_changes.inc();
                last_leader = m.current_leader;
            }
            last_state = Some(m.state);
            metrics.term.set(m.current_term as i64);
            metrics.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
            metrics.last_applied_index.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
