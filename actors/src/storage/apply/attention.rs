//! ECAN attention in apply. The Attention table lists every atom whose attention value is not
//! zero, with its STI, kept in step with the atom records ([`index_attention`]). The leader's
//! [`AttentionStep`] visits a bounded number of those atoms, round-robin from where the last
//! step stopped, and for each: rent takes a share of its STI and of its LTI, an atom in the
//! attentional focus earns an LTI wage and passes a share of its STI to its neighbours. The
//! step is synchronous: every change is computed from the values before the step ([`plan`], a
//! pure function), then written in id order, so every replica computes bit-identical values.
//!
//! Forgetting ([`is_forgettable`]) takes atoms whose LTI fell below a floor and that are not
//! marked `vlti`, only when asked (`Command::Forget`, listed first by a dry run) and never
//! through a cascade: an atom some link contains stays until that link goes.
//!
//! An atom's neighbours are the other members of every link that contains it and, for a link,
//! its own members; what it passes on is split in proportion to the strength of the link it
//! goes through (how true the relation is; confidence, how much evidence there is, does not
//! decide how far attention flows). An atom with nowhere to diffuse keeps its STI.

use std::collections::BTreeMap;

use super::super::events::{Change, ChangeKind};
use super::super::keys::attention_key;
use super::super::staged::Staged;
use super::super::{be, encode, from_be, Table};
use super::load;
use crate::command::{AttentionStep, CommandResult, MAX_ATTENTION};
use crate::model::{Atom, AtomId, AttentionValue};

/// In Meta: the Attention key the next step starts after (empty: from the start).
const META_ATTENTION_CURSOR: &[u8] = b"attention_cursor";
/// In Meta: the last step's parameters (its focus boundary answers focus reads).
pub const META_ATTENTION_STEP: &[u8] = b"attention_step";

/// Whether an attention value puts its atom in the Attention table.
pub fn holds_attention(av: &AttentionValue) -> bool {
    av.sti != 0.0 || av.lti != 0.0
}

/// Keeps the Attention table in step with `atom`'s attention value.
pub(super) fn index_attention(st: &mut Staged, atom: &Atom) {
    let key = attention_key(&atom.space, atom.id);
    if holds_attention(&atom.av) {
        st.put(Table::Attention, key, atom.av.sti.to_bits().to_be_bytes());
    } else {
        st.remove(Table::Attention, key);
    }
}

/// Whether forgetting may take `atom` (links aside): its LTI is below `lti_below` and it is not
/// marked keep-forever (`vlti`).
pub fn is_forgettable(atom: &Atom, lti_below: f64) -> bool {
    !atom.av.vlti && atom.av.lti < lti_below
}

/// The STI an Attention row records.
pub fn recorded_sti(value: &[u8]) -> f64 {
    f64::from_bits(from_be(value))
}

/// One atom a step visits: its attention before the step and the neighbours it may diffuse to
/// (with the strength of the link between; an id may appear once per link).
#[derive(Clone, Debug, PartialEq)]
pub struct Visit {
    pub id: AtomId,
    pub av: AttentionValue,
    pub neighbours: Vec<(AtomId, f64)>,
}

/// What a step adds to one atom's STI and LTI.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Delta {
    pub sti: f64,
    pub lti: f64,
}

/// Whether an atom with this STI is in the attentional focus.
pub fn in_focus(sti: f64, boundary: f64) -> bool {
    sti > 0.0 && sti >= boundary
}

/// The changes one step makes, by atom id, from the visited atoms' values before the step.
pub fn plan(visits: &[Visit], step: &AttentionStep) -> BTreeMap<AtomId, Delta> {
    let mut deltas: BTreeMap<AtomId, Delta> = BTreeMap::new();
    for visit in visits {
        let AttentionValue { sti, lti, .. } = visit.av;
        let focused = in_focus(sti, step.focus_boundary);
        let total_weight: f64 = visit.neighbours.iter().map(|(_, w)| w).sum();
        let passed = if focused && total_weight > 0.0 { sti * step.diffusion } else { 0.0 };
        let own = deltas.entry(visit.id).or_default();
        own.sti -= sti * step.sti_rent + passed;
        own.lti -= lti * step.lti_rent;
        if focused {
            own.lti += step.lti_wage;
        }
        if passed > 0.0 {
            for (neighbour, weight) in &visit.neighbours {
                deltas.entry(*neighbour).or_default().sti += passed * weight / total_weight;
            }
        }
    }
    deltas
}

