//! Structural embeddings and clustering benches: FastRP (64 dimensions, the default four
//! iterations) over the seeded power-law hypergraph (10k atoms; 1M with
//! `COGRAFT_BENCH_ATOMS=1m`) on one and two threads, and k-means (k = 16, at most 20 rounds)
//! over 20k planted unit vectors of 384 dimensions with the node's product (ggml with the
//! `inference` feature) beside the plain Rust product in the same run.

use cograft_actors::similarity::fastrp::{self, Params, DEFAULT_WEIGHTS};
use cograft_actors::similarity::kmeans::{self, Params as KMeans};
use cograft_actors::similarity::scan::{self, normalised};
use cograft_actors::similarity::Matrix;
use cograft_actors::spreading::indexes::Builder;
use cograft_actors::spreading::synthetic::{generate, Draw, Shape};
use criterion::{criterion_group, criterion_main, Criterion};

fn structure(c: &mut Criterion) {
    let shape = match std::env::var("COGRAFT_BENCH_ATOMS").as_deref() {
        Ok("1m") => Shape::million(),
        _ => Shape::ten_thousand(),
    };
    let mut builder = Builder::default();
    generate(shape, |atom| builder.push(&atom).expect("the generator makes a valid graph"));
    let graph = builder.finish(0);
    let space = graph.space(cograft_actors::model::DEFAULT_SPACE).expect("atoms");
    let params = Params { dim: 64, weights: DEFAULT_WEIGHTS.to_vec(), seed: 0 };
    let mut group = c.benchmark_group(format!("fastrp_{}_atoms", shape.nodes + shape.links));
    group.sample_size(10);
    for threads in [1, 2] {
        group.bench_function(format!("dim_64_threads_{threads}"), |b| {
            b.iter(|| fastrp::embed(space, &params, threads))
        });
    }
    group.finish();

    let (rows, dim, groups) = (20_000, 384, 16);
    let mut draw = Draw::new(11);
    let mut data = Vec::with_capacity(rows * dim);
    for i in 0..rows {
        let point: Vec<f32> = (0..dim)
            .map(|c| (draw.unit() as f32 - 0.5) * 0.8 + if c % groups == i % groups { 1.0 } else { 0.0 })
            .collect();
        data.extend(normalised(&point));
    }
    let points = Matrix { data: &data, rows, cols: dim };
    let params = KMeans { k: groups, max_iterations: 20, seed: 1, deadline: None };
    let mut group = c.benchmark_group("kmeans_20k_x_384_k16");
    group.sample_size(10);
    group.bench_function(cograft_actors::similarity::PRODUCT_ENGINE, |b| {
        b.iter(|| kmeans::cluster(points, &params, 2).expect("valid parameters"))
    });
    group.bench_function("reference_rust", |b| {
        let plain = |base: Matrix<'_>, queries: Matrix<'_>, out: &mut [f32]| -> Result<(), String> {
            scan::dot_products(base, queries, out);
            Ok(())
        };
        b.iter(|| kmeans::cluster_with(points, &params, &plain).expect("valid parameters"))
    });
    group.finish();
}

criterion_group!(benches, structure);
criterion_main!(benches);
