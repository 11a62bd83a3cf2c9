//! The fault-injecting TCP proxy. One [`FaultProxy`] stands on each directed peer link i -> j: node i
//! dials it (through `peer_addr_override`) and it forwards to node j. It owns that link's
//! connections, the faults currently set on each [`Direction`] and the link's counters; the harness
//! changes faults through a [`LinkControl`], from any thread and without async.
//!
//! A TCP stream cannot lose bytes from its middle without corrupting everything after them, so
//! each [`Fault`] is mapped onto what a peer would actually observe:
//!
//! - `Cut` is a partition: bytes in that direction (and a FIN) are blackholed, never reset, so the
//!   sender sees timeouts. With `Up` cut, new connections are still accepted and the proxy still
//!   dials the target, as a kernel completes handshakes for a reachable host. A connection that lost
//!   bytes is in an undefined HTTP state, so **healing closes it at heal time** (abruptly, RST on
//!   both sides): clients reconnect cleanly instead of reading a reply to a request they never
//!   finished. Connections that lost nothing survive the cut. A chunk already queued behind a delay
//!   when the cut begins is in flight on the cable, and is lost too.
//! - `Delay { mean, jitter }` holds each chunk (one read, at most 64 KiB) for `mean` ± uniform
//!   `jitter`, counted from when it was read. A connection's chunks wait in one FIFO queue per
//!   direction, so a later chunk is never released before an earlier one: delays add latency, not
//!   reordering, and queued chunks are pipelined, not serialised.
//! - `Drop { probability }` models message loss per connection: each chunk in that direction, with
//!   that probability, aborts the whole connection (both sides closed with RST via a zero linger).
//!   The in-flight request or reply is lost, and the client sees a reset, not a timeout.
//!
//! Randomness comes from one seeded xorshift64* per proxy. Which connection draws which number
//! depends on task scheduling, so runs replay the same distribution rather than the same bytes.
//! Everything is bounded: reads of 64 KiB, [`QUEUE_CHUNKS`] queued chunks per direction per
//! connection (then TCP backpressure), and shutdown aborts every task.

mod connection;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::rng::Rng;

/// Largest chunk read (and so delayed or dropped as one message) at a time.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks a direction of one connection may hold in its delay queue before reads stop.
pub const QUEUE_CHUNKS: usize = 64;

/// Which way bytes flow on a link i -> j.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Direction {
    /// From the dialing node i to the target j: requests.
    Up,
    /// From the target j back to i: responses.
    Down,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];

    fn index(self) -> usize {
        match self {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }
}

/// What happens to bytes in one direction of a link; see the module docs for the TCP mapping.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub enum Fault {
    /// Pass-through.
    #[default]
    None,
    /// Partition: blackhole the bytes; healing closes the connections that lost some.
    Cut,
    /// Hold each chunk `mean` ± uniform `jitter`, preserving order.
    Delay { mean: Duration, jitter: Duration },
    /// Each chunk aborts its connection (RST both sides) with this probability.
    Drop { probability: f64 },
}

/// A snapshot of a link's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    pub connections_accepted: u64,
    pub connections_open: u64,
    /// Accepted connections whose target refused or did not answer.
    pub target_connect_failures: u64,
    /// Bytes written to the target.
    pub bytes_up: u64,
    /// Bytes written back to the dialing node.
    pub bytes_down: u64,
    /// Chunks (and bytes) discarded by a `Cut`, both directions.
    pub chunks_blackholed: u64,
    pub bytes_blackholed: u64,
    /// Chunks that triggered a `Drop`; each aborted its connection.
    pub chunks_dropped: u64,
    /// Connections reset by a `Drop`.
    pub connections_aborted: u64,
    /// Connections reset when a cut that blackholed their bytes was healed.
    pub connections_closed_on_heal: u64,
}

/// A running proxy for one directed link. Dropping it (or [`FaultProxy::shutdown`]) stops accepting
/// and closes every connection.
pub struct FaultProxy {
    local_addr: SocketAddr,
    control: LinkControl,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds 127.0.0.1:0 and forwards every accepted connection to `target`, on the current runtime.
    pub async fn start(target: SocketAddr, seed: u64) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let local_addr = listener.local_addr()?;
        let link = Arc::new(Link::new(seed));
        let accept_task = tokio::spawn(accept_loop(listener, target, link.clone()));
        Ok(FaultProxy { local_addr, control: LinkControl { link }, accept_task })
    }

    /// Where the dialing node should connect instead of the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A cheap handle to set faults and read counters, usable from any thread.
    pub fn control(&self) -> LinkControl {
        self.control.clone()
    }

    pub fn stats(&self) -> ProxyStats {
        self.control.stats()
    }

    /// Stops accepting and closes every connection (their tasks are aborted). Needs no runtime
    /// context, so it is safe from a `Drop` impl.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the listener and the JoinSet of connection tasks; dropping the
        // JoinSet aborts them all.
        self.accept_task.abort();
    }
}

/// Sets and reads the faults of one link; clones share the link.
#[derive(Clone)]
pub struct LinkControl {
    link: Arc<Link>,
}

impl LinkControl {
    /// Sets the fault of one direction. Lifting a `Cut` resets the connections it blackholed.
    pub fn set(&self, direction: Direction, fault: Fault) {
        let mut state = self.link.lock();
        let was_cut = state.faults[direction.index()] == Fault::Cut;
        state.faults[direction.index()] = fault;
        if was_cut && state.faults[direction.index()] != Fault::Cut {
            let mut closed = 0;
            for connection in state.connections.values_mut().filter(|c| c.lost[direction.index()]) {
                connection.lost = [false; 2];
                connection.kill.notify_one();
                closed += 1;
            }
            self.link.counters.closed_on_heal.fetch_add(closed, Ordering::Relaxed);
        }
    }

