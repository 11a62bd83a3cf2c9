//! The Wing & Gong search with Lowe's memoisation over one key's operations: a doubly linked list
//! of call and return events in time order, a stack of choices to backtrack, and a memo of the
//! (linearized set, register state) configurations already explored, so none is explored twice.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::time::Instant;

use super::memo::{Bitset, MemoKey, MixHasher};
use super::Budget;

/// A register's content: `None` until first written.
pub(super) type State = Option<i64>;

/// What an operation does to the register, with what it saw for reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Read(State),
    Write(i64),
    Cas { expect: State, new: i64 },
}

impl Step {
    /// The register after this operation, or `None` if the operation cannot happen in `state`.
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(seen) => (seen == state).then_some(state),
            Step::Write(value) => Some(Some(value)),
            Step::Cas { expect, new } => (expect == state).then_some(Some(new)),
        }
    }
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Call {
    pub step: Step,
    pub invoke_ns: u64,
    /// `None`: an unknown outcome, which may take effect at any time after its invocation, or never.
    pub return_ns: Option<u64>,
}

/// Where the deepest attempt got stuck, for the explanation of a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Frontier {
    /// How many operations the longest consistent order placed.
    pub depth: usize,
    /// The operation whose return was reached with no way to place it.
    pub blocker: usize,
    /// The register states that order could end in (a few at most).
    pub states: Vec<State>,
    /// The last operations of that order, oldest first.
    pub tail: Vec<usize>,
    /// Values that placing the blocker (or what it needed first) would have overwritten, each
    /// with a pending operation that must still see it.
    pub stranded: Vec<(State, usize)>,
}

/// The end of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Search {
    Linearizable { states: u64 },
    NotLinearizable { states: u64, frontier: Frontier },
    OutOfBudget { states: u64, deepest: usize },
}

const STATES_SHOWN: usize = 4;
const TAIL_SHOWN: usize = 3;

/// Searches for an order of `calls` (sorted by invocation time) that respects real time and the
/// register's semantics, starting from an absent register.
pub(super) fn linearize(calls: &[Call], budget: Budget) -> Search {
    debug_assert!(calls.windows(2).all(|w| w[0].invoke_ns <= w[1].invoke_ns), "calls sorted by invocation");
    let mut events = Events::new(calls);
    let mut linearized = Bitset::new(calls.len());
    let mut demand = Demand::new(calls);
    let mut memo: HashSet<MemoKey, BuildHasherDefault<MixHasher>> = HashSet::default();
    let mut stack: Vec<Frame> = Vec::new();
    let (mut state, mut high): (State, usize) = (None, 0);
    let mut pending_returns = calls.iter().filter(|c| c.return_ns.is_some()).count();
    let (mut states, mut deepest) = (0u64, 0usize);
    let mut frontier: Option<Frontier> = None;
    // Values the current scan refused to overwrite, and by which call, for the explanation.
    let mut stranded: Vec<(State, usize)> = Vec::new();
    let started = Instant::now();
    let mut node = events.first();
    // Success once every operation with a return is placed: the unknown ones left over are the
    // ones that never took effect.
    while pending_returns > 0 {
        if let Some(Event::Call(op)) = events.at(node) {
            let mut after = calls[op].step.apply(state);
            if after.is_some_and(|after| demand.strands(op, state, after)) {
                if !stranded.iter().any(|&(v, _)| v == state) && stranded.len() < STATES_SHOWN {
                    stranded.push((state, op));
                }
                after = None;
            }
            if let Some(after) = after {
                states += 1;
                if states > budget.max_states || (states % 4096 == 0 && started.elapsed() > budget.deadline) {
                    return Search::OutOfBudget { states, deepest };
                }
                events.lift(op);
                linearized.insert(op);
                let lifted_high = high.max(op + 1);
                if memo.insert(MemoKey::new(&linearized, events.first_unplaced(), lifted_high, after)) {
                    stack.push(Frame { op, before: state, high });
                    deepest = deepest.max(stack.len());
                    (state, high) = (after, lifted_high);
                    demand.place(op);
                    stranded.clear();
                    pending_returns -= usize::from(calls[op].return_ns.is_some());
                    node = events.first();
                    continue;
                }
                events.unlift(op);
                linearized.remove(op);
            }
            node = events.next[node];
            continue;
        }
        // A return (or, never in practice, the end of the list): this operation must already be
        // placed, so the latest choice was wrong. Undo it and try the next call after it.
        if let Some(Event::Return(op)) = events.at(node) {
            let stranded =
                stranded.iter().filter_map(|&(v, by)| Some((v, demand.pending_needer(v, by, &linearized)?)));
            note_frontier(&mut frontier, &stack, op, state, stranded.collect());
        }
        stranded.clear();
        let Some(frame) = stack.pop() else {
            // Reaching a return sets the frontier, so the fallback is never used.
            let fallback =
                Frontier { depth: 0, blocker: 0, states: vec![state], tail: vec![], stranded: vec![] };
            let frontier = frontier.unwrap_or(fallback);
            return Search::NotLinearizable { states, frontier };
        };
        events.unlift(frame.op);
        linearized.remove(frame.op);
        demand.unplace(frame.op);
        (state, high) = (frame.before, frame.high);
        pending_returns += usize::from(calls[frame.op].return_ns.is_some());
        node = events.next[events.call_node[frame.op]];
    }
    Search::Linearizable { states }
}

