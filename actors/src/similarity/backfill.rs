//! EmbeddingBackfill: on the leader, embeds the names of nodes that have no vector of the
//! node's embedding model and proposes the vectors as [`Command::Backfill`] entries of about
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
//! most; then it is dropped (counted, logged), to be found again by the next whole scan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use openraft::ServerState;
use serde::Serialize;
use tokio::sync::watch;

use super::metrics::BackfillMetrics;
use crate::command::{BackfillVector, Command, CommandResult, Proposal};
use crate::inference::{Embed, InferenceActor, Status};
use crate::model::AtomId;
use crate::raft::actor::ProposeAsLeader;
use crate::raft::RaftActor;
use crate::storage::actor::{Query, StorageActor};
use crate::storage::events::{ChangeFeed, Feed};
use crate::storage::reads::GraphReader;
use crate::storage::reads::{Unembedded, UnembeddedPage};
use crate::typ::{NodeId, RaftMetrics};

/// About how many bytes of vectors one backfill entry carries.
pub const ENTRY_BYTES: usize = 100 * 1024;
/// Times one batch is tried before it is dropped.
pub const MAX_ATTEMPTS: u32 = 3;
/// Nodes one step of a whole-space scan looks at.
const SCAN_BUDGET: usize = 4096;
/// Steps of a scan one interval may take while they find nothing to embed.
const SCAN_STEPS: usize = 8;
/// New node ids remembered per space before the space is scanned whole instead.
const MAX_FRESH: usize = 100_000;
/// Intervals between rereads of which spaces have `auto_embed` on.
const SETTINGS_INTERVALS: u32 = 10;
/// Intervals to pause after a batch failed.
const FAILURE_PAUSE_INTERVALS: u32 = 10;

