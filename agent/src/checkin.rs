//! The check-in loop: the I/O shell around the pure `resilience` core.
//!
//! One loop per agent. It waits until the next attempt is due, asks its [`Strategy`] (in
//! production the `Policy`: backoff, breaker, Retry-After) whether it may go, probes
//! `GET /health` while recovering, checks in, renews the token on 401, classifies the result,
//! feeds it back to the strategy, records status, handles commands, and goes round again. It
//! returns only when its shutdown future completes.
//!
//! It is generic over everything that touches the outside world (the [`Transport`], the
//! [`Store`], the [`Host`] for wall-clock time and system metrics, and the [`Observer`]) and it
//! uses only `tokio::time` for time, so the simulation harness runs this exact code inside
//! turmoil. Every `select!` is `biased;` so the simulation replays identically.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use tokio::time::{Instant, sleep_until, timeout};

use crate::commands::{self, Action, RAPID_POLLING_INTERVAL, RAPID_POLLING_MAX};
use crate::config::Config;
use crate::events::{Event, Observer, RequestKind, log_event};
use crate::protocol::{
    self, AGENT_VERSION, CheckinAnswer, HEALTH_PATH, Metrics, RENEW_PATH, RenewRequest, commands_path,
};
use crate::resilience::{
    Decision, Gate, Outcome, Policy, PolicyConfig, Report, Strategy, Transition, Verdict, classify,
    classify_status, honours_retry_after, parse_http_date, parse_retry_after,
};
use crate::secret::Secret;
use crate::store::{Status, Store};
use crate::transport::{Method, Request, Response, Transport, TransportError};

/// The machine the agent runs on, as far as the loop cares.
pub trait Host {
    /// Wall-clock time, for HTTP-date Retry-After values, rapid-polling deadlines and the
    /// status file. (Scheduling never uses it: that is `tokio::time`.)
    fn wall_clock(&self) -> SystemTime;
    /// System metrics for the check-in body; fields left `None` are not sent.
    fn metrics(&self, _into: &mut Metrics) {}
}

/// Production: the system clock, and memory use from `/proc/meminfo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

impl Host for SystemHost {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn metrics(&self, into: &mut Metrics) {
        into.memory_percent = read_memory_percent();
    }
}

fn read_memory_percent() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| ((total - available) / total * 1000.0).round() / 10.0)
}

/// What the loop needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub agent_id: String,
    pub token: Secret,
    pub refresh_token: Secret,
    pub policy: PolicyConfig,
    pub request_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            agent_id: config.agent_id.clone(),
            token: config.token.clone(),
            refresh_token: config.refresh_token.clone(),
            policy: config.policy(),
            request_timeout: config.resilience.request_timeout,
        }
    }
}

/// How one attempt ended.
#[derive(Debug)]
struct AttemptResult {
    /// The outcome of the request that decided the attempt.
    outcome: Outcome,
    verdict: Verdict,
    retry_after: Option<Duration>,
    answer: Option<CheckinAnswer>,
}

impl AttemptResult {
    fn failed(outcome: Outcome, verdict: Verdict, retry_after: Option<Duration>) -> Self {
        AttemptResult { outcome, verdict, retry_after, answer: None }
    }
}

/// One agent's check-in loop. Build it with [`CheckinLoop::new`] (the production [`Policy`])
/// or [`CheckinLoop::with_strategy`], then `run` it.
pub struct CheckinLoop<T, S, H, O, P = Policy> {
    settings: Settings,
    /// Decides whether an attempt may go and when the next one is due.
    strategy: P,
    transport: T,
    store: S,
    host: H,
    observer: O,
    rng: StdRng,
    started: Instant,
    /// Until when the server (or a command) asked for rapid polling.
    rapid_until: Option<Instant>,
    last_success: Option<String>,
    last_error: Option<String>,
    /// The last store error reported, so a full disk is logged once, not every attempt.
    last_store_error: Option<String>,
}

