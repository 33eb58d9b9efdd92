//! The check-in loop: the I/O shell around the pure `resilience` core.
//!
//! One loop per agent. It waits until the next attempt is due, asks its [`Strategy`] (in
//! production the `Policy`: backoff, breaker, Retry-After) whether it may go, probes
//! `GET /health` while recovering, checks in, renews the token on 401, classifies the result,
//! applies the answer's rapid polling, feeds the result back to the strategy (so the very next
//! delay already uses the rapid interval), records status, reports commands, and goes round
//! again. It returns only when its shutdown future completes.
//!
//! The `/health` probe is an optimisation, not a gate: after a failed probe the next attempt
//! goes straight to the check-in, so a server whose `/health` is broken, missing or routed
//! elsewhere still gets check-ins. A failed probe is reported as such (`request: health`).
//! A 404 on the check-in route with RedFlag's JSON error body (setup mode, a deleted agent)
//! waits for the next regular check-in; a bare 404 (HTML or empty: a gateway whose backend is
//! gone) is retried with backoff like a 502, at most [`BARE_404_RETRIES_MAX`] times in a row.
//!
//! It is generic over everything that touches the outside world (the [`Transport`], the
//! [`Store`], the [`Host`] for wall-clock time and system metrics, and the [`Observer`]) and it
//! uses only `tokio::time` for time, so the simulation harness runs this exact code inside
//! turmoil. Every `select!` is `biased;` so the simulation replays identically.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use tokio::time::{Instant, sleep_until, timeout};

use crate::commands::{self, Action, RAPID_POLLING_INTERVAL, RAPID_POLLING_MAX};
use crate::config::Config;
use crate::events::{COMMAND_LOG_LINES_MAX, Event, Observer, RequestKind, log_commands_summary, log_event};
use crate::protocol::{
    self, AGENT_VERSION, CheckinAnswer, HEALTH_PATH, Metrics, RENEW_PATH, RESPONSE_BODY_MAX_BYTES, RenewRequest,
    commands_path,
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
    /// Log lines that could not be written (a closed stderr), for the status file.
    fn log_lines_dropped(&self) -> u64 {
        0
    }
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

    fn log_lines_dropped(&self) -> u64 {
        crate::log_writer::dropped_lines()
    }
}

/// Bare 404s (no RedFlag JSON body) retried with backoff in a row; beyond this a 404 is taken
/// at its word and the agent waits for the next regular check-in. With the default settings
/// 20 attempts span about 5 minutes of outage (one breaker period of 15 s each, once open),
/// the regular interval: a gateway whose backend is restarting is usually back by then.
pub const BARE_404_RETRIES_MAX: u32 = 20;

/// The longest server error message quoted in a log line's cause.
const SERVER_ERROR_QUOTE_MAX_CHARS: usize = 200;

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
    /// The request that decided the attempt (a failed probe or renewal, or the check-in).
    request: RequestKind,
    /// The outcome of the request that decided the attempt.
    outcome: Outcome,
    verdict: Verdict,
    retry_after: Option<Duration>,
    answer: Option<CheckinAnswer>,
    /// What went wrong beneath the outcome's class, when known (no secrets in it).
    cause: Option<String>,
}

impl AttemptResult {
    fn failed(request: RequestKind, outcome: Outcome, verdict: Verdict, retry_after: Option<Duration>) -> Self {
        AttemptResult { request, outcome, verdict, retry_after, answer: None, cause: None }
    }

    /// The failure of `request` with a transport error, its cause kept.
    fn transport(request: RequestKind, e: &TransportError) -> Self {
        AttemptResult { cause: transport_cause(e), ..AttemptResult::failed(request, e.outcome(), Verdict::Retry, None) }
    }

    fn ok(answer: CheckinAnswer) -> Self {
        AttemptResult {
            request: RequestKind::Checkin,
            outcome: Outcome::Success,
            verdict: Verdict::Success,
            retry_after: None,
            answer: Some(answer),
            cause: None,
        }
    }

