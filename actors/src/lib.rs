//! cograft-actors: everything that runs inside a cograft node. It owns the data model, the log
//! payload (`Command`), the sled-backed Raft log and state machine with file snapshots, the Raft
//! actor and its peer network, the leader's ECAN attention steps, spreading activation over an
//! in-memory index of the graph, the inference worker pools (llama.cpp out of process), the
//! hybrid recall's ranking, anomalies in the outcome history, the resilience primitives (circuit breaker), the metrics registry
//! (each component registers its own families) and the node's health checks.

pub mod attention;
pub mod command;
pub mod error;
pub mod failpoint;
pub mod health;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod outcomes;
pub mod raft;
pub mod recall;
pub mod resilience;
pub mod similarity;
pub mod spreading;
pub mod storage;

pub use error::{Error, Result};

/// Wall-clock milliseconds since the Unix epoch (only ever put into proposals, never read in apply).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

openraft::declare_raft_types!(
    /// cograft's Raft types: log payload `ProposalBatch`, apply result `BatchResults`.
    pub TypeConfig:
        D = command::ProposalBatch,
        R = command::BatchResults,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
);

/// Aliases for openraft's generic types over [`TypeConfig`]; nothing else spells them out.
pub mod typ {
    use super::TypeConfig;

    pub type NodeId = u64;
    pub type Node = openraft::BasicNode;
    pub type Raft = openraft::Raft<TypeConfig>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RpcError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, Node, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Node>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
}
