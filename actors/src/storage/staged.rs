//! A write overlay over the state machine's tables. Apply reads through it (so later commands
//! see earlier ones of the same batch of entries) and commits everything, together with
//! `last_applied`, in one sled transaction. A command that is rejected discards only its own
//! layer, which is what makes a command (and a batch) all-or-nothing: its writes and the atom
//! changes it reported. Before it commits, the open [`Views`] get the pre-images of every key
//! it is about to change.
//!
//! Housekeeping removes keys from the front of ordered tables (deadlines, idempotency order,
//! observation order). Until the commit those keys are still in sled, so a scan from the start
//! would walk past every key removed earlier in the same run (quadratic during a catch-up).
//! [`Staged::take_front`] remembers, per table, the key up to which every sled key is removed
//! in the staged layers, and starts its sled scan there: the same answer, without the rewalk.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::events::{Change, Changes};
use super::view::Views;
use super::{Table, Tables};

type Key = (Table, Vec<u8>);
type Layer = BTreeMap<Key, Option<Vec<u8>>>;

#[derive(Default)]
struct Pending {
    writes: Layer,
    changes: Vec<Change>,
    /// Per table: every sled key up to and including this one is removed in the layers.
    front: HashMap<Table, Vec<u8>>,
}

/// One layer's writes to `table` from `start` on while `within` holds, in key order.
fn layer_from<'l>(
    writes: &'l Layer,
    table: Table,
    start: &[u8],
    within: &'l impl Fn(&[u8]) -> bool,
) -> impl Iterator<Item = (&'l Vec<u8>, &'l Option<Vec<u8>>)> + 'l {
    writes
        .range((Bound::Included((table, start.to_vec())), Bound::Unbounded))
        .take_while(move |((t, k), _)| *t == table && within(k))
        .map(|((_, k), v)| (k, v))
}

pub struct Staged<'a> {
    tables: &'a Tables,
    /// What entries already applied in this round wrote.
    base: Pending,
    /// What the command being applied now writes.
    top: Pending,
}

impl<'a> Staged<'a> {
    pub fn new(tables: &'a Tables) -> Self {
        Staged { tables, base: Pending::default(), top: Pending::default() }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> sled::Result<Option<Vec<u8>>> {
        let k = (table, key.to_vec());
        if let Some(v) = self.top.writes.get(&k).or_else(|| self.base.writes.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self.tables.get(table).get(key)?.map(|v| v.to_vec()))
    }

    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.top.writes.insert((table, key.into()), Some(value.into()));
    }

    pub fn remove(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.top.writes.insert((table, key.into()), None);
    }

    /// Reports an atom change (announced with the commit, dropped with a discarded layer).
    pub fn changed(&mut self, change: Change) {
        self.top.changes.push(change);
    }