/// What the backfill works with.
pub struct BackfillParts {
    pub node_id: NodeId,
    pub interval: Duration,
    /// Names per embedding request (within `inference.max_texts`).
    pub batch: usize,
    /// Names are cut to this many bytes (`inference.max_text_bytes`); the model truncates to
    /// its own context anyway.
    pub max_text_bytes: usize,
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
    /// Whether this node runs the backfill now (it leads).
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

/// A batch taken for embedding, and where it came from.
#[derive(Clone)]
struct Work {
    space: String,
    nodes: Vec<Unembedded>,
    attempts: u32,
}

pub struct EmbeddingBackfill {
    parts: BackfillParts,
    fresh: BTreeMap<String, BTreeSet<AtomId>>,
    /// Spaces scanned whole, with the node index key the next step starts after.
    scans: BTreeMap<String, Option<Vec<u8>>>,
    /// The spaces with `auto_embed` on, as last read.
    auto: BTreeSet<String>,
    retry: Option<Work>,
    running: bool,
    leading: bool,
    /// The settings are to be read again before the next batch; with `scan_all_due`, every
    /// space with `auto_embed` on is then scanned whole (this node just became leader). Both
    /// wait for a batch in flight, so a leadership won while one runs is not missed.
    settings_due: bool,
    scan_all_due: bool,
    resting: u32,
    ticks: u32,
    status: BackfillStatus,
}

impl EmbeddingBackfill {
    pub fn new(parts: BackfillParts) -> Self {
        EmbeddingBackfill {
            parts,
            fresh: BTreeMap::new(),
            scans: BTreeMap::new(),
            auto: BTreeSet::new(),
            retry: None,
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

    fn pending(&self) -> usize {
        self.fresh.values().map(BTreeSet::len).sum()
    }

    fn publish(&mut self) {
        self.status.pending = self.pending();
        self.status.scanning = self.scans.keys().cloned().collect();
        self.parts.metrics.pending.set(self.status.pending as i64);
        self.parts.metrics.scanning.set(self.scans.len() as i64);
    }

    /// One interval: follow leadership, reread settings now and then, start a batch if idle.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if !self.parts.serving.load(Ordering::Relaxed) {
            return ctx.stop();
        }
        let leader = self.is_leader();
        if !leader {
            if self.leading {
                tracing::info!("embedding backfill: this node no longer leads; the next leader scans again");
            }
            self.leading = false;
            self.settings_due = false;
            self.scan_all_due = false;
            self.status.active = false;
            self.fresh.clear();
            self.scans.clear();
            self.retry = None;
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
        if self.running {
            return;
        }
        if self.settings_due {
            self.settings_due = false;
            let scan_all = std::mem::take(&mut self.scan_all_due);
            self.running = true;
            let read = self.parts.storage.send(Query::new(|v| v.auto_embed_spaces()));
            ctx.spawn(read.into_actor(self).map(move |answer, act, _| {
                act.running = false;
                match answer {
                    Ok(Ok(spaces)) => act.settings_read(spaces, scan_all),
                    Ok(Err(e)) => {
                        act.settings_due = true;
                        act.scan_all_due |= scan_all;
                        tracing::warn!(error = %e, "embedding backfill: cannot read the space settings");
                    }
                    Err(e) => tracing::warn!(error = %e, "embedding backfill: the storage actor is gone"),
                }
            }));
            return;
        }
        if self.resting > 0 {
            self.resting -= 1;
            return;
        }
        if self.retry.is_none() && self.fresh.is_empty() && self.scans.is_empty() {
            return;
        }
        self.running = true;
        let work = self.retry.take();
        let (fresh, scan) = match work {
            Some(_) => (None, None),
            None => (self.take_fresh(), self.scans.iter().next().map(|(s, at)| (s.clone(), at.clone()))),
        };
        let parts = Runner::from(&self.parts);
        ctx.spawn(parts.run(work, fresh, scan).into_actor(self).map(|ran, act, _| act.finished(ran)));
    }

    /// Scans spaces that turned `auto_embed` on (or all of them for a new leader).
    fn settings_read(&mut self, spaces: Vec<String>, scan_all: bool) {
        let spaces: BTreeSet<String> = spaces.into_iter().collect();
        for space in &spaces {
            if scan_all || !self.auto.contains(space) {
                self.scans.entry(space.clone()).or_insert(None);
            }
        }
        self.fresh.retain(|space, _| spaces.contains(space));
        self.auto = spaces;
        self.publish();
    }

    /// Up to one embedding request's worth of new ids of one space, taken out of `fresh`.
    fn take_fresh(&mut self) -> Option<(String, Vec<AtomId>)> {
        let space = self.fresh.keys().next()?.clone();
        let ids = self.fresh.get_mut(&space)?;
        let taken: Vec<AtomId> = std::iter::from_fn(|| ids.pop_first()).take(SCAN_BUDGET).collect();
        if ids.is_empty() {
            self.fresh.remove(&space);
        }
        Some((space, taken))
    }

    fn finished(&mut self, ran: Ran) {
        self.running = false;
        if let Some((space, next)) = ran.scanned {
            match next {
                Some(at) => {
                    if let Some(cursor) = self.scans.get_mut(&space) {
                        *cursor = Some(at);
                    }
                }
                None => {
                    self.scans.remove(&space);
                    tracing::info!(space, "embedding backfill: scan of the space finished");
                }
            }
        }
        if let Some(model) = ran.model {
            self.status.model = Some(model);
        }
        self.status.stored += ran.stored;
        self.status.skipped += ran.skipped;
        if let Some((mut work, error)) = ran.failed {
            self.status.failed_batches += 1;
            self.status.last_error = Some(error.clone());
            self.resting = FAILURE_PAUSE_INTERVALS;
            work.attempts += 1;
            if work.attempts >= MAX_ATTEMPTS {
                self.status.dropped += work.nodes.len() as u64;
                self.parts.metrics.vectors("dropped").inc_by(work.nodes.len() as u64);
                tracing::warn!(
                    space = work.space, nodes = work.nodes.len(), first = work.nodes.first().map(|n| n.id),
                    error, "embedding backfill: dropped a batch after {MAX_ATTEMPTS} attempts; a scan finds it again"
                );
            } else {
                tracing::warn!(
                    space = work.space,
                    nodes = work.nodes.len(),
                    attempt = work.attempts,
                    error,
                    "embedding backfill: a batch failed; trying again after a pause"
                );
                self.retry = Some(work);
            }
        }
        self.publish();
    }
}

/// What one run did.
#[derive(Default)]
struct Ran {
    /// The space a scan step went through and where it stopped (`None`: at its end).
    scanned: Option<(String, Option<Vec<u8>>)>,
    model: Option<String>,
    stored: u64,
    skipped: u64,
    failed: Option<(Work, String)>,
}

/// The handles one run needs (the run outlives no borrow of the actor).
struct Runner {
    batch: usize,
    max_text_bytes: usize,
    raft: Addr<RaftActor>,
    storage: Addr<StorageActor>,
    inference: Addr<InferenceActor>,
    metrics: BackfillMetrics,
}

impl From<&BackfillParts> for Runner {
    fn from(p: &BackfillParts) -> Self {
        Runner {
            batch: p.batch.max(1),
            max_text_bytes: p.max_text_bytes.max(4),
            raft: p.raft.clone(),
            storage: p.storage.clone(),
            inference: p.inference.clone(),
            metrics: p.metrics.clone(),
        }
    }
}

impl Runner {
    /// Embeds and proposes one batch: the retried one, else new nodes, else a scan's next step.
    async fn run(
        self,
        retry: Option<Work>,
        fresh: Option<(String, Vec<AtomId>)>,
        scan: Option<(String, Option<Vec<u8>>)>,
    ) -> Ran {
        let mut ran = Ran::default();
        let model = match self.model().await {
            Ok(Some(model)) => model,
            Ok(None) => return ran,
            Err(error) => {
                tracing::debug!(error, "embedding backfill: the embedding model is not available");
                return ran;
            }
        };
        ran.model = Some(model.clone());
        let work = match (retry, fresh) {
            (Some(work), _) => Some(work),
            (None, Some((space, ids))) => self.among(&space, &model, ids).await,
            (None, None) => None,
        };
        let work = match work {
            Some(work) => Some(work),
            None => match scan {
                Some((space, at)) => {
                    let (found, next) = self.scan(&space, &model, at).await;
                    ran.scanned = Some((space, next));
                    found
                }
                None => None,
            },
        };
        let Some(work) = work.filter(|w| !w.nodes.is_empty()) else {
            return ran;
        };
        match self.embed_and_propose(&work).await {
            Ok((stored, skipped)) => {
                ran.stored = stored;
                ran.skipped = skipped;
            }
            Err(error) => {
                self.metrics.vectors("failed").inc_by(work.nodes.len() as u64);
                ran.failed = Some((work, error));
            }
        }
        ran
    }

