//! `POST /api/v1/agents/{id}/system-info`, run as the real binary against the stand-in:
//!
//! * it goes out once at start, with RedFlag 0.1.18's Go agent's field names and types (numbers
//!   as numbers, sizes in bytes, `uptime` text, RFC 3339 `timestamp`, the Go agent's `metadata`
//!   keys), the agent's Bearer token, and not again within the hour;
//! * a failing `/system-info` (500, a hang, 429 with `Retry-After`) never delays or blocks a
//!   check-in: check-ins keep their pace, the breaker never opens, and the report is retried on
//!   its own schedule (a minute later, or when `Retry-After` says), said in one WARN line.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn system_info_requests(h: &Harness) -> Vec<Record> {
    h.server.requests().into_iter().filter(|r| r.route == Route::SystemInfo).collect()
}

/// The longest gap between two check-ins the stand-in saw after `since`.
fn longest_checkin_gap(h: &Harness, since: Instant) -> Duration {
    let at: Vec<Instant> = h.server.requests().into_iter().filter(|r| r.route == Route::Commands && r.at >= since).map(|r| r.at).collect();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

#[test]
fn system_info_goes_out_at_start_with_the_go_agents_fields_and_types() {
    let h = Harness::new("sysinfo");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || !system_info_requests(&h).is_empty()), "no system-info report\n{}", agent.tail());
    assert!(wait_until(SOON, || !agent.events_named("system_info_reported").is_empty()), "{}", agent.tail());
    let sent = system_info_requests(&h).remove(0);
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.authorization.as_deref(), Some(format!("Bearer {}", h.secrets.token).as_str()));
    let body: Value = serde_json::from_slice(&sent.body).expect("a JSON body");
    assert!(body["timestamp"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok()).is_some(), "{body}");
    for key in ["cpu_cores", "cpu_threads", "memory_total", "disk_total", "disk_used", "processes"] {
        assert!(body[key].as_u64().is_some_and(|n| n > 0), "{key} is not a positive whole number: {body}");
    }
    assert!(body["uptime"].as_str().is_some_and(|u| u.starts_with("up ")), "{body}");
    for key in ["hostname", "os_type", "os_version", "os_architecture", "collected_at", "disk_mount", "agent_build_version"] {
        assert!(body["metadata"][key].is_string(), "metadata.{key} missing: {body}");
    }
    // Hourly: at a 1 s interval, still one report a few check-ins later.
    let since = Instant::now();
    assert!(wait_until(SOON, || h.server.successful_checkins_since(Some(since)) >= 4), "{}", agent.tail());
    assert_eq!(system_info_requests(&h).len(), 1, "more than one report at start");
}

#[test]
fn a_failing_system_info_never_delays_or_blocks_check_ins() {
    for (name, reply, class, retry_in_ms) in [
        ("sysinfo-500", Reply::Status(500), "http_500", 60_000),
        ("sysinfo-429", Reply::RetryAfterSeconds { status: 429, seconds: 300 }, "http_429", 300_000),
        ("sysinfo-hang", Reply::Hang, "abandoned", 60_000),
    ] {
        let h = Harness::new(name);
        h.server.set_system_info(reply);
        // From the start: the first report goes out at start, and must not hold a check-in back.
        let since = Instant::now();
        let agent = h.spawn(LogFormat::Json);
        assert!(
            wait_until(SOON, || !agent.events_named("system_info_failed").is_empty()),
            "{name}: no system_info_failed\n{}",
            agent.tail()
        );
        let failed = agent.events_named("system_info_failed").remove(0);
        assert_eq!((failed.str("class"), failed.u64("retry_in_ms")), (class, retry_in_ms), "{name}: {}", failed.v);
        // Check-ins keep their 1 s pace (jittered by 10%) while the report fails, and nothing
        // about them fails: no breaker, no failed attempt.
        assert!(wait_until(SOON, || h.server.successful_checkins_since(Some(since)) >= 5), "{name}\n{}", agent.tail());
        let gap = longest_checkin_gap(&h, since);
        assert!(gap < Duration::from_millis(2_500), "{name}: a check-in waited {gap:?} at a 1 s interval\n{}", agent.tail());
        assert!(agent.events_named("breaker").is_empty() && agent.events_named("attempt_failed").is_empty(), "{name}\n{}", agent.tail());
        // Retried on its own schedule (a minute at least), not with every check-in.
        assert_eq!(system_info_requests(&h).len(), 1, "{name}: the report was retried with the check-ins");
    }
}
