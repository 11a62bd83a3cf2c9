//! `POST /v1/import?space=&merge=&import_id=`: NDJSON into the space, streamed (the body is
//! read as it arrives, never whole), in as many Raft entries as it needs (batches of at most
//! `MAX_BATCH_OPS` ops within `api.max_entry_bytes`). A line is a node `{type, name, tv?, key?,
//! values?}`, a link `{type, outgoing, tv?, key?, values?}` whose members are atom ids,
//! `{"type", "name"}` node references (added when absent) or `{"key": K}` for an earlier line's
//! key (how links of links are written), named values `{key, values}` or vectors
//! `{key, embeddings: {model: vector}}` for an earlier line's atom (a node or link line may
//! carry both too); `export`'s end line is accepted and skipped.
//!
//! An import is not one transaction: each entry applies on its own. A bad line is reported by
//! number and left out, and nothing else is lost (an entry the state machine rejects for one
//! line is proposed again without it). Every entry's idempotency key is derived from the
//! import id and its lines, so running the same file again with the same `import_id` after a
//! failure in the middle answers what was applied from the idempotency table instead of
//! applying it twice (`revision` never counts the same evidence twice), as long as the
//! idempotency table still holds those keys.

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::command::{AtomRef, Command, CommandResult, Rejection, ENTRY_SLACK, MAX_BATCH_OPS};
use cograft_actors::model::{AtomId, Merge, TruthValue};
use futures_util::StreamExt;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{propose_keyed, space_of};
use crate::api::error::ApiError;
use crate::api::AppState;

/// Longest line read.
const MAX_LINE: usize = 1 << 20;
/// Keys an import may define (each costs the node memory until the import ends).
const MAX_KEYS: usize = 10_000_000;
/// Errors an answer lists (`error_count` has them all).
const MAX_LISTED_ERRORS: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/import", web::post().to(import));
}

#[derive(Debug, Deserialize)]
struct ImportParams {
    merge: Option<Merge>,
    import_id: Option<String>,
}

/// One NDJSON line.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: Option<String>,
    #[serde(rename = "type")]
    atom_type: Option<String>,
    name: Option<String>,
    outgoing: Option<Vec<Member>>,
    tv: Option<TruthValue>,
    values: Option<Map<String, Value>>,
    /// Vectors by model (each stored as `PUT /v1/atoms/{id}/embedding` would).
    embeddings: Option<BTreeMap<String, Vec<f32>>>,
    /// Export's last line.
    end: Option<Value>,
}

/// A link member.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Member {
    Id(AtomId),
    Key(KeyRef),
    Node(NodeRef),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    key: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeRef {
    #[serde(rename = "type")]
    atom_type: String,
    name: String,
}

impl Line {
    /// Export's last line, and nothing else.
    fn is_end(&self) -> bool {
        self.end.is_some()
            && self.key.is_none()
            && self.atom_type.is_none()
            && self.name.is_none()
            && self.outgoing.is_none()
            && self.tv.is_none()
            && self.values.is_none()
            && self.embeddings.is_none()
    }

    /// Whether a member of this line is the atom `id`.
    fn names_id(&self, id: AtomId) -> bool {
        self.outgoing.iter().flatten().any(|m| matches!(m, Member::Id(i) if *i == id))
    }
}

/// The lines of one entry and the ops they became.
#[derive(Default)]
struct Batch {
    lines: Vec<(usize, Line)>,
    ops: Vec<Command>,
    /// The line each op came from.
    owners: Vec<usize>,
    /// Keys this batch defines -> the op that makes the atom.
    local: HashMap<String, usize>,
    bytes: usize,
}

/// Why a line did not go into a batch.
enum Refused {
    /// It does not fit beside the lines already there: flush, then add it again.
    Full,
    /// It cannot be imported.
    Bad(String),
}

