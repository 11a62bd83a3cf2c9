//! The inference pool's metric families, labelled by pool (`embedding`): workers running, jobs
//! waiting for one, worker losses by reason, requests by outcome, and request latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{seconds, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LossLabels {
    pub pool: &'static str,
    /// crash (died during a request), timeout (killed after request_timeout_ms), start (could
    /// not load its model).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub pool: &'static str,
    /// ok, failed (the worker refused the input), crashed (its worker was lost), timeout (no
    /// worker answered in time), overloaded (queue full), refused (breaker open), unavailable
    /// (the pool closed).
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct InferenceMetrics {
    pub workers: Family<PoolLabel, Gauge>,
    pub queue_depth: Family<PoolLabel, Gauge>,
    pub worker_losses: Family<LossLabels, Counter>,
    pub requests: Family<OutcomeLabels, Counter>,
    pub request_seconds: Family<PoolLabel, Histogram, fn() -> Histogram>,
}

impl InferenceMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = InferenceMetrics {
            workers: Family::default(),
            queue_depth: Family::default(),
            worker_losses: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds),
        };
        let reg = reg.sub_registry_with_prefix("inference");
        reg.register("workers", "Inference worker processes running", m.workers.clone());
        reg.register("queue_depth", "Inference requests waiting for a worker", m.queue_depth.clone());
        reg.register("worker_losses", "Inference workers lost, by reason", m.worker_losses.clone());
        reg.register("requests", "Inference requests by outcome", m.requests.clone());
        reg.register(
            "request_seconds",
            "Time from a request's arrival to its answer",
            m.request_seconds.clone(),
        );
        m
    }
}
