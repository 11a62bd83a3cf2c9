//! StructuralBuilder: builds one space's structural embeddings at a time, on the leader, as a
//! job that outlives the request that started it. A build copies the space's incidence index
//! (the spreading index, at least as current as the barrier the caller waited for), runs
//! [`fastrp`](super::fastrp) on a blocking thread, then proposes the vectors through this
//! node's Raft in `SetEmbeddings` entries within the entry size limit (first the entries that
//! clear the old vector of the atoms it found without structure). An entry that was not
//! committed for a reason that may pass is tried again (it replaces, so twice is once). Replicas store
//! what the log says and never recompute. The job's progress and outcome are kept for
//! `GET /admin/embeddings`; a build that loses leadership or its space stops with the reason.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use super::fastrp::{self, Params, Structural};
use super::follow::SharedVectors;
use super::metrics::SimilarityMetrics;
use crate::command::{
    pack, validate_vector, AtomVector, Command, CommandResult, Proposal, ENTRY_SLACK, MAX_BACKFILL_VECTORS,
};
use crate::model::AtomId;
use crate::raft::actor::ProposeAsLeader;
use crate::raft::batcher::SubmitError;
use crate::raft::RaftActor;
use crate::spreading::SharedIndex;

/// How long a build waits for the vector index to reach the graph's applied index.
const INDEX_PATIENCE: Duration = Duration::from_secs(10);
/// Tries of one entry, and the pause before the second (growing with each try).
const ATTEMPTS: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a build is doing, or how it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Computing,
    Proposing,
    Done,
    Failed,
}

/// One build, as `GET /admin/embeddings` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct BuildReport {
    pub space: String,
    /// The model id the vectors are stored under (e.g. `fastrp-64`).
    pub model: String,
    pub dim: usize,
    pub weights: Vec<f32>,
    pub seed: u64,
    pub phase: Phase,
    /// The applied index of the graph the vectors were computed from.
    pub graph_index: u64,
    /// Atoms given a vector, and atoms without structure (no links, no members).
    pub atoms: usize,
    pub isolated: usize,
    /// What the committed entries did so far.
    pub entries: u64,
    pub stored: u64,
    pub cleared: u64,
    pub skipped: u64,
    pub started_ms: u64,
    pub compute_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub error: Option<String>,
}

/// Starts a build of `space` (the caller checked that this node leads).
pub struct BuildStructural {
    pub space: String,
    pub params: Params,
}

/// The build started, or another is running (it is answered instead), or this one cannot run.
pub enum Started {
    Started(BuildReport),
    Busy(BuildReport),
    Refused(Refusal),
}

/// Why a build cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{NOT_BUILT}")]
    NotReady,
    #[error("space {0:?} holds no atoms to embed")]
    NoAtoms(String),
    #[error(
        "a {dim}-dimensional build of {atoms} atoms needs about {need_mb} MiB, over \
         similarity.structural_max_memory_mb ({limit_mb} MiB): build fewer dimensions or raise the limit"
    )]
    TooBig { dim: usize, atoms: usize, need_mb: usize, limit_mb: usize },
}

impl Message for BuildStructural {
    type Result = Started;
}

/// The running build, or the last one since this node started.
pub struct StructuralState;

impl Message for StructuralState {
    type Result = Option<BuildReport>;
}

/// What the builder needs from the node.
pub struct StructuralParts {
    pub graph: Arc<SharedIndex>,
    pub vectors: Arc<SharedVectors>,
    pub raft: Addr<RaftActor>,
    pub max_entry_bytes: usize,
    pub threads: usize,
    /// Bytes a build may hold at once; a bigger one is refused before it starts.
    pub max_memory_bytes: usize,
    pub metrics: SimilarityMetrics,
}

pub struct StructuralBuilder {
    parts: Arc<StructuralParts>,
    report: Arc<Mutex<Option<BuildReport>>>,
}

impl StructuralBuilder {
    pub fn new(parts: StructuralParts) -> StructuralBuilder {
        StructuralBuilder { parts: Arc::new(parts), report: Arc::default() }
    }
}

impl Actor for StructuralBuilder {
    type Context = Context<Self>;
}

impl Handler<StructuralState> for StructuralBuilder {
    type Result = Option<BuildReport>;

    fn handle(&mut self, _: StructuralState, _: &mut Context<Self>) -> Option<BuildReport> {
        lock(&self.report).clone()
    }
}

