//! `POST /v1/recall`: hybrid recall in one query. From `text` it finds the nodes named exactly
//! so (among `match_types`), embeds the text and takes its nearest vectors; it spreads from
//! the given `sources` and the exact matches (or, when there are neither, from the nearest
//! vectors, weighted by their cosine); then every candidate of either kind gets both parts,
//! its activation over the spread's highest and its cosine to the text, and is ranked by
//! [`cograft_actors::recall::rank`] (exact matches first). The reply carries each part.
//! Linearizable by default: after the read barrier it waits until both the vector index and
//! the graph index reflect it (`?consistency=stale` skips that).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::error::Error;
use cograft_actors::inference::Embed;
use cograft_actors::model::AtomId;
use cograft_actors::raft::actor::ReadBarrier;
use cograft_actors::recall::{rank, Candidate, Weights, DEFAULT_WEIGHTS};
use cograft_actors::similarity::actor::{FindSimilar, Query};
use cograft_actors::similarity::scan::normalised;
use cograft_actors::spreading::params::{Source, SpreadRequest, MAX_TOP_K as MAX_SPREAD_TOP_K};
use cograft_actors::spreading::RunSpread;
use serde::Deserialize;
use serde_json::{json, Value};

use super::similar::INDEX_PATIENCE;
use super::{space_of, ReadParams};
use crate::api::error::ApiError;
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/recall", web::post().to(recall));
}

const DEFAULT_TOP_K: usize = 10;
/// Nearest vectors seeding a spread when the text names no node and no source is given.
const SEEDS: usize = 3;
/// Candidates each kind of recall contributes, per result asked for.
const WIDEN: usize = 4;
/// The spread's default threshold here: lower than `/v1/spread`'s, because the spread part is
/// logarithmic down to `recall::SPREAD_FLOOR` of the top and the weak reaches count (the
/// setting the weights were tuned with on MEN: README, "Figures").
const THRESHOLD: f64 = 1e-4;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    types: Option<Vec<String>>,
    min_confidence: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecallBody {
    text: Option<String>,
    sources: Option<Vec<Source>>,
    weights: Option<Weights>,
    #[serde(default)]
    filters: Filters,
    top_k: Option<usize>,
    /// Node types whose names the text is matched against exactly (default: `filters.types`,
    /// else `ConceptNode`).
    match_types: Option<Vec<String>>,
    /// The spread's parameters: a `/v1/spread` body without `sources`.
    spread: Option<Value>,
    /// The text model's id (default: the node's embedding model).
    model: Option<String>,
}

