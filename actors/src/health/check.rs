//! The one health-check interface: components implement [`Check`] and register into
//! [`HealthChecks`]; `/healthz` runs the liveness probes and `/readyz` the readiness probes.

use std::sync::{Arc, RwLock};

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
}

/// One named check's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// A health check. Implementations must answer promptly; the caller bounds them with a timeout.
pub trait Check: Send + Sync {
    fn name(&self) -> &str;
    fn probe(&self) -> Probe;
    fn run(&self) -> BoxFuture<'_, Result<String, String>>;
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
    pub async fn run(&self, probe: Probe, timeout: std::time::Duration) -> Vec<CheckReport> {
        let checks: Vec<_> = self
            .checks
            .read()
            .expect("health checks lock")
            .iter()
            .filter(|c| c.probe() == probe)
            .cloned()
            .collect();
        let mut reports = Vec::with_capacity(checks.len());
        for check in checks {
            let (ok, detail) = match tokio::time::timeout(timeout, check.run()).await {
                Ok(Ok(detail)) => (true, detail),
                Ok(Err(detail)) => (false, detail),
                Err(_) => (false, format!("no answer within {timeout:?}")),
            };
            reports.push(CheckReport { name: check.name().to_string(), ok, detail });
        }
        reports
    }
}