impl Batch {
    /// Adds a line's ops within `max_bytes` of ops, or answers why not (the batch is unchanged
    /// then).
    fn add(
        &mut self,
        no: usize,
        line: Line,
        known: &HashMap<String, AtomId>,
        merge: Merge,
        max_bytes: usize,
    ) -> Result<(), Refused> {
        let base = self.ops.len();
        let mut ops: Vec<Command> = Vec::new();
        let local = &self.local;
        let resolve = |key: &str| -> Result<AtomRef, Refused> {
            match (local.get(key), known.get(key)) {
                (Some(op), _) => Ok(AtomRef::Op(*op)),
                (None, Some(id)) => Ok(AtomRef::Id(*id)),
                (None, None) => Err(Refused::Bad(format!(
                    "key {key:?} is not the key of an earlier line that was imported"
                ))),
            }
        };
        let atom = match (&line.atom_type, &line.name, &line.outgoing) {
            (Some(t), Some(name), None) => {
                ops.push(Command::AddNode { atom_type: t.clone(), name: name.clone(), tv: line.tv, merge });
                Some(AtomRef::Op(base))
            }
            (Some(t), None, Some(members)) => {
                let mut outgoing = Vec::with_capacity(members.len());
                for member in members {
                    outgoing.push(match member {
                        Member::Id(id) => AtomRef::Id(*id),
                        Member::Key(KeyRef { key }) => resolve(key)?,
                        Member::Node(NodeRef { atom_type, name }) => {
                            let (atom_type, name) = (atom_type.clone(), name.clone());
                            ops.push(Command::AddNode { atom_type, name, tv: None, merge });
                            AtomRef::Op(base + ops.len() - 1)
                        }
                    });
                }
                ops.push(Command::AddLink { atom_type: t.clone(), outgoing, tv: line.tv, merge });
                Some(AtomRef::Op(base + ops.len() - 1))
            }
            (None, None, None)
                if (line.values.is_some() || line.embeddings.is_some()) && line.tv.is_none() =>
            {
                None
            }
            _ => {
                return Err(Refused::Bad(
                    "a line is a node {type, name}, a link {type, outgoing}, named values {key, values} or \
                     vectors {key, embeddings}"
                        .into(),
                ))
            }
        };
        let target = match (atom, &line.key) {
            (Some(atom), _) => atom,
            (None, Some(key)) => resolve(key)?,
            (None, None) => {
                return Err(Refused::Bad("a values or embeddings line needs the key of its atom".into()))
            }
        };
        for (key, value) in line.values.iter().flatten() {
            ops.push(Command::SetValue { id: target, key: key.clone(), value: value.clone(), expect: None });
        }
        for (model, vector) in line.embeddings.iter().flatten() {
            ops.push(Command::SetEmbedding {
                id: target,
                model: model.clone(),
                vector: Some(vector.clone()),
            });
        }
        // Checked here as the entry will be: one bad op would refuse the whole entry.
        ops.iter().try_for_each(Command::validate_as_op).map_err(Refused::Bad)?;
        let bytes: usize =
            ops.iter().map(|op| rmp_serde::to_vec_named(op).map(|b| b.len()).unwrap_or(max_bytes)).sum();
        if self.ops.len() + ops.len() > MAX_BATCH_OPS || self.bytes + bytes > max_bytes {
            return Err(if self.ops.is_empty() {
                Refused::Bad(format!(
                    "the line makes {} ops of {bytes} bytes: more than one entry holds",
                    ops.len()
                ))
            } else {
                Refused::Full
            });
        }
        self.bytes += bytes;
        if let (Some(AtomRef::Op(op)), Some(key)) = (atom, &line.key) {
            self.local.insert(key.clone(), op);
        }
        self.owners.extend(std::iter::repeat_n(no, ops.len()));
        self.ops.extend(ops);
        self.lines.push((no, line));
        Ok(())
    }
}

/// What the import did, as it goes.
#[derive(Default)]
struct Tally {
    lines: usize,
    atoms: u64,
    created: u64,
    values: u64,
    embeddings: u64,
    entries: u64,
    index: u64,
    errors: Vec<Value>,
    error_count: u64,
}

impl Tally {
    fn error(&mut self, line: usize, error: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(json!({ "line": line, "error": error.into() }));
        }
    }
}

struct Importer<'a> {
    state: &'a AppState,
    space: String,
    import_id: String,
    merge: Merge,
    max_bytes: usize,
    /// Keys of lines already imported -> their atoms.
    known: HashMap<String, AtomId>,
    /// Set once `known` reached [`MAX_KEYS`].
    keys_full: bool,
    batch: Batch,
    tally: Tally,
}