/// `value` within ±[`MAX_ATTENTION`].
pub fn bounded(value: f64) -> f64 {
    value.clamp(-MAX_ATTENTION, MAX_ATTENTION)
}

/// `value` with magnitudes below `floor` made 0.
fn floored(value: f64, floor: f64) -> f64 {
    if value.abs() < floor {
        0.0
    } else {
        value
    }
}

/// Runs one step: gathers the visits within the budget, plans, writes the changed atoms.
pub(super) fn step(st: &mut Staged, step: &AttentionStep) -> sled::Result<CommandResult> {
    st.put(Table::Meta, META_ATTENTION_STEP.to_vec(), encode(step));
    let (visits, cursor) = gather(st, step)?;
    st.put(Table::Meta, META_ATTENTION_CURSOR.to_vec(), encode(&cursor));
    let mut changed = 0;
    for (id, delta) in plan(&visits, step) {
        let Some(mut atom) = load::<Atom>(st, Table::Atoms, &be(id))? else { continue };
        let before = atom.av;
        atom.av.sti = floored(bounded(before.sti + delta.sti), step.floor);
        atom.av.lti = floored(bounded(before.lti + delta.lti), step.floor);
        if atom.av != before {
            // Attention changes every step: `updated_ms` keeps dating the atom's content.
            st.put(Table::Atoms, be(id), encode(&atom));
            index_attention(st, &atom);
            st.changed(Change { space: atom.space.clone(), id, kind: ChangeKind::Updated });
            changed += 1;
        }
    }
    Ok(CommandResult::Attended { visited: visits.len() as u64, changed })
}

/// The atoms this step visits, in key order from the cursor to the end of the table and then
/// from its start, each at most once, reading at most `step.budget` atom records (an atom, and
/// each link and member it diffuses to, count one each); and the cursor for the next step
/// (empty when this one visited every row: the next starts from the top).
fn gather(st: &Staged, step: &AttentionStep) -> sled::Result<(Vec<Visit>, Vec<u8>)> {
    let budget = step.budget as usize;
    let cursor: Vec<u8> = load(st, Table::Meta, META_ATTENTION_CURSOR)?.unwrap_or_default();
    let (mut visits, mut read, mut last) = (Vec::new(), 0, Vec::new());
    let mut from = cursor.clone();
    let mut wrapped = cursor.is_empty();
    loop {
        let want = budget - read;
        let rows = st.scan_after(Table::Attention, &from, want)?;
        for (key, _) in &rows {
            if wrapped && !cursor.is_empty() && key.as_slice() > cursor.as_slice() {
                // Round to where this step began: every row was visited.
                return Ok((visits, Vec::new()));
            }
            if read >= budget {
                return Ok((visits, last));
            }
            let id = from_be(&key[key.len() - 8..]);
            read += 1;
            last = key.clone();
            let Some(atom) = load::<Atom>(st, Table::Atoms, &be(id))? else { continue };
            let neighbours = if in_focus(atom.av.sti, step.focus_boundary) && step.diffusion > 0.0 {
                neighbours(st, &atom, budget, &mut read)?
            } else {
                Vec::new()
            };
            visits.push(Visit { id, av: atom.av, neighbours });
        }
        if rows.len() == want {
            // `want` rows cost at least `want` reads: the budget is spent.
            return Ok((visits, last));
        }
        if wrapped {
            return Ok((visits, Vec::new()));
        }
        // The end of the table: go on from its start, up to the cursor.
        wrapped = true;
        from = Vec::new();
    }
}

