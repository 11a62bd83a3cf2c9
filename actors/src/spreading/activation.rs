//! Spreading activation: a pure function over one space's [`SpaceIndex`], with no actor, lock
//! or clock of its own (the deadline is an `Instant` the caller chose).
//!
//! One hop takes every atom `u` of the frontier, in id order, and passes on
//! `a(u) * decay`, divided by `sqrt(1 + degree(u))` under fan normalisation, through each link
//! `L` containing `u` (of an allowed type, confident enough): `L` receives that times its
//! weight (strength x confidence), and so does each of `L`'s other members (divided by
//! `sqrt(k)` for `k` other members under fan normalisation). A link that is a source passes
//! to its own members as well. What arrives in one hop sums; lateral inhibition then takes
//! `lateral_inhibition x` the hop's mean activation off each new atom, and atoms left below
//! the threshold are suppressed (reported by `explain`, never expanded or returned); an atom
//! whose share per link is already below the threshold passes nothing on. Activation
//! that arrives at an atom reached in an earlier hop closes a cycle: it is counted, credited at
//! `1 - cycle_penalty` and never passed on again, so cycles neither loop nor count twice.
//! Every order is id order, so replicas at the same applied index answer identically.

use std::time::Instant;

use super::index::{Dense, SpaceIndex};
use super::params::Parameters;
use crate::model::AtomId;

/// Everything one spread uses, resolved (defaults filled in, names turned into numbers).
#[derive(Clone, Debug)]
pub struct Spread {
    /// Source atoms with their initial activation.
    pub sources: Vec<(Dense, f64)>,
    pub max_hops: u32,
    pub decay: f64,
    pub threshold: f64,
    pub top_k: usize,
    pub deadline: Option<Instant>,
    pub fan_normalization: bool,
    pub lateral_inhibition: f64,
    /// Only links of these types carry activation (`None`: every type).
    pub link_types: Option<Vec<u32>>,
    pub min_confidence: f64,
    pub cycle_penalty: f64,
    /// How much an atom's STI raises what it starts with or receives: `1 + w * s / (1 + s)`.
    pub sti_weight: f64,
    /// The confidence a link without evidence (confidence 0, the default truth value) is
    /// weighted with, so links added without a truth value still carry activation.
    pub unknown_confidence: f64,
    /// Most atoms one hop expands (the strongest); the rest keep their activation unexpanded.
    pub frontier_cap: usize,
    /// Report what the threshold suppressed.
    pub explain: bool,
}

impl Spread {
    /// A walk with `p`'s values: `link_types` already as the space's type numbers, `deadline`
    /// as a time.
    pub fn new(
        sources: Vec<(Dense, f64)>,
        p: &Parameters,
        link_types: Option<Vec<u32>>,
        deadline: Option<Instant>,
    ) -> Spread {
        Spread {
            sources,
            max_hops: p.max_hops,
            decay: p.decay,
            threshold: p.threshold,
            top_k: p.top_k,
            deadline,
            fan_normalization: p.fan_normalization,
            lateral_inhibition: p.lateral_inhibition,
            link_types,
            min_confidence: p.min_confidence,
            cycle_penalty: p.cycle_penalty,
            sti_weight: p.sti_weight,
            unknown_confidence: p.unknown_confidence,
            frontier_cap: p.frontier_cap,
            explain: p.explain,
        }
    }
}

/// One ranked atom.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: AtomId,
    pub activation: f64,
    /// Product of the link confidences along `path`.
    pub confidence: f64,
    pub hops: u32,
    /// From a source to the atom, links included: the path that brought it the most.
    pub path: Vec<AtomId>,
}

/// An atom that received activation but fell below the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Suppressed {
    pub id: AtomId,
    pub activation: f64,
    pub hops: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Atoms that received any activation, sources included.
    pub atoms_touched: usize,
    /// Hops completed (a deadline may cut the last one short).
    pub hops: u32,
    /// Single transfers of activation to an atom.
    pub activations: u64,
    pub cycles_detected: u64,
    pub deadline_hit: bool,
    /// Atoms suppressed by the threshold, and atoms the frontier cap left unexpanded.
    pub suppressed: usize,
    pub capped: usize,
    /// Frontier atoms whose share per link fell below the threshold, so they passed nothing on.
    pub below_threshold: usize,
    /// How long each completed hop took, in microseconds.
    pub hop_us: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub hits: Vec<Hit>,
    pub stats: Stats,
    /// With `explain`: the strongest suppressed atoms, at most `top_k`.
    pub suppressed: Vec<Suppressed>,
}

