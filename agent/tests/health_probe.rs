//! The `/health` probe is an optimisation, not a gate, run against the real binary: after one
//! failed check-in (so the agent is recovering and probes `/health` first), `/health` answers
//! 503, or hangs, while the check-in route works again. The agent must still check in, within
//! the usual recovery bound, because after a failed probe the next attempt goes straight to the
//! check-in: probes never block check-ins twice in a row. The failed probe is logged as a failed
//! probe (`request: health`, "health probe failed"), not as a failed check-in.

mod common;

use std::time::Instant;

use common::*;

fn probe_failure_does_not_block_check_ins(name: &str, health: Reply, class: &str) {
    let h = Harness::new(name);
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no first check-in\n{}", agent.tail());

    // /health breaks first (a healthy agent does not probe, so nothing is sent to it yet), then
    // one failed check-in: the agent is recovering from now on, and its first probe (10 ms
    // later) already meets the broken /health.
    h.server.set_health(health);
    h.server.set_commands(Reply::Status(502));
    assert!(wait_until(SOON, || !agent.events_named("attempt_failed").is_empty()), "no failure on 502\n{}", agent.tail());
    h.server.set_commands(Reply::Normal);
    let fixed = Instant::now();

    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(fixed)) >= 2),
        "no check-in while /health fails and the check-in route works: the probe blocks check-ins\n{}",
        agent.tail()
    );
    // Usual bound: one failed probe (at most a request timeout, 2 s), one wait (at most the
    // 3 s cap or breaker period), then the check-in: never two probes without a check-in.
    let log = h.server.requests_between(None, fixed, Instant::now());
    let routes: Vec<Route> = log.iter().map(|r| r.route).collect();
    assert!(
        !routes.windows(2).any(|w| w == [Route::Health, Route::Health]),
        "two probes in a row without a check-in between: {routes:?}"
    );

    let failed = agent.events_named("attempt_failed");
    let probes: Vec<&Event> = failed.iter().filter(|e| e.str("request") == "health").collect();
    assert!(!probes.is_empty(), "the failed probe was not logged as one\n{}", agent.tail());
    for p in &probes {
        assert_eq!(p.str("class"), class, "{}", p.v);
        assert!(p.str("message").starts_with("health probe failed"), "{}", p.v);
        assert!(p.str("message").contains("straight to the check-in"), "{}", p.v);
    }
    assert!(
        failed.iter().all(|e| e.str("request") == "health" || e.str("class") == "http_502"),
        "a failure other than the probe's or the 502 was logged as a failed check-in\n{}",
        agent.tail()
    );
}

#[test]
fn a_503_from_health_does_not_block_check_ins() {
    probe_failure_does_not_block_check_ins("health-503", Reply::Status(503), "http_503");
}

#[test]
fn a_hanging_health_does_not_block_check_ins() {
    probe_failure_does_not_block_check_ins("health-hang", Reply::Hang, "timeout");
}
