//! Recall by meaning over stored vectors: `POST /v1/similar` (nearest atoms by cosine, exact),
//! an atom's vectors (`PUT /v1/atoms/{id}/embedding`, `GET /v1/atoms/{id}/embeddings`) and the
//! models a space holds vectors of (`GET /v1/embeddings/models`). Vectors are data: written
//! through Raft with the model id they belong to, so every replica holds the same ones.
//! Searches answer from the node's vector index. By default a search is linearizable: after
//! the read barrier it waits (up to [`INDEX_PATIENCE`](super::INDEX_PATIENCE)) until the index has folded in every
//! entry up to the barrier's index, so a vector acknowledged before the search began is in its
//! answer; `?consistency=stale` answers from the index as it is. The reply's `applied_index`
//! says which index the answer reflects.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::Command;
use cograft_actors::error::Error;
use cograft_actors::inference::{Embed, Status};
use cograft_actors::model::AtomId;
use cograft_actors::similarity::actor::{FindSimilar, Query};
use cograft_actors::similarity::fastrp::MODEL_PREFIX as STRUCTURAL_PREFIX;
use serde::Deserialize;
use serde_json::json;

use super::atoms::respond;
use super::body::RefBody;
use super::{barrier_reached, propose, read, space_of, Index, ReadParams};
use crate::api::error::{with_fields, ApiError};
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/similar", web::post().to(similar))
        .route("/embeddings/models", web::get().to(models))
        .route("/atoms/{id}/embedding", web::put().to(set_embedding))
        .route("/atoms/{id}/embeddings", web::get().to(embeddings));
}

type State = web::Data<AppState>;

/// Neighbours returned when the request names no `top_k`.
const DEFAULT_TOP_K: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimilarBody {
    /// Embedded with the node's embedding model, whose id is then the model searched.
    text: Option<String>,
    /// The atom's own vector under `model`.
    atom_id: Option<AtomId>,
    vector: Option<Vec<f32>>,
    /// Several query vectors at once (one result list each).
    vectors: Option<Vec<Vec<f32>>>,
    /// Which model's vectors to search; defaults to the embedding model's id (`kind` text) or
    /// the space's one structural model (`kind` structural).
    model: Option<String>,
    #[serde(default)]
    kind: EmbeddingKind,
    top_k: Option<usize>,
    #[serde(rename = "type")]
    atom_type: Option<String>,
}

async fn similar(
    state: State,
    req: HttpRequest,
    q: web::Query<ReadParams>,
    body: web::Json<SimilarBody>,
) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let linearizable = !q.stale()?;
    let b = body.into_inner();
    let limits = &state.settings.similarity;
    let top_k = b.top_k.unwrap_or(DEFAULT_TOP_K);
    if top_k == 0 || top_k > limits.max_top_k {
        return Err(ApiError::bad_request(format!(
            "top_k must be in 1..={} (similarity.max_top_k), got {top_k}",
            limits.max_top_k
        )));
    }
    let given = [b.text.is_some(), b.atom_id.is_some(), b.vector.is_some(), b.vectors.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::bad_request(
            "give exactly one of text, atom_id, vector and vectors: what to compare the stored vectors with",
        ));
    }
    if b.text.is_some() && b.kind == EmbeddingKind::Structural {
        return Err(ApiError::bad_request(
            "a text has no structural embedding: search structural vectors by atom_id or vector",
        ));
    }
    if linearizable {
        vectors_current(&state).await?;
    }
    let (query, model) = match (b.text, b.atom_id, b.vector, b.vectors) {
        (Some(text), ..) => {
            let reply = state.inference.send(Embed { texts: vec![text] }).await??;
            if let Some(named) = b.model.as_ref().filter(|m| **m != reply.model) {
                return Err(ApiError::bad_request(format!(
                    "a text is embedded with the node's model {:?}, not {named:?}: leave model out, \
                     or send the vector of that model",
                    reply.model
                )));
            }
            (Query::Vectors(reply.embeddings), reply.model)
        }
        (_, Some(id), ..) => (Query::Atom(id), model_of(&state, &space, b.kind, b.model).await?),
        (_, _, Some(vector), _) => {
            (Query::Vectors(vec![vector]), model_of(&state, &space, b.kind, b.model).await?)
        }
        (.., Some(vectors)) => {
            if vectors.is_empty() || vectors.len() > limits.max_queries {
                return Err(ApiError::bad_request(format!(
                    "vectors holds 1..={} queries (similarity.max_queries), got {}",
                    limits.max_queries,
                    vectors.len()
                )));
            }
            (Query::Vectors(vectors), model_of(&state, &space, b.kind, b.model).await?)
        }
        (None, None, None, None) => unreachable!("exactly one query form was checked above"),
    };
    let reply =
        state.similarity.send(FindSimilar { space, model, query, top_k, atom_type: b.atom_type }).await??;
    Ok(HttpResponse::Ok().json(reply))
}