    /// The embedding model's id: `None` when the node has none configured. A pool whose
    /// workers have not loaded the model yet (none running) answers it after one small request.
    async fn model(&self) -> Result<Option<String>, String> {
        let status = self.inference.send(Status).await.map_err(|e| e.to_string())?;
        let Some(embedding) = status.embedding else {
            return Ok(None);
        };
        if !embedding.model_id.is_empty() {
            return Ok(Some(embedding.model_id));
        }
        let probe = Embed { texts: vec!["model id".into()] };
        let reply =
            self.inference.send(probe).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        Ok(Some(reply.model))
    }

    /// Of `ids` (new in `space`), the nodes still without a vector of `model`.
    async fn among(&self, space: &str, model: &str, ids: Vec<AtomId>) -> Option<Work> {
        let (s, m) = (space.to_string(), model.to_string());
        match self.storage.send(Query::new(move |v| v.unembedded_among(&s, &m, &ids))).await {
            Ok(Ok(nodes)) => Some(Work { space: space.to_string(), nodes, attempts: 0 }),
            Ok(Err(e)) => {
                tracing::debug!(space, error = %e, "embedding backfill: cannot read the new nodes");
                None
            }
            Err(_) => None,
        }
    }

    /// Steps of a whole-space scan until one finds nodes to embed (or [`SCAN_STEPS`] did not).
    async fn scan(
        &self,
        space: &str,
        model: &str,
        mut at: Option<Vec<u8>>,
    ) -> (Option<Work>, Option<Vec<u8>>) {
        for _ in 0..SCAN_STEPS {
            let (s, m, after, want) = (space.to_string(), model.to_string(), at.clone(), self.batch);
            let read = Query::new(move |v| v.unembedded_nodes(&s, &m, after.as_deref(), SCAN_BUDGET, want));
            let UnembeddedPage { nodes, next } = match self.storage.send(read).await {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    // A space deleted meanwhile (or a storage failure): the scan ends here.
                    tracing::debug!(space, error = %e, "embedding backfill: scan stopped");
                    return (None, None);
                }
                Err(_) => return (None, at),
            };
            if !nodes.is_empty() || next.is_none() {
                return (Some(Work { space: space.to_string(), nodes, attempts: 0 }), next);
            }
            at = next;
        }
        (None, at)
    }