async fn recall(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ReadParams>,
    body: web::Json<RecallBody>,
) -> Result<HttpResponse, ApiError> {
    let received = Instant::now();
    let space = space_of(&req)?;
    let b = body.into_inner();
    let weights = b.weights.unwrap_or(DEFAULT_WEIGHTS);
    weights.validate().map_err(ApiError::bad_request)?;
    let top_k = b.top_k.unwrap_or(DEFAULT_TOP_K);
    let max_top_k = state.settings.similarity.max_top_k;
    if top_k == 0 || top_k > max_top_k {
        return Err(ApiError::bad_request(format!(
            "top_k must be in 1..={max_top_k} (similarity.max_top_k), got {top_k}"
        )));
    }
    let text = b.text.filter(|t| !t.trim().is_empty());
    let given = b.sources.unwrap_or_default();
    if text.is_none() && given.is_empty() {
        return Err(ApiError::bad_request("give text, sources, or both: what to recall from"));
    }
    if let Some(c) = b.filters.min_confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(ApiError::bad_request(format!("filters.min_confidence must be in 0..=1, got {c}")));
        }
    }
    let spread_body = spread_request(b.spread, top_k)?;
    let match_types =
        b.match_types.or_else(|| b.filters.types.clone()).unwrap_or_else(|| vec!["ConceptNode".into()]);
    if !q.stale()? {
        current(&state).await?;
    }

    // Recall by meaning: the text's nearest vectors.
    let mut meaning: Option<(String, Vec<f32>)> = None;
    let mut similar: Vec<(AtomId, f32)> = Vec::new();
    if let (Some(text), true) = (&text, weights.similarity > 0.0) {
        let embedded = state.inference.send(Embed { texts: vec![text.clone()] }).await??;
        if let Some(named) = b.model.as_ref().filter(|m| **m != embedded.model) {
            return Err(ApiError::bad_request(format!(
                "the text is embedded with the node's model {:?}, not {named:?}: leave model out",
                embedded.model
            )));
        }
        let vector = embedded.embeddings.into_iter().next().unwrap_or_default();
        let find = FindSimilar {
            space: space.clone(),
            model: embedded.model.clone(),
            query: Query::Vectors(vec![vector.clone()]),
            top_k: (top_k * WIDEN).min(max_top_k),
            atom_type: None,
        };
        match state.similarity.send(find).await? {
            Ok(reply) => similar = reply.results[0].iter().map(|h| (h.id, h.score)).collect(),
            // A space without vectors of the model: meaning contributes nothing.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        meaning = Some((embedded.model, normalised(&vector)));
    }

    // Exact name matches, and the spread's sources.
    let exact: Vec<AtomId> = match &text {
        Some(text) => {
            let (s, t, types) = (space.clone(), text.clone(), match_types.clone());
            state
                .storage
                .send(cograft_actors::storage::actor::Query::new(move |r| {
                    let mut found = Vec::new();
                    for atom_type in &types {
                        if let Some(atom) = r.find_node(&s, atom_type, &t)? {
                            found.push(atom.id);
                        }
                    }
                    Ok(found)
                }))
                .await??
        }
        None => Vec::new(),
    };
    let mut sources: Vec<Source> = given.clone();
    sources.extend(exact.iter().map(|id| Source::Id(*id)));
    if sources.is_empty() {
        sources = similar.iter().take(SEEDS).filter(|(_, s)| *s > 0.0).map(|(id, s)| seed(*id, *s)).collect();
    }
    let given_ids: HashSet<AtomId> = given.iter().filter_map(source_id).collect();
    let mut activation: BTreeMap<AtomId, f64> = BTreeMap::new();
    let mut spread_stats = Value::Null;
    if weights.spread > 0.0 && !sources.is_empty() {
        let request = SpreadRequest { sources, ..spread_body };
        let reply = state.spreading.send(RunSpread { space: space.clone(), request, received }).await??;
        for r in &reply.results {
            activation.insert(r.id, r.activation);
        }
        spread_stats = json!(reply.stats);
    }

    // Every candidate gets both parts; then the filters.
    let mut ids: Vec<AtomId> = activation
        .keys()
        .copied()
        .chain(similar.iter().map(|(id, _)| *id))
        .chain(exact.iter().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.retain(|id| !given_ids.contains(id) || exact.contains(id));
    let cosines: BTreeMap<AtomId, f32> = match &meaning {
        Some((model, unit)) => cosines(&state, &space, model, unit, &ids),
        None => BTreeMap::new(),
    };
    let (s, wanted, types, min_confidence) =
        (space.clone(), ids.clone(), b.filters.types, b.filters.min_confidence);
    let atoms = state
        .storage
        .send(cograft_actors::storage::actor::Query::new(move |r| {
            let mut atoms = Vec::new();
            for id in wanted {
                match r.atom(&s, id) {
                    Ok(atom) => atoms.push(atom),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((atoms, r.applied_index()?))
        }))
        .await??;
    let (atoms, applied_index) = atoms;
    let atoms: BTreeMap<AtomId, _> = atoms
        .into_iter()
        .filter(|a| types.as_ref().is_none_or(|t| t.contains(&a.atom_type)))
        .filter(|a| min_confidence.is_none_or(|c| a.tv.confidence >= c))
        .map(|a| (a.id, a))
        .collect();
    let candidates: Vec<Candidate> = atoms
        .keys()
        .map(|id| Candidate {
            id: *id,
            exact: exact.contains(id),
            activation: activation.get(id).copied().unwrap_or(0.0),
            similarity: cosines.get(id).copied(),
        })
        .collect();
    let results: Vec<Value> = rank(&candidates, weights, top_k)
        .into_iter()
        .map(|r| {
            let atom = &atoms[&r.id];
            json!({
                "id": r.id,
                "type": atom.atom_type,
                "name": atom.name(),
                "score": r.score,
                "exact": r.exact,
                "parts": { "spread": r.spread, "similarity": r.similarity },
                "activation": activation.get(&r.id).copied().unwrap_or(0.0),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "results": results,
        "weights": weights,
        "exact_matches": exact,
        "model": meaning.map(|(m, _)| m),
        "candidates": candidates.len(),
        "spread": spread_stats,
        "applied_index": applied_index,
    })))
}

/// The spread's parameters from the request (`sources` are the handler's), checked as
/// `/v1/spread` checks them: its `top_k` widened to find candidates beyond the answer's, and its
/// threshold by default [`THRESHOLD`].
fn spread_request(body: Option<Value>, top_k: usize) -> Result<SpreadRequest, ApiError> {
    let mut body = body.unwrap_or_else(|| json!({}));
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::bad_request("spread holds the spread's parameters: a JSON object"));
    };
    if object.contains_key("sources") {
        return Err(ApiError::bad_request(
            "give the sources at the top level of the request, not inside spread",
        ));
    }
    object.insert("sources".into(), json!([]));
    object.entry("top_k").or_insert_with(|| json!((top_k * WIDEN).min(MAX_SPREAD_TOP_K)));
    object.entry("threshold").or_insert_with(|| json!(THRESHOLD));
    let request: SpreadRequest =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("spread: {e}")))?;
    let probe = SpreadRequest { sources: vec![Source::Id(0)], ..request.clone() };
    probe.resolve().map_err(|e| ApiError::bad_request(format!("spread.{e}")))?;
    Ok(request)
}

