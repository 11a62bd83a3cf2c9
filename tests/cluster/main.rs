//! Black-box cluster tests: real `cograft` processes on loopback ports in temp dirs, one
//! cluster at a time. Each module is a scenario.

mod attention;
mod availability;
#[cfg(feature = "inference")]
mod backfill;
mod bad_input;
mod cluster_up;
mod compare;
#[cfg(feature = "inference")]
mod embeddings;
mod failover;
mod harness;
mod health;
#[cfg(feature = "inference")]
mod language;
mod lifecycle;
mod links;
mod membership;
mod observability;
mod operations;
mod outcomes;
#[cfg(feature = "inference")]
mod recall;
mod replication;
mod semantics;
mod similar;
mod snapshots;
mod spaces;
mod spreading;
mod structure;
mod transfer;
