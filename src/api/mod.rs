//! The HTTP surfaces, one file per audience: `client` (/v1), `admin` (/admin), `raft` (/raft,
//! msgpack between nodes), `ops` (/metrics, /healthz, /readyz). Handlers are thin: parse, send
//! one message, map the result. `error` is the one place errors become HTTP.

pub mod admin;
pub mod client;
pub mod embeddings;
pub mod error;
pub mod forget;
pub mod metrics;
pub mod ops;
pub mod raft;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::web;
use cograft_actors::health::HealthChecks;
use cograft_actors::metrics::Exporter;
use cograft_actors::raft::RaftActor;
use cograft_actors::storage::actor::StorageActor;
use cograft_actors::storage::metrics::StorageMetrics;

use crate::config::Settings;

/// Clears a flag when dropped (however the work that set it ends).
pub struct ClearOnDrop(Arc<AtomicBool>);

impl ClearOnDrop {
    /// Sets `flag` for work a node does one at a time, or answers 429 `error` with `detail`
    /// and `Retry-After` when it is set already. Keep the guard until the work ends.
    pub fn one_at_a_time(
        flag: &Arc<AtomicBool>,
        error: &'static str,
        detail: &str,
        retry_after_s: u32,
    ) -> Result<ClearOnDrop, error::ApiError> {
        if flag.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(error::ApiError {
                retry_after_s: Some(retry_after_s),
                ..error::ApiError::new(actix_web::http::StatusCode::TOO_MANY_REQUESTS, error, detail)
            });
        }
        Ok(ClearOnDrop(flag.clone()))
    }
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// A JSON body a route may go without: empty means `T::default()`, anything else must parse.
/// (actix's `Option<Json<T>>` answers `None` for a body that does not parse, which would turn
/// a misspelled field into the defaults.)
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, error::ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| error::ApiError::bad_request(format!("malformed JSON body: {e}")))
}

/// What every handler can reach.
pub struct AppState {
    pub node_id: u64,
    pub settings: Arc<Settings>,
    pub raft: Addr<RaftActor>,
    pub storage: Addr<StorageActor>,
    /// Answers spreads over the in-memory index of the graph.
    pub spreading: Addr<cograft_actors::spreading::SpreadingActor>,
    /// Answers nearest-neighbour searches over the in-memory vector index.
    pub similarity: Addr<cograft_actors::similarity::actor::SimilarityActor>,
    /// The vector index searches read (a linearizable search waits for it to catch up).
    pub vector_index: Arc<cograft_actors::similarity::follow::SharedVectors>,
    /// Runs the models (embeddings) in supervised worker processes.
    pub inference: Addr<cograft_actors::inference::InferenceActor>,
    /// Embeds node names on the leader (spaces with `auto_embed`, or on request).
    pub backfill: Addr<cograft_actors::similarity::backfill::EmbeddingBackfill>,
    /// Builds structural embeddings on the leader (`POST /admin/embeddings/build`).
    pub structural: Addr<cograft_actors::similarity::structural::StructuralBuilder>,
    /// The graph index spreading and structural builds read (a build waits for its barrier).
    pub spread_index: Arc<cograft_actors::spreading::SharedIndex>,
    pub exporter: Arc<Exporter>,
    pub http_metrics: metrics::HttpMetrics,
    pub storage_metrics: Arc<StorageMetrics>,
    pub health: HealthChecks,
    /// Runs every check on an interval; `/admin/health` answers from it.
    pub health_monitor: Addr<cograft_actors::health::HealthMonitor>,
    /// Cleared when shutdown begins: /readyz fails and new writes are refused.
    pub serving: Arc<AtomicBool>,
    /// sled, for the readiness write probe.
    pub db: cograft_actors::storage::Db,
    /// Whole-state reads that run outside the read pool (the digest).
    pub reader: cograft_actors::storage::reads::GraphReader,
    /// Set while this node computes a digest.
    pub digest_running: Arc<AtomicBool>,
    /// Set while this node streams an export.
    pub export_running: Arc<AtomicBool>,
}

/// Mounts every surface and the JSON error handling on an App.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(raft::configure)
        .configure(admin::configure)
        .configure(client::configure)
        .configure(ops::configure)
        .default_service(web::to(error::not_found));
}

/// Turns any error response that is not already JSON (actix's own 405, 413, ...) into
/// `{error, detail}`, so clients see one error shape everywhere.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.starts_with("application/msgpack"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let detail = res
            .response()
            .error()
            .map(|e| e.to_string())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let (req, _) = res.into_parts();
        let body = serde_json::json!({
            "error": status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
            "detail": detail,
        });
        let response = actix_web::HttpResponse::build(status).json(body).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, response)))
    })
}

/// Counts requests by route pattern and status, and times them.
pub async fn record_http(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.http_metrics.clone());
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let labels = metrics::HttpLabels { method, route, status: res.status().as_u16() };
        metrics.requests.get_or_create(&labels).inc();
        metrics.request_seconds.observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