impl Handler<BuildStructural> for StructuralBuilder {
    type Result = MessageResult<BuildStructural>;

    fn handle(&mut self, msg: BuildStructural, ctx: &mut Context<Self>) -> Self::Result {
        let mut report = lock(&self.report);
        if let Some(running) =
            report.as_ref().filter(|r| matches!(r.phase, Phase::Computing | Phase::Proposing))
        {
            return MessageResult(Started::Busy(running.clone()));
        }
        if let Err(why) = afford(&self.parts, &msg.space, &msg.params) {
            return MessageResult(Started::Refused(why));
        }
        let started = BuildReport {
            space: msg.space.clone(),
            model: msg.params.model_id(),
            dim: msg.params.dim,
            weights: msg.params.weights.clone(),
            seed: msg.params.seed,
            phase: Phase::Computing,
            graph_index: 0,
            atoms: 0,
            isolated: 0,
            entries: 0,
            stored: 0,
            cleared: 0,
            skipped: 0,
            started_ms: crate::now_ms(),
            compute_ms: None,
            finished_ms: None,
            error: None,
        };
        *report = Some(started.clone());
        drop(report);
        let job = Job {
            parts: self.parts.clone(),
            report: self.report.clone(),
            space: msg.space,
            params: msg.params,
        };
        ctx.spawn(job.run().into_actor(self));
        MessageResult(Started::Started(started))
    }
}

/// One build, run to its end.
struct Job {
    parts: Arc<StructuralParts>,
    report: Arc<Mutex<Option<BuildReport>>>,
    space: String,
    params: Params,
}

impl Job {
    async fn run(self) {
        let started = Instant::now();
        let outcome = self.build().await;
        let seconds = started.elapsed().as_secs_f64();
        self.parts.metrics.structural_build_seconds.observe(seconds);
        let label = if outcome.is_ok() { "done" } else { "failed" };
        self.parts
            .metrics
            .structural_builds
            .get_or_create(&super::metrics::OutcomeLabel { outcome: label })
            .inc();
        self.update(|r| {
            r.finished_ms = Some(crate::now_ms());
            match &outcome {
                Ok(()) => r.phase = Phase::Done,
                Err(error) => {
                    r.phase = Phase::Failed;
                    r.error = Some(error.clone());
                }
            }
        });
        match outcome {
            Ok(()) => tracing::info!(space = %self.space, seconds, "structural embeddings built"),
            Err(error) => tracing::warn!(space = %self.space, %error, "structural embedding build failed"),
        }
    }

    async fn build(&self) -> Result<(), String> {
        let (parts, space, params) = (self.parts.clone(), self.space.clone(), self.params.clone());
        let computed = Instant::now();
        let (structure, graph_index) = tokio::task::spawn_blocking(move || compute(&parts, &space, &params))
            .await
            .map_err(|e| format!("the build thread ended: {e}"))??;
        self.update(|r| {
            r.phase = Phase::Proposing;
            r.graph_index = graph_index;
            r.atoms = structure.ids.len();
            r.isolated = structure.isolated.len();
            r.compute_ms = Some(computed.elapsed().as_millis() as u64);
        });
        let model = self.params.model_id();
        for row in 0..structure.ids.len() {
            validate_vector(structure.vector(row))
                .map_err(|e| format!("atom {}'s structural vector is unusable: {e}", structure.ids[row]))?;
        }
        // The vector index must have folded in what the graph reflects, or it may not know of
        // every atom that holds a vector now.
        if let Err(at) = self.parts.vectors.reaches(graph_index, INDEX_PATIENCE).await {
            return Err(format!(
                "the vector index reflects applied index {at}, short of the graph's {graph_index}"
            ));
        }
        let cleared = self.holding(&model, &structure.isolated);
        let vectors: Vec<AtomVector> = structure
            .ids
            .iter()
            .enumerate()
            .map(|(row, id)| AtomVector { id: *id, vector: structure.vector(row).to_vec() })
            .collect();
        drop(structure);
        let budget = self.parts.max_entry_bytes.saturating_sub(ENTRY_SLACK);
        let (entries, oversized) = pack(vectors, budget, MAX_BACKFILL_VECTORS);
        if oversized > 0 {
            return Err(format!(
                "a {}-dimensional vector does not fit one entry of {budget} bytes",
                self.params.dim
            ));
        }
        // Clearing first: a build stopped part-way leaves no stale vector on an atom it found
        // without structure.
        for ids in cleared.chunks(MAX_BACKFILL_VECTORS) {
            self.propose(&model, Vec::new(), ids.to_vec()).await?;
        }
        for vectors in entries {
            self.propose(&model, vectors, Vec::new()).await?;
        }
        Ok(())
    }

