//! The checks added for issue 10, judged on small hand-made traces, so each rule is seen to
//! fail on the behaviour it names and to pass on the behaviour next to it:
//! * implicit `alive_between_faults`: silence outside a fault fails, steady check-ins pass, and
//!   the time commands ran is not silence;
//! * `honours_retry_after`: a request before the clamped Retry-After fails, one after passes;
//! * `bounded_waits`: a wait above the backoff cap and breaker timeout fails;
//! * a broken `/health`, or any other side route (`broken_route`), opens no fault window.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redflag_agent::log::events::{Event, RequestKind};
use redflag_sim::judge::{Verdict, evaluate};
use redflag_sim::scenario::Scenario;
use redflag_sim::trace::{Record, SimEvent, TraceEvent};

const TOL: Duration = Duration::from_millis(20);

fn scenario(extra: &str) -> Scenario {
    let text = format!(
        "name = \"t\"\nduration = \"10m\"\n[agent]\ncheck_in_interval = 10\n[agent.resilience]\nretry_after_max_seconds = 30\nmax_delay_minutes = 0.25\ncircuit_breaker_timeout_minutes = 0.25\n{extra}"
    );
    Scenario::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn agent(t_ms: u64, e: Event) -> Record {
    Record { t_ms, host: Arc::from("agents-0"), agent: Some(Arc::from("agent-0")), event: TraceEvent::Agent(e) }
}

fn sim(t_ms: u64, e: SimEvent) -> Record {
    Record { t_ms, host: Arc::from("harness"), agent: None, event: TraceEvent::Sim(e) }
}

fn started(t: u64) -> Record {
    agent(t, Event::AgentStarted { agent_id: "agent-0".into(), version: "x".into() })
}

/// A successful check-in at `t`: request, answer, the loop's decision.
fn checkin_ok(t: u64) -> Vec<Record> {
    vec![
        agent(t, Event::RequestStarted { kind: RequestKind::Checkin }),
        agent(t + 5, Event::RequestFinished { kind: RequestKind::Checkin, class: "ok".into(), ok: true, elapsed_ms: 5, retry_after_ms: None }),
        agent(t + 5, Event::CheckinOk { commands: 0, delay_ms: 10_000 }),
    ]
}

/// A failed check-in at `t` (a 429 carrying `retry_after_ms`, or a 502).
fn checkin_failed(t: u64, retry_after_ms: Option<u64>) -> Vec<Record> {
    let class = if retry_after_ms.is_some() { "http_429" } else { "http_502" };
    vec![
        agent(t, Event::RequestStarted { kind: RequestKind::Checkin }),
        agent(t + 5, Event::RequestFinished { kind: RequestKind::Checkin, class: class.into(), ok: false, elapsed_ms: 5, retry_after_ms }),
        agent(
            t + 5,
            Event::AttemptFailed {
                attempt: 1,
                max_attempts: 5,
                class: class.into(),
                verdict: "retry".into(),
                delay_ms: 1000,
                reason: "backoff".into(),
                consecutive_failures: 1,
                request: None,
                cause: None,
            },
        ),
    ]
}

fn judge(s: &Scenario, mut records: Vec<Record>, end_ms: u64) -> Vec<Verdict> {
    records.push(sim(end_ms, SimEvent::RunEnded));
    records.sort_by_key(|r| r.t_ms);
    evaluate(s, &records, TOL)
}

fn verdict<'a>(vs: &'a [Verdict], check: &str) -> &'a Verdict {
    vs.iter().find(|v| v.check == check).unwrap_or_else(|| panic!("no {check} verdict in {vs:?}"))
}

fn every_10s(from: u64, to: u64) -> Vec<Record> {
    (from..to).step_by(10_000).flat_map(checkin_ok).collect()
}

