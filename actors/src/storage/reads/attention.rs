//! Reads of attention: the attentional focus of a space, whether any atom holds attention, and
//! the atoms forgetting could take.

use super::{storage, GraphView, Page};
use crate::command::AttentionStep;
use crate::error::Result;
use crate::model::{Atom, AtomId};
use crate::storage::apply::attention::{in_focus, is_forgettable, recorded_sti, META_ATTENTION_STEP};
use crate::storage::keys::space_prefix;
use crate::storage::reads::encode_cursor;
use crate::storage::{be, from_be, Table};

/// Most atom records one page of forgettable atoms looks at.
pub const MAX_FORGET_SCANNED: usize = 100_000;

impl GraphView<'_> {
    /// The attentional focus of `space`: its atoms with STI at or above the focus boundary of
    /// the last attention step (the default step's before any ran), highest STI first (ties by
    /// id), at most `top_k`, and that boundary. It walks the space's Attention rows, which list
    /// only the atoms that hold attention.
    pub fn focus(&self, space: &str, top_k: usize) -> Result<(Vec<Atom>, f64)> {
        self.live(space)?;
        let step: Option<AttentionStep> = self.get(Table::Meta, META_ATTENTION_STEP)?;
        let boundary = step.unwrap_or_default().focus_boundary;
        let best_first = |a: &(f64, AtomId), b: &(f64, AtomId)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let mut best: Vec<(f64, AtomId)> = Vec::new();
        for item in self.tables.get(Table::Attention).scan_prefix(space_prefix(space)) {
            let (key, value) = item.map_err(|e| storage(self.dir)(e.into()))?;
            let sti = recorded_sti(&value);
            if in_focus(sti, boundary) {
                best.push((sti, from_be(&key[key.len() - 8..])));
            }
            if best.len() >= 2 * top_k.max(512) {
                best.sort_by(best_first);
                best.truncate(top_k);
            }
        }
        best.sort_by(best_first);
        best.truncate(top_k);
        let atoms = best.iter().map(|(_, id)| self.atom_in(space, *id)).collect::<Result<_>>()?;
        Ok((atoms, boundary))
    }

    /// Whether any atom, in any space, holds attention (the leader proposes no step otherwise).
    pub fn holds_any_attention(&self) -> Result<bool> {
        let first = self.tables.get(Table::Attention).first().map_err(|e| storage(self.dir)(e.into()))?;
        Ok(first.is_some())
    }

    /// The atoms of `space` forgetting could take now: LTI below `lti_below`, not `vlti`, in no
    /// link; in id order after `after`, at most `limit`, looking at most [`MAX_FORGET_SCANNED`]
    /// atom records (the page's `next` then continues the walk).
    pub fn forgettable(
        &self,
        space: &str,
        lti_below: f64,
        after: Option<AtomId>,
        limit: usize,
    ) -> Result<Page<Atom>> {
        self.live(space)?;
        let err = storage(self.dir);
        let start = be(after.map(|a| a.saturating_add(1)).unwrap_or(0));
        let incoming = self.tables.get(Table::Incoming);
        let (mut items, mut scanned, mut last) = (Vec::new(), 0, None);
        for row in self.tables.get(Table::Atoms).range(start..) {
            if items.len() == limit || scanned == MAX_FORGET_SCANNED {
                return Ok(Page { items, next: last.map(encode_cursor) });
            }
            let (key, bytes) = row.map_err(|e| err(e.into()))?;
            scanned += 1;
            last = Some(from_be(&key));
            let atom: Atom = crate::storage::decode(&bytes, "atom").map_err(&err)?;
            if atom.space != space || !is_forgettable(&atom, lti_below) {
                continue;
            }
            if incoming.scan_prefix(be(atom.id)).next().is_none() {
                items.push(atom);
            }
        }
        Ok(Page { items, next: None })
    }
}
