//! The real RedFlag server's heartbeat and health rules, on the check-in loop itself: the real
//! `CheckinLoop` under tokio's paused clock, against a scripted transport that records every
//! request (path, body, instant). Each test names one rule:
//!
//! * after an answer carrying `enable_heartbeat`, the agent checks in at once (never twice in a
//!   row), and every check-in while rapid polling reports `metadata.rapid_polling_enabled`,
//!   `rapid_polling_until` and `rapid_polling_duration_minutes`, none after the window;
//! * a `rapid_polling.until` in the server's local time (`-05:00`) is honoured: the window is
//!   the one the server meant; that answer's window keeps the pace but is not reported (only an
//!   `enable_heartbeat` is: the dashboard shows no heartbeat nobody asked for);
//! * after `disable_heartbeat` the agent checks in at once and says the heartbeat is off, once;
//! * an operator's heartbeat survives a restart: the loop started again on the same state files
//!   reports it from its first check-in and polls rapidly until the heartbeat's end;
//! * a `/health` answer of 200 `{"status":"waiting for configuration"}` (RedFlag's unconfigured
//!   welcome mode) is "not ready": no check-in follows it in the same attempt.
//!
//! The same rules are proven against the real server in `real_server.rs`; these tests pin them
//! without one, to the millisecond.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use tokio::time::Instant;

use redflag_agent::checkin::{CheckinLoop, Host, Io, Settings};
use redflag_agent::commands::runner::ProductionRunner;
use redflag_agent::log::events::{Event, Observer, RequestKind};
use redflag_agent::resilience::{
    BackoffConfig, BreakerConfig, BreakerState, Decision, Gate, Jitter, Policy, PolicyConfig, Report, Strategy, Transition,
};
use redflag_agent::server::secret::Secret;
use redflag_agent::store::MemoryStore;
use redflag_agent::server::transport::{Request, Response, Transport, TransportError};

const INTERVAL: Duration = Duration::from_secs(300);
const INITIAL_DELAY: Duration = Duration::from_secs(2);
/// The wall clock at the paused clock's start.
const WALL_START_UNIX_SECONDS: u64 = 1_795_905_000;

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    path: String,
    body: Value,
}

type Log = Rc<RefCell<Vec<Seen>>>;

/// Answers `/health` and the check-in from scripts (one entry per request, then the default).
struct Scripted {
    checkins: VecDeque<(u16, String)>,
    checkin_default: (u16, String),
    health: VecDeque<(u16, String)>,
    log: Log,
}

impl Scripted {
    fn new(log: &Log) -> Self {
        Scripted {
            checkins: VecDeque::new(),
            checkin_default: (200, r#"{"commands":[]}"#.into()),
            health: VecDeque::new(),
            log: log.clone(),
        }
    }
}

impl Transport for Scripted {
    async fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        let body = request.json_body.as_deref().map_or(Value::Null, |b| serde_json::from_slice(b).unwrap());
        self.log.borrow_mut().push(Seen { at: Instant::now(), path: request.path.clone(), body });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, body) = if request.path == "/health" {
            self.health.pop_front().unwrap_or((200, r#"{"status":"healthy"}"#.into()))
        } else {
            self.checkins.pop_front().unwrap_or_else(|| self.checkin_default.clone())
        };
        Ok(Response { status, body: body.into_bytes(), ..Response::default() })
    }
}

/// A wall clock that moves with tokio's (paused) clock, `offset` after the usual start.
struct PausedWall {
    start: Instant,
    offset: Duration,
}

impl Host for PausedWall {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_START_UNIX_SECONDS) + self.offset + self.start.elapsed()
    }
}

/// State files that outlive one run of the loop (a restart), shared with the test.
type SharedStore = Rc<RefCell<MemoryStore>>;

#[derive(Clone, Default)]
struct Events(Rc<RefCell<Vec<(Instant, Event)>>>);

impl Observer for Events {
    fn on_event(&mut self, event: &Event) {
        self.0.borrow_mut().push((Instant::now(), event.clone()));
    }
}

