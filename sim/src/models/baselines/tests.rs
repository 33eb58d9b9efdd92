//! Each baseline does what its sources say, and never waits longer than its promises allow.

use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use redflag_agent::resilience::{BreakerState, Gate, Outcome, Report};

const INTERVAL: Duration = Duration::from_secs(300);

fn fail(outcome: Outcome) -> Report {
    Report { outcome: Some(outcome), ..Report::of(redflag_agent::resilience::classify(outcome)) }
}

/// Drives a strategy through `n` failed attempts from `now`, returning each wait (a breaker
/// rejection's wait included).
fn waits(s: &mut dyn Strategy, now: &mut Instant, n: usize, report: Report) -> Vec<Duration> {
    let mut rng = StdRng::seed_from_u64(1);
    let mut out = Vec::new();
    while out.len() < n {
        match s.admit(*now).0 {
            Gate::Go { .. } => {
                let d = s.complete(*now, report, &mut rng);
                out.push(d.delay);
                *now = d.next_attempt_at;
            }
            Gate::Wait { until } => {
                out.push(until - *now);
                *now = until;
            }
        }
    }
    out
}

fn agent_config() -> Config {
    Config::from_json_str(r#"{"server_url":"https://p","agent_id":"a","token":"t","refresh_token":"r","check_in_interval":300}"#, "test")
        .unwrap()
}

#[test]
fn seed_p4_001_doubles_from_5s_opens_at_3_and_rests_an_interval_plus_the_loops_jitter() {
    let mut s = SeedP4001::new(INTERVAL);
    let mut now = Instant::now();
    let got = waits(&mut s, &mut now, 6, fail(Outcome::Status(502)));
    let secs: Vec<u64> = got.iter().map(|d| d.as_secs()).collect();
    // 5, 10, 20 (the third failure opens the breaker), then two attempts fail at once while it
    // is open (40 s, then 80 s + one interval + the next round's 0-29 s: the burst is over),
    // then a new burst: more than 300 s since the last failure, so the breaker lets it through.
    assert_eq!(secs[..4], [5, 10, 20, 40]);
    assert!((380..=409).contains(&secs[4]), "{secs:?}");
    assert_eq!(secs[5], 5);
    assert_eq!(s.breaker_state(), BreakerState::Open);
    // A 429 is a client error: no retry, one round (interval + 0-29 s).
    let mut s = SeedP4001::new(INTERVAL);
    let d = s.complete(Instant::now(), fail(Outcome::Status(429)), &mut StdRng::seed_from_u64(1));
    assert!(d.delay >= INTERVAL && d.delay <= INTERVAL + Duration::from_secs(29), "{:?}", d.delay);
    // It plugs into RedFlag's main.go: the Go client's 30 s, and a 0-29 s sleep at start.
    assert_eq!(s.request_timeout(), Some(Duration::from_secs(30)));
    let starts: Vec<u64> = (0..200).map(|i| s.first_attempt_delay(&mut StdRng::seed_from_u64(i)).as_secs()).collect();
    assert!(starts.iter().all(|&d| d <= 29) && starts.iter().any(|&d| d >= 25), "{starts:?}");
}

#[test]
fn seed_p4_001_lock_out_after_a_long_outage_is_about_455s() {
    // Once open, a burst's first attempt is the half-open probe; when it fails the breaker
    // opens again and the burst's four other attempts are rejected, each taking its sleep:
    // 5 + 10 + 20 + 40 + 80 s, one 300 s interval and the next round's 0-29 s: 455-484 s.
    let bound = seed_p4_001::after_failure_max(INTERVAL);
    assert_eq!(bound, Duration::from_secs(5 + 10 + 20 + 40 + 80 + 300 + 29), "{bound:?}");
}

#[test]
fn redflag_waits_an_interval_plus_up_to_29s_whatever_happens() {
    let mut s = Redflag0118::new(INTERVAL);
    let mut now = Instant::now();
    for d in waits(&mut s, &mut now, 50, fail(Outcome::Refused)) {
        assert!(d >= INTERVAL && d <= INTERVAL + Duration::from_secs(29) && d.subsec_nanos() == 0, "{d:?}");
    }
    assert_eq!(s.request_timeout(), Some(Duration::from_secs(30)));
    assert!(!s.follows_answer_rapid_polling());
    assert_eq!(s.system_info_every(), Some(Duration::from_secs(3600)));
    // enable_heartbeat: the handler checks in at once; then 5 s + 0-29 s while it lasts.
    let at_once = Report { interval: Some(Duration::ZERO), ..Report::of(Verdict::Success) };
    assert_eq!(s.complete(now, at_once, &mut StdRng::seed_from_u64(2)).delay, Duration::ZERO);
    let rapid = Report { interval: Some(Duration::from_secs(5)), ..Report::of(Verdict::Success) };
    let d = s.complete(now, rapid, &mut StdRng::seed_from_u64(2)).delay;
    assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(34), "{d:?}");
}