    fn caused_by(mut self, cause: Option<String>) -> Self {
        self.cause = cause;
        self
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
    /// The last probe failed: the next attempt skips it and goes straight to the check-in.
    skip_next_probe: bool,
    /// Bare 404s on the check-in route in a row (see [`BARE_404_RETRIES_MAX`]).
    bare_404_streak: u32,
    /// The cause last logged with a failure, so an unchanged cause is not repeated each attempt.
    last_cause: Option<String>,
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
            skip_next_probe: false,
            bare_404_streak: 0,
            last_cause: None,
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
            // The answer's rapid polling (or an enable_heartbeat command) applies to the delay
            // decided right now, not one regular interval later.
            let answer_events = match (&result.answer, result.verdict) {
                (Some(answer), Verdict::Success) => self.apply_answer(answer, self.host.wall_clock()),
                _ => Vec::new(),
            };
            let interval = self.rapid_interval(now);
            let report = Report { verdict: result.verdict, retry_after: result.retry_after, interval };
            let decision = self.strategy.complete(now.into_std(), report, &mut self.rng);
            self.after_attempt(&result, &decision, answer_events);
            next_due = Instant::from_std(decision.next_attempt_at);
        }
        self.emit(Event::Stopped);
    }

    /// Health probe (while recovering, unless the last probe failed), check-in, and token
    /// renewal on 401.
    async fn attempt(&mut self, probe_health: bool) -> AttemptResult {
        // The probe is an optimisation, not a gate: after a failed probe the next attempt goes
        // straight to the check-in, so probes never block check-ins twice in a row.
        let probe = probe_health && !std::mem::take(&mut self.skip_next_probe);
        if probe {
            let failed = match self.request(RequestKind::Health).await {
                Ok(resp) => {
                    let outcome = status_outcome(resp.status);
                    // A server without /health (404, 405, ...) must not block check-ins:
                    // only "unavailable" answers stop the attempt here.
                    (classify(outcome) == Verdict::Retry).then(|| {
                        let ra = self.retry_after(outcome, &resp);
                        AttemptResult::failed(RequestKind::Health, outcome, Verdict::Retry, ra)
                    })
                }
                Err(e) => Some(AttemptResult::transport(RequestKind::Health, &e)),
            };
            if let Some(failed) = failed {
                self.skip_next_probe = true;
                return failed;
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
                    return AttemptResult::failed(RequestKind::Checkin, again.outcome, Verdict::FailFast, None);
                }
                again
            }
            Err(failed) => failed,
        }
    }

    async fn checkin(&mut self) -> AttemptResult {
        let resp = match self.request(RequestKind::Checkin).await {
            Err(e) => {
                self.bare_404_streak = 0;
                return AttemptResult::transport(RequestKind::Checkin, &e);
            }
            Ok(resp) => resp,
        };
        let bare_404 = resp.status == 404 && !is_json_object(&resp.body);
        self.bare_404_streak = if bare_404 { self.bare_404_streak.saturating_add(1) } else { 0 };
        if (200..300).contains(&resp.status) {
            // 204 No Content (or an empty 200) is "no commands", not a malformed answer.
            if resp.body.iter().all(u8::is_ascii_whitespace) {
                return AttemptResult::ok(CheckinAnswer::default());
            }
            return match protocol::parse_checkin_answer(&resp.body) {
                Ok(answer) => AttemptResult::ok(answer),
                Err(why) => AttemptResult::failed(RequestKind::Checkin, Outcome::Malformed, Verdict::Retry, None)
                    .caused_by(Some(format!("the {} answer is not a RedFlag check-in answer: {why}", resp.status))),
            };
        }
        let outcome = status_outcome(resp.status);
        let retry_after = self.retry_after(outcome, &resp);
        let verdict = match bare_404 {
            // A gateway whose backend is gone, most likely: retry like a 502, a bounded number
            // of times. A 404 with RedFlag's JSON body keeps the table's fail-fast verdict.
            true if self.bare_404_streak <= BARE_404_RETRIES_MAX => Verdict::Retry,
            _ => classify(outcome),
        };
        let cause = match bare_404 {
            true => Some("404 without RedFlag's JSON error body (a gateway whose backend is gone?)".to_string()),
            false => server_error_message(&resp.body),
        };
        AttemptResult::failed(RequestKind::Checkin, outcome, verdict, retry_after).caused_by(cause)
    }

    /// `POST /api/v1/agents/renew`. On success the new token is in use at once and saved.
    async fn renew(&mut self) -> Result<(), AttemptResult> {
        if self.settings.refresh_token.is_empty() {
            self.emit(Event::RenewalRejected { class: "no_refresh_token".into() });
            return Err(AttemptResult::failed(RequestKind::Checkin, Outcome::Status(401), Verdict::FailFast, None));
        }
        let resp = match self.request(RequestKind::Renew).await {
            Ok(resp) => resp,
            Err(e) => return Err(AttemptResult::transport(RequestKind::Renew, &e)),
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
                Err(why) => Err(AttemptResult::failed(RequestKind::Renew, Outcome::Malformed, Verdict::Retry, None)
                    .caused_by(Some(why))),
            },
            // The refresh token itself was refused: only re-registration helps. Keep checking in
            // at the regular interval (the operator may fix the config, or the server may
            // recover its database).
            401 | 403 => {
                self.emit(Event::RenewalRejected { class: outcome.class().to_string() });
                Err(AttemptResult::failed(RequestKind::Renew, outcome, Verdict::FailFast, None))
            }
            _ => {
                let retry_after = self.retry_after(outcome, &resp);
                let verdict = match classify_status(resp.status) {
                    Verdict::Retry => Verdict::Retry,
                    _ => Verdict::FailFast,
                };
                Err(AttemptResult::failed(RequestKind::Renew, outcome, verdict, retry_after)
                    .caused_by(server_error_message(&resp.body)))
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
        // The Retry-After as given (before the clamp), so the trace can judge how it was honoured.
        let retry_after_ms = result.as_ref().ok().and_then(|r| self.retry_after(status_outcome(r.status), r)).map(ms);
        self.emit(Event::RequestFinished { kind, class, ok, elapsed_ms: ms(started.elapsed()), retry_after_ms });
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

    /// Switches rapid polling on for `window` (clamped); the event to report it, if it did.
    fn start_rapid_polling(&mut self, window: Duration) -> Option<Event> {
        let window = window.min(RAPID_POLLING_MAX);
        if window.is_zero() {
            return None;
        }
        self.rapid_until = Some(Instant::now() + window);
        Some(Event::RapidPolling { for_ms: ms(window) })
    }

    /// Everything that follows an attempt: events, commands, status. `answer_events` are the
    /// answer's command and rapid-polling events, already applied, reported after `checkin_ok`.
    fn after_attempt(&mut self, result: &AttemptResult, decision: &Decision, answer_events: Vec<Event>) {
        self.emit_transition(decision.transition);
        let wall = self.host.wall_clock();
        let wall_text = humantime::format_rfc3339_millis(wall).to_string();
        if decision.verdict == Verdict::Success {
            if let Some(r) = decision.recovered {
                self.emit(Event::Recovered { outage_ms: ms(r.outage), failed_attempts: r.failed_attempts });
            }
            self.last_success = Some(wall_text.clone());
            self.last_error = None;
            self.last_cause = None;
            let commands = result.answer.as_ref().map_or(0, |a| a.commands.len());
            self.emit(Event::CheckinOk { commands: commands as u32, delay_ms: ms(decision.delay) });
            self.emit_answer_events(answer_events);
        } else {
            let class = result.outcome.class().to_string();
            self.last_error = Some(class.clone());
            // The cause on the first failure of an outage, and whenever it changes.
            let changed = result.cause != self.last_cause;
            self.last_cause = result.cause.clone();
            let cause = result.cause.clone().filter(|_| decision.consecutive_failures <= 1 || changed);
            self.emit(Event::AttemptFailed {
                attempt: decision.attempt,
                max_attempts: decision.max_attempts,
                class,
                verdict: decision.verdict.to_string(),
                delay_ms: ms(decision.delay),
                reason: decision.reason.as_str().to_string(),
                consecutive_failures: decision.consecutive_failures,
                request: (result.request != RequestKind::Checkin).then_some(result.request),
                cause,
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
            log_lines_dropped: self.host.log_lines_dropped(),
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

    /// Acts on a check-in answer (rapid polling on or off) and returns the events that say so,
    /// to be reported once the check-in itself is.
    fn apply_answer(&mut self, answer: &CheckinAnswer, wall: SystemTime) -> Vec<Event> {
        let mut events = Vec::new();
        for reason in &answer.invalid_commands {
            events.push(Event::CommandSkipped { id: String::new(), kind: String::new(), reason: reason.clone() });
        }
        if answer.deferred_commands > 0 {
            events.push(Event::CommandSkipped {
                id: String::new(),
                kind: String::new(),
                reason: format!("{} more commands than handled per check-in; left for the next one", answer.deferred_commands),
            });
        }
        for cmd in &answer.commands {
            events.push(Event::CommandReceived { id: cmd.id.clone(), kind: cmd.kind.clone() });
            match commands::decide(cmd) {
                Action::RapidPolling(window) => events.extend(self.start_rapid_polling(window)),
                Action::StopRapidPolling => self.rapid_until = None,
                Action::Skip { reason } => events.push(Event::CommandSkipped { id: cmd.id.clone(), kind: cmd.kind.clone(), reason }),
            }
        }
        if let Some(until) = answer.rapid_polling_until {
            if let Ok(window) = until.duration_since(wall) {
                events.extend(self.start_rapid_polling(window));
            }
        }
        events
    }

    /// Reports an answer's events. Every one reaches the observer; the log gets the first
    /// [`COMMAND_LOG_LINES_MAX`] command lines one by one and a summary of the rest, so 10,000
    /// queued commands cost a few lines per check-in, not hundreds.
    fn emit_answer_events(&mut self, events: Vec<Event>) {
        let mut logged = 0;
        let mut not_logged = 0;
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for event in events {
            let is_command_line = matches!(event, Event::CommandReceived { .. } | Event::CommandSkipped { .. });
            if !is_command_line {
                self.emit(event);
                continue;
            }
            if logged < COMMAND_LOG_LINES_MAX {
                logged += 1;
                self.emit(event);
                continue;
            }
            not_logged += 1;
            // Each command is counted once, by its `command_received`; the skips of invalid
            // or deferred entries have no type of their own.
            let counted = match &event {
                Event::CommandReceived { kind, .. } => Some(kind.as_str()),
                Event::CommandSkipped { kind, .. } if kind.is_empty() => Some("(invalid or deferred)"),
                _ => None,
            };
            if let Some(kind) = counted {
                *kinds.entry(kind.to_string()).or_default() += 1;
            }
            self.observer.on_event(&event);
        }
        if not_logged > 0 {
            log_commands_summary(&self.settings.agent_id, not_logged, &kinds);
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

/// A transport error's cause beyond its class, for the log.
fn transport_cause(e: &TransportError) -> Option<String> {
    match e {
        TransportError::Other(msg) if !msg.is_empty() => Some(msg.clone()),
        TransportError::BodyTooLarge => Some(format!("the answer's body passed the {RESPONSE_BODY_MAX_BYTES}-byte limit")),
        _ => None,
    }
}

/// Whether a body is a JSON object (RedFlag answers errors as `{"error":"..."}`).
fn is_json_object(body: &[u8]) -> bool {
    matches!(serde_json::from_slice::<serde_json::Value>(body), Ok(serde_json::Value::Object(_)))
}

/// RedFlag's `{"error":"..."}` message, quoted (shortened) for a log line's cause.
fn server_error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = value.get("error")?.as_str()?;
    let mut quoted: String = text.chars().take(SERVER_ERROR_QUOTE_MAX_CHARS).collect();
    if text.chars().count() > SERVER_ERROR_QUOTE_MAX_CHARS {
        quoted.push('…');
    }
    Some(format!("the server said {quoted:?}"))
}

/// A status code as an outcome (2xx is success).
fn status_outcome(status: u16) -> Outcome {
    if (200..300).contains(&status) { Outcome::Success } else { Outcome::Status(status) }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