fn settings() -> Settings {
    Settings {
        agent_id: "a-1".into(),
        token: Secret::new("t"),
        refresh_token: Secret::new("r"),
        policy: PolicyConfig {
            backoff: BackoffConfig { initial_delay: INITIAL_DELAY, max_delay: Duration::from_secs(15), factor: 2.0, jitter: Jitter::None },
            breaker: BreakerConfig { failure_threshold: 5, open_timeout: Duration::from_secs(15), half_open_max_probes: 1 },
            max_retries: 5,
            check_in_interval: INTERVAL,
            retry_after_max: Duration::from_secs(60),
            health_check: true,
        },
        request_timeout: Duration::from_secs(10),
    }
}

/// Runs the loop for `horizon` of paused time; returns every request and event.
fn run(transport: impl FnOnce(&Log) -> Scripted, horizon: Duration) -> (Vec<Seen>, Vec<(Instant, Event)>, Instant) {
    run_on(SharedStore::default(), Duration::ZERO, transport, horizon)
}

/// [`run`] on `store`, with the wall clock `offset` later than usual (a restart).
fn run_on(
    store: SharedStore,
    offset: Duration,
    transport: impl FnOnce(&Log) -> Scripted,
    horizon: Duration,
) -> (Vec<Seen>, Vec<(Instant, Event)>, Instant) {
    run_with(Policy::new(settings().policy), store, offset, transport, horizon)
}

/// [`run_on`] with any strategy (the production loop is [`Policy`]'s).
fn run_with(
    strategy: impl Strategy,
    store: SharedStore,
    offset: Duration,
    transport: impl FnOnce(&Log) -> Scripted,
    horizon: Duration,
) -> (Vec<Seen>, Vec<(Instant, Event)>, Instant) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let log: Log = Rc::default();
    let events = Events::default();
    let transport = transport(&log);
    let recorded = events.clone();
    let start = rt.block_on(async move {
        let start = Instant::now();
        let io = Io { transport, store, host: PausedWall { start, offset }, observer: recorded, runner: ProductionRunner::default() };
        let agent = CheckinLoop::new(settings(), io, strategy, StdRng::seed_from_u64(11));
        let _ = tokio::time::timeout(horizon, agent.run(std::future::pending())).await;
        start
    });
    let seen = log.borrow().clone();
    let events = events.0.borrow().clone();
    (seen, events, start)
}

fn wall_at(start: Instant, at: Instant) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_START_UNIX_SECONDS) + (at - start)
}

fn checkins(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.path.ends_with("/commands")).collect()
}

fn heartbeat_answer(minutes: u64) -> String {
    json!({"commands": [{"id": "c-hb", "type": "enable_heartbeat", "params": {"duration_minutes": minutes}}]}).to_string()
}

