//! What the check-in loop reports about itself: the [`Event`] type, the [`Observer`] hook, and
//! the one function that turns events into `tracing` log lines.
//!
//! Every event is both logged (for operators) and handed to the observer (for the simulation's
//! trace). The log lines carry the event's fields under the same names as the serialized event,
//! with `event` naming the variant, so the live chaos harness can read an agent's
//! `--log-format json` output back into the same `Event` values the simulation traces.
//! Tokens never appear in any event. Text that came from the network (command ids and types,
//! error causes) is escaped in the human-readable messages ([`Untrusted`]), so a server cannot
//! forge a log line with a newline in a command id.

use serde::{Deserialize, Serialize};

/// Which request of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Health,
    Checkin,
    Renew,
    /// `POST /api/v1/agents/{id}/logs`: a command's result.
    Result,
    /// `POST /api/v1/agents/{id}/system-info`: the machine's description.
    SystemInfo,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Health => "health",
            RequestKind::Checkin => "checkin",
            RequestKind::Renew => "renew",
            RequestKind::Result => "result",
            RequestKind::SystemInfo => "system_info",
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the loop reports. Durations are in milliseconds so the serialized form is plain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    AgentStarted { agent_id: String, version: String },
    /// A request is about to go out (health probes included).
    RequestStarted { kind: RequestKind },
    /// `retry_after_ms`: the `Retry-After` the answer carried (429/503 only, as parsed, before
    /// the agent's clamp), so a trace alone can tell whether the agent honoured it.
    RequestFinished {
        kind: RequestKind,
        class: String,
        ok: bool,
        elapsed_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// An attempt failed; the next one is due after `delay_ms`.
    AttemptFailed {
        attempt: u32,
        max_attempts: u32,
        class: String,
        verdict: String,
        delay_ms: u64,
        reason: String,
        consecutive_failures: u32,
        /// The request that failed the attempt when it was not the check-in: `health` (the
        /// probe failed, so no check-in was sent) or `renew`. Absent: the check-in failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestKind>,
        /// What went wrong beneath the class (the error chain of a network error, why a body
        /// was malformed), secrets removed. Given on the first failure of an outage and when it
        /// changes, not on every attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// A check-in succeeded; the next one is due after `delay_ms`.
    CheckinOk { commands: u32, delay_ms: u64 },
    Breaker { from: String, to: String },
    /// The first success after an outage.
    Recovered { outage_ms: u64, failed_attempts: u32 },
    /// The breaker refused to let an attempt out; the loop waits `wait_ms`.
    BreakerRejected { wait_ms: u64 },
    TokenRenewed { saved: bool },
    /// The server refused the refresh token: the agent must be re-registered.
    RenewalRejected { class: String },
    CommandReceived { id: String, kind: String },
    /// A command of an answer was not taken (not journaled, so not acknowledged: the server
    /// sends it again), or an entry of the answer was no command at all (`id` empty: it has
    /// none, and cannot be answered).
    CommandSkipped { id: String, kind: String, reason: String },
    /// A check-in answer passed `limit_bytes`: the `commands` complete within them were taken,
    /// the rest was not read (a server that redelivers sends those again).
    AnswerCutShort { commands: u32, limit_bytes: u64 },
    /// Rapid polling was switched on (by the server's answer or a command) for `for_ms`.
    RapidPolling { for_ms: u64 },
    /// Saving the token or the status failed; the loop goes on.
    StoreFailed { what: String, error: String },
    /// The loop returned because it was asked to shut down.
    Stopped,
    /// A command the journal already knows came again (the server redelivered it): it is not
    /// run again. `state` is its journal state; a finished one has its stored result re-sent.
    CommandDuplicate { id: String, kind: String, state: String },
    /// A command starts running (its journal entry says `running` first, durably).
    CommandStarted { id: String, kind: String },
    /// A command finished; its result (`success` or `failed`) is in the outbox.
    CommandFinished { id: String, kind: String, result: String, elapsed_ms: u64 },
    /// A command was running when the agent died: it is reported `failed` and never run again.
    CommandInterrupted { id: String, kind: String },
    /// The server answered 2xx to a command's result.
    ResultDelivered { id: String },
    /// A result was given up: the outbox was full (the oldest goes), or the server refused it
    /// for good (400, 413, 422).
    ResultDropped { id: String, reason: String },
    /// Posting results failed; `pending` results wait `delay_ms` on their own schedule (the
    /// check-ins go on at their pace).
    ResultsHeld { pending: u32, class: String, delay_ms: u64 },
    /// A state file (journal, outbox) was unreadable: moved aside to `moved_to`, and the agent
    /// goes on with an empty one.
    StateCorrupt { file: String, error: String, moved_to: String },
    /// A state file was written (atomically, fsync'd): its entries and size.
    StateSaved { file: String, entries: u32, bytes: u64 },
    /// The server stored the machine's description (`POST /system-info`).
    SystemInfoReported,
    /// The machine's description was not stored (`class`; `abandoned` when the next check-in
    /// came first); the next try is in `retry_in_ms`. Check-ins are not affected.
    SystemInfoFailed { class: String, retry_in_ms: u64 },
}

impl Event {
    /// The `event` tag, as serialized.
    pub fn name(&self) -> &'static str {
        match self {
            Event::AgentStarted { .. } => "agent_started",
            Event::RequestStarted { .. } => "request_started",
            Event::RequestFinished { .. } => "request_finished",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::CheckinOk { .. } => "checkin_ok",
            Event::Breaker { .. } => "breaker",
            Event::Recovered { .. } => "recovered",
            Event::BreakerRejected { .. } => "breaker_rejected",
            Event::TokenRenewed { .. } => "token_renewed",
            Event::RenewalRejected { .. } => "renewal_rejected",
            Event::CommandReceived { .. } => "command_received",
            Event::CommandSkipped { .. } => "command_skipped",
            Event::AnswerCutShort { .. } => "answer_cut_short",
            Event::RapidPolling { .. } => "rapid_polling",
            Event::StoreFailed { .. } => "store_failed",
            Event::Stopped => "stopped",
            Event::CommandDuplicate { .. } => "command_duplicate",
            Event::CommandStarted { .. } => "command_started",
            Event::CommandFinished { .. } => "command_finished",
            Event::CommandInterrupted { .. } => "command_interrupted",
            Event::ResultDelivered { .. } => "result_delivered",
            Event::ResultDropped { .. } => "result_dropped",
            Event::ResultsHeld { .. } => "results_held",
            Event::StateCorrupt { .. } => "state_corrupt",
            Event::StateSaved { .. } => "state_saved",
            Event::SystemInfoReported => "system_info_reported",
            Event::SystemInfoFailed { .. } => "system_info_failed",
        }
    }
}

