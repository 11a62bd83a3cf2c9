//! EmbeddingBackfill: on the leader, embeds the names of nodes that have no vector of the
//! node's embedding model and proposes the vectors as [`Command::Backfill`](crate::command::Command::Backfill) entries of about
//! [`ENTRY_BYTES`] each, through this node's own Raft (never forwarded: a node deposed
//! meanwhile proposes nothing). Writes and imports never wait for the model: the backfill runs
//! after their commit, one batch at a time.
//!
//! What it embeds: nodes added in spaces whose settings say `auto_embed` (seen in the state
//! machine's announcements), and every node of a space being scanned whole. A space is scanned
//! whole when this node becomes leader (what the previous leader had not finished is found
//! again), when a space turns `auto_embed` on, after the announcements could not be followed,
//! and when an operator asks (`POST /admin/embeddings/backfill`, also for a space without
//! `auto_embed`). Apply skips a vector whose node is gone or got one meanwhile, so a scan
//! racing a write or a previous leader stores nothing twice.
//!
//! A batch the model could not embed is tried again after a pause, [`MAX_ATTEMPTS`] times at
//! most; then it is dropped (counted, logged) and its space scanned again. `plan` keeps the
//! bookkeeping (what waits, where scans stand, whose turn it is), `runner` does one batch's
//! reads, embedding and proposals; this actor follows leadership and the announcements and
//! starts one run at a time, the next at once while there is work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use openraft::ServerState;
use serde::Serialize;
use tokio::sync::watch;

pub mod plan;
pub mod runner;

pub use self::plan::MAX_ATTEMPTS;
use self::plan::{Failure, Plan, ScanProgress};
use self::runner::{Ran, Runner};
use super::metrics::BackfillMetrics;
use crate::command::ENTRY_SLACK;
use crate::inference::InferenceActor;
use crate::model::AtomId;
use crate::raft::RaftActor;
use crate::storage::actor::{Query, StorageActor};
use crate::storage::events::{ChangeFeed, Feed};
use crate::storage::reads::GraphReader;
use crate::typ::{NodeId, RaftMetrics};

/// At most this many bytes of vectors go in one backfill entry (less when
/// `api.max_entry_bytes` is smaller).
pub const ENTRY_BYTES: usize = 100 * 1024;
/// Intervals between rereads of which spaces have `auto_embed` on.
const SETTINGS_INTERVALS: u32 = 10;
/// Intervals to pause after a batch failed.
const FAILURE_PAUSE_INTERVALS: u32 = 10;

/// What the backfill works with.
pub struct BackfillParts {
    pub node_id: NodeId,
    /// Whether this node has an embedding model at all (without one the backfill does nothing).
    pub enabled: bool,
    pub interval: Duration,
    /// Names per embedding request (within `inference.max_texts`).
    pub batch: usize,
    /// Names are cut to this many bytes (`inference.max_text_bytes`); the model truncates to
    /// its own context anyway.
    pub max_text_bytes: usize,
    /// `api.max_entry_bytes`: no entry the backfill proposes is larger.
    pub max_entry_bytes: usize,
    pub raft: Addr<RaftActor>,
    pub raft_metrics: watch::Receiver<RaftMetrics>,
    pub storage: Addr<StorageActor>,
    pub inference: Addr<InferenceActor>,
    pub reader: GraphReader,
    /// Cleared when shutdown begins.
    pub serving: Arc<AtomicBool>,
    pub metrics: BackfillMetrics,
}

/// Scan `space` whole (an operator's request). Answers `false` when this node does not lead.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct ScanSpace {
    pub space: String,
}

/// The backfill's state, for `/admin/embeddings`.
#[derive(Message)]
#[rtype(result = "BackfillStatus")]
pub struct BackfillState;

#[derive(Clone, Debug, Default, Serialize, MessageResponse)]
pub struct BackfillStatus {
    /// Whether this node runs the backfill now (it leads and has a model).
    pub active: bool,
    /// The embedding model's id, once known.
    pub model: Option<String>,
    /// New nodes waiting to be looked at, all spaces.
    pub pending: usize,
    /// Spaces being scanned whole.
    pub scanning: Vec<String>,
    pub stored: u64,
    pub skipped: u64,
    pub failed_batches: u64,
    pub dropped: u64,
    pub last_error: Option<String>,
}

/// Nodes a feed announcement added (sent by the feed task).
#[derive(Message)]
#[rtype(result = "()")]
struct Added(BTreeMap<String, Vec<AtomId>>);

/// The feed could not follow the state machine: what it missed is unknown.
#[derive(Message)]
#[rtype(result = "()")]
struct Lost;

