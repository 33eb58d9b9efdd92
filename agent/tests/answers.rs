//! What the agent makes of unusual but legitimate answers, run against the real binary:
//!
//! * rapid polling (the answer's `rapid_polling`, or an `enable_heartbeat` command) already sets
//!   the delay to the very next check-in, not one regular interval later;
//! * `rapid_polling.until` with a non-UTC offset (a Go server in local time) is honoured;
//! * 204 No Content is a successful check-in with no commands, not a malformed answer;
//! * 10,000 queued commands do not write hundreds of log lines per check-in;
//! * a bare 404 (a gateway whose backend is gone) is retried with backoff like a 502, while a
//!   404 with RedFlag's JSON error body waits for the next regular check-in, as before.
//!
//! The delays are read from the agent's own `checkin_ok` / `attempt_failed` events, so nothing
//! here measures time.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{Value, json};

/// A harness whose regular interval (30 s) is far from the rapid one (5 s).
fn slow_interval(name: &str) -> Harness {
    let mut h = Harness::new(name);
    h.config["check_in_interval"] = json!(30);
    h
}

/// The first `checkin_ok` event, once it is there.
fn first_checkin_ok(agent: &Agent) -> Event {
    assert!(wait_until(SOON, || !agent.events_named("checkin_ok").is_empty()), "no check-in\n{}", agent.tail());
    agent.events_named("checkin_ok").remove(0)
}

/// `t` written as RFC 3339 in a zone `offset_hours` from UTC, the way a Go server in that zone
/// writes it.
fn rfc3339_in_zone(t: SystemTime, offset_hours: i64) -> String {
    let shifted = if offset_hours >= 0 {
        t + Duration::from_secs(offset_hours as u64 * 3600)
    } else {
        t - Duration::from_secs(offset_hours.unsigned_abs() * 3600)
    };
    let utc = humantime::format_rfc3339_seconds(shifted).to_string();
    let sign = if offset_hours >= 0 { '+' } else { '-' };
    format!("{}{sign}{:02}:00", utc.trim_end_matches('Z'), offset_hours.abs())
}

fn rapid_polling_applies_at_once(name: &str, answer: Value) {
    let h = slow_interval(name);
    h.server.script_commands([Reply::json(200, answer)]);
    let agent = h.spawn(LogFormat::Json);
    let ok = first_checkin_ok(&agent);
    let delay = ok.u64("delay_ms");
    assert!(delay <= 5_500, "the check-in after a rapid-polling answer waits {delay} ms, the regular interval\n{}", agent.tail());
    // The command's rapid polling is switched on when it runs, just after the check-in.
    assert!(wait_until(SOON, || !agent.events_named("rapid_polling").is_empty()), "{}", agent.tail());
}

#[test]
fn rapid_polling_from_the_answer_applies_to_the_next_check_in() {
    let until = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(120)).to_string();
    rapid_polling_applies_at_once("rapid-answer", json!({"commands": [], "rapid_polling": {"enabled": true, "until": until}}));
}

#[test]
fn an_enable_heartbeat_command_applies_to_the_next_check_in() {
    rapid_polling_applies_at_once(
        "rapid-command",
        json!({"commands": [{"id": "h1", "type": "enable_heartbeat", "params": {"duration_minutes": 2}}]}),
    );
}

#[test]
fn rapid_polling_until_in_a_local_time_zone_is_honoured() {
    let until = rfc3339_in_zone(SystemTime::now() + Duration::from_secs(120), -4);
    assert!(until.ends_with("-04:00"), "{until}");
    let h = slow_interval("rapid-offset");
    h.server.script_commands([Reply::json(200, json!({"commands": [], "rapid_polling": {"enabled": true, "until": until}}))]);
    let agent = h.spawn(LogFormat::Json);
    first_checkin_ok(&agent);
    assert!(
        wait_until(Duration::from_secs(5), || !agent.events_named("rapid_polling").is_empty()),
        "rapid_polling.until = {until} was ignored\n{}",
        agent.tail()
    );
    let window = agent.events_named("rapid_polling")[0].u64("for_ms");
    assert!((100_000..=120_000).contains(&window), "a window of {window} ms for an `until` 120 s away ({until})");
}

