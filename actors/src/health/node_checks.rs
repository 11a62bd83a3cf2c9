//! The checks every node registers: actors answer (liveness); a leader is known, storage takes
//! writes, and apply keeps up with commit (readiness).

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

/// Healthy or Unhealthy from a check that knows no middle ground.
fn verdict<'a>(
    check: impl std::future::Future<Output = Result<String, String>> + Send + 'a,
) -> BoxFuture<'a, Health> {
    Box::pin(async move { Health::from_result(check.await) })
}
