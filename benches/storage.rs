//! Storage benches, each beside a reference measured in the same run:
//! - apply: entries applied per transaction through the state machine vs. the same number of
//!   raw sled inserts (what apply costs above the bare key-value store);
//! - codec: msgpack (named) encode+decode of a log payload vs. JSON of the same value.

use std::sync::Arc;

use cograft_actors::command::{Command, Proposal, ProposalBatch};
use cograft_actors::model::{Merge, TruthValue};
use cograft_actors::storage;
use cograft_actors::storage::metrics::StorageMetrics;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use openraft::{EntryPayload, LeaderId, LogId};

const RUN: u64 = 256;

fn proposal(i: u64) -> Proposal {
    Proposal {
        key: format!("bench-{i}"),
        time_ms: 1_700_000_000_000 + i,
        space: "default".into(),
        command: Command::AddNode {
            atom_type: "ConceptNode".into(),
            name: format!("concept number {i}"),
            tv: Some(TruthValue { strength: 0.9, confidence: 0.8 }),
            merge: Merge::Latest,
        },
    }
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(RUN));
    let dir = tempfile::tempdir().unwrap();
    let stores = storage::open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut cograft_actors::metrics::registry())),
    )
    .unwrap();
    let mut next = 1u64;
    group.bench_function("state_machine_256_entries", |b| {
        b.iter_batched(
            || {
                let entries: Vec<_> = (next..next + RUN)
                    .map(|i| openraft::Entry {
                        log_id: LogId::new(LeaderId::new(1, 1), i),
                        payload: EntryPayload::Normal(ProposalBatch { proposals: vec![proposal(i)] }),
                    })
                    .collect();
                next += RUN;
                entries
            },
            |entries| stores.core.apply(entries).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let raw = sled::Config::new().temporary(true).open().unwrap();
    let mut key = 0u64;
    group.bench_function("reference_raw_sled_256_inserts", |b| {
        b.iter(|| {
            for i in 0..RUN {
                key += 1;
                raw.insert(key.to_be_bytes(), rmp_serde::to_vec_named(&proposal(i)).unwrap()).unwrap();
            }
        })
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    let p = proposal(7);
    group.bench_function("msgpack_named_roundtrip", |b| {
        b.iter(|| rmp_serde::from_slice::<Proposal>(&rmp_serde::to_vec_named(&p).unwrap()).unwrap())
    });
    group.bench_function("reference_json_roundtrip", |b| {
        b.iter(|| serde_json::from_slice::<Proposal>(&serde_json::to_vec(&p).unwrap()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, apply, codec);
criterion_main!(benches);
