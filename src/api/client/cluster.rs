//! `POST /v1/cluster`: k-means over one model's vectors in the space (sentence embeddings, or
//! with `"embedding_kind": "structural"` the graph's), answered by the similarity pool. Like a
//! search it is linearizable by default (`?consistency=stale` skips the barrier). With
//! `write_back`, each cluster becomes a `ConceptNode` (named `{name}-{index}`) and each member
//! a `MemberLink(member, concept)` whose strength is the member's cosine to the centroid,
//! written through Raft in bounded batches (a member deleted meanwhile is left out); a second
//! run adds to what the first wrote, it does not remove memberships. A deadline (request
//! `deadline_ms`, at most `similarity.cluster_deadline_ms`) stops the rounds, and the reply
//! says so (`deadline_hit`).

use actix_web::{web, HttpRequest, HttpResponse};
use std::time::{Duration, Instant};

use cograft_actors::command::{pack, AtomRef, Command, CommandResult, Rejection, ENTRY_SLACK, MAX_BATCH_OPS};
use cograft_actors::error::Error;
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
    /// No round starts after this many ms from the request's arrival (at most, and by default,
    /// `similarity.cluster_deadline_ms`).
    deadline_ms: Option<u64>,
}

/// Longest name stem of the concept nodes.
const MAX_STEM: usize = 256;

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
    let received = Instant::now();
    let space = space_of(&req)?;
    let b = body.into_inner();
    let members_limit = b.members_limit.unwrap_or(DEFAULT_MEMBERS_LIMIT);
    if let Some(name) = &b.name {
        if name.trim().is_empty() || name.len() > MAX_STEM {
            return Err(ApiError::bad_request(format!(
                "name, the concept nodes' name stem, must be 1..={MAX_STEM} bytes and not blank"
            )));
        }
    }
    let limit_ms = state.settings.similarity.cluster_deadline_ms;
    let deadline_ms = b.deadline_ms.unwrap_or(limit_ms);
    if deadline_ms == 0 || deadline_ms > limit_ms {
        return Err(ApiError::bad_request(format!(
            "deadline_ms must be in 1..={limit_ms} (similarity.cluster_deadline_ms), got {deadline_ms}"
        )));
    }
    if !q.stale()? {
        vectors_current(&state).await?;
    }
    let model = model_of(&state, &space, b.embedding_kind, b.model).await?;
    let params = Params {
        k: b.k,
        max_iterations: b.max_iterations.unwrap_or(DEFAULT_ITERATIONS),
        seed: b.seed,
        deadline: Some(received + Duration::from_millis(deadline_ms)),
    };
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
    let mut answer = serde_json::to_value(&reply).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some((concepts, links, skipped)) = written {
        answer["write_back"] = json!({ "concepts": concepts, "links": links, "skipped_members": skipped });
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// Writes the concepts, then the memberships, in batches; answers the concepts, the links
/// written and the members left out (deleted since the clustering). Each batch's idempotency
/// key is the request's with a hash of the batch's ops, so a retried request replays only the
/// batches it sends again unchanged (the writes deduplicate by name and members anyway).
async fn write_back(
    state: &AppState,
    req: &HttpRequest,
    space: &str,
    stem: &str,
    reply: &ClusterReply,
) -> Result<(Vec<Concept>, u64, u64), ApiError> {
    let base_key = idempotency_key(req)?;
    let budget = state.settings.api.max_entry_bytes.saturating_sub(ENTRY_SLACK);
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
    let mut ids = Vec::with_capacity(names.len());
    for batch in batches(ops, budget)? {
        let results = match propose_batch(state, &base_key, space, batch).await? {
            Ok(results) => results,
            Err(rejection) => return Err(rejection.into()),
        };
        for r in results {
            match r {
                CommandResult::Atom { atom, .. } => ids.push(atom.id),
                CommandResult::AtomWritten { id, .. } => ids.push(id),
                other => return Err(unexpected("a concept node", &other)),
            }
        }
    }
    if ids.len() != names.len() {
        return Err(Error::Internal(format!(
            "{} concept nodes answered for {} clusters",
            ids.len(),
            names.len()
        ))
        .into());
    }
    let concepts: Vec<Concept> = names
        .into_iter()
        .zip(ids)
        .enumerate()
        .map(|(index, (name, id))| Concept { index, id, name })
        .collect();
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
    let (mut written, mut skipped) = (0u64, 0u64);
    for mut batch in batches(links, budget)? {
        // A member deleted since the clustering fails its batch: proposed again without it.
        while !batch.is_empty() {
            match propose_batch(state, &base_key, space, batch.clone()).await? {
                Ok(results) => {
                    written += results.len() as u64;
                    break;
                }
                Err(Rejection::InBatch { op, cause }) if gone_member(&batch, op, &cause) => {
                    batch.remove(op);
                    skipped += 1;
                }
                Err(rejection) => return Err(rejection.into()),
            }
        }
    }
    Ok((concepts, written, skipped))
}

/// Proposes `ops` as one batch keyed by `base` and their hash; answers the ops' results or the
/// batch's rejection.
async fn propose_batch(
    state: &AppState,
    base: &str,
    space: &str,
    ops: Vec<Command>,
) -> Result<Result<Vec<CommandResult>, Rejection>, ApiError> {
    let encoded = rmp_serde::to_vec_named(&ops).map_err(|e| Error::Internal(e.to_string()))?;
    let key = format!("{base}/{}", &blake3::hash(&encoded).to_hex()[..16]);
    match propose_keyed(state, key, space.into(), Command::Batch { ops }).await?.result {
        CommandResult::Batch { results } => Ok(Ok(results)),
        CommandResult::Rejected { error } => Ok(Err(error)),
        other => Err(unexpected("a write-back batch", &other)),
    }
}

/// Whether op `op` of `batch` failed because its member (not its concept) is gone.
fn gone_member(batch: &[Command], op: usize, cause: &Rejection) -> bool {
    let (Some(Command::AddLink { outgoing, .. }), Rejection::UnknownAtom { id }) = (batch.get(op), cause)
    else {
        return false;
    };
    outgoing.first() == Some(&AtomRef::Id(*id))
}

fn unexpected(what: &str, answer: &CommandResult) -> ApiError {
    Error::Internal(format!("{what} was answered {answer:?}")).into()
}

/// `ops` in batches of at most `MAX_BATCH_OPS` ops and `budget` encoded bytes.
fn batches(ops: Vec<Command>, budget: usize) -> Result<Vec<Vec<Command>>, ApiError> {
    match pack(ops, budget, MAX_BATCH_OPS) {
        (batches, 0) => Ok(batches),
        // A membership is two ids and a concept's name at most MAX_STEM bytes.
        (_, oversized) => {
            Err(Error::Internal(format!("{oversized} write-back ops do not fit an entry")).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(member: AtomId, concept: AtomId) -> Command {
        Command::AddLink {
            atom_type: "MemberLink".into(),
            outgoing: vec![AtomRef::Id(member), AtomRef::Id(concept)],
            tv: None,
            merge: Merge::Latest,
        }
    }

    #[test]
    fn batches_hold_at_most_the_ops_and_bytes_an_entry_may() {
        let ops: Vec<Command> = (0..2500).map(|i| membership(i, 9)).collect();
        let by_count = batches(ops.clone(), usize::MAX).unwrap();
        assert_eq!(by_count.iter().map(Vec::len).collect::<Vec<_>>(), vec![1000, 1000, 500]);
        let one = rmp_serde::to_vec_named(&ops[0]).unwrap().len();
        let by_bytes = batches(ops.clone(), one * 10).unwrap();
        assert!(by_bytes.iter().all(|b| b.len() <= 10 && !b.is_empty()));
        assert_eq!(by_bytes.iter().map(Vec::len).sum::<usize>(), 2500);
        // Long concept names: a thousand of them do not fit one entry of 100 KiB.
        let concepts: Vec<Command> = (0..1000)
            .map(|i| Command::AddNode {
                atom_type: "ConceptNode".into(),
                name: format!("{}-{i}", "n".repeat(256)),
                tv: None,
                merge: Merge::Latest,
            })
            .collect();
        let split = batches(concepts, 100 * 1024 - ENTRY_SLACK).unwrap();
        assert!(split.len() > 1);
        for batch in &split {
            assert!(
                rmp_serde::to_vec_named(&Command::Batch { ops: batch.clone() }).unwrap().len() <= 100 * 1024
            );
        }
    }

    #[test]
    fn only_a_gone_member_is_left_out_not_a_gone_concept() {
        let batch = vec![membership(1, 9), membership(2, 9)];
        assert!(gone_member(&batch, 1, &Rejection::UnknownAtom { id: 2 }));
        assert!(!gone_member(&batch, 1, &Rejection::UnknownAtom { id: 9 }), "the concept is gone: stop");
        assert!(!gone_member(&batch, 5, &Rejection::UnknownAtom { id: 2 }), "no such op");
        assert!(!gone_member(&batch, 0, &Rejection::CasFailed { current: None }));
    }
}
