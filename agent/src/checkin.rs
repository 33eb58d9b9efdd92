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
use crate::heartbeat;
use crate::protocol::{
    self, AGENT_VERSION, BUILD_VERSION_KEY, CheckinAnswer, HEALTH_PATH, Metrics, PROTOCOL_VERSION, RENEW_PATH, RenewRequest,
    commands_path,
};
use crate::resilience::{
    Decision, Gate, Outcome, Policy, PolicyConfig, Report, Strategy, Transition, Verdict, classify,
    classify_status, honours_retry_after, parse_http_date, parse_retry_after,
};
use crate::secret::Secret;
use crate::store::{Status, Store};
use crate::transport::{Method, Request, Response, Transport, TransportError};

pub use crate::host::{Host, SystemHost};

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
    /// The last attempt was the immediate check-in that follows an `enable_heartbeat`; the
    /// next one may not be immediate again (so no answer can make the agent spin).
    checked_in_at_once: bool,
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
            checked_in_at_once: false,
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
            let interval = match self.at_once_after(&result) {
                true => Some(Duration::ZERO),
                false => self.rapid_interval(now),
            };
            let report = Report { verdict: result.verdict, retry_after: result.retry_after, interval };
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
                    let outcome = health_outcome(&resp);
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
        let outcome = match &result {
            Ok(resp) if kind == RequestKind::Health => health_outcome(resp),
            Ok(resp) => status_outcome(resp.status),
            Err(e) => e.outcome(),
        };
        let (class, ok) = (outcome.class().to_string(), outcome == Outcome::Success);
        self.emit(Event::RequestFinished { kind, class, ok, elapsed_ms: ms(started.elapsed()) });
        result
    }

    /// The check-in body: the host's metrics, the version the server compares
    /// ([`PROTOCOL_VERSION`]), our own build in `metadata`, and the rapid-polling state while
    /// it is on (see `heartbeat.rs`).
    fn metrics_body(&self) -> Vec<u8> {
        let mut m = Metrics { version: PROTOCOL_VERSION.to_string(), ..Metrics::default() };
        self.host.metrics(&mut m);
        m.metadata.insert(BUILD_VERSION_KEY.into(), AGENT_VERSION.into());
        let now = Instant::now();
        if let Some(left) = self.rapid_until.and_then(|until| until.checked_duration_since(now)) {
            let wall = self.host.wall_clock();
            for (key, value) in heartbeat::metadata(heartbeat::wall_until(wall, left), wall) {
                m.metadata.insert(key.into(), value);
            }
        }
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// Whether the next check-in goes out at once: right after an answer that carried an
    /// `enable_heartbeat`, as RedFlag's Go agent does, so the server sees the heartbeat state
    /// in a check-in now rather than after a whole interval. Never twice in a row.
    fn at_once_after(&mut self, result: &AttemptResult) -> bool {
        let heartbeat = result
            .answer
            .as_ref()
            .is_some_and(|a| a.commands.iter().any(|c| matches!(commands::decide(c), Action::RapidPolling(_))));
        let at_once = heartbeat && !self.checked_in_at_once;
        self.checked_in_at_once = at_once;
        at_once
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

/// A `/health` answer as an outcome: its status, except that a 2xx saying the server is
/// waiting for configuration (RedFlag's welcome mode, which has no agent routes) is
/// [`Outcome::NotReady`].
fn health_outcome(resp: &Response) -> Outcome {
    match status_outcome(resp.status) {
        Outcome::Success if protocol::health_not_ready(&resp.body) => Outcome::NotReady,
        other => other,
    }
}

/// A status code as an outcome (2xx is success).
fn status_outcome(status: u16) -> Outcome {
    if (200..300).contains(&status) { Outcome::Success } else { Outcome::Status(status) }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