fn seed(id: AtomId, activation: f32) -> Source {
    Source::Atom { id: Some(id), atom_type: None, name: None, activation: Some(f64::from(activation)) }
}

fn source_id(source: &Source) -> Option<AtomId> {
    match source {
        Source::Id(id) => Some(*id),
        Source::Atom { id, .. } => *id,
    }
}

/// The cosine of each of `ids` that has a vector of `model` to the unit query.
fn cosines(
    state: &AppState,
    space: &str,
    model: &str,
    unit: &[f32],
    ids: &[AtomId],
) -> BTreeMap<AtomId, f32> {
    let guard = state.vector_index.read();
    let Some(index) = guard.as_ref().and_then(|v| v.model(space, model)) else { return BTreeMap::new() };
    ids.iter()
        .filter_map(|id| index.vector(*id).map(|v| (*id, v.iter().zip(unit).map(|(a, b)| a * b).sum())))
        .collect()
}

/// Passes the read barrier and waits until both indexes reflect it.
async fn current(state: &AppState) -> Result<(), ApiError> {
    let barrier = state.raft.send(ReadBarrier).await??;
    for (what, reached) in [
        ("vector", state.vector_index.reaches(barrier, INDEX_PATIENCE).await),
        ("graph", state.spread_index.reaches(barrier, INDEX_PATIENCE).await),
    ] {
        if let Err(at) = reached {
            return Err(Error::Unavailable {
                what: format!(
                    "the {what} index reflects applied index {at}, and this recall must see {barrier}: it did not \
                     catch up within {} s; retry, or recall with ?consistency=stale",
                    INDEX_PATIENCE.as_secs()
                ),
                retry_after_s: 1,
            }
            .into());
        }
    }
    Ok(())
}
