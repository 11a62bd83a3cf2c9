//! Small hand-built graphs with known answers: decay, threshold, cycles, fan normalisation,
//! lateral inhibition, the link-type and confidence filters, the deadline, STI weighting, and
//! the same answer from a compacted index.

use std::time::Instant;

use super::*;
use crate::spreading::test_graph::Graph;

fn params(index: &SpaceIndex, sources: &[AtomId]) -> Spread {
    Spread {
        sources: sources.iter().map(|s| (index.dense_of(*s).unwrap(), 1.0)).collect(),
        max_hops: 3,
        decay: 0.5,
        threshold: 0.0,
        top_k: 100,
        deadline: None,
        fan_normalization: false,
        lateral_inhibition: 0.0,
        link_types: None,
        min_confidence: 0.0,
        cycle_penalty: 1.0,
        sti_weight: 0.0,
        unknown_confidence: 0.5,
        frontier_cap: 10_000,
        explain: true,
    }
}

fn run(index: &SpaceIndex, p: &Spread) -> Outcome {
    spread(index, p, &mut Scratch::default())
}

fn activation(outcome: &Outcome, id: AtomId) -> Option<f64> {
    outcome.hits.iter().find(|h| h.id == id).map(|h| h.activation)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// a -L1- b -L2- c
fn chain() -> (Graph, [AtomId; 5]) {
    let mut g = Graph::default();
    let (a, b, c) = (g.node("a"), g.node("b"), g.node("c"));
    let l1 = g.link("ListLink", &[a, b], 1.0, 1.0);
    let l2 = g.link("ListLink", &[b, c], 1.0, 1.0);
    (g, [a, b, c, l1, l2])
}

#[test]
fn activation_decays_per_hop_and_the_path_names_the_links() {
    let (g, [a, b, c, l1, l2]) = chain();
    let index = g.index();
    let out = run(&index, &params(&index, &[a]));
    assert!(close(activation(&out, b).unwrap(), 0.5));
    assert!(close(activation(&out, l1).unwrap(), 0.5));
    assert!(close(activation(&out, c).unwrap(), 0.25));
    let hit = out.hits.iter().find(|h| h.id == c).unwrap();
    assert_eq!(hit.hops, 2);
    assert_eq!(hit.path, vec![a, l1, b, l2, c]);
    assert!(activation(&out, a).is_none(), "sources are not results");
}

#[test]
fn the_threshold_suppresses_and_explain_says_what() {
    let mut g = Graph::default();
    let (a, b, c) = (g.node("a"), g.node("b"), g.node("c"));
    g.link("ListLink", &[a, b], 1.0, 1.0);
    let l2 = g.link("ListLink", &[b, c], 0.5, 1.0);
    let index = g.index();
    let mut p = params(&index, &[a]);
    (p.decay, p.threshold) = (0.7, 0.3);
    let out = run(&index, &p);
    // b holds 0.7 and passes 0.49 on; through a link of strength 0.5, c receives 0.245.
    assert!(activation(&out, b).is_some());
    assert!(activation(&out, c).is_none());
    let suppressed: Vec<AtomId> = out.suppressed.iter().map(|s| s.id).collect();
    assert_eq!(suppressed, vec![c, l2], "both at 0.245, in id order");
    assert_eq!(out.stats.suppressed, 2);

    // An atom whose share per link is below the threshold passes nothing on.
    p.threshold = 0.5;
    let out = run(&index, &p);
    assert_eq!(
        out.stats.below_threshold, 1,
        "b holds 0.7 and would pass 0.49 < 0.5 (the link a-b is in no link)"
    );
    assert_eq!(out.stats.atoms_touched, 3, "c was never reached");
}

#[test]
fn cycles_are_counted_and_neither_loop_nor_count_twice() {
    let mut g = Graph::default();
    let (a, b, c) = (g.node("a"), g.node("b"), g.node("c"));
    g.link("ListLink", &[a, b], 1.0, 1.0);
    g.link("ListLink", &[b, c], 1.0, 1.0);
    g.link("ListLink", &[c, a], 1.0, 1.0);
    let index = g.index();
    let mut p = params(&index, &[a]);
    p.max_hops = 16;
    let out = run(&index, &p);
    assert!(out.stats.cycles_detected > 0);
    assert!(close(activation(&out, b).unwrap(), 0.5), "what came back around added nothing");
    assert!(close(activation(&out, c).unwrap(), 0.5));
    assert!(out.stats.hops < 16, "the walk ended when nothing new was reached: {} hops", out.stats.hops);

    p.cycle_penalty = 0.0;
    let credited = run(&index, &p);
    assert!(activation(&credited, b).unwrap() > 0.5, "without a penalty returning activation counts once");
}

#[test]
fn fan_normalisation_keeps_hubs_from_flooding() {
    let mut g = Graph::default();
    let hub = g.node("hub");
    let leaves: Vec<AtomId> = (0..9).map(|i| g.node(&format!("leaf{i}"))).collect();
    for leaf in &leaves {
        g.link("ListLink", &[hub, *leaf], 1.0, 1.0);
    }
    let index = g.index();
    let mut p = params(&index, &[hub]);
    p.max_hops = 1;
    assert!(close(activation(&run(&index, &p), leaves[0]).unwrap(), 0.5));
    p.fan_normalization = true;
    let out = run(&index, &p);
    assert!(close(activation(&out, leaves[0]).unwrap(), 0.5 / 10f64.sqrt()), "degree 9: divided by sqrt(10)");
}

#[test]
fn lateral_inhibition_lets_the_strong_suppress_the_weak() {
    let mut g = Graph::default();
    let (a, strong, weak) = (g.node("a"), g.node("strong"), g.node("weak"));
    g.link("ListLink", &[a, strong], 1.0, 1.0);
    g.link("ListLink", &[a, weak], 0.2, 1.0);
    let index = g.index();
    let mut p = params(&index, &[a]);
    p.max_hops = 1;
    p.lateral_inhibition = 0.5;
    let out = run(&index, &p);
    // The hop reached 0.5, 0.5 (strong and its link) and 0.1, 0.1: mean 0.3, minus 0.15 each.
    // (Strengths are kept as f32 in the index.)
    assert!((activation(&out, strong).unwrap() - 0.35).abs() < 1e-6, "{out:?}");
    assert!(activation(&out, weak).is_none());
    assert_eq!(out.stats.suppressed, 2);
}

#[test]
fn link_types_and_min_confidence_choose_the_links_that_carry() {
    let mut g = Graph::default();
    let (a, b, c, d) = (g.node("a"), g.node("b"), g.node("c"), g.node("d"));
    g.link("InheritanceLink", &[a, b], 1.0, 0.9);
    g.link("SimilarityLink", &[a, c], 1.0, 0.9);
    g.link("InheritanceLink", &[a, d], 1.0, 0.2);
    let index = g.index();
    let mut p = params(&index, &[a]);
    p.link_types = Some(vec![index.type_named("InheritanceLink").unwrap()]);
    let out = run(&index, &p);
    assert!(activation(&out, b).is_some() && activation(&out, d).is_some());
    assert!(activation(&out, c).is_none());
    p.min_confidence = 0.5;
    let out = run(&index, &p);
    assert!(activation(&out, b).is_some());
    assert!(activation(&out, d).is_none());
    assert!(close(out.hits.iter().find(|h| h.id == b).unwrap().confidence, 0.9f32 as f64));
}

#[test]
fn a_link_without_evidence_carries_at_the_unknown_confidence() {
    let mut g = Graph::default();
    let (a, b) = (g.node("a"), g.node("b"));
    g.link("ListLink", &[a, b], 1.0, 0.0);
    let index = g.index();
    let mut p = params(&index, &[a]);
    assert!(close(activation(&run(&index, &p), b).unwrap(), 0.25));
    p.unknown_confidence = 0.0;
    assert!(activation(&run(&index, &p), b).is_none(), "0 makes such links inert");
}

#[test]
fn a_passed_deadline_cuts_the_spread_short_and_says_so() {
    let (g, [a, ..]) = chain();
    let index = g.index();
    let mut p = params(&index, &[a]);
    p.deadline = Some(Instant::now());
    let out = run(&index, &p);
    assert!(out.stats.deadline_hit);
    assert_eq!(out.stats.hops, 0);
    assert!(out.hits.is_empty());
}

#[test]
fn sti_weighting_favours_atoms_in_attention() {
    let mut g = Graph::default();
    let (a, b, c) = (g.node("a"), g.node("b"), g.node("c"));
    g.link("ListLink", &[a, b], 1.0, 1.0);
    g.link("ListLink", &[a, c], 1.0, 1.0);
    g.sti(c, 9.0);
    let index = g.index();
    let mut p = params(&index, &[a]);
    p.max_hops = 1;
    let plain = run(&index, &p);
    assert_eq!(activation(&plain, b), activation(&plain, c));
    p.sti_weight = 1.0;
    let weighted = run(&index, &p);
    assert!(close(activation(&weighted, c).unwrap(), 0.5 * 1.9), "1 + 1 x 9/10");
    assert!(close(activation(&weighted, b).unwrap(), 0.5));
}

#[test]
fn a_link_source_passes_to_its_members() {
    let (g, [a, b, _, l1, _]) = chain();
    let index = g.index();
    let mut p = params(&index, &[l1]);
    p.max_hops = 1;
    let out = run(&index, &p);
    assert!(close(activation(&out, a).unwrap(), 0.5));
    assert!(close(activation(&out, b).unwrap(), 0.5));
}

#[test]
fn a_compacted_index_answers_bit_for_bit_the_same() {
    let mut g = Graph::default();
    let nodes: Vec<AtomId> = (0..40).map(|i| g.node(&format!("n{i}"))).collect();
    for i in 0..120usize {
        let (x, y) = (nodes[i * 7 % 40], nodes[(i * 13 + 5) % 40]);
        g.link("ListLink", &[x, y], 0.3 + (i % 7) as f64 / 10.0, 0.8);
    }
    let mut index = g.index();
    let removed = g.atoms.iter().filter(|a| a.id % 11 == 0 && a.id > 40).map(|a| a.id).collect::<Vec<_>>();
    for id in &removed {
        index.remove(*id);
    }
    let compacted = index.compacted();
    let mut p = params(&index, &[nodes[0], nodes[3]]);
    p.fan_normalization = true;
    p.lateral_inhibition = 0.1;
    let before = run(&index, &p);
    p.sources = [nodes[0], nodes[3]].iter().map(|s| (compacted.dense_of(*s).unwrap(), 1.0)).collect();
    let after = run(&compacted, &p);
    assert!(!before.hits.is_empty());
    assert_eq!(before.hits, after.hits);
    assert_eq!(before.stats.cycles_detected, after.stats.cycles_detected);
}

#[test]
fn the_reference_bfs_visits_what_an_unpruned_spread_touches() {
    let mut g = Graph::default();
    let nodes: Vec<AtomId> = (0..60).map(|i| g.node(&format!("n{i}"))).collect();
    for i in 0..90usize {
        g.link(
            "ListLink",
            &[nodes[i * 11 % 60], nodes[(i * 17 + 3) % 60], nodes[(i * 5 + 1) % 60]],
            1.0,
            0.5,
        );
    }
    let index = g.index();
    let p = params(&index, &[nodes[2]]);
    let out = run(&index, &p);
    let visited = bfs(&index, &[index.dense_of(nodes[2]).unwrap()], 3, &mut Scratch::default());
    assert_eq!(out.stats.atoms_touched, visited);
}
