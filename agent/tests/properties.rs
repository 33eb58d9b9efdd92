//! Proptest properties of the sans-IO resilience core, and of the check-in loop that drives it.
//!
//! Each property states one guarantee from the agent issue:
//! * every delay lies in [0, cap], Retry-After included, up to `retry_after_max`;
//! * without jitter, delays follow initial × factor^n until the cap and never decrease;
//! * for any sequence of outcomes and times, the breaker only makes legal transitions;
//! * while open it rejects until its timeout;
//! * half-open admits at most the configured number of probes, and a success there closes it;
//! * no sequence of outcomes stops the loop: the policy always schedules a next attempt within
//!   its bound, and the real `CheckinLoop`, fed any scripted mix of answers under tokio's paused
//!   clock, keeps sending requests for a simulated hour with no gap above that bound.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use redflag_agent::checkin::{CheckinLoop, Host, Io, Settings};
use redflag_agent::commands::runner::ProductionRunner;
use redflag_agent::log::events::{Event, Observer};
use redflag_agent::resilience::{
    Admission, Backoff, BackoffConfig, Breaker, BreakerConfig, BreakerState, Gate, Jitter, Policy, PolicyConfig, Report,
    Verdict,
};
use redflag_agent::server::secret::Secret;
use redflag_agent::store::MemoryStore;
use redflag_agent::server::transport::{Request, Response, Transport, TransportError};

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)]
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A valid backoff shape: initial <= cap, factor in [1, 10].
fn backoff_config() -> impl Strategy<Value = BackoffConfig> {
    (1u64..5_000, 0u64..600_000, 1.0f64..10.0, jitter()).prop_map(|(initial, extra, factor, jitter)| BackoffConfig {
        initial_delay: ms(initial),
        max_delay: ms(initial + extra),
        factor,
        jitter,
    })
}

fn policy_config() -> impl Strategy<Value = PolicyConfig> {
    (
        backoff_config(),
        1u32..10,
        1u64..600_000,
        1u32..4,
        1u32..20,
        1_000u64..600_000,
        0u64..600_000,
        any::<bool>(),
    )
        .prop_map(|(backoff, threshold, open_ms, probes, max_retries, interval_ms, ra_max_ms, health_check)| PolicyConfig {
            backoff,
            breaker: BreakerConfig { failure_threshold: threshold, open_timeout: ms(open_ms), half_open_max_probes: probes },
            max_retries,
            check_in_interval: ms(interval_ms),
            retry_after_max: ms(ra_max_ms),
            health_check,
        })
}

