//! Starts one node: opens sled, starts the Raft and storage actors, binds HTTP, then waits for
//! SIGTERM/SIGINT and shuts down in logged phases (not ready -> stop accepting and drain ->
//! stop Raft -> flush -> exit).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use cograft_actors::attention::metrics::AttentionMetrics;
use cograft_actors::attention::scheduler::SchedulerParts;
use cograft_actors::attention::AttentionScheduler;
use cograft_actors::health::metrics::HealthMetrics;
use cograft_actors::health::node_checks::{
    AppliedCaughtUp, DiskSpace, LeaderKnown, QuorumContact, RaftAlive, ReplicationLag, Serving, StorageAlive,
    StorageWritable,
};
use cograft_actors::health::{HealthChecks, HealthMonitor};
use cograft_actors::inference::metrics::InferenceMetrics;
use cograft_actors::inference::InferenceActor;
use cograft_actors::metrics::{self, Exporter};
use cograft_actors::raft::actor::{Shutdown, WatchMetrics};
use cograft_actors::raft::metrics::RaftMetricsFamilies;
use cograft_actors::raft::{PeerNetwork, RaftActor};
use cograft_actors::resilience::{Breaker, BreakerMetrics};
use cograft_actors::similarity::actor::SimilarityActor;
use cograft_actors::similarity::backfill::{BackfillParts, EmbeddingBackfill};
use cograft_actors::similarity::follow::{self as vectors, SharedVectors};
use cograft_actors::similarity::metrics::{BackfillMetrics, SimilarityMetrics};
use cograft_actors::similarity::structural::{StructuralBuilder, StructuralParts};
use cograft_actors::spreading::metrics::SpreadingMetrics;
use cograft_actors::spreading::probe::SpreadingHealth;
use cograft_actors::spreading::{follow, SharedIndex, SpreadingActor};
use cograft_actors::storage::actor::StorageActor;
use cograft_actors::storage::metrics::StorageMetrics;
use cograft_actors::storage::reads::GraphReader;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::{self, AppState};
use crate::config::Settings;

/// How long in-flight requests may finish after shutdown begins.
const DRAIN_TIMEOUT_SECS: u64 = 10;

