//! `/admin/embeddings`: the embedding backfill's state on this node, and
//! `POST /admin/embeddings/backfill?space=`, which asks the leader to embed the names of every
//! node of the space that has no vector of its embedding model (also in a space without
//! `auto_embed`). The work runs after the answer, in bounded Raft entries; the state shows it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::error::Error;
use cograft_actors::raft::actor::GetStatus;
use cograft_actors::raft::StatusReport;
use cograft_actors::similarity::backfill::{BackfillState, ScanSpace};
use serde_json::json;

use super::client::space_of;
use super::error::ApiError;
use super::AppState;

/// Routes inside the `/admin` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/embeddings", web::get().to(status)).route("/embeddings/backfill", web::post().to(backfill));
}

type State = web::Data<AppState>;

async fn status(state: State) -> Result<HttpResponse, ApiError> {
    let backfill = state.backfill.send(BackfillState).await?;
    Ok(HttpResponse::Ok().json(json!({ "node_id": state.node_id, "backfill": backfill })))
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