#[test]
fn alive_between_faults_fails_an_agent_silent_outside_faults() {
    let s = scenario("");
    let mut steady = vec![started(0)];
    steady.extend(every_10s(0, 120_000));
    assert!(verdict(&judge(&s, steady, 120_000), "alive_between_faults").passed);

    // Checks in three times, then nothing for a minute and a half: fails.
    let mut quiet = vec![started(0)];
    quiet.extend(every_10s(0, 30_000));
    let v = judge(&s, quiet, 120_000);
    let alive = verdict(&v, "alive_between_faults");
    assert!(!alive.passed && alive.reason.contains("silent from its last check-in"), "{alive:?}");
}

#[test]
fn alive_between_faults_adds_the_time_commands_ran() {
    let s = scenario("");
    // Checks in every 10 s, but the check-in at 30 s brought a command that ran 40 s: the next
    // check-in comes at 80 s. The loop was busy, not silent: passes.
    let with_run = |finished: bool| {
        let mut r = vec![started(0)];
        r.extend(every_10s(0, 40_000));
        r.push(agent(30_010, Event::CommandStarted { id: "c1".into(), kind: "scan_updates".into() }));
        if finished {
            r.push(agent(70_010, Event::CommandFinished { id: "c1".into(), kind: "scan_updates".into(), result: "success".into(), elapsed_ms: 40_000 }));
        }
        r.extend(every_10s(80_000, 120_000));
        r
    };
    assert!(verdict(&judge(&s, with_run(true), 120_000), "alive_between_faults").passed);
    // The same gap with no command run in it fails.
    let alive = judge(&s, with_run(false), 120_000);
    assert!(!verdict(&alive, "alive_between_faults").passed, "{alive:?}");
}

#[test]
fn alive_between_faults_excuses_a_fault_but_not_silence_after_it() {
    let s = scenario("[[faults]]\nat = \"30s\"\naction = \"crash\"\ntarget = \"server\"\nduration = \"1m\"\n");
    let fault = || vec![
        sim(30_000, SimEvent::FaultApplied { fault: 0, action: "crash".into(), target: "server".into() }),
        sim(90_000, SimEvent::FaultEnded { fault: 0, action: "crash".into(), target: "server".into() }),
    ];
    // Silent during the fault, back 5 s after it: passes.
    let mut ok = vec![started(0)];
    ok.extend(fault());
    ok.extend(every_10s(0, 30_000));
    ok.extend(every_10s(95_000, 300_000));
    assert!(verdict(&judge(&s, ok, 300_000), "alive_between_faults").passed);

    // Back only 100 s after the fault, steady after that: the config allows 60 s (the longest
    // wait, 30 s, and three request timeouts): fails.
    let mut late = vec![started(0)];
    late.extend(fault());
    late.extend(every_10s(0, 30_000));
    late.extend(every_10s(190_000, 300_000));
    let v = judge(&s, late, 300_000);
    let alive = verdict(&v, "alive_between_faults");
    assert!(!alive.passed && alive.reason.contains("first checked in 1m 40s"), "{alive:?}");

    // Recovers once after the fault, then goes silent (a breaker that never closes): fails.
    let mut once = vec![started(0)];
    once.extend(fault());
    once.extend(every_10s(0, 30_000));
    once.extend(checkin_ok(95_000));
    let v = judge(&s, once, 300_000);
    assert!(!verdict(&v, "alive_between_faults").passed, "{v:?}");
}

#[test]
fn honours_retry_after_fails_an_early_request_and_clamps() {
    let s = scenario("[[expect]]\ncheck = \"honours_retry_after\"\n");
    // Asked for 20 s, came back after 5 s: fails.
    let mut early = vec![started(0)];
    early.extend(checkin_failed(1_000, Some(20_000)));
    early.extend(checkin_ok(6_000));
    let v = judge(&s, early, 30_000);
    let h = verdict(&v, "honours_retry_after");
    assert!(!h.passed && h.reason.contains("checkin request"), "{h:?}");

    // Asked for 20 s, came back after 21 s: passes.
    let mut waited = vec![started(0)];
    waited.extend(checkin_failed(1_000, Some(20_000)));
    waited.extend(checkin_ok(22_010));
    assert!(verdict(&judge(&s, waited, 40_000), "honours_retry_after").passed);

    // Asked for an hour: the clamp (30 s) is all the agent owes.
    let mut clamped = vec![started(0)];
    clamped.extend(checkin_failed(1_000, Some(3_600_000)));
    clamped.extend(checkin_ok(31_010));
    assert!(verdict(&judge(&s, clamped, 60_000), "honours_retry_after").passed);
}

