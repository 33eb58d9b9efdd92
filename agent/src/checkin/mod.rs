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
//! Commands (the second half of this file): a command in a check-in answer is written to the
//! journal before anything else, acknowledged in the next check-in's `acknowledged_commands`,
//! run once through the [`CommandRunner`] (journaled `running` first), and its result written to
//! the outbox and `POST`ed to `/logs`. Results waiting in the outbox go first in every attempt,
//! under the same strategy and breaker as check-ins (one server): if the server fails them, the
//! attempt ends there, like a failed health probe. A command the journal knows is never run
//! again; one found `running` at start-up is reported `failed`.
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

use crate::commands::kinds::{Action, RAPID_POLLING_INTERVAL, RAPID_POLLING_MAX};
use crate::config::Config;
use crate::log::events::{COMMAND_LOG_LINES_MAX, Event, Observer, RequestKind, log_commands_summary, log_event};
use crate::commands::heartbeat;
use crate::commands::journal::{COMMAND_ID_MAX_LEN, Corrupt, Delivery, JOURNAL_ENTRIES_MAX, JOURNAL_FILE, Journal, Saved};
use crate::commands::outbox::{OUTBOX_FILE, OUTBOX_RESULTS_MAX, Outbox};
use crate::server::protocol::{
    self, ACKNOWLEDGED_COMMANDS_MAX, AGENT_VERSION, BUILD_VERSION_KEY, CheckinAnswer, Command, HEALTH_PATH, Metrics,
    PROTOCOL_VERSION, RENEW_PATH, RESPONSE_BODY_MAX_BYTES, RESULT_FAILED, RESULT_OUTPUT_MAX_BYTES, RenewRequest,
    UpdateLogRequest, commands_path, logs_path, truncate_output,
};
use crate::resilience::{
    Decision, Gate, Outcome, Policy, PolicyConfig, Report, Strategy, Transition, Verdict, classify,
    classify_status, honours_retry_after, parse_http_date, parse_retry_after,
};
use crate::commands::runner::{CommandRunner, ProductionRunner};
use crate::server::secret::Secret;
use crate::store::{Status, Store};
use crate::server::transport::{Method, Request, Response, Transport, TransportError};

pub use crate::host::{Host, SystemHost};

/// Bare 404s (no RedFlag JSON body) retried with backoff in a row; beyond this a 404 is taken
/// at its word and the agent waits for the next regular check-in. With the default settings
/// 20 attempts span about 5 minutes of outage (one breaker period of 15 s each, once open),
/// the regular interval: a gateway whose backend is restarting is usually back by then.
pub const BARE_404_RETRIES_MAX: u32 = 20;

/// The longest server error message quoted in a log line's cause.
const SERVER_ERROR_QUOTE_MAX_CHARS: usize = 200;

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

/// The command log lines one check-in has written one by one, and what it only summarised
/// (at most [`COMMAND_LOG_LINES_MAX`] lines each for an answer's commands and for their runs).
#[derive(Debug, Default)]
struct CommandLogBudget {
    logged: usize,
    not_logged: usize,
    /// Commands not logged one by one, by type.
    kinds: BTreeMap<String, usize>,
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
/// or [`CheckinLoop::with_strategy`], give it a [`CommandRunner`] with
/// [`CheckinLoop::with_runner`] (default: the [`ProductionRunner`]), then `run` it.
pub struct CheckinLoop<T, S, H, O, P = Policy, R = ProductionRunner> {
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
    /// The last probe failed: the next attempt skips it and goes straight to the check-in.
    skip_next_probe: bool,
    /// Bare 404s on the check-in route in a row (see [`BARE_404_RETRIES_MAX`]).
    bare_404_streak: u32,
    /// The cause last logged with a failure, so an unchanged cause is not repeated each attempt.
    last_cause: Option<String>,
    /// Events held back while an answer is taken in, to be reported after its `checkin_ok`
    /// (see [`CheckinLoop::apply_answer`]); `None`: events are reported as they happen.
    held_events: Option<Vec<Event>>,
    /// Runs commands.
    runner: R,
    /// Every command received, by id (`state_dir/journal.json`).
    journal: Journal,
    /// Results waiting for the server's 2xx (`state_dir/outbox.json`).
    outbox: Outbox,
    /// The acknowledgements the check-in in flight carries.
    acks_in_flight: Vec<String>,
    /// The body of the result request about to go out.
    result_body: Option<Vec<u8>>,
    /// A result entered the outbox since the last delivery.
    results_added: bool,
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
            skip_next_probe: false,
            bare_404_streak: 0,
            last_cause: None,
            held_events: None,
            runner: ProductionRunner::default(),
            journal: Journal::default(),
            outbox: Outbox::default(),
            acks_in_flight: Vec::new(),
            result_body: None,
            results_added: false,
        }
    }
}

