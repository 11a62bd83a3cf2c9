//! The worker pool of one model: a bounded queue of requests, worker processes that take them one
//! at a time, and the supervision around them. The pool keeps `workers_min` workers, starts
//! another (up to `workers_max`) when requests wait and no worker is idle, and lets workers above
//! the minimum exit after `idle_retire` without work. A lost worker (crash, timeout, failed start)
//! costs the request it held, is counted, and is replaced after a backoff; lost workers in a row
//! open the pool's circuit breaker, which then refuses requests at once (503 with Retry-After).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use super::metrics::{InferenceMetrics, LossLabels, OutcomeLabels, PoolLabel};
use super::process::{Launch, Lost, WorkerProcess};
use super::protocol::{ModelInfo, Reply, Request};
use crate::resilience::Breaker;
use crate::{Error, Result};

/// Backoff between failed starts of one worker slot: doubles from the first, up to the cap.
const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const RESTART_BACKOFF_CAP: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The pool's label in metrics and messages (`embedding`).
    pub pool: &'static str,
    pub launch: Launch,
    pub workers_min: usize,
    pub workers_max: usize,
    pub request_timeout: Duration,
    pub idle_retire: Duration,
    pub queue_limit: usize,
}

/// How long a caller waits past its deadline for the worker's own verdict (a kill and reap).
const VERDICT_GRACE: Duration = Duration::from_secs(5);

struct Job {
    request: Request,
    /// When the request's time is up: its worker is killed then, and a job still queued then
    /// is answered without running.
    deadline: Instant,
    reply: oneshot::Sender<std::result::Result<Reply, Failure>>,
}

/// Why a job has no reply.
enum Failure {
    /// The worker holding it was lost (crash, timeout); names the worker and how it ended.
    Lost(String),
    /// No worker took it before its deadline.
    Expired,
}

/// What a worker's wait for work ended with.
enum Next {
    Job(Job),
    /// This worker is surplus and idle: it was counted out of `live` already.
    Retire,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Starting,
    Idle,
    Busy,
}

/// One worker as `/admin/inference` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerStatus {
    pub slot: u64,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub requests: u64,
}

/// The pool as `/admin/inference` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PoolStatus {
    pub pool: &'static str,
    pub model: Option<ModelInfo>,
    pub workers: Vec<WorkerStatus>,
    pub workers_min: usize,
    pub workers_max: usize,
    pub queue_depth: usize,
    pub breaker: &'static str,
    /// Workers lost since the node started (crashes, timeouts, failed starts).
    pub workers_lost: u64,
    pub last_loss: Option<String>,
}

struct Shared {
    config: PoolConfig,
    queue: Mutex<VecDeque<Job>>,
    work: Notify,
    slots: Mutex<Vec<WorkerStatus>>,
    live: AtomicUsize,
    next_slot: AtomicU64,
    lost: AtomicU64,
    last_loss: Mutex<Option<String>>,
    model: Mutex<Option<ModelInfo>>,
    closed: AtomicBool,
    breaker: Arc<Breaker>,
    metrics: InferenceMetrics,
}

/// A handle to one model's pool (cheap to clone).
#[derive(Clone)]
pub struct WorkerPool {
    shared: Arc<Shared>,
}