/// What a linearizable read of the vectors does first: the barrier, then the vector index
/// reflecting it.
pub(super) async fn vectors_current(state: &AppState) -> Result<(), ApiError> {
    barrier_reached(state, &[Index::Vectors], STALE_HINT).await.map(drop)
}

/// What a client may do when an index did not catch up with its read.
pub(super) const STALE_HINT: &str = "retry, or read with ?consistency=stale";

/// Which vectors a request compares: sentence embeddings of text (the default), or the
/// structural embeddings `POST /admin/embeddings/build` made of the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum EmbeddingKind {
    #[default]
    Text,
    Structural,
}

/// The model a request of `kind` searches: the one it names, else for text the node's
/// embedding model, for structure the space's one structural model.
pub(super) async fn model_of(
    state: &AppState,
    space: &str,
    kind: EmbeddingKind,
    model: Option<String>,
) -> Result<String, ApiError> {
    match kind {
        EmbeddingKind::Text => model_or_default(state, model).await,
        EmbeddingKind::Structural => structural_model(state, space, model),
    }
}

fn structural_model(state: &AppState, space: &str, model: Option<String>) -> Result<String, ApiError> {
    if let Some(model) = model {
        if !model.starts_with(STRUCTURAL_PREFIX) {
            return Err(ApiError::bad_request(format!(
                "model {model:?} is not a structural model (their ids start with {STRUCTURAL_PREFIX:?}): \
                 leave kind out to search it"
            )));
        }
        return Ok(model);
    }
    let models: Vec<String> = match state.vector_index.read().as_ref() {
        Some(index) => index
            .models(space)
            .into_iter()
            .filter(|m| m.starts_with(STRUCTURAL_PREFIX))
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    match models.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NotFound {
            what: format!(
                "structural embeddings in space {space:?} (build them with POST /admin/embeddings/build?space={space} \
                 {{\"dim\": 64}} on the leader)"
            ),
        }
        .into()),
        several => Err(ApiError::bad_request(format!(
            "space {space:?} holds several structural models, {several:?}: name one with model"
        ))),
    }
}

/// The model a request names, else the embedding model's id (known once a worker loaded it).
async fn model_or_default(state: &AppState, model: Option<String>) -> Result<String, ApiError> {
    if let Some(model) = model {
        return Ok(model);
    }
    let status = state.inference.send(Status).await?;
    match status.embedding.map(|e| e.model_id).filter(|id| !id.is_empty()) {
        Some(id) => Ok(id),
        None => Err(ApiError::bad_request(
            "model is required: no embedding model is loaded on this node to default to \
             (GET /v1/embeddings/models lists the models the space holds vectors of)",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingBody {
    model: String,
    /// `null` removes the atom's vector of this model.
    vector: Option<Vec<f32>>,
}

async fn set_embedding(
    state: State,
    req: HttpRequest,
    id: web::Path<AtomId>,
    body: web::Json<EmbeddingBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let id = RefBody::Id(id.into_inner()).to_ref().map_err(ApiError::bad_request)?;
    respond(propose(&state, &req, Command::SetEmbedding { id, model: b.model, vector: b.vector }).await?)
}

async fn embeddings(
    state: State,
    req: HttpRequest,
    id: web::Path<AtomId>,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let (id, space) = (id.into_inner(), space_of(&req)?);
    let (vectors, index) = read(&state, &q, move |r| r.embeddings(&space, id)).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": id, "embeddings": vectors, "applied_index": index })))
}

async fn models(state: State, req: HttpRequest, q: web::Query<ReadParams>) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let (models, index) = read(&state, &q, move |r| r.embedding_models(&space)).await?;
    Ok(HttpResponse::Ok().json(with_fields(json!({ "models": models }), &[("applied_index", json!(index))])))
}
