//! The health monitor's metric families: each check's status and the node's worst.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
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
}

impl HealthMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = HealthMetrics { check_status: Family::default(), status: Gauge::default() };
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
        m
    }
}
