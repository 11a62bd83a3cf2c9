//! `/v1/atoms`, `/v1/links`, `/v1/batch`: the hypergraph of one memory space.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::{AtomRef, Command, CommandResult};
use cograft_actors::model::{validate_type_name, AtomId, TruthValue};
use cograft_actors::raft::WriteOutcome;
use cograft_actors::storage::reads::Page;
use serde::Deserialize;
use serde_json::json;

use super::body::{BatchBody, LinkBody, NodeBody, OpBody, RefBody, StimulusBody, ValueBody};
use super::{created_status, page_params, propose, read, space_of, ReadParams};
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
        CommandResult::SpaceDeleting { name } => {
            let mut fields = meta.to_vec();
            fields.push(("deleting", json!(true)));
            Ok(HttpResponse::Accepted().json(with_fields(json!({ "space": name }), &fields)))
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
    req: HttpRequest,
    id: web::Path<AtomId>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let (id, space) = (id.into_inner(), space_of(&req)?);
    let (atom, index) = read(&state, &q, move |r| r.atom(&space, id)).await?;
    Ok(HttpResponse::Ok().json(with_fields(atom, &[("applied_index", json!(index))])))
}

#[derive(Debug, Deserialize)]
struct FindParams {
    #[serde(rename = "type")]
    atom_type: String,
    name: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    consistency: Option<String>,
}

/// A node by (type, name), or the atoms of a type, a page at a time: the answer says which
/// limit applied and gives the `next` cursor while more remain (`truncated` says the same).
async fn find_atoms(
    state: State,
    req: HttpRequest,
    q: web::Query<FindParams>,
) -> Result<HttpResponse, ApiError> {
    let (q, space) = (q.into_inner(), space_of(&req)?);
    validate_type_name(&q.atom_type).map_err(ApiError::bad_request)?;
    let params = ReadParams { consistency: q.consistency };
    let (limit, after) = page_params(&state, q.limit, q.after.as_deref())?;
    let (page, index) = match q.name {
        Some(name) => {
            let atom_type = q.atom_type;
            read(&state, &params, move |r| {
                Ok(Page { items: r.find_node(&space, &atom_type, &name)?.into_iter().collect(), next: None })
            })
            .await?
        }
        None => read(&state, &params, move |r| r.of_type(&space, &q.atom_type, after, limit)).await?,
    };
    Ok(HttpResponse::Ok().json(json!({
        "atoms": page.items, "limit": limit, "truncated": page.next.is_some(), "next": page.next,
        "applied_index": index
    })))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<usize>,
    after: Option<String>,
    consistency: Option<String>,
}

async fn incoming(
    state: State,
    req: HttpRequest,
    id: web::Path<AtomId>,
    q: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let (id, space, q) = (id.into_inner(), space_of(&req)?, q.into_inner());
    let (limit, after) = page_params(&state, q.limit, q.after.as_deref())?;
    let params = ReadParams { consistency: q.consistency };
    let (page, index) = read(&state, &params, move |r| r.incoming(&space, id, after, limit)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "id": id, "incoming": page.items, "limit": limit, "next": page.next, "applied_index": index
    })))
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
    let b = body.into_inner();
    let command =
        Command::Stimulate { id: AtomRef::Id(id.into_inner()), sti: b.sti, lti: b.lti, vlti: b.vlti };
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
    req: HttpRequest,
    path: web::Path<(AtomId, String)>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let ((id, key), space) = (path.into_inner(), space_of(&req)?);
    let k = key.clone();
    let (value, index) = read(&state, &q, move |r| r.value(&space, id, &k)).await?;
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
