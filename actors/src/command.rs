//! What goes into the Raft log (`Proposal` wrapping a `Command`) and what applying it answers
//! (`CommandResult`). Validation that needs no state happens here, before anything is proposed.

use serde::{Deserialize, Serialize};

use crate::model::{
    validate_space_name, validate_type_name, Atom, AtomId, Merge, Observation, Session, SessionStatus,
    TruthValue, DEFAULT_SPACE,
};

/// Longest node name, in bytes.
pub const MAX_NAME_LEN: usize = 16 * 1024;
/// Most removed ids a delete's result lists (`removed_count` has the total).
pub const MAX_LISTED_REMOVED: usize = 1000;
/// Largest encoded result kept whole for idempotency; larger ones keep their compact form.
pub const MAX_KEPT_RESULT: usize = 4096;
/// Most operations in one batch.
pub const MAX_BATCH_OPS: usize = 1000;
/// Most members of one link.
pub const MAX_OUTGOING: usize = 4096;
/// Largest magnitude an STI or LTI takes: stimulation and attention steps clamp to it, so
/// attention values stay finite (an infinity would turn into NaN, whose bits differ between
/// CPU architectures).
pub const MAX_ATTENTION: f64 = 1e12;
/// Largest budget of one attention step.
pub const MAX_ATTENTION_BUDGET: u64 = 1_000_000;
/// Most atoms one `Forget` command names.
pub const MAX_FORGET: usize = 1000;
/// Most components of one embedding vector.
pub const MAX_EMBEDDING_DIM: usize = 4096;
/// Longest embedding model id, in bytes.
pub const MAX_MODEL_ID_LEN: usize = 200;
/// Most vectors one `Backfill` or `SetEmbeddings` entry carries (~50 of 384 dimensions fill 100 KiB).
pub const MAX_BACKFILL_VECTORS: usize = 256;

/// Bytes an entry keeps free for what is not its items (the proposal around them: key, space,
/// model id, framing) when items are packed into entries with [`pack`].
pub const ENTRY_SLACK: usize = 2048;

/// `items` in entries of at most `budget` encoded bytes (named msgpack, as the log writes them)
/// and `most` items each, in order; also how many were left out because one alone is over
/// the budget.
pub fn pack<T: Serialize>(items: Vec<T>, budget: usize, most: usize) -> (Vec<Vec<T>>, usize) {
    let (mut entries, mut entry, mut bytes, mut oversized) = (Vec::new(), Vec::new(), 0, 0);
    for item in items {
        let size = crate::storage::encode(&item).len();
        if size > budget {
            oversized += 1;
            continue;
        }
        if !entry.is_empty() && (bytes + size > budget || entry.len() == most) {
            entries.push(std::mem::take(&mut entry));
            bytes = 0;
        }
        bytes += size;
        entry.push(item);
    }
    if !entry.is_empty() {
        entries.push(entry);
    }
    (entries, oversized)
}

/// One log entry's payload: the command plus what makes apply deterministic and idempotent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Idempotency key (per space): a repeat answers with the first result instead of applying.
    pub key: String,
    /// Wall-clock time at the proposing node (ms); apply uses max(last applied time, this).
    pub time_ms: u64,
    /// The memory space every atom, session and observation of the command belongs to.
    #[serde(default = "default_space")]
    pub space: String,
    pub command: Command,
}

fn default_space() -> String {
    DEFAULT_SPACE.to_string()
}

/// Bounded housekeeping the leader asks for with every `Tick`. Its limits travel in the
/// command (from the leader's configuration), never read from each node's, so every replica
/// does exactly the same work at the same index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// Observations kept per (space, subject); older ones go first. 0 = no limit.
    pub observations_per_subject: u64,
    /// Observations older than this (apply time) are removed. 0 = kept forever.
    pub observation_max_age_ms: u64,
    /// Most rows one tick may remove (space deletion and retention together).
    pub budget: u64,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance { observations_per_subject: 0, observation_max_age_ms: 0, budget: 10_000 }
    }
}

