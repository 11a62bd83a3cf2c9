//! The one mapping from errors to HTTP: every failure, extractor errors included, answers JSON
//! `{error, detail}` (plus context fields such as `current` or `leader_id`) with a 4xx/5xx status.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use cograft_actors::command::Rejection;
use cograft_actors::Error;
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, error, detail: detail.into(), extra: Map::new(), retry_after_s: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// A committed entry answered a result its command cannot produce (a bug, not the client's).
    pub fn unexpected_result(what: &str, result: &impl std::fmt::Debug) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected_result",
            format!("{what} answered {result:?}"),
        )
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = Map::new();
        body.insert("error".into(), self.error.into());
        body.insert("detail".into(), self.detail.clone().into());
        body.extend(self.extra.clone());
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((actix_web::http::header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(Value::Object(body))
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let detail = r.to_string();
        match r {
            Rejection::UnknownAtom { id } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_atom", detail).with("id", id)
            }
            Rejection::UnknownSession { id } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_session", detail).with("id", id)
            }
            Rejection::BadReference { op, target } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_reference", detail)
                    .with("op", op)
                    .with("target", target)
            }
            Rejection::CasFailed { current } => ApiError::new(StatusCode::CONFLICT, "cas_failed", detail)
                .with("current", current.unwrap_or(Value::Null)),
            Rejection::SessionClosed { id } => {
                ApiError::new(StatusCode::CONFLICT, "session_closed", detail).with("id", id)
            }
            Rejection::CascadeTooLarge { id, limit } => {
                ApiError::new(StatusCode::CONFLICT, "cascade_too_large", detail)
                    .with("id", id)
                    .with("limit", limit)
            }
            Rejection::NotEvidence { id, key } => {
                ApiError::new(StatusCode::CONFLICT, "not_evidence", detail).with("id", id).with("key", key)
            }
            Rejection::TooManyValues { id, limit } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_values", detail)
                    .with("id", id)
                    .with("limit", limit)
            }
            Rejection::DimensionMismatch { model, expected, got } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "dimension_mismatch", detail)
                    .with("model", model)
                    .with("expected", expected)
                    .with("got", got)
            }
            Rejection::TooManyEmbeddings { id, limit } => {
                ApiError::new(StatusCode::CONFLICT, "too_many_embeddings", detail)
                    .with("id", id)
                    .with("limit", limit)
            }
            Rejection::SpaceDeleting { name } => {
                ApiError::new(StatusCode::CONFLICT, "space_deleting", detail).with("space", name)
            }
            Rejection::UnknownSpace { name } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_space", detail).with("space", name)
            }
            Rejection::InBatch { op, cause } => {
                let inner = ApiError::from(*cause);
                ApiError { detail: format!("batch op {op} failed: {}", inner.detail), ..inner }.with("op", op)
            }
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        let status = |s: StatusCode, error: &'static str| ApiError::new(s, error, detail.clone());
        match e {
            Error::Invalid(_) => status(StatusCode::BAD_REQUEST, "invalid_request"),
            Error::TooLarge { limit, .. } => {
                status(StatusCode::PAYLOAD_TOO_LARGE, "too_large").with("limit", limit)
            }
            Error::LimitExceeded { limit, setting, .. } => status(StatusCode::PAYLOAD_TOO_LARGE, "too_large")
                .with("limit", limit)
                .with("setting", setting),
            Error::NotFound { .. } => status(StatusCode::NOT_FOUND, "not_found"),
            Error::Rejected(r) => r.into(),
            Error::NoLeader(_) => status(StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            Error::AlreadyInitialized => status(StatusCode::CONFLICT, "already_initialized"),
            Error::NotLeader { leader_id, leader_addr } => {
                status(StatusCode::MISDIRECTED_REQUEST, "not_leader")
                    .with("leader_id", leader_id)
                    .with("leader_addr", leader_addr)
            }
            Error::Timeout(_) => status(StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Error::Overloaded(_) => {
                ApiError { retry_after_s: Some(1), ..status(StatusCode::SERVICE_UNAVAILABLE, "overloaded") }
            }
            Error::Unavailable { retry_after_s, .. } => ApiError {
                retry_after_s: Some(retry_after_s.max(1)),
                ..status(StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            },
            Error::ShuttingDown => status(StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Error::Peer { .. } => status(StatusCode::BAD_GATEWAY, "peer_error"),
            Error::Storage { .. } | Error::Corrupted { .. } | Error::Format { .. } => {
                status(StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
            }
            Error::Raft(_) => status(StatusCode::INTERNAL_SERVER_ERROR, "raft_error"),
            Error::Internal(_) => status(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("an internal actor is not answering: {e}"),
        )
    }
}

pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body has {length} bytes; the limit is {limit} bytes (api.body_limit_bytes)"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body exceeds the limit of {limit} bytes (api.body_limit_bytes)"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) => ApiError::bad_request(format!("malformed JSON body: {e}")),
        other => ApiError::bad_request(format!("unreadable body: {other}")),
    };
    api.into()
}

pub fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("bad path parameter: {err}")).into()
}

pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("bad query string: {err}")).into()
}

/// Answers unknown routes with the JSON error shape.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", format!("no route for {} {}", req.method(), req.path()))
        .error_response()
}

pub fn with_fields(value: impl serde::Serialize, fields: &[(&str, Value)]) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        for (k, f) in fields {
            map.insert((*k).to_string(), f.clone());
        }
    }
    v
}
