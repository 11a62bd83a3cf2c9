//! HealthMonitor: runs every registered check on an interval (one run at a time), remembers
//! each check's verdict and since when it holds, scores each run and keeps the scores' history
//! and trend (`trend`), and exports them as metrics. Accepts
//! [`GetReport`], which `/admin/health` answers from. The probes (`/healthz`, `/readyz`) run
//! their checks themselves, on demand; this actor is what sees the component checks.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, MessageResult, WrapFuture};
use serde::Serialize;

use super::check::{CheckReport, Health, HealthChecks, Probe};
use super::metrics::{CheckLabel, HealthMetrics};
use super::trend::{score, History, Sample, Trend};

/// One check as the monitor last saw it.
#[derive(Clone, Debug, Serialize)]
pub struct CheckState {
    pub name: String,
    pub probe: Probe,
    #[serde(flatten)]
    pub health: Health,
    /// When the check entered its current status (ms since the epoch).
    pub since_ms: u64,
    /// Runs in a row that ended in the current status.
    pub runs: u64,
}

/// The node's health as of the monitor's last run.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    /// The worst status of any check.
    pub status: &'static str,
    /// When the last run finished (ms since the epoch); 0 before the first.
    pub checked_ms: u64,
    pub interval_ms: u64,
    /// The last run's score in [0, 1] (1 before the first).
    pub score: f64,
    /// Where the score went over the last runs.
    pub trend: Trend,
    /// The last runs' scores, oldest first.
    pub history: Vec<Sample>,
    pub checks: Vec<CheckState>,
}

/// Answers the last report.
pub struct GetReport;

impl Message for GetReport {
    type Result = HealthReport;
}

pub struct HealthMonitor {
    checks: HealthChecks,
    interval: Duration,
    timeout: Duration,
    metrics: HealthMetrics,
    states: BTreeMap<String, CheckState>,
    checked_ms: u64,
    history: History,
    running: bool,
}

impl HealthMonitor {
    /// A monitor running `checks` every `interval`, each bounded by `timeout`.
    pub fn new(checks: HealthChecks, interval: Duration, timeout: Duration, metrics: HealthMetrics) -> Self {
        HealthMonitor {
            checks,
            interval,
            timeout,
            metrics,
            states: BTreeMap::new(),
            checked_ms: 0,
            history: History::default(),
            running: false,
        }
    }

    fn run_checks(&mut self, ctx: &mut Context<Self>) {
        if self.running {
            return;
        }
        self.running = true;
        let checks = self.checks.clone();
        let timeout = self.timeout;
        let run = async move { checks.run_all(timeout).await };
        ctx.spawn(run.into_actor(self).map(|reports, monitor, _| {
            monitor.running = false;
            monitor.record(reports, crate::now_ms());
        }));
    }

    fn record(&mut self, reports: Vec<CheckReport>, now_ms: u64) {
        for CheckReport { name, probe, health, .. } in reports {
            let level = health.level();
            let label = CheckLabel { check: name.clone() };
            self.metrics.check_status.get_or_create(&label).set(i64::from(level));
            let before = self.states.get(&name).map(|s| s.health.level());
            if let Some(state) = self.states.get_mut(&name).filter(|_| before == Some(level)) {
                state.runs += 1;
                state.health = health;
                continue;
            }
            let (status, detail) = (health.status(), health.detail());
            match before {
                Some(b) if level < b => {
                    tracing::info!(check = %name, status, detail, "health check recovered")
                }
                Some(_) => tracing::warn!(check = %name, status, detail, "health check got worse"),
                None if level > 0 => {
                    tracing::warn!(check = %name, status, detail, "health check is not healthy")
                }
                None => {}
            }
            let state = CheckState { name: name.clone(), probe, health, since_ms: now_ms, runs: 1 };
            self.states.insert(name, state);
        }
        self.checked_ms = now_ms;
        self.metrics.status.set(i64::from(self.worst()));
        let score = self.score();
        self.history.push(now_ms, score);
        self.metrics.score.set(score);
    }

    fn score(&self) -> f64 {
        score(self.states.values().map(|s| (s.probe, s.health.level())))
    }

    fn worst(&self) -> u8 {
        self.states.values().map(|s| s.health.level()).max().unwrap_or(0)
    }

    fn report(&self) -> HealthReport {
        let status = match (self.checked_ms, self.worst()) {
            (0, _) => "unknown",
            (_, 0) => "healthy",
            (_, 1) => "degraded",
            _ => "unhealthy",
        };
        HealthReport {
            status,
            checked_ms: self.checked_ms,
            interval_ms: self.interval.as_millis() as u64,
            score: self.score(),
            trend: self.history.trend(),
            history: self.history.samples(),
            checks: self.states.values().cloned().collect(),
        }
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.run_checks(ctx);
        ctx.run_interval(self.interval, |monitor, ctx| monitor.run_checks(ctx));
    }
}

impl Handler<GetReport> for HealthMonitor {
    type Result = MessageResult<GetReport>;

    fn handle(&mut self, _: GetReport, _: &mut Context<Self>) -> MessageResult<GetReport> {
        MessageResult(self.report())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, health: Health) -> CheckReport {
        CheckReport { name: name.into(), probe: Probe::Report, ok: health.level() < 2, health }
    }

    fn monitor() -> HealthMonitor {
        let metrics = HealthMetrics::register(&mut crate::metrics::registry());
        HealthMonitor::new(HealthChecks::default(), Duration::from_secs(1), Duration::from_secs(1), metrics)
    }

    #[test]
    fn a_status_keeps_its_start_until_it_changes_and_the_worst_check_decides() {
        let mut m = monitor();
        assert_eq!(m.report().status, "unknown");
        m.record(
            vec![report("a", Health::Healthy("ok".into())), report("b", Health::Healthy("ok".into()))],
            10,
        );
        m.record(
            vec![report("a", Health::Healthy("still".into())), report("b", Health::Degraded("slow".into()))],
            20,
        );
        m.record(
            vec![
                report("a", Health::Healthy("still".into())),
                report("b", Health::Degraded("slower".into())),
            ],
            30,
        );
        let r = m.report();
        assert_eq!(r.status, "degraded");
        let a = &r.checks[0];
        assert_eq!((a.since_ms, a.runs, a.health.detail()), (10, 3, "still"));
        let b = &r.checks[1];
        assert_eq!((b.since_ms, b.runs, b.health.detail()), (20, 2, "slower"));
        assert_eq!(m.metrics.status.get(), 1);
        assert_eq!(m.metrics.check_status.get_or_create(&CheckLabel { check: "b".into() }).get(), 1);

        m.record(
            vec![report("a", Health::Unhealthy("gone".into())), report("b", Health::Healthy("ok".into()))],
            40,
        );
        let r = m.report();
        assert_eq!(r.status, "unhealthy");
        assert_eq!((r.checks[1].since_ms, r.checks[1].runs), (40, 1));
        assert_eq!(m.metrics.status.get(), 2);
        // Two component checks: all healthy, one degraded, one unhealthy.
        let scores: Vec<f64> = r.history.iter().map(|s| s.score).collect();
        assert_eq!(scores, vec![1.0, 0.75, 0.75, 0.5]);
        assert_eq!((r.score, m.metrics.score.get()), (0.5, 0.5));
        assert_eq!(r.trend, Trend::Unknown);
    }
}