#[test]
fn a_204_is_a_check_in_with_no_commands() {
    let h = slow_interval("no-content");
    h.server.set_commands(Reply::Custom { status: 204, content_type: "text/plain", body: String::new() });
    let agent = h.spawn(LogFormat::Json);
    let ok = first_checkin_ok(&agent);
    assert_eq!(ok.u64("commands"), 0);
    assert!(ok.u64("delay_ms") >= 27_000, "a 204 should lead to the regular interval: {}", ok.v);
    assert!(agent.events_named("attempt_failed").is_empty(), "a 204 was taken as a failure\n{}", agent.tail());
    assert!(agent.events_named("breaker").is_empty(), "{}", agent.tail());
}

#[test]
fn ten_thousand_queued_commands_are_summarised_in_the_log() {
    let h = slow_interval("many-commands");
    let commands: Vec<Value> =
        (0..10_000).map(|i| json!({"id": format!("cmd-{i}"), "type": if i % 2 == 0 { "scan_updates" } else { "reboot" }, "params": {}})).collect();
    h.server.script_commands([Reply::json(200, json!({"commands": commands}))]);
    let agent = h.spawn(LogFormat::Json);
    first_checkin_ok(&agent);
    assert!(
        wait_until(Duration::from_secs(5), || !agent.events_named("command_lines_summarised").is_empty()),
        "no summary line\n{}",
        agent.tail()
    );
    // The answer's commands, then their runs (each gets a `failed` result: not implemented by
    // this agent), are each logged one by one up to the budget and summarised beyond it.
    assert!(
        wait_until(Duration::from_secs(30), || agent.events_named("command_lines_summarised").len() >= 2),
        "no summary of the runs\n{}",
        agent.tail()
    );
    let command_lines = agent.events().iter().filter(|e| e.name().starts_with("command_")).count();
    assert!(command_lines <= 2 * 17, "{command_lines} command log lines for one check-in");
    // Results go out one request (and one `result_delivered` line) each, as they are delivered:
    // those lines (and the HTTP client's debug lines about its connections) are not the
    // answer's and are not counted here.
    let per_result = ["result_delivered", "request_started", "request_finished"];
    let lines =
        agent.events().iter().filter(|e| !per_result.contains(&e.name()) && !e.str("target").starts_with("hyper")).count();
    assert!(lines <= 60, "{lines} log lines (results aside) after one check-in with 10,000 commands");
    let summary = &agent.events_named("command_lines_summarised")[0];
    assert!(summary.str("types").contains("reboot") && summary.str("types").contains("scan_updates"), "{}", summary.v);
    assert!(summary.u64("not_logged") >= 200, "{}", summary.v);
}

#[test]
fn a_bare_404_is_retried_with_backoff_and_a_redflag_404_waits_for_the_regular_interval() {
    let mut h = Harness::new("gateway-404");
    h.config["check_in_interval"] = json!(10);
    let agent = h.spawn(LogFormat::Json);
    first_checkin_ok(&agent);

    // A gateway with its backend gone: nginx's HTML page (here: a short text body).
    h.server.set_commands(Reply::Status(404));
    assert!(wait_until(SOON, || agent.events_named("attempt_failed").len() >= 2), "{}", agent.tail());
    h.server.set_commands(Reply::Normal);
    let bare = agent.events_named("attempt_failed");
    for e in &bare {
        assert_eq!(e.str("class"), "http_404", "{}", e.v);
        assert_eq!(e.str("verdict"), "retry", "a bare 404 must be retried: {}", e.v);
        assert!(e.u64("delay_ms") <= 3_000, "a bare 404 waited for more than the backoff cap: {}", e.v);
    }
    assert!(bare[0].str("cause").contains("without RedFlag's JSON error body"), "{}", bare[0].v);
    assert!(wait_until(SOON, || agent.events_named("recovered").len() == 1), "{}", agent.tail());

    // The server itself says the agent is not known: wait for the next regular check-in.
    let before = agent.events_named("attempt_failed").len();
    h.server.set_commands(Reply::json(404, json!({"error": "agent not found"})));
    assert!(
        wait_until(Duration::from_secs(40), || agent.events_named("attempt_failed").len() > before),
        "{}",
        agent.tail()
    );
    let e = &agent.events_named("attempt_failed")[before];
    assert_eq!(e.str("verdict"), "fail_fast", "{}", e.v);
    assert_eq!(e.str("reason"), "regular", "{}", e.v);
    assert!(e.u64("delay_ms") >= 9_000, "{}", e.v);
    assert!(e.str("cause").contains("agent not found"), "the server's message is not in the log: {}", e.v);
}
