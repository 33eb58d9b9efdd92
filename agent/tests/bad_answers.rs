//! Answers that are not answers, run against the real binary: a check-in that hangs forever, a
//! 200 whose body is not JSON, and a 200 whose body is 64 MiB (with and without a
//! Content-Length). Each is a retryable failure: the agent times out or gives up on the body,
//! backs off, keeps trying (counted on the stand-in's side), and checks in again as soon as the
//! server behaves. For the 64 MiB body the agent's peak RSS must stay far below 64 MiB, which
//! shows it stops reading at its 1 MiB limit instead of buffering the answer.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Sets `reply` for check-ins for `window`, then normal service; returns the check-ins the
/// stand-in saw during the window, after asserting the agent checked in again afterwards.
fn bad_window(h: &Harness, agent: &Agent, reply: Reply, window: Duration) -> Vec<Record> {
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in at start\n{}", agent.tail());
    h.server.set_commands(reply);
    let from = Instant::now();
    hold_for(window);
    h.server.set_commands(Reply::Normal);
    let to = Instant::now();
    assert!(
        wait_until(SOON, || h.server.successful_checkins_since(Some(to)) >= 1),
        "no check-in after the bad answers stopped: the agent is wedged or gave up\n{}",
        agent.tail()
    );
    let during = h.server.requests_between(Some(Route::Commands), from, to);
    assert!(
        during.iter().any(|r| r.at >= to - Duration::from_millis(4500)),
        "no check-in attempt in the last 4.5 s of the window: the agent stopped trying\n{}",
        agent.tail()
    );
    during
}

fn failures_of_class(agent: &Agent, class: &str) -> usize {
    agent.events_named("attempt_failed").iter().filter(|e| e.str("class") == class).count()
}

#[test]
fn a_check_in_that_hangs_forever_times_out_and_is_retried() {
    let h = Harness::new("hang");
    let agent = h.spawn(LogFormat::Json);
    let during = bad_window(&h, &agent, Reply::Hang, Duration::from_secs(9));
    // request_timeout_seconds is 2: each hung check-in ends after 2 s and is retried.
    assert!(during.len() >= 2, "only {} check-in attempts in 9 s of hanging\n{}", during.len(), agent.tail());
    assert!(during.len() <= 8, "{} check-in attempts in 9 s with a 2 s timeout", during.len());
    assert!(during.iter().all(|r| r.status == 0), "the stand-in answered during the hang window");
    assert!(failures_of_class(&agent, "timeout") >= 2, "timeouts not logged as such\n{}", agent.tail());
}

#[test]
fn a_non_json_200_is_a_retryable_failure() {
    let h = Harness::new("malformed");
    let agent = h.spawn(LogFormat::Json);
    let during = bad_window(&h, &agent, Reply::Text("<html><body>It works!</body></html>"), Duration::from_secs(8));
    assert!(during.len() >= 3, "only {} check-ins in 8 s of malformed answers\n{}", during.len(), agent.tail());
    assert!(during.len() <= 25, "{} check-ins in 8 s of malformed answers: not backed off", during.len());
    assert!(failures_of_class(&agent, "malformed_body") >= 3, "malformed bodies not logged as such\n{}", agent.tail());
    assert!(
        agent.events_named("attempt_failed").iter().all(|e| e.str("verdict") == "retry"),
        "a malformed answer must be retried\n{}",
        agent.tail()
    );
}

#[test]
fn a_64_mib_200_is_abandoned_at_the_limit_without_buffering_it() {
    let h = Harness::new("huge");
    let agent = h.spawn(LogFormat::Json);
    assert!(wait_until(SOON, || h.server.successful_checkins() >= 1), "no check-in at start\n{}", agent.tail());
    // One with a Content-Length the agent can refuse up front, then chunked ones it must
    // stop reading by itself.
    h.server.script_commands([Reply::Huge { bytes: 64 * MIB, chunked: false }]);
    let during = bad_window(&h, &agent, Reply::Huge { bytes: 64 * MIB, chunked: true }, Duration::from_secs(8));
    assert!(during.len() >= 3, "only {} check-ins in 8 s of 64 MiB answers\n{}", during.len(), agent.tail());
    assert!(during.len() <= 25, "{} check-ins in 8 s of 64 MiB answers: not backed off", during.len());
    let peak_kib = agent.peak_rss_kib();
    eprintln!("agent peak RSS after {} 64 MiB answers: {} KiB", during.len(), peak_kib);
    assert!(peak_kib < 40 * 1024, "agent peak RSS {peak_kib} KiB: the 64 MiB body was buffered");
    assert!(failures_of_class(&agent, "body_too_large") >= 3, "oversized bodies not logged as such\n{}", agent.tail());
    assert!(
        agent.events_named("attempt_failed").iter().all(|e| e.str("verdict") == "retry"),
        "an oversized answer must be retried\n{}",
        agent.tail()
    );
}