/// Keeps the deepest place a return was reached with its operation unplaced.
fn note_frontier(
    frontier: &mut Option<Frontier>,
    stack: &[Frame],
    blocker: usize,
    state: State,
    stranded: Vec<(State, usize)>,
) {
    let depth = stack.len();
    match frontier {
        Some(f) if f.depth == depth && f.blocker == blocker => {
            if f.states.len() < STATES_SHOWN && !f.states.contains(&state) {
                f.states.push(state);
            }
            for s in stranded {
                if f.stranded.len() < STATES_SHOWN && !f.stranded.contains(&s) {
                    f.stranded.push(s);
                }
            }
        }
        Some(f) if f.depth >= depth => {}
        _ => {
            let tail = stack[depth.saturating_sub(TAIL_SHOWN)..].iter().map(|f| f.op).collect();
            *frontier = Some(Frontier { depth, blocker, states: vec![state], tail, stranded });
        }
    }
}

/// What the operations not placed yet still need from the register and can still write to it.
/// A value the register leaves never comes back unless something pending writes it again, so an
/// order that leaves a value some pending operation with a return must still see is dead. This
/// prunes, for instance, every order that places a write too early, before the reads that must
/// still see the value it overwrites; it depends only on the placed set and the state, so the
/// memo stays exact.
struct Demand {
    index: HashMap<State, usize, BuildHasherDefault<MixHasher>>,
    /// Per call: the value it must see, if it has a return and looks at the register.
    needs: Vec<Option<usize>>,
    /// Per call: the value it writes, if any.
    writes: Vec<Option<usize>>,
    /// Per value: calls not placed yet that need it, and that write it.
    needed_by: Vec<u32>,
    written_by: Vec<u32>,
    /// Per value: every call with a return that needs it, in invocation order.
    needers: Vec<Vec<usize>>,
}

impl Demand {
    fn new(calls: &[Call]) -> Demand {
        let mut index: HashMap<State, usize, BuildHasherDefault<MixHasher>> = HashMap::default();
        let mut intern = |state: State| {
            let next = index.len();
            *index.entry(state).or_insert(next)
        };
        intern(None);
        let (mut needs, mut writes) = (Vec::with_capacity(calls.len()), Vec::with_capacity(calls.len()));
        for call in calls {
            let (need, write) = match call.step {
                Step::Read(seen) => (Some(seen), None),
                Step::Write(value) => (None, Some(Some(value))),
                Step::Cas { expect, new } => (Some(expect), Some(Some(new))),
            };
            needs.push(need.filter(|_| call.return_ns.is_some()).map(&mut intern));
            writes.push(write.map(&mut intern));
        }
        let (mut needed_by, mut written_by) = (vec![0; index.len()], vec![0; index.len()]);
        let mut needers = vec![Vec::new(); index.len()];
        for (op, &need) in needs.iter().enumerate() {
            need.inspect(|&v| needers[v].push(op));
        }
        needers.iter().enumerate().for_each(|(v, ops)| needed_by[v] = ops.len() as u32);
        writes.iter().flatten().for_each(|&v| written_by[v] += 1);
        Demand { index, needs, writes, needed_by, written_by, needers }
    }