#[test]
fn enable_heartbeat_is_reported_at_once_and_in_every_rapid_check_in() {
    let (seen, _, start) = run(
        |log| {
            let mut t = Scripted::new(log);
            t.checkins.push_back((200, heartbeat_answer(2)));
            t
        },
        Duration::from_secs(480),
    );
    let c = checkins(&seen);
    assert!(c.len() >= 10, "{} check-ins", c.len());
    // The answer came at c[0] (+5 ms); the next check-in went out at once, the one after that
    // at the rapid interval (5 s +- 10%), not at once again.
    let gap1 = c[1].at - c[0].at;
    let gap2 = c[2].at - c[1].at;
    assert!(gap1 <= Duration::from_millis(50), "first check-in after enable_heartbeat came after {gap1:?}");
    assert!(gap2 >= Duration::from_millis(4_400) && gap2 <= Duration::from_millis(5_600), "then {gap2:?}");

    let answered = wall_at(start, c[0].at + Duration::from_millis(5));
    let window_end = answered + Duration::from_secs(120);
    let mut with = 0;
    let mut without = 0;
    for s in &c {
        let meta = &s.body["metadata"];
        assert_eq!(s.body["version"], "0.1.18", "{}", s.body);
        assert_eq!(meta["agent_build_version"], env!("CARGO_PKG_VERSION"), "{}", s.body);
        let wall = wall_at(start, s.at);
        if s.at == c[0].at {
            assert!(meta.get("rapid_polling_enabled").is_none(), "before any heartbeat: {}", s.body);
        } else if wall < window_end {
            with += 1;
            assert_eq!(meta["rapid_polling_enabled"], true, "{}", s.body);
            let until = humantime::parse_rfc3339(meta["rapid_polling_until"].as_str().expect("until is a string")).unwrap();
            let off = until.duration_since(window_end).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
            assert!(off <= Duration::from_secs(1), "until {until:?} vs window end {window_end:?}");
            let minutes = meta["rapid_polling_duration_minutes"].as_u64().expect("whole minutes");
            let left = window_end.duration_since(wall).unwrap();
            assert_eq!(minutes, left.as_secs() / 60, "at {left:?} left: {}", s.body);
        } else {
            without += 1;
            for key in ["rapid_polling_enabled", "rapid_polling_until", "rapid_polling_duration_minutes"] {
                assert!(meta.get(key).is_none(), "{key} after the window: {}", s.body);
            }
        }
    }
    assert!(with >= 20 && without >= 1, "{with} rapid check-ins, {without} after");
}

#[test]
fn an_answer_that_always_enables_the_heartbeat_cannot_make_the_agent_spin() {
    let (seen, _, _) = run(
        |log| {
            let mut t = Scripted::new(log);
            t.checkin_default = (200, heartbeat_answer(5));
            t
        },
        Duration::from_secs(60),
    );
    let c = checkins(&seen);
    assert!(c.len() >= 10, "{} check-ins", c.len());
    for pair in c.windows(3) {
        let (a, b) = (pair[1].at - pair[0].at, pair[2].at - pair[1].at);
        assert!(a >= Duration::from_secs(4) || b >= Duration::from_secs(4), "two immediate check-ins in a row: {a:?}, {b:?}");
    }
    // At most one immediate check-in per rapid interval: about 2 per 5 s, never more.
    assert!(c.len() <= 2 * 60 / 4 + 2, "{} check-ins in a minute", c.len());
}

#[test]
fn rapid_polling_until_in_the_servers_local_time_is_honoured() {
    // The server answers at about t=0 with a window of 10 minutes, written at -05:00.
    let until_utc = SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_START_UNIX_SECONDS + 600);
    let local = humantime::format_rfc3339_seconds(until_utc - Duration::from_secs(5 * 3600)).to_string();
    let until_text = format!("{}-05:00", local.trim_end_matches('Z'));
    let answer = json!({"commands": [], "rapid_polling": {"enabled": true, "until": until_text}}).to_string();
    let (seen, events, _) = run(
        |log| {
            let mut t = Scripted::new(log);
            t.checkins.push_back((200, answer));
            t
        },
        Duration::from_secs(700),
    );
    let window = events.iter().find_map(|(_, e)| match e {
        Event::RapidPolling { for_ms } => Some(*for_ms),
        _ => None,
    });
    let window = window.unwrap_or_else(|| panic!("the agent ignored rapid_polling.until = {until_text}"));
    assert!((599_000..=600_000).contains(&window), "window of {window} ms for {until_text}");
    let c = checkins(&seen);
    // The answer's window is no heartbeat: not one check-in reports it.
    let reported: Vec<&Value> = c.iter().filter(|s| s.body["metadata"].get("rapid_polling_enabled").is_some()).map(|s| &s.body).collect();
    assert!(reported.is_empty(), "the answer's window was reported as a heartbeat: {reported:?}");
    // And the agent did poll rapidly inside it (from the second check-in after the answer at
    // the latest).
    let rapid = c.windows(2).filter(|w| w[1].at - w[0].at <= Duration::from_millis(5_600)).count();
    assert!(rapid >= 40, "{rapid} rapid check-ins in the 10-minute window");
}