/// One ECAN step the leader proposes on its attention interval: rent, wages and diffusion over
/// a bounded number of the atoms that hold attention, applied in key order so every replica
/// computes bit-identical attention values. Every number travels in the command (from the
/// leader's configuration), never read from each node's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionStep {
    /// Most atom records one step reads: the atoms holding attention it visits (round-robin,
    /// from where the last step stopped) and the links and members they diffuse to.
    pub budget: u64,
    /// Share of an in-focus atom's STI it passes to its neighbours per step, in [0, 1].
    pub diffusion: f64,
    /// Share of STI every visited atom pays as rent per step, in [0, 1].
    pub sti_rent: f64,
    /// Share of LTI every visited atom loses per step, in [0, 1].
    pub lti_rent: f64,
    /// LTI an atom earns per step while it is in the attentional focus (>= 0).
    pub lti_wage: f64,
    /// The attentional focus boundary: atoms with at least this STI diffuse and earn wages
    /// (and `GET /v1/attention/focus` lists them).
    pub focus_boundary: f64,
    /// STI and LTI of smaller magnitude become 0, so attention fades out instead of lingering.
    pub floor: f64,
}

impl Default for AttentionStep {
    fn default() -> Self {
        AttentionStep {
            budget: 10_000,
            diffusion: 0.2,
            sti_rent: 0.05,
            lti_rent: 0.001,
            lti_wage: 0.01,
            focus_boundary: 1.0,
            floor: 0.001,
        }
    }
}

impl AttentionStep {
    /// Checks every number is usable (the leader's configuration is checked with this too); an
    /// error starts with the field's name.
    pub fn validate(&self) -> Result<(), String> {
        if self.budget == 0 || self.budget > MAX_ATTENTION_BUDGET {
            return Err(format!("budget must be in 1..={MAX_ATTENTION_BUDGET}, got {}", self.budget));
        }
        for (name, v) in
            [("diffusion", self.diffusion), ("sti_rent", self.sti_rent), ("lti_rent", self.lti_rent)]
        {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be in [0, 1], got {v}"));
            }
        }
        for (name, v) in
            [("lti_wage", self.lti_wage), ("focus_boundary", self.focus_boundary), ("floor", self.floor)]
        {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a finite number >= 0, got {v}"));
            }
        }
        Ok(())
    }
}

/// One log entry's payload: independent proposals that share one append and one fsync. openraft
/// 0.9 appends one entry at a time and waits for its flush, so batching proposals into an entry
/// is what lets concurrent writers share an fsync (group commit). Each proposal still applies
/// on its own, all-or-nothing, with its own idempotency key and result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProposalBatch {
    pub proposals: Vec<Proposal>,
}

/// What applying a [`ProposalBatch`] answers: one result per proposal, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResults {
    pub results: Vec<CommandResult>,
}

/// Refers to an atom in a link's outgoing set: an id, or the result of an earlier batch op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomRef {
    Id(AtomId),
    /// Position of an earlier op in the same batch (written `"$N"` in JSON).
    Op(usize),
}

/// The precondition of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Absent,
    Equals(serde_json::Value),
}

