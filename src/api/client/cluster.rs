//! `POST /v1/cluster`: k-means over one model's vectors in the space (sentence embeddings, or
//! with `"embedding_kind": "structural"` the graph's), answered by the similarity pool. Like a
//! search it is linearizable by default (`?consistency=stale` skips the barrier). With
//! `write_back`, each cluster becomes a `ConceptNode` (named `{name}-{index}`) and each member
//! a `MemberLink(member, concept)` whose strength is the member's cosine to the centroid,
//! written through Raft in bounded batches (a member deleted meanwhile is left out); a second
//! run adds to what the first wrote, it does not remove memberships.

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::{AtomRef, Command, CommandResult, Rejection, MAX_BATCH_OPS};
use cograft_actors::model::{AtomId, Merge, TruthValue};
use cograft_actors::similarity::clusters::{ClusterReply, ClusterVectors};
use cograft_actors::similarity::kmeans::{Params, DEFAULT_ITERATIONS};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::similar::{model_of, vectors_current, EmbeddingKind};
use super::{idempotency_key, propose_keyed, space_of, ReadParams};
use crate::api::error::ApiError;
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster", web::post().to(cluster));
}

/// Members each cluster of a reply lists when the request names no `members_limit`.
const DEFAULT_MEMBERS_LIMIT: usize = 100;
/// Bytes of an entry kept for what is not ops (the proposal around them).
const ENTRY_SLACK: usize = 2048;
/// Confidence of a written membership (its strength is the cosine to the centroid).
const MEMBERSHIP_CONFIDENCE: f64 = 0.9;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterBody {
    k: usize,
    #[serde(default)]
    embedding_kind: EmbeddingKind,
    /// Which model's vectors; defaults as for `/v1/similar`.
    model: Option<String>,
    max_iterations: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    write_back: bool,
    /// The concept nodes' name stem; defaults to `cluster-{model}-k{k}`.
    name: Option<String>,
    members_limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Concept {
    index: usize,
    id: AtomId,
    name: String,
}

async fn cluster(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ReadParams>,
    body: web::Json<ClusterBody>,
) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let b = body.into_inner();
    let members_limit = b.members_limit.unwrap_or(DEFAULT_MEMBERS_LIMIT);
    if let Some(name) = &b.name {
        if name.trim().is_empty() {
            return Err(ApiError::bad_request("name, the concept nodes' name stem, must not be blank"));
        }
    }
    if !q.stale()? {
        vectors_current(&state).await?;
    }
    let model = model_of(&state, &space, b.embedding_kind, b.model).await?;
    let params =
        Params { k: b.k, max_iterations: b.max_iterations.unwrap_or(DEFAULT_ITERATIONS), seed: b.seed };
    if let Err(e) = params.validate(usize::MAX) {
        return Err(ApiError::bad_request(e));
    }
    let mut reply = state
        .similarity
        .send(ClusterVectors { space: space.clone(), model: model.clone(), params })
        .await??;
    let written = if b.write_back {
        let stem = b.name.unwrap_or_else(|| format!("cluster-{model}-k{}", b.k));
        Some(write_back(&state, &req, &space, &stem, &reply).await?)
    } else {
        None
    };
    for c in &mut reply.clusters {
        c.members.truncate(members_limit);
    }
    let mut answer = serde_json::to_value(&reply).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some((concepts, links, skipped)) = written {
        answer["write_back"] = json!({ "concepts": concepts, "links": links, "skipped_members": skipped });
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Writes the concepts, then the memberships in batches; answers the concepts, the links
/// written and the members left out (deleted since the clustering).
async fn write_back(
    state: &AppState,
    req: &HttpRequest,
    space: &str,
    stem: &str,
    reply: &ClusterReply,
) -> Result<(Vec<Concept>, u64, u64), ApiError> {
    let base_key = idempotency_key(req)?;
    let names: Vec<String> = (0..reply.clusters.len()).map(|i| format!("{stem}-{i}")).collect();
    let ops = names
        .iter()
        .map(|name| Command::AddNode {
            atom_type: "ConceptNode".into(),
            name: name.clone(),
            tv: None,
            merge: Merge::Latest,
        })
        .collect();
    let outcome =
        propose_keyed(state, format!("{base_key}/concepts"), space.into(), Command::Batch { ops }).await?;
    let concepts: Vec<Concept> = match outcome.result {
        CommandResult::Batch { results } => results
            .iter()
            .zip(names)
            .enumerate()
            .map(|(index, (r, name))| match r {
                CommandResult::Atom { atom, .. } => Ok(Concept { index, id: atom.id, name }),
                CommandResult::AtomWritten { id, .. } => Ok(Concept { index, id: *id, name }),
                other => Err(ApiError::bad_request(format!("a concept node was answered {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        CommandResult::Rejected { error } => return Err(error.into()),
        other => return Err(ApiError::bad_request(format!("the concept nodes were answered {other:?}"))),
    };
    let links: Vec<Command> = reply
        .clusters
        .iter()
        .zip(&concepts)
        .flat_map(|(c, concept)| {
            c.members.iter().map(move |m| Command::AddLink {
                atom_type: "MemberLink".into(),
                outgoing: vec![AtomRef::Id(m.id), AtomRef::Id(concept.id)],
                tv: Some(TruthValue {
                    strength: f64::from(m.score).clamp(0.0, 1.0),
                    confidence: MEMBERSHIP_CONFIDENCE,
                }),
                merge: Merge::Latest,
            })
        })
        .collect();
    let budget = state.settings.api.max_entry_bytes.saturating_sub(ENTRY_SLACK);
    let (mut written, mut skipped) = (0u64, 0u64);
    for (n, mut batch) in batches(links, budget).into_iter().enumerate() {
        // A member deleted since the clustering fails its batch: propose it again without it.
        loop {
            if batch.is_empty() {
                break;
            }
            let key = format!("{base_key}/members/{n}/{}", skipped);
            let outcome =
                propose_keyed(state, key, space.into(), Command::Batch { ops: batch.clone() }).await?;
            match outcome.result {
                CommandResult::Batch { results } => {
                    written += results.len() as u64;
                    break;
                }
                CommandResult::Rejected { error: Rejection::InBatch { op, cause } }
                    if matches!(*cause, Rejection::UnknownAtom { .. }) && op < batch.len() =>
                {
                    batch.remove(op);
                    skipped += 1;
                }
                CommandResult::Rejected { error } => return Err(error.into()),
                other => {
                    return Err(ApiError::bad_request(format!("a membership batch was answered {other:?}")))
                }
            }
        }
    }
    Ok((concepts, written, skipped))
}

/// `ops` in batches of at most `MAX_BATCH_OPS` ops and `budget` encoded bytes.
fn batches(ops: Vec<Command>, budget: usize) -> Vec<Vec<Command>> {
    let (mut out, mut batch, mut bytes) = (Vec::new(), Vec::new(), 0);
    for op in ops {
        let size = rmp_serde::to_vec_named(&op).map(|b| b.len()).unwrap_or(budget);
        if !batch.is_empty() && (batch.len() == MAX_BATCH_OPS || bytes + size > budget) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(op);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}
