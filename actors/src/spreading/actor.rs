//! SpreadingActor: answers spreads on a `SyncArbiter` pool of its own (never a Raft or HTTP
//! thread), each thread with its own working memory. Accepts [`RunSpread`] and the health
//! check's [`ProbeSpread`]. A spread checks its parameters, passes the spreading breaker (opened
//! by repeated deadline overruns or errors), resolves its sources in the space's index (nodes by
//! type and name through storage), walks the index under its read lock, then reads the names of
//! what it returns. The index is kept by [`follow`](super::follow); the reply says which applied
//! index it reflects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};
use serde::Serialize;

use super::activation::{spread, Scratch, Spread};
use super::follow::SharedIndex;
use super::index::{Dense, SpaceIndex};
use super::metrics::SpreadingMetrics;
use super::params::{Parameters, SourceRef, SpreadRequest};
use super::probe::{self, ProbeSpread};
use crate::error::{Error, Result};
use crate::model::AtomId;
use crate::resilience::Breaker;
use crate::storage::reads::GraphReader;

/// Runs one spread in `space`; `received` is when the request arrived (the deadline counts
/// from it, queueing included).
pub struct RunSpread {
    pub space: String,
    pub request: SpreadRequest,
    pub received: Instant,
}

impl Message for RunSpread {
    type Result = Result<SpreadReply>;
}

/// One ranked atom of a reply.
#[derive(Clone, Debug, Serialize)]
pub struct SpreadResult {
    pub id: AtomId,
    #[serde(rename = "type")]
    pub atom_type: String,
    /// A node's name; `null` for links, and for an atom removed since the index's applied index.
    pub name: Option<String>,
    pub activation: f64,
    pub confidence: f64,
    pub hops: u32,
    pub path: Vec<AtomId>,
}