/// A state change. Each variant is applied all-or-nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Command {
    /// Adds a node, or merges `tv` into the existing node with the same (type, name).
    AddNode {
        atom_type: String,
        name: String,
        tv: Option<TruthValue>,
        merge: Merge,
    },
    /// Adds a link, or merges `tv` into the existing link with the same (type, outgoing).
    AddLink {
        atom_type: String,
        outgoing: Vec<AtomRef>,
        tv: Option<TruthValue>,
        merge: Merge,
    },
    /// Removes an atom and, recursively, every link that contains it.
    DeleteAtom {
        id: AtomRef,
    },
    /// Replaces an atom's truth value.
    SetTruth {
        id: AtomRef,
        tv: TruthValue,
    },
    /// Adds to an atom's attention value; `vlti`, when given, sets its keep-forever flag.
    Stimulate {
        id: AtomRef,
        sti: f64,
        lti: f64,
        #[serde(default)]
        vlti: Option<bool>,
    },
    /// Sets a named value; with `expect`, only when the current value matches.
    SetValue {
        id: AtomRef,
        key: String,
        value: serde_json::Value,
        expect: Option<Expect>,
    },
    /// Several commands in one entry, all or nothing.
    Batch {
        ops: Vec<Command>,
    },
    CreateSession {
        ttl_ms: u64,
        metadata: serde_json::Value,
    },
    UpdateSession {
        id: u64,
        status: Option<SessionStatus>,
        metadata: Option<serde_json::Value>,
    },
    Observe {
        subject: String,
        success: bool,
        duration_ms: u64,
        bytes: u64,
        features: serde_json::Value,
        message: String,
    },
    /// Starts deleting a memory space: it disappears from reads and refuses writes at once;
    /// its contents are removed by the following ticks, `maintenance.budget` rows at a time.
    DeleteSpace {
        name: String,
    },
    /// The leader's periodic clock: advances apply time, expires idle sessions, and does a
    /// bounded amount of housekeeping (space deletion, observation retention).
    Tick {
        #[serde(default)]
        maintenance: Maintenance,
    },
    /// The leader's periodic ECAN step over every space (see [`AttentionStep`]).
    Attention {
        step: AttentionStep,
    },
    /// Stores the atom's vector under `model` (one vector per atom and model; every vector of
    /// one model in a space has the same dimension), or removes it when `vector` is `None`.
    SetEmbedding {
        id: AtomRef,
        model: String,
        vector: Option<Vec<f32>>,
    },
    /// Removes the named atoms of the space that are still forgettable when this applies:
    /// LTI below `lti_below`, not `vlti`, and in no link (forgetting never cascades).
    Forget {
        ids: Vec<AtomId>,
        lti_below: f64,
    },
    /// Changes the space's settings (the space exists from then on, even if empty).
    ConfigureSpace {
        auto_embed: bool,
    },
    /// The leader's embeddings of node names (the backfill): stores each vector whose atom is
    /// still a node with no vector of `model` when this applies, and skips the others (gone,
    /// embedded meanwhile, another dimension, or at its model limit), so it never overwrites
    /// nor fails as a whole.
    Backfill {
        model: String,
        vectors: Vec<AtomVector>,
    },
    /// A structural embedding build's vectors (the leader's FastRP over the space's graph):
    /// stores each vector of `vectors` whose atom still exists, replacing the atom's vector of
    /// `model`, and removes that model's vector from the atoms of `cleared` (atoms the build
    /// found without structure); skips atoms that are gone or refuse the vector (another
    /// dimension, at their model limit), so it never fails as a whole.
    SetEmbeddings {
        model: String,
        vectors: Vec<AtomVector>,
        #[serde(default)]
        cleared: Vec<AtomId>,
    },
    /// One piece of evidence for an atom, counted once: unless the atom's evidence list (the
    /// named value `key`) already names `source`, revises the atom's truth value with `tv` (PLN
    /// revision) and appends `entry` to the list with the apply time, keeping the newest `limit`
    /// entries, every source seen (at most [`MAX_EVIDENCE_SOURCES`]) and the count. A source
    /// seen before changes nothing; a full list refuses new sources (`added: false, full: true`).
    AddEvidence {
        id: AtomRef,
        tv: TruthValue,
        key: String,
        /// What identifies the evidence (e.g. a hash of the text it came from).
        source: String,
        /// What is kept about it (a JSON object; `source` and `time_ms` are added).
        entry: serde_json::Value,
        limit: u32,
    },
}

/// Sources one atom's evidence list remembers; more are refused, not forgotten.
pub const MAX_EVIDENCE_SOURCES: usize = 2048;
/// Entries an evidence list keeps in full at most.
pub const MAX_EVIDENCE_ENTRIES: u32 = 256;

/// One atom's vector, in a [`Command::Backfill`] or [`Command::SetEmbeddings`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AtomVector {
    pub id: AtomId,
    pub vector: Vec<f32>,
}