/// The production policy, but deaf to the answer's rapid polling, as RedFlag 0.1.18's agent is.
struct IgnoresAnswerWindow(Policy);

impl Strategy for IgnoresAnswerWindow {
    fn admit(&mut self, now: std::time::Instant) -> (Gate, Option<Transition>) {
        self.0.admit(now)
    }
    fn complete(&mut self, now: std::time::Instant, report: Report, rng: &mut dyn rand::RngCore) -> Decision {
        self.0.complete(now, report, rng)
    }
    fn breaker_state(&self) -> BreakerState {
        self.0.breaker_state()
    }
    fn consecutive_failures(&self) -> u32 {
        self.0.consecutive_failures()
    }
    fn follows_answer_rapid_polling(&self) -> bool {
        false
    }
}

#[test]
fn a_strategy_that_ignores_the_answers_window_keeps_its_pace_but_not_past_a_heartbeat() {
    let until = humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_START_UNIX_SECONDS + 600));
    let window = json!({"commands": [], "rapid_polling": {"enabled": true, "until": until.to_string()}}).to_string();
    let deaf = || IgnoresAnswerWindow(Policy::new(settings().policy));
    let (seen, events, _) = run_with(
        deaf(),
        SharedStore::default(),
        Duration::ZERO,
        |log| {
            let mut t = Scripted::new(log);
            t.checkins.push_back((200, window));
            t
        },
        Duration::from_secs(700),
    );
    assert!(!events.iter().any(|(_, e)| matches!(e, Event::RapidPolling { .. })), "the answer's window was followed");
    let c = checkins(&seen);
    assert!(c.windows(2).all(|w| w[1].at - w[0].at >= Duration::from_secs(270)), "{:?}", c.iter().map(|s| s.at).collect::<Vec<_>>());
    // Its own heartbeat command still switches rapid polling on.
    let (seen, _, _) = run_with(
        deaf(),
        SharedStore::default(),
        Duration::ZERO,
        |log| {
            let mut t = Scripted::new(log);
            t.checkins.push_back((200, heartbeat_answer(10)));
            t
        },
        Duration::from_secs(120),
    );
    assert!(checkins(&seen).len() >= 10, "{} check-ins in 2 minutes of heartbeat", checkins(&seen).len());
}

#[test]
fn a_server_waiting_for_configuration_is_not_ready() {
    let waiting = r#"{"status":"waiting for configuration"}"#.to_string();
    let (seen, events, _) = run(
        |log| {
            let mut t = Scripted::new(log);
            // An outage (so the agent probes /health), then the server comes back unconfigured
            // for three probes, then configured. A failed probe sends the next attempt straight
            // to the check-in (probes never gate twice in a row), so the check-ins between the
            // unconfigured probes fail too, as a real unconfigured server's would (gin's 404).
            t.checkins.push_back((502, "bad gateway".into()));
            for _ in 0..3 {
                t.checkins.push_back((404, "404 page not found".into()));
            }
            t.health.extend([(200, waiting.clone()), (200, waiting.clone()), (200, waiting)]);
            t
        },
        Duration::from_secs(120),
    );
    let waiting_probes: Vec<&Seen> = seen.iter().filter(|s| s.path == "/health").take(3).collect();
    assert_eq!(waiting_probes.len(), 3, "{seen:#?}");
    for probe in &waiting_probes {
        // Within the same attempt (the request right after, at once) there is no check-in.
        let next = seen.iter().find(|s| s.at > probe.at);
        if let Some(next) = next {
            assert!(
                !(next.path.ends_with("/commands") && next.at - probe.at < INITIAL_DELAY / 2),
                "a check-in followed a 'waiting for configuration' probe in the same attempt: {next:?}"
            );
        }
    }
    let not_ready = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::AttemptFailed { class, .. } if class == "server_not_ready"))
        .count();
    assert!(not_ready >= 1, "no attempt failed as server_not_ready: {events:#?}");
    // The probe itself is traced as a failed request, not as an "ok" health check.
    let probes: Vec<(bool, String)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::RequestFinished { kind: RequestKind::Health, ok, class, .. } => Some((*ok, class.clone())),
            _ => None,
        })
        .take(3)
        .collect();
    assert_eq!(probes, vec![(false, "server_not_ready".to_string()); 3]);
    // Once configured, the agent checks in again.
    let last_probe = waiting_probes[2].at;
    assert!(checkins(&seen).iter().any(|s| s.at > last_probe), "no check-in after the server was configured");
}

