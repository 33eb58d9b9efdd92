//! Throttling, run against the real binary: answers of 429 (and 503) with `Retry-After`, as
//! delta-seconds and as an HTTP-date, are honoured. Counted on the stand-in's side: after each
//! throttled answer, no request of any kind arrives before the moment the server asked for
//! (with a small margin for rounding), and the agent does come back afterwards.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Slack for the rounding between two processes reading the same monotonic clock.
const MARGIN: Duration = Duration::from_millis(250);

/// Two throttled check-ins in a row (so the second one comes after a `/health` probe), then
/// normal service.
fn honours_retry_after(name: &str, reply: Reply) {
    let h = Harness::new(name);
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in at start\n{}", agent.tail());

    let from = Instant::now();
    h.server.script_commands([reply.clone(), reply]);
    assert!(
        wait_until(Duration::from_secs(40), || h.server.successful_checkins_since(Some(from)) >= 1),
        "the agent never came back after being throttled\n{}",
        agent.tail()
    );

    let log = h.server.requests();
    let throttled: Vec<usize> = (0..log.len()).filter(|&i| log[i].not_before.is_some()).collect();
    assert_eq!(throttled.len(), 2, "{log:#?}");
    for &i in &throttled {
        let not_before = log[i].not_before.unwrap();
        let asked = not_before - log[i].at;
        // Without this the test would prove nothing: our own backoff here is at most 0.4 s.
        assert!(asked >= Duration::from_secs(3), "the stand-in asked for only {asked:?}");
        let next = log.get(i + 1).unwrap_or_else(|| panic!("no request after the throttled one\n{}", agent.tail()));
        let early = (not_before - MARGIN).checked_duration_since(next.at);
        assert!(
            early.is_none(),
            "the agent came back {:?} after a Retry-After of {asked:?} ({:?} early): {:?} {}",
            next.at - log[i].at,
            early.unwrap(),
            next.route,
            agent.tail()
        );
    }
    let failed = agent.events_named("attempt_failed");
    assert!(
        failed.iter().filter(|e| e.str("reason") == "retry_after").count() >= 2,
        "the waits were not logged as Retry-After waits\n{}",
        agent.tail()
    );
}

#[test]
fn a_429_with_retry_after_in_seconds_is_honoured() {
    honours_retry_after("429-seconds", Reply::RetryAfterSeconds { status: 429, seconds: 4 });
}

#[test]
fn a_429_with_retry_after_as_an_http_date_is_honoured() {
    honours_retry_after("429-date", Reply::RetryAfterDate { status: 429, seconds: 5 });
}

#[test]
fn a_503_with_retry_after_is_honoured() {
    honours_retry_after("503-seconds", Reply::RetryAfterSeconds { status: 503, seconds: 4 });
}