/// The parent of a source.
const NONE: Dense = Dense::MAX;
/// How many transfers pass between two looks at the clock.
const CLOCK_EVERY: u64 = 1024;

/// What one spread knows about one atom it reached (32 bytes: one cache line holds two, and a
/// transfer touches one).
#[derive(Clone, Copy, Debug, Default)]
struct Reached {
    activation: f64,
    /// The largest single transfer it received in its hop, and from where: the atom `parent`,
    /// through the link `via` (`NONE` when this atom is that link).
    best: f32,
    /// Product of link confidences along that path.
    confidence: f32,
    parent: Dense,
    via: Dense,
    /// The spread that wrote this slot.
    stamp: u32,
    hop: u16,
    suppressed: bool,
}

/// Per-thread working memory, reused across spreads: a slot per atom, stamped with the spread
/// that last wrote it, so a spread costs what it touches, not the index's size.
#[derive(Default)]
pub struct Scratch {
    slots: Vec<Reached>,
    epoch: u32,
    /// The atoms this spread reached, in the order it reached them.
    touched: Vec<Dense>,
}

impl Scratch {
    fn begin(&mut self, atoms: usize) {
        if self.slots.len() < atoms {
            self.slots.resize(atoms, Reached::default());
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.slots.iter_mut().for_each(|s| s.stamp = 0);
            self.epoch = 1;
        }
        self.touched.clear();
    }

    fn get(&self, d: Dense) -> Option<&Reached> {
        let r = &self.slots[d as usize];
        (r.stamp == self.epoch).then_some(r)
    }

    fn at(&mut self, d: Dense) -> &mut Reached {
        &mut self.slots[d as usize]
    }

    fn insert(&mut self, d: Dense, reached: Reached) {
        self.slots[d as usize] = Reached { stamp: self.epoch, ..reached };
        self.touched.push(d);
    }

    /// Bytes held (for the memory figures).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Reached>() + self.touched.capacity() * 4
    }
}

struct Walk<'a> {
    index: &'a SpaceIndex,
    p: &'a Spread,
    scratch: &'a mut Scratch,
    stats: Stats,
    hop: u16,
    /// Atoms first reached in the current hop.
    fresh: Vec<Dense>,
    /// The transfer count at which to look at the clock next.
    next_clock: u64,
}

