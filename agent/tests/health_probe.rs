//! The 30-second promise, against the release binary with the default resilience settings:
//! however `/health` is broken (it hangs, or answers 503 asking for a minute), the agent checks
//! in within 30 s of the server's return, as the server sees it.
//!
//! The outage is the one kind after which the agent probes `/health` at all: the server itself
//! answering 500 to check-ins. The server returns right after a failed check-in reached it, the
//! worst moment: the agent then waits out its breaker period (15 s), probing the broken
//! `/health` halfway through, and the failed probe must change nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The promise: P4-001's success metric.
const PROMISE: Duration = Duration::from_secs(30);

fn recovers_within_the_promise(name: &str, health: Reply) {
    let mut h = Harness::new(name);
    // The defaults, as shipped: 15 s breaker period, 10 s request timeout, 15 s cap.
    h.config.as_object_mut().unwrap().remove("resilience");
    h.config["check_in_interval"] = serde_json::json!(5);
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no first check-in\n{}", agent.tail());

    h.server.set_health(health);
    h.server.set_commands(Reply::Status(500));
    let opened = || agent.events_named("breaker").iter().any(|e| e.str("to") == "open");
    assert!(wait_until(Duration::from_secs(60), opened), "the breaker never opened on 500s\n{}", agent.tail());
    // Let one broken probe happen, then return right after the next failed check-in arrives.
    assert!(wait_until(Duration::from_secs(30), || h.server.count(Route::Health) >= 1), "no probe after 500s\n{}", agent.tail());
    let failed_checkins = || h.server.requests().iter().filter(|r| r.route == Route::Commands && r.status == 500).count();
    let seen = failed_checkins();
    assert!(wait_until(Duration::from_secs(30), || failed_checkins() > seen), "no check-in during the outage\n{}", agent.tail());
    h.server.set_commands(Reply::Normal);
    let back = Instant::now();

    assert!(
        wait_until(PROMISE + Duration::from_secs(15), || h.server.successful_checkins_since(Some(back)) >= 1),
        "no check-in after the server's return\n{}",
        agent.tail()
    );
    let first = h.server.requests_between(Some(Route::Commands), back, Instant::now()).into_iter().find(|r| r.status == 200).unwrap();
    let took = first.at - back;
    eprintln!("{name}: checked in {took:?} after the server's return (/health broken)");
    assert!(took <= PROMISE, "checked in {took:?} after the server's return, beyond the 30 s promise\n{}", agent.tail());
    // The probe never counted as an attempt of its own.
    assert!(agent.events_named("attempt_failed").iter().all(|e| e.str("request") != "health"), "{}", agent.tail());
}

#[test]
fn a_hanging_health_does_not_delay_recovery() {
    recovers_within_the_promise("health-hang", Reply::Hang);
}

#[test]
fn a_health_asking_for_a_minute_does_not_delay_recovery() {
    recovers_within_the_promise("health-503-ra", Reply::RetryAfterSeconds { status: 503, seconds: 60 });
}