impl<T: Transport, S: Store, H: Host, O: Observer> CheckinLoop<T, S, H, O, Policy> {
    /// The production loop: the [`Policy`] built from `settings.policy`. `rng` drives all
    /// jitter; seed it from the OS in production and from the run's seed in simulation.
    pub fn new(settings: Settings, transport: T, store: S, host: H, observer: O, rng: StdRng) -> Self {
        let policy = Policy::new(settings.policy);
        CheckinLoop::with_strategy(settings, policy, transport, store, host, observer, rng)
    }
}

impl<T: Transport, S: Store, H: Host, O: Observer, P: Strategy> CheckinLoop<T, S, H, O, P> {
    /// The same loop deciding with another [`Strategy`] (the simulation's baselines).
    pub fn with_strategy(settings: Settings, strategy: P, transport: T, store: S, host: H, observer: O, rng: StdRng) -> Self {
        CheckinLoop {
            settings,
            strategy,
            transport,
            store,
            host,
            observer,
            rng,
            started: Instant::now(),
            rapid_until: None,
            last_success: None,
            last_error: None,
            last_store_error: None,
        }
    }

    /// Runs until `shutdown` completes. There is no other way out: every failure the server or
    /// the network can produce leads to another attempt, after a bounded wait.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.started = Instant::now();
        let mut next_due = self.started;
        self.emit(Event::AgentStarted { agent_id: self.settings.agent_id.clone(), version: AGENT_VERSION.to_string() });
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = sleep_until(next_due) => {}
            }
            let now = Instant::now();
            let (gate, transition) = self.strategy.admit(now.into_std());
            self.emit_transition(transition);
            let probe_health = match gate {
                Gate::Go { probe_health } => probe_health,
                Gate::Wait { until } => {
                    next_due = Instant::from_std(until).max(now);
                    self.emit(Event::BreakerRejected { wait_ms: ms(next_due - now) });
                    continue;
                }
            };
            let result = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = self.attempt(probe_health) => r,
            };
            let now = Instant::now();
            let interval = self.rapid_interval(now);
            let report =
                Report { verdict: result.verdict, retry_after: result.retry_after, interval, outcome: Some(result.outcome) };
            let decision = self.strategy.complete(now.into_std(), report, &mut self.rng);
            self.after_attempt(&result, &decision);
            next_due = Instant::from_std(decision.next_attempt_at);
        }
        self.emit(Event::Stopped);
    }

    /// Health probe (while recovering), check-in, and token renewal on 401.
    async fn attempt(&mut self, probe_health: bool) -> AttemptResult {
        if probe_health {
            match self.request(RequestKind::Health).await {
                Ok(resp) => {
                    let outcome = status_outcome(resp.status);
                    // A server without /health (404, 405, ...) must not block check-ins:
                    // only "unavailable" answers stop the attempt here.
                    if classify(outcome) == Verdict::Retry {
                        let ra = self.retry_after(outcome, &resp);
                        return AttemptResult::failed(outcome, Verdict::Retry, ra);
                    }
                }
                Err(e) => return AttemptResult::failed(e.outcome(), Verdict::Retry, None),
            }
        }
        let result = self.checkin().await;
        if result.verdict != Verdict::Renew {
            return result;
        }
        match self.renew().await {
            Ok(()) => {
                let again = self.checkin().await;
                if again.verdict == Verdict::Renew {
                    // Refused even with a brand-new token: nothing more to do this round.
                    return AttemptResult::failed(again.outcome, Verdict::FailFast, None);
                }
                again
            }
            Err(failed) => failed,
        }
    }

    async fn checkin(&mut self) -> AttemptResult {
        match self.request(RequestKind::Checkin).await {
            Err(e) => AttemptResult::failed(e.outcome(), Verdict::Retry, None),
            Ok(resp) if (200..300).contains(&resp.status) => match protocol::parse_checkin_answer(&resp.body) {
                Ok(answer) => {
                    AttemptResult { outcome: Outcome::Success, verdict: Verdict::Success, retry_after: None, answer: Some(answer) }
                }
                Err(_) => AttemptResult::failed(Outcome::Malformed, Verdict::Retry, None),
            },
            Ok(resp) => {
                let outcome = status_outcome(resp.status);
                let retry_after = self.retry_after(outcome, &resp);
                AttemptResult::failed(outcome, classify(outcome), retry_after)
            }
        }
    }

    /// `POST /api/v1/agents/renew`. On success the new token is in use at once and saved.
    async fn renew(&mut self) -> Result<(), AttemptResult> {
        if self.settings.refresh_token.is_empty() {
            self.emit(Event::RenewalRejected { class: "no_refresh_token".into() });
            return Err(AttemptResult::failed(Outcome::Status(401), Verdict::FailFast, None));
        }
        let resp = match self.request(RequestKind::Renew).await {
            Ok(resp) => resp,
            Err(e) => return Err(AttemptResult::failed(e.outcome(), Verdict::Retry, None)),
        };
        let outcome = status_outcome(resp.status);
        match resp.status {
            200..=299 => match protocol::parse_renew_answer(&resp.body) {
                Ok(token) => {
                    self.settings.token = Secret::new(token);
                    let saved = match self.store.save_token(&self.settings.token) {
                        Ok(()) => true,
                        Err(error) => {
                            self.emit(Event::StoreFailed { what: "renewed token".into(), error });
                            false
                        }
                    };
                    self.emit(Event::TokenRenewed { saved });
                    Ok(())
                }
                Err(_) => Err(AttemptResult::failed(Outcome::Malformed, Verdict::Retry, None)),
            },
            // The refresh token itself was refused: only re-registration helps. Keep checking in
            // at the regular interval (the operator may fix the config, or the server may
            // recover its database).
            401 | 403 => {
                self.emit(Event::RenewalRejected { class: outcome.class().to_string() });
                Err(AttemptResult::failed(outcome, Verdict::FailFast, None))
            }
            _ => {
                let retry_after = self.retry_after(outcome, &resp);
                let verdict = match classify_status(resp.status) {
                    Verdict::Retry => Verdict::Retry,
                    _ => Verdict::FailFast,
                };
                Err(AttemptResult::failed(outcome, verdict, retry_after))
            }
        }
    }

    /// Sends one request under the request timeout, with its trace events.
    async fn request(&mut self, kind: RequestKind) -> Result<Response, TransportError> {
        let request = match kind {
            RequestKind::Health => Request { method: Method::Get, path: HEALTH_PATH.into(), bearer: None, json_body: None },
            RequestKind::Checkin => Request {
                method: Method::Get,
                path: commands_path(&self.settings.agent_id),
                bearer: Some(self.settings.token.clone()),
                json_body: Some(self.metrics_body()),
            },
            RequestKind::Renew => {
                let body = RenewRequest {
                    agent_id: self.settings.agent_id.clone(),
                    refresh_token: self.settings.refresh_token.expose().to_string(),
                };
                Request {
                    method: Method::Post,
                    path: RENEW_PATH.into(),
                    bearer: None,
                    json_body: Some(serde_json::to_vec(&body).unwrap_or_default()),
                }
            }
        };
        self.emit(Event::RequestStarted { kind });
        let started = Instant::now();
        let result = match timeout(self.settings.request_timeout, self.transport.send(&request)).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout),
        };
        let class = match &result {
            Ok(resp) => status_outcome(resp.status).class().to_string(),
            Err(e) => e.outcome().class().to_string(),
        };
        let ok = result.as_ref().is_ok_and(|r| (200..300).contains(&r.status));
        self.emit(Event::RequestFinished { kind, class, ok, elapsed_ms: ms(started.elapsed()) });
        result
    }

    fn metrics_body(&self) -> Vec<u8> {
        let mut m = Metrics { version: AGENT_VERSION.to_string(), uptime: Some(self.started.elapsed().as_secs()), ..Metrics::default() };
        self.host.metrics(&mut m);
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// The server's Retry-After, on the answers where it is honoured.
    fn retry_after(&self, outcome: Outcome, resp: &Response) -> Option<Duration> {
        if !honours_retry_after(outcome) {
            return None;
        }
        let value = resp.retry_after.as_deref()?;
        // Measure an HTTP-date against the server's own clock when it sent one.
        let reference = resp.date.as_deref().and_then(parse_http_date).unwrap_or_else(|| self.host.wall_clock());
        parse_retry_after(value, reference)
    }

    fn rapid_interval(&mut self, now: Instant) -> Option<Duration> {
        match self.rapid_until {
            Some(until) if now < until => Some(RAPID_POLLING_INTERVAL),
            Some(_) => {
                self.rapid_until = None;
                None
            }
            None => None,
        }
    }

    fn start_rapid_polling(&mut self, window: Duration) {
        let window = window.min(RAPID_POLLING_MAX);
        if window.is_zero() {
            return;
        }
        self.rapid_until = Some(Instant::now() + window);
        self.emit(Event::RapidPolling { for_ms: ms(window) });
    }

    /// Everything that follows an attempt: events, commands, status.
    fn after_attempt(&mut self, result: &AttemptResult, decision: &Decision) {
        self.emit_transition(decision.transition);
        let wall = self.host.wall_clock();
        let wall_text = humantime::format_rfc3339_millis(wall).to_string();
        if decision.verdict == Verdict::Success {
            if let Some(r) = decision.recovered {
                self.emit(Event::Recovered { outage_ms: ms(r.outage), failed_attempts: r.failed_attempts });
            }
            self.last_success = Some(wall_text.clone());
            self.last_error = None;
            let commands = result.answer.as_ref().map_or(0, |a| a.commands.len());
            self.emit(Event::CheckinOk { commands: commands as u32, delay_ms: ms(decision.delay) });
            if let Some(answer) = &result.answer {
                self.handle_answer(answer, wall);
            }
        } else {
            let class = result.outcome.class().to_string();
            self.last_error = Some(class.clone());
            self.emit(Event::AttemptFailed {
                attempt: decision.attempt,
                max_attempts: decision.max_attempts,
                class,
                verdict: decision.verdict.to_string(),
                delay_ms: ms(decision.delay),
                reason: decision.reason.as_str().to_string(),
                consecutive_failures: decision.consecutive_failures,
            });
        }
        let status = Status {
            agent_id: self.settings.agent_id.clone(),
            last_success: self.last_success.clone(),
            last_attempt: Some(wall_text),
            consecutive_failures: self.strategy.consecutive_failures(),
            breaker: self.strategy.breaker_state().to_string(),
            last_error: self.last_error.clone(),
            agent_version: AGENT_VERSION.to_string(),
        };
        match self.store.save_status(&status) {
            Ok(()) => self.last_store_error = None,
            Err(error) => {
                if self.last_store_error.as_ref() != Some(&error) {
                    self.last_store_error = Some(error.clone());
                    self.emit(Event::StoreFailed { what: "status".into(), error });
                }
            }
        }
    }

    fn handle_answer(&mut self, answer: &CheckinAnswer, wall: SystemTime) {
        for reason in &answer.invalid_commands {
            self.emit(Event::CommandSkipped { id: String::new(), kind: String::new(), reason: reason.clone() });
        }
        if answer.deferred_commands > 0 {
            self.emit(Event::CommandSkipped {
                id: String::new(),
                kind: String::new(),
                reason: format!("{} more commands than handled per check-in; left for the next one", answer.deferred_commands),
            });
        }
        for cmd in &answer.commands {
            self.emit(Event::CommandReceived { id: cmd.id.clone(), kind: cmd.kind.clone() });
            match commands::decide(cmd) {
                Action::RapidPolling(window) => self.start_rapid_polling(window),
                Action::StopRapidPolling => self.rapid_until = None,
                Action::Skip { reason } => self.emit(Event::CommandSkipped { id: cmd.id.clone(), kind: cmd.kind.clone(), reason }),
            }
        }
        if let Some(until) = answer.rapid_polling_until {
            if let Ok(window) = until.duration_since(wall) {
                self.start_rapid_polling(window);
            }
        }
    }

    fn emit_transition(&mut self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.emit(Event::Breaker { from: t.from.to_string(), to: t.to.to_string() });
        }
    }

    fn emit(&mut self, event: Event) {
        log_event(&self.settings.agent_id, &event);
        self.observer.on_event(&event);
    }
}

/// A status code as an outcome (2xx is success).
fn status_outcome(status: u16) -> Outcome {
    if (200..300).contains(&status) { Outcome::Success } else { Outcome::Status(status) }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
