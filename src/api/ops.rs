//! `/metrics` (OpenMetrics), `/healthz` (liveness) and `/readyz` (readiness): always open.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use cograft_actors::health::Probe;
use serde_json::json;

use super::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

type State = web::Data<AppState>;

async fn metrics(state: State) -> HttpResponse {
    state.storage_metrics.sled_size_bytes.set(state.db.size_on_disk() as i64);
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.exporter.encode())
}

async fn probe(state: &AppState, probe: Probe) -> HttpResponse {
    let checks = state.health.run(probe, CHECK_TIMEOUT).await;
    let ok = checks.iter().all(|c| c.ok);
    let body = json!({ "ok": ok, "node_id": state.node_id, "checks": checks });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn healthz(state: State) -> HttpResponse {
    probe(&state, Probe::Liveness).await
}

async fn readyz(state: State) -> HttpResponse {
    probe(&state, Probe::Readiness).await
}