#[test]
fn grpc_backs_off_connection_failures_only_measured_from_the_attempts_start() {
    let mut s = Grpc::new(INTERVAL, false);
    let mut rng = StdRng::seed_from_u64(1);
    let t0 = Instant::now();
    // A refused connect that took 300 ms: the next one 1 s after the attempt *started*.
    assert!(matches!(s.admit(t0).0, Gate::Go { .. }));
    let d = s.complete(t0 + Duration::from_millis(300), fail(Outcome::Refused), &mut rng);
    assert_eq!(d.next_attempt_at, t0 + Duration::from_secs(1));
    let mut now = d.next_attempt_at;
    let got = waits(&mut s, &mut now, 20, fail(Outcome::Refused));
    let second = got[0].as_secs_f64();
    assert!((1.6 * 0.8..=1.6 * 1.2).contains(&second), "{second}");
    assert!(got.iter().all(|d| d.as_secs_f64() <= 120.0 * 1.2));
    assert!(got[19].as_secs_f64() >= 120.0 * 0.8);
    // A 502 from a proxy, or a deadline, on a live connection is not a connection failure:
    // the call fails and the agent waits for its next check-in.
    for outcome in [Outcome::Status(502), Outcome::Status(503), Outcome::Timeout] {
        let mut s = Grpc::new(INTERVAL, false);
        s.admit(t0);
        let d = s.complete(t0, fail(outcome), &mut rng);
        assert!(d.delay >= INTERVAL.mul_f64(0.9), "{outcome:?}: {:?}", d.delay);
    }
}

#[test]
fn grpc_retry_retries_unavailable_within_the_call_until_the_throttle_stops_it() {
    let mut s = Grpc::new(INTERVAL, true);
    let mut now = Instant::now();
    let got = waits(&mut s, &mut now, 4, fail(Outcome::Status(502)));
    // maxAttempts 4: three retries at random(0, 0.1 s), random(0, 0.2 s), random(0, 0.4 s), then
    // the call fails to the application.
    for (d, ceiling) in got.iter().zip([0.1, 0.2, 0.4]) {
        assert!(d.as_secs_f64() <= ceiling, "{got:?}");
    }
    assert!(got[3] >= INTERVAL.mul_f64(0.9), "{got:?}");
    // 10 tokens, 1 per failed attempt, no retries at or below 5: the first call's four failures
    // leave 6, the next call's first failure leaves 5, and from then on every call makes one
    // attempt.
    let got = waits(&mut s, &mut now, 6, fail(Outcome::Status(502)));
    assert!(got.iter().all(|d| *d >= INTERVAL.mul_f64(0.9)), "{got:?}");
    // Those six took it to 0. Successes refill it by 0.1 each: after 61 (6.1 tokens) a failure
    // leaves 5.1, above the threshold, and the call may retry once more.
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..61 {
        s.admit(now);
        s.complete(now, Report::of(Verdict::Success), &mut rng);
    }
    let got = waits(&mut s, &mut now, 2, fail(Outcome::Status(502)));
    assert!(got[0] < Duration::from_secs(1) && got[1] >= INTERVAL.mul_f64(0.9), "{got:?}");
    // 500 is UNKNOWN, not retryable.
    let mut s = Grpc::new(INTERVAL, true);
    let got = waits(&mut s, &mut now, 1, fail(Outcome::Status(500)));
    assert!(got[0] >= INTERVAL.mul_f64(0.9));
}

#[test]
fn aws_standard_makes_3_attempts_and_spends_its_quota() {
    let mut s = AwsStandard::new(INTERVAL, AwsGeneration::Standard);
    let mut now = Instant::now();
    let got = waits(&mut s, &mut now, 3, fail(Outcome::Timeout));
    assert!(got[0] <= Duration::from_secs(2) && got[1] <= Duration::from_secs(4), "{got:?}");
    assert!(got[2] >= INTERVAL.mul_f64(0.9), "the third failure ends the operation: {got:?}");
    // 500 tokens at 10 a timed-out retry: 50 retries, then none until a success refunds.
    let mut s = AwsStandard::new(INTERVAL, AwsGeneration::Standard);
    let got = waits(&mut s, &mut now, 200, fail(Outcome::Timeout));
    assert_eq!(got.iter().filter(|d| **d < INTERVAL.mul_f64(0.9)).count(), 50);
}

