//! `/v1/attention`: ECAN attention in one memory space. `GET /v1/attention/focus?top_k=` answers
//! the attentional focus, the atoms with at least the boundary's STI (highest first), read
//! like every other read (linearizable unless `?consistency=stale`). Attention rises by
//! stimulation (`POST /v1/atoms/{id}/stimulate`) and moves by the leader's replicated steps.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{read, space_of, ReadParams};
use crate::api::error::ApiError;
use crate::api::AppState;

/// Atoms a focus answers when `top_k` is not given.
const DEFAULT_TOP_K: usize = 10;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/attention/focus", web::get().to(focus));
}

#[derive(Debug, Deserialize)]
struct FocusParams {
    /// Parsed here, so a bad value gets an error naming it.
    top_k: Option<String>,
    consistency: Option<String>,
}

async fn focus(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<FocusParams>,
) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let q = q.into_inner();
    let max = state.settings.api.max_list;
    let top_k = match q.top_k.as_deref() {
        None => DEFAULT_TOP_K,
        Some(text) => text.parse().ok().filter(|k| (1..=max).contains(k)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "top_k must be an integer in 1..={max} (api.max_list), got {text:?}"
            ))
        })?,
    };
    let params = ReadParams { consistency: q.consistency };
    let ((atoms, boundary), index) = read(&state, &params, move |v| v.focus(&space, top_k)).await?;
    Ok(HttpResponse::Ok().json(json!({ "focus": atoms, "boundary": boundary, "applied_index": index })))
}