    /// Every live (key, value) whose key starts with `prefix`, staged writes included, in key
    /// order, at most `limit`.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(table, prefix, prefix, |k| k.starts_with(prefix), limit)
    }

    /// Live rows with keys after `after` (from the start when it is empty), at most `limit`.
    pub fn scan_after(
        &self,
        table: Table,
        after: &[u8],
        limit: usize,
    ) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = self.scan(table, after, after, |_| true, limit + 1)?;
        rows.retain(|(k, _)| after.is_empty() || k.as_slice() > after);
        rows.truncate(limit);
        Ok(rows)
    }

    /// Removes and answers the first live keys of `table` that are `<= upper`, at most `limit`.
    /// The caller must keep or discard the layer as a whole.
    pub fn take_front(
        &mut self,
        table: Table,
        upper: &[u8],
        limit: usize,
    ) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.take_front_while(table, limit, |k, _| k <= upper)
    }

    /// Removes and answers the first live rows of `table` for which `take` holds, stopping at
    /// the first for which it does not, at most `limit`.
    pub fn take_front_while(
        &mut self,
        table: Table,
        limit: usize,
        mut take: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let sled_from = self.top.front.get(&table).or_else(|| self.base.front.get(&table)).cloned();
        let mut found = self.scan(table, &[], sled_from.as_deref().unwrap_or(&[]), |_| true, limit)?;
        let keep = found.iter().position(|(k, v)| !take(k, v)).unwrap_or(found.len());
        found.truncate(keep);
        for (key, _) in &found {
            self.remove(table, key.clone());
        }
        if let Some((last, _)) = found.last() {
            // Everything in sled up to `last` is removed now: what the scan passed was either
            // removed before (below the old front) or returned (and removed just above).
            self.top.front.insert(table, last.clone());
        }
        Ok(found)
    }

    /// Live keys from `start` within `within`, merged from sled (read from `sled_from`, which
    /// skips keys known to be removed) and the layers, in key order, at most `limit`.
    fn scan(
        &self,
        table: Table,
        start: &[u8],
        sled_from: &[u8],
        within: impl Fn(&[u8]) -> bool,
        limit: usize,
    ) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        // The layers merged in key order (the top one wins a tie), up to their `limit`-th live
        // key: nothing after it can be in the answer, which has `limit` live keys up to it.
        let mut base = layer_from(&self.base.writes, table, start, &within).peekable();
        let mut top = layer_from(&self.top.writes, table, start, &within).peekable();
        let mut live = 0;
        while live < limit {
            let (key, value) = match (base.peek(), top.peek()) {
                (None, None) => break,
                (Some((b, _)), Some((t, _))) if b < t => base.next().unwrap(),
                (Some((b, _)), Some((t, _))) if b == t => {
                    base.next();
                    top.next().unwrap()
                }
                (_, Some(_)) => top.next().unwrap(),
                (Some(_), None) => base.next().unwrap(),
            };
            live += usize::from(value.is_some());
            merged.insert(key.clone(), value.clone());
        }
        // Live sled keys needed: `limit` plus every staged removal that may shadow one.
        let removals = merged.values().filter(|v| v.is_none()).count();
        let sled_start = if sled_from > start { sled_from } else { start };
        for (taken, item) in self.tables.get(table).range(sled_start..).enumerate() {
            let (k, v) = item?;
            if !within(&k) || taken >= limit + removals {
                break;
            }
            merged.entry(k.to_vec()).or_insert_with(|| Some(v.to_vec()));
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit).collect())
    }

    /// Keeps the current command's writes, changes and fronts.
    pub fn keep(&mut self) {
        let top = std::mem::take(&mut self.top);
        self.base.writes.extend(top.writes);
        self.base.changes.extend(top.changes);
        self.base.front.extend(top.front);
    }

    /// Drops the current command's writes, changes and fronts.
    pub fn discard(&mut self) {
        self.top = Pending::default();
    }

    /// Writes every kept change in one transaction over all tables (the caller holds the
    /// apply lock, which open views rely on), and answers the atom changes it made.
    pub fn commit(mut self, views: &Views) -> sled::Result<Changes> {
        self.keep();
        let mut changes = Changes::from_log(std::mem::take(&mut self.base.changes));
        for space in changes.spaces.values_mut() {
            for id in space.added.iter().chain(&space.updated) {
                if let Some(Some(record)) = self.base.writes.get(&(Table::Atoms, super::be(*id).to_vec())) {
                    space.records.insert(*id, record.clone());
                }
            }
        }
        let vectors = (Table::Embeddings, Vec::new())..(Table::EmbeddingModels, Vec::new());
        for ((_, key), value) in self.base.writes.range(vectors) {
            let Some((name, id, model)) = super::keys::split_embedding_key(key) else { continue };
            if let Some(space) = changes.spaces.get_mut(name).filter(|s| !s.removed.contains(&id)) {
                space.vectors.entry(id).or_default().insert(model.to_string(), value.clone());
            }
        }
        if self.base.writes.is_empty() {
            return Ok(changes);
        }
        views.record(self.tables, self.base.writes.keys().map(|(t, k)| (*t, k.as_slice())))?;
        let trees: Vec<&sled::Tree> = Table::ALL.iter().map(|t| self.tables.get(*t)).collect();
        let writes = &self.base.writes;
        let result = trees[..].transaction(|views| {
            for ((table, key), value) in writes {
                let view = &views[*table as usize];
                match value {
                    Some(v) => view.insert(key.as_slice(), v.as_slice())?,
                    None => view.remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(changes),
            Err(TransactionError::Storage(e)) => Err(e),
            Err(TransactionError::Abort(())) => unreachable!("the closure never aborts"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(u8, u8)> {
        rows.into_iter().map(|(k, v)| (k[0], v[0])).collect()
    }

    #[test]
    fn scans_merge_sled_and_both_layers_the_latest_write_winning() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::Db::open(dir.path()).unwrap();
        let tables = db.tables();
        for k in [1u8, 3, 5, 7] {
            tables.get(Table::Values).insert([k], &[k]).unwrap();
        }
        let mut st = Staged::new(&tables);
        // An earlier command of the run: removes 3, writes 4 and 6.
        st.remove(Table::Values, vec![3]);
        st.put(Table::Values, vec![4], vec![40]);
        st.put(Table::Values, vec![6], vec![60]);
        st.keep();
        // The current one: rewrites 4, removes 6 and 5, writes 2.
        st.put(Table::Values, vec![4], vec![41]);
        st.remove(Table::Values, vec![6]);
        st.remove(Table::Values, vec![5]);
        st.put(Table::Values, vec![2], vec![20]);
        let all = st.scan_after(Table::Values, &[], 100).unwrap();
        assert_eq!(keys(all), vec![(1, 1), (2, 20), (4, 41), (7, 7)]);
        for limit in 1..=4 {
            let some = st.scan_after(Table::Values, &[], limit).unwrap();
            assert_eq!(keys(some), [(1, 1), (2, 20), (4, 41), (7, 7)][..limit].to_vec(), "limit {limit}");
        }
        assert_eq!(keys(st.scan_after(Table::Values, &[2], 2).unwrap()), vec![(4, 41), (7, 7)]);
        // Another table's writes never show.
        st.put(Table::Atoms, vec![0], vec![0]);
        assert_eq!(st.scan_after(Table::Values, &[], 100).unwrap().len(), 4);
    }
}
