//! The check-in loop's attempt logic, driven in-process with a scripted transport and tokio's
//! paused clock (so hundreds of simulated seconds take milliseconds, and nothing is timed):
//!
//! * a bare 404 (no RedFlag JSON body) is retried with backoff at most `BARE_404_RETRIES_MAX`
//!   times in a row, then waits for the regular interval; a success resets the count;
//! * a 404 with RedFlag's JSON body fails fast at once;
//! * with `/health` answering 503 for good, probes and check-ins alternate: never two probes in
//!   a row.
//!
//! The release binary's behaviour for the same cases is tested in `answers.rs` and
//! `health_probe.rs`; this file reaches the bound, which would take minutes in real time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use redflag_agent::checkin::{CheckinLoop, Host, Io, Settings};
use redflag_agent::commands::runner::ProductionRunner;
use redflag_agent::server::answers::BARE_404_RETRIES_MAX;
use redflag_agent::config::Config;
use redflag_agent::log::events::{Event, Observer, RequestKind};
use redflag_agent::store::MemoryStore;
use redflag_agent::server::transport::{Request, Response, Transport, TransportError};

/// Answers by path: `/health` always with `health`, check-ins from a script, then `fallback`.
struct Scripted {
    health: u16,
    checkins: VecDeque<Response>,
    fallback: Response,
    log: Arc<Mutex<Vec<String>>>,
}

impl Transport for Scripted {
    async fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        self.log.lock().unwrap().push(request.path.clone());
        if request.path == "/health" {
            return Ok(Response { status: self.health, ..Response::default() });
        }
        Ok(self.checkins.pop_front().unwrap_or_else(|| self.fallback.clone()))
    }
}

struct FixedClock;

impl Host for FixedClock {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Observer for Recorder {
    fn on_event(&mut self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

fn settings(health_check: bool) -> Settings {
    let json = format!(
        r#"{{"server_url":"http://127.0.0.1:1","agent_id":"a","token":"t","refresh_token":"r","check_in_interval":300,
            "resilience":{{"health_check":{health_check}}}}}"#
    );
    Settings::from_config(&Config::from_json_str(&json, "test").unwrap())
}

fn response(status: u16, body: &str) -> Response {
    Response { status, body: body.as_bytes().to_vec(), ..Response::default() }
}

/// Runs the loop for `simulated` (paused clock) and returns its events and request paths.
async fn run(transport: Scripted, health_check: bool, simulated: Duration) -> (Vec<Event>, Vec<String>) {
    let log = transport.log.clone();
    let recorder = Recorder::default();
    let io = Io { transport, store: MemoryStore::default(), host: FixedClock, observer: recorder.clone(), runner: ProductionRunner::default() };
    let agent = CheckinLoop::production(settings(health_check), io, StdRng::seed_from_u64(7));
    agent.run(tokio::time::sleep(simulated)).await;
    let events = recorder.0.lock().unwrap().clone();
    let paths = log.lock().unwrap().clone();
    (events, paths)
}

fn failures(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFailed { class, verdict, reason, .. } => Some((class.clone(), format!("{verdict}/{reason}"))),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn bare_404s_are_retried_a_bounded_number_of_times_in_a_row() {
    let transport = Scripted {
        health: 200,
        checkins: VecDeque::new(),
        fallback: response(404, "<html><body><h1>404 Not Found</h1><hr>nginx</body></html>"),
        log: Arc::default(),
    };
    let (events, _) = run(transport, false, Duration::from_secs(3600)).await;
    let f = failures(&events);
    let n = BARE_404_RETRIES_MAX as usize;
    assert!(f.len() > n + 2, "only {} failures in an hour", f.len());
    assert!(f[..n].iter().all(|(c, v)| c == "http_404" && v.starts_with("retry/")), "{:?}", &f[..n]);
    assert!(f[n..].iter().all(|(c, v)| c == "http_404" && v == "fail_fast/regular"), "{:?}", &f[n..]);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_bare_404_count() {
    let n = BARE_404_RETRIES_MAX as usize;
    let mut script: VecDeque<Response> = VecDeque::new();
    for _ in 0..n - 1 {
        script.push_back(response(404, ""));
    }
    script.push_back(response(200, r#"{"commands":[]}"#));
    for _ in 0..n {
        script.push_back(response(404, ""));
    }
    let transport = Scripted { health: 200, checkins: script, fallback: response(200, r#"{"commands":[]}"#), log: Arc::default() };
    let (events, _) = run(transport, false, Duration::from_secs(3600)).await;
    let f = failures(&events);
    assert_eq!(f.len(), 2 * n - 1, "{f:?}");
    assert!(f.iter().all(|(_, v)| v.starts_with("retry/")), "a bare 404 after a success was not retried: {f:?}");
}

#[tokio::test(start_paused = true)]
async fn a_redflag_404_fails_fast_at_once() {
    let transport = Scripted {
        health: 200,
        checkins: VecDeque::new(),
        fallback: response(404, r#"{"error":"agent not found"}"#),
        log: Arc::default(),
    };
    let (events, _) = run(transport, false, Duration::from_secs(1000)).await;
    let f = failures(&events);
    assert!(!f.is_empty() && f.iter().all(|(_, v)| v == "fail_fast/regular"), "{f:?}");
    let cause = events.iter().find_map(|e| match e {
        Event::AttemptFailed { cause, .. } => cause.clone(),
        _ => None,
    });
    assert_eq!(cause.as_deref(), Some("the server said \"agent not found\""));
}

#[tokio::test(start_paused = true)]
async fn with_a_broken_health_probes_and_check_ins_alternate() {
    let transport = Scripted { health: 503, checkins: VecDeque::new(), fallback: response(502, "bad gateway"), log: Arc::default() };
    let (events, paths) = run(transport, true, Duration::from_secs(600)).await;
    let probes = paths.iter().filter(|p| *p == "/health").count();
    assert!(probes >= 5, "{paths:?}");
    assert!(!paths.windows(2).any(|w| w[0] == "/health" && w[1] == "/health"), "two probes in a row: {paths:?}");
    let probe_failures = events
        .iter()
        .filter(|e| matches!(e, Event::AttemptFailed { request: Some(RequestKind::Health), class, .. } if class == "http_503"))
        .count();
    assert_eq!(probe_failures, probes, "every failed probe is reported as one");
}