fn verdict() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        3 => Just(Verdict::Retry),
        1 => Just(Verdict::Success),
        1 => Just(Verdict::FailFast),
        1 => Just(Verdict::Renew),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Backoff alone: every delay in [0, cap], whatever the jitter, index or RNG.
    #[test]
    fn backoff_delay_is_within_the_cap(cfg in backoff_config(), seed in any::<u64>(), indexes in prop::collection::vec(0u32..200, 1..60)) {
        let mut b = Backoff::new(cfg);
        let mut rng = StdRng::seed_from_u64(seed);
        for i in indexes {
            let d = b.delay(i, &mut rng);
            prop_assert!(d <= cfg.max_delay, "retry {i}: {d:?} > cap {:?}", cfg.max_delay);
        }
    }

    /// The policy: a retry's delay is within [0, cap] unless the server's Retry-After or the
    /// open breaker raises it; Retry-After raises it to at least min(asked, retry_after_max),
    /// and never beyond retry_after_max (or the cap / breaker timeout, if those are longer).
    #[test]
    fn retry_delay_respects_cap_and_retry_after(
        cfg in policy_config(),
        seed in any::<u64>(),
        asks in prop::collection::vec(prop::option::of(0u64..3_600_000), 1..40),
    ) {
        let mut p = Policy::new(cfg);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut now = Instant::now();
        for ask in asks {
            let retry_after = ask.map(ms);
            let d = p.complete(now, Report { verdict: Verdict::Retry, retry_after, interval: None, outcome: None }, &mut rng);
            let ceiling = cfg.backoff.max_delay.max(cfg.breaker.open_timeout).max(cfg.retry_after_max);
            prop_assert!(d.delay <= ceiling, "{:?} > {:?}", d.delay, ceiling);
            if p.breaker_state() != BreakerState::Open {
                prop_assert!(d.delay <= cfg.backoff.max_delay.max(cfg.retry_after_max));
            }
            if let Some(asked) = retry_after {
                prop_assert!(d.delay >= asked.min(cfg.retry_after_max), "Retry-After {asked:?} not honoured: {:?}", d.delay);
            } else if p.breaker_state() != BreakerState::Open {
                prop_assert!(d.delay <= cfg.backoff.max_delay);
            }
            now = d.next_attempt_at;
            // Keep the breaker from being the only thing we see: let it go half-open.
            let _ = p.admit(now);
        }
    }

    /// Without jitter: initial × factor^n, capped, never decreasing.
    #[test]
    fn no_jitter_is_exponential_and_monotonic(cfg in backoff_config(), n in 1u32..80) {
        let cfg = BackoffConfig { jitter: Jitter::None, ..cfg };
        let mut b = Backoff::new(cfg);
        let mut rng = StdRng::seed_from_u64(0);
        let mut previous = Duration::ZERO;
        for i in 0..n {
            let d = b.delay(i, &mut rng);
            let expected = (cfg.initial_delay.as_secs_f64() * cfg.factor.powi(i as i32)).min(cfg.max_delay.as_secs_f64());
            prop_assert!((d.as_secs_f64() - expected).abs() < 1e-6, "retry {i}: {d:?} vs {expected}");
            prop_assert!(d >= previous, "retry {i}: {d:?} < {previous:?}");
            previous = d;
        }
    }

    /// Any interleaving of admits, successes and failures at non-decreasing times: every
    /// transition is one of the four legal edges and starts where the previous one ended.
    #[test]
    fn breaker_only_makes_legal_transitions(
        threshold in 1u32..6,
        open_ms in 1u64..10_000,
        probes in 1u32..4,
        ops in prop::collection::vec((0u8..3, 0u64..5_000), 1..200),
    ) {
        let mut b = Breaker::new(BreakerConfig { failure_threshold: threshold, open_timeout: ms(open_ms), half_open_max_probes: probes });
        let mut now = Instant::now();
        let mut state = b.state();
        for (op, dt) in ops {
            now += ms(dt);
            let t = match op {
                0 => b.admit(now).1,
                1 => b.on_success(now),
                _ => b.on_failure(now),
            };
            if let Some(t) = t {
                prop_assert!(BreakerState::is_legal_transition(t.from, t.to), "{:?} -> {:?}", t.from, t.to);
                prop_assert_eq!(t.from, state);
                prop_assert_eq!(t.at, now);
                state = t.to;
            }
            prop_assert_eq!(b.state(), state, "state changed without a transition event");
        }
    }

    /// Once open at t, the breaker rejects every request before t + timeout, naming that
    /// instant, and lets one through at or after it.
    #[test]
    fn open_breaker_rejects_until_its_timeout(threshold in 1u32..6, open_ms in 1u64..100_000, probes_at in prop::collection::vec(0u64..200_000, 1..30)) {
        let mut b = Breaker::new(BreakerConfig { failure_threshold: threshold, open_timeout: ms(open_ms), half_open_max_probes: 1 });
        let t0 = Instant::now();
        for _ in 0..threshold { b.on_failure(t0); }
        prop_assert_eq!(b.state(), BreakerState::Open);
        let until = t0 + ms(open_ms);
        let mut sorted = probes_at;
        sorted.sort_unstable();
        for at in sorted {
            let now = t0 + ms(at);
            let (admission, t) = b.admit(now);
            if now < until {
                prop_assert_eq!(admission, Admission::Reject { until });
                prop_assert!(t.is_none());
            } else {
                prop_assert_eq!(admission, Admission::Permit);
                prop_assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
                break;
            }
        }
    }

    /// Half-open lets through at most `half_open_max_probes` requests, and a success there
    /// closes the breaker.
    #[test]
    fn half_open_admits_a_bounded_number_of_probes(probes in 1u32..6, asks in 1u32..20) {
        let mut b = Breaker::new(BreakerConfig { failure_threshold: 1, open_timeout: ms(1000), half_open_max_probes: probes });
        let t0 = Instant::now();
        b.on_failure(t0);
        let later = t0 + ms(1000);
        let permitted = (0..asks).filter(|_| b.admit(later).0 == Admission::Permit).count() as u32;
        prop_assert_eq!(permitted, asks.min(probes));
        prop_assert_eq!(b.state(), BreakerState::HalfOpen);
        let t = b.on_success(later + ms(1));
        prop_assert_eq!(t.map(|t| (t.from, t.to)), Some((BreakerState::HalfOpen, BreakerState::Closed)));
        prop_assert_eq!(b.admit(later + ms(2)).0, Admission::Permit);
    }

    /// The policy never gives up: whatever happens, the next attempt is scheduled within
    /// `max_wait`, and when it comes due the policy lets it go.
    #[test]
    fn policy_always_schedules_the_next_attempt(
        cfg in policy_config(),
        seed in any::<u64>(),
        steps in prop::collection::vec((verdict(), prop::option::of(0u64..7_200_000), 0u64..30_000), 1..300),
    ) {
        let mut p = Policy::new(cfg);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut due = Instant::now();
        for (verdict, retry_after, request_ms) in steps {
            let (gate, _) = p.admit(due);
            prop_assert!(matches!(gate, Gate::Go { .. }), "an attempt that came due was refused: {gate:?}");
            let now = due + ms(request_ms);
            let d = p.complete(now, Report { verdict, retry_after: retry_after.map(ms), interval: None, outcome: None }, &mut rng);
            prop_assert!(d.next_attempt_at >= now);
            prop_assert!(d.delay <= cfg.max_wait(), "{:?} > max_wait {:?}", d.delay, cfg.max_wait());
            due = d.next_attempt_at;
        }
    }
}

