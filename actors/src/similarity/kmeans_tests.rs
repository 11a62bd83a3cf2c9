//! k-means on planted, separable clusters; the same clustering from ggml's products and the
//! plain Rust reference, run after run; degenerate inputs.

use super::*;
use crate::similarity::scan::{self, normalised};

/// `groups` clusters of `each` unit points in `dim` dimensions: group g lies around the axis
/// `g`, each point that axis plus noise of at most `noise` per component. Interleaved, so a
/// group's points are not contiguous.
fn planted(groups: usize, each: usize, dim: usize, noise: f32) -> (Vec<f32>, Vec<usize>) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut data = Vec::new();
    let mut truth = Vec::new();
    for i in 0..groups * each {
        let g = i % groups;
        let point: Vec<f32> = (0..dim)
            .map(|c| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let jitter = ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * noise;
                jitter + if c == g { 1.0 } else { 0.0 }
            })
            .collect();
        data.extend(normalised(&point));
        truth.push(g);
    }
    (data, truth)
}

fn reference(base: Matrix<'_>, queries: Matrix<'_>, out: &mut [f32]) -> Result<(), String> {
    scan::dot_products(base, queries, out);
    Ok(())
}

#[test]
fn separable_clusters_are_found_whole() {
    let (data, truth) = planted(5, 40, 24, 0.3);
    let points = Matrix { data: &data, rows: truth.len(), cols: 24 };
    let params = Params { k: 5, max_iterations: DEFAULT_ITERATIONS, seed: 1, deadline: None };
    let out = cluster(points, &params, 2).unwrap();
    assert!(out.converged, "stopped by the round limit after {} rounds", out.iterations);
    // Every planted group is one cluster, and no cluster holds two groups.
    let mut cluster_of_group = vec![None; 5];
    for (p, g) in truth.iter().enumerate() {
        let c = out.assignment[p];
        match cluster_of_group[*g] {
            None => cluster_of_group[*g] = Some(c),
            Some(seen) => assert_eq!(seen, c, "group {g} is split between clusters {seen} and {c}"),
        }
    }
    let mut clusters: Vec<u32> = cluster_of_group.iter().map(|c| c.unwrap()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    assert_eq!(clusters.len(), 5, "two groups share a cluster: {cluster_of_group:?}");
    assert_eq!(out.sizes(5), vec![40; 5]);
    assert!(out.scores.iter().all(|s| *s > 0.5), "a point is far from its centroid");
    for c in out.centroids.chunks_exact(24) {
        let norm: f32 = c.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn ggml_and_the_rust_reference_cluster_alike_run_after_run() {
    let (data, truth) = planted(8, 300, 64, 0.6);
    let points = Matrix { data: &data, rows: truth.len(), cols: 64 };
    let params = Params { k: 8, max_iterations: 100, seed: 42, deadline: None };
    let engine = cluster(points, &params, 2).unwrap();
    let plain = cluster_with(points, &params, &reference).unwrap();
    assert_eq!(engine.assignment, plain.assignment);
    assert_eq!(engine.iterations, plain.iterations);
    for (a, b) in engine.centroids.iter().zip(&plain.centroids) {
        assert!((a - b).abs() < 1e-4, "centroids differ: {a} vs {b}");
    }
    assert_eq!(engine, cluster(points, &params, 1).unwrap(), "the thread count changes nothing");
    let reseeded = cluster(points, &Params { seed: 43, ..params.clone() }, 2).unwrap();
    assert_eq!(reseeded.sizes(8).iter().sum::<usize>(), 2400);
}

#[test]
fn degenerate_inputs_are_refused_or_still_give_k_clusters() {
    let (data, _) = planted(2, 3, 4, 0.0);
    let points = Matrix { data: &data, rows: 6, cols: 4 };
    let p = |k, max_iterations| Params { k, max_iterations, seed: 0, deadline: None };
    assert!(cluster(points, &p(0, 10), 1).unwrap_err().contains("k must be"));
    assert!(cluster(points, &p(7, 10), 1).unwrap_err().contains("only 6 vectors"));
    assert!(cluster(points, &p(2, 0), 1).unwrap_err().contains("max_iterations"));
    // Only two distinct points, four clusters: the spare centroids take points anyway.
    let out = cluster(points, &p(4, 10), 1).unwrap();
    assert_eq!(out.assignment.len(), 6);
    assert_eq!(out.sizes(4).iter().sum::<usize>(), 6);
    // As many clusters as points: each point alone.
    let (data, _) = planted(3, 1, 4, 0.1);
    let out = cluster(Matrix { data: &data, rows: 3, cols: 4 }, &p(3, 10), 1).unwrap();
    let mut sizes = out.sizes(3);
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1, 1, 1]);
}

#[test]
fn a_passed_deadline_stops_after_the_first_round_and_says_so() {
    let (data, truth) = planted(8, 300, 64, 0.9);
    let points = Matrix { data: &data, rows: truth.len(), cols: 64 };
    let past = Some(std::time::Instant::now());
    let out = cluster(points, &Params { k: 8, max_iterations: 100, seed: 3, deadline: past }, 1).unwrap();
    assert_eq!(out.iterations, 1);
    assert!(out.deadline_hit && !out.converged);
    assert!(out.assignment.iter().all(|c| *c < 8), "every point has a cluster");
    let free = cluster(points, &Params { k: 8, max_iterations: 100, seed: 3, deadline: None }, 1).unwrap();
    assert!(free.iterations > 1 && !free.deadline_hit);
}