    /// Embeds the names of `work`, one request of `batch` names at a time, and proposes each
    /// request's vectors before the next; answers (stored, skipped). A failure part-way is
    /// retried whole: apply skips what was stored already.
    async fn embed_and_propose(&self, work: &Work) -> Result<(u64, u64), String> {
        let (mut stored, mut skipped) = (0, 0);
        for chunk in work.nodes.chunks(self.batch) {
            let texts = chunk.iter().map(|n| cut(&n.name, self.max_text_bytes).to_string()).collect();
            let reply = self
                .inference
                .send(Embed { texts })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("embedding: {e}"))?;
            let vectors: Vec<BackfillVector> = chunk
                .iter()
                .zip(reply.embeddings)
                .map(|(n, vector)| BackfillVector { id: n.id, vector })
                .collect();
            for entry in vectors.chunks(vectors_per_entry(reply.dim.max(1))) {
                let (s, k) = self.propose(&work.space, &reply.model, entry.to_vec()).await?;
                stored += s;
                skipped += k;
            }
        }
        Ok((stored, skipped))
    }

    async fn propose(
        &self,
        space: &str,
        model: &str,
        vectors: Vec<BackfillVector>,
    ) -> Result<(u64, u64), String> {
        let proposal = Proposal {
            key: String::new(),
            time_ms: crate::now_ms(),
            space: space.to_string(),
            command: Command::Backfill { model: model.to_string(), vectors },
        };
        match self.raft.send(ProposeAsLeader(proposal)).await.map_err(|e| e.to_string())? {
            Ok((_, CommandResult::Backfilled { stored, skipped })) => {
                self.metrics.vectors("stored").inc_by(stored);
                self.metrics.vectors("skipped").inc_by(skipped);
                Ok((stored, skipped))
            }
            Ok((_, other)) => Err(format!("the backfill entry answered {other:?}")),
            Err(e) => Err(format!("proposing: {e}")),
        }
    }
}

/// Vectors of `dim` components that fit [`ENTRY_BYTES`] (msgpack: 5 bytes a component).
pub fn vectors_per_entry(dim: usize) -> usize {
    (ENTRY_BYTES / (dim * 5 + 16)).clamp(1, crate::command::MAX_BACKFILL_VECTORS)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Actor for EmbeddingBackfill {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let reader = self.parts.reader.clone();
        actix::spawn(follow_additions(reader, addr));
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
            if !self.auto.contains(&space) || self.scans.contains_key(&space) {
                // Not wanted, or a whole scan of the space will see these nodes anyway.
                continue;
            }
            let fresh = self.fresh.entry(space.clone()).or_default();
            fresh.extend(ids);
            if fresh.len() > MAX_FRESH {
                self.fresh.remove(&space);
                self.scans.insert(space, None);
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
            self.fresh.remove(space);
            self.scans.insert(space.clone(), None);
        }
        self.publish();
    }
}

impl Handler<ScanSpace> for EmbeddingBackfill {
    type Result = bool;

    fn handle(&mut self, ScanSpace { space }: ScanSpace, _: &mut Context<Self>) -> bool {
        if !self.is_leader() {
            return false;
        }
        self.fresh.remove(&space);
        self.scans.insert(space, None);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_near_their_byte_budget() {
        assert_eq!(vectors_per_entry(384), 52);
        assert_eq!(vectors_per_entry(4096), 4);
        assert_eq!(vectors_per_entry(100_000), 1);
        assert_eq!(vectors_per_entry(1), crate::command::MAX_BACKFILL_VECTORS);
    }

    #[test]
    fn names_are_cut_at_character_boundaries() {
        assert_eq!(cut("abc", 8), "abc");
        assert_eq!(cut("abcdef", 4), "abcd");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(cut("aé", 2), "a");
    }
}
