//! A circuit breaker: closed (calls pass; consecutive failures are counted), open (calls are
//! refused until `open_for` has passed), half-open (at most `half_open_calls` trial calls at a
//! time; `success_threshold` successes close it, one failure opens it again). What counts as a
//! failure is the caller's to say: an `Err` it reports, or a deadline overrun. Its state and
//! transitions are metrics (`cograft_breaker_state{component}`: 0 closed, 1 open, 2 half-open;
//! `cograft_breaker_transitions_total{component,to}`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets trial calls through.
    pub open_for: Duration,
    /// Trial calls allowed at once while half-open.
    pub half_open_calls: u32,
    /// Successful trial calls that close a half-open breaker.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            half_open_calls: 1,
            success_threshold: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    component: String,
    to: String,
}

/// The breaker families, registered once per process and shared by every breaker.
#[derive(Clone, Default)]
pub struct BreakerMetrics {
    state: Family<ComponentLabel, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
}

impl BreakerMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = BreakerMetrics::default();
        reg.register(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            m.state.clone(),
        );
        reg.register(
            "breaker_transitions",
            "Circuit breaker state changes, by new state",
            m.transitions.clone(),
        );
        m
    }
}

/// Why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// When the breaker will let a trial call through (zero while half-open trials run).
    pub retry_after: Duration,
    pub state: BreakerState,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    successes: u32,
    trials: u32,
    opened_at: Instant,
}

/// One component's breaker.
pub struct Breaker {
    component: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    metrics: BreakerMetrics,
}

/// A call the breaker let through: report how it ended. Dropped unreported, it counts as
/// neither (a half-open trial slot is given back).
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Call<'a> {
    breaker: &'a Breaker,
    trial: bool,
    reported: bool,
}

impl Call<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.finish(self.trial, true, Instant::now());
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.finish(self.trial, false, Instant::now());
    }

    /// Reports a success or a failure at `now` (tests drive time by hand).
    pub fn report_at(mut self, ok: bool, now: Instant) {
        self.reported = true;
        self.breaker.finish(self.trial, ok, now);
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.reported && self.trial {
            let mut inner = self.breaker.lock();
            inner.trials = inner.trials.saturating_sub(1);
        }
    }
}

impl Breaker {
    pub fn new(component: &str, config: BreakerConfig, metrics: BreakerMetrics) -> Breaker {
        let breaker = Breaker {
            component: component.to_string(),
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                successes: 0,
                trials: 0,
                opened_at: Instant::now(),
            }),
            metrics,
        };
        breaker.metrics.state.get_or_create(&breaker.label()).set(0);
        breaker
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Lets a call through, or says why not.
    pub fn call(&self) -> Result<Call<'_>, Refused> {
        self.call_at(Instant::now())
    }

    /// [`call`](Self::call) at a given time.
    pub fn call_at(&self, now: Instant) -> Result<Call<'_>, Refused> {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            let reopens = inner.opened_at + self.config.open_for;
            if now < reopens {
                return Err(Refused { retry_after: reopens - now, state: BreakerState::Open });
            }
            self.enter(&mut inner, BreakerState::HalfOpen, now);
        }
        if inner.state == BreakerState::HalfOpen {
            if inner.trials >= self.config.half_open_calls {
                return Err(Refused { retry_after: Duration::ZERO, state: BreakerState::HalfOpen });
            }
            inner.trials += 1;
            return Ok(Call { breaker: self, trial: true, reported: false });
        }
        Ok(Call { breaker: self, trial: false, reported: false })
    }

    fn finish(&self, trial: bool, ok: bool, now: Instant) {
        let mut inner = self.lock();
        if trial {
            inner.trials = inner.trials.saturating_sub(1);
        }
        match (inner.state, ok) {
            (BreakerState::Closed, true) => inner.failures = 0,
            (BreakerState::Closed, false) => {
                inner.failures += 1;
                if inner.failures >= self.config.failure_threshold {
                    self.enter(&mut inner, BreakerState::Open, now);
                }
            }
            (BreakerState::HalfOpen, true) if trial => {
                inner.successes += 1;
                if inner.successes >= self.config.success_threshold {
                    self.enter(&mut inner, BreakerState::Closed, now);
                }
            }
            (BreakerState::HalfOpen, false) if trial => self.enter(&mut inner, BreakerState::Open, now),
            // A call let through before the breaker opened ended after: its outcome is stale.
            _ => {}
        }
    }

    fn enter(&self, inner: &mut Inner, state: BreakerState, now: Instant) {
        if inner.state == state {
            return;
        }
        tracing::warn!(component = %self.component, from = inner.state.as_str(), to = state.as_str(), "circuit breaker");
        inner.state = state;
        inner.failures = 0;
        inner.successes = 0;
        if state == BreakerState::Open {
            inner.opened_at = now;
        }
        self.metrics.state.get_or_create(&self.label()).set(state.gauge());
        self.metrics
            .transitions
            .get_or_create(&TransitionLabels { component: self.component.clone(), to: state.as_str().into() })
            .inc();
    }

    fn label(&self) -> ComponentLabel {
        ComponentLabel { component: self.component.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        let config = BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
            half_open_calls: 1,
            success_threshold: 2,
        };
        Breaker::new("test", config, BreakerMetrics::default())
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let b = breaker();
        let t = Instant::now();
        for ok in [false, false, true, false, false] {
            b.call_at(t).unwrap().report_at(ok, t);
        }
        assert_eq!(b.state(), BreakerState::Closed, "the success in between reset the count");
        b.call_at(t).unwrap().report_at(false, t);
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.call_at(t + Duration::from_secs(4)).err().expect("refused while open");
        assert_eq!(refused.retry_after, Duration::from_secs(6));
    }

    #[test]
    fn half_open_lets_limited_trials_through_and_closes_after_enough_successes() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.call_at(t).unwrap().report_at(false, t);
        }
        let later = t + Duration::from_secs(10);
        let trial = b.call_at(later).expect("a trial once open_for passed");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.call_at(later).is_err(), "one trial at a time");
        trial.report_at(true, later);
        assert_eq!(b.state(), BreakerState::HalfOpen, "one success of two");
        b.call_at(later).unwrap().report_at(true, later);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_an_abandoned_one_frees_its_slot() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.call_at(t).unwrap().report_at(false, t);
        }
        let later = t + Duration::from_secs(11);
        drop(b.call_at(later).unwrap());
        let trial = b.call_at(later).expect("the abandoned trial gave its slot back");
        trial.report_at(false, later);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.call_at(later + Duration::from_secs(9)).is_err(), "open_for counts from the reopening");
    }

    #[test]
    fn state_and_transitions_are_exported() {
        let mut reg = Registry::default();
        let metrics = BreakerMetrics::register(&mut reg);
        let b =
            Breaker::new("spreading", BreakerConfig { failure_threshold: 1, ..Default::default() }, metrics);
        b.call().unwrap().failure();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("breaker_state{component=\"spreading\"} 1"), "{text}");
        assert!(text.contains("breaker_transitions_total{component=\"spreading\",to=\"open\"} 1"), "{text}");
    }
}