/// With `explain`: an atom the threshold suppressed.
#[derive(Clone, Debug, Serialize)]
pub struct SuppressedAtom {
    pub id: AtomId,
    pub activation: f64,
    pub hops: u32,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpreadStats {
    pub atoms_touched: usize,
    pub hops: u32,
    pub activations: u64,
    pub cycles_detected: u64,
    pub suppressed: usize,
    pub frontier_capped: usize,
    /// Reached atoms whose share per link was below the threshold, so they passed nothing on.
    pub below_threshold: usize,
    pub elapsed_us: u64,
    pub deadline_hit: bool,
    pub parameters: Parameters,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpreadReply {
    pub results: Vec<SpreadResult>,
    /// The sources' atom ids (those named by type and name resolved), as given.
    pub sources: Vec<AtomId>,
    pub stats: SpreadStats,
    /// The applied index the index reflected: every entry up to it, none after it.
    pub applied_index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Vec<SuppressedAtom>>,
}

/// Answers spreads; one instance per pool thread.
pub struct SpreadingActor {
    index: Arc<SharedIndex>,
    reader: GraphReader,
    breaker: Arc<Breaker>,
    metrics: SpreadingMetrics,
    scratch: Scratch,
    /// The health probe's built-in graph.
    probe_graph: SpaceIndex,
}

impl SpreadingActor {
    /// Starts `threads` spreading threads over `index`.
    pub fn start_pool(
        threads: usize,
        index: Arc<SharedIndex>,
        reader: GraphReader,
        breaker: Arc<Breaker>,
        metrics: SpreadingMetrics,
    ) -> Addr<SpreadingActor> {
        SyncArbiter::start(threads.max(1), move || SpreadingActor {
            index: index.clone(),
            reader: reader.clone(),
            breaker: breaker.clone(),
            metrics: metrics.clone(),
            scratch: Scratch::default(),
            probe_graph: probe::probe_graph(),
        })
    }

    fn run(&mut self, msg: RunSpread) -> Result<SpreadReply> {
        let (sources, params) = msg.request.resolve().map_err(|e| Error::Invalid(e.to_string()))?;
        let breaker = self.breaker.clone();
        let call = breaker.call().map_err(|refused| Error::Unavailable {
            what: format!(
                "spreading is refusing calls for {} ms: its circuit breaker is {} after repeated deadline \
                 overruns or errors",
                refused.retry_after.as_millis(),
                refused.state.as_str()
            ),
            retry_after_s: refused.retry_after.as_secs_f64().ceil() as u32,
        })?;
        match self.walk(&msg, &sources, params) {
            Ok(reply) => {
                if reply.stats.deadline_hit {
                    call.failure();
                } else {
                    call.success();
                }
                Ok(reply)
            }
            Err(e @ Error::Storage { .. }) => {
                call.failure();
                Err(e)
            }
            // The caller's mistake (an unknown source) or an index still building says nothing
            // of spreading's health.
            Err(e) => Err(e),
        }
    }

    fn walk(
        &mut self,
        msg: &RunSpread,
        sources: &[(SourceRef, f64)],
        params: Parameters,
    ) -> Result<SpreadReply> {
        // A slow spread on demand, for the breaker's tests.
        crate::failpoint::hit("spread_walk");
        // Node names resolve through storage before the index's lock is taken.
        let ids = self.source_ids(&msg.space, sources)?;
        let source_ids: Vec<AtomId> = ids.iter().map(|(id, _)| *id).collect();
        let guard = self.index.read();
        let Some(graph) = guard.as_ref() else {
            return Err(Error::Unavailable {
                what: "the spreading index is still being built from storage; retry shortly".into(),
                retry_after_s: 1,
            });
        };
        let applied_index = graph.at();
        let empty = SpaceIndex::default();
        let space = graph.space(&msg.space).unwrap_or(&empty);
        let mut resolved = Vec::with_capacity(ids.len());
        for (i, (id, activation)) in ids.into_iter().enumerate() {
            let d = space.dense_of(id).ok_or_else(|| Error::NotFound {
                what: format!(
                    "sources[{i}]: atom {id} in space {:?} (as of applied index {applied_index})",
                    msg.space
                ),
            })?;
            resolved.push((d, activation));
        }
        let spread_params = walk_parameters(space, resolved, &params, msg.received);
        let outcome = spread(space, &spread_params, &mut self.scratch);
        let typed: Vec<(AtomId, String)> =
            outcome.hits.iter().map(|h| (h.id, type_name(space, h.id))).collect();
        drop(guard);

        let names = self.names(&msg.space, &typed)?;
        let results = outcome
            .hits
            .iter()
            .zip(typed.into_iter().zip(names))
            .map(|(h, ((_, atom_type), name))| SpreadResult {
                id: h.id,
                atom_type,
                name,
                activation: h.activation,
                confidence: h.confidence,
                hops: h.hops,
                path: h.path.clone(),
            })
            .collect::<Vec<_>>();
        let stats = &outcome.stats;
        self.observe(&outcome.stats, &results);
        let suppressed = params.explain.then(|| {
            outcome
                .suppressed
                .iter()
                .map(|s| SuppressedAtom {
                    id: s.id,
                    activation: s.activation,
                    hops: s.hops,
                    reason: "threshold",
                })
                .collect()
        });
        Ok(SpreadReply {
            results,
            sources: source_ids,
            stats: SpreadStats {
                atoms_touched: stats.atoms_touched,
                hops: stats.hops,
                activations: stats.activations,
                cycles_detected: stats.cycles_detected,
                suppressed: stats.suppressed,
                frontier_capped: stats.capped,
                below_threshold: stats.below_threshold,
                elapsed_us: msg.received.elapsed().as_micros() as u64,
                deadline_hit: stats.deadline_hit,
                parameters: params,
            },
            applied_index,
            suppressed,
        })
    }

    /// Source ids, nodes named by type and name looked up in storage.
    fn source_ids(&self, space: &str, sources: &[(SourceRef, f64)]) -> Result<Vec<(AtomId, f64)>> {
        if sources.iter().all(|(s, _)| matches!(s, SourceRef::Id(_))) {
            return Ok(sources
                .iter()
                .map(|(s, a)| (if let SourceRef::Id(id) = s { *id } else { 0 }, *a))
                .collect());
        }
        self.reader.with(|view| {
            sources
                .iter()
                .enumerate()
                .map(|(i, (s, activation))| match s {
                    SourceRef::Id(id) => Ok((*id, *activation)),
                    SourceRef::Node { atom_type, name } => match view.find_node(space, atom_type, name)? {
                        Some(atom) => Ok((atom.id, *activation)),
                        None => Err(Error::NotFound {
                            what: format!("sources[{i}]: no {atom_type} named {name:?} in space {space:?}"),
                        }),
                    },
                })
                .collect()
        })
    }

    /// Node names of the results (links have none; an atom removed since has none either).
    fn names(&self, space: &str, typed: &[(AtomId, String)]) -> Result<Vec<Option<String>>> {
        if typed.is_empty() {
            return Ok(Vec::new());
        }
        self.reader.with(|view| {
            typed
                .iter()
                .map(|(id, _)| match view.atom(space, *id) {
                    Ok(atom) => Ok(atom.name().map(str::to_string)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                })
                .collect()
        })
    }

    fn observe(&self, stats: &super::activation::Stats, results: &[SpreadResult]) {
        let m = &self.metrics;
        m.outcome(if stats.deadline_hit { "deadline" } else { "ok" });
        m.activations.inc_by(stats.activations);
        m.cycles.inc_by(stats.cycles_detected);
        m.hops.observe(f64::from(stats.hops));
        for us in &stats.hop_us {
            m.hop_seconds.observe(*us as f64 / 1e6);
        }
        for r in results {
            m.result_confidence.observe(r.confidence);
        }
    }
}

/// The walk's own form of the parameters: type names as the space's numbers (a type no atom of
/// the space has matches nothing), the deadline as a time.
fn walk_parameters(
    space: &SpaceIndex,
    sources: Vec<(Dense, f64)>,
    p: &Parameters,
    received: Instant,
) -> Spread {
    let link_types = p
        .link_types
        .as_ref()
        .map(|types| types.iter().map(|t| space.type_named(t).unwrap_or(u32::MAX)).collect());
    Spread::new(sources, p, link_types, Some(received + Duration::from_millis(p.deadline_ms)))
}

fn type_name(space: &SpaceIndex, id: AtomId) -> String {
    space.dense_of(id).map(|d| space.type_name(space.type_id(d)).to_string()).unwrap_or_default()
}

impl Actor for SpreadingActor {
    type Context = SyncContext<Self>;
}

impl Handler<RunSpread> for SpreadingActor {
    type Result = Result<SpreadReply>;

    fn handle(&mut self, msg: RunSpread, _: &mut SyncContext<Self>) -> Result<SpreadReply> {
        let started = Instant::now();
        self.metrics.concurrent.inc();
        let reply = self.run(msg);
        self.metrics.concurrent.dec();
        self.metrics.spread_seconds.observe(started.elapsed().as_secs_f64());
        match &reply {
            Ok(_) => {}
            Err(Error::Invalid(_)) => self.metrics.outcome("invalid"),
            Err(Error::NotFound { .. }) => self.metrics.outcome("not_found"),
            Err(Error::Unavailable { .. }) => self.metrics.outcome("unavailable"),
            Err(_) => self.metrics.outcome("error"),
        }
        reply
    }
}

impl Handler<ProbeSpread> for SpreadingActor {
    type Result = Result<(), String>;

    /// The health probe: the built-in graph's spread, through the same fault hook as a
    /// request's walk; neither the breaker nor the request metrics see it.
    fn handle(&mut self, _: ProbeSpread, _: &mut SyncContext<Self>) -> Result<(), String> {
        crate::failpoint::hit("spread_walk");
        probe::verify(&probe::run_probe(&self.probe_graph, &mut self.scratch))
    }
}
