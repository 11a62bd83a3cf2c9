//! A seeded power-law hypergraph for the spreading benchmarks: `nodes` ConceptNodes and
//! `links` links whose arities follow a truncated power law (2..=`max_arity`) and whose members
//! are drawn with Zipf-like popularity, so a few hubs belong to very many links and most nodes
//! to a few, as in real knowledge graphs. The same seed gives the same graph.

use crate::model::{Atom, AtomId, AtomKind, AttentionValue, TruthValue};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub nodes: u64,
    pub links: u64,
    /// Mean arity is about 12.5 at 500; memberships ~= links x mean arity.
    pub max_arity: u64,
    pub seed: u64,
}

impl Shape {
    /// 1M atoms (200k nodes, 800k links) with ~10M memberships.
    pub fn million() -> Shape {
        Shape { nodes: 200_000, links: 800_000, max_arity: 500, seed: 2026 }
    }

    /// 10k atoms of the same shape, for quick runs.
    pub fn ten_thousand() -> Shape {
        Shape { nodes: 2_000, links: 8_000, max_arity: 500, seed: 2026 }
    }
}

/// splitmix64: small, fast and good enough to draw a benchmark graph.
pub struct Draw(u64);

impl Draw {
    pub fn new(seed: u64) -> Draw {
        Draw(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Every atom of the graph in id order (nodes first, ids from 1), handed to `each`.
pub fn generate(shape: Shape, mut each: impl FnMut(Atom)) {
    let mut draw = Draw::new(shape.seed);
    let atom = |id: AtomId, atom_type: &str, kind: AtomKind, tv: TruthValue| Atom {
        id,
        space: crate::model::DEFAULT_SPACE.into(),
        atom_type: atom_type.into(),
        kind,
        tv,
        av: AttentionValue::default(),
        created_ms: 0,
        updated_ms: 0,
    };
    for id in 1..=shape.nodes {
        let tv = TruthValue { strength: 1.0, confidence: 0.9 };
        each(atom(id, "ConceptNode", AtomKind::Node { name: format!("n{id}") }, tv));
    }
    let types = ["InheritanceLink", "SimilarityLink", "MemberLink", "ListLink"];
    for i in 0..shape.links {
        // P(arity >= a) = 2/a (a Pareto of index 1), truncated at max_arity: mean ~12.5 at 500.
        let u = draw.unit().max(1e-12);
        let arity = ((2.0 / u) as u64).clamp(2, shape.max_arity);
        let outgoing: Vec<AtomId> = (0..arity)
            .map(|_| {
                // Zipf-like popularity: rank = n x u^3 puts most draws on the first nodes.
                let rank = (shape.nodes as f64 * draw.unit().powi(3)) as u64;
                1 + rank.min(shape.nodes - 1)
            })
            .collect();
        let tv = TruthValue { strength: 0.3 + 0.7 * draw.unit(), confidence: 0.2 + 0.7 * draw.unit() };
        let atom_type = types[(i % types.len() as u64) as usize];
        each(atom(shape.nodes + 1 + i, atom_type, AtomKind::Link { outgoing }, tv));
    }
}
