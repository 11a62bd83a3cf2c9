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

type PreImages = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// The pre-images of the keys changed since one view opened.
#[derive(Default)]
pub struct Overlay {
    pre: Mutex<PreImages>,
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
                let slot = (table, key.to_vec());
                if pre.contains_key(&slot) {
                    continue;
                }
                if current.is_none() {
                    current = Some(tables.get(table).get(key)?.map(|v| v.to_vec()));
                }
                pre.insert(slot, current.clone().flatten());
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
        let mut after: Option<Vec<u8>> = None;
        for item in self.tables.get(table).iter() {
            let (key, value) = item.map_err(io::Error::other)?;
            // Read first, then ask the overlay: see the module comment for why this is exact.
            let (gone, own) = self.overlay_around(table, after.as_deref(), Some(&key));
            for (k, v) in gone {
                row(&k, &v)?;
                rows += 1;
            }
            match own {
                Some(Some(pre)) => row(&key, &pre)?,
                Some(None) => {
                    after = Some(key.to_vec());
                    continue;
                }
                None => row(&key, &value)?,
            }
            rows += 1;
            after = Some(key.to_vec());
        }
        let (gone, _) = self.overlay_around(table, after.as_deref(), None);
        for (k, v) in gone {
            row(&k, &v)?;
            rows += 1;
        }
        Ok(rows)
    }

    /// The overlay's keys that existed at the start strictly between `after` and `key` (to the
    /// end of the table without `key`), and the pre-image of `key` if it changed.
    #[allow(clippy::type_complexity)]
    fn overlay_around(
        &self,
        table: Table,
        after: Option<&[u8]>,
        key: Option<&[u8]>,
    ) -> (Vec<(Vec<u8>, Vec<u8>)>, Option<Option<Vec<u8>>>) {
        let pre = self.overlay.pre.lock().unwrap_or_else(|p| p.into_inner());
        let low = match after {
            Some(a) => Bound::Excluded((table, a.to_vec())),
            None => Bound::Included((table, Vec::new())),
        };
        let gone = pre
            .range((low, Bound::Unbounded))
            .take_while(|((t, k), _)| *t == table && key.is_none_or(|key| k.as_slice() < key))
            .filter_map(|((_, k), v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        let own = key.and_then(|key| pre.get(&(table, key.to_vec())).cloned());
        (gone, own)
    }

    /// Keys whose changes the view has absorbed so far (for metrics and tests).
    pub fn overlay_len(&self) -> usize {
        self.overlay.pre.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let mut open = self.views.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|o| !Arc::ptr_eq(o, &self.overlay));
    }
}
