//! The client API under `/v1`: the hypergraph (`atoms`), agent sessions and observations
//! (`agents`), memory spaces (`spaces`), recall by association (`spread`), the attentional
//! focus (`attention`), sentence embeddings (`embed`), recall by meaning over stored vectors
//! (`similar`) and its clusters (`cluster`), both at once (`recall`), the chat model
//! (`language`: generation, classification, fact extraction), bulk `import` and `export`
//! (NDJSON), and the request bodies (`body`). Every route works in one memory space, named by
//! `?space=` or the `X-Cograft-Space` header (never a body field; both given and different is a
//! 400; default `default`). Writes become one `Proposal` each; reads pass a linearizable barrier
//! unless `?consistency=stale`. Lists page with `?after=`.

mod agents;
mod atoms;
mod attention;
pub mod body;
mod cluster;
mod embed;
mod export;
mod import;
mod language;
mod recall;
mod similar;
mod spaces;
mod spread;

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use cograft_actors::command::{Command, Proposal};
use cograft_actors::model::{validate_space_name, DEFAULT_SPACE};
use cograft_actors::raft::actor::{ReadBarrier, Write};
use cograft_actors::raft::WriteOutcome;
use cograft_actors::storage::actor::Query;
use cograft_actors::storage::reads::{decode_cursor, GraphView};
use rand::Rng;
use serde::Deserialize;

use super::error::{self, ApiError};
use super::AppState;

/// Header a client sets so a retried write applies once.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Header naming the memory space (as `?space=` does).
pub const SPACE_HEADER: &str = "x-cograft-space";

#[derive(Debug, Default, Deserialize)]
struct SpaceQuery {
    space: Option<String>,
}

/// The request's memory space: `?space=` or `X-Cograft-Space` (they must agree), else default.
pub fn space_of(req: &HttpRequest) -> Result<String, ApiError> {
    let query = web::Query::<SpaceQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?
        .into_inner()
        .space;
    let header = match req.headers().get(SPACE_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Cograft-Space must be visible ASCII"))?
                .to_string(),
        ),
        None => None,
    };
    let space = match (query, header) {
        (Some(q), Some(h)) if q != h => {
            return Err(ApiError::bad_request(format!(
                "the space is named twice, differently: ?space={q:?} and X-Cograft-Space: {h:?}; give one"
            )))
        }
        (q, h) => q.or(h).unwrap_or_else(|| DEFAULT_SPACE.to_string()),
    };
    validate_space_name(&space).map_err(ApiError::bad_request)?;
    Ok(space)
}

/// `?limit=` capped at `api.max_list`, and `?after=` decoded.
pub fn page_params(
    state: &AppState,
    limit: Option<usize>,
    after: Option<&str>,
) -> Result<(usize, Option<u64>), ApiError> {
    let limit = limit.unwrap_or(100).clamp(1, state.settings.api.max_list);
    let after = after.map(decode_cursor).transpose()?;
    Ok((limit, after))
}
const MAX_KEY_LEN: usize = 128;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .configure(atoms::configure)
            .configure(agents::configure)
            .configure(attention::configure)
            .configure(cluster::configure)
            .configure(embed::configure)
            .configure(export::configure)
            .configure(import::configure)
            .configure(language::configure)
            .configure(recall::configure)
            .configure(similar::configure)
            .configure(spaces::configure)
            .configure(spread::configure),
    );
}

/// `?consistency=` on reads.
#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    #[serde(default)]
    pub consistency: Option<String>,
}

impl ReadParams {
    fn stale(&self) -> Result<bool, ApiError> {
        match self.consistency.as_deref() {
            None | Some("linearizable") => Ok(false),
            Some("stale") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "consistency must be \"linearizable\" (default) or \"stale\", got {other:?}"
            ))),
        }
    }
}

