//! Similarity's metric families: searches and clusterings by outcome and their latency,
//! queries per search, the vector index's size, builds and updates, the embedding backfill's
//! work, and structural embedding builds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{seconds, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// ok, invalid, not_found, unavailable, error.
    pub outcome: &'static str,
}

impl OutcomeLabel {
    pub fn of<T>(reply: &crate::error::Result<T>) -> OutcomeLabel {
        use crate::error::Error;
        let outcome = match reply {
            Ok(_) => "ok",
            Err(Error::Invalid(_)) => "invalid",
            Err(Error::NotFound { .. }) => "not_found",
            Err(Error::Unavailable { .. }) => "unavailable",
            Err(_) => "error",
        };
        OutcomeLabel { outcome }
    }
}

#[derive(Clone)]
pub struct SimilarityMetrics {
    pub search_seconds: Histogram,
    pub searches: Family<OutcomeLabel, Counter>,
    pub queries: Counter,
    pub cluster_seconds: Histogram,
    pub clusterings: Family<OutcomeLabel, Counter>,
    pub structural_build_seconds: Histogram,
    /// Structural embedding builds by outcome (done, failed).
    pub structural_builds: Family<OutcomeLabel, Counter>,
    pub index_vectors: Gauge,
    pub index_memory_bytes: Gauge,
    pub index_applied_index: Gauge,
    pub index_build_seconds: Histogram,
    pub index_rebuilds: Counter,
    pub index_updates: Counter,
}

impl SimilarityMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = SimilarityMetrics {
            search_seconds: seconds(),
            searches: Family::default(),
            queries: Counter::default(),
            cluster_seconds: seconds(),
            clusterings: Family::default(),
            structural_build_seconds: seconds(),
            structural_builds: Family::default(),
            index_vectors: Gauge::default(),
            index_memory_bytes: Gauge::default(),
            index_applied_index: Gauge::default(),
            index_build_seconds: seconds(),
            index_rebuilds: Counter::default(),
            index_updates: Counter::default(),
        };
        let reg = reg.sub_registry_with_prefix("similarity");
        reg.register("search_seconds", "Time to answer one similarity search", m.search_seconds.clone());
        reg.register("searches", "Similarity searches by outcome", m.searches.clone());
        reg.register("queries", "Query vectors scanned (a search carries one or more)", m.queries.clone());
        reg.register("cluster_seconds", "Time to answer one k-means clustering", m.cluster_seconds.clone());
        reg.register("clusterings", "k-means clusterings by outcome", m.clusterings.clone());
        reg.register(
            "structural_build_seconds",
            "Time of one structural embedding build on the leader, computing and proposing",
            m.structural_build_seconds.clone(),
        );
        reg.register(
            "structural_builds",
            "Structural embedding builds by outcome",
            m.structural_builds.clone(),
        );
        reg.register(
            "index_vectors",
            "Vectors in the in-memory index, all spaces and models",
            m.index_vectors.clone(),
        );
        reg.register("index_memory_bytes", "Bytes the vector index holds", m.index_memory_bytes.clone());
        reg.register(
            "index_applied_index",
            "The applied index the vector index reflects",
            m.index_applied_index.clone(),
        );
        reg.register(
            "index_build_seconds",
            "Time to build the vector index from storage",
            m.index_build_seconds.clone(),
        );
        reg.register(
            "index_rebuilds",
            "Vector index rebuilds after the first build",
            m.index_rebuilds.clone(),
        );
        reg.register("index_updates", "Announcements folded into the vector index", m.index_updates.clone());
        m
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VectorOutcome {
    /// stored, skipped (apply found the node gone or embedded), failed (a batch the model or
    /// Raft did not take, tried again), dropped (given up after its attempts).
    pub outcome: &'static str,
}

/// The embedding backfill's families (`cograft_embedding_backfill_*`).
#[derive(Clone)]
pub struct BackfillMetrics {
    vectors: Family<VectorOutcome, Counter>,
    pub pending: Gauge,
    pub scanning: Gauge,
}

impl BackfillMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = BackfillMetrics {
            vectors: Family::default(),
            pending: Gauge::default(),
            scanning: Gauge::default(),
        };
        let reg = reg.sub_registry_with_prefix("embedding_backfill");
        reg.register(
            "vectors",
            "Node names the backfill embedded, by what became of the vector",
            m.vectors.clone(),
        );
        reg.register("pending", "New nodes waiting for the backfill to look at them", m.pending.clone());
        reg.register("scanning", "Spaces the backfill is scanning whole", m.scanning.clone());
        m
    }

    pub fn vectors(&self, outcome: &'static str) -> Counter {
        self.vectors.get_or_create(&VectorOutcome { outcome }).clone()
    }
}
