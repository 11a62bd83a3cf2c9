//! The checks every node registers: actors answer (liveness); a leader is known, storage takes
//! writes, and apply keeps up with commit (readiness); and, in the report only, the leader's
//! quorum contact and replication lag, and the data directory's free space.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use actix::Addr;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::check::{Check, Health, Probe};
use crate::raft::actor::GetStatus;
use crate::raft::RaftActor;
use crate::storage::actor::{Query, StorageActor};
use crate::storage::Db;
use crate::typ::RaftMetrics;

/// The Raft actor answers a status request.
pub struct RaftAlive(pub Addr<RaftActor>);

impl Check for RaftAlive {
    fn name(&self) -> &str {
        "raft_actor"
    }
    fn probe(&self) -> Probe {
        Probe::Liveness
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        verdict(async move {
            let s = self.0.send(GetStatus).await.map_err(|e| e.to_string())?;
            Ok(format!("{} in term {}", s.role, s.term))
        })
    }
}

/// The storage read pool answers.
pub struct StorageAlive(pub Addr<StorageActor>);

impl Check for StorageAlive {
    fn name(&self) -> &str {
        "storage_actor"
    }
    fn probe(&self) -> Probe {
        Probe::Liveness
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        verdict(async move {
            let index = self.0.send(Query::new(|r| r.applied_index())).await.map_err(|e| e.to_string())?;
            index.map(|i| format!("applied index {i}")).map_err(|e| e.to_string())
        })
    }
}

/// The node is not shutting down.
pub struct Serving(pub Arc<AtomicBool>);

impl Check for Serving {
    fn name(&self) -> &str {
        "serving"
    }
    fn probe(&self) -> Probe {
        Probe::Readiness
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let serving = self.0.load(Ordering::Relaxed);
        verdict(async move {
            if serving {
                Ok("accepting requests".into())
            } else {
                Err("shutting down".into())
            }
        })
    }
}

/// A leader is known.
pub struct LeaderKnown(pub watch::Receiver<RaftMetrics>);

impl Check for LeaderKnown {
    fn name(&self) -> &str {
        "leader_known"
    }
    fn probe(&self) -> Probe {
        Probe::Readiness
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let leader = self.0.borrow().current_leader;
        verdict(async move {
            leader.map(|l| format!("leader is node {l}")).ok_or_else(|| "no leader known".into())
        })
    }
}

/// sled accepts a write (outside the state machine and log).
pub struct StorageWritable(pub Db);

impl Check for StorageWritable {
    fn name(&self) -> &str {
        "storage_writable"
    }
    fn probe(&self) -> Probe {
        Probe::Readiness
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let db = self.0.clone();
        verdict(async move {
            tokio::task::spawn_blocking(move || {
                db.sled.insert("readiness_probe", &crate::now_ms().to_be_bytes()[..])
            })
            .await
            .map_err(|e| e.to_string())?
            .map(|_| "sled accepts writes".to_string())
            .map_err(|e| format!("sled refuses writes: {e}"))
        })
    }
}

/// Apply is within `max_lag` entries of the newest commit index heard of.
pub struct AppliedCaughtUp {
    pub metrics: watch::Receiver<RaftMetrics>,
    pub committed: Arc<AtomicU64>,
    pub max_lag: u64,
}

impl Check for AppliedCaughtUp {
    fn name(&self) -> &str {
        "applied_caught_up"
    }
    fn probe(&self) -> Probe {
        Probe::Readiness
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let applied = self.metrics.borrow().last_applied.map(|l| l.index).unwrap_or(0);
        let committed = self.committed.load(Ordering::Relaxed);
        let lag = committed.saturating_sub(applied);
        let max = self.max_lag;
        verdict(async move {
            let detail = format!("applied {applied}, committed {committed}, lag {lag} (max {max})");
            if lag <= max {
                Ok(detail)
            } else {
                Err(detail)
            }
        })
    }
}

