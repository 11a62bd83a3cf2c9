//! Clustering one model's vectors in one space ([`ClusterVectors`], answered by the
//! [`SimilarityActor`] pool): the vectors are copied out of the index in atom id order (so
//! every replica clusters the same points in the same order, and searches go on meanwhile),
//! then [`kmeans`](super::kmeans) runs on them. The reply lists every member of each cluster
//! with its cosine to the centroid, best first, and names the few nearest the centroid.

use std::time::Instant;

use actix::{Handler, Message, SyncContext};
use serde::Serialize;

use super::actor::{SimilarHit, SimilarityActor};
use super::kmeans::{self, Params};
use super::metrics::OutcomeLabel;
use super::Matrix;
use crate::error::{Error, Result};
use crate::model::AtomId;

/// Members of a cluster the reply names (with type and name), nearest the centroid first.
pub const REPRESENTATIVES: usize = 5;

/// Clusters the vectors of `model` in `space`.
#[derive(Clone, Debug)]
pub struct ClusterVectors {
    pub space: String,
    pub model: String,
    pub params: Params,
}

impl Message for ClusterVectors {
    type Result = Result<ClusterReply>;
}

#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub id: AtomId,
    /// Cosine to the cluster's centroid.
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cluster {
    pub index: usize,
    pub size: usize,
    /// The members nearest the centroid, named.
    pub representatives: Vec<SimilarHit>,
    /// Every member, nearest the centroid first (ties by id).
    pub members: Vec<Member>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterReply {
    pub model: String,
    pub dim: usize,
    pub k: usize,
    /// Vectors clustered.
    pub points: usize,
    pub iterations: usize,
    /// No point moved in the last round (else `max_iterations` or the deadline stopped it).
    pub converged: bool,
    /// The deadline stopped the rounds: the clustering is the last round's.
    pub deadline_hit: bool,
    /// Sum over the points of (1 - cosine to their centroid).
    pub inertia: f64,
    pub seed: u64,
    pub clusters: Vec<Cluster>,
    /// The implementation of the products: "ggml" or "rust".
    pub engine: &'static str,
    /// The applied index the clustered vectors reflect.
    pub applied_index: u64,
}

impl SimilarityActor {
    fn cluster(&self, msg: &ClusterVectors) -> Result<ClusterReply> {
        let (ids, data, dim, applied_index) = {
            let guard = self.index.read();
            let Some(index) = guard.as_ref() else {
                return Err(Error::Unavailable {
                    what: "the vector index is still being built from storage; retry shortly".into(),
                    retry_after_s: 1,
                });
            };
            let Some(model) = index.model(&msg.space, &msg.model).filter(|m| !m.is_empty()) else {
                return Err(Error::NotFound {
                    what: format!(
                        "vectors of model {:?} in space {:?} (as of applied index {}; \
                         GET /v1/embeddings/models lists the space's models)",
                        msg.model,
                        msg.space,
                        index.at()
                    ),
                });
            };
            let (ids, data) = model.rows_by_id();
            (ids, data, model.dim(), index.at())
        };
        let points = Matrix { data: &data, rows: ids.len(), cols: dim };
        // The parameters were checked against the points' count; what fails now is the product.
        msg.params.validate(ids.len()).map_err(Error::Invalid)?;
        let out = kmeans::cluster(points, &msg.params, self.product_threads).map_err(Error::Internal)?;
        let k = msg.params.k;
        let mut members: Vec<Vec<Member>> = vec![Vec::new(); k];
        for (p, c) in out.assignment.iter().enumerate() {
            members[*c as usize].push(Member { id: ids[p], score: out.scores[p] });
        }
        for list in &mut members {
            list.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        }
        let typed: Vec<Vec<(AtomId, String, f32)>> = {
            let guard = self.index.read();
            let known = |id: AtomId| {
                guard.as_ref().and_then(|i| i.known_type(&msg.space, id)).unwrap_or_default().to_string()
            };
            members
                .iter()
                .map(|list| list.iter().take(REPRESENTATIVES).map(|m| (m.id, known(m.id), m.score)).collect())
                .collect()
        };
        let representatives = self.named(&msg.space, typed)?;
        let clusters = members
            .into_iter()
            .zip(representatives)
            .enumerate()
            .map(|(index, (members, representatives))| Cluster {
                index,
                size: members.len(),
                representatives,
                members,
            })
            .collect();
        Ok(ClusterReply {
            model: msg.model.clone(),
            dim,
            k,
            points: ids.len(),
            iterations: out.iterations,
            converged: out.converged,
            deadline_hit: out.deadline_hit,
            inertia: out.inertia(),
            seed: msg.params.seed,
            clusters,
            engine: super::PRODUCT_ENGINE,
            applied_index,
        })
    }
}

impl Handler<ClusterVectors> for SimilarityActor {
    type Result = Result<ClusterReply>;

    fn handle(&mut self, msg: ClusterVectors, _: &mut SyncContext<Self>) -> Result<ClusterReply> {
        let started = Instant::now();
        let reply = self.cluster(&msg);
        self.metrics.cluster_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.clusterings.get_or_create(&OutcomeLabel::of(&reply)).inc();
        reply
    }
}
