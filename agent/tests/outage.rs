//! Outages, run against the real binary: the server process goes away (listener dropped, so
//! connections are refused) and comes back on the same port, once with the circuit breaker in
//! play and once with it out of the way so the backoff cap decides; and a window in which a
//! proxy answers 502 to everything.
//!
//! What they prove: the agent never stops trying, tries at a backed-off rate (not a hot loop),
//! never waits longer than the configured cap, checks in again within seconds of the server's
//! return without a restart, and logs breaker transitions and the recovery. Requests are
//! counted on the stand-in's side; while there is no server to count, the agent's JSON log is.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Failed attempts logged in `[from, to)`.
fn failed_attempts(agent: &Agent, from: Instant, to: Instant) -> Vec<Event> {
    agent.events_named("attempt_failed").into_iter().filter(|e| e.at >= from && e.at < to).collect()
}

#[test]
fn keeps_trying_while_the_server_is_down_and_checks_in_after_it_returns_on_the_same_port() {
    let mut h = Harness::new("restart");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 2), "no check-ins at start\n{}", agent.tail());

    let port = h.server.port();
    h.server.stop();
    let down_at = Instant::now();
    hold_for(Duration::from_secs(8));
    let restarted_at = Instant::now();
    // Read the log before the restart can add to it.
    let during = failed_attempts(&agent, down_at, restarted_at);
    h.server.restart();
    assert_eq!(h.server.port(), port);

    // With a 3 s breaker the agent makes a quick burst, then one probe every ~3 s: about 5
    // attempts in 8 s. A hot loop would make thousands; a loop that gave up, none late on.
    assert!(during.len() >= 3, "only {} failed attempts in an 8 s outage\n{}", during.len(), agent.tail());
    assert!(during.len() <= 25, "{} attempts in an 8 s outage: not backed off\n{}", during.len(), agent.tail());
    assert!(
        during.iter().any(|e| e.str("class") == "connection_refused"),
        "no connection_refused attempt while the listener was gone\n{}",
        agent.tail()
    );
    let late = restarted_at - Duration::from_millis(4500);
    assert!(
        during.iter().any(|e| e.at >= late),
        "no attempt in the last 4.5 s of the outage: the agent stopped trying\n{}",
        agent.tail()
    );

    // Back within seconds (the longest wait is the 3 s breaker timeout), without a restart.
    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(restarted_at)) >= 1),
        "no check-in after the server came back on port {port}\n{}",
        agent.tail()
    );
    assert!(wait_until(SOON, || !agent.events_named("recovered").is_empty()), "no `recovered` event\n{}", agent.tail());
    let recovered = &agent.events_named("recovered")[0];
    assert!(recovered.u64("failed_attempts") >= 3, "{}", recovered.v);
    assert!(recovered.u64("outage_ms") >= 5_000, "the outage lasted 8 s: {}", recovered.v);

    // And then back to the regular 1 s interval, not a burst of catching up.
    let back = h
        .server
        .requests()
        .iter()
        .find(|r| r.route == Route::Commands && r.at >= restarted_at && r.normal && r.status == 200)
        .unwrap()
        .at;
    hold_for(Duration::from_secs(3));
    let after = h.server.requests_between(None, back, back + Duration::from_secs(3)).len();
    assert!(after <= 8, "{after} requests in the 3 s after recovery with a 1 s interval");
}

#[test]
fn with_the_breaker_out_of_the_way_the_backoff_cap_bounds_every_wait() {
    let mut h = Harness::new("cap");
    // The breaker and the burst limit never trigger, jitter is off: the delays are exactly
    // 0.2, 0.4, 0.8, 1.6 s and then the 3 s cap, forever.
    h.config["resilience"]["circuit_breaker_threshold"] = json!(10000);
    h.config["resilience"]["max_retries"] = json!(1000);
    h.config["resilience"]["jitter"] = json!("none");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in at start\n{}", agent.tail());

    h.server.stop();
    let down_at = Instant::now();
    hold_for(Duration::from_secs(12));
    let restarted_at = Instant::now();
    let during = failed_attempts(&agent, down_at, restarted_at);
    h.server.restart();

    let delays: Vec<u64> = during.iter().map(|e| e.u64("delay_ms")).collect();
    assert!(delays.iter().all(|&d| d <= 3_000), "a delay above the 3 s cap: {delays:?}");
    assert!(delays.contains(&3_000), "the outage never reached the cap, so this test proves nothing: {delays:?}");
    assert!(during.len() >= 5, "only {} attempts in a 12 s outage: {delays:?}", during.len());
    assert!(
        during.iter().any(|e| e.at >= restarted_at - Duration::from_secs(5)),
        "no attempt in the last 5 s of the outage: {delays:?}\n{}",
        agent.tail()
    );
    assert!(
        agent.events_named("breaker").is_empty(),
        "the breaker was supposed to stay out of this test\n{}",
        agent.tail()
    );

    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(restarted_at)) >= 1),
        "no check-in after the server came back\n{}",
        agent.tail()
    );
}

#[test]
fn a_window_of_502s_is_ridden_out_at_a_backed_off_rate_with_breaker_transitions_logged() {
    let h = Harness::new("502");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 2), "no check-ins at start\n{}", agent.tail());

    // A proxy in front of a dead server: every route answers 502.
    h.server.set_all(Reply::Status(502));
    let from = Instant::now();
    hold_for(Duration::from_secs(9));
    h.server.set_all(Reply::Normal);
    let to = Instant::now();

    let during = h.server.requests_between(None, from, to);
    assert!(during.iter().all(|r| r.status == 502), "answers other than 502 in the window");
    // Burst of 3, then a /health probe every ~3 s: about 6 requests. A hot loop: thousands.
    assert!(during.len() >= 3, "only {} requests during 9 s of 502s\n{}", during.len(), agent.tail());
    assert!(during.len() <= 30, "{} requests during 9 s of 502s: not backed off\n{}", during.len(), agent.tail());
    assert!(
        during.iter().any(|r| r.at >= to - Duration::from_millis(4500)),
        "no request in the last 4.5 s of the 502s: the agent stopped trying\n{}",
        agent.tail()
    );

    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(to)) >= 1),
        "no check-in after the 502s ended\n{}",
        agent.tail()
    );
    let transitions = || -> Vec<(String, String)> {
        agent.events_named("breaker").iter().map(|e| (e.str("from").to_string(), e.str("to").to_string())).collect()
    };
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert!(
        wait_until(SOON, || transitions().contains(&pair("half_open", "closed"))),
        "breaker never closed again: {:?}",
        transitions()
    );
    let t = transitions();
    assert_eq!(t.first(), Some(&pair("closed", "open")), "{t:?}");
    assert!(t.contains(&pair("open", "half_open")), "{t:?}");
    assert!(t.contains(&pair("half_open", "open")), "a failed probe must reopen the breaker: {t:?}");
    assert_eq!(t.last(), Some(&pair("half_open", "closed")), "{t:?}");

    let failed = agent.events_named("attempt_failed");
    assert!(failed.iter().any(|e| e.str("class") == "http_502"), "{}", agent.tail());
    assert!(
        failed.iter().all(|e| e.v["attempt"].is_u64() && e.v["max_attempts"] == 5 && e.v["delay_ms"].is_u64()),
        "every failed attempt logs attempt/max and the next delay\n{}",
        agent.tail()
    );
    assert!(wait_until(SOON, || !agent.events_named("recovered").is_empty()), "no `recovered` event\n{}", agent.tail());
}
