//! The node's observability: the one metrics Registry (`metrics`) and the health-check interface
//! that components register into (`check`).

pub mod check;
pub mod node_checks;

pub use check::{Check, CheckReport, HealthChecks, Probe};
