//! The thread that keeps the vector index current: it builds the index from one scan of the
//! stored vectors and the atoms they belong to (one view, subscribed first, so nothing applied
//! after the scan is missed), folds in every `Applied` announcement, and rebuilds from storage
//! when the feed says it cannot follow (a gap, lag, a snapshot install). Searches keep reading
//! the previous index while a rebuild runs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use super::index::VectorIndex;
use super::metrics::SimilarityMetrics;
use crate::model::{Atom, AtomId};
use crate::storage::events::{ChangeFeed, Changes, Feed};
use crate::storage::keys::split_embedding_key;
use crate::storage::reached::Reached;
use crate::storage::reads::GraphReader;
use crate::storage::{decode, from_be, Table};

/// The index searches read, `None` until the first build finished, and the applied index it
/// reflects (for reads that must see at least a given index).
#[derive(Default)]
pub struct SharedVectors {
    index: RwLock<Option<VectorIndex>>,
    at: Reached,
}

impl SharedVectors {
    /// Waits until the index reflects applied index `index` or later (see [`Reached`]).
    pub async fn reaches(&self, index: u64, patience: Duration) -> Result<u64, u64> {
        self.at.reaches(index, patience).await
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Option<VectorIndex>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<VectorIndex>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the thread; it runs until the state machine is gone.
pub fn start(
    reader: GraphReader,
    shared: Arc<SharedVectors>,
    metrics: SimilarityMetrics,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("vector-index".into()).spawn(move || follow(reader, shared, metrics))?;
    Ok(())
}

fn follow(reader: GraphReader, shared: Arc<SharedVectors>, metrics: SimilarityMetrics) {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the vector index cannot wait for announcements; similarity stays unavailable");
            return;
        }
    };
    let mut builds = 0u64;
    loop {
        let rx = reader.subscribe();
        let started = Instant::now();
        let index = match build(&reader) {
            Ok(index) => index,
            Err(e) => {
                tracing::error!(error = %e, "building the vector index failed; retrying in 1 s");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let at = index.at();
        tracing::info!(
            vectors = index.vectors(),
            memory_bytes = index.memory_bytes(),
            applied_index = at,
            seconds = started.elapsed().as_secs_f64(),
            "vector index built"
        );
        metrics.index_build_seconds.observe(started.elapsed().as_secs_f64());
        if builds > 0 {
            metrics.index_rebuilds.inc();
        }
        builds += 1;
        publish(&metrics, &index);
        *shared.write() = Some(index);
        shared.at.set(at);
        let mut feed = ChangeFeed::new(rx, at);
        loop {
            match runtime.block_on(feed.next()) {
                Feed::Changes { index, changes } => {
                    if let Err(reason) = fold(&reader, &shared, index, &changes) {
                        tracing::warn!(%reason, "the vector index cannot follow an announcement; rebuilding");
                        break;
                    }
                    metrics.index_updates.inc();
                    if let Some(vectors) = shared.read().as_ref() {
                        publish(&metrics, vectors);
                    }
                    shared.at.set(index);
                }
                Feed::Rebuild { reason } => {
                    tracing::info!(%reason, "rebuilding the vector index");
                    break;
                }
                Feed::Closed => return,
            }
        }
    }
}

fn publish(metrics: &SimilarityMetrics, index: &VectorIndex) {
    metrics.index_vectors.set(index.vectors() as i64);
    metrics.index_memory_bytes.set(index.memory_bytes() as i64);
    metrics.index_applied_index.set(index.at() as i64);
}

/// Folds one announcement in: removed atoms lose every vector, then each stored or removed
/// vector is set. A new vector's atom type comes from the announcement's record, else from
/// another model's row of the same atom, else from storage (a type never changes; an atom
/// gone from storage by now is removed by a later announcement, so its vector is skipped).
fn fold(reader: &GraphReader, shared: &SharedVectors, index: u64, changes: &Changes) -> Result<(), String> {
    let mut guard = shared.write();
    let Some(vectors) = guard.as_mut() else { return Err("no index yet".into()) };
    for (space, c) in &changes.spaces {
        for id in &c.removed {
            vectors.remove_atom(space, *id);
        }
        for (id, models) in &c.vectors {
            let atom_type = match c.records.get(id) {
                Some(record) => Some(decode::<Atom>(record, "atom").map_err(|e| e.to_string())?.atom_type),
                None => match vectors.known_type(space, *id) {
                    Some(t) => Some(t.to_string()),
                    None => reader.with(|v| v.atom(space, *id)).ok().map(|a| a.atom_type),
                },
            };
            let Some(atom_type) = atom_type else { continue };
            for (model, vector) in models {
                vectors.set(space, model, *id, &atom_type, vector.as_deref())?;
            }
        }
    }
    vectors.set_at(index);
    Ok(())
}

/// Builds the index from one view: every stored vector, then the type of each atom that has
/// one.
pub fn build(reader: &GraphReader) -> Result<VectorIndex, String> {
    let mut rows: Vec<(String, AtomId, String, Vec<u8>)> = Vec::new();
    let mut wanted = HashSet::new();
    let mut types: HashMap<AtomId, String> = HashMap::new();
    let at = reader
        .scan_tables(&[Table::Embeddings, Table::Atoms], |table, key, value| {
            match table {
                Table::Embeddings => {
                    let (space, id, model) = split_embedding_key(key)
                        .ok_or_else(|| std::io::Error::other("a malformed embedding key"))?;
                    wanted.insert(id);
                    rows.push((space.to_string(), id, model.to_string(), value.to_vec()));
                }
                _ if wanted.contains(&from_be(key)) => {
                    let atom: Atom = decode(value, "atom")?;
                    types.insert(atom.id, atom.atom_type);
                }
                _ => {}
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let mut index = VectorIndex::default();
    for (space, id, model, bytes) in rows {
        // Apply removes an atom's vectors with it, so every vector has its atom.
        let atom_type =
            types.get(&id).ok_or_else(|| format!("a vector of atom {id}, which does not exist"))?;
        index.set(&space, &model, id, atom_type, Some(&bytes))?;
    }
    index.set_at(at);
    Ok(index)
}
