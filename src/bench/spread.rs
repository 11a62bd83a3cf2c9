//! `cograft bench spread`: spreading activation in-process over the seeded power-law graph
//! (`--atoms 1m` or `10k`): index build time and bytes per atom, spread latency (p50, p99)
//! from 1 and 5 sources with the default parameters, atoms touched, the cost against a plain
//! BFS over the same rows to the same visited set, and how fast the index folds in new atoms
//! from apply's announcements. Sources are drawn uniformly among nodes that are in a link.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use cograft_actors::model::{Atom, AtomId, AtomKind, AttentionValue, TruthValue};
use cograft_actors::spreading::activation::{bfs, spread, Scratch, Spread};
use cograft_actors::spreading::index::{Dense, SpaceIndex};
use cograft_actors::spreading::indexes::{Builder, GraphIndex};
use cograft_actors::spreading::params::Parameters;
use cograft_actors::spreading::synthetic::{generate, Draw, Shape};
use cograft_actors::storage::events::{Changes, SpaceChanges};

use super::percentile;

pub struct SpreadArgs {
    /// `1m` or `10k`.
    pub atoms: String,
    pub spreads: usize,
}

pub fn run(args: SpreadArgs) -> anyhow::Result<()> {
    let shape = match args.atoms.as_str() {
        "1m" => Shape::million(),
        "10k" => Shape::ten_thousand(),
        other => bail!("--atoms must be 1m or 10k, got {other:?}"),
    };
    println!("== power-law hypergraph: {} nodes, {} links (seed {})", shape.nodes, shape.links, shape.seed);
    let started = Instant::now();
    let mut builder = Builder::default();
    let mut memberships = 0u64;
    let mut build_err = None;
    generate(shape, |atom| {
        memberships += atom.outgoing().len() as u64;
        if build_err.is_none() {
            build_err = builder.push(&atom).err();
        }
    });
    if let Some(e) = build_err {
        bail!("building the index: {e}");
    }
    let generated_and_built = started.elapsed();
    let build_started = Instant::now();
    let graph = builder.finish(0);
    let seal = build_started.elapsed();
    let space = graph.space(cograft_actors::model::DEFAULT_SPACE).expect("the graph has atoms");
    let atoms = space.live();
    println!(
        "   {atoms} atoms, {memberships} memberships; generated and pushed in {:.2} s, sealed in {:.2} s",
        generated_and_built.as_secs_f64(),
        seal.as_secs_f64()
    );
    println!(
        "   index: {:.1} MB, {:.1} bytes per atom (target < 150)",
        space.memory_bytes() as f64 / 1e6,
        space.memory_bytes() as f64 / atoms as f64
    );

    let linked: Vec<Dense> = (0..space.len() as Dense)
        .filter(|d| !space.is_link(*d) && space.incident(*d).next().is_some())
        .collect();
    let mut draw = Draw::new(7);
    let mut scratch = Scratch::default();
    let default_threshold = Parameters::default().threshold;
    for (sources, threshold) in [(1usize, default_threshold), (5, default_threshold), (1, 0.001), (5, 0.001)]
    {
        let mut times = Vec::with_capacity(args.spreads);
        let mut touched = Vec::with_capacity(args.spreads);
        for _ in 0..args.spreads {
            let mut p = defaults(pick(&linked, &mut draw, sources));
            p.threshold = threshold;
            let t = Instant::now();
            let out = spread(space, &p, &mut scratch);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            touched.push(out.stats.atoms_touched as f64);
        }
        times.sort_by(f64::total_cmp);
        touched.sort_by(f64::total_cmp);
        let label = if threshold == default_threshold { "defaults" } else { "threshold 0.001" };
        println!(
            "== {sources} source(s), {label} (3 hops), {} spreads: p50 {:.3} ms, p99 {:.3} ms; atoms touched p50 {:.0}, \
             p99 {:.0}",
            args.spreads,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&touched, 0.5),
            percentile(&touched, 0.99),
        );
    }
    println!("   (target: p99 < 5 ms for 3 hops from one source at 1M atoms; scratch {:.1} MB per spreading thread)", scratch.memory_bytes() as f64 / 1e6);
    versus_bfs(
        space,
        &linked,
        &mut draw,
        &mut scratch,
        args.spreads.min(if atoms > 100_000 { 10 } else { 200 }),
    );
    fold_rate(&graph, shape)?;
    Ok(())
}

