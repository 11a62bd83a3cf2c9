//! The Raft component's metric families: role, term, indexes, elections, leader changes (mirrored
//! from openraft's metrics), the write batcher's queue and outcomes, and the readers per
//! read-index round.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::metrics::Registry;

/// Labels of the Raft role gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

/// Labels of the read-round histogram: `here` (this node's leadership, for its own reads and
/// the followers' read-index calls) or `at_leader` (a follower asking the leader).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadPathLabels {
    pub path: String,
}

fn reader_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

#[derive(Clone)]
pub struct RaftMetricsFamilies {
    pub role: Family<RoleLabels, Gauge>,
    pub term: Gauge,
    pub last_log_index: Gauge,
    pub last_applied_index: Gauge,
    pub elections: Counter,
    pub leader_changes: Counter,
    pub writes_queued: Gauge,
    pub writes_unconfirmed: Counter,
    pub writes_overloaded: Counter,
    pub read_round_readers: Family<ReadPathLabels, Histogram, fn() -> Histogram>,
}

impl RaftMetricsFamilies {
    pub fn register(reg: &mut Registry) -> Self {
        let m = RaftMetricsFamilies {
            role: Family::default(),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            last_applied_index: Gauge::default(),
            elections: Counter::default(),
            leader_changes: Counter::default(),
            writes_queued: Gauge::default(),
            writes_unconfirmed: Counter::default(),
            writes_overloaded: Counter::default(),
            read_round_readers: Family::new_with_constructor(reader_buckets),
        };
        let reg = reg.sub_registry_with_prefix("raft");
        reg.register("role", "1 for this node's current Raft role", m.role.clone());
        reg.register("term", "Current Raft term", m.term.clone());
        reg.register("last_log_index", "Last log index", m.last_log_index.clone());
        reg.register("last_applied_index", "Last applied index", m.last_applied_index.clone());
        reg.register("elections", "Elections this node started", m.elections.clone());
        reg.register("leader_changes", "Times the known leader changed", m.leader_changes.clone());
        reg.register(
            "writes_queued",
            "Proposals waiting on this leader for an in-flight entry",
            m.writes_queued.clone(),
        );
        reg.register(
            "writes_unconfirmed",
            "Proposals whose entry was not committed within the write timeout",
            m.writes_unconfirmed.clone(),
        );
        reg.register(
            "writes_overloaded",
            "Proposals refused because the leader's queue was full",
            m.writes_overloaded.clone(),
        );
        reg.register(
            "read_round_readers",
            "Readers answered by one read-index round, by path (here: a quorum round for this \
             node's reads and the followers' read-index calls, each call one reader; at_leader: \
             a follower's read-index call)",
            m.read_round_readers.clone(),
        );
        m
    }
}
