//! `/v1/spaces`: the memory spaces that hold anything (or have settings), with their counts
//! and settings; changing a space's settings (`PATCH`: `auto_embed`, the leader embedding its
//! node names); and deleting one (its contents go in bounded steps with the leader's ticks;
//! it refuses writes meanwhile, and its settings go with it).

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::Command;
use cograft_actors::model::validate_space_name;
use serde::Deserialize;
use serde_json::json;

use super::atoms::respond;
use super::{propose_in, read, ReadParams};
use crate::api::error::ApiError;
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/spaces", web::get().to(list_spaces))
        .route("/spaces/{name}", web::delete().to(delete_space))
        .route("/spaces/{name}", web::patch().to(configure_space));
}

type State = web::Data<AppState>;

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
    consistency: Option<String>,
}

async fn list_spaces(state: State, q: web::Query<ListParams>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, state.settings.api.max_list);
    if let Some(after) = &q.after {
        validate_space_name(after).map_err(|e| ApiError::bad_request(format!("after: {e}")))?;
    }
    let params = ReadParams { consistency: q.consistency };
    let after = q.after;
    let (page, index) = read(&state, &params, move |r| r.spaces(after.as_deref(), limit)).await?;
    let spaces: Vec<_> = page
        .items
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "atoms": s.atoms(), "nodes": s.nodes, "links": s.links,
                "sessions": s.sessions, "observations": s.observations, "deleting": s.deleting,
                "auto_embed": s.auto_embed
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({ "spaces": spaces, "limit": limit, "next": page.next, "applied_index": index })))
}

/// 202: the space stops taking writes and answering reads now; its contents go over the next
/// ticks. 404 for a space that holds nothing.
async fn delete_space(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    validate_space_name(&name).map_err(ApiError::bad_request)?;
    respond(propose_in(&state, &req, name.clone(), Command::DeleteSpace { name }).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    /// The leader embeds the names of the space's nodes that have no vector of its embedding
    /// model, after their commit (writes never wait for it).
    auto_embed: bool,
}

/// Changes a space's settings (through Raft); the space exists from then on, even empty.
async fn configure_space(
    state: State,
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Json<SettingsBody>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    validate_space_name(&name).map_err(ApiError::bad_request)?;
    let command = Command::ConfigureSpace { auto_embed: body.auto_embed };
    respond(propose_in(&state, &req, name, command).await?)
}