#[test]
fn aws_standard_2026_starts_at_50ms_costs_14_and_honours_retry_after_within_5s() {
    let mut s = AwsStandard::new(INTERVAL, AwsGeneration::Standard2026);
    let mut now = Instant::now();
    let got = waits(&mut s, &mut now, 3, fail(Outcome::Status(502)));
    assert!(got[0] <= Duration::from_millis(100) && got[1] <= Duration::from_millis(200), "{got:?}");
    // 500 tokens at 14 a retry: 35 retries.
    let mut s = AwsStandard::new(INTERVAL, AwsGeneration::Standard2026);
    let got = waits(&mut s, &mut now, 200, fail(Outcome::Status(502)));
    assert_eq!(got.iter().filter(|d| **d < INTERVAL.mul_f64(0.9)).count(), 35);
    // A throttled answer: 1 s base; a Retry-After of 30 s is clamped to the delay + 5 s.
    let mut s = AwsStandard::new(INTERVAL, AwsGeneration::Standard2026);
    let throttled = Report { retry_after: Some(Duration::from_secs(30)), ..fail(Outcome::Status(429)) };
    let d = s.complete(now, throttled, &mut StdRng::seed_from_u64(3)).delay;
    assert!(d > Duration::from_secs(5) && d <= Duration::from_secs(2 + 5), "{d:?}");
}

#[test]
fn no_jitter_is_the_production_policy_with_every_draw_at_its_middle() {
    let config = agent_config().policy();
    let mut a = build(StrategyName::NoJitter, &config);
    let mut b = build(StrategyName::NoJitter, &config);
    let (mut ta, mut tb) = (Instant::now(), Instant::now());
    let (ta0, tb0) = (ta, tb);
    let wa = waits(a.as_mut(), &mut ta, 8, fail(Outcome::Refused));
    let wb = waits(b.as_mut(), &mut tb, 8, fail(Outcome::Refused));
    assert_eq!(wa, wb, "two agents failing together retry together");
    assert_eq!(ta - ta0, tb - tb0);
    // Full jitter's middle: half of 1 s, then half of 2 s.
    assert_eq!(wa[..2], [Duration::from_millis(500), Duration::from_secs(1)]);
    // The regular interval exactly, no ±10%.
    let mut s = build(StrategyName::NoJitter, &config);
    let d = s.complete(Instant::now(), Report::of(Verdict::Success), &mut StdRng::seed_from_u64(9));
    let off = d.delay.abs_diff(INTERVAL);
    assert!(off < Duration::from_micros(1), "{:?}", d.delay);
    // A half-open probe shed again: a quarter of the open period, for every agent.
    let mut s = build(StrategyName::NoJitter, &config);
    let mut now = Instant::now();
    let shed = fail(Outcome::Status(503));
    let got = waits(s.as_mut(), &mut now, 6, shed);
    assert!(got[5].abs_diff(config.breaker.open_timeout / 4) < Duration::from_micros(1), "{got:?}");
}

/// Every baseline, driven through random outcomes, never waits longer than its promises say:
/// after a check-in its regular bound, after a failure its failure bound (a rejected attempt's
/// wait counts until the next request actually goes out).
#[test]
fn every_strategy_keeps_its_promises() {
    let config = agent_config();
    for name in StrategyName::ALL {
        let promises = promises(name, &config);
        for seed in 0..40 {
            let mut s = build(name, &config.policy());
            let mut rng = StdRng::seed_from_u64(seed);
            let mut pick = StdRng::seed_from_u64(seed + 1000);
            let mut now = Instant::now();
            let mut since: Option<(Instant, Duration)> = None;
            for _ in 0..400 {
                match s.admit(now).0 {
                    Gate::Wait { until } => now = until,
                    Gate::Go { .. } => {
                        if let Some((t, bound)) = since {
                            assert!(now - t <= bound, "{name} seed {seed}: waited {:?}, promised {bound:?}", now - t);
                        }
                        let outcome = match pick.random_range(0..7) {
                            0 | 1 => Outcome::Success,
                            2 => Outcome::Status(502),
                            3 => Outcome::Refused,
                            4 => Outcome::Timeout,
                            5 => Outcome::Status(503),
                            _ => Outcome::Status(404),
                        };
                        let took = Duration::from_millis(pick.random_range(0..2000));
                        now += took;
                        let d = s.complete(now, fail(outcome), &mut rng);
                        // After a check-in, the regular bound; after any failure (a 4xx counts
                        // against seed-p4-001's breaker), the failure bound.
                        let regular = promises.regular_max(promises.interval);
                        let bound = if d.verdict == Verdict::Success { regular } else { promises.after_failure_max.max(regular) };
                        since = Some((now, bound));
                        now = d.next_attempt_at;
                    }
                }
            }
        }
    }
}
