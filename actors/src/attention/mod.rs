//! ECAN attention, the part that runs beside the state machine: the leader's
//! [`AttentionScheduler`], which proposes one bounded [`AttentionStep`] per interval, and its
//! metrics. What a step does to the graph is apply's (`storage::apply::attention`), so it is
//! replicated and identical on every node; stimulation is an ordinary write.
//!
//! [`AttentionStep`]: crate::command::AttentionStep

pub mod metrics;
pub mod scheduler;

pub use scheduler::AttentionScheduler;
