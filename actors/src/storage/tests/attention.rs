//! ECAN attention on real sled files: a step diffuses through links and the Attention table
//! stays exactly the atoms holding attention (through stimulation, steps and deletes); a step
//! reads within its budget and goes round; two replicas applying the same entries hold
//! bit-identical attention; attention fades out.

use tempfile::TempDir;

use super::{at, link, node, result, store};
use crate::command::{AtomRef, AttentionStep, Command, CommandResult, MAX_ATTENTION};
use crate::model::{Atom, AtomId};
use crate::storage::apply::attention::{holds_attention, recorded_sti};
use crate::storage::keys::attention_key;
use crate::storage::reads::GraphReader;
use crate::storage::{decode, StateMachineCore, Table};

fn stimulate(id: AtomId, sti: f64) -> Command {
    Command::Stimulate { id: AtomRef::Id(id), sti, lti: 0.0, vlti: None }
}

fn step(budget: u64) -> Command {
    Command::Attention {
        step: AttentionStep {
            budget,
            diffusion: 0.5,
            sti_rent: 0.1,
            lti_rent: 0.0,
            lti_wage: 1.0,
            focus_boundary: 1.0,
            floor: 0.001,
        },
    }
}

/// Checks the Attention table lists exactly the atoms whose attention is not zero, with their
/// STI; answers how many it lists.
fn table_in_step(core: &StateMachineCore) -> usize {
    let tables = core.db.tables();
    let mut expected = Vec::new();
    for row in tables.get(Table::Atoms).iter() {
        let (_, bytes) = row.unwrap();
        let atom: Atom = decode(&bytes, "atom").unwrap();
        if holds_attention(&atom.av) {
            expected.push((attention_key(&atom.space, atom.id), atom.av.sti.to_bits()));
        }
    }
    expected.sort();
    let listed: Vec<(Vec<u8>, u64)> = tables
        .get(Table::Attention)
        .iter()
        .map(|row| {
            let (key, value) = row.unwrap();
            (key.to_vec(), recorded_sti(&value).to_bits())
        })
        .collect();
    assert_eq!(listed, expected, "the Attention table differs from the atoms' attention values");
    listed.len()
}

#[test]
fn a_hub_passes_sti_only_as_far_as_the_budget_reads() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    // 1 hub; leaves 2..=11; links 12..=21, each ListLink(hub, leaf).
    let mut ops: Vec<Command> = (0..=10).map(|i| node(&format!("n{i}"))).collect();
    ops.extend((1..=10).map(|leaf| link(vec![AtomRef::Op(0), AtomRef::Op(leaf)])));
    core.apply(vec![at(1, "default", "", Command::Batch { ops })]).unwrap();
    core.apply(vec![at(2, "default", "", stimulate(1, 100.0))]).unwrap();
    // Budget 5: the hub (1 read), then link 12 and leaf 2, link 13 and leaf 3.
    let r = result(core.apply(vec![at(3, "default", "", step(5))]).unwrap());
    assert_eq!(r, CommandResult::Attended { visited: 1, changed: 3 });
    assert_eq!(attention(&core, 2).0, 25.0);
    assert_eq!(attention(&core, 3).0, 25.0);
    assert!((4..=11).all(|leaf| attention(&core, leaf).0 == 0.0), "the budget was overrun");
    assert_eq!(attention(&core, 1), (40.0, 1.0));
}

#[test]
fn attention_stays_finite_however_much_is_stimulated() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    core.apply(vec![at(1, "default", "", node("a"))]).unwrap();
    for i in 0..3 {
        let r = result(core.apply(vec![at(2 + i, "default", "", stimulate(1, MAX_ATTENTION))]).unwrap());
        assert!(matches!(r, CommandResult::Atom { .. }), "{r:?}");
    }
    assert_eq!(attention(&core, 1).0, MAX_ATTENTION);
    core.apply(vec![at(9, "default", "", step(10))]).unwrap();
    assert!(attention(&core, 1).0.is_finite());
    // Larger stimuli and budgets are refused before they are proposed.
    assert!(stimulate(1, MAX_ATTENTION * 2.0).validate().is_err());
    assert!(stimulate(1, f64::NAN).validate().is_err());
    assert!(step(crate::command::MAX_ATTENTION_BUDGET + 1).validate().is_err());
    assert!(step(crate::command::MAX_ATTENTION_BUDGET).validate().is_ok());
}

fn attention(core: &StateMachineCore, id: AtomId) -> (f64, f64) {
    let bytes = core.db.tables().get(Table::Atoms).get(crate::storage::be(id)).unwrap().unwrap();
    let atom: Atom = decode(&bytes, "atom").unwrap();
    (atom.av.sti, atom.av.lti)
}