/// What applying a command answered. Rejections are results too: they are replicated so a
/// repeated idempotency key answers the same rejection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CommandResult {
    Atom {
        atom: Atom,
        created: bool,
    },
    Deleted {
        /// The removed ids, at most [`MAX_LISTED_REMOVED`] of them.
        removed: Vec<AtomId>,
        removed_count: u64,
    },
    /// The compact form of an atom result, kept for idempotency when the atom is large.
    AtomWritten {
        id: AtomId,
        created: bool,
    },
    /// The compact form of a session or observation result.
    Written {
        id: u64,
    },
    /// A space deletion began (or was under way already).
    SpaceDeleting {
        name: String,
    },
    Value {
        id: AtomId,
        key: String,
        value: serde_json::Value,
    },
    Batch {
        results: Vec<CommandResult>,
    },
    Session {
        session: Session,
    },
    Observation {
        observation: Observation,
    },
    Ticked {
        time_ms: u64,
    },
    /// An attention step ran: it visited `visited` atoms and changed `changed` attention values.
    Attended {
        visited: u64,
        changed: u64,
    },
    /// What a `Forget` removed, and what it kept because it was no longer forgettable (or gone).
    Forgotten {
        removed: Vec<AtomId>,
        kept: Vec<AtomId>,
    },
    /// The atom's vector under `model` was stored (`dim`) or removed (`dim` is `None`; also
    /// when there was none).
    Embedded {
        id: AtomId,
        model: String,
        dim: Option<u32>,
    },
    /// The space's settings as they are now.
    SpaceConfigured {
        name: String,
        auto_embed: bool,
    },
    /// What a `Backfill` stored, and how many of its vectors it skipped.
    Backfilled {
        stored: u64,
        skipped: u64,
    },
    /// What a `SetEmbeddings` stored and removed, and how many of its atoms it skipped.
    EmbeddingsSet {
        stored: u64,
        cleared: u64,
        skipped: u64,
    },
    /// What an `AddEvidence` did: `added` when the source was new (and the truth value revised).
    Evidence {
        id: AtomId,
        added: bool,
        /// Sources the atom's list holds now, and whether it refused this one for being full.
        sources: u64,
        full: bool,
    },
    /// A blank or membership entry: nothing for the client.
    Noop,
    /// Nothing was written; `error` says why.
    Rejected {
        error: Rejection,
    },
}

/// Why apply refused a command (state-dependent checks only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Rejection {
    #[error("atom {id} does not exist")]
    UnknownAtom { id: AtomId },
    #[error("session {id} does not exist")]
    UnknownSession { id: u64 },
    #[error("batch op {op} refers to ${target}, which is not an earlier op producing an atom")]
    BadReference { op: usize, target: usize },
    #[error("compare-and-set failed: the current value differs from `expect`")]
    CasFailed { current: Option<serde_json::Value> },
    #[error("session {id} is closed")]
    SessionClosed { id: u64 },
    #[error("atom {id} already has {limit} named values, the most one atom may carry")]
    TooManyValues { id: AtomId, limit: usize },
    #[error("space {name:?} is being deleted; it accepts no writes until it is gone")]
    SpaceDeleting { name: String },
    #[error(
        "atom {id}'s named value {key:?} is not an evidence list (a JSON object): it was set \
         by hand; remove it (PUT null) to let evidence start a new one"
    )]
    NotEvidence { id: AtomId, key: String },
    #[error("space {name:?} does not exist")]
    UnknownSpace { name: String },
    #[error(
        "deleting atom {id} would remove more than {limit} atoms (it and the links that contain \
         it); delete those links first, in pages of GET /v1/atoms/{id}/incoming"
    )]
    CascadeTooLarge { id: AtomId, limit: usize },
    #[error(
        "model {model:?} has {expected}-dimensional vectors in this space, this one has {got}; \
         vectors of one model share a dimension (name another model for other vectors)"
    )]
    DimensionMismatch { model: String, expected: u32, got: u32 },
    #[error("atom {id} already has vectors of {limit} models, the most one atom may carry")]
    TooManyEmbeddings { id: AtomId, limit: usize },
    #[error("batch op {op} failed: {cause}")]
    InBatch { op: usize, cause: Box<Rejection> },
}

