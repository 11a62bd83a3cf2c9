//! `/raft`: peer RPC between nodes, msgpack both ways, guarded by the cluster secret.
//! Each handler decodes the body, sends one message to the RaftActor and encodes its answer,
//! within the caller's deadline: a follower installing a snapshot holds back its answers to
//! the leader's heartbeats until the install ends (openraft 0.9), and actix keeps a handler
//! running after its caller hung up, so without the deadline every heartbeat the leader gave
//! up on kept a socket open here, and a minutes-long install ran the node out of descriptors.

use std::future::Future;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::raft::actor::{AppendEntries, ForwardedWrite, InstallSnapshot, ReadIndex, RequestVote};
use cograft_actors::raft::{path, DEADLINE_HEADER, FORMAT_HEADER, SECRET_HEADER};
use cograft_actors::storage::manifest::FORMAT;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use super::AppState;

/// The deadline of a call whose caller sent none, and the longest one accepted.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
const MAX_DEADLINE: Duration = Duration::from_secs(3600);

/// Fits openraft's 1 MiB snapshot chunks and 256-entry append batches, msgpack-encoded.
pub const RAFT_BODY_LIMIT: usize = 32 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    let trimmed = |p: &'static str| p.trim_start_matches("/raft");
    cfg.service(
        web::scope("/raft")
            .route(trimmed(path::APPEND), web::post().to(append))
            .route(trimmed(path::VOTE), web::post().to(vote))
            .route(trimmed(path::SNAPSHOT), web::post().to(snapshot))
            .route(trimmed(path::FORWARD), web::post().to(forward))
            .route(trimmed(path::READ_INDEX), web::post().to(read_index)),
    );
}

type State = web::Data<AppState>;

/// Checks the secret and decodes the msgpack body.
async fn decode<T: DeserializeOwned>(
    state: &AppState,
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<T, ApiError> {
    let given = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !constant_time_eq(given, state.settings.cluster.secret.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_cluster_secret",
            format!("/raft requires the cluster secret in the {SECRET_HEADER} header"),
        ));
    }
    let theirs = req.headers().get(FORMAT_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("none");
    if theirs != FORMAT.to_string() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "format_mismatch",
            format!(
                "this node reads data format {FORMAT} and the peer sent format {theirs}: every node \
                 of a cluster must run a cograft build of the same format"
            ),
        ));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("unreadable body: {e}")))?;
        if body.len() + chunk.len() > RAFT_BODY_LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("/raft bodies are limited to {RAFT_BODY_LIMIT} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    rmp_serde::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed MessagePack body: {e}")))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn encode(answer: &impl Serialize) -> Result<HttpResponse, ApiError> {
    let bytes = rmp_serde::to_vec_named(answer)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode_error", e.to_string()))?;
    Ok(HttpResponse::Ok().content_type("application/msgpack").body(bytes))
}

/// Runs `call` until the caller's deadline (its `x-cograft-deadline-ms`), then gives up on it.
async fn within<T: Serialize, E>(
    req: &HttpRequest,
    call: impl Future<Output = Result<T, E>>,
) -> Result<HttpResponse, ApiError>
where
    ApiError: From<E>,
{
    let deadline = req
        .headers()
        .get(DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(DEFAULT_DEADLINE, |ms| Duration::from_millis(ms).min(MAX_DEADLINE));
    match actix_web::rt::time::timeout(deadline, call).await {
        Ok(answer) => encode(&answer?),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no answer within the caller's deadline of {} ms", deadline.as_millis()),
        )),
    }
}

async fn append(state: State, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let rpc = decode(&state, &req, body).await?;
    within(&req, state.raft.send(AppendEntries(rpc))).await
}

async fn vote(state: State, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let rpc = decode(&state, &req, body).await?;
    within(&req, state.raft.send(RequestVote(rpc))).await
}

async fn snapshot(state: State, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let rpc = decode(&state, &req, body).await?;
    within(&req, state.raft.send(InstallSnapshot(rpc))).await
}

async fn forward(state: State, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    let proposal: cograft_actors::command::Proposal = decode(&state, &req, body).await?;
    proposal.command.validate().map_err(ApiError::bad_request)?;
    within(&req, state.raft.send(ForwardedWrite(proposal))).await
}

async fn read_index(state: State, req: HttpRequest, body: web::Payload) -> Result<HttpResponse, ApiError> {
    decode::<()>(&state, &req, body).await?;
    within(&req, state.raft.send(ReadIndex)).await
}
