//! The process's one prometheus-client Registry and the metric families cograft exports.
//! Components receive `Arc<Metrics>` and record into it; `/metrics` encodes the registry.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// Labels of the Raft role gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub raft_role: Family<RoleLabels, Gauge>,
    pub raft_term: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_last_applied_index: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_elections: Counter,
    pub raft_leader_changes: Counter,
    pub log_append_seconds: Histogram,
    pub log_flush_seconds: Histogram,
    pub log_flush_batch_writes: Histogram,
    pub apply_seconds: Histogram,
    pub apply_batch_entries: Histogram,
    pub snapshot_build_seconds: Histogram,
    pub sled_size_bytes: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_seconds: Histogram,
}

fn seconds() -> Histogram {
    // 20 us .. ~5 s
    Histogram::new(exponential_buckets(0.00002, 2.5, 14))
}

fn counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("cograft")),
            raft_role: Family::default(),
            raft_term: Gauge::default(),
            raft_last_log_index: Gauge::default(),
            raft_last_applied_index: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_elections: Counter::default(),
            raft_leader_changes: Counter::default(),
            log_append_seconds: seconds(),
            log_flush_seconds: seconds(),
            log_flush_batch_writes: counts(),
            apply_seconds: seconds(),
            apply_batch_entries: counts(),
            snapshot_build_seconds: seconds(),
            sled_size_bytes: Gauge::default(),
            http_requests: Family::default(),
            http_request_seconds: seconds(),
        };
        {
            let mut r = m.registry.lock().expect("metrics registry lock");
            r.register("raft_role", "1 for this node's current Raft role", m.raft_role.clone());
            r.register("raft_term", "Current Raft term", m.raft_term.clone());
            r.register("raft_last_log_index", "Last log index", m.raft_last_log_index.clone());
            r.register("raft_last_applied_index", "Last applied index", m.raft_last_applied_index.clone());
            r.register("raft_commit_index", "Last committed index known", m.raft_commit_index.clone());
            r.register("raft_elections", "Elections this node started", m.raft_elections.clone());
            r.register(
                "raft_leader_changes",
                "Times the known leader changed",
                m.raft_leader_changes.clone(),
            );
            r.register("log_append_seconds", "Time to write entries into sled", m.log_append_seconds.clone());
            r.register(
                "log_flush_seconds",
                "sled flush + fdatasync time per group commit",
                m.log_flush_seconds.clone(),
            );
            r.register(
                "log_flush_batch_writes",
                "Client writes made durable by one flush + fdatasync (group commit size)",
                m.log_flush_batch_writes.clone(),
            );
            r.register(
                "apply_seconds",
                "Time to apply a run of entries in one transaction",
                m.apply_seconds.clone(),
            );
            r.register(
                "apply_batch_entries",
                "Entries applied per transaction",
                m.apply_batch_entries.clone(),
            );
            r.register(
                "snapshot_build_seconds",
                "Time to build a snapshot file",
                m.snapshot_build_seconds.clone(),
            );
            r.register("sled_size_bytes", "Bytes sled occupies on disk", m.sled_size_bytes.clone());
            r.register("http_requests", "HTTP requests by route and status", m.http_requests.clone());
            r.register("http_request_seconds", "HTTP request latency", m.http_request_seconds.clone());
        }
        m
    }

    /// Lets a later component add its own families to the same registry.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().expect("metrics registry lock").register(name, help, metric);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
