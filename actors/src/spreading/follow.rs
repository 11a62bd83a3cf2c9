//! The thread that keeps the spreading index current: it builds the index from one scan of
//! the atoms (subscribed first, so nothing applied after the scan's index is missed), then
//! folds in every `Applied` announcement, compacts spaces whose side lists grew, and rebuilds
//! from storage when the feed says it cannot follow (a gap, lag, a snapshot install) or an
//! announcement does not fit. Spreads keep reading the previous index while a rebuild runs.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use super::indexes::{Builder, GraphIndex};
use super::metrics::SpreadingMetrics;
use crate::storage::events::{ChangeFeed, Feed};
use crate::storage::reached::Reached;
use crate::storage::reads::GraphReader;

/// How often the index's memory is re-summed for its gauge while folds change it.
const SIZE_EVERY: Duration = Duration::from_secs(1);

/// The index spreads read, `None` until the first build finished, and the applied index it
/// reflects (for work that must see at least a given index).
#[derive(Default)]
pub struct SharedIndex {
    graph: RwLock<Option<GraphIndex>>,
    at: Reached,
}

impl SharedIndex {
    /// Waits until the index reflects applied index `index` or later (see [`Reached`]).
    pub async fn reaches(&self, index: u64, patience: Duration) -> Result<u64, u64> {
        self.at.reaches(index, patience).await
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Option<GraphIndex>> {
        self.graph.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<GraphIndex>> {
        self.graph.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the thread; it runs until the state machine is gone.
pub fn start(
    reader: GraphReader,
    shared: Arc<SharedIndex>,
    metrics: SpreadingMetrics,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("spreading-index".into())
        .spawn(move || follow(reader, shared, metrics))?;
    Ok(())
}

fn follow(reader: GraphReader, shared: Arc<SharedIndex>, metrics: SpreadingMetrics) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the spreading index cannot wait for announcements; spreads stay unavailable");
            return;
        }
    };
    let mut builds = 0u64;
    loop {
        let rx = reader.subscribe();
        let started = Instant::now();
        let built = build(&reader);
        let index = match built {
            Ok(index) => index,
            Err(e) => {
                tracing::error!(error = %e, "building the spreading index failed; retrying in 1 s");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let at = index.at();
        tracing::info!(
            atoms = index.atoms(),
            memory_bytes = index.memory_bytes(),
            applied_index = at,
            seconds = started.elapsed().as_secs_f64(),
            "spreading index built"
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
        // When the index's memory was last summed, and whether folds changed it since.
        let mut sized = Instant::now();
        let mut unsized_folds = false;
        loop {
            // Waiting is cancel-safe (the feed moves only on a received event). Summing the
            // side lists costs their length: at most once a second under writes, and after an
            // idle second for what the last folds left unsummed.
            let Ok(next) = runtime.block_on(async { tokio::time::timeout(SIZE_EVERY, feed.next()).await })
            else {
                if std::mem::take(&mut unsized_folds) {
                    size(&shared, &metrics, &mut sized);
                }
                continue;
            };
            match next {
                Feed::Changes { index, changes } => {
                    if let Err(reason) = fold(&shared, &metrics, index, &changes) {
                        tracing::warn!(%reason, "the spreading index cannot follow an announcement; rebuilding");
                        break;
                    }
                    shared.at.set(index);
                    unsized_folds = sized.elapsed() < SIZE_EVERY;
                    if !unsized_folds {
                        size(&shared, &metrics, &mut sized);
                    }
                }
                Feed::Rebuild { reason } => {
                    tracing::info!(%reason, "rebuilding the spreading index");
                    break;
                }
                Feed::Closed => return,
            }
        }
    }
}

/// Folds one announcement in, then compacts the spaces that want it (built under the read
/// lock, so spreads go on; only the swap takes the write lock, and this thread is the only
/// writer, so nothing changes in between).
fn fold(
    shared: &SharedIndex,
    metrics: &SpreadingMetrics,
    index: u64,
    changes: &crate::storage::events::Changes,
) -> Result<(), String> {
    // An index that stops following, for the health check's tests.
    crate::failpoint::hit("spreading_index_follow");
    let compact = {
        let mut graph = shared.write();
        let Some(graph) = graph.as_mut() else { return Err("no index yet".into()) };
        graph.apply(index, changes).map_err(|e| e.to_string())?
    };
    metrics.index_updates.inc();
    let compacted_any = !compact.is_empty();
    for name in compact {
        let started = Instant::now();
        let compacted = shared.read().as_ref().and_then(|g| g.space(&name).map(|s| s.compacted()));
        if let Some(space) = compacted {
            if let Some(graph) = shared.write().as_mut() {
                graph.replace(&name, space);
            }
            metrics.index_compactions.inc();
            tracing::debug!(space = %name, ms = started.elapsed().as_millis() as u64, "spreading index compacted");
        }
    }
    if let Some(graph) = shared.read().as_ref() {
        metrics.index_atoms.set(graph.atoms() as i64);
        metrics.index_applied_index.set(graph.at() as i64);
        if compacted_any {
            metrics.index_memory_bytes.set(graph.memory_bytes() as i64);
        }
    }
    Ok(())
}

fn size(shared: &SharedIndex, metrics: &SpreadingMetrics, sized: &mut Instant) {
    if let Some(graph) = shared.read().as_ref() {
        metrics.index_memory_bytes.set(graph.memory_bytes() as i64);
    }
    *sized = Instant::now();
}

fn publish(metrics: &SpreadingMetrics, graph: &GraphIndex) {
    metrics.index_atoms.set(graph.atoms() as i64);
    metrics.index_memory_bytes.set(graph.memory_bytes() as i64);
    metrics.index_applied_index.set(graph.at() as i64);
}

/// Builds the index from one scan of the atoms, streaming (no copy of the atoms is held).
pub fn build(reader: &GraphReader) -> Result<GraphIndex, String> {
    let mut builder = Builder::default();
    let mut failed = None;
    let at = reader
        .scan_atoms(|atom| {
            if failed.is_none() {
                failed = builder.push(&atom).err();
            }
        })
        .map_err(|e| e.to_string())?;
    match failed {
        Some(e) => Err(e.to_string()),
        None => Ok(builder.finish(at)),
    }
}
