//! `GET /v1/export?space=`: the space's atoms, named values and vectors as NDJSON, streamed from one
//! point-in-time view (after a read barrier, so every acknowledged write is in it). One line
//! per atom in id order (a link after its members), every line with a `key` (`a<id>`), links
//! naming their members by key; then one `{key, values}` line per atom with named values; then
//! one `{key, embeddings: {model: vector}}` line per atom and model with a vector; and last an
//! `{"end": {atoms, values, embeddings, applied_index}}` line, so a reader can tell a whole export
//! from a cut one (a failure midway ends the stream with an `{"error"}` line instead).
//! `POST /v1/import` reads this format back.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use cograft_actors::model::{Atom, AtomId, AtomKind};
use cograft_actors::storage::apply::embeddings::vector_from_bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{space_of, ReadParams};
use crate::api::error::ApiError;
use crate::api::AppState;

/// Bytes gathered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;
/// How long the client may take to accept a chunk before the export is given up: the walk
/// holds off this node's snapshot builds and installs while it runs.
const STALL: Duration = Duration::from_secs(30);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/export", web::get().to(export));
}

/// The key an export gives the atom `id`.
pub fn export_key(id: AtomId) -> String {
    format!("a{id}")
}

/// An atom's export line.
fn atom_line(atom: &Atom) -> Value {
    match &atom.kind {
        AtomKind::Node { name } => {
            json!({ "key": export_key(atom.id), "type": atom.atom_type, "name": name, "tv": atom.tv })
        }
        AtomKind::Link { outgoing } => {
            let members: Vec<Value> = outgoing.iter().map(|m| json!({ "key": export_key(*m) })).collect();
            json!({ "key": export_key(atom.id), "type": atom.atom_type, "outgoing": members, "tv": atom.tv })
        }
    }
}

/// Writes the lines into chunks and hands full chunks to the response.
struct Writer {
    buf: Vec<u8>,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    runtime: tokio::runtime::Handle,
    atoms: u64,
    values: u64,
    vectors: u64,
    /// Named values come ordered by atom: each atom's go out as one line.
    pending: Option<(AtomId, Map<String, Value>)>,
}

/// A vector's line, typed so its components print as the shortest decimals that read back to
/// the same f32 (through `Value` they would print as widened f64s, twice as long).
#[derive(serde::Serialize)]
struct VectorLine<'a> {
    key: String,
    embeddings: std::collections::BTreeMap<&'a str, Vec<f32>>,
}

impl Writer {
    fn line(&mut self, line: &impl serde::Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.buf, line).map_err(io::Error::other)?;
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.runtime.block_on(self.tx.send_timeout(Ok(chunk), STALL)).map_err(|e| match e {
            mpsc::error::SendTimeoutError::Timeout(_) => {
                io::Error::other(format!("the client took more than {} s to read on", STALL.as_secs()))
            }
            mpsc::error::SendTimeoutError::Closed(_) => io::Error::other("the client went away"),
        })
    }

    fn atom(&mut self, atom: &Atom) -> io::Result<()> {
        self.atoms += 1;
        self.line(&atom_line(atom))
    }

    fn value(&mut self, id: AtomId, key: &str, bytes: &[u8]) -> io::Result<()> {
        self.values += 1;
        if self.pending.as_ref().is_some_and(|(at, _)| *at != id) {
            self.values_line()?;
        }
        let value: Value = serde_json::from_slice(bytes).map_err(io::Error::other)?;
        self.pending.get_or_insert_with(|| (id, Map::new())).1.insert(key.to_string(), value);
        Ok(())
    }

    fn values_line(&mut self) -> io::Result<()> {
        match self.pending.take() {
            Some((id, values)) => self.line(&json!({ "key": export_key(id), "values": values })),
            None => Ok(()),
        }
    }

    /// One line per atom and model: a line's ops must fit one entry when it is imported again,
    /// and one vector does (at most 4096 components), where 16 of one atom may not.
    fn vector(&mut self, id: AtomId, model: &str, bytes: &[u8]) -> io::Result<()> {
        if self.vectors == 0 {
            self.values_line()?;
        }
        self.vectors += 1;
        let line = VectorLine { key: export_key(id), embeddings: [(model, vector_from_bytes(bytes))].into() };
        self.line(&line)
    }

    /// The last values line (when no vector followed it) and the end line (or the error
    /// line), then the last chunk.
    fn finish(mut self, walked: cograft_actors::Result<u64>) {
        let walked = walked.and_then(|index| {
            self.values_line().map(|_| index).map_err(|e| cograft_actors::Error::Invalid(e.to_string()))
        });
        let end = match walked {
            Ok(index) => json!({ "end": {
                "atoms": self.atoms, "values": self.values, "embeddings": self.vectors, "applied_index": index
            } }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        if self.line(&end).is_ok() {
            let _ = self.flush();
        }
    }
}

async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let space = space_of(&req)?;
    if !q.stale()? {
        state.raft.send(cograft_actors::raft::actor::ReadBarrier).await??;
    }
    let running = crate::api::ClearOnDrop::one_at_a_time(
        &state.export_running,
        "export_running",
        "this node is streaming an export already (one at a time); retry when it is done",
        10,
    )?;
    // Checked again from the walk's own view: a deletion that starts in between ends the
    // stream with an error line instead of a partial space.
    state.reader.ensure_live(&space)?;
    let runtime = tokio::runtime::Handle::current();
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
    let reader = state.reader.clone();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        let writer = Writer {
            buf: Vec::with_capacity(CHUNK),
            tx,
            runtime,
            atoms: 0,
            values: 0,
            vectors: 0,
            pending: None,
        };
        let writer = RefCell::new(writer);
        let walked = reader.walk_space(
            &space,
            |atom| writer.borrow_mut().atom(atom),
            |id, key, bytes| writer.borrow_mut().value(id, key, bytes),
            |id, model, bytes| writer.borrow_mut().vector(id, model, bytes),
        );
        writer.into_inner().finish(walked);
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}