impl CommandResult {
    /// What the idempotency table keeps of this result: itself when small, else a compact form
    /// (atoms by id, deletions by their first ids and count), so every kept record is bounded.
    pub fn for_idempotency(&self) -> CommandResult {
        match self {
            CommandResult::Batch { results } => {
                CommandResult::Batch { results: results.iter().map(CommandResult::compact).collect() }
            }
            small
                if rmp_serde::to_vec_named(small).map(|b| b.len()).unwrap_or(usize::MAX)
                    <= MAX_KEPT_RESULT =>
            {
                small.clone()
            }
            large => large.compact(),
        }
    }

    fn compact(&self) -> CommandResult {
        match self {
            CommandResult::Atom { atom, created } => {
                CommandResult::AtomWritten { id: atom.id, created: *created }
            }
            CommandResult::Deleted { removed, removed_count } => CommandResult::Deleted {
                removed: removed.iter().take(100).copied().collect(),
                removed_count: *removed_count,
            },
            CommandResult::Value { id, key, .. } => {
                CommandResult::Value { id: *id, key: key.clone(), value: serde_json::Value::Null }
            }
            CommandResult::Forgotten { removed, kept } => CommandResult::Forgotten {
                removed: removed.iter().take(100).copied().collect(),
                kept: kept.iter().take(100).copied().collect(),
            },
            CommandResult::Session { session } => CommandResult::Written { id: session.id },
            CommandResult::Observation { observation } => CommandResult::Written { id: observation.id },
            CommandResult::Rejected { error } => CommandResult::Rejected { error: error.without_values() },
            // Batch (not nested), Ticked, Attended, Noop, SpaceDeleting and the other rejections are small.
            other => other.clone(),
        }
    }
}

impl Rejection {
    /// The same rejection without the values it carries (a compare-and-set's current value).
    fn without_values(&self) -> Rejection {
        match self {
            Rejection::CasFailed { .. } => Rejection::CasFailed { current: None },
            Rejection::InBatch { op, cause } => {
                Rejection::InBatch { op: *op, cause: Box::new(cause.without_values()) }
            }
            other => other.clone(),
        }
    }
}

