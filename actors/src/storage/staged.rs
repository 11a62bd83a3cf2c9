//! A write overlay over the state machine's tables. Apply reads through it (so later commands
//! see earlier ones of the same batch of entries) and commits everything, together with
//! `last_applied`, in one sled transaction. A command that is rejected discards only its own
//! layer, which is what makes a command (and a batch) all-or-nothing. Before it commits, the
//! open [`Views`] get the pre-images of every key it is about to change.

use std::collections::BTreeMap;
use std::ops::Bound;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::view::Views;
use super::{Table, Tables};

type Key = (Table, Vec<u8>);
type Layer = BTreeMap<Key, Option<Vec<u8>>>;

pub struct Staged<'a> {
    tables: &'a Tables,
    /// Writes of entries already applied in this round.
    base: Layer,
    /// Writes of the command being applied now.
    top: Layer,
}

impl<'a> Staged<'a> {
    pub fn new(tables: &'a Tables) -> Self {
        Staged { tables, base: Layer::new(), top: Layer::new() }
    }

    pub fn get(&self, table: Table, key: &[u8]) -> sled::Result<Option<Vec<u8>>> {
        let k = (table, key.to_vec());
        if let Some(v) = self.top.get(&k).or_else(|| self.base.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self.tables.get(table).get(key)?.map(|v| v.to_vec()))
    }

    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.top.insert((table, key.into()), Some(value.into()));
    }

    pub fn remove(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.top.insert((table, key.into()), None);
    }

    /// Every live (key, value) whose key starts with `prefix`, staged writes included, in key order.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(table, prefix, |k| k.starts_with(prefix))
    }

    /// Every live (key, value) with `key <= upper`, in key order.
    pub fn scan_up_to(&self, table: Table, upper: &[u8]) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(table, &[], |k| k <= upper)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        within: impl Fn(&[u8]) -> bool,
    ) -> sled::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for item in self.tables.get(table).range(start..) {
            let (k, v) = item?;
            if !within(&k) {
                break;
            }
            merged.insert(k.to_vec(), Some(v.to_vec()));
        }
        let from = (table, start.to_vec());
        for layer in [&self.base, &self.top] {
            for ((t, k), v) in layer.range((Bound::Included(&from), Bound::Unbounded)) {
                if *t != table || !within(k) {
                    break;
                }
                merged.insert(k.clone(), v.clone());
            }
        }
        Ok(merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
    }

    /// Keeps the current command's writes.
    pub fn keep(&mut self) {
        let top = std::mem::take(&mut self.top);
        self.base.extend(top);
    }

    /// Drops the current command's writes.
    pub fn discard(&mut self) {
        self.top.clear();
    }

    /// Writes every kept change in one transaction over all tables (the caller holds the
    /// apply lock, which open views rely on).
    pub fn commit(mut self, views: &Views) -> sled::Result<()> {
        self.keep();
        if self.base.is_empty() {
            return Ok(());
        }
        views.record(self.tables, self.base.keys().map(|(t, k)| (*t, k.as_slice())))?;
        let trees: Vec<&sled::Tree> = Table::ALL.iter().map(|t| self.tables.get(*t)).collect();
        let writes = &self.base;
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
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e),
            Err(TransactionError::Abort(())) => unreachable!("the closure never aborts"),
        }
    }
}