/// `atom`'s neighbours (see the module's comment), while `read` stays within `budget`.
fn neighbours(st: &Staged, atom: &Atom, budget: usize, read: &mut usize) -> sled::Result<Vec<(AtomId, f64)>> {
    let mut found = Vec::new();
    let mut through = |link: &Atom, read: &mut usize| {
        for member in link.outgoing().iter().filter(|m| **m != atom.id) {
            if *read >= budget {
                return;
            }
            *read += 1;
            found.push((*member, link.tv.strength));
        }
    };
    through(atom, read);
    for (key, _) in st.scan_prefix(Table::Incoming, &be(atom.id), budget.saturating_sub(*read))? {
        if *read >= budget {
            break;
        }
        *read += 1;
        if let Some(link) = load::<Atom>(st, Table::Atoms, &key[8..])? {
            through(&link, read);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(id: AtomId, sti: f64, lti: f64, neighbours: &[(AtomId, f64)]) -> Visit {
        Visit { id, av: AttentionValue { sti, lti, vlti: false }, neighbours: neighbours.to_vec() }
    }

    fn step() -> AttentionStep {
        AttentionStep {
            budget: 100,
            diffusion: 0.5,
            sti_rent: 0.1,
            lti_rent: 0.5,
            lti_wage: 1.0,
            focus_boundary: 5.0,
            floor: 0.0,
        }
    }

    #[test]
    fn an_atom_in_focus_pays_rent_earns_its_wage_and_passes_sti_on_by_link_strength() {
        let deltas = plan(&[visit(1, 10.0, 4.0, &[(2, 1.0), (3, 0.25), (3, 0.75)])], &step());
        // Rent 1.0 and 5.0 passed on; LTI loses half and earns 1.
        assert_eq!(deltas[&1], Delta { sti: -6.0, lti: -1.0 });
        // 5.0 split by weight 1.0 : (0.25 + 0.75).
        assert_eq!(deltas[&2], Delta { sti: 2.5, lti: 0.0 });
        assert_eq!(deltas[&3], Delta { sti: 2.5, lti: 0.0 });
    }

    #[test]
    fn atoms_below_the_focus_boundary_only_pay_rent() {
        let deltas = plan(&[visit(1, 4.0, 2.0, &[(2, 1.0)])], &step());
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[&1], Delta { sti: -0.4, lti: -1.0 });
        // Negative STI (stimulation may take it away) decays towards 0 and never diffuses.
        let deltas = plan(&[visit(1, -10.0, 0.0, &[(2, 1.0)])], &step());
        assert_eq!(deltas[&1].sti, 1.0);
        assert!(!deltas.contains_key(&2));
    }

    #[test]
    fn an_atom_with_nowhere_to_go_keeps_what_it_would_have_passed_on() {
        let deltas = plan(&[visit(1, 10.0, 0.0, &[]), visit(2, 10.0, 0.0, &[(3, 0.0)])], &step());
        assert_eq!(deltas[&1].sti, -1.0);
        assert_eq!(deltas[&2].sti, -1.0);
        assert!(!deltas.contains_key(&3));
    }

    #[test]
    fn diffusion_moves_sti_and_only_rent_removes_it() {
        let visits = [
            visit(1, 10.0, 0.0, &[(2, 1.0), (3, 0.5)]),
            visit(2, 8.0, 0.0, &[(1, 1.0)]),
            visit(3, 1.0, 0.0, &[(1, 0.5)]),
        ];
        let deltas = plan(&visits, &step());
        let before: f64 = visits.iter().map(|v| v.av.sti).sum();
        let change: f64 = deltas.values().map(|d| d.sti).sum();
        assert!((change + before * step().sti_rent).abs() < 1e-12, "{change}");
    }

    #[test]
    fn a_step_spends_the_values_before_it_not_what_it_passes_on() {
        // Atom 2 passes on half of its own 6, not of 6 plus what atom 1 passes it.
        let deltas = plan(&[visit(1, 10.0, 0.0, &[(2, 1.0)]), visit(2, 6.0, 0.0, &[(1, 1.0)])], &step());
        assert_eq!(deltas[&1].sti, -1.0 - 5.0 + 3.0);
        assert!((deltas[&2].sti - (5.0 - 0.6 - 3.0)).abs() < 1e-12, "{:?}", deltas[&2]);
    }

    #[test]
    fn small_values_fade_to_zero() {
        assert_eq!(floored(0.0009, 0.001), 0.0);
        assert_eq!(floored(-0.0009, 0.001), 0.0);
        assert_eq!(floored(0.001, 0.001), 0.001);
    }
}
