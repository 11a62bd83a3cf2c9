//! The actors crate's error type: one enum with context, mapped to HTTP once in the binary.

use std::path::PathBuf;

use crate::command::Rejection;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is malformed (caught before anything is proposed).
    #[error("{0}")]
    Invalid(String),
    /// The encoded log entry would exceed the limit that keeps sled from writing blob files.
    #[error("the request encodes to {size} bytes; the limit for one log entry is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// A request exceeds a configured limit (texts per request, bytes per text, ...).
    #[error("{what}; the limit is {limit} ({setting})")]
    LimitExceeded { what: String, limit: usize, setting: &'static str },
    #[error("{what} not found")]
    NotFound { what: String },
    /// Apply refused the command; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// No leader is known right now (election in progress or no quorum).
    #[error("no leader is known: {0}")]
    NoLeader(String),
    /// `init` on a node that already has a membership.
    #[error("the cluster is already initialised")]
    AlreadyInitialized,
    /// A membership change must be made on the leader.
    #[error("this node is not the leader; send the request to node {leader_id:?} at {leader_addr:?}")]
    NotLeader { leader_id: Option<u64>, leader_addr: Option<String> },
    #[error("storage error in {dir}: {cause}")]
    Storage { dir: PathBuf, cause: String },
    /// sled found damaged files; the node must not start on them.
    #[error(
        "the data directory {dir} is damaged ({cause}). This node refuses to start on it. \
         Recovery: remove this node from the cluster (`cograft admin remove-node`), move the \
         directory away, start the node empty and re-add it as a learner (`cograft admin \
         add-learner`) so it copies a snapshot from the leader"
    )]
    Corrupted { dir: PathBuf, cause: String },
    /// The data directory was written in a format this build does not read.
    #[error("the data directory {dir} cannot be used by this build: {cause}")]
    Format { dir: PathBuf, cause: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("peer {peer}: {cause}")]
    Peer { peer: u64, cause: String },
    /// Too much work is waiting; the client should retry shortly.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A component cannot serve right now (an index being built, a breaker open).
    #[error("{what}")]
    Unavailable { what: String, retry_after_s: u32 },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Something this node should have prevented went wrong (a bug, not the request's fault).
    #[error("internal error: {0}")]
    Internal(String),
}
