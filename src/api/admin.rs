//! `/admin`: cluster management (init, membership, status, snapshot, digest, effective config),
//! the health report, the inference pools' state, forgetting (`forget`) and the embedding
//! backfill and structural builds (`embeddings`).

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{web, HttpResponse};
use cograft_actors::health::{GetReport, HealthReport};
use cograft_actors::raft::actor::{AddLearner, ChangeMembership, GetStatus, Initialize, TriggerSnapshot};
use cograft_actors::typ::Node;
use openraft::ChangeMembers;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .route("/init", web::post().to(init))
            .route("/add-learner", web::post().to(add_learner))
            .route("/change-membership", web::post().to(change_membership))
            .route("/remove-node", web::post().to(remove_node))
            .route("/status", web::get().to(status))
            .route("/snapshot", web::post().to(snapshot))
            .route("/digest", web::get().to(digest))
            .route("/config", web::get().to(config))
            .route("/health", web::get().to(health))
            .route("/inference", web::get().to(inference))
            .configure(super::forget::configure)
            .configure(super::embeddings::configure),
    );
}

type State = web::Data<AppState>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    /// Node id -> address of every initial voter; empty = this node alone.
    #[serde(default)]
    members: BTreeMap<u64, String>,
}

async fn init(state: State, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let mut members = super::optional_json::<InitBody>(&body)?.members;
    if members.is_empty() {
        members.insert(state.node_id, state.settings.advertise());
    }
    if !members.contains_key(&state.node_id) {
        return Err(ApiError::bad_request(format!("members must include this node ({})", state.node_id)));
    }
    let nodes: BTreeMap<u64, Node> =
        members.iter().map(|(id, addr)| (*id, Node { addr: addr.clone() })).collect();
    state.raft.send(Initialize(nodes)).await??;
    Ok(HttpResponse::Ok().json(json!({ "initialized": true, "members": members })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnerBody {
    id: u64,
    addr: String,
}

async fn add_learner(state: State, body: web::Json<LearnerBody>) -> Result<HttpResponse, ApiError> {
    let LearnerBody { id, addr } = body.into_inner();
    if id == 0 || !addr.contains(':') {
        return Err(ApiError::bad_request("id must be positive and addr HOST:PORT"));
    }
    check_format_of(&addr).await?;
    let index = state.raft.send(AddLearner { id, addr }).await??;
    Ok(HttpResponse::Ok().json(json!({ "added_learner": id, "index": index })))
}

/// Refuses a new member whose build reads another data format (it could not apply our log).
async fn check_format_of(addr: &str) -> Result<(), ApiError> {
    let unreachable = |e: String| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "peer_unreachable",
            format!("could not ask {addr} for its status before adding it: {e}"),
        )
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let status: serde_json::Value = client
        .get(format!("http://{addr}/admin/status"))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .json()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let theirs = status["format"].as_u64();
    let ours = u64::from(cograft_actors::storage::manifest::FORMAT);
    if theirs != Some(ours) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "format_mismatch",
            format!(
                "{addr} runs data format {}, this cluster format {ours}: every node of a cluster \
                 must run a cograft build of the same format",
                theirs.map(|f| f.to_string()).unwrap_or_else(|| "unknown (an older build)".into())
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipBody {
    voters: BTreeSet<u64>,
    /// Keep removed voters as learners.
    #[serde(default)]
    retain: bool,
}

async fn change_membership(state: State, body: web::Json<MembershipBody>) -> Result<HttpResponse, ApiError> {
    let MembershipBody { voters, retain } = body.into_inner();
    if voters.is_empty() {
        return Err(ApiError::bad_request("voters must not be empty"));
    }
    let change = ChangeMembers::ReplaceAllVoters(voters.clone());
    let index = state.raft.send(ChangeMembership { change, retain }).await??;
    Ok(HttpResponse::Ok().json(json!({ "voters": voters, "index": index })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    id: u64,
}

/// Removes a node entirely: first from the voters (if it is one), then from the members.
async fn remove_node(state: State, body: web::Json<RemoveBody>) -> Result<HttpResponse, ApiError> {
    let id = body.id;
    let status = state.raft.send(GetStatus).await?;
    if status.membership.voters.contains(&id) {
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        state.raft.send(ChangeMembership { change, retain: true }).await??;
    } else if !status.membership.learners.contains(&id) {
        return Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown_node",
            format!("node {id} is not a member"),
        ));
    }
    let change = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
    let index = state.raft.send(ChangeMembership { change, retain: false }).await??;
    Ok(HttpResponse::Ok().json(json!({ "removed": id, "index": index })))
}

async fn status(state: State) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.raft.send(GetStatus).await?))
}

async fn snapshot(state: State) -> Result<HttpResponse, ApiError> {
    state.raft.send(TriggerSnapshot).await??;
    Ok(HttpResponse::Accepted().json(json!({ "snapshot": "triggered" })))
}

#[derive(Debug, Deserialize)]
struct DigestParams {
    /// The content digest of `?space=` instead: ids and times left out (see `storage::content`).
    #[serde(default)]
    content: bool,
}

/// The digest walks the whole state (seconds at a million atoms), off the apply lock and off
/// the read pool; one at a time per node, and a second request meanwhile answers 429 at once
/// instead of queueing behind it.
async fn digest(
    state: State,
    req: actix_web::HttpRequest,
    q: web::Query<DigestParams>,
) -> Result<HttpResponse, ApiError> {
    let space = if q.content { Some(super::client::space_of(&req)?) } else { None };
    // Cleared however this ends, also if the request is dropped while the digest runs.
    let _running = super::ClearOnDrop::one_at_a_time(
        &state.digest_running,
        "digest_running",
        "a digest of this node is being computed; retry when it is done",
        5,
    )?;
    let reader = state.reader.clone();
    let failed = |e: tokio::task::JoinError| {
        ApiError::new(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, "digest_failed", e.to_string())
    };
    if let Some(space) = space {
        let d = tokio::task::spawn_blocking(move || reader.content_digest(&space).map(|d| (space, d)))
            .await
            .map_err(failed)??;
        let (space, d) = d;
        return Ok(HttpResponse::Ok().json(json!({
            "node_id": state.node_id,
            "space": space,
            "applied_index": d.applied_index,
            "content_digest": d.digest,
            "atoms": d.atoms,
            "values": d.values,
            "vectors": d.vectors,
        })));
    }
    let (index, digest) = tokio::task::spawn_blocking(move || reader.digest()).await.map_err(failed)??;
    Ok(HttpResponse::Ok().json(json!({ "node_id": state.node_id, "applied_index": index, "digest": digest })))
}

/// The effective configuration, secrets redacted.
async fn config(state: State) -> HttpResponse {
    HttpResponse::Ok().content_type("application/toml").body(state.settings.to_toml(false))
}

/// The health monitor's last run: every check (the components' too) with its status, detail
/// and since when it holds. Always 200: the report's `status` says how the node is.
async fn health(state: State) -> Result<HttpResponse, ApiError> {
    #[derive(serde::Serialize)]
    struct Body {
        node_id: u64,
        #[serde(flatten)]
        report: HealthReport,
    }
    let report = state.health_monitor.send(GetReport).await?;
    Ok(HttpResponse::Ok().json(Body { node_id: state.node_id, report }))
}

/// The inference pools: model, workers (pid, state, requests), queue, breaker, losses.
async fn inference(state: State) -> Result<HttpResponse, ApiError> {
    let status = state.inference.send(cograft_actors::inference::Status).await?;
    Ok(HttpResponse::Ok().json(status))
}