pub struct EmbeddingBackfill {
    parts: BackfillParts,
    plan: Plan,
    /// The spaces with `auto_embed` on, as last read.
    auto: BTreeSet<String>,
    running: bool,
    leading: bool,
    /// The settings are to be read again before the next batch; with `scan_all_due`, every
    /// space with `auto_embed` on is then scanned whole (this node just became leader). Both
    /// wait for a run in flight, so a leadership won while one runs is not missed.
    settings_due: bool,
    scan_all_due: bool,
    resting: u32,
    ticks: u32,
    status: BackfillStatus,
}

impl EmbeddingBackfill {
    pub fn new(parts: BackfillParts) -> Self {
        EmbeddingBackfill {
            plan: Plan::new(parts.batch),
            parts,
            auto: BTreeSet::new(),
            running: false,
            leading: false,
            settings_due: false,
            scan_all_due: false,
            resting: 0,
            ticks: 0,
            status: BackfillStatus::default(),
        }
    }

    fn is_leader(&self) -> bool {
        let m = self.parts.raft_metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.parts.node_id)
    }

    fn publish(&mut self) {
        self.status.pending = self.plan.pending();
        self.status.scanning = self.plan.scanning();
        self.parts.metrics.pending.set(self.status.pending as i64);
        self.parts.metrics.scanning.set(self.status.scanning.len() as i64);
    }

    /// One interval: follow leadership, then start work if none runs.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.parts.serving.load(Ordering::Relaxed) {
            return ctx.stop();
        }
        if !self.parts.enabled {
            return;
        }
        if !self.is_leader() {
            if self.leading {
                tracing::info!("embedding backfill: this node no longer leads; the next leader scans again");
            }
            self.leading = false;
            self.settings_due = false;
            self.scan_all_due = false;
            self.resting = 0;
            self.status.active = false;
            self.plan.clear();
            self.publish();
            return;
        }
        self.ticks = self.ticks.wrapping_add(1);
        if !self.leading {
            self.settings_due = true;
            self.scan_all_due = true;
        } else if self.ticks % SETTINGS_INTERVALS == 0 {
            self.settings_due = true;
        }
        self.leading = true;
        self.status.active = true;
        if self.resting > 0 {
            self.resting -= 1;
            return;
        }
        self.advance(ctx);
    }

    /// Starts the next piece of work unless one runs: the settings when due, else a batch.
    fn advance(&mut self, ctx: &mut Context<Self>) {
        if self.running || !self.leading {
            return;
        }
        if self.settings_due {
            self.settings_due = false;
            let scan_all = std::mem::take(&mut self.scan_all_due);
            self.running = true;
            let read = self.parts.storage.send(Query::new(|v| v.auto_embed_spaces()));
            ctx.spawn(read.into_actor(self).map(move |answer, act, ctx| {
                act.running = false;
                match answer {
                    Ok(Ok(spaces)) => {
                        act.settings_read(spaces, scan_all);
                        act.advance(ctx);
                    }
                    Ok(Err(e)) => {
                        act.retry_settings(scan_all);
                        tracing::warn!(error = %e, "embedding backfill: cannot read the space settings");
                    }
                    Err(e) => {
                        act.retry_settings(scan_all);
                        tracing::warn!(error = %e, "embedding backfill: the storage actor did not answer");
                    }
                }
            }));
            return;
        }
        let Some(next) = self.plan.take_next() else {
            return;
        };
        self.running = true;
        let runner = Runner {
            batch: self.parts.batch.max(1),
            max_text_bytes: self.parts.max_text_bytes.max(4),
            entry_bytes: ENTRY_BYTES.min(self.parts.max_entry_bytes.saturating_sub(ENTRY_SLACK)).max(1),
            raft: self.parts.raft.clone(),
            storage: self.parts.storage.clone(),
            inference: self.parts.inference.clone(),
            metrics: self.parts.metrics.clone(),
        };
        ctx.spawn(runner.run(next).into_actor(self).map(|ran, act, ctx| {
            act.running = false;
            let progressed = ran.progressed();
            act.finished(ran);
            if progressed && act.resting == 0 {
                act.advance(ctx);
            }
        }));
    }

    fn retry_settings(&mut self, scan_all: bool) {
        self.settings_due = true;
        self.scan_all_due |= scan_all;
    }

    /// Scans spaces that turned `auto_embed` on (or all of them for a new leader).
    fn settings_read(&mut self, spaces: Vec<String>, scan_all: bool) {
        let spaces: BTreeSet<String> = spaces.into_iter().collect();
        for space in &spaces {
            if scan_all || !self.auto.contains(space) {
                self.plan.rescan(space);
            }
        }
        self.plan.retain_fresh(|space| spaces.contains(space));
        self.auto = spaces;
        self.publish();
    }

    fn finished(&mut self, ran: Ran) {
        if !self.leading {
            // Deposed while the run was in flight: the next leader starts over.
            return;
        }
        if let Some(next) = ran.untouched {
            self.plan.put_back(next);
            self.resting = 1;
        }
        if let Some((space, next)) = ran.scanned {
            match self.plan.scanned(&space, next) {
                ScanProgress::Finished => {
                    tracing::info!(space, "embedding backfill: scan of the space finished")
                }
                ScanProgress::Restarted => {
                    tracing::info!(space, "embedding backfill: scanning the space again")
                }
                ScanProgress::Continues | ScanProgress::Gone => {}
            }
        }
        if let Some(model) = ran.model {
            self.status.model = Some(model);
        }
        self.status.stored += ran.stored;
        self.status.skipped += ran.skipped;
        if let Some((work, error)) = ran.failed {
            self.status.failed_batches += 1;
            self.status.last_error = Some(error.clone());
            self.resting = FAILURE_PAUSE_INTERVALS;
            let (space, nodes, first) =
                (work.space.clone(), work.nodes.len(), work.nodes.first().map(|n| n.id));
            match self.plan.failed(work) {
                Failure::Retried { attempt } => tracing::warn!(
                    space,
                    nodes,
                    attempt,
                    error,
                    "embedding backfill: a batch failed; trying again after a pause"
                ),
                Failure::Dropped { nodes } => {
                    self.status.dropped += nodes as u64;
                    self.parts.metrics.vectors("dropped").inc_by(nodes as u64);
                    tracing::warn!(
                        space, nodes, first, error,
                        "embedding backfill: dropped a batch after {MAX_ATTEMPTS} attempts; the space is scanned again"
                    );
                }
            }
        }
        self.publish();
    }
}