#[test]
fn a_step_diffuses_through_links_and_the_table_follows_every_change() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    // 1 cat, 2 dog, 3 = ListLink(cat, dog), 4 mouse (alone).
    let graph = Command::Batch {
        ops: vec![node("cat"), node("dog"), link(vec![AtomRef::Op(0), AtomRef::Op(1)]), node("mouse")],
    };
    core.apply(vec![at(1, "default", "", graph)]).unwrap();
    assert_eq!(table_in_step(&core), 0);
    core.apply(vec![at(2, "default", "", stimulate(1, 10.0)), at(3, "default", "", stimulate(4, 10.0))])
        .unwrap();
    assert_eq!(table_in_step(&core), 2);

    let r = result(core.apply(vec![at(4, "default", "", step(100))]).unwrap());
    assert_eq!(r, CommandResult::Attended { visited: 2, changed: 3 });
    // cat pays 1 of rent and passes 5 to dog through the link; mouse has nowhere to go.
    assert_eq!(attention(&core, 1), (4.0, 1.0));
    assert_eq!(attention(&core, 2), (5.0, 0.0));
    assert_eq!(attention(&core, 4), (9.0, 1.0));
    assert_eq!(table_in_step(&core), 3);

    let reader = GraphReader::new(core.clone());
    let (focus, boundary) = reader.with(|v| v.focus("default", 2)).unwrap();
    assert_eq!(boundary, 1.0);
    assert_eq!(focus.iter().map(|a| a.id).collect::<Vec<_>>(), vec![4, 2]);

    // Deleting cat removes it and the link from the table; taking STI away to 0 too.
    core.apply(vec![at(5, "default", "", Command::DeleteAtom { id: AtomRef::Id(1) })]).unwrap();
    core.apply(vec![at(6, "default", "", stimulate(2, -5.0))]).unwrap();
    assert_eq!(table_in_step(&core), 1);
    assert_eq!(reader.with(|v| v.focus("default", 10)).unwrap().0.len(), 1);
    assert!(reader.with(|v| v.focus("elsewhere", 10)).unwrap().0.is_empty(), "focus keeps to its space");
}

#[test]
fn a_step_reads_within_its_budget_and_goes_round() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let nodes = Command::Batch { ops: (0..5).map(|i| node(&format!("n{i}"))).collect() };
    core.apply(vec![at(1, "default", "", nodes)]).unwrap();
    for id in 1..=5 {
        core.apply(vec![at(1 + id, "default", "", stimulate(id, 0.5))]).unwrap();
    }
    let visited: Vec<u64> = (0..4)
        .map(|i| match result(core.apply(vec![at(10 + i, "default", "", step(2))]).unwrap()) {
            CommandResult::Attended { visited, .. } => visited,
            other => panic!("{other:?}"),
        })
        .collect();
    // 1 2 | 3 4 | 5, then round to 1 | 2 3: every step spends its whole budget.
    assert_eq!(visited, vec![2, 2, 2, 2]);
    let rents = [2, 2, 2, 1, 1];
    for (id, paid) in (1..=5).zip(rents) {
        assert_eq!(attention(&core, id).0, 0.5 * 0.9f64.powi(paid), "atom {id}");
    }
    table_in_step(&core);
}

