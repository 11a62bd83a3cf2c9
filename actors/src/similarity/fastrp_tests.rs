//! FastRP on hand-built graphs: a planted community shares a direction, the result does not
//! depend on the thread count, isolated and removed atoms get no vector, and bad parameters
//! are refused.

use super::*;
use crate::spreading::test_graph::Graph;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn params(dim: usize) -> Params {
    Params { dim, weights: DEFAULT_WEIGHTS.to_vec(), seed: 0 }
}

/// Two communities of `size` nodes: each pair inside one is linked with probability 1/2, and
/// three links join them. Answers the graph and the nodes of each.
fn two_communities(size: usize) -> (Graph, Vec<AtomId>, Vec<AtomId>) {
    let mut g = Graph::default();
    let a: Vec<AtomId> = (0..size).map(|i| g.node(&format!("a{i}"))).collect();
    let b: Vec<AtomId> = (0..size).map(|i| g.node(&format!("b{i}"))).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for group in [&a, &b] {
        for i in 0..size {
            for j in i + 1..size {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x % 2 == 0 {
                    g.link("SimilarityLink", &[group[i], group[j]], 1.0, 1.0);
                }
            }
        }
    }
    for k in 0..3 {
        g.link("SimilarityLink", &[a[k], b[k + 1]], 1.0, 1.0);
    }
    (g, a, b)
}

#[test]
fn a_planted_community_shares_a_direction() {
    let (g, a, b) = two_communities(12);
    let index = g.index();
    let out = embed(&index, &params(64), 2);
    let row = |id: AtomId| out.vector(out.ids.iter().position(|x| *x == id).unwrap());
    let nodes: Vec<(AtomId, bool)> =
        a.iter().map(|x| (*x, true)).chain(b.iter().map(|x| (*x, false))).collect();
    let mut margins = Vec::new();
    for &(id, in_a) in &nodes {
        // Its nearest other node is of its own community.
        let nearest = nodes
            .iter()
            .filter(|(other, _)| *other != id)
            .max_by(|x, y| cosine(row(id), row(x.0)).total_cmp(&cosine(row(id), row(y.0))))
            .unwrap();
        assert_eq!(nearest.1, in_a, "atom {id}'s nearest node {} is of the other community", nearest.0);
        // And on average its own community is closer (the bridged atoms sit between the two,
        // so the margin is asked of the whole community below).
        let mean = |same: bool| {
            let peers: Vec<f32> = nodes
                .iter()
                .filter(|(other, side)| *other != id && (*side == in_a) == same)
                .map(|(other, _)| cosine(row(id), row(*other)))
                .collect();
            peers.iter().sum::<f32>() / peers.len() as f32
        };
        let (inside, across) = (mean(true), mean(false));
        assert!(inside > across, "atom {id}: mean cosine {inside} inside, {across} across");
        margins.push(inside - across);
    }
    let margin = margins.iter().sum::<f32>() / margins.len() as f32;
    assert!(margin > 0.25, "the communities are {margin} apart in mean cosine");
}

#[test]
fn the_result_depends_on_neither_threads_nor_anything_but_the_graph_and_seed() {
    let (g, _, _) = two_communities(10);
    let index = g.index();
    let one = embed(&index, &params(32), 1);
    let three = embed(&index, &params(32), 3);
    assert_eq!(one.ids, three.ids);
    assert_eq!(one.vectors, three.vectors, "bit-identical whatever the thread count");
    assert_eq!(one.vectors, embed(&index, &params(32), 2).vectors, "and run after run");
    let other_seed = embed(&index, &Params { seed: 7, ..params(32) }, 1);
    assert_ne!(one.vectors, other_seed.vectors, "the seed draws other starts");
    for r in 0..one.ids.len() {
        let norm: f32 = one.vector(r).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4, "row {r} has squared norm {norm}");
    }
}

#[test]
fn isolated_and_removed_atoms_get_no_vector_and_links_get_one() {
    let mut g = Graph::default();
    let (x, y, z, lone) = (g.node("x"), g.node("y"), g.node("z"), g.node("lone"));
    let xy = g.link("ListLink", &[x, y], 1.0, 1.0);
    let yz = g.link("ListLink", &[y, z], 1.0, 1.0);
    let mut index = g.index();
    let out = embed(&index, &params(16), 2);
    assert_eq!(out.ids, vec![x, y, z, xy, yz]);
    assert_eq!(out.isolated, vec![lone]);
    assert_eq!(out.vectors.len(), 5 * 16);

    // Removing yz leaves z without structure; the removed link is nowhere.
    index.remove(yz);
    let out = embed(&index, &params(16), 2);
    assert_eq!(out.ids, vec![x, y, xy]);
    assert_eq!(out.isolated, vec![z, lone]);
}

#[test]
fn bad_parameters_are_refused_and_model_ids_name_what_was_built() {
    assert!(params(64).validate().is_ok());
    assert!(params(1).validate().unwrap_err().contains("dim"));
    assert!(params(MAX_DIM + 1).validate().unwrap_err().contains("dim"));
    assert!(Params { weights: vec![], ..params(8) }.validate().unwrap_err().contains("weights"));
    assert!(Params { weights: vec![0.0, 0.0], ..params(8) }.validate().unwrap_err().contains("all zero"));
    assert!(Params { weights: vec![1.0, f32::NAN], ..params(8) }.validate().is_err());
    assert!(Params { weights: vec![1.0, f32::MAX], ..params(8) }.validate().is_err());
    assert!(Params { weights: vec![-1.0, 2.0], ..params(8) }.validate().is_err());
    assert!(Params { weights: vec![1.0; MAX_ITERATIONS + 1], ..params(8) }.validate().is_err());
    assert_eq!(params(64).model_id(), "fastrp-64");
    let seeded = Params { seed: 3, ..params(64) }.model_id();
    assert!(seeded.starts_with("fastrp-64-") && seeded.len() == "fastrp-64-".len() + 8, "{seeded}");
    assert_ne!(seeded, Params { weights: vec![1.0, 1.0], ..params(64) }.model_id());
    crate::command::validate_model_id(&seeded).unwrap();
}
