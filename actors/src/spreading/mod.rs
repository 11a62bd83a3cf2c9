//! Recall by association: spreading activation over the replicated hypergraph. It owns the
//! in-memory incidence index (`index`, one per space, and `indexes`, all of them at one applied
//! index), the thread that keeps it current from the state machine's announcements (`follow`),
//! the pure algorithm (`activation`), the request's parameters and their checks (`params`), the
//! actor pool that answers spreads (`actor`), its metrics, and its health check (`probe`).

pub mod activation;
pub mod actor;
pub mod follow;
pub mod index;
pub mod indexes;
pub mod metrics;
pub mod params;
pub mod probe;
pub mod synthetic;
#[cfg(test)]
pub mod test_graph;

pub use actor::{RunSpread, SpreadReply, SpreadingActor};
pub use follow::SharedIndex;
