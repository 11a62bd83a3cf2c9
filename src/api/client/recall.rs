//! `POST /v1/recall`: hybrid recall in one query. From `text` it finds the nodes named exactly
//! so (among `match_types`), embeds the text and takes its nearest vectors; it spreads from
//! the given `sources` and the exact matches (or, when there are neither, from the nearest
//! vectors, weighted by their cosine); then every candidate of either kind gets both parts,
//! its activation over the spread's highest and its cosine to the text, and is ranked by
//! [`cograft_actors::recall::rank`] (exact matches first). The reply carries each part.
//! Links (no name) are left out unless `filters.types` names their type. Linearizable by
//! default: after the read barrier it waits until both the vector index and the graph index
//! reflect it, so each part reflects at least the barrier (`indexes` says which index each
//! part read, `applied_index` is the lowest; `?consistency=stale` skips the wait). Without an
//! embedding model the default weights rank by the spread alone.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::error::Error;
use cograft_actors::inference::{Embed, Status};
use cograft_actors::model::{validate_type_name, AtomId};
use cograft_actors::recall::{rank, Candidate, Weights, DEFAULT_WEIGHTS};
use cograft_actors::similarity::actor::{FindSimilar, Query};
use cograft_actors::similarity::follow::SharedVectors;
use cograft_actors::similarity::scan::normalised;
use cograft_actors::spreading::params::{Source, SpreadRequest, MAX_TOP_K as MAX_SPREAD_TOP_K};
use cograft_actors::spreading::RunSpread;
use cograft_actors::storage::actor::Query as StorageQuery;
use serde::Deserialize;
use serde_json::{json, Value};

use super::similar::STALE_HINT;
use super::{barrier_reached, space_of, Index, ReadParams};
use crate::api::error::ApiError;
use crate::api::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/recall", web::post().to(recall));
}