/// The request's idempotency key, or a fresh one.
pub fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    match req.headers().get(IDEMPOTENCY_HEADER) {
        Some(value) => {
            let key =
                value.to_str().map_err(|_| ApiError::bad_request("Idempotency-Key must be visible ASCII"))?;
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(ApiError::bad_request(format!(
                    "Idempotency-Key must be 1..={MAX_KEY_LEN} characters"
                )));
            }
            Ok(key.to_string())
        }
        None => Ok(format!("{:032x}", rand::thread_rng().gen::<u128>())),
    }
}

/// Validates, sizes and proposes one command; answers the committed outcome.
pub async fn propose(
    state: &AppState,
    req: &HttpRequest,
    command: Command,
) -> Result<WriteOutcome, ApiError> {
    let space = space_of(req)?;
    propose_in(state, req, space, command).await
}

/// Like [`propose`], in a space the route names itself (e.g. the space being deleted).
pub async fn propose_in(
    state: &AppState,
    req: &HttpRequest,
    space: String,
    command: Command,
) -> Result<WriteOutcome, ApiError> {
    propose_keyed(state, idempotency_key(req)?, space, command).await
}

/// Like [`propose_in`], with the idempotency key given (a route that proposes several entries
/// for one request gives each its own).
pub async fn propose_keyed(
    state: &AppState,
    key: String,
    space: String,
    command: Command,
) -> Result<WriteOutcome, ApiError> {
    if !state.serving.load(Ordering::Relaxed) {
        return Err(cograft_actors::Error::ShuttingDown.into());
    }
    let proposal = Proposal { key, time_ms: cograft_actors::now_ms(), space, command };
    let size = rmp_serde::to_vec_named(&proposal).map(|b| b.len()).unwrap_or(usize::MAX);
    let limit = state.settings.api.max_entry_bytes;
    if size > limit {
        return Err(cograft_actors::Error::TooLarge { size, limit }.into());
    }
    proposal.command.validate().map_err(ApiError::bad_request)?;
    let outcome = state.raft.send(Write(proposal)).await??;
    Ok(outcome)
}

/// How long a read waits for an in-memory index to reflect its barrier.
pub const INDEX_PATIENCE: Duration = Duration::from_secs(5);

/// The in-memory indexes a read may wait for after its barrier.
#[derive(Clone, Copy, Debug)]
pub enum Index {
    /// The vector index searches and clusterings read.
    Vectors,
    /// The graph index spreads and structural builds read.
    Graph,
}

/// Passes the read barrier, then waits (up to [`INDEX_PATIENCE`] each) until every index of
/// `indexes` reflects it, so the read sees every write acknowledged before it began; 503 naming
/// the index that did not, and `then`, what the client can do. Answers the barrier's index.
pub async fn barrier_reached(state: &AppState, indexes: &[Index], then: &str) -> Result<u64, ApiError> {
    let barrier = state.raft.send(ReadBarrier).await??;
    for index in indexes {
        let (what, reached) = match index {
            Index::Vectors => ("vector", state.vector_index.reaches(barrier, INDEX_PATIENCE).await),
            Index::Graph => ("graph", state.spread_index.reaches(barrier, INDEX_PATIENCE).await),
        };
        if let Err(at) = reached {
            return Err(cograft_actors::Error::Unavailable {
                what: format!(
                    "the {what} index reflects applied index {at}, and this request must see {barrier}: it did \
                     not catch up within {} s; {then}",
                    INDEX_PATIENCE.as_secs()
                ),
                retry_after_s: 1,
            }
            .into());
        }
    }
    Ok(barrier)
}

/// Runs `read` after the consistency barrier; answers its value and the applied index it saw.
pub async fn read<T: Send + 'static>(
    state: &AppState,
    params: &ReadParams,
    read: impl FnOnce(&GraphView) -> cograft_actors::Result<T> + Send + 'static,
) -> Result<(T, u64), ApiError> {
    if !params.stale()? {
        state.raft.send(ReadBarrier).await??;
    }
    let answer = state.storage.send(Query::new(move |r| Ok((read(r)?, r.applied_index()?)))).await??;
    Ok(answer)
}

/// 201 for a created resource, else 200.
fn created_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}