/// Receives every event the loop emits, after it is logged. The simulation records them in
/// its trace; production uses [`NoObserver`].
pub trait Observer {
    fn on_event(&mut self, event: &Event);
}

/// Logging only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_event(&mut self, _event: &Event) {}
}

/// A duration as the whole milliseconds events carry (saturating).
pub fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Text from the network, made safe for a one-line human-readable log message: control
/// characters (newlines included) and the Unicode bidirectional controls are written as
/// escapes (`\n`, `\u{202e}`), everything else as is.
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl std::fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for ch in self.0.chars() {
            match ch {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') => {
                    write!(f, "\\u{{{:x}}}", c as u32)?
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Command events logged one line each per check-in answer; beyond this they are summarised in
/// one line ([`log_commands_summary`]). The observer still receives every event.
pub const COMMAND_LOG_LINES_MAX: usize = 16;

/// One line for the command events of an answer that were not logged one by one.
pub fn log_commands_summary(agent: &str, not_logged: usize, kinds: &std::collections::BTreeMap<String, usize>) {
    let mut listed: Vec<String> = kinds.iter().take(8).map(|(k, n)| format!("{} x{n}", Untrusted(k))).collect();
    if kinds.len() > 8 {
        listed.push(format!("{} more types", kinds.len() - 8));
    }
    let types = listed.join(", ");
    tracing::warn!(
        event = "command_lines_summarised",
        agent,
        not_logged,
        types = types.as_str(),
        "{not_logged} more command log lines for this check-in not written one by one (command types: {types})"
    );
}

/// Writes one event as a log line. Levels: failures, breaker changes and recoveries are
/// operator news (WARN/INFO); routine check-ins and single requests are DEBUG.
pub fn log_event(agent: &str, e: &Event) {
    use tracing::{debug, error, info, warn};
    let event = e.name();
    match e {
        Event::AgentStarted { agent_id, version } => {
            info!(event, agent_id, version, "redflag-agent {version} started for agent {agent_id}")
        }
        Event::RequestStarted { kind } => debug!(event, agent, kind = %kind, "{kind} request started"),
        Event::RequestFinished { kind, class, ok, elapsed_ms, retry_after_ms } => debug!(
            event,
            agent,
            kind = %kind,
            class,
            ok,
            elapsed_ms,
            retry_after_ms = *retry_after_ms,
            "{kind} request finished: {class} in {}s",
            secs(*elapsed_ms)
        ),
        Event::CheckinOk { commands, delay_ms } => {
            debug!(event, agent, commands, delay_ms, "checked in ({commands} commands); next check-in in {}s", secs(*delay_ms))
        }
        Event::Breaker { from, to } => match to.as_str() {
            "open" => warn!(event, agent, from, to, "circuit breaker {from} -> {to}: pausing check-ins"),
            _ => info!(event, agent, from, to, "circuit breaker {from} -> {to}"),
        },
        Event::Recovered { outage_ms, failed_attempts } => info!(
            event,
            agent,
            outage_ms,
            failed_attempts,
            "server reachable again: recovered after an outage of {}s ({failed_attempts} failed attempts)",
            secs(*outage_ms)
        ),
        Event::BreakerRejected { wait_ms } => {
            debug!(event, agent, wait_ms, "circuit breaker open; next probe in {}s", secs(*wait_ms))
        }
        Event::TokenRenewed { saved } => match saved {
            true => info!(event, agent, saved, "access token renewed and saved to the config file"),
            false => warn!(event, agent, saved, "access token renewed but NOT saved to the config file; it is used for this run only"),
        },
        Event::RenewalRejected { class } => error!(
            event,
            agent,
            class,
            "the server refused the refresh token ({class}): this agent must be re-registered; it keeps trying at the regular interval"
        ),
        Event::RapidPolling { for_ms } => info!(event, agent, for_ms, "rapid polling for {}s", secs(*for_ms)),
        Event::StoreFailed { what, error } => {
            warn!(event, agent, what, error, "could not save {what}: {}", Untrusted(error))
        }
        Event::Stopped => info!(event, agent, "check-in loop stopped"),
        Event::SystemInfoReported | Event::SystemInfoFailed { .. } => log_system_info_event(agent, e),
        Event::AttemptFailed { .. } => log_attempt_failed(agent, e),
        Event::CommandReceived { .. }
        | Event::AnswerCutShort { .. }
        | Event::CommandSkipped { .. }
        | Event::CommandDuplicate { .. }
        | Event::CommandStarted { .. }
        | Event::CommandFinished { .. }
        | Event::CommandInterrupted { .. } => log_command_event(agent, e),
        Event::ResultDelivered { .. }
        | Event::ResultDropped { .. }
        | Event::ResultsHeld { .. }
        | Event::StateCorrupt { .. }
        | Event::StateSaved { .. } => log_state_event(agent, e),
    }
}

/// `POST /system-info`: stored, or not and when it is tried again.
fn log_system_info_event(agent: &str, e: &Event) {
    use tracing::{info, warn};
    let event = e.name();
    match e {
        Event::SystemInfoReported => info!(event, agent, "system information reported to the server"),
        Event::SystemInfoFailed { class, retry_in_ms } => warn!(
            event,
            agent,
            class,
            retry_in_ms,
            "system information not reported ({class}); next try in {}s (check-ins go on as usual)",
            secs(*retry_in_ms)
        ),
        _ => {}
    }
}

/// `attempt_failed`: which request failed, why, and when the next attempt goes.
fn log_attempt_failed(agent: &str, e: &Event) {
    use tracing::warn;
    let event = e.name();
    if let Event::AttemptFailed { attempt, max_attempts, class, verdict, delay_ms, reason, consecutive_failures, request, cause } = e {
        let what = match request {
            Some(RequestKind::Health) => "health probe failed, so no check-in was sent",
            Some(RequestKind::Renew) => "token renewal failed",
            Some(RequestKind::Result) => "result delivery failed, so no check-in was sent",
            Some(RequestKind::SystemInfo) => "system information report failed",
            Some(RequestKind::Checkin) | None => "check-in failed",
        };
        let then = match request {
            Some(RequestKind::Health) => "; it goes straight to the check-in",
            _ => "",
        };
        let because = cause.as_deref().map(|c| format!(": {}", Untrusted(c))).unwrap_or_default();
        warn!(
            event,
            agent,
            attempt,
            max_attempts,
            class,
            verdict,
            delay_ms,
            reason,
            consecutive_failures,
            request = request.map(RequestKind::as_str),
            cause = cause.as_deref(),
            "{what} (attempt {attempt}/{max_attempts}, {class}{because}); next attempt in {}s{then} ({reason})",
            secs(*delay_ms)
        )
    }
}

/// The command events: received, skipped, duplicate, started, finished, interrupted.
fn log_command_event(agent: &str, e: &Event) {
    use tracing::{info, warn};
    let event = e.name();
    match e {
        Event::CommandReceived { id, kind } => {
            info!(event, agent, id, kind, "received command {} ({})", Untrusted(id), Untrusted(kind))
        }
        Event::AnswerCutShort { commands, limit_bytes } => warn!(
            event,
            agent,
            commands,
            limit_bytes,
            "the check-in answer is longer than {limit_bytes} bytes: took the {commands} command(s) complete within them; the rest was not read (a server that redelivers sends them again)"
        ),
        Event::CommandSkipped { id, kind, reason } if id.is_empty() => {
            warn!(event, agent, id, kind, reason, "skipped an entry of the check-in answer that is not a command: {}", Untrusted(reason))
        }
        Event::CommandSkipped { id, kind, reason } => {
            warn!(event, agent, id, kind, reason, "skipped command {} ({}): {}", Untrusted(id), Untrusted(kind), Untrusted(reason))
        }
        Event::CommandDuplicate { id, kind, state } => {
            info!(event, agent, id, kind, state, "command {} ({}) came again; already {state} here, not run again", Untrusted(id), Untrusted(kind))
        }
        Event::CommandStarted { id, kind } => info!(event, agent, id, kind, "running command {} ({})", Untrusted(id), Untrusted(kind)),
        Event::CommandFinished { id, kind, result, elapsed_ms } => info!(
            event,
            agent,
            id,
            kind,
            result,
            elapsed_ms,
            "command {} ({}) finished: {result} in {}s",
            Untrusted(id),
            Untrusted(kind),
            secs(*elapsed_ms)
        ),
        Event::CommandInterrupted { id, kind } => warn!(
            event,
            agent,
            id,
            kind,
            "command {} ({}) was running when the agent stopped; reported failed, not run again",
            Untrusted(id),
            Untrusted(kind)
        ),
        _ => {}
    }
}

/// The result and state-file events.
fn log_state_event(agent: &str, e: &Event) {
    use tracing::{debug, error, trace, warn};
    let event = e.name();
    match e {
        Event::ResultDelivered { id } => debug!(event, agent, id, "result of command {} delivered", Untrusted(id)),
        Event::ResultDropped { id, reason } => {
            error!(event, agent, id, reason, "result of command {} dropped: {}", Untrusted(id), Untrusted(reason))
        }
        Event::ResultsHeld { pending, class, delay_ms } => warn!(
            event,
            agent,
            pending,
            class,
            delay_ms,
            "{pending} result(s) not delivered ({class}); they are posted again in {}s, check-ins go on",
            secs(*delay_ms)
        ),
        Event::StateCorrupt { file, error, moved_to } => error!(
            event,
            agent,
            file,
            error,
            moved_to,
            "state file {file} is corrupt ({}); moved aside to {moved_to}, starting with an empty one",
            Untrusted(error)
        ),
        // One per write of a state file (three per command run): TRACE, so a debug log of a
        // check-in with hundreds of commands stays readable.
        Event::StateSaved { file, entries, bytes } => {
            trace!(event, agent, file, entries, bytes, "saved {file}: {entries} entries, {bytes} bytes")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_serialized_tag() {
        let samples = vec![
            Event::AgentStarted { agent_id: "a".into(), version: "1".into() },
            Event::RequestStarted { kind: RequestKind::Health },
            Event::RequestFinished { kind: RequestKind::Renew, class: "ok".into(), ok: true, elapsed_ms: 1, retry_after_ms: None },
            Event::RequestFinished {
                kind: RequestKind::Checkin,
                class: "http_429".into(),
                ok: false,
                elapsed_ms: 1,
                retry_after_ms: Some(20_000),
            },
            Event::AttemptFailed {
                attempt: 1,
                max_attempts: 5,
                class: "timeout".into(),
                verdict: "retry".into(),
                delay_ms: 1,
                reason: "backoff".into(),
                consecutive_failures: 1,
                request: None,
                cause: None,
            },
            Event::AttemptFailed {
                attempt: 2,
                max_attempts: 5,
                class: "http_503".into(),
                verdict: "retry".into(),
                delay_ms: 1,
                reason: "backoff".into(),
                consecutive_failures: 2,
                request: Some(RequestKind::Health),
                cause: Some("x".into()),
            },
            Event::CheckinOk { commands: 0, delay_ms: 1 },
            Event::Breaker { from: "closed".into(), to: "open".into() },
            Event::Recovered { outage_ms: 1, failed_attempts: 1 },
            Event::BreakerRejected { wait_ms: 1 },
            Event::TokenRenewed { saved: true },
            Event::RenewalRejected { class: "http_401".into() },
            Event::CommandReceived { id: "1".into(), kind: "x".into() },
            Event::CommandSkipped { id: "1".into(), kind: "x".into(), reason: "r".into() },
            Event::RapidPolling { for_ms: 1 },
            Event::StoreFailed { what: "status".into(), error: "e".into() },
            Event::Stopped,
            Event::CommandDuplicate { id: "1".into(), kind: "x".into(), state: "done".into() },
            Event::CommandStarted { id: "1".into(), kind: "x".into() },
            Event::CommandFinished { id: "1".into(), kind: "x".into(), result: "success".into(), elapsed_ms: 2 },
            Event::CommandInterrupted { id: "1".into(), kind: "x".into() },
            Event::ResultDelivered { id: "1".into() },
            Event::ResultDropped { id: "1".into(), reason: "r".into() },
            Event::ResultsHeld { pending: 1, class: "http_502".into(), delay_ms: 3 },
            Event::StateCorrupt { file: "journal.json".into(), error: "e".into(), moved_to: "journal.json.corrupt".into() },
            Event::StateSaved { file: "outbox.json".into(), entries: 1, bytes: 2 },
            Event::RequestStarted { kind: RequestKind::Result },
            Event::SystemInfoReported,
            Event::SystemInfoFailed { class: "http_500".into(), retry_in_ms: 60_000 },
            Event::RequestStarted { kind: RequestKind::SystemInfo },
        ];
        for e in samples {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["event"], e.name());
            let back: Event = serde_json::from_value(v).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn untrusted_text_cannot_break_a_line() {
        let shown = Untrusted("c1\n2026-01-01T00:00:00Z  INFO forged\r\u{202e}\u{7}").to_string();
        assert_eq!(shown, "c1\\n2026-01-01T00:00:00Z  INFO forged\\r\\u{202e}\\u{7}");
        assert!(!shown.contains('\n'));
        assert_eq!(Untrusted("scan_updates é").to_string(), "scan_updates é");
    }

    #[test]
    fn attempt_failed_without_the_new_fields_still_parses() {
        let v = serde_json::json!({"event":"attempt_failed","attempt":1,"max_attempts":5,"class":"timeout","verdict":"retry",
            "delay_ms":1,"reason":"backoff","consecutive_failures":1});
        let e: Event = serde_json::from_value(v).unwrap();
        assert!(matches!(e, Event::AttemptFailed { request: None, cause: None, .. }));
    }
}