    /// Both directions back to `Fault::None`.
    pub fn heal(&self) {
        for direction in Direction::BOTH {
            self.set(direction, Fault::None);
        }
    }

    pub fn get(&self, direction: Direction) -> Fault {
        self.link.lock().faults[direction.index()].clone()
    }

    pub fn stats(&self) -> ProxyStats {
        let connections_open = self.link.lock().connections.len() as u64;
        let c = &self.link.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            connections_accepted: load(&c.accepted),
            connections_open,
            target_connect_failures: load(&c.connect_failures),
            bytes_up: load(&c.forwarded[0]),
            bytes_down: load(&c.forwarded[1]),
            chunks_blackholed: load(&c.chunks_blackholed),
            bytes_blackholed: load(&c.bytes_blackholed),
            chunks_dropped: load(&c.chunks_dropped),
            connections_aborted: load(&c.aborted),
            connections_closed_on_heal: load(&c.closed_on_heal),
        }
    }
}

impl std::fmt::Debug for LinkControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.link.lock();
        f.debug_struct("LinkControl").field("up", &state.faults[0]).field("down", &state.faults[1]).finish()
    }
}

/// What a connection task must do with a chunk it has just read.
enum Verdict {
    /// Queue it for release at this instant.
    Forward(Instant),
    /// A cut swallowed it.
    Blackhole,
    /// A drop hit it: reset the connection.
    Abort,
}

/// The state shared by a proxy's accept loop, its connections and its controls.
struct Link {
    state: Mutex<LinkState>,
    counters: Counters,
}

/// Guarded by one lock so that a cut being healed and a chunk being blackholed cannot interleave:
/// every connection that lost bytes to a cut is reset when that cut is lifted.
struct LinkState {
    faults: [Fault; 2],
    rng: Rng,
    next_id: u64,
    connections: HashMap<u64, Tracked>,
}

/// What the control side knows of a live connection.
struct Tracked {
    /// Per direction: a cut blackholed some of this connection's bytes (or its FIN).
    lost: [bool; 2],
    /// Wakes the connection task to reset both sides.
    kill: Arc<Notify>,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    connect_failures: AtomicU64,
    forwarded: [AtomicU64; 2],
    chunks_blackholed: AtomicU64,
    bytes_blackholed: AtomicU64,
    chunks_dropped: AtomicU64,
    aborted: AtomicU64,
    closed_on_heal: AtomicU64,
}

impl Link {
    fn new(seed: u64) -> Link {
        let state = LinkState {
            faults: Default::default(),
            rng: Rng::new(seed),
            next_id: 0,
            connections: HashMap::new(),
        };
        Link { state: Mutex::new(state), counters: Counters::default() }
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Nothing panics while holding the lock, but a poisoned fault table is still valid.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection; its id and the signal that resets it.
    fn register(&self) -> (u64, Arc<Notify>) {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let kill = Arc::new(Notify::new());
        state.connections.insert(id, Tracked { lost: [false; 2], kill: kill.clone() });
        (id, kill)
    }

    fn deregister(&self, id: u64) {
        self.lock().connections.remove(&id);
    }

    /// Decides the fate of a chunk of `bytes` just read in `direction`.
    fn admit(&self, id: u64, direction: Direction, bytes: usize) -> Verdict {
        let mut state = self.lock();
        match state.faults[direction.index()].clone() {
            Fault::None => Verdict::Forward(Instant::now()),
            Fault::Cut => {
                self.blackhole(&mut state, id, direction, Some(bytes));
                Verdict::Blackhole
            }
            Fault::Delay { mean, jitter } => {
                Verdict::Forward(Instant::now() + state.rng.jittered(mean, jitter))
            }
            Fault::Drop { probability } if state.rng.chance(probability) => {
                self.counters.chunks_dropped.fetch_add(1, Ordering::Relaxed);
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                Verdict::Abort
            }
            Fault::Drop { .. } => Verdict::Forward(Instant::now()),
        }
    }

    /// At release time: false if a cut set since the chunk was queued swallows it. `bytes: None`
    /// is the FIN, which a cut swallows too (the receiver must not see a clean close).
    fn deliverable(&self, id: u64, direction: Direction, bytes: Option<usize>) -> bool {
        let mut state = self.lock();
        if state.faults[direction.index()] != Fault::Cut {
            return true;
        }
        self.blackhole(&mut state, id, direction, bytes);
        false
    }

    fn blackhole(&self, state: &mut LinkState, id: u64, direction: Direction, bytes: Option<usize>) {
        if let Some(tracked) = state.connections.get_mut(&id) {
            tracked.lost[direction.index()] = true;
        }
        if let Some(bytes) = bytes {
            self.counters.chunks_blackholed.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes_blackholed.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn forwarded(&self, direction: Direction, bytes: usize) {
        self.counters.forwarded[direction.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Accepts until aborted; the JoinSet it owns aborts every connection task when it is dropped.
async fn accept_loop(listener: TcpListener, target: SocketAddr, link: Arc<Link>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    link.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(connection::serve(client, target, link.clone()));
                }
                // Out of descriptors and the like: back off so a persistent error cannot spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
