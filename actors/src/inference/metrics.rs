//! The inference pools' metric families, labelled by pool (`embedding`, `generation`): workers
//! running, jobs waiting for one, worker losses by reason, requests by outcome, and request
//! latency; and what the chat model did: tokens generated, tokens per second, time to the first
//! token, triples per extraction, extraction answers that did not parse (must stay 0), and
//! classification latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{counts, long_seconds, seconds, Registry};

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
    pub generated_tokens: Counter,
    pub tokens_per_second: Histogram,
    pub first_token_seconds: Histogram,
    pub extracted_triples: Histogram,
    pub extraction_parse_failures: Counter,
    pub classify_seconds: Histogram,
}

impl InferenceMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = InferenceMetrics {
            workers: Family::default(),
            queue_depth: Family::default(),
            worker_losses: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds),
            generated_tokens: Counter::default(),
            tokens_per_second: counts(),
            first_token_seconds: long_seconds(),
            extracted_triples: counts(),
            extraction_parse_failures: Counter::default(),
            classify_seconds: long_seconds(),
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
        reg.register("generated_tokens", "Tokens the generation model produced", m.generated_tokens.clone());
        reg.register(
            "tokens_per_second",
            "Generation speed of each request (tokens after the first over the time they took)",
            m.tokens_per_second.clone(),
        );
        reg.register(
            "first_token_seconds",
            "Time from a generation's start in its worker to its first token",
            m.first_token_seconds.clone(),
        );
        reg.register("extracted_triples", "Triples one fact extraction found", m.extracted_triples.clone());
        reg.register(
            "extraction_parse_failures",
            "Extraction answers that did not parse (the grammar should make this impossible)",
            m.extraction_parse_failures.clone(),
        );
        reg.register("classify_seconds", "Time one classification took", m.classify_seconds.clone());
        m
    }
}