impl Importer<'_> {
    async fn line(&mut self, no: usize, text: &[u8]) -> Result<(), ApiError> {
        self.tally.lines += 1;
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let line: Line = match serde_json::from_slice(text) {
            Ok(line) => line,
            Err(e) => {
                self.tally.error(no, format!("not a line of the import format: {e}"));
                return Ok(());
            }
        };
        if line.is_end() {
            return Ok(());
        }
        let mut added = self.batch.add(no, line.clone(), &self.known, self.merge, self.max_bytes);
        if matches!(added, Err(Refused::Full)) {
            self.flush().await?;
            // An empty batch never answers Full.
            added = self.batch.add(no, line, &self.known, self.merge, self.max_bytes);
        }
        if let Err(Refused::Bad(e)) = added {
            self.tally.error(no, e);
        }
        Ok(())
    }

    /// Proposes the batch; a line the state machine rejects is reported and the rest proposed
    /// again without it (with every other line naming the same missing atom id). An entry's
    /// idempotency key is the import id, its first line and the hash of its ops: a re-run that
    /// packs the same lines the same way answers from the idempotency table, and one that
    /// packs them otherwise applies them again (merging, never duplicating atoms).
    async fn flush(&mut self) -> Result<(), ApiError> {
        let mut batch = std::mem::take(&mut self.batch);
        loop {
            if batch.ops.is_empty() {
                return Ok(());
            }
            let ops = std::mem::take(&mut batch.ops);
            let encoded = rmp_serde::to_vec_named(&ops).unwrap_or_default();
            let hash = blake3::hash(&encoded).to_hex();
            let key = format!("import:{}:{}:{}", self.import_id, batch.lines[0].0, &hash[..16]);
            let count = ops.len();
            let outcome = propose_keyed(self.state, key, self.space.clone(), Command::Batch { ops }).await?;
            self.tally.entries += 1;
            self.tally.index = outcome.index;
            match outcome.result {
                CommandResult::Batch { results } if results.len() == count => {
                    self.record(&batch, &results);
                    return Ok(());
                }
                CommandResult::Rejected { error: Rejection::InBatch { op, cause } } => {
                    let bad = batch.owners.get(op).copied().unwrap_or(0);
                    let missing = match *cause {
                        Rejection::UnknownAtom { id } => Some(id),
                        _ => None,
                    };
                    let mut again = Batch::default();
                    for (no, line) in std::mem::take(&mut batch.lines) {
                        if no == bad || missing.is_some_and(|id| line.names_id(id)) {
                            self.tally.error(no, cause.to_string());
                            continue;
                        }
                        // A subset of what fitted: only a line that named a left-out one fails.
                        match again.add(no, line, &self.known, self.merge, self.max_bytes) {
                            Ok(()) => {}
                            Err(Refused::Bad(e)) => self.tally.error(no, e),
                            Err(Refused::Full) => self.tally.error(no, "the line no longer fits its entry"),
                        }
                    }
                    batch = again;
                }
                CommandResult::Rejected { error } => return Err(error.into()),
                other => {
                    return Err(ApiError::unexpected_result(
                        &format!("an import entry of {count} ops"),
                        &other,
                    ))
                }
            }
        }
    }

    /// Counts what an entry did and learns the atoms of its keyed lines.
    fn record(&mut self, batch: &Batch, results: &[CommandResult]) {
        for result in results {
            match result {
                CommandResult::Atom { created, .. } | CommandResult::AtomWritten { created, .. } => {
                    self.tally.atoms += 1;
                    self.tally.created += u64::from(*created);
                }
                CommandResult::Value { .. } => self.tally.values += 1,
                CommandResult::Embedded { .. } => self.tally.embeddings += 1,
                _ => {}
            }
        }
        for (key, op) in &batch.local {
            let id = match results.get(*op) {
                Some(CommandResult::Atom { atom, .. }) => atom.id,
                Some(CommandResult::AtomWritten { id, .. }) => *id,
                _ => continue,
            };
            if self.known.len() < MAX_KEYS || self.known.contains_key(key) {
                self.known.insert(key.clone(), id);
            } else if !self.keys_full {
                self.keys_full = true;
                let no = batch.lines.first().map(|(no, _)| *no).unwrap_or(0);
                self.tally.error(
                    no,
                    format!("more than {MAX_KEYS} keys: later lines cannot name the keys from here on"),
                );
            }
        }
    }
}

async fn import(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ImportParams>,
    mut body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    let q = q.into_inner();
    let import_id = match q.import_id {
        Some(id)
            if id.is_empty()
                || id.len() > 64
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            return Err(ApiError::bad_request(format!(
                "import_id must be 1-64 characters of [A-Za-z0-9-_.], got {id:?}"
            )))
        }
        Some(id) => id,
        None => format!("{:016x}", rand::thread_rng().gen::<u64>()),
    };
    let mut importer = Importer {
        state: &state,
        space,
        import_id,
        merge: q.merge.unwrap_or(state.settings.api.default_merge),
        max_bytes: state.settings.api.max_entry_bytes.saturating_sub(ENTRY_SLACK),
        known: HashMap::new(),
        keys_full: false,
        batch: Batch::default(),
        tally: Tally::default(),
    };
    let (mut pending, mut no, mut skipping) = (Vec::new(), 0usize, false);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        let mut rest = &chunk[..];
        while let Some(at) = rest.iter().position(|b| *b == b'\n') {
            no += 1;
            if !skipping && pending.len() + at > MAX_LINE {
                importer.tally.lines += 1;
                importer.tally.error(no, format!("the line is longer than {MAX_LINE} bytes"));
            } else if !skipping {
                pending.extend_from_slice(&rest[..at]);
                importer.line(no, &pending).await?;
            } else {
                importer.tally.lines += 1;
            }
            pending.clear();
            skipping = false;
            rest = &rest[at + 1..];
        }
        if !skipping {
            pending.extend_from_slice(rest);
            if pending.len() > MAX_LINE {
                importer.tally.error(no + 1, format!("the line is longer than {MAX_LINE} bytes"));
                pending.clear();
                skipping = true;
            }
        }
    }
    if !pending.is_empty() && !skipping {
        importer.line(no + 1, &pending).await?;
    }
    importer.flush().await?;
    let Importer { import_id, tally, .. } = importer;
    Ok(HttpResponse::Ok().json(json!({
        "import_id": import_id,
        "lines": tally.lines,
        "atoms": tally.atoms,
        "created": tally.created,
        "values": tally.values,
        "embeddings": tally.embeddings,
        "entries": tally.entries,
        "index": tally.index,
        "errors": tally.errors,
        "error_count": tally.error_count,
    })))
}