impl<T: Transport, S: Store, H: Host, O: Observer, P: Strategy, R: CommandRunner> CheckinLoop<T, S, H, O, P, R> {
    /// The same loop running commands with `runner` (the simulation's runs them in simulated
    /// time; production's is [`ProductionRunner`]).
    pub fn with_runner<R2: CommandRunner>(self, runner: R2) -> CheckinLoop<T, S, H, O, P, R2> {
        CheckinLoop {
            settings: self.settings,
            strategy: self.strategy,
            transport: self.transport,
            store: self.store,
            host: self.host,
            observer: self.observer,
            rng: self.rng,
            started: self.started,
            rapid_until: self.rapid_until,
            last_success: self.last_success,
            last_error: self.last_error,
            last_store_error: self.last_store_error,
            skip_next_probe: self.skip_next_probe,
            bare_404_streak: self.bare_404_streak,
            last_cause: self.last_cause,
            held_events: self.held_events,
            checked_in_at_once: self.checked_in_at_once,
            runner,
            journal: self.journal,
            outbox: self.outbox,
            acks_in_flight: self.acks_in_flight,
            result_body: self.result_body,
            results_added: self.results_added,
        }
    }

    /// Runs until `shutdown` completes. There is no other way out: every failure the server or
    /// the network can produce leads to another attempt, after a bounded wait.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.started = Instant::now();
        let mut next_due = self.started;
        self.emit(Event::AgentStarted { agent_id: self.settings.agent_id.clone(), version: AGENT_VERSION.to_string() });
        self.recover_commands();
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
                r = self.attempt_with_results(probe_health) => r,
            };
            let now = Instant::now();
            // The answer's rapid polling (or an enable_heartbeat command) applies to the delay
            // decided right now, not one regular interval later.
            let answer_events = match (&result.answer, result.verdict) {
                (Some(answer), Verdict::Success) => self.apply_answer(answer, self.host.wall_clock()),
                _ => Vec::new(),
            };
            let at_once = self.at_once_after(&result);
            let interval = match at_once {
                true => Some(Duration::ZERO),
                false => self.rapid_interval(now),
            };
            let report =
                Report { verdict: result.verdict, retry_after: result.retry_after, interval, outcome: Some(result.outcome) };
            let decision = self.strategy.complete(now.into_std(), report, &mut self.rng);
            self.after_attempt(&result, &decision, answer_events);
            next_due = Instant::from_std(decision.next_attempt_at);
            let checked_in = decision.verdict == Verdict::Success;
            if checked_in {
                self.acknowledged();
            }
            if self.journal.next_to_run().is_some() || (checked_in && self.results_added) {
                let retry_at = tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    r = self.run_commands_then_deliver(checked_in, at_once) => r,
                };
                if let Some(at) = retry_at {
                    next_due = at;
                }
            }
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
                    let outcome = health_outcome(&resp);
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
                json_body: Some(self.checkin_body()),
            },
            RequestKind::Result => Request {
                method: Method::Post,
                path: logs_path(&self.settings.agent_id),
                bearer: Some(self.settings.token.clone()),
                json_body: self.result_body.clone(),
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
        // The Retry-After as given (before the clamp), so the trace can judge how it was honoured.
        let retry_after_ms = result.as_ref().ok().and_then(|r| self.retry_after(status_outcome(r.status), r)).map(ms);
        self.emit(Event::RequestFinished { kind, class, ok, elapsed_ms: ms(started.elapsed()), retry_after_ms });
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
            .is_some_and(|a| a.commands.iter().any(|c| matches!(crate::commands::kinds::decide(c), Action::RapidPolling(_))));
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

    /// Switches rapid polling on for `window` (clamped); the event to report it, if it did.
    ///
    /// A window only ever extends the one in force: RedFlag asks twice at once (a 10-minute
    /// `rapid_polling` in the answer and an `enable_heartbeat` command of its own length), and
    /// the shorter request must not cut the longer one short. `disable_heartbeat` ends it.
    fn start_rapid_polling(&mut self, window: Duration) -> Option<Event> {
        let window = window.min(RAPID_POLLING_MAX);
        let until = Instant::now() + window;
        if window.is_zero() || self.rapid_until.is_some_and(|current| current >= until) {
            return None;
        }
        self.rapid_until = Some(until);
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

    /// Takes in a check-in answer (its commands into the journal, its rapid polling on) and
    /// returns the events that say so, to be reported once the check-in itself is. Commands
    /// are only journaled here; they run after the check-in is reported
    /// ([`CheckinLoop::run_commands_then_deliver`]).
    fn apply_answer(&mut self, answer: &CheckinAnswer, wall: SystemTime) -> Vec<Event> {
        self.held_events = Some(Vec::new());
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
            self.take_command(cmd);
        }
        events.extend(self.held_events.take().unwrap_or_default());
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
        let mut budget = CommandLogBudget::default();
        for event in events {
            // Each command is counted once, by its `command_received`; the skips of invalid or
            // deferred entries have no type of their own.
            let kind = match &event {
                Event::CommandReceived { kind, .. } => Some(kind.as_str()),
                Event::CommandSkipped { kind, .. } if kind.is_empty() => Some("(invalid or deferred)"),
                Event::CommandSkipped { .. } | Event::CommandDuplicate { .. } => None,
                _ => {
                    self.emit(event);
                    continue;
                }
            };
            let kind = kind.map(str::to_string);
            self.emit_command_line(&mut budget, event, kind);
        }
        self.end_command_lines(budget);
    }

    /// One command log line under `budget`: logged while the budget lasts, then only traced
    /// (the observer gets every event) and counted by `kind` for the summary.
    fn emit_command_line(&mut self, budget: &mut CommandLogBudget, event: Event, kind: Option<String>) {
        if budget.logged < COMMAND_LOG_LINES_MAX {
            budget.logged += 1;
            self.emit(event);
            return;
        }
        budget.not_logged += 1;
        if let Some(kind) = kind {
            *budget.kinds.entry(kind).or_default() += 1;
        }
        self.observer.on_event(&event);
    }

    /// The summary of what `budget` did not log one by one, if anything.
    fn end_command_lines(&mut self, budget: CommandLogBudget) {
        if budget.not_logged > 0 {
            log_commands_summary(&self.settings.agent_id, budget.not_logged, &budget.kinds);
        }
    }

    // ---- commands: journal, runner, outbox -------------------------------------------------

    /// At start-up: reads the journal and the outbox (a corrupt one is moved aside and replaced),
    /// puts back into the outbox every result the journal holds as undelivered, and reports every
    /// command that was running when the agent died as `failed`, never to run again.
    fn recover_commands(&mut self) {
        let (journal, corrupt) = Journal::load(&mut self.store);
        self.journal = journal;
        self.report_corrupt(corrupt);
        let (outbox, corrupt) = Outbox::load(&mut self.store);
        self.outbox = outbox;
        self.report_corrupt(corrupt);
        for result in self.journal.undelivered() {
            if !self.outbox.contains(&result.command_id) {
                self.queue_result(result);
            }
        }
        for cmd in self.journal.running() {
            self.emit(Event::CommandInterrupted { id: cmd.id.clone(), kind: cmd.kind.clone() });
            let result = UpdateLogRequest {
                command_id: cmd.id.clone(),
                action: truncate_output(&cmd.kind, COMMAND_ID_MAX_LEN),
                result: RESULT_FAILED.into(),
                stdout: String::new(),
                stderr: "interrupted by agent restart".into(),
                exit_code: 1,
                duration_seconds: 0,
            };
            self.record_result(result);
        }
    }

    fn report_corrupt(&mut self, corrupt: Option<Corrupt>) {
        if let Some(c) = corrupt {
            self.emit(Event::StateCorrupt { file: c.file, error: c.error, moved_to: c.moved_to });
        }
    }

    /// Reports a state file write: `state_saved`, or `store_failed`.
    fn saved(&mut self, file: &str, what: &str, outcome: Result<Saved, String>) {
        match outcome {
            Ok(s) if s.bytes > 0 => self.emit(Event::StateSaved { file: file.to_string(), entries: s.entries, bytes: s.bytes }),
            Ok(_) => {}
            Err(error) => self.emit(Event::StoreFailed { what: what.to_string(), error }),
        }
    }

    /// One command from a check-in answer: journaled before anything else, or recognised.
    fn take_command(&mut self, cmd: &Command) {
        self.emit(Event::CommandReceived { id: cmd.id.clone(), kind: cmd.kind.clone() });
        if cmd.id.is_empty() || cmd.id.len() > COMMAND_ID_MAX_LEN || cmd.kind.len() > COMMAND_ID_MAX_LEN {
            let reason = format!("a command id must have 1 to {COMMAND_ID_MAX_LEN} bytes, and its type at most {COMMAND_ID_MAX_LEN}");
            self.emit(Event::CommandSkipped { id: truncate_output(&cmd.id, 64), kind: truncate_output(&cmd.kind, 64), reason });
            return;
        }
        let Some(entry) = self.journal.get(&cmd.id) else {
            let outcome = self.journal.receive(cmd, &mut self.store);
            if let Err(e) = &outcome {
                let reason = format!("not recorded in the journal ({e}); not acknowledged, so the server sends it again");
                self.emit(Event::CommandSkipped { id: cmd.id.clone(), kind: cmd.kind.clone(), reason });
            }
            self.saved(JOURNAL_FILE, "journal", outcome);
            return;
        };
        // Known: the server sent it again, so it has not seen our acknowledgement. Never run it
        // again; a finished one has its stored result re-sent.
        let (state, stored) = (entry.state, entry.result.clone());
        self.emit(Event::CommandDuplicate { id: cmd.id.clone(), kind: cmd.kind.clone(), state: state.as_str().to_string() });
        let outcome = self.journal.redelivered(&cmd.id, &mut self.store);
        self.saved(JOURNAL_FILE, "journal", outcome);
        if let Some(result) = stored {
            if !self.outbox.contains(&cmd.id) {
                let outcome = self.journal.set_delivery(&cmd.id, Delivery::Pending, &mut self.store);
                self.saved(JOURNAL_FILE, "journal", outcome);
                self.queue_result(result);
            }
        }
    }

    /// The check-in that carried `acks_in_flight` succeeded: the server has them.
    fn acknowledged(&mut self) {
        if self.acks_in_flight.is_empty() {
            return;
        }
        let acks = std::mem::take(&mut self.acks_in_flight);
        let outcome = self.journal.acknowledged(&acks, &mut self.store);
        self.saved(JOURNAL_FILE, "journal", outcome);
    }

    /// The check-in body: the metrics, plus the journal's unacknowledged ids when there are any
    /// (without them the body is exactly the metrics, as RedFlag's own agent sends it).
    fn checkin_body(&mut self) -> Vec<u8> {
        let metrics = self.metrics_body();
        self.acks_in_flight = self.journal.acks(ACKNOWLEDGED_COMMANDS_MAX);
        if self.acks_in_flight.is_empty() {
            return metrics;
        }
        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&metrics) {
            Ok(mut body) => {
                body.insert("acknowledged_commands".into(), serde_json::json!(self.acks_in_flight));
                serde_json::to_vec(&body).unwrap_or(metrics)
            }
            Err(_) => {
                self.acks_in_flight.clear();
                metrics
            }
        }
    }

    /// A finished command's result: journal first (`done`, durably), then the outbox.
    fn record_result(&mut self, result: UpdateLogRequest) {
        let outcome = self.journal.finish(&result, &mut self.store);
        self.saved(JOURNAL_FILE, "journal", outcome);
        self.queue_result(result);
    }

    /// Puts a result in the outbox; results it had to drop to make room are logged by id.
    fn queue_result(&mut self, result: UpdateLogRequest) {
        let (dropped, outcome) = self.outbox.push(result, &mut self.store);
        self.results_added = true;
        self.saved(OUTBOX_FILE, "outbox", outcome);
        for id in dropped {
            let reason = format!("the outbox is full (at most {OUTBOX_RESULTS_MAX} results or {} bytes); the oldest goes", crate::commands::outbox::OUTBOX_BYTES_MAX);
            self.settle_result(&id, Delivery::Dropped, false);
            self.emit(Event::ResultDropped { id, reason });
        }
    }

    /// A result left the outbox for good: delivered, or dropped.
    fn settle_result(&mut self, id: &str, delivery: Delivery, remove: bool) {
        if remove {
            let outcome = self.outbox.remove(id, &mut self.store);
            self.saved(OUTBOX_FILE, "outbox", outcome);
        }
        let outcome = self.journal.set_delivery(id, delivery, &mut self.store);
        self.saved(JOURNAL_FILE, "journal", outcome);
    }

    /// Runs every journaled command not yet started, oldest first, each journaled `running`
    /// before it starts (a command whose `running` cannot be written does not start). After a
    /// successful check-in, the new results are delivered at once, as one more attempt under the
    /// strategy. Returns when the next attempt is due instead, if the strategy said so.
    ///
    /// `at_once`: the check-in's answer asked for an immediate check-in (see
    /// [`CheckinLoop::at_once_after`]); the decision after the results keeps it.
    async fn run_commands_then_deliver(&mut self, checked_in: bool, at_once: bool) -> Option<Instant> {
        // Hundreds of queued commands must not cost hundreds of log lines (see
        // `emit_answer_events`): past the budget, their lines are summarised.
        let mut budget = CommandLogBudget::default();
        for _ in 0..JOURNAL_ENTRIES_MAX {
            let Some(cmd) = self.journal.next_to_run().cloned() else { break };
            let outcome = self.journal.start(&cmd.id, &mut self.store);
            let started_ok = outcome.is_ok();
            self.saved(JOURNAL_FILE, &format!("journal (command {} not started; retried later)", cmd.id), outcome);
            if !started_ok {
                break;
            }
            let started_event = Event::CommandStarted { id: cmd.id.clone(), kind: cmd.kind.clone() };
            self.emit_command_line(&mut budget, started_event, Some(cmd.kind.clone()));
            let started = Instant::now();
            let exec = self.runner.run(&cmd).await;
            let elapsed = started.elapsed();
            match &exec.effect {
                Some(Action::RapidPolling(window)) => {
                    if let Some(event) = self.start_rapid_polling(*window) {
                        self.emit(event);
                    }
                }
                Some(Action::StopRapidPolling) => self.rapid_until = None,
                Some(Action::Skip { .. }) | None => {}
            }
            let finished_event = Event::CommandFinished {
                id: cmd.id.clone(),
                kind: cmd.kind.clone(),
                result: exec.result.to_string(),
                elapsed_ms: ms(elapsed),
            };
            self.emit_command_line(&mut budget, finished_event, None);
            let result = UpdateLogRequest {
                command_id: cmd.id.clone(),
                action: cmd.kind.clone(),
                result: exec.result.to_string(),
                stdout: truncate_output(&exec.stdout, RESULT_OUTPUT_MAX_BYTES),
                stderr: truncate_output(&exec.stderr, RESULT_OUTPUT_MAX_BYTES),
                exit_code: exec.exit_code,
                duration_seconds: elapsed.as_secs_f64().round() as i64,
            };
            self.record_result(result);
        }
        self.end_command_lines(budget);
        if !(checked_in && self.results_added) {
            return None;
        }
        let now = Instant::now();
        let (gate, transition) = self.strategy.admit(now.into_std());
        self.emit_transition(transition);
        if let Gate::Wait { .. } = gate {
            return None;
        }
        let failed = self.deliver_results().await;
        let now = Instant::now();
        let (verdict, retry_after, outcome) =
            failed.as_ref().map_or((Verdict::Success, None, Outcome::Success), |f| (f.verdict, f.retry_after, f.outcome));
        let interval = match at_once {
            true => Some(Duration::ZERO),
            false => self.rapid_interval(now),
        };
        let report = Report { verdict, retry_after, interval, outcome: Some(outcome) };
        let decision = self.strategy.complete(now.into_std(), report, &mut self.rng);
        self.emit_transition(decision.transition);
        if let Some(f) = failed {
            self.emit(Event::ResultsHeld { pending: self.outbox.len() as u32, class: f.outcome.class().to_string(), delay_ms: ms(decision.delay) });
        }
        Some(Instant::from_std(decision.next_attempt_at))
    }

    /// Results waiting in the outbox go first, inside the admitted attempt: if the server fails
    /// them, it is failing, and the attempt ends there (no check-in).
    async fn attempt_with_results(&mut self, probe_health: bool) -> AttemptResult {
        if let Some(failed) = self.deliver_results().await {
            return failed;
        }
        self.attempt(probe_health).await
    }

    /// Posts the outbox's results, oldest first, until it is empty or one fails. `Some` is a
    /// failure that ends the attempt (the server is unavailable, or renewal failed); answers
    /// that only say "not now" (403, 404, a second 401, ...) keep the results and let the check-in
    /// go on; 400, 413 and 422 mean this result will never be accepted: it is dropped, logged.
    async fn deliver_results(&mut self) -> Option<AttemptResult> {
        self.results_added = false;
        let mut renewed = false;
        for _ in 0..OUTBOX_RESULTS_MAX + 1 {
            let Some(result) = self.outbox.front().cloned() else { break };
            self.result_body = Some(serde_json::to_vec(&result).unwrap_or_default());
            let sent = self.request(RequestKind::Result).await;
            self.result_body = None;
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => return Some(AttemptResult::transport(RequestKind::Result, &e)),
            };
            let id = result.command_id;
            match resp.status {
                200..=299 => {
                    self.settle_result(&id, Delivery::Delivered, true);
                    self.emit(Event::ResultDelivered { id });
                }
                401 if !renewed => {
                    renewed = true;
                    if let Err(failed) = self.renew().await {
                        return Some(failed);
                    }
                }
                400 | 413 | 422 => {
                    self.settle_result(&id, Delivery::Dropped, true);
                    let reason = format!("the server refused it for good (HTTP {})", resp.status);
                    self.emit(Event::ResultDropped { id, reason });
                }
                status => {
                    let outcome = status_outcome(status);
                    if classify(outcome) == Verdict::Retry {
                        let retry_after = self.retry_after(outcome, &resp);
                        return Some(AttemptResult::failed(RequestKind::Result, outcome, Verdict::Retry, retry_after));
                    }
                    return None;
                }
            }
        }
        None
    }

    fn emit_transition(&mut self, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.emit(Event::Breaker { from: t.from.to_string(), to: t.to.to_string() });
        }
    }

    fn emit(&mut self, event: Event) {
        if let Some(held) = self.held_events.as_mut() {
            held.push(event);
            return;
        }
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