/// On the leader: how long since a quorum acknowledged it. Longer than the election timeout is
/// Degraded (followers may be electing another), five times that Unhealthy.
pub struct QuorumContact {
    pub metrics: watch::Receiver<RaftMetrics>,
    pub election_timeout_ms: u64,
}

impl Check for QuorumContact {
    fn name(&self) -> &str {
        "quorum_contact"
    }
    fn probe(&self) -> Probe {
        Probe::Report
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let (leader, since) = {
            let m = self.metrics.borrow();
            (m.state == openraft::ServerState::Leader, m.millis_since_quorum_ack)
        };
        let limit = self.election_timeout_ms;
        Box::pin(async move {
            match (leader, since) {
                (false, _) => Health::Healthy("not the leader".into()),
                (true, None) => Health::Degraded("no quorum has acknowledged this leader yet".into()),
                (true, Some(ms)) if ms > 5 * limit => {
                    Health::Unhealthy(format!("no quorum acknowledged this leader for {ms} ms"))
                }
                (true, Some(ms)) if ms > limit => Health::Degraded(format!(
                    "no quorum acknowledged this leader for {ms} ms (election timeout {limit} ms)"
                )),
                (true, Some(ms)) => Health::Healthy(format!("a quorum acknowledged {ms} ms ago")),
            }
        })
    }
}

/// On the leader: every follower within `max_lag` entries of the leader's log.
pub struct ReplicationLag {
    pub metrics: watch::Receiver<RaftMetrics>,
    pub max_lag: u64,
}

impl Check for ReplicationLag {
    fn name(&self) -> &str {
        "replication_lag"
    }
    fn probe(&self) -> Probe {
        Probe::Report
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let (last, peers) = {
            let m = self.metrics.borrow();
            (m.last_log_index.unwrap_or(0), m.replication.clone())
        };
        let max = self.max_lag;
        Box::pin(async move {
            let Some(peers) = peers else { return Health::Healthy("not the leader".into()) };
            let behind: Vec<String> = peers
                .iter()
                .filter_map(|(id, matched)| {
                    let lag = last.saturating_sub(matched.map(|l| l.index).unwrap_or(0));
                    (lag > max).then(|| format!("node {id} is {lag} entries behind"))
                })
                .collect();
            if behind.is_empty() {
                Health::Healthy(format!("{} followers within {max} entries", peers.len().saturating_sub(1)))
            } else {
                Health::Degraded(behind.join(", "))
            }
        })
    }
}

/// Room left on the data directory's file system: below 5% or 512 MiB Degraded, below 1% or
/// 64 MiB Unhealthy (writes will soon fail).
pub struct DiskSpace(pub std::path::PathBuf);

impl Check for DiskSpace {
    fn name(&self) -> &str {
        "disk_space"
    }
    fn probe(&self) -> Probe {
        Probe::Report
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        let stat = nix::sys::statvfs::statvfs(&self.0);
        let dir = self.0.display().to_string();
        Box::pin(async move {
            let stat = match stat {
                Ok(stat) => stat,
                Err(e) => return Health::Unhealthy(format!("cannot stat {dir}: {e}")),
            };
            let block = stat.fragment_size() as u64;
            let (free, total) = (stat.blocks_available() as u64 * block, stat.blocks() as u64 * block);
            let share = if total == 0 { 0.0 } else { free as f64 / total as f64 };
            let detail =
                format!("{} MiB free of {} MiB ({:.1}%) under {dir}", free >> 20, total >> 20, share * 100.0);
            if share < 0.01 || free < 64 << 20 {
                Health::Unhealthy(detail)
            } else if share < 0.05 || free < 512 << 20 {
                Health::Degraded(detail)
            } else {
                Health::Healthy(detail)
            }
        })
    }
}

/// Healthy or Unhealthy from a check that knows no middle ground.
fn verdict<'a>(
    check: impl std::future::Future<Output = Result<String, String>> + Send + 'a,
) -> BoxFuture<'a, Health> {
    Box::pin(async move { Health::from_result(check.await) })
}