#[test]
fn bounded_waits_fails_a_wait_beyond_the_cap() {
    let s = scenario("[[expect]]\ncheck = \"bounded_waits\"\n");
    // A retryable failure, then 14 s: within the 15 s cap.
    let mut ok = vec![started(0)];
    ok.extend(checkin_failed(1_000, None));
    ok.extend(checkin_ok(15_000));
    assert!(verdict(&judge(&s, ok, 20_000), "bounded_waits").passed);

    // Then 40 s: beyond the cap and the breaker timeout, with no Retry-After: fails.
    let mut long = vec![started(0)];
    long.extend(checkin_failed(1_000, None));
    long.extend(checkin_ok(41_005));
    let v = judge(&s, long, 50_000);
    let b = verdict(&v, "bounded_waits");
    assert!(!b.passed && b.reason.contains("waited 40s"), "{b:?}");

    // The same 40 s after a 429 asking for 40 s is allowed up to the 30 s clamp only.
    let mut ra = vec![started(0)];
    ra.extend(checkin_failed(1_000, Some(40_000)));
    ra.extend(checkin_ok(31_000));
    assert!(verdict(&judge(&s, ra, 35_000), "bounded_waits").passed);
}

#[test]
fn a_broken_health_opens_no_fault_window() {
    let s = scenario(
        "[[faults]]\nat = \"30s\"\naction = \"broken_health\"\ntarget = \"server\"\nstatus = 503\nduration = \"3m\"\n\
         [[expect]]\ncheck = \"recovers_within\"\nwithin = \"30s\"\n",
    );
    let fault = vec![
        sim(30_000, SimEvent::FaultApplied { fault: 0, action: "broken_health".into(), target: "server".into() }),
        sim(210_000, SimEvent::FaultEnded { fault: 0, action: "broken_health".into(), target: "server".into() }),
    ];
    // Silent for the whole three minutes /health was broken: check-ins worked, so it fails.
    let mut silent = vec![started(0)];
    silent.extend(fault);
    silent.extend(every_10s(0, 30_000));
    silent.extend(every_10s(215_000, 400_000));
    let v = judge(&s, silent, 400_000);
    assert!(!verdict(&v, "alive_between_faults").passed, "{v:?}");
}

#[test]
fn a_broken_side_route_opens_no_fault_window_so_silence_through_it_fails() {
    for (route, status) in [("logs", "status = 500\n"), ("renew", ""), ("system-info", "status = 503\n")] {
        let s = scenario(&format!(
            "[[faults]]\nat = \"30s\"\naction = \"broken_route\"\nroute = \"{route}\"\ntarget = \"server\"\n{status}duration = \"3m\"\n"
        ));
        let fault = vec![
            sim(30_000, SimEvent::FaultApplied { fault: 0, action: "broken_route".into(), target: "server".into() }),
            sim(210_000, SimEvent::FaultEnded { fault: 0, action: "broken_route".into(), target: "server".into() }),
        ];
        // Silent while only that route was broken: an agent that let it stop its check-ins.
        let mut silent = vec![started(0)];
        silent.extend(fault.clone());
        silent.extend(every_10s(0, 30_000));
        silent.extend(every_10s(215_000, 400_000));
        let v = judge(&s, silent, 400_000);
        assert!(!verdict(&v, "alive_between_faults").passed, "{route}: {v:?}");
        // Checking in at its pace through it passes.
        let mut steady = vec![started(0)];
        steady.extend(fault);
        steady.extend(every_10s(0, 400_000));
        let v = judge(&s, steady, 400_000);
        assert!(verdict(&v, "alive_between_faults").passed, "{route}: {v:?}");
    }
}