impl Walk<'_> {
    #[inline(always)]
    fn sti_factor(&self, d: Dense) -> f64 {
        if self.p.sti_weight == 0.0 {
            return 1.0;
        }
        let s = f64::from(self.index.sti(d)).max(0.0);
        1.0 + self.p.sti_weight * s / (1.0 + s)
    }

    /// The link's effective confidence, or `None` when it carries nothing in this spread.
    fn link_confidence(&self, link: Dense) -> Option<f64> {
        if self.index.is_removed(link) {
            return None;
        }
        if let Some(types) = &self.p.link_types {
            if !types.contains(&self.index.type_id(link)) {
                return None;
            }
        }
        let c = f64::from(self.index.confidence(link));
        if c < self.p.min_confidence {
            return None;
        }
        Some(if c == 0.0 { self.p.unknown_confidence } else { c })
    }

    #[inline(always)]
    fn deliver(&mut self, target: Dense, amount: f64, parent: Dense, via: Dense, confidence: f32) {
        self.stats.activations += 1;
        let amount = amount * self.sti_factor(target);
        let (epoch, hop) = (self.scratch.epoch, self.hop);
        let r = self.scratch.at(target);
        if r.stamp != epoch {
            *r = Reached {
                activation: amount,
                best: amount as f32,
                confidence,
                parent,
                via,
                stamp: epoch,
                hop,
                suppressed: false,
            };
            self.scratch.touched.push(target);
            self.fresh.push(target);
        } else if r.hop < hop {
            if self.p.cycle_penalty < 1.0 {
                r.activation += amount * (1.0 - self.p.cycle_penalty);
            }
            self.stats.cycles_detected += 1;
        } else {
            r.activation += amount;
            if amount as f32 > r.best {
                (r.best, r.parent, r.via, r.confidence) = (amount as f32, parent, via, confidence);
            }
        }
    }

    /// Passes `from`'s activation on through one link; answers false once the deadline passed.
    fn through(&mut self, from: Dense, link: Dense, out: f64, path_conf: f32) -> bool {
        let Some(conf) = self.link_confidence(link) else { return true };
        let flow = out * f64::from(self.index.strength(link)) * conf;
        let confidence = path_conf * conf as f32;
        if link != from {
            self.deliver(link, flow, from, NONE, confidence);
        }
        let index = self.index;
        let members = index.members(link);
        let others = if index.has_removed() {
            members.iter().filter(|m| **m != from && !index.is_removed(**m)).count()
        } else {
            // Members are unique, and `from` is one of them unless this is a link source's own.
            members.len() - usize::from(link != from)
        };
        let share = if self.p.fan_normalization && others > 1 { flow / (others as f64).sqrt() } else { flow };
        for &m in members {
            if m != from && !index.is_removed(m) {
                self.deliver(m, share, from, link, confidence);
            }
        }
        self.on_time()
    }

    fn on_time(&mut self) -> bool {
        if self.stats.activations < self.next_clock {
            return true;
        }
        self.next_clock = self.stats.activations + CLOCK_EVERY;
        self.past_deadline()
    }

    /// Answers false (and notes it) once the deadline passed.
    fn past_deadline(&mut self) -> bool {
        match self.p.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                self.stats.deadline_hit = true;
                false
            }
            _ => true,
        }
    }

    /// Expands one frontier atom; answers false once the deadline passed.
    fn expand(&mut self, u: Dense, activation: f64) -> bool {
        let r = *self.scratch.at(u);
        let index = self.index;
        let live = |l: &Dense| !index.is_removed(*l);
        let downward = r.hop == 0 && index.is_link(u);
        let mut degree =
            if index.has_removed() { index.incident(u).filter(live).count() } else { index.degree(u) };
        if downward {
            degree += index.members(u).iter().filter(|m| live(m)).count();
        }
        if degree == 0 {
            return true;
        }
        let mut out = activation * self.p.decay;
        if self.p.fan_normalization {
            out /= (1.0 + degree as f64).sqrt();
        }
        if out < self.p.threshold {
            // No one transfer from here can reach the threshold (weights are at most 1): the
            // atom passes nothing on, which is what keeps a hub reached late from costing a
            // walk over all its links.
            self.stats.below_threshold += 1;
            return true;
        }
        for link in index.incident(u) {
            if !self.through(u, link, out, r.confidence) {
                return false;
            }
        }
        if downward {
            // A link source passes to its own members as a link containing them would.
            if !self.through(u, u, out, r.confidence) {
                return false;
            }
        }
        true
    }

    /// Inhibits, prunes and caps the atoms the hop reached; answers the next frontier.
    fn settle(&mut self) -> Vec<(Dense, f64)> {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh.is_empty() {
            return Vec::new();
        }
        if self.p.lateral_inhibition > 0.0 {
            let mean = fresh.iter().map(|d| self.scratch.at(*d).activation).sum::<f64>() / fresh.len() as f64;
            for d in &fresh {
                let r = self.scratch.at(*d);
                r.activation = (r.activation - self.p.lateral_inhibition * mean).max(0.0);
            }
        }
        let mut frontier = Vec::with_capacity(fresh.len());
        for d in fresh {
            let threshold = self.p.threshold;
            let r = self.scratch.at(d);
            if r.activation < threshold || r.activation <= 0.0 {
                r.suppressed = true;
                self.stats.suppressed += 1;
            } else {
                frontier.push((d, r.activation));
            }
        }
        if frontier.len() > self.p.frontier_cap {
            frontier.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            self.stats.capped += frontier.len() - self.p.frontier_cap;
            frontier.truncate(self.p.frontier_cap);
        }
        frontier.sort_unstable_by_key(|(d, _)| *d);
        frontier
    }
}