// ---- the real loop under tokio's paused clock ---------------------------------------------

/// What the scripted server does with one request.
#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Status(u16, Option<&'static str>),
    Error(TransportError),
    Hang,
    Garbage,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        Just(Answer::Ok),
        Just(Answer::Status(502, None)),
        Just(Answer::Status(503, Some("30"))),
        Just(Answer::Status(429, Some("100000"))),
        Just(Answer::Status(401, None)),
        Just(Answer::Status(404, None)),
        Just(Answer::Status(500, None)),
        Just(Answer::Error(TransportError::Refused)),
        Just(Answer::Error(TransportError::Reset)),
        Just(Answer::Error(TransportError::BodyTooLarge)),
        Just(Answer::Hang),
        Just(Answer::Garbage),
    ]
}

struct Scripted {
    answers: Vec<Answer>,
    next: usize,
}

impl Transport for Scripted {
    async fn send(&mut self, _request: &Request) -> Result<Response, TransportError> {
        let a = self.answers[self.next % self.answers.len()].clone();
        self.next += 1;
        tokio::time::sleep(ms(5)).await;
        match a {
            Answer::Ok => Ok(Response { status: 200, body: br#"{"commands":[],"token":"t2"}"#.to_vec(), ..Response::default() }),
            Answer::Status(status, ra) => Ok(Response { status, retry_after: ra.map(str::to_string), ..Response::default() }),
            Answer::Error(e) => Err(e),
            Answer::Hang => std::future::pending().await,
            Answer::Garbage => Ok(Response { status: 200, body: b"<html>".to_vec(), ..Response::default() }),
        }
    }
}

struct FixedHost;
impl Host for FixedHost {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }
}

#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<(tokio::time::Instant, Event)>>>);
impl Observer for Recorder {
    fn on_event(&mut self, event: &Event) {
        self.0.borrow_mut().push((tokio::time::Instant::now(), event.clone()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_answers_stops_the_loop(cfg in policy_config(), answers in prop::collection::vec(answer(), 1..40), seed in any::<u64>()) {
        // Keep the simulated hour meaningful: bound the waits to well under it.
        let mut cfg = cfg;
        cfg.check_in_interval = cfg.check_in_interval.min(ms(120_000));
        let request_timeout = ms(2_000);
        let horizon = Duration::from_secs(3_600);
        let settings = Settings {
            agent_id: "a-1".into(),
            token: Secret::new("t"),
            refresh_token: Secret::new("r"),
            policy: cfg,
            request_timeout,
        };
        let recorder = Recorder::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let events = recorder.0.clone();
        let ended = rt.block_on(async move {
            let start = tokio::time::Instant::now();
            let io = Io {
                transport: Scripted { answers, next: 0 },
                store: MemoryStore::default(),
                host: FixedHost,
                observer: recorder,
                runner: ProductionRunner::default(),
            };
            let agent = CheckinLoop::production(settings, io, StdRng::seed_from_u64(seed));
            let ended = tokio::time::timeout(horizon, agent.run(std::future::pending())).await.is_ok();
            (ended, start)
        });
        let (ended, start) = ended;
        prop_assert!(!ended, "the loop returned without being asked to stop");
        let events = events.borrow();
        let starts: Vec<tokio::time::Instant> = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::RequestStarted { .. }))
            .map(|(t, _)| *t)
            .collect();
        prop_assert!(!starts.is_empty());
        let bound = cfg.max_wait() + request_timeout + ms(10);
        let mut previous = start;
        for t in starts.iter().copied().chain(std::iter::once(start + horizon)) {
            prop_assert!(t - previous <= bound, "gap of {:?} > {:?}", t - previous, bound);
            previous = t;
        }
    }
}
