//! Spreading benches over the seeded power-law hypergraph (10k atoms; 1M with
//! `COGRAFT_BENCH_ATOMS=1m`), each beside its reference in the same run: a spread from one and
//! from five sources with the default parameters, and an unpruned two-hop spread against a
//! plain BFS that visits the same atoms. (`cograft bench spread` reports the percentiles.)

use cograft_actors::spreading::activation::{bfs, spread, Scratch, Spread};
use cograft_actors::spreading::index::Dense;
use cograft_actors::spreading::indexes::Builder;
use cograft_actors::spreading::params::Parameters;
use cograft_actors::spreading::synthetic::{generate, Draw, Shape};
use criterion::{criterion_group, criterion_main, Criterion};

fn spreading(c: &mut Criterion) {
    let shape = match std::env::var("COGRAFT_BENCH_ATOMS").as_deref() {
        Ok("1m") => Shape::million(),
        _ => Shape::ten_thousand(),
    };
    let mut builder = Builder::default();
    generate(shape, |atom| builder.push(&atom).expect("the generator makes a valid graph"));
    let graph = builder.finish(0);
    let space = graph.space(cograft_actors::model::DEFAULT_SPACE).expect("atoms");
    let linked: Vec<Dense> = (0..space.len() as Dense)
        .filter(|d| !space.is_link(*d) && space.incident(*d).next().is_some())
        .collect();
    let mut draw = Draw::new(7);
    let mut pick = move |n: usize| -> Vec<(Dense, f64)> {
        (0..n).map(|_| (linked[draw.below(linked.len() as u64) as usize], 1.0)).collect()
    };
    let defaults = Parameters::default();
    let mut scratch = Scratch::default();
    let mut group = c.benchmark_group(format!("spread_{}_atoms", shape.nodes + shape.links));
    for sources in [1, 5] {
        group.bench_function(format!("defaults_{sources}_sources"), |b| {
            b.iter_batched(
                || Spread::new(pick(sources), &defaults, None, None),
                |p| spread(space, &p, &mut scratch),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    let unpruned =
        Parameters { max_hops: 2, threshold: 0.0, frontier_cap: usize::MAX, ..Parameters::default() };
    let fixed = pick(1);
    group.bench_function("unpruned_2_hops", |b| {
        let p = Spread::new(fixed.clone(), &unpruned, None, None);
        b.iter(|| spread(space, &p, &mut scratch))
    });
    group.bench_function("reference_bfs_2_hops", |b| b.iter(|| bfs(space, &[fixed[0].0], 2, &mut scratch)));
    group.finish();
}

criterion_group!(benches, spreading);
criterion_main!(benches);