/// Runs one spread over `index`.
pub fn spread(index: &SpaceIndex, p: &Spread, scratch: &mut Scratch) -> Outcome {
    scratch.begin(index.len());
    let mut walk = Walk {
        index,
        p,
        scratch,
        stats: Stats::default(),
        hop: 0,
        fresh: Vec::new(),
        next_clock: CLOCK_EVERY,
    };
    let mut sources: Vec<(Dense, f64)> = p.sources.clone();
    sources.sort_by_key(|s| s.0);
    for (d, activation) in sources {
        let amount = activation * walk.sti_factor(d);
        if walk.scratch.get(d).is_some() {
            walk.scratch.at(d).activation += amount;
        } else {
            let source = Reached {
                activation: amount,
                confidence: 1.0,
                parent: NONE,
                via: NONE,
                ..Default::default()
            };
            walk.scratch.insert(d, source);
        }
    }
    let mut frontier: Vec<(Dense, f64)> =
        walk.scratch.touched.iter().map(|d| (*d, walk.scratch.slots[*d as usize].activation)).collect();
    'hops: while u32::from(walk.hop) < p.max_hops && !frontier.is_empty() {
        if !walk.past_deadline() {
            break;
        }
        let started = Instant::now();
        walk.hop += 1;
        for (d, activation) in std::mem::take(&mut frontier) {
            if !walk.expand(d, activation) {
                walk.settle();
                break 'hops;
            }
        }
        frontier = walk.settle();
        walk.stats.hops = u32::from(walk.hop);
        walk.stats.hop_us.push(started.elapsed().as_micros() as u64);
    }
    if !walk.stats.deadline_hit && p.deadline.is_some_and(|d| Instant::now() >= d) {
        walk.stats.deadline_hit = true;
    }
    let Walk { scratch, mut stats, .. } = walk;
    stats.atoms_touched = scratch.touched.len();
    rank(index, p, scratch, stats)
}

fn rank(index: &SpaceIndex, p: &Spread, scratch: &Scratch, stats: Stats) -> Outcome {
    let slot = |d: &Dense| &scratch.slots[*d as usize];
    let order = |a: &Dense, b: &Dense| slot(b).activation.total_cmp(&slot(a).activation).then(a.cmp(b));
    let mut hits: Vec<Dense> = scratch
        .touched
        .iter()
        .copied()
        .filter(|d| slot(d).hop > 0 && !slot(d).suppressed && slot(d).activation > 0.0)
        .collect();
    hits.sort_by(order);
    hits.truncate(p.top_k);
    let hits = hits
        .into_iter()
        .map(|d| Hit {
            id: index.id(d),
            activation: slot(&d).activation,
            confidence: f64::from(slot(&d).confidence),
            hops: u32::from(slot(&d).hop),
            path: path(index, scratch, d),
        })
        .collect();
    let mut suppressed = Vec::new();
    if p.explain {
        let mut gone: Vec<Dense> = scratch.touched.iter().copied().filter(|d| slot(d).suppressed).collect();
        gone.sort_by(order);
        gone.truncate(p.top_k);
        suppressed = gone
            .into_iter()
            .map(|d| Suppressed {
                id: index.id(d),
                activation: slot(&d).activation,
                hops: u32::from(slot(&d).hop),
            })
            .collect();
    }
    Outcome { hits, stats, suppressed }
}

fn path(index: &SpaceIndex, scratch: &Scratch, last: Dense) -> Vec<AtomId> {
    let mut rev = vec![index.id(last)];
    let mut r = &scratch.slots[last as usize];
    while r.parent != NONE {
        if r.via != NONE {
            rev.push(index.id(r.via));
        }
        rev.push(index.id(r.parent));
        r = &scratch.slots[r.parent as usize];
    }
    rev.reverse();
    rev
}

/// The reference a spread's cost is measured against: a plain breadth-first search over the
/// same rows and the same steps (atom -> containing link -> its members; a link source also
/// to its members), `max_hops` deep, with nothing but a visited mark. Answers how many atoms
/// it visited, sources included.
pub fn bfs(index: &SpaceIndex, sources: &[Dense], max_hops: u32, scratch: &mut Scratch) -> usize {
    scratch.begin(index.len());
    let mut frontier: Vec<Dense> = Vec::new();
    let mark = |scratch: &mut Scratch, d: Dense, next: &mut Vec<Dense>| {
        let epoch = scratch.epoch;
        let slot = &mut scratch.slots[d as usize];
        if slot.stamp != epoch {
            slot.stamp = epoch;
            next.push(d);
        }
    };
    for &s in sources {
        mark(scratch, s, &mut frontier);
    }
    let mut visited = frontier.len();
    let roots = frontier.clone();
    for hop in 0..max_hops {
        let mut next = Vec::new();
        for &u in &frontier {
            let links =
                index.incident(u).chain((hop == 0 && index.is_link(u) && roots.contains(&u)).then_some(u));
            for link in links {
                if index.is_removed(link) {
                    continue;
                }
                if link != u {
                    mark(scratch, link, &mut next);
                }
                for &m in index.members(link) {
                    if !index.is_removed(m) {
                        mark(scratch, m, &mut next);
                    }
                }
            }
        }
        visited += next.len();
        frontier = next;
    }
    visited
}

#[cfg(test)]
#[path = "activation_tests.rs"]
mod tests;
