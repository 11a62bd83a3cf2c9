//! Resilience, one implementation of each, for every component that needs it: the circuit
//! [`Breaker`](breaker::Breaker) (spreading today; peer RPC, forwarding and inference as they
//! adopt it). Retry with jitter, rate limits and permits join here when their issues land.

pub mod breaker;

pub use breaker::{Breaker, BreakerConfig, BreakerMetrics, BreakerState};