impl Command {
    /// Checks everything that needs no state: names, types, numbers, references, sizes.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_at(None)
    }

    /// Checks a command that will be one op of a batch: its own fields; its `$N` references
    /// are the batch's to check.
    pub fn validate_as_op(&self) -> Result<(), String> {
        self.validate_at(Some(usize::MAX))
    }

    fn validate_at(&self, position: Option<usize>) -> Result<(), String> {
        let check_ref = |r: &AtomRef| match (r, position) {
            (AtomRef::Op(n), Some(p)) if *n >= p => {
                Err(format!("\"${n}\" must refer to an earlier op than {p}"))
            }
            (AtomRef::Op(_), None) => Err("\"$N\" references are only allowed in a batch".into()),
            _ => Ok(()),
        };
        match self {
            Command::AddNode { atom_type, name, tv, .. } => {
                validate_type_name(atom_type)?;
                if name.is_empty() || name.len() > MAX_NAME_LEN {
                    return Err(format!("name must be 1..={MAX_NAME_LEN} bytes, got {}", name.len()));
                }
                tv.map(|tv| tv.validate()).transpose()?;
            }
            Command::AddLink { atom_type, outgoing, tv, .. } => {
                validate_type_name(atom_type)?;
                if outgoing.is_empty() || outgoing.len() > MAX_OUTGOING {
                    return Err(format!(
                        "a link needs 1..={MAX_OUTGOING} outgoing atoms, got {}",
                        outgoing.len()
                    ));
                }
                outgoing.iter().try_for_each(check_ref)?;
                tv.map(|tv| tv.validate()).transpose()?;
            }
            Command::DeleteAtom { id } => check_ref(id)?,
            Command::SetTruth { id, tv } => {
                check_ref(id)?;
                tv.validate()?;
            }
            Command::Stimulate { id, sti, lti, .. } => {
                check_ref(id)?;
                if !(sti.abs() <= MAX_ATTENTION && lti.abs() <= MAX_ATTENTION) {
                    return Err(format!("sti and lti must be finite numbers within ±{MAX_ATTENTION:e}"));
                }
            }
            Command::SetValue { id, key, .. } => {
                check_ref(id)?;
                if key.is_empty() || key.len() > 256 {
                    return Err("value key must be 1..=256 bytes".into());
                }
            }
            Command::Batch { ops } => {
                if position.is_some() {
                    return Err("batches cannot be nested".into());
                }
                if ops.is_empty() || ops.len() > MAX_BATCH_OPS {
                    return Err(format!("a batch holds 1..={MAX_BATCH_OPS} ops, got {}", ops.len()));
                }
                for (i, op) in ops.iter().enumerate() {
                    op.validate_at(Some(i)).map_err(|e| format!("op {i}: {e}"))?;
                }
            }
            Command::CreateSession { ttl_ms, .. } => {
                if *ttl_ms == 0 {
                    return Err("ttl_ms must be positive".into());
                }
            }
            Command::Observe { subject, .. } => {
                if subject.is_empty() || subject.len() > 256 || subject.contains('\0') {
                    return Err("subject must be 1..=256 bytes without NUL".into());
                }
            }
            Command::DeleteSpace { name } => validate_space_name(name)?,
            Command::Attention { step } => step.validate().map_err(|e| format!("attention step: {e}"))?,
            Command::Forget { ids, lti_below } => {
                if ids.is_empty() || ids.len() > MAX_FORGET {
                    return Err(format!("a forget names 1..={MAX_FORGET} atoms, got {}", ids.len()));
                }
                if !lti_below.is_finite() {
                    return Err("lti_below must be a finite number".into());
                }
            }
            Command::SetEmbedding { id, model, vector } => {
                check_ref(id)?;
                validate_model_id(model)?;
                if let Some(vector) = vector {
                    validate_vector(vector)?;
                }
            }
            Command::Backfill { model, vectors } => {
                validate_model_id(model)?;
                if vectors.is_empty() || vectors.len() > MAX_BACKFILL_VECTORS {
                    return Err(format!(
                        "a backfill carries 1..={MAX_BACKFILL_VECTORS} vectors, got {}",
                        vectors.len()
                    ));
                }
                for (i, v) in vectors.iter().enumerate() {
                    validate_vector(&v.vector).map_err(|e| format!("vectors[{i}]: {e}"))?;
                }
            }
            Command::SetEmbeddings { model, vectors, cleared } => {
                validate_model_id(model)?;
                let count = vectors.len() + cleared.len();
                if count == 0 || count > MAX_BACKFILL_VECTORS {
                    return Err(format!(
                        "a set of embeddings names 1..={MAX_BACKFILL_VECTORS} atoms, got {count}"
                    ));
                }
                for (i, v) in vectors.iter().enumerate() {
                    validate_vector(&v.vector).map_err(|e| format!("vectors[{i}]: {e}"))?;
                }
            }
            Command::AddEvidence { id, tv, key, source, entry, limit } => {
                check_ref(id)?;
                tv.validate()?;
                if key.is_empty() || key.len() > 256 {
                    return Err("value key must be 1..=256 bytes".into());
                }
                if source.is_empty() || source.len() > 128 {
                    return Err("an evidence source must be 1..=128 bytes".into());
                }
                if !entry.is_object() {
                    return Err("an evidence entry must be a JSON object".into());
                }
                if *limit == 0 || *limit > MAX_EVIDENCE_ENTRIES {
                    return Err(format!("an evidence limit must be 1..={MAX_EVIDENCE_ENTRIES}, got {limit}"));
                }
            }
            Command::UpdateSession { .. } | Command::Tick { .. } | Command::ConfigureSpace { .. } => {}
        }
        Ok(())
    }
}

/// A model id names where vectors come from (`all-minilm-l6-v2@1a2b...`, `fastrp-64`): 1 to
/// [`MAX_MODEL_ID_LEN`] bytes of visible ASCII.
pub fn validate_model_id(model: &str) -> Result<(), String> {
    if model.is_empty() || model.len() > MAX_MODEL_ID_LEN || !model.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "model must be 1..={MAX_MODEL_ID_LEN} bytes of visible ASCII (no spaces), got {model:?}"
        ));
    }
    Ok(())
}

