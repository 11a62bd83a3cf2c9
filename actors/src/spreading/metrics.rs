//! Spreading's metric families: spread latency (whole and per hop), spreads by outcome,
//! activations, hops and result confidence, cycles, concurrent spreads, and the index's size,
//! builds and updates.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{seconds, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// ok, deadline, invalid, not_found, unavailable, refused (breaker open).
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct SpreadingMetrics {
    pub spread_seconds: Histogram,
    pub hop_seconds: Histogram,
    pub spreads: Family<OutcomeLabel, Counter>,
    pub activations: Counter,
    pub hops: Histogram,
    pub result_confidence: Histogram,
    pub cycles: Counter,
    pub concurrent: Gauge,
    pub index_atoms: Gauge,
    pub index_memory_bytes: Gauge,
    pub index_applied_index: Gauge,
    pub index_build_seconds: Histogram,
    pub index_rebuilds: Counter,
    pub index_updates: Counter,
    pub index_compactions: Counter,
}

impl SpreadingMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = SpreadingMetrics {
            spread_seconds: seconds(),
            hop_seconds: seconds(),
            spreads: Family::default(),
            activations: Counter::default(),
            hops: Histogram::new((1..=16).map(f64::from)),
            result_confidence: Histogram::new(
                [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0].into_iter(),
            ),
            cycles: Counter::default(),
            concurrent: Gauge::default(),
            index_atoms: Gauge::default(),
            index_memory_bytes: Gauge::default(),
            index_applied_index: Gauge::default(),
            index_build_seconds: seconds(),
            index_rebuilds: Counter::default(),
            index_updates: Counter::default(),
            index_compactions: Counter::default(),
        };
        let reg = reg.sub_registry_with_prefix("spreading");
        reg.register("spread_seconds", "Time to answer one spread", m.spread_seconds.clone());
        reg.register("hop_seconds", "Time one hop of a spread took", m.hop_seconds.clone());
        reg.register("spreads", "Spreads by outcome", m.spreads.clone());
        reg.register("activations", "Transfers of activation to an atom", m.activations.clone());
        reg.register("hops", "Hops a spread completed", m.hops.clone());
        reg.register("result_confidence", "Path confidence of returned results", m.result_confidence.clone());
        reg.register(
            "cycles",
            "Activation that arrived at an atom reached in an earlier hop",
            m.cycles.clone(),
        );
        reg.register("concurrent_spreads", "Spreads running now", m.concurrent.clone());
        reg.register("index_atoms", "Live atoms in the spreading index", m.index_atoms.clone());
        reg.register("index_memory_bytes", "Heap bytes of the spreading index", m.index_memory_bytes.clone());
        reg.register(
            "index_applied_index",
            "Applied index the spreading index reflects",
            m.index_applied_index.clone(),
        );
        reg.register(
            "index_build_seconds",
            "Time to build the index from storage",
            m.index_build_seconds.clone(),
        );
        reg.register(
            "index_rebuilds",
            "Index builds from storage after the start (gaps, lag, installs)",
            m.index_rebuilds.clone(),
        );
        reg.register("index_updates", "Applied announcements folded into the index", m.index_updates.clone());
        reg.register("index_compactions", "Compactions of a space's index", m.index_compactions.clone());
        m
    }

    pub fn outcome(&self, outcome: &'static str) {
        self.spreads.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
