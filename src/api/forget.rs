//! `POST /admin/forget?space=`: visible, replicated forgetting. A dry run (the default) lists
//! the atoms forgetting could take now (LTI below `lti_below`, not `vlti`, in no link), a page
//! at a time; `"dry_run": false` lists the same page and removes it through Raft in entries of
//! at most `MAX_FORGET` atoms, each re-checked when it applies: an atom that gained LTI, was
//! marked `vlti` or joined a link meanwhile is kept, and the answer lists it so.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::{Command, CommandResult, MAX_FORGET};
use cograft_actors::model::{Atom, AtomId};
use cograft_actors::storage::reads::decode_cursor;
use serde::Deserialize;
use serde_json::json;

use super::client::{idempotency_key, propose_keyed, read, space_of, ReadParams};
use super::error::ApiError;
use super::AppState;

/// Atoms one forget request lists (and removes) at most.
const MAX_PAGE: usize = 10_000;

/// Routes inside the `/admin` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/forget", web::post().to(forget));
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    /// Only list (the default); `false` removes what is listed.
    dry_run: Option<bool>,
    /// The LTI floor; default `attention.forget_below`.
    lti_below: Option<f64>,
    /// Atoms to list at most (1..=10000, default 1000).
    limit: Option<usize>,
    /// The `next` of an earlier answer.
    after: Option<String>,
}

async fn forget(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let body: ForgetBody = super::optional_json(&body)?;
    let dry_run = body.dry_run.unwrap_or(true);
    let lti_below = body.lti_below.unwrap_or(state.settings.attention.forget_below);
    if !lti_below.is_finite() {
        return Err(ApiError::bad_request(format!("lti_below must be a finite number, got {lti_below}")));
    }
    let limit = body.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be in 1..={MAX_PAGE}, got {limit}")));
    }
    let after = body.after.as_deref().map(decode_cursor).transpose()?;
    let listed_space = space.clone();
    let (page, index) =
        read(&state, &ReadParams::default(), move |v| v.forgettable(&listed_space, lti_below, after, limit))
            .await?;
    if dry_run {
        return Ok(HttpResponse::Ok().json(json!({
            "dry_run": true,
            "lti_below": lti_below,
            "forgettable": page.items,
            "next": page.next,
            "applied_index": index,
        })));
    }
    let ids: Vec<AtomId> = page.items.iter().map(|a: &Atom| a.id).collect();
    let key = idempotency_key(&req)?;
    let (mut removed, mut kept, mut last_index) = (Vec::new(), Vec::new(), index);
    for (i, chunk) in ids.chunks(MAX_FORGET).enumerate() {
        let command = Command::Forget { ids: chunk.to_vec(), lti_below };
        let outcome = propose_keyed(&state, format!("{key}/forget/{i}"), space.clone(), command).await?;
        last_index = outcome.index;
        match outcome.result {
            CommandResult::Forgotten { removed: r, kept: k } => {
                removed.extend(r);
                kept.extend(k);
            }
            CommandResult::Rejected { error } => return Err(error.into()),
            other => return Err(ApiError::unexpected_result("a forget entry", &other)),
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "dry_run": false,
        "lti_below": lti_below,
        "removed": removed,
        "kept": kept,
        "next": page.next,
        "index": last_index,
    })))
}
