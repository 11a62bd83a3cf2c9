//! Raft for one node: the actor that owns `openraft::Raft` on its own Arbiter (`actor`), the
//! peer client it uses to reach other nodes (`network`), and the RPC paths they share.

pub mod actor;
pub mod batcher;
pub mod metrics;
pub mod network;
mod ops;
mod read_rounds;

pub use actor::{RaftActor, RaftSettings, StatusReport, WriteOutcome};
pub use network::{PeerNetwork, DEADLINE_HEADER, FORMAT_HEADER, SECRET_HEADER};

/// Peer RPC paths under `/raft` (msgpack bodies).
pub mod path {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    /// A follower hands a client write to the leader.
    pub const FORWARD: &str = "/raft/forward";
    /// A follower asks the leader which log id a linearizable read must wait for.
    pub const READ_INDEX: &str = "/raft/read-index";
}
