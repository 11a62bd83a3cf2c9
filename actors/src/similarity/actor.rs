//! SimilarityActor: answers nearest-neighbour searches (and clusterings, in
//! [`clusters`](super::clusters)) on a `SyncArbiter` pool of its own (never a Raft or HTTP
//! thread). Accepts [`FindSimilar`]: query vectors, or a stored atom's
//! vector, against one model's vectors in one space, by cosine, exact. The index is kept by
//! [`follow`](super::follow); the reply says which applied index it reflects.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use serde::Serialize;

use super::follow::SharedVectors;
use super::metrics::{OutcomeLabel, SimilarityMetrics};
use super::scan::normalised;
use crate::command::validate_vector;
use crate::error::{Error, Result};
use crate::model::AtomId;
use crate::storage::reads::GraphReader;

/// What a search compares against the model's vectors.
#[derive(Clone, Debug)]
pub enum Query {
    /// One or more vectors of the model's dimension (any length: they are normalised).
    Vectors(Vec<Vec<f32>>),
    /// The atom's own stored vector under the model; the atom itself is left out of its hits.
    Atom(AtomId),
}

/// One search in `space` among the vectors of `model`.
#[derive(Clone, Debug)]
pub struct FindSimilar {
    pub space: String,
    pub model: String,
    pub query: Query,
    pub top_k: usize,
    /// Only atoms of this type.
    pub atom_type: Option<String>,
}

impl Message for FindSimilar {
    type Result = Result<SimilarReply>;
}

#[derive(Clone, Debug, Serialize)]
pub struct SimilarHit {
    pub id: AtomId,
    #[serde(rename = "type")]
    pub atom_type: String,
    /// A node's name; `null` for links, and for an atom removed since the index's applied index.
    pub name: Option<String>,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimilarReply {
    /// One list per query, best first.
    pub results: Vec<Vec<SimilarHit>>,
    pub model: String,
    pub dim: usize,
    /// Vectors of the model in the space that the search compared against.
    pub candidates: usize,
    /// The implementation of the products: "ggml" or "rust".
    pub engine: &'static str,
    /// The applied index the index reflected: every entry up to it, none after it.
    pub applied_index: u64,
}

/// Answers searches; one instance per pool thread.
pub struct SimilarityActor {
    pub(super) index: Arc<SharedVectors>,
    pub(super) reader: GraphReader,
    pub(super) metrics: SimilarityMetrics,
    /// Threads one matrix product may use.
    pub(super) product_threads: usize,
}

impl SimilarityActor {
    /// Starts `threads` search threads over `index`, each product on `product_threads`.
    pub fn start_pool(
        threads: usize,
        product_threads: usize,
        index: Arc<SharedVectors>,
        reader: GraphReader,
        metrics: SimilarityMetrics,
    ) -> Addr<SimilarityActor> {
        SyncArbiter::start(threads.max(1), move || SimilarityActor {
            index: index.clone(),
            reader: reader.clone(),
            metrics: metrics.clone(),
            product_threads: product_threads.max(1),
        })
    }

    fn find(&self, msg: &FindSimilar) -> Result<SimilarReply> {
        if msg.top_k == 0 {
            return Err(Error::Invalid("top_k must be at least 1".into()));
        }
        let guard = self.index.read();
        let Some(index) = guard.as_ref() else {
            return Err(Error::Unavailable {
                what: "the vector index is still being built from storage; retry shortly".into(),
                retry_after_s: 1,
            });
        };
        let applied_index = index.at();
        let Some(model) = index.model(&msg.space, &msg.model) else {
            return Err(Error::NotFound {
                what: format!(
                    "vectors of model {:?} in space {:?} (as of applied index {applied_index}; \
                     GET /v1/embeddings/models lists the space's models)",
                    msg.model, msg.space
                ),
            });
        };
        let (queries, exclude) = match &msg.query {
            Query::Vectors(vectors) => {
                let mut queries = Vec::with_capacity(vectors.len());
                for (i, v) in vectors.iter().enumerate() {
                    validate_vector(v).map_err(|e| Error::Invalid(format!("vectors[{i}]: {e}")))?;
                    if v.len() != model.dim() {
                        return Err(Error::Invalid(format!(
                            "vectors[{i}] has {} components; model {:?} has {}-dimensional vectors",
                            v.len(),
                            msg.model,
                            model.dim()
                        )));
                    }
                    queries.push(normalised(v));
                }
                (queries, Vec::new())
            }
            Query::Atom(id) => match model.vector(*id) {
                Some(v) => (vec![v.to_vec()], vec![*id]),
                None => {
                    return Err(Error::NotFound {
                        what: format!(
                            "a vector of model {:?} on atom {id} in space {:?} (as of applied index {applied_index})",
                            msg.model, msg.space
                        ),
                    })
                }
            },
        };
        // A type no vector has matches nothing.
        let only = msg.atom_type.as_ref().map(|t| index.type_id(t).unwrap_or(u32::MAX));
        let hits = model
            .search(&queries, msg.top_k, only, &exclude, self.product_threads)
            .map_err(|e| Error::Internal(format!("the similarity product failed: {e}")))?;
        let typed: Vec<Vec<(AtomId, String, f32)>> = hits
            .iter()
            .map(|list| {
                list.iter()
                    .map(|s| {
                        (s.id, index.known_type(&msg.space, s.id).unwrap_or_default().to_string(), s.score)
                    })
                    .collect()
            })
            .collect();
        let (dim, candidates) = (model.dim(), model.len());
        drop(guard);
        self.metrics.queries.inc_by(queries.len() as u64);
        let results = self.named(&msg.space, typed)?;
        Ok(SimilarReply {
            results,
            model: msg.model.clone(),
            dim,
            candidates,
            engine: super::PRODUCT_ENGINE,
            applied_index,
        })
    }

    /// Node names of the hits (links have none; an atom removed since has none either).
    pub(super) fn named(
        &self,
        space: &str,
        typed: Vec<Vec<(AtomId, String, f32)>>,
    ) -> Result<Vec<Vec<SimilarHit>>> {
        self.reader.with(|view| {
            typed
                .into_iter()
                .map(|list| {
                    list.into_iter()
                        .map(|(id, atom_type, score)| {
                            let name = match view.atom(space, id) {
                                Ok(atom) => atom.name().map(str::to_string),
                                Err(Error::NotFound { .. }) => None,
                                Err(e) => return Err(e),
                            };
                            Ok(SimilarHit { id, atom_type, name, score })
                        })
                        .collect()
                })
                .collect()
        })
    }
}

impl Actor for SimilarityActor {
    type Context = SyncContext<Self>;
}

impl Handler<FindSimilar> for SimilarityActor {
    type Result = Result<SimilarReply>;

    fn handle(&mut self, msg: FindSimilar, _: &mut SyncContext<Self>) -> Result<SimilarReply> {
        let started = Instant::now();
        let reply = self.find(&msg);
        self.metrics.search_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.searches.get_or_create(&OutcomeLabel::of(&reply)).inc();
        reply
    }
}