impl WorkerPool {
    /// Starts the pool and its minimum of workers. Call inside a Tokio runtime.
    pub fn start(config: PoolConfig, breaker: Arc<Breaker>, metrics: InferenceMetrics) -> WorkerPool {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            work: Notify::new(),
            slots: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            next_slot: AtomicU64::new(1),
            lost: AtomicU64::new(0),
            last_loss: Mutex::new(None),
            model: Mutex::new(None),
            closed: AtomicBool::new(false),
            breaker,
            metrics,
            config,
        });
        for _ in 0..shared.config.workers_min {
            spawn_worker(&shared);
        }
        WorkerPool { shared }
    }

    /// The model the workers loaded, once one has.
    pub fn model(&self) -> Option<ModelInfo> {
        self.shared.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `request` on a worker. Fails at once when the queue is full or the breaker open;
    /// a lost worker fails only the request it held.
    pub async fn call(&self, request: Request) -> Result<Reply> {
        let shared = &self.shared;
        let started = Instant::now();
        let outcome = |o: &'static str| {
            shared
                .metrics
                .requests
                .get_or_create(&OutcomeLabels { pool: shared.config.pool, outcome: o })
                .inc();
        };
        let call = match shared.breaker.call() {
            Ok(call) => call,
            Err(refused) => {
                outcome("refused");
                let why = shared.last_loss.lock().unwrap_or_else(|p| p.into_inner()).clone();
                return Err(Error::Unavailable {
                    what: format!(
                        "the {} workers failed repeatedly and the pool's circuit breaker is {}; last \
                         failure: {}",
                        shared.config.pool,
                        refused.state.as_str(),
                        why.unwrap_or_else(|| "none recorded".into())
                    ),
                    retry_after_s: refused.retry_after.as_secs().max(1) as u32,
                });
            }
        };
        if shared.closed.load(Ordering::Acquire) {
            outcome("unavailable");
            return Err(Error::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        let deadline = started + shared.config.request_timeout;
        {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.len() >= shared.config.queue_limit {
                drop(queue);
                outcome("overloaded");
                return Err(Error::Overloaded(format!(
                    "{} inference requests are waiting (inference.queue_limit)",
                    shared.config.queue_limit
                )));
            }
            queue.push_back(Job { request, deadline, reply: tx });
            self.set_queue_gauge(queue.len());
        }
        shared.work.notify_one();
        self.grow_if_waiting();
        // The worker kills a job's process at the deadline and answers why; the grace lets that
        // verdict arrive. Past it, no worker ever took the job (none could start).
        let answer = tokio::time::timeout_at((deadline + VERDICT_GRACE).into(), rx).await;
        shared
            .metrics
            .request_seconds
            .get_or_create(&PoolLabel { pool: shared.config.pool })
            .observe(started.elapsed().as_secs_f64());
        let timeout_ms = shared.config.request_timeout.as_millis();
        let pool = shared.config.pool;
        match answer {
            Ok(Ok(Ok(reply))) => {
                outcome(if matches!(reply, Reply::Failed { .. }) { "failed" } else { "ok" });
                call.success();
                Ok(reply)
            }
            Ok(Ok(Err(Failure::Lost(what)))) => {
                outcome("crashed");
                call.failure();
                Err(Error::Unavailable { what, retry_after_s: 1 })
            }
            // Busy workers, not broken ones: no verdict on them.
            Ok(Ok(Err(Failure::Expired))) => {
                outcome("timeout");
                drop(call);
                Err(Error::Unavailable {
                    what: format!(
                        "every {pool} worker was busy for {timeout_ms} ms (inference.request_timeout_ms);                          retry, or raise inference.workers_max"
                    ),
                    retry_after_s: 1,
                })
            }
            Ok(Err(_)) => {
                outcome("unavailable");
                drop(call);
                Err(Error::ShuttingDown)
            }
            Err(_) => {
                outcome("timeout");
                call.failure();
                let why = shared.last_loss.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Err(Error::Unavailable {
                    what: format!(
                        "no {pool} worker took the request within {timeout_ms} ms                          (inference.request_timeout_ms); last worker failure: {}",
                        why.unwrap_or_else(|| "none recorded".into())
                    ),
                    retry_after_s: 1,
                })
            }
        }
    }

    /// Starts one more worker when requests wait, none is idle, and the pool may grow.
    fn grow_if_waiting(&self) {
        let shared = &self.shared;
        let waiting = shared.queue.lock().unwrap_or_else(|p| p.into_inner()).len();
        let idle = shared
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|s| s.state != WorkerState::Busy)
            .count();
        if waiting > idle && shared.live.load(Ordering::Acquire) < shared.config.workers_max {
            spawn_worker(shared);
        }
    }

    fn set_queue_gauge(&self, depth: usize) {
        self.shared
            .metrics
            .queue_depth
            .get_or_create(&PoolLabel { pool: self.shared.config.pool })
            .set(depth as i64);
    }

    pub fn status(&self) -> PoolStatus {
        let shared = &self.shared;
        PoolStatus {
            pool: shared.config.pool,
            model: self.model(),
            workers: shared.slots.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            workers_min: shared.config.workers_min,
            workers_max: shared.config.workers_max,
            queue_depth: shared.queue.lock().unwrap_or_else(|p| p.into_inner()).len(),
            breaker: shared.breaker.state().as_str(),
            workers_lost: shared.lost.load(Ordering::Relaxed),
            last_loss: shared.last_loss.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Lets every worker exit (idle ones at once, busy ones after their request).
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.work.notify_waiters();
    }
}

/// Starts a worker slot. Only ever called on the node's one runtime thread, so a check of
/// `live` and the spawn after it cannot interleave with another.
fn spawn_worker(shared: &Arc<Shared>) {
    let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
    let live = shared.live.fetch_add(1, Ordering::AcqRel) + 1;
    shared.metrics.workers.get_or_create(&PoolLabel { pool: shared.config.pool }).set(live as i64);
    shared.slots.lock().unwrap_or_else(|p| p.into_inner()).push(WorkerStatus {
        slot,
        pid: None,
        state: WorkerState::Starting,
        requests: 0,
    });
    tokio::spawn(run_slot(shared.clone(), slot));
}

impl Shared {
    fn remove_slot(&self, slot: u64) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| s.slot != slot);
        let live = self.live.load(Ordering::Acquire);
        self.metrics.workers.get_or_create(&PoolLabel { pool: self.config.pool }).set(live as i64);
    }

    fn update_slot(&self, slot: u64, f: impl FnOnce(&mut WorkerStatus)) {
        if let Some(s) =
            self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter_mut().find(|s| s.slot == slot)
        {
            f(s);
        }
    }

    fn record_loss(&self, lost: &Lost) {
        let detail = match lost {
            Lost::Start(d) | Lost::Crash(d) => d.clone(),
            Lost::Timeout(t) => format!("a worker did not answer within {} ms and was killed", t.as_millis()),
        };
        tracing::warn!(pool = self.config.pool, reason = lost.reason(), "{detail}");
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .worker_losses
            .get_or_create(&LossLabels { pool: self.config.pool, reason: lost.reason() })
            .inc();
        *self.last_loss.lock().unwrap_or_else(|p| p.into_inner()) = Some(detail);
    }

    /// The next job; or, after `idle_retire` without one, `Retire` when this worker is above
    /// the minimum (claimed atomically, so two idle workers cannot both leave a pool at its
    /// minimum); or `Closed`.
    async fn next_job(&self) -> Next {
        let mut idle_since = Instant::now();
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.pop_front().map(|job| (job, queue.len()))
            };
            if let Some((job, depth)) = taken {
                self.metrics
                    .queue_depth
                    .get_or_create(&PoolLabel { pool: self.config.pool })
                    .set(depth as i64);
                return Next::Job(job);
            }
            if self.closed.load(Ordering::Acquire) {
                return Next::Closed;
            }
            let retire_at = idle_since + self.config.idle_retire;
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(retire_at.into()) => {
                    let min = self.config.workers_min;
                    if self.live.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > min).then(|| n - 1)).is_ok() {
                        return Next::Retire;
                    }
                    idle_since = Instant::now();
                }
            }
        }
    }
}