#[test]
fn replicas_applying_the_same_entries_hold_identical_attention_which_fades_out() {
    let dirs = [TempDir::new().unwrap(), TempDir::new().unwrap()];
    let cores: Vec<_> = dirs.iter().map(|d| store(d).core).collect();
    // A ring of 30 nodes, each linked to the next, with uneven link strengths.
    let mut ops: Vec<Command> = (0..30).map(|i| node(&format!("r{i}"))).collect();
    for i in 0..30 {
        ops.push(Command::AddLink {
            atom_type: "SimilarityLink".into(),
            outgoing: vec![AtomRef::Op(i), AtomRef::Op((i + 1) % 30)],
            tv: Some(crate::model::TruthValue { strength: 0.1 + (i as f64) / 40.0, confidence: 0.5 }),
            merge: crate::model::Merge::Latest,
        });
    }
    let mut entries = vec![at(1, "default", "", Command::Batch { ops })];
    for (i, id) in [1u64, 7, 13, 22].into_iter().enumerate() {
        entries.push(at(2 + i as u64, "default", "", stimulate(id, 100.0 / (i as f64 + 1.0))));
    }
    entries.extend((0..3000).map(|i| at(10 + i, "default", "", step(25))));
    // One replica applies entry by entry, the other in runs of 1, 7 and 64 entries (several
    // steps through one write overlay, as a catch-up does).
    for (i, entry) in entries.iter().enumerate() {
        cores[0].apply(vec![entry.clone()]).unwrap();
        if i == 20 {
            // Part way: diffusion brought atoms nobody stimulated into the focus.
            let focus = GraphReader::new(cores[0].clone()).with(|v| v.focus("default", 30)).unwrap().0;
            assert!(focus.iter().any(|a| ![1, 7, 13, 22].contains(&a.id)), "{focus:?}");
        }
    }
    let mut rest = &entries[..];
    for run in [1, 7, 64].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(run.min(rest.len()));
        cores[1].apply(now.to_vec()).unwrap();
        rest = later;
    }
    let cursor =
        |core: &StateMachineCore| core.db.tables().get(Table::Meta).get(b"attention_cursor").unwrap();
    assert_eq!(cursor(&cores[0]), cursor(&cores[1]), "the replicas' step cursors differ");
    let digests: Vec<_> = cores.iter().map(|c| c.digest().unwrap()).collect();
    assert_eq!(digests[0], digests[1], "two replicas disagree after the same attention steps");
    for id in 1..=60 {
        assert_eq!(attention(&cores[0], id).0.to_bits(), attention(&cores[1], id).0.to_bits());
    }
    // 3000 steps of 10% rent: STI is gone; the LTI wages earned in the focus stay (no LTI rent).
    assert!((1..=60).all(|id| attention(&cores[0], id).0 == 0.0), "STI did not fade out");
    assert!(table_in_step(&cores[0]) > 0, "no atom earned a wage");
    assert!(GraphReader::new(cores[0].clone()).with(|v| v.focus("default", 5)).unwrap().0.is_empty());
}

#[test]
fn forgetting_takes_only_what_is_still_forgettable_and_never_cascades() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    // 1 a, 2 b, 3 c, 4 d, 5 = ListLink(a, d).
    let graph = Command::Batch {
        ops: vec![node("a"), node("b"), node("c"), node("d"), link(vec![AtomRef::Op(0), AtomRef::Op(3)])],
    };
    core.apply(vec![at(1, "default", "", graph)]).unwrap();
    let keep_forever = Command::Stimulate { id: AtomRef::Id(2), sti: 0.0, lti: 0.0, vlti: Some(true) };
    let attended = Command::Stimulate { id: AtomRef::Id(3), sti: 2.0, lti: 5.0, vlti: None };
    core.apply(vec![at(2, "default", "", keep_forever), at(3, "default", "", attended)]).unwrap();

    let reader = GraphReader::new(core.clone());
    let listed = reader.with(|v| v.forgettable("default", 1.0, None, 100)).unwrap();
    assert_eq!(listed.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![5], "only the link is free");
    assert!(reader.with(|v| v.forgettable("other", 1.0, None, 100)).unwrap().items.is_empty());

    let forget = |ids: Vec<AtomId>| Command::Forget { ids, lti_below: 1.0 };
    let r = result(core.apply(vec![at(4, "default", "", forget(vec![999, 5, 4, 3, 2, 1]))]).unwrap());
    assert_eq!(r, CommandResult::Forgotten { removed: vec![5], kept: vec![1, 2, 3, 4, 999] });
    // With the link gone, its members are free; b (vlti) and c (LTI 5) stay.
    let listed = reader.with(|v| v.forgettable("default", 1.0, None, 100)).unwrap();
    assert_eq!(listed.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1, 4]);
    let r = result(core.apply(vec![at(5, "default", "", forget(vec![1, 2, 3, 4]))]).unwrap());
    assert_eq!(r, CommandResult::Forgotten { removed: vec![1, 4], kept: vec![2, 3] });
    assert_eq!(table_in_step(&core), 1, "c's attention row stays, nothing else had one");
    // Another space's command forgets nothing here.
    let r = result(core.apply(vec![at(6, "elsewhere", "", forget(vec![2, 3]))]).unwrap());
    assert_eq!(r, CommandResult::Forgotten { removed: vec![], kept: vec![2, 3] });
    // Taking vlti away makes b forgettable.
    let unmark = Command::Stimulate { id: AtomRef::Id(2), sti: 0.0, lti: 0.0, vlti: Some(false) };
    core.apply(vec![at(7, "default", "", unmark)]).unwrap();
    let listed = reader.with(|v| v.forgettable("default", 1.0, None, 1)).unwrap();
    assert_eq!(listed.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2]);
}