    /// Of `ids`, the atoms that hold a vector of `model` now.
    fn holding(&self, model: &str, ids: &[AtomId]) -> Vec<AtomId> {
        let guard = self.parts.vectors.read();
        let Some(index) = guard.as_ref().and_then(|v| v.model(&self.space, model)) else { return Vec::new() };
        ids.iter().copied().filter(|id| index.vector(*id).is_some()).collect()
    }

    /// Proposes one entry; one that was not committed for a reason that may pass (the
    /// leader's queue full, no commit within the timeout, a dropped message) is tried again
    /// after a pause, up to [`ATTEMPTS`] times: the entry replaces what it sets, so applying it
    /// twice changes nothing. Losing leadership ends the build.
    async fn propose(
        &self,
        model: &str,
        vectors: Vec<AtomVector>,
        cleared: Vec<AtomId>,
    ) -> Result<(), String> {
        let command = Command::SetEmbeddings { model: model.to_string(), vectors, cleared };
        command.validate()?;
        let mut attempt = 1;
        loop {
            let proposal = Proposal {
                key: String::new(),
                time_ms: crate::now_ms(),
                space: self.space.clone(),
                command: command.clone(),
            };
            let error = match self.parts.raft.send(ProposeAsLeader(proposal)).await {
                Ok(Ok((_, CommandResult::EmbeddingsSet { stored, cleared, skipped }))) => {
                    self.update(|r| {
                        r.entries += 1;
                        r.stored += stored;
                        r.cleared += cleared;
                        r.skipped += skipped;
                    });
                    return Ok(());
                }
                Ok(Ok((_, CommandResult::Rejected { error }))) => {
                    return Err(format!("the space refused the vectors: {error}"))
                }
                Ok(Ok((_, other))) => return Err(format!("a structural entry answered {other:?}")),
                Ok(Err(e @ SubmitError::Raft(_))) => {
                    return Err(format!(
                        "proposing the vectors: {e} (a build runs on the leader; start it again there)"
                    ))
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            if attempt == ATTEMPTS {
                return Err(format!("proposing the vectors failed {ATTEMPTS} times, the last: {error}"));
            }
            tracing::debug!(%error, attempt, "structural build: an entry was not committed; trying again");
            tokio::time::sleep(RETRY_PAUSE * attempt).await;
            attempt += 1;
        }
    }

    fn update(&self, change: impl FnOnce(&mut BuildReport)) {
        if let Some(report) = lock(&self.report).as_mut() {
            change(report);
        }
    }
}

/// The FastRP vectors of the space's graph as the spreading index holds it now, and the
/// applied index that is.
fn compute(parts: &StructuralParts, space: &str, params: &Params) -> Result<(Structural, u64), String> {
    let (index, at) = {
        let guard = parts.graph.read();
        let graph = guard.as_ref().ok_or(NOT_BUILT)?;
        (graph.space(space).ok_or_else(|| Refusal::NoAtoms(space.into()).to_string())?.clone(), graph.at())
    };
    Ok((fastrp::embed(&index, params, parts.threads), at))
}

const NOT_BUILT: &str = "the graph index is still being built from storage; retry shortly";

/// Whether a build of `space` with `params` fits the memory limit (the copy of the space's
/// index and the build's matrices).
fn afford(parts: &StructuralParts, space: &str, params: &Params) -> Result<(), Refusal> {
    let guard = parts.graph.read();
    let graph = guard.as_ref().ok_or(Refusal::NotReady)?;
    let index = graph.space(space).filter(|s| s.live() > 0).ok_or_else(|| Refusal::NoAtoms(space.into()))?;
    let need =
        params.memory_bytes(index.len(), fastrp::memberships(index)).saturating_add(index.memory_bytes());
    if need > parts.max_memory_bytes {
        return Err(Refusal::TooBig {
            dim: params.dim,
            atoms: index.len(),
            need_mb: need >> 20,
            limit_mb: parts.max_memory_bytes >> 20,
        });
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
