//! The node's health: the check interface that components implement and register into
//! (`check`), the checks every node has (`node_checks`), and the monitor actor that runs them
//! all on an interval, scores each run, keeps the scores' history and trend (`trend`) and exports
//! their verdicts (`monitor`, `metrics`).

pub mod check;
pub mod metrics;
pub mod monitor;
pub mod node_checks;
pub mod trend;

pub use check::{Check, CheckReport, Health, HealthChecks, Probe};
pub use monitor::{GetReport, HealthMonitor, HealthReport};
