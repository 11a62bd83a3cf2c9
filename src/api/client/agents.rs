//! `/v1/sessions`, `/v1/observations` and `/v1/anomalies`: agent sessions, outcome history,
//! and the anomalies in it.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::Command;
use cograft_actors::model::SessionStatus;
use cograft_actors::outcomes::anomalies::{self, Params};
use serde::Deserialize;
use serde_json::json;

use super::atoms::respond;
use super::body::{ObservationBody, SessionBody, SessionPatch};
use super::{page_params, propose, read, space_of, ReadParams};
use crate::api::error::{with_fields, ApiError};
use crate::api::AppState;

/// Sessions without a `ttl_ms` go idle after 30 minutes without an update.
const DEFAULT_SESSION_TTL_MS: u64 = 30 * 60 * 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/sessions", web::post().to(create_session))
        .route("/sessions", web::get().to(list_sessions))
        .route("/sessions/{id}", web::get().to(get_session))
        .route("/sessions/{id}", web::patch().to(update_session))
        .route("/sessions/{id}", web::delete().to(close_session))
        .route("/observations", web::post().to(observe))
        .route("/observations", web::get().to(list_observations))
        .route("/observations/stats", web::get().to(observation_stats))
        .route("/anomalies", web::get().to(anomalies));
}

type State = web::Data<AppState>;

async fn create_session(
    state: State,
    req: HttpRequest,
    body: web::Json<SessionBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let command = Command::CreateSession {
        ttl_ms: b.ttl_ms.unwrap_or(DEFAULT_SESSION_TTL_MS),
        metadata: b.metadata.unwrap_or(serde_json::Value::Null),
    };
    let mut response = respond(propose(&state, &req, command).await?)?;
    response.head_mut().status = actix_web::http::StatusCode::CREATED;
    Ok(response)
}

async fn get_session(
    state: State,
    req: HttpRequest,
    id: web::Path<u64>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let (id, space) = (id.into_inner(), space_of(&req)?);
    let (session, index) = read(&state, &q, move |r| r.session(&space, id)).await?;
    Ok(HttpResponse::Ok().json(with_fields(session, &[("applied_index", json!(index))])))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    status: Option<SessionStatus>,
    limit: Option<usize>,
    after: Option<String>,
    consistency: Option<String>,
}

async fn list_sessions(
    state: State,
    req: HttpRequest,
    q: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let (q, space) = (q.into_inner(), space_of(&req)?);
    let (limit, after) = page_params(&state, q.limit, q.after.as_deref())?;
    let status = q.status;
    let params = ReadParams { consistency: q.consistency };
    let (page, index) = read(&state, &params, move |r| r.sessions(&space, status, after, limit)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "sessions": page.items, "limit": limit, "next": page.next, "applied_index": index
    })))
}

async fn update_session(
    state: State,
    req: HttpRequest,
    id: web::Path<u64>,
    body: web::Json<SessionPatch>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let command = Command::UpdateSession { id: id.into_inner(), status: b.status, metadata: b.metadata };
    respond(propose(&state, &req, command).await?)
}

async fn close_session(state: State, req: HttpRequest, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let command =
        Command::UpdateSession { id: id.into_inner(), status: Some(SessionStatus::Closed), metadata: None };
    respond(propose(&state, &req, command).await?)
}

async fn observe(
    state: State,
    req: HttpRequest,
    body: web::Json<ObservationBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let command = Command::Observe {
        subject: b.subject,
        success: b.success,
        duration_ms: b.duration_ms,
        bytes: b.bytes,
        features: b.features,
        message: b.message,
    };
    respond(propose(&state, &req, command).await?)
}

#[derive(Debug, Deserialize)]
struct SubjectParams {
    subject: String,
    limit: Option<usize>,
    after: Option<String>,
    consistency: Option<String>,
}

/// Newest first; `next` continues with older ones.
async fn list_observations(
    state: State,
    req: HttpRequest,
    q: web::Query<SubjectParams>,
) -> Result<HttpResponse, ApiError> {
    let (q, space) = (q.into_inner(), space_of(&req)?);
    let (limit, before) = page_params(&state, q.limit, q.after.as_deref())?;
    let subject = q.subject.clone();
    let params = ReadParams { consistency: q.consistency };
    let (page, index) =
        read(&state, &params, move |r| r.observations(&space, &subject, before, limit)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "subject": q.subject, "observations": page.items, "limit": limit, "next": page.next,
        "applied_index": index
    })))
}

async fn observation_stats(
    state: State,
    req: HttpRequest,
    q: web::Query<SubjectParams>,
) -> Result<HttpResponse, ApiError> {
    let (q, space) = (q.into_inner(), space_of(&req)?);
    let params = ReadParams { consistency: q.consistency };
    let subject = q.subject;
    let (stats, index) = read(&state, &params, move |r| r.observation_stats(&space, &subject)).await?;
    Ok(HttpResponse::Ok().json(with_fields(stats, &[("applied_index", json!(index))])))
}

/// Observations `/v1/anomalies` looks at by default, and at most.
const DEFAULT_WINDOW: usize = 1000;
const MAX_WINDOW: usize = 10_000;

#[derive(Debug, Deserialize)]
struct AnomalyParams {
    subject: String,
    /// The newest this many observations of the subject.
    window: Option<usize>,
    threshold: Option<f64>,
    min_streak: Option<usize>,
    consistency: Option<String>,
}

/// The subject's anomalous observations among its newest `window`: robust outliers of duration
/// and size, and failure streaks, most anomalous first.
async fn anomalies(
    state: State,
    req: HttpRequest,
    q: web::Query<AnomalyParams>,
) -> Result<HttpResponse, ApiError> {
    let (q, space) = (q.into_inner(), space_of(&req)?);
    let window = q.window.unwrap_or(DEFAULT_WINDOW);
    if window == 0 || window > MAX_WINDOW {
        return Err(ApiError::bad_request(format!("window must be 1..={MAX_WINDOW}, got {window}")));
    }
    let params = Params {
        threshold: q.threshold.unwrap_or(anomalies::DEFAULT_THRESHOLD),
        min_streak: q.min_streak.unwrap_or(anomalies::DEFAULT_MIN_STREAK),
    };
    params.validate().map_err(ApiError::bad_request)?;
    let subject = q.subject.clone();
    let read_params = ReadParams { consistency: q.consistency };
    let (page, index) =
        read(&state, &read_params, move |r| r.observations(&space, &subject, None, window)).await?;
    let report = anomalies::find(&page.items, params);
    Ok(HttpResponse::Ok()
        .json(with_fields(report, &[("subject", json!(q.subject)), ("applied_index", json!(index))])))
}
