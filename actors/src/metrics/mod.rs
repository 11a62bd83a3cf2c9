//! The process's one metrics registry (the bottom floor: it imports nothing of cograft's). Each
//! component owns its families in its own file and registers them at start with
//! `fn register(reg: &mut Registry) -> Self`; `/metrics` encodes the finished registry through
//! an [`Exporter`]. Names follow `cograft_<component>_<what>_<unit>`.

use std::sync::Mutex;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

pub use prometheus_client::registry::Registry;

/// A registry whose every family is prefixed `cograft_`.
pub fn registry() -> Registry {
    Registry::with_prefix("cograft")
}

/// Latency buckets from 20 us to ~5 s.
pub fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.00002, 2.5, 14))
}

/// Latency buckets from 1 ms to ~65 s, for model work.
pub fn long_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Lock-wait buckets, with edges at the bounds the design promises (100 ms for apply and
/// reads behind a snapshot build or install).
pub fn waits() -> Histogram {
    Histogram::new([0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0].into_iter())
}

/// Size buckets from 1 to 2048.
pub fn counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

/// Encodes the registry once every component registered into it.
pub struct Exporter {
    registry: Mutex<Registry>,
}

impl Exporter {
    pub fn new(registry: Registry) -> Exporter {
        Exporter { registry: Mutex::new(registry) }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
