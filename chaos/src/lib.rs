//! cograft-chaos: the harness that proves cograft loses no acknowledged write. It owns the
//! fault proxy (`proxy`), the proxied cluster (`cluster`), the `nemesis`, the workloads, the
//! history recorder and the linearizability checker, the etcd control, the run's report, and the
//! durability audit (a node under strace, then a simulated power cut).

pub mod cluster;
pub mod durability;
pub mod etcd;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;