fn disable_answer() -> String {
    json!({"commands": [{"id": "c-off", "type": "disable_heartbeat", "params": {}}]}).to_string()
}

#[test]
fn disable_heartbeat_checks_in_at_once_and_says_the_heartbeat_is_off() {
    let (seen, _, start) = run(
        |log| {
            let mut t = Scripted::new(log);
            t.checkins.push_back((200, heartbeat_answer(10)));
            for _ in 0..5 {
                t.checkins.push_back((200, r#"{"commands":[]}"#.into()));
            }
            t.checkins.push_back((200, disable_answer()));
            t
        },
        Duration::from_secs(700),
    );
    let c = checkins(&seen);
    let off = c.iter().position(|s| s.body["metadata"]["rapid_polling_enabled"] == false).expect("no check-in said the heartbeat is off");
    // Until then the heartbeat was reported; the check-in that got disable_heartbeat is the
    // one before, and this one went out at once.
    assert!(off >= 2 && c[off - 1].body["metadata"]["rapid_polling_enabled"] == true, "{:?}", c.iter().map(|s| &s.body["metadata"]).collect::<Vec<_>>());
    let gap = c[off].at - c[off - 1].at;
    assert!(gap <= Duration::from_millis(50), "the check-in after disable_heartbeat came after {gap:?}");
    let said = humantime::parse_rfc3339(c[off].body["metadata"]["rapid_polling_until"].as_str().unwrap()).unwrap();
    let wall = wall_at(start, c[off].at);
    assert!(wall.duration_since(said).unwrap_or_default() <= Duration::from_secs(1), "until {said:?} is not now ({wall:?})");
    // Said once; then back to the regular interval, with no heartbeat keys.
    for s in &c[off + 1..] {
        assert!(s.body["metadata"].get("rapid_polling_enabled").is_none(), "{}", s.body);
    }
    let next = c.get(off + 1).expect("a check-in after");
    assert!(next.at - c[off].at >= Duration::from_secs(270), "back to the 300 s interval: {:?}", next.at - c[off].at);
}

#[test]
fn an_operators_heartbeat_survives_a_restart() {
    let store = SharedStore::default();
    // First run: a 30-minute heartbeat, then the agent stops after 2 minutes.
    run_on(
        store.clone(),
        Duration::ZERO,
        |log| {
            let mut t = Scripted::new(log);
            t.checkins.push_back((200, heartbeat_answer(30)));
            t
        },
        Duration::from_secs(120),
    );
    assert!(store.borrow().files.contains_key("heartbeat.json"), "the heartbeat was not kept in state_dir");
    // Second run, 3 minutes after the first started (1 minute down): the first check-in
    // already reports the heartbeat, with the same end, and the agent polls rapidly.
    let restart = Duration::from_secs(180);
    let (seen, _, _) = run_on(store, restart, Scripted::new, Duration::from_secs(120));
    let c = checkins(&seen);
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(WALL_START_UNIX_SECONDS + 30 * 60);
    let meta = &c[0].body["metadata"];
    assert_eq!(meta["rapid_polling_enabled"], true, "first check-in after the restart: {}", c[0].body);
    let until = humantime::parse_rfc3339(meta["rapid_polling_until"].as_str().unwrap()).unwrap();
    let off = until.duration_since(end).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
    assert!(off <= Duration::from_secs(1), "until {until:?}, the heartbeat ends at {end:?}");
    assert_eq!(meta["rapid_polling_duration_minutes"], 27, "{}", c[0].body);
    assert!(c.len() >= 20, "{} check-ins in 2 minutes: not rapid polling", c.len());
}
