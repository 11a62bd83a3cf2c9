//! Work over the whole state machine: building a snapshot, installing one, and the digest.
//! None of them holds the apply lock for more than an instant. A build and the digest walk a
//! point-in-time [`View`](super::view::View) opened under it; an install writes the snapshot's
//! rows into the next generation of trees while the old one keeps serving, then switches under
//! the apply lock and the read gate (a flag write and a flush) and drops the old trees.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::apply::{META_LAST_APPLIED, META_MEMBERSHIP};
use super::events::StateEvent;
use super::snapshot::read_rows;
use super::state_machine::{locked, StateMachineCore};
use super::{encode, flush_durably, Table};
use crate::typ::{LogId, SnapshotMeta, StoredMembership};

/// Rows an install writes per sled batch (sled's batches take its one process-wide lock).
const INSTALL_BATCH_ROWS: usize = 1_000;

impl StateMachineCore {
    /// Opens a view at the current applied index; answers it with the index and membership.
    pub(super) fn open_view(&self) -> io::Result<(super::view::View, Option<LogId>, StoredMembership)> {
        let _apply = locked(&self.write_lock);
        let tables = self.db.tables();
        let applied: Option<LogId> = Self::meta_in(&tables, META_LAST_APPLIED)?.flatten();
        let membership: StoredMembership = Self::meta_in(&tables, META_MEMBERSHIP)?.unwrap_or_default();
        Ok((self.views.open(tables), applied, membership))
    }

    /// Writes a snapshot of the state at the current applied index, streaming every table
    /// through a view while apply goes on. Answers its meta and file.
    pub fn build_snapshot(&self) -> io::Result<(SnapshotMeta, PathBuf)> {
        let started = Instant::now();
        let _one = locked(&self.snapshot_lock);
        let (view, last_log_id, last_membership) = self.open_view()?;
        let nonce = crate::now_ms() ^ u64::from(std::process::id());
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{nonce:x}", l.leader_id.term, l.index),
            None => format!("empty-{nonce:x}"),
        };
        let meta = SnapshotMeta { last_log_id, last_membership, snapshot_id };
        let mut writer = self.files.writer(&meta)?;
        for table in Table::ALL {
            view.scan(table, |key, value| writer.row(table, key, value))?;
        }
        let absorbed = view.overlay_len();
        drop(view);
        let rows = writer.rows();
        let path = writer.finish(&self.files)?;
        self.db.note_published_snapshot(meta.last_log_id.map(|l| l.index).unwrap_or(0));
        self.metrics.snapshot_build_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            snapshot = %meta.snapshot_id,
            rows,
            changes_during_build = absorbed,
            seconds = started.elapsed().as_secs_f64(),
            "snapshot built"
        );
        Ok((meta, path))
    }

    /// Replaces the whole state with the (verified) snapshot file at `path`. The rows go into
    /// fresh trees; the old ones serve reads until the switch, so a reader never sees a half-
    /// installed state, and a crash before the switch leaves the old state whole.
    pub fn install(&self, meta: &SnapshotMeta, path: &Path) -> io::Result<()> {
        let started = Instant::now();
        let _one = locked(&self.snapshot_lock);
        let old = self.db.tables().generation;
        let next = self.db.fresh_generation(old + 1).map_err(io::Error::other)?;
        let mut batches: Vec<(sled::Batch, usize)> = Table::ALL.iter().map(|_| Default::default()).collect();
        let rows = read_rows(path, |table, key, value| {
            let (batch, count) = &mut batches[table as usize];
            batch.insert(key, value);
            *count += 1;
            if *count >= INSTALL_BATCH_ROWS {
                next.get(table).apply_batch(std::mem::take(batch)).map_err(io::Error::other)?;
                *count = 0;
            }
            Ok(())
        })?;
        for (table, (batch, _)) in Table::ALL.iter().zip(batches) {
            next.get(*table).apply_batch(batch).map_err(io::Error::other)?;
        }
        // Every row is in the new trees; the old ones are still the state.
        crate::failpoint::hit("snapshot_install_midway");
        let meta_table = next.get(Table::Meta);
        meta_table.insert(META_LAST_APPLIED, encode(&meta.last_log_id)).map_err(io::Error::other)?;
        meta_table.insert(META_MEMBERSHIP, encode(&meta.last_membership)).map_err(io::Error::other)?;
        flush_durably(&self.db)?;
        let switch_started = Instant::now();
        {
            let _apply = locked(&self.write_lock);
            let _alone = self.read_gate.write().unwrap_or_else(|p| p.into_inner());
            self.db.switch_to(next)?;
        }
        let switch = switch_started.elapsed();
        self.db.drop_older_generations_in_background(old + 1);
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        self.metrics.snapshot_install_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            snapshot = %meta.snapshot_id,
            rows,
            seconds = started.elapsed().as_secs_f64(),
            switch_ms = switch.as_secs_f64() * 1000.0,
            "snapshot installed"
        );
        let _ = self.events.send(StateEvent::SnapshotInstalled { index });
        Ok(())
    }

    /// Hands `atom` every atom record as of the applied index it answers, from a view: apply
    /// goes on meanwhile. (It takes no snapshot lock: an install that switches the trees during
    /// the walk announces itself, and whoever built from this rebuilds.)
    pub fn scan_atoms(&self, mut atom: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<u64> {
        self.scan_tables(&[Table::Atoms], |_, _, value| atom(value))
    }

    /// Hands `row` every row of each of `tables` in turn (one view: one state for all of
    /// them), as [`scan_atoms`](Self::scan_atoms) does atoms.
    pub fn scan_tables(
        &self,
        tables: &[Table],
        mut row: impl FnMut(Table, &[u8], &[u8]) -> io::Result<()>,
    ) -> io::Result<u64> {
        let (view, applied, _) = self.open_view()?;
        for table in tables {
            view.scan(*table, |key, value| row(*table, key, value))?;
        }
        Ok(applied.map(|l| l.index).unwrap_or(0))
    }

    /// A hash of every data table with the applied index it reflects (equal on all replicas at
    /// the same index), from a view: apply goes on while it is computed. Bookkeeping (clock,
    /// idempotency table) is left out.
    pub fn digest(&self) -> io::Result<(u64, String)> {
        let _one = locked(&self.snapshot_lock);
        let (view, applied, _) = self.open_view()?;
        let mut hasher = blake3::Hasher::new();
        for table in Table::ALL.into_iter().filter(|t| t.is_data()) {
            hasher.update(table.name().as_bytes());
            view.scan(table, |key, value| {
                hasher.update(&(key.len() as u64).to_be_bytes());
                hasher.update(key);
                hasher.update(&(value.len() as u64).to_be_bytes());
                hasher.update(value);
                Ok(())
            })?;
        }
        Ok((applied.map(|l| l.index).unwrap_or(0), hasher.finalize().to_hex().to_string()))
    }
}