/// Runs a node until SIGTERM/SIGINT. Call inside an actix System.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let data_dir = settings.node.data_dir.clone();
    // The address first: a node that cannot listen stops before it opens its data or starts
    // a thread (found later, the error dropped actors and worker pools outside their runtime).
    let listener = std::net::TcpListener::bind(&settings.node.listen).with_context(|| {
        format!(
            "binding {} (node.listen): another process listens there, or the address is not this \
             host's; pick a free port with --listen or COGRAFT__NODE__LISTEN",
            settings.node.listen
        )
    })?;
    // One registry per process; each component registers its own families into it.
    let mut registry = metrics::registry();
    let storage_metrics = Arc::new(StorageMetrics::register(&mut registry));
    let raft_metrics_families = Arc::new(RaftMetricsFamilies::register(&mut registry));
    let http_metrics = crate::api::metrics::HttpMetrics::register(&mut registry);
    let spreading_metrics = SpreadingMetrics::register(&mut registry);
    let similarity_metrics = SimilarityMetrics::register(&mut registry);
    let breaker_metrics = BreakerMetrics::register(&mut registry);
    let health_metrics = HealthMetrics::register(&mut registry);
    let attention_metrics = AttentionMetrics::register(&mut registry);
    let inference_metrics = InferenceMetrics::register(&mut registry);
    let backfill_metrics = BackfillMetrics::register(&mut registry);
    let exporter = Arc::new(Exporter::new(registry));
    let stores =
        cograft_actors::storage::open(&data_dir, settings.storage_options(), storage_metrics.clone())?;
    if stores.log.forget_leadership(settings.node.id)? {
        tracing::info!(
            "this node led before it stopped; it will stand for election again instead of resuming"
        );
    }
    let committed = stores.log.committed_index();
    let peers = PeerNetwork::new(
        settings.cluster.secret.clone(),
        settings.peer_overrides()?,
        Duration::from_millis(settings.raft.connect_timeout_ms),
    );
    let (raft, raft_arbiter) = RaftActor::spawn(
        settings.raft_settings(),
        stores.log.clone(),
        stores.state_machine.clone(),
        peers,
        raft_metrics_families,
    )
    .await?;
    let reader = GraphReader::new(stores.core.clone());
    let storage = StorageActor::start_pool(reader.clone(), settings.storage.read_threads);
    // The spreading index follows the state machine from here on; spreads answer 503 until
    // its first build from storage is done.
    let spread_index = Arc::new(SharedIndex::default());
    follow::start(reader.clone(), spread_index.clone(), spreading_metrics.clone())
        .context("starting the spreading index thread")?;
    let spreading = SpreadingActor::start_pool(
        settings.spreading.workers,
        spread_index.clone(),
        reader.clone(),
        Arc::new(Breaker::new("spreading", settings.spreading_breaker(), breaker_metrics.clone())),
        spreading_metrics,
    );
    // The vector index follows the same way; searches answer 503 until its first build.
    let vector_index = Arc::new(SharedVectors::default());
    vectors::start(reader.clone(), vector_index.clone(), similarity_metrics.clone())
        .context("starting the vector index thread")?;
    let similarity = SimilarityActor::start_pool(
        settings.similarity.workers,
        settings.similarity.product_threads,
        vector_index.clone(),
        reader.clone(),
        similarity_metrics.clone(),
    );
    let program = std::env::current_exe().context("finding this binary (inference workers run it)")?;
    let inference =
        InferenceActor::new(settings.inference.clone(), &program, breaker_metrics, inference_metrics)?
            .start();
    let raft_metrics = raft.send(WatchMetrics).await?;
    let serving = Arc::new(AtomicBool::new(true));
    if settings.attention.interval_ms > 0 {
        AttentionScheduler::new(SchedulerParts {
            node_id: settings.node.id,
            step: settings.attention_step(),
            interval: Duration::from_millis(settings.attention.interval_ms),
            raft: raft.clone(),
            raft_metrics: raft_metrics.clone(),
            storage: storage.clone(),
            serving: serving.clone(),
            metrics: attention_metrics,
        })
        .start();
    }
    let backfill = EmbeddingBackfill::new(BackfillParts {
        node_id: settings.node.id,
        enabled: !settings.inference.embedding_model.as_os_str().is_empty(),
        interval: Duration::from_millis(settings.similarity.backfill_interval_ms),
        // Each batch is one embedding request: never more names than a request may carry.
        batch: settings.similarity.backfill_batch.min(settings.inference.max_texts),
        max_text_bytes: settings.inference.max_text_bytes,
        max_entry_bytes: settings.api.max_entry_bytes,
        raft: raft.clone(),
        raft_metrics: raft_metrics.clone(),
        storage: storage.clone(),
        inference: inference.clone(),
        reader: reader.clone(),
        serving: serving.clone(),
        metrics: backfill_metrics,
    })
    .start();

    let structural = StructuralBuilder::new(StructuralParts {
        graph: spread_index.clone(),
        vectors: vector_index.clone(),
        raft: raft.clone(),
        max_entry_bytes: settings.api.max_entry_bytes,
        threads: settings.similarity.product_threads,
        max_memory_bytes: settings.similarity.structural_max_memory_mb.saturating_mul(1 << 20),
        metrics: similarity_metrics,
    })
    .start();

    let health = HealthChecks::default();
    health.register(Arc::new(RaftAlive(raft.clone())));
    health.register(Arc::new(StorageAlive(storage.clone())));
    health.register(Arc::new(Serving(serving.clone())));
    health.register(Arc::new(LeaderKnown(raft_metrics.clone())));
    health.register(Arc::new(StorageWritable(stores.db.clone())));
    health.register(Arc::new(AppliedCaughtUp {
        metrics: raft_metrics.clone(),
        committed: committed.clone(),
        max_lag: settings.api.ready_max_lag,
    }));
    health.register(Arc::new(QuorumContact {
        metrics: raft_metrics.clone(),
        election_timeout_ms: settings.raft.election_timeout_max_ms,
    }));
    health.register(Arc::new(ReplicationLag {
        metrics: raft_metrics.clone(),
        max_lag: settings.api.ready_max_lag,
    }));
    health.register(Arc::new(DiskSpace(data_dir.clone())));
    health.register(Arc::new(SpreadingHealth::new(
        spreading.clone(),
        spread_index.clone(),
        raft_metrics.clone(),
        settings.spreading_probe(),
    )));
    let health_monitor = HealthMonitor::new(
        health.clone(),
        Duration::from_millis(settings.health.interval_ms),
        Duration::from_millis(settings.health.check_timeout_ms),
        health_metrics,
    )
    .start();

    let state = web::Data::new(AppState {
        node_id: settings.node.id,
        settings: settings.clone(),
        raft: raft.clone(),
        storage,
        spreading,
        similarity,
        vector_index,
        inference,
        backfill,
        structural,
        spread_index,
        exporter,
        http_metrics,
        storage_metrics,
        health,
        health_monitor,
        serving: serving.clone(),
        db: stores.db.clone(),
        reader,
        digest_running: Arc::default(),
        export_running: Arc::default(),
    });
    let body_limit = settings.api.body_limit_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(body_limit).error_handler(api::error::json_error))
            .wrap(api::json_errors())
            .wrap(from_fn(api::record_http))
            .configure(api::configure)
    })
    .workers(settings.api.workers)
    .disable_signals()
    .shutdown_timeout(DRAIN_TIMEOUT_SECS)
    .listen(listener)
    .with_context(|| format!("listening on {}", settings.node.listen))?
    .run();
    let handle = server.handle();
    let server_task = actix_web::rt::spawn(server);
    tracing::info!(node_id = settings.node.id, listen = %settings.node.listen, data_dir = %data_dir.display(), "node started");

    let reason = tokio::select! {
        signal = wait_for_signal() => signal?,
        ended = server_task => format!("the HTTP server stopped: {ended:?}"),
    };
    tracing::info!(%reason, "shutdown: phase 1/4, marking not ready");
    serving.store(false, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        "shutdown: phase 2/4, stop accepting and drain in-flight requests (up to {DRAIN_TIMEOUT_SECS} s)"
    );
    handle.stop(true).await;
    tracing::info!("shutdown: phase 3/4, stopping Raft");
    if let Err(e) = raft.send(Shutdown).await? {
        tracing::warn!(error = %e, "raft shutdown reported an error");
    }
    tracing::info!("shutdown: phase 4/4, flushing storage");
    stores.log.sync().await.context("final flush of the data directory")?;
    raft_arbiter.stop();
    tracing::info!("shutdown complete");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<String> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM".to_string(),
        _ = int.recv() => "SIGINT".to_string(),
    })
}
