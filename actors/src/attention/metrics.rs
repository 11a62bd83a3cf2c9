//! The attention scheduler's metric families: steps proposed by outcome, and the attention
//! values they changed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// committed, or failed (not committed: lost leadership, timeout, storage error).
    pub outcome: String,
}

#[derive(Clone)]
pub struct AttentionMetrics {
    pub steps: Family<OutcomeLabel, Counter>,
    pub changed: Counter,
}

impl AttentionMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = AttentionMetrics { steps: Family::default(), changed: Counter::default() };
        let reg = reg.sub_registry_with_prefix("attention");
        reg.register("steps", "ECAN steps this node proposed as leader, by outcome", m.steps.clone());
        reg.register(
            "changed_values",
            "Attention values the committed ECAN steps this node proposed changed",
            m.changed.clone(),
        );
        m
    }

    pub fn step(&self, outcome: &str) {
        self.steps.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
    }
}
