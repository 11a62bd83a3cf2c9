//! Point-in-time views of the state machine's tables, without MVCC and without stopping apply.
//! sled 0.34 has no snapshots of its own, so a snapshot build or a digest that walked the trees
//! while apply changed them would see a mix of states, and one that held the apply lock for the
//! whole walk would stall apply for seconds at a million atoms.
//!
//! A [`View`] is opened under the apply lock (so it starts exactly at an applied index) and
//! registers an overlay. From then on, apply records into every registered overlay the value
//! each key had *before* its first change (first write wins), before it commits. The walk reads
//! sled, and for every key it consults the overlay after reading it: a key changed before the
//! read has its pre-image there (recorded before the change was committed); a key changed
//! after the read was read unchanged. Keys removed before the walk reached them come from the
//! overlay, keys created after the view opened are skipped. The overlay holds only the keys
//! changed during the walk.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::{Table, Tables};

/// Per table, key -> the value it had when the view opened (`None`: it did not exist).
type PreImages = Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// The pre-images of the keys changed since one view opened.
pub struct Overlay {
    pre: Mutex<PreImages>,
    /// Entries in `pre` per table, readable without the lock: a walk over a table nothing
    /// changed in skips the lock.
    len: Vec<std::sync::atomic::AtomicUsize>,
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            pre: Mutex::new(Table::ALL.iter().map(|_| BTreeMap::new()).collect()),
            len: Table::ALL.iter().map(|_| Default::default()).collect(),
        }
    }
}

/// The overlays of the views now open; apply records into each.
#[derive(Default)]
pub struct Views {
    open: Mutex<Vec<Arc<Overlay>>>,
}

impl Views {
    /// Before apply commits writes to `keys` of `tables`: remembers each key's current value in
    /// every open view that has not seen it change yet. Call under the apply lock.
    pub fn record<'k>(
        &self,
        tables: &Tables,
        keys: impl IntoIterator<Item = (Table, &'k [u8])>,
    ) -> sled::Result<()> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if open.is_empty() {
            return Ok(());
        }
        for (table, key) in keys {
            let mut current = None;
            for overlay in &open {
                let mut pre = overlay.pre.lock().unwrap_or_else(|p| p.into_inner());
                let changed = &mut pre[table as usize];
                if changed.contains_key(key) {
                    continue;
                }
                if current.is_none() {
                    current = Some(tables.get(table).get(key)?.map(|v| v.to_vec()));
                }
                changed.insert(key.to_vec(), current.clone().flatten());
                overlay.len[table as usize].store(changed.len(), std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
    }

    /// Opens a view over `tables`. Call under the apply lock, so it starts at an applied index.
    pub fn open(self: &Arc<Self>, tables: Arc<Tables>) -> View {
        let overlay = Arc::new(Overlay::default());
        self.open.lock().unwrap_or_else(|p| p.into_inner()).push(overlay.clone());
        View { views: self.clone(), overlay, tables }
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The tables as they were when the view opened. Closing (dropping) it stops the recording.
pub struct View {
    views: Arc<Views>,
    overlay: Arc<Overlay>,
    tables: Arc<Tables>,
}

impl View {
    /// Calls `row` for every (key, value) of `table` as of the view's start, in key order.
    pub fn scan(&self, table: Table, mut row: impl FnMut(&[u8], &[u8]) -> io::Result<()>) -> io::Result<u64> {
        let mut rows = 0u64;
        let mut after: Option<sled::IVec> = None;
        for item in self.tables.get(table).iter() {
            let (key, value) = item.map_err(io::Error::other)?;
            // Read first, then ask the overlay: see the module comment for why this is exact.
            match self.overlay_around(table, after.as_deref(), Some(&key), &mut |k, v| {
                rows += 1;
                row(k, v)
            })? {
                Some(Some(pre)) => {
                    row(&key, &pre)?;
                    rows += 1;
                }
                Some(None) => {}
                None => {
                    row(&key, &value)?;
                    rows += 1;
                }
            }
            after = Some(key);
        }
        self.overlay_around(table, after.as_deref(), None, &mut |k, v| {
            rows += 1;
            row(k, v)
        })?;
        Ok(rows)
    }

    /// Hands `gone` the overlay's keys that existed at the start strictly between `after` and
    /// `key` (to the end of the table without `key`), and answers the pre-image of `key` if it
    /// changed.
    fn overlay_around(
        &self,
        table: Table,
        after: Option<&[u8]>,
        key: Option<&[u8]>,
        gone: &mut RowSink<'_>,
    ) -> io::Result<Option<Option<Vec<u8>>>> {
        // Recorded before apply commits, so an empty overlay after the read means no change
        // reached anything read so far.
        if self.overlay.len[table as usize].load(std::sync::atomic::Ordering::Acquire) == 0 {
            return Ok(None);
        }
        let (removed, own) = {
            let pre = self.overlay.pre.lock().unwrap_or_else(|p| p.into_inner());
            let changed = &pre[table as usize];
            let low = after.map_or(Bound::Unbounded, Bound::Excluded);
            let high = key.map_or(Bound::Unbounded, Bound::Excluded);
            let removed: Vec<(Vec<u8>, Vec<u8>)> = changed
                .range::<[u8], _>((low, high))
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
                .collect();
            (removed, key.and_then(|key| changed.get(key).cloned()))
        };
        // Outside the lock, so apply's recording never waits for the caller's work.
        for (k, v) in removed {
            gone(&k, &v)?;
        }
        Ok(own)
    }

    /// Keys whose changes the view has absorbed so far (for metrics and tests).
    pub fn overlay_len(&self) -> usize {
        self.overlay.pre.lock().unwrap_or_else(|p| p.into_inner()).iter().map(BTreeMap::len).sum()
    }
}

/// Where a scan hands each row it reads: key, value.
type RowSink<'a> = dyn FnMut(&[u8], &[u8]) -> io::Result<()> + 'a;

impl Drop for View {
    fn drop(&mut self) {
        let mut open = self.views.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|o| !Arc::ptr_eq(o, &self.overlay));
    }
}
