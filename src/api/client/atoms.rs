//! `/v1/atoms`, `/v1/links`, `/v1/batch`: the hypergraph.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::{AtomRef, Command, CommandResult};
use cograft_actors::model::{validate_type_name, AtomId, TruthValue};
use cograft_actors::raft::WriteOutcome;
use serde::Deserialize;
use serde_json::json;

use super::body::{BatchBody, LinkBody, NodeBody, OpBody, RefBody, StimulusBody, ValueBody};
use super::{created_status, propose, read, ReadParams};
use crate::api::error::{with_fields, ApiError};
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/atoms", web::post().to(add_node))
        .route("/atoms", web::get().to(find_atoms))
        .route("/links", web::post().to(add_link))
        .route("/batch", web::post().to(batch))
        .route("/atoms/{id}", web::get().to(get_atom))
        .route("/atoms/{id}", web::delete().to(delete_atom))
        .route("/atoms/{id}/incoming", web::get().to(incoming))
        .route("/atoms/{id}/tv", web::put().to(set_tv))
        .route("/atoms/{id}/stimulate", web::post().to(stimulate))
        .route("/atoms/{id}/values/{key}", web::put().to(set_value))
        .route("/atoms/{id}/values/{key}", web::get().to(get_value));
}

type State = web::Data<AppState>;

/// Maps a committed outcome to HTTP: rejections become their 4xx, results their JSON.
pub fn respond(outcome: WriteOutcome) -> Result<HttpResponse, ApiError> {
    let meta = [("index", json!(outcome.index)), ("leader_id", json!(outcome.leader_id))];
    match outcome.result {
        CommandResult::Rejected { error } => Err(error.into()),
        CommandResult::Atom { atom, created } => {
            let mut fields = meta.to_vec();
            fields.push(("created", json!(created)));
            Ok(HttpResponse::build(created_status(created)).json(with_fields(atom, &fields)))
        }
        CommandResult::Session { session } => Ok(HttpResponse::Ok().json(with_fields(session, &meta))),
        CommandResult::Observation { observation } => {
            Ok(HttpResponse::Created().json(with_fields(observation, &meta)))
        }
        other => Ok(HttpResponse::Ok().json(with_fields(other, &meta))),
    }
}

async fn add_node(
    state: State,
    req: HttpRequest,
    body: web::Json<NodeBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let merge = b.merge.unwrap_or(state.settings.api.default_merge);
    let command = Command::AddNode { atom_type: b.atom_type, name: b.name, tv: b.tv, merge };
    respond(propose(&state, &req, command).await?)
}

async fn add_link(
    state: State,
    req: HttpRequest,
    body: web::Json<LinkBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let outgoing = b
        .outgoing
        .iter()
        .map(|r| match r {
            RefBody::Id(id) => Ok(AtomRef::Id(*id)),
            RefBody::Op(s) => Err(ApiError::bad_request(format!("outgoing {s:?} must be an atom id"))),
        })
        .collect::<Result<_, _>>()?;
    let merge = b.merge.unwrap_or(state.settings.api.default_merge);
    let command = Command::AddLink { atom_type: b.atom_type, outgoing, tv: b.tv, merge };
    respond(propose(&state, &req, command).await?)
}

async fn batch(state: State, req: HttpRequest, body: web::Json<BatchBody>) -> Result<HttpResponse, ApiError> {
    let merge = state.settings.api.default_merge;
    let ops = body
        .into_inner()
        .ops
        .into_iter()
        .enumerate()
        .map(|(i, op): (usize, OpBody)| {
            op.into_command(merge).map_err(|e| ApiError::bad_request(format!("op {i}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    respond(propose(&state, &req, Command::Batch { ops }).await?)
}

async fn get_atom(
    state: State,
    id: web::Path<AtomId>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let (atom, index) = read(&state, &q, move |r| r.atom(id)).await?;
    Ok(HttpResponse::Ok().json(with_fields(atom, &[("applied_index", json!(index))])))
}

#[derive(Debug, Deserialize)]
struct FindParams {
    #[serde(rename = "type")]
    atom_type: String,
    name: Option<String>,
    limit: Option<usize>,
    consistency: Option<String>,
}

async fn find_atoms(state: State, q: web::Query<FindParams>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    validate_type_name(&q.atom_type).map_err(ApiError::bad_request)?;
    let params = ReadParams { consistency: q.consistency };
    // `limit` is capped at api.max_list; the answer says which limit applied and whether more
    // atoms matched, so a client never mistakes a capped list for the whole.
    let limit = q.limit.unwrap_or(100).min(state.settings.api.max_list);
    let (mut atoms, index) = match q.name {
        Some(name) => {
            let atom_type = q.atom_type;
            read(&state, &params, move |r| Ok(r.find_node(&atom_type, &name)?.into_iter().collect())).await?
        }
        None => read(&state, &params, move |r| r.of_type(&q.atom_type, limit.saturating_add(1))).await?,
    };
    let truncated = atoms.len() > limit;
    atoms.truncate(limit);
    Ok(HttpResponse::Ok()
        .json(json!({ "atoms": atoms, "limit": limit, "truncated": truncated, "applied_index": index })))
}

async fn incoming(
    state: State,
    id: web::Path<AtomId>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let (links, index) = read(&state, &q, move |r| r.incoming(id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": id, "incoming": links, "applied_index": index })))
}

async fn delete_atom(
    state: State,
    req: HttpRequest,
    id: web::Path<AtomId>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::DeleteAtom { id: AtomRef::Id(id.into_inner()) };
    respond(propose(&state, &req, command).await?)
}

async fn set_tv(
    state: State,
    req: HttpRequest,
    id: web::Path<AtomId>,
    tv: web::Json<TruthValue>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::SetTruth { id: AtomRef::Id(id.into_inner()), tv: tv.into_inner() };
    respond(propose(&state, &req, command).await?)
}

async fn stimulate(
    state: State,
    req: HttpRequest,
    id: web::Path<AtomId>,
    body: web::Json<StimulusBody>,
) -> Result<HttpResponse, ApiError> {
    let command = Command::Stimulate { id: AtomRef::Id(id.into_inner()), sti: body.sti, lti: body.lti };
    respond(propose(&state, &req, command).await?)
}

async fn set_value(
    state: State,
    req: HttpRequest,
    path: web::Path<(AtomId, String)>,
    body: web::Json<ValueBody>,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    let expect = body.expect();
    let command = Command::SetValue { id: AtomRef::Id(id), key, value: body.into_inner().value, expect };
    respond(propose(&state, &req, command).await?)
}

async fn get_value(
    state: State,
    path: web::Path<(AtomId, String)>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let (id, key) = path.into_inner();
    let k = key.clone();
    let (value, index) = read(&state, &q, move |r| r.value(id, &k)).await?;
    match value {
        Some(value) => {
            Ok(HttpResponse::Ok()
                .json(json!({ "id": id, "key": key, "value": value, "applied_index": index })))
        }
        None => Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "no_value",
            format!("atom {id} has no value under {key:?}"),
        )
        .with("applied_index", index)),
    }
}