fn pick(linked: &[Dense], draw: &mut Draw, n: usize) -> Vec<(Dense, f64)> {
    (0..n).map(|_| (linked[draw.below(linked.len() as u64) as usize], 1.0)).collect()
}

/// The default parameters in the walk's form (no deadline: the figures are the full walks).
fn defaults(sources: Vec<(Dense, f64)>) -> Spread {
    Spread::new(sources, &Parameters::default(), None, None)
}

/// Spreading against a plain BFS visiting the same atoms: the spread without pruning (threshold
/// 0, no frontier cap) touches exactly what a BFS of the same depth visits, so the ratio of
/// their times is spreading's own cost per atom. Two hops: three from a random source of this
/// graph reach most of it.
fn versus_bfs(space: &SpaceIndex, linked: &[Dense], draw: &mut Draw, scratch: &mut Scratch, runs: usize) {
    let (mut spread_s, mut bfs_s, mut visited) = (0.0, 0.0, 0usize);
    for _ in 0..runs {
        let sources = pick(linked, draw, 1);
        let mut p = defaults(sources.clone());
        (p.max_hops, p.threshold, p.frontier_cap) = (2, 0.0, usize::MAX);
        let t = Instant::now();
        let out = spread(space, &p, scratch);
        spread_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let seen = bfs(space, &[sources[0].0], 2, scratch);
        bfs_s += t.elapsed().as_secs_f64();
        assert_eq!(out.stats.atoms_touched, seen, "the unpruned spread and the BFS visit the same atoms");
        visited += seen;
    }
    println!(
        "== unpruned 2-hop spread vs plain BFS, same visited sets ({runs} sources, {:.0} atoms each): spread {:.2} ms, \
         BFS {:.2} ms, ratio {:.2}x (target within 3x)",
        visited as f64 / runs as f64,
        spread_s * 1000.0 / runs as f64,
        bfs_s * 1000.0 / runs as f64,
        spread_s / bfs_s
    );
}

/// Folds 100k new atoms (a third of them links) into the index as apply announces them, 500
/// per announcement, records encoded as apply writes them.
fn fold_rate(graph: &GraphIndex, shape: Shape) -> anyhow::Result<()> {
    let mut graph = graph.clone();
    let mut next: AtomId = shape.nodes + shape.links + 1;
    let mut draw = Draw::new(11);
    let mut announcements = Vec::new();
    for _ in 0..200 {
        let mut change = SpaceChanges::default();
        for i in 0..500u64 {
            let kind = if i % 3 == 2 {
                let members = (0..3).map(|_| 1 + draw.below(next - 1)).collect();
                AtomKind::Link { outgoing: members }
            } else {
                AtomKind::Node { name: format!("new{next}") }
            };
            let link = matches!(kind, AtomKind::Link { .. });
            let atom = Atom {
                id: next,
                space: cograft_actors::model::DEFAULT_SPACE.into(),
                atom_type: if link { "ListLink" } else { "ConceptNode" }.into(),
                kind,
                tv: TruthValue { strength: 0.8, confidence: 0.5 },
                av: AttentionValue::default(),
                created_ms: 0,
                updated_ms: 0,
            };
            change.records.insert(next, cograft_actors::storage::encode(&atom));
            change.added.insert(next);
            next += 1;
        }
        announcements.push(Arc::new(Changes {
            spaces: BTreeMap::from([(cograft_actors::model::DEFAULT_SPACE.to_string(), change)]),
        }));
    }
    let t = Instant::now();
    let mut compactions = 0;
    for (i, changes) in announcements.iter().enumerate() {
        for name in graph.apply(i as u64 + 1, changes)? {
            let compacted = graph.space(&name).expect("the space exists").compacted();
            graph.replace(&name, compacted);
            compactions += 1;
        }
    }
    let took = t.elapsed().max(Duration::from_nanos(1));
    println!(
        "== index updates from Applied: 100000 atoms in 200 announcements in {:.3} s = {:.0} atoms/s ({compactions} compactions)",
        took.as_secs_f64(),
        100_000.0 / took.as_secs_f64()
    );
    Ok(())
}
