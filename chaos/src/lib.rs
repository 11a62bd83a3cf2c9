//! cograft-chaos: the harness that proves cograft loses no acknowledged write. It owns the
//! fault proxy (`proxy`), the proxied cluster (`cluster`), the `nemesis`, the workloads, the
//! history recorder and the linearizability checker, the etcd control, and the run's report.

pub mod cluster;
pub mod etcd;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod run;
pub mod workload;