/// One worker slot: starts a process, serves jobs with it, replaces it when it is lost, and
/// ends when the pool closes or the slot retires.
async fn run_slot(shared: Arc<Shared>, slot: u64) {
    let mut backoff = RESTART_BACKOFF_FIRST;
    while !shared.closed.load(Ordering::Acquire) {
        shared.update_slot(slot, |s| {
            s.state = WorkerState::Starting;
            s.pid = None;
        });
        let mut worker = match WorkerProcess::start(&shared.config.launch).await {
            Ok(worker) => worker,
            Err(lost) => {
                shared.record_loss(&lost);
                shared.breaker.call().map(|c| c.failure()).ok();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RESTART_BACKOFF_CAP);
                continue;
            }
        };
        backoff = RESTART_BACKOFF_FIRST;
        *shared.model.lock().unwrap_or_else(|p| p.into_inner()) = Some(worker.model.clone());
        let pid = worker.pid;
        shared.update_slot(slot, |s| s.pid = Some(pid));
        loop {
            shared.update_slot(slot, |s| s.state = WorkerState::Idle);
            let job = match shared.next_job().await {
                Next::Job(job) => job,
                Next::Retire => {
                    // Out of the slot list first: nothing counts a stopping worker as idle.
                    shared.remove_slot(slot);
                    worker.stop().await;
                    return;
                }
                Next::Closed => {
                    worker.stop().await;
                    return retire(&shared, slot);
                }
            };
            if job.reply.is_closed() {
                continue; // its caller gave up while it waited
            }
            let Some(left) = job.deadline.checked_duration_since(Instant::now()) else {
                let _ = job.reply.send(Err(Failure::Expired));
                continue;
            };
            shared.update_slot(slot, |s| {
                s.state = WorkerState::Busy;
                s.requests += 1;
            });
            match worker.ask(&job.request, left).await {
                Ok(reply) => {
                    let _ = job.reply.send(Ok(reply));
                }
                Err(lost) => {
                    shared.record_loss(&lost);
                    let what = match &lost {
                        Lost::Timeout(_) => format!(
                            "the {} worker (pid {pid}) had not answered when the request's {} ms ran out \
                             (inference.request_timeout_ms); it was killed and is being restarted",
                            shared.config.pool,
                            shared.config.request_timeout.as_millis()
                        ),
                        Lost::Start(d) | Lost::Crash(d) => d.clone(),
                    };
                    let _ = job.reply.send(Err(Failure::Lost(what)));
                    break;
                }
            }
        }
    }
    retire(&shared, slot);
}

/// Ends a slot that is still counted in `live` (the pool closed).
fn retire(shared: &Shared, slot: u64) {
    shared.live.fetch_sub(1, Ordering::AcqRel);
    shared.remove_slot(slot);
}