    /// The first operation other than `overwriter`, not placed yet, that must still see `value`.
    fn pending_needer(&self, value: State, overwriter: usize, placed: &Bitset) -> Option<usize> {
        self.needers[self.index[&value]].iter().copied().find(|&op| op != overwriter && !placed.contains(op))
    }

    /// Whether placing `op`, which takes the register from `before` to `after`, leaves `before`
    /// needed by a pending operation with nothing pending able to write it back.
    fn strands(&self, op: usize, before: State, after: State) -> bool {
        if before == after {
            return false;
        }
        let value = self.index[&before];
        let still_needed = self.needed_by[value] - u32::from(self.needs[op] == Some(value));
        still_needed > 0 && self.written_by[value] == 0
    }

    fn place(&mut self, op: usize) {
        self.needs[op].inspect(|&v| self.needed_by[v] -= 1);
        self.writes[op].inspect(|&v| self.written_by[v] -= 1);
    }

    fn unplace(&mut self, op: usize) {
        self.needs[op].inspect(|&v| self.needed_by[v] += 1);
        self.writes[op].inspect(|&v| self.written_by[v] += 1);
    }
}

/// One placed operation, with what to restore when it is taken back.
struct Frame {
    op: usize,
    before: State,
    high: usize,
}

#[derive(Clone, Copy)]
enum Event {
    Call(usize),
    Return(usize),
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// The events not yet placed, in time order, as a doubly linked list (node 0 is the head) whose
/// nodes can be lifted out and put back in O(1).
struct Events {
    event: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl Events {
    fn new(calls: &[Call]) -> Events {
        // Calls before returns at equal times: equal stamps cannot tell which came first, so
        // such operations count as concurrent (see the module documentation).
        let mut timeline: Vec<(u64, u8, usize)> = Vec::with_capacity(calls.len() * 2);
        for (op, call) in calls.iter().enumerate() {
            timeline.push((call.invoke_ns, 0, op));
            if let Some(returned) = call.return_ns {
                timeline.push((returned.max(call.invoke_ns), 1, op));
            }
        }
        timeline.sort_unstable();
        let n = timeline.len();
        let mut event = vec![Event::Call(usize::MAX)];
        let (mut call_node, mut return_node) = (vec![NIL; calls.len()], vec![NIL; calls.len()]);
        for (index, &(_, kind, op)) in timeline.iter().enumerate() {
            if kind == 0 {
                call_node[op] = index + 1;
                event.push(Event::Call(op));
            } else {
                return_node[op] = index + 1;
                event.push(Event::Return(op));
            }
        }
        let next = (0..=n).map(|i| if i < n { i + 1 } else { NIL }).collect();
        let prev = (0..=n).map(|i| i.wrapping_sub(1)).collect();
        Events { event, next, prev, call_node, return_node }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn at(&self, node: usize) -> Option<Event> {
        (node != NIL).then(|| self.event[node])
    }

    /// The lowest-numbered operation not placed yet (or the count of operations if all are):
    /// calls are numbered in invocation order and an operation's call precedes its return, so
    /// it owns the first event left.
    fn first_unplaced(&self) -> usize {
        match self.at(self.first()) {
            Some(Event::Call(op) | Event::Return(op)) => op,
            None => self.call_node.len(),
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.return_node[op] != NIL {
            self.unlink(self.return_node[op]);
        }
    }

    /// Undoes [`Events::lift`], in the reverse order so neighbours are restored exactly.
    fn unlift(&mut self, op: usize) {
        if self.return_node[op] != NIL {
            self.relink(self.return_node[op]);
        }
        self.relink(self.call_node[op]);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}
