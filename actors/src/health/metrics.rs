//! The health monitor's metric families: each check's status, the node's worst, and its score.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabel {
    pub check: String,
}

#[derive(Clone)]
pub struct HealthMetrics {
    /// 0 healthy, 1 degraded, 2 unhealthy, per check, as of the monitor's last run.
    pub check_status: Family<CheckLabel, Gauge>,
    /// The worst of them.
    pub status: Gauge,
    /// The last run's score in [0, 1] (see `trend`).
    pub score: Gauge<f64, AtomicU64>,
}

impl HealthMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = HealthMetrics {
            check_status: Family::default(),
            status: Gauge::default(),
            score: Gauge::default(),
        };
        let reg = reg.sub_registry_with_prefix("health");
        reg.register(
            "check_status",
            "A health check's last verdict: 0 healthy, 1 degraded, 2 unhealthy",
            m.check_status.clone(),
        );
        reg.register(
            "status",
            "The worst health check verdict: 0 healthy, 1 degraded, 2 unhealthy",
            m.status.clone(),
        );
        reg.register(
            "score",
            "The last health run's score: 1 all healthy, less for each degraded (half) or unhealthy check, probe checks weighing double",
            m.score.clone(),
        );
        m
    }
}