/// A vector is 1..=[`MAX_EMBEDDING_DIM`] finite numbers, not all zero (a zero vector has no
/// direction, so no cosine).
pub fn validate_vector(vector: &[f32]) -> Result<(), String> {
    if vector.is_empty() || vector.len() > MAX_EMBEDDING_DIM {
        return Err(format!("a vector has 1..={MAX_EMBEDDING_DIM} components, got {}", vector.len()));
    }
    if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        return Err(format!("vector component {i} is not a finite number"));
    }
    if vector.iter().all(|x| *x == 0.0) {
        return Err("the vector is all zeros: it has no direction to compare".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(n: usize, dim: usize) -> Vec<AtomVector> {
        (0..n).map(|i| AtomVector { id: i as u64, vector: vec![0.25; dim] }).collect()
    }

    #[test]
    fn entries_stay_within_their_budget_and_keep_every_vector_in_order() {
        for (n, dim, budget) in
            [(32, 384, 100 * 1024), (300, 1, 100 * 1024), (10, 4096, 40_000), (5, 384, 4096)]
        {
            let (entries, oversized) = pack(vectors(n, dim), budget, MAX_BACKFILL_VECTORS);
            assert_eq!(oversized, 0);
            let ids: Vec<u64> = entries.iter().flatten().map(|v| v.id).collect();
            assert_eq!(ids, (0..n as u64).collect::<Vec<_>>(), "n={n} dim={dim}");
            for entry in &entries {
                assert!(entry.len() <= MAX_BACKFILL_VECTORS);
                let command = Command::Backfill { model: "m".into(), vectors: entry.clone() };
                assert!(command.validate().is_ok());
                let bytes = crate::storage::encode(&command).len();
                assert!(bytes <= budget + 64, "{bytes} bytes of vectors over a budget of {budget}");
            }
        }
        assert_eq!(
            pack(vectors(300, 1), 1 << 20, MAX_BACKFILL_VECTORS).0.len(),
            2,
            "at most {MAX_BACKFILL_VECTORS} a entry"
        );
        // A vector larger than the budget alone cannot be proposed: counted, not sent.
        let (entries, oversized) = pack(vectors(3, 4096), 4096, MAX_BACKFILL_VECTORS);
        assert_eq!((entries.len(), oversized), (0, 3));
    }

    #[test]
    fn batch_references_must_point_backwards() {
        let link = |r| Command::AddLink {
            atom_type: "ListLink".into(),
            outgoing: vec![AtomRef::Op(r)],
            tv: None,
            merge: Merge::Latest,
        };
        let node = Command::AddNode {
            atom_type: "ConceptNode".into(),
            name: "a".into(),
            tv: None,
            merge: Merge::Latest,
        };
        assert!(Command::Batch { ops: vec![node.clone(), link(0)] }.validate().is_ok());
        assert!(Command::Batch { ops: vec![node, link(1)] }.validate().is_err());
        assert!(link(0).validate().is_err(), "references outside a batch");
    }

    #[test]
    fn proposals_round_trip_through_named_msgpack() {
        let p = Proposal {
            key: "k".into(),
            time_ms: 7,
            space: "agent_7".into(),
            command: Command::SetValue {
                id: AtomRef::Id(3),
                key: "x".into(),
                value: serde_json::json!({"a": [1, null]}),
                expect: Some(Expect::Absent),
            },
        };
        let bytes = rmp_serde::to_vec_named(&p).unwrap();
        assert_eq!(rmp_serde::from_slice::<Proposal>(&bytes).unwrap(), p);
    }

    #[test]
    fn kept_results_are_bounded() {
        let removed: Vec<AtomId> = (1..=5000).collect();
        let big = CommandResult::Deleted { removed, removed_count: 5000 };
        let kept = big.for_idempotency();
        assert!(
            matches!(&kept, CommandResult::Deleted { removed, removed_count: 5000 } if removed.len() == 100)
        );
        let small = CommandResult::Ticked { time_ms: 1 };
        assert_eq!(small.for_idempotency(), small);
    }
}
