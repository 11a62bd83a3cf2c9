//! The one health-check interface: components implement [`Check`] and register into
//! [`HealthChecks`]. A check answers `Healthy | Degraded(reason) | Unhealthy(reason)`; `/healthz`
//! runs the liveness checks and `/readyz` the readiness checks, and only an Unhealthy one fails
//! its probe (Degraded shows in `/admin/health` and the metrics, never in the probes, so a slow
//! machine does not flap readiness). Component checks (`Probe::Report`) gate no probe at all.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;

/// Which probe a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// The process can make progress (actors answer).
    Liveness,
    /// The node should receive traffic.
    Readiness,
    /// A component's own health (spreading, inference): reported by the health monitor in
    /// `/admin/health` and the metrics, never a reason to restart the node or take it out of
    /// rotation (writes and reads work without it).
    Report,
}

/// A check's verdict, with what it saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Health {
    Healthy(String),
    Degraded(String),
    Unhealthy(String),
}

impl Health {
    /// 0 healthy, 1 degraded, 2 unhealthy: the order of badness, and the metric's value.
    pub fn level(&self) -> u8 {
        match self {
            Health::Healthy(_) => 0,
            Health::Degraded(_) => 1,
            Health::Unhealthy(_) => 2,
        }
    }

    pub fn status(&self) -> &'static str {
        match self {
            Health::Healthy(_) => "healthy",
            Health::Degraded(_) => "degraded",
            Health::Unhealthy(_) => "unhealthy",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Health::Healthy(d) | Health::Degraded(d) | Health::Unhealthy(d) => d,
        }
    }

    /// Healthy with `detail` on `Ok`, Unhealthy with the error on `Err`: for checks that know
    /// no middle ground.
    pub fn from_result(result: Result<String, String>) -> Health {
        match result {
            Ok(detail) => Health::Healthy(detail),
            Err(reason) => Health::Unhealthy(reason),
        }
    }
}

/// One named check's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub probe: Probe,
    /// False only when the check is Unhealthy: what the probes go by.
    pub ok: bool,
    #[serde(flatten)]
    pub health: Health,
}

/// A health check. Implementations must answer promptly; the caller bounds them with a timeout.
pub trait Check: Send + Sync {
    fn name(&self) -> &str;
    fn probe(&self) -> Probe;
    fn run(&self) -> BoxFuture<'_, Health>;
}

/// The registered checks of one node.
#[derive(Clone, Default)]
pub struct HealthChecks {
    checks: Arc<RwLock<Vec<Arc<dyn Check>>>>,
}

impl HealthChecks {
    pub fn register(&self, check: Arc<dyn Check>) {
        self.checks.write().expect("health checks lock").push(check);
    }

    /// Runs every check of `probe`, each bounded by `timeout`.
    pub async fn run(&self, probe: Probe, timeout: Duration) -> Vec<CheckReport> {
        self.run_matching(|p| p == probe, timeout).await
    }

    /// Runs every check, each bounded by `timeout`.
    pub async fn run_all(&self, timeout: Duration) -> Vec<CheckReport> {
        self.run_matching(|_| true, timeout).await
    }

    async fn run_matching(&self, wanted: impl Fn(Probe) -> bool, timeout: Duration) -> Vec<CheckReport> {
        let checks: Vec<_> = self
            .checks
            .read()
            .expect("health checks lock")
            .iter()
            .filter(|c| wanted(c.probe()))
            .cloned()
            .collect();
        let mut reports = Vec::with_capacity(checks.len());
        for check in checks {
            let health = match tokio::time::timeout(timeout, check.run()).await {
                Ok(health) => health,
                Err(_) => Health::Unhealthy(format!("no answer within {timeout:?}")),
            };
            reports.push(CheckReport {
                name: check.name().to_string(),
                probe: check.probe(),
                ok: health.level() < 2,
                health,
            });
        }
        reports
    }
}
