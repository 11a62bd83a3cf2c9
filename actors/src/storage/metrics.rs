//! The storage component's metric families: log appends and group-commit flushes, apply,
//! snapshot builds and installs, sled's size on disk and the files synced beside it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{counts, seconds, waits, Registry};

#[derive(Clone)]
pub struct StorageMetrics {
    pub log_append_seconds: Histogram,
    pub log_flush_seconds: Histogram,
    pub log_flush_batch_writes: Histogram,
    pub log_purge_seconds: Histogram,
    pub committed_index: Gauge,
    pub apply_seconds: Histogram,
    pub apply_batch_entries: Histogram,
    pub apply_lock_wait_seconds: Histogram,
    pub read_gate_wait_seconds: Histogram,
    pub snapshot_build_seconds: Histogram,
    pub snapshot_install_seconds: Histogram,
    pub sled_size_bytes: Gauge,
    pub side_files_synced: Counter,
}

impl StorageMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = StorageMetrics {
            log_append_seconds: seconds(),
            log_flush_seconds: seconds(),
            log_flush_batch_writes: counts(),
            log_purge_seconds: seconds(),
            committed_index: Gauge::default(),
            apply_seconds: seconds(),
            apply_batch_entries: counts(),
            apply_lock_wait_seconds: waits(),
            read_gate_wait_seconds: waits(),
            snapshot_build_seconds: seconds(),
            snapshot_install_seconds: seconds(),
            sled_size_bytes: Gauge::default(),
            side_files_synced: Counter::default(),
        };
        let reg = reg.sub_registry_with_prefix("storage");
        reg.register("log_append_seconds", "Time to write entries into sled", m.log_append_seconds.clone());
        reg.register(
            "log_flush_seconds",
            "sled flush + fdatasync time per group commit",
            m.log_flush_seconds.clone(),
        );
        reg.register(
            "log_flush_batch_writes",
            "Client writes made durable by one flush + fdatasync (group commit size)",
            m.log_flush_batch_writes.clone(),
        );
        reg.register(
            "log_purge_seconds",
            "Time the purge thread took to remove the log behind a snapshot (off Raft's core task)",
            m.log_purge_seconds.clone(),
        );
        reg.register("committed_index", "Newest commit index openraft reported", m.committed_index.clone());
        reg.register(
            "apply_seconds",
            "Time to apply a run of entries in one transaction",
            m.apply_seconds.clone(),
        );
        reg.register("apply_batch_entries", "Entries applied per transaction", m.apply_batch_entries.clone());
        reg.register(
            "apply_lock_wait_seconds",
            "Time a run of entries waited for the apply lock and the read gate (views opening, \
             installs switching trees, readers)",
            m.apply_lock_wait_seconds.clone(),
        );
        reg.register(
            "read_gate_wait_seconds",
            "Time a read waited at the read gate (apply committing, an install switching trees)",
            m.read_gate_wait_seconds.clone(),
        );
        reg.register(
            "snapshot_build_seconds",
            "Time to build a snapshot file",
            m.snapshot_build_seconds.clone(),
        );
        reg.register(
            "snapshot_install_seconds",
            "Time to install a snapshot (rows written, trees switched)",
            m.snapshot_install_seconds.clone(),
        );
        reg.register("sled_size_bytes", "Bytes sled occupies on disk", m.sled_size_bytes.clone());
        reg.register(
            "side_files_synced",
            "Files sled wrote beside its data file (conf, snap, blobs) that cograft fsynced",
            m.side_files_synced.clone(),
        );
        m
    }
}