const DEFAULT_TOP_K: usize = 10;
/// Nearest vectors seeding a spread when the text names no node and no source is given.
const SEEDS: usize = 3;
/// Nearest vectors taken per result asked for.
const WIDEN: usize = 4;
/// Most types `filters.types` and `match_types` may name.
const MAX_TYPES: usize = 64;
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
    let space = space_of(&req)?;
    let b = body.into_inner();
    let explicit_weights = b.weights.is_some();
    let mut weights = b.weights.unwrap_or(DEFAULT_WEIGHTS);
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
    if text.is_none() && weights.spread == 0.0 {
        return Err(ApiError::bad_request(
            "without text only the spread ranks, and weights.spread is 0: nothing would rank",
        ));
    }
    if let Some(c) = b.filters.min_confidence {
        if !(0.0..=1.0).contains(&c) {
            return Err(ApiError::bad_request(format!("filters.min_confidence must be in 0..=1, got {c}")));
        }
    }
    for (field, types) in [("filters.types", &b.filters.types), ("match_types", &b.match_types)] {
        if let Some(types) = types {
            if types.is_empty() || types.len() > MAX_TYPES {
                return Err(ApiError::bad_request(format!(
                    "{field} names 1..={MAX_TYPES} types, got {}",
                    types.len()
                )));
            }
            for t in types {
                validate_type_name(t).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
            }
        }
    }
    let spread_body = spread_request(b.spread)?;
    let match_types =
        b.match_types.or_else(|| b.filters.types.clone()).unwrap_or_else(|| vec!["ConceptNode".into()]);
    if !q.stale()? {
        barrier_reached(&state, &[Index::Vectors, Index::Graph], STALE_HINT).await?;
    }
    // Without an embedding model the default weights rank by the spread alone; weights the
    // client chose with a similarity part need the model (503 naming the setting).
    let no_model = state.inference.send(Status).await?.embedding.is_none();
    if no_model && !explicit_weights {
        weights = Weights { spread: 1.0, similarity: 0.0 };
    }

    // Recall by meaning: the text's nearest vectors (of the one filtered type, if one).
    let mut meaning: Option<(String, Vec<f32>)> = None;
    let mut similar: Vec<(AtomId, f32)> = Vec::new();
    let mut vector_index = None;
    if let (Some(text), true) = (&text, weights.similarity > 0.0) {
        let embedded = state.inference.send(Embed { texts: vec![text.clone()] }).await??;
        if let Some(named) = b.model.as_ref().filter(|m| **m != embedded.model) {
            return Err(ApiError::bad_request(format!(
                "the text is embedded with the node's model {:?}, not {named:?}: leave model out",
                embedded.model
            )));
        }
        let vector = embedded.embeddings.into_iter().next().unwrap_or_default();
        let only = b.filters.types.as_ref().filter(|t| t.len() == 1).map(|t| t[0].clone());
        let find = FindSimilar {
            space: space.clone(),
            model: embedded.model.clone(),
            query: Query::Vectors(vec![vector.clone()]),
            top_k: (top_k * WIDEN).min(max_top_k),
            atom_type: only,
        };
        match state.similarity.send(find).await? {
            Ok(reply) => {
                similar = reply.results[0].iter().map(|h| (h.id, h.score)).collect();
                vector_index = Some(reply.applied_index);
            }
            // A space without vectors of the model: meaning contributes nothing.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        meaning = Some((embedded.model, normalised(&vector)));
    }

    // Exact name matches, and the spread's sources: the given ones, the matches, or the
    // nearest vectors. Sources this node's graph index does not hold yet (written after the
    // barrier, or a stale read) are the handler's own, not the client's: left out, not a 404.
    let exact: Vec<AtomId> = match &text {
        Some(text) => {
            let (s, t, types) = (space.clone(), text.clone(), match_types.clone());
            state
                .storage
                .send(StorageQuery::new(move |r| {
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
    let mut internal: Vec<Source> = exact.iter().map(|id| Source::Id(*id)).collect();
    if given.is_empty() && internal.is_empty() {
        internal =
            similar.iter().take(SEEDS).filter(|(_, s)| *s > 0.0).map(|(id, s)| seed(*id, *s)).collect();
    }
    let internal = held(&state, &space, internal);
    let sources: Vec<Source> = given.iter().cloned().chain(internal).collect();
    let mut activation: BTreeMap<AtomId, f64> = BTreeMap::new();
    let (mut top, mut spread_stats, mut graph_index, mut sources_of_spread) =
        (0.0, Value::Null, None, HashSet::new());
    if weights.spread > 0.0 && !sources.is_empty() {
        let request = SpreadRequest { sources, ..spread_body };
        // The deadline counts from here: the barrier and the embedding are not the spread's.
        let reply = state
            .spreading
            .send(RunSpread { space: space.clone(), request, received: Instant::now() })
            .await??;
        top = reply.results.first().map_or(0.0, |r| r.activation);
        for r in &reply.results {
            activation.insert(r.id, r.activation);
        }
        sources_of_spread = reply.sources.iter().copied().collect();
        graph_index = Some(reply.applied_index);
        spread_stats = json!(reply.stats);
    }

    // Every candidate gets both parts; then the filters (which select, never re-score).
    let mut ids: Vec<AtomId> = activation
        .keys()
        .copied()
        .chain(similar.iter().map(|(id, _)| *id))
        .chain(exact.iter().copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let given_ids: HashSet<AtomId> = given
        .iter()
        .filter_map(source_id)
        .chain(sources_of_spread.iter().copied().filter(|id| !exact.contains(id)))
        .collect();
    ids.retain(|id| !given_ids.contains(id) || exact.contains(id));
    let cosines = match meaning.clone() {
        Some((model, unit)) => {
            let (vectors, space, wanted) = (state.vector_index.clone(), space.clone(), ids.clone());
            web::block(move || cosines(&vectors, &space, &model, &unit, &wanted))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        }
        None => BTreeMap::new(),
    };
    let (s, wanted) = (space.clone(), ids.clone());
    let (atoms, storage_index) = state
        .storage
        .send(StorageQuery::new(move |r| {
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
    let (types, min_confidence) = (b.filters.types, b.filters.min_confidence);
    let atoms: BTreeMap<AtomId, _> = atoms
        .into_iter()
        // Links have no name to recall by: only when a type filter asks for them.
        .filter(|a| match &types {
            Some(t) => t.contains(&a.atom_type),
            None => a.name().is_some(),
        })
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
    let results: Vec<Value> = rank(&candidates, top, weights, top_k)
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
    // Each part reflects at least the barrier's index; the lowest of them is the answer's.
    let applied_index = [Some(storage_index), graph_index, vector_index].into_iter().flatten().min();
    Ok(HttpResponse::Ok().json(json!({
        "results": results,
        "weights": weights,
        "exact_matches": exact.iter().filter(|id| atoms.contains_key(id)).collect::<Vec<_>>(),
        "model": meaning.map(|(m, _)| m),
        "candidates": candidates.len(),
        "spread": spread_stats,
        "indexes": { "storage": storage_index, "graph": graph_index, "vectors": vector_index },
        "applied_index": applied_index,
    })))
}

/// Of the handler's own sources, those this node's graph index holds.
fn held(state: &AppState, space: &str, sources: Vec<Source>) -> Vec<Source> {
    let guard = state.spread_index.read();
    let Some(index) = guard.as_ref().and_then(|g| g.space(space)) else { return Vec::new() };
    sources.into_iter().filter(|s| source_id(s).is_some_and(|id| index.dense_of(id).is_some())).collect()
}

/// The spread's parameters from the request (`sources` are the handler's), checked as
/// `/v1/spread` checks them: by default its `top_k` the most a spread answers (so a candidate
/// found by meaning keeps its activation however low it ranks, as in the recall benchmark) and
/// its threshold [`THRESHOLD`].
fn spread_request(body: Option<Value>) -> Result<SpreadRequest, ApiError> {
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
    object.entry("top_k").or_insert_with(|| json!(MAX_SPREAD_TOP_K));
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

/// The cosine of each of `ids` that has a vector of `model` to the unit query (on a blocking
/// thread: up to ten thousand dot products).
fn cosines(
    vectors: &SharedVectors,
    space: &str,
    model: &str,
    unit: &[f32],
    ids: &[AtomId],
) -> BTreeMap<AtomId, f32> {
    let guard = vectors.read();
    let Some(index) = guard.as_ref().and_then(|v| v.model(space, model)) else { return BTreeMap::new() };
    ids.iter()
        .filter_map(|id| index.vector(*id).map(|v| (*id, v.iter().zip(unit).map(|(a, b)| a * b).sum())))
        .collect()
}
