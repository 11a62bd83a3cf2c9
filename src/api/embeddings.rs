//! `/admin/embeddings`: the embedding backfill's and the structural builds' state on this
//! node; `POST /admin/embeddings/backfill?space=`, which asks the leader to embed the names of
//! every node of the space that has no vector of its embedding model (also in a space without
//! `auto_embed`); and `POST /admin/embeddings/build?space= {dim, weights?, seed?}`, which has
//! the leader compute the space's structural embeddings (FastRP over the graph as of a read
//! barrier) and propose them. Both run after the answer (202), in bounded Raft entries; the
//! state shows them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::error::Error;
use cograft_actors::raft::actor::GetStatus;
use cograft_actors::raft::StatusReport;
use cograft_actors::similarity::backfill::{BackfillState, ScanSpace};
use cograft_actors::similarity::fastrp::{Params, DEFAULT_WEIGHTS};
use cograft_actors::similarity::structural::{BuildStructural, Refusal, Started, StructuralState};
use serde::Deserialize;
use serde_json::json;

use super::client::{barrier_reached, space_of, Index};
use super::error::ApiError;
use super::AppState;

/// Routes inside the `/admin` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/embeddings", web::get().to(status))
        .route("/embeddings/backfill", web::post().to(backfill))
        .route("/embeddings/build", web::post().to(build));
}

type State = web::Data<AppState>;

async fn status(state: State) -> Result<HttpResponse, ApiError> {
    let backfill = state.backfill.send(BackfillState).await?;
    let structural = state.structural.send(StructuralState).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "node_id": state.node_id, "backfill": backfill, "structural": structural })))
}

/// 202 once the leader has the space queued for a whole scan; elsewhere 421 naming the leader
/// (503 while there is none); 503 when no embedding model is configured; 404 for a space being
/// deleted.
async fn backfill(state: State, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let status = state.raft.send(GetStatus).await?;
    if status.leader_id != Some(state.node_id) {
        return Err(not_leader(&status));
    }
    let inference = state.inference.send(cograft_actors::inference::Status).await?;
    if inference.embedding.is_none() {
        return Err(Error::Unavailable {
            what: "no embedding model is configured on the leader, so there is nothing to backfill with: set \
                   inference.embedding_model (COGRAFT__INFERENCE__EMBEDDING_MODEL) to a GGUF sentence-embedding \
                   model; `make models` writes models/all-minilm-l6-v2.gguf"
                .into(),
            retry_after_s: 60,
        }
        .into());
    }
    state.reader.ensure_live(&space)?;
    if !state.backfill.send(ScanSpace { space: space.clone() }).await? {
        // Deposed since the check above.
        return Err(not_leader(&state.raft.send(GetStatus).await?));
    }
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(json!({
        "space": space,
        "scanning": true,
        "node_id": state.node_id,
        "status": "/admin/embeddings",
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildBody {
    dim: usize,
    /// One weight per iteration (default `[0, 1, 1, 1]`).
    weights: Option<Vec<f32>>,
    #[serde(default)]
    seed: u64,
}

/// 202 once the leader has started the build (it sees every write acknowledged before the
/// request); 409 while another build runs; elsewhere 421 naming the leader (503 while there
/// is none); 400 for bad parameters or a build over the memory limit, 404 for an empty space.
async fn build(state: State, req: HttpRequest, body: web::Json<BuildBody>) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let b = body.into_inner();
    let params =
        Params { dim: b.dim, weights: b.weights.unwrap_or_else(|| DEFAULT_WEIGHTS.to_vec()), seed: b.seed };
    params.validate().map_err(ApiError::bad_request)?;
    let status = state.raft.send(GetStatus).await?;
    if status.leader_id != Some(state.node_id) {
        return Err(not_leader(&status));
    }
    state.reader.ensure_live(&space)?;
    barrier_reached(&state, &[Index::Graph], "retry shortly").await?;
    match state.structural.send(BuildStructural { space: space.clone(), params }).await? {
        Started::Started(report) => Ok(HttpResponse::build(StatusCode::ACCEPTED).json(json!({
            "build": report,
            "node_id": state.node_id,
            "status": "/admin/embeddings",
        }))),
        Started::Busy(running) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "build_running",
            format!(
                "a structural build of space {:?} is running on this node; one runs at a time \
                 (GET /admin/embeddings follows it)",
                running.space
            ),
        )),
        Started::Refused(Refusal::NoAtoms(space)) => Err(Error::NotFound {
            what: format!("atoms in space {space:?} to build structural embeddings of"),
        }
        .into()),
        Started::Refused(Refusal::NotReady) => {
            Err(Error::Unavailable { what: Refusal::NotReady.to_string(), retry_after_s: 1 }.into())
        }
        Started::Refused(too_big) => Err(ApiError::bad_request(too_big.to_string())),
    }
}

/// 421 naming the leader this node knows of, or 503 while none is elected.
fn not_leader(status: &StatusReport) -> ApiError {
    match status.leader_id {
        Some(id) => {
            let leader_addr = status.membership.nodes.get(&id).cloned();
            Error::NotLeader { leader_id: Some(id), leader_addr }.into()
        }
        None => Error::NoLeader("no leader is elected yet: retry shortly".into()).into(),
    }
}
