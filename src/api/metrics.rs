//! The HTTP surface's metric families: requests by method, route pattern and status, and their
//! latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use cograft_actors::metrics::{seconds, Registry};

/// Labels of the HTTP request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<HttpLabels, Counter>,
    pub request_seconds: Histogram,
}

impl HttpMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = HttpMetrics { requests: Family::default(), request_seconds: seconds() };
        let reg = reg.sub_registry_with_prefix("http");
        reg.register("requests", "HTTP requests by route and status", m.requests.clone());
        reg.register("request_seconds", "HTTP request latency", m.request_seconds.clone());
        m
    }
}