impl Actor for EmbeddingBackfill {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.parts.enabled {
            let addr = ctx.address();
            actix::spawn(follow_additions(self.parts.reader.clone(), addr));
        }
        ctx.run_interval(self.parts.interval, |act, ctx| act.tick(ctx));
    }
}

/// Sends the actor the nodes each announcement added, until the state machine or the actor is
/// gone. It follows from the current applied index: what came before is a scan's to find.
async fn follow_additions(reader: GraphReader, addr: Addr<EmbeddingBackfill>) {
    let rx = reader.subscribe();
    let at = reader.with(|v| v.applied_index()).unwrap_or(0);
    let mut feed = ChangeFeed::new(rx, at);
    loop {
        match feed.next().await {
            Feed::Changes { changes, .. } => {
                let added: BTreeMap<String, Vec<AtomId>> = changes
                    .spaces
                    .iter()
                    .filter(|(_, c)| !c.added.is_empty())
                    .map(|(space, c)| (space.clone(), c.added.iter().copied().collect()))
                    .collect();
                if !added.is_empty() && addr.send(Added(added)).await.is_err() {
                    return;
                }
            }
            Feed::Rebuild { reason } => {
                tracing::debug!(reason, "embedding backfill: announcements missed; spaces are scanned again");
                if addr.send(Lost).await.is_err() {
                    return;
                }
                feed.rebuilt_at(reader.with(|v| v.applied_index()).unwrap_or(0));
            }
            Feed::Closed => return,
        }
    }
}

impl Handler<Added> for EmbeddingBackfill {
    type Result = ();

    fn handle(&mut self, Added(added): Added, _: &mut Context<Self>) {
        if !self.leading {
            return;
        }
        for (space, ids) in added {
            if self.auto.contains(&space) {
                self.plan.added(&space, ids);
            }
        }
        self.publish();
    }
}

impl Handler<Lost> for EmbeddingBackfill {
    type Result = ();

    fn handle(&mut self, _: Lost, _: &mut Context<Self>) {
        if !self.leading {
            return;
        }
        for space in &self.auto {
            self.plan.rescan(space);
        }
        self.publish();
    }
}

impl Handler<ScanSpace> for EmbeddingBackfill {
    type Result = bool;

    fn handle(&mut self, ScanSpace { space }: ScanSpace, _: &mut Context<Self>) -> bool {
        if !self.parts.enabled || !self.is_leader() {
            return false;
        }
        self.plan.rescan(&space);
        self.publish();
        true
    }
}

impl Handler<BackfillState> for EmbeddingBackfill {
    type Result = BackfillStatus;

    fn handle(&mut self, _: BackfillState, _: &mut Context<Self>) -> BackfillStatus {
        self.publish();
        self.status.clone()
    }
}
