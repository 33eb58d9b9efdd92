//! Commands through the real check-in loop, in process, on tokio's paused clock: a scripted
//! server behind a fake `Transport`, the loop's state files in a shared in-memory store.
//!
//! What they prove: a command is journaled, acknowledged in the next check-in, run once and its
//! result delivered; a command the server sends again is not run again and its stored result
//! is re-sent; a command running when the agent died is reported failed and never run; results
//! wait in the outbox while the server fails them, on their own schedule while the check-ins go
//! on at their pace, then are delivered; corrupt state files are moved aside and the agent keeps
//! checking in.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use redflag_agent::checkin::{CheckinLoop, Host, Io, Settings};
use redflag_agent::config::Config;
use redflag_agent::log::events::{Event, Observer};
use redflag_agent::commands::journal::{JOURNAL_FILE, Journal};
use redflag_agent::commands::outbox::OUTBOX_FILE;
use redflag_agent::server::protocol::{Command, UpdateLogRequest};
use redflag_agent::commands::runner::{CommandRunner, Execution};
use redflag_agent::server::secret::Secret;
use redflag_agent::store::{MemoryStore, Status, Store};
use redflag_agent::server::transport::{Method, Request, Response, Transport, TransportError};
use serde_json::{Value, json};

/// What the scripted server saw and how it answers.
#[derive(Default)]
struct Server {
    /// Commands every check-in answer carries (a server that redelivers until told otherwise
    /// is modelled by the test itself).
    commands: Vec<Command>,
    /// Drop a command from `commands` once a check-in acknowledges it.
    honour_acks: bool,
    /// Status for `/logs` while `Some`.
    logs_status: Option<u16>,
    /// Check-in bodies received, in order.
    checkins: Vec<Value>,
    /// Results received, in order.
    results: Vec<UpdateLogRequest>,
    /// Request paths in order (`checkin`, `result`, `health`, ...).
    log: Vec<&'static str>,
}

#[derive(Clone, Default)]
struct Fake(Rc<RefCell<Server>>);

impl Transport for Fake {
    async fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        let mut s = self.0.borrow_mut();
        let ok = |body: Value| Ok(Response { status: 200, body: body.to_string().into_bytes(), ..Response::default() });
        if request.path.ends_with("/commands") {
            s.log.push("checkin");
            let body: Value = serde_json::from_slice(request.json_body.as_deref().unwrap_or(b"{}")).unwrap();
            if s.honour_acks {
                let acks: Vec<String> = body["acknowledged_commands"].as_array().map_or(Vec::new(), |a| {
                    a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                });
                s.commands.retain(|c| !acks.contains(&c.id));
            }
            s.checkins.push(body);
            let commands = serde_json::to_value(&s.commands).unwrap();
            return ok(json!({ "commands": commands, "rapid_polling": null }));
        }
        if request.path.ends_with("/logs") {
            assert_eq!(request.method, Method::Post);
            s.log.push("result");
            if let Some(status) = s.logs_status {
                return Ok(Response { status, ..Response::default() });
            }
            let r: UpdateLogRequest = serde_json::from_slice(request.json_body.as_deref().unwrap()).unwrap();
            s.results.push(r);
            return ok(json!({ "message": "log recorded" }));
        }
        s.log.push("other");
        ok(json!({ "status": "healthy" }))
    }
}

/// The loop's disk, shared with the test.
#[derive(Clone, Default)]
struct Disk(Rc<RefCell<MemoryStore>>);

impl Store for Disk {
    fn save_token(&mut self, token: &Secret) -> Result<(), String> {
        self.0.borrow_mut().save_token(token)
    }
    fn save_status(&mut self, status: &Status) -> Result<(), String> {
        self.0.borrow_mut().save_status(status)
    }
    fn load_state(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.borrow_mut().load_state(name)
    }
    fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.0.borrow_mut().save_state(name, bytes)
    }
    fn quarantine_state(&mut self, name: &str) -> Result<String, String> {
        self.0.borrow_mut().quarantine_state(name)
    }
}

impl Disk {
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.0.borrow().files.clone()
    }
}

#[derive(Clone, Default)]
struct Events(Rc<RefCell<Vec<Event>>>);

impl Observer for Events {
    fn on_event(&mut self, event: &Event) {
        self.0.borrow_mut().push(event.clone());
    }
}

impl Events {
    fn named(&self, name: &str) -> Vec<Event> {
        self.0.borrow().iter().filter(|e| e.name() == name).cloned().collect()
    }
}

struct Clock;

impl Host for Clock {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }
}

/// Counts runs per command id; each takes `takes` of (paused) time.
#[derive(Clone, Default)]
struct Counting {
    runs: Rc<RefCell<BTreeMap<String, u32>>>,
    takes: Duration,
}

impl CommandRunner for Counting {
    async fn run(&mut self, command: &Command) -> Execution {
        *self.runs.borrow_mut().entry(command.id.clone()).or_default() += 1;
        tokio::time::sleep(self.takes).await;
        Execution::success("done", None)
    }
}

fn settings() -> Settings {
    let config = Config::from_value(
        json!({
            "server_url": "https://server.invalid",
            "agent_id": "a1",
            "token": "t",
            "refresh_token": "r",
            "check_in_interval": 10,
            "resilience": { "initial_delay_seconds": 1, "max_delay_minutes": 0.1, "circuit_breaker_timeout_minutes": 0.1 },
        }),
        "test",
    )
    .unwrap();
    Settings::from_config(&config)
}

fn cmd(id: &str) -> Command {
    Command { id: id.into(), kind: "scan_updates".into(), params: json!({}) }
}

/// Runs the loop for `for_` of paused time.
async fn run(fake: &Fake, disk: &Disk, events: &Events, runner: Counting, for_: Duration) {
    let io = Io { transport: fake.clone(), store: disk.clone(), host: Clock, observer: events.clone(), runner };
    let agent = CheckinLoop::production(settings(), io, StdRng::seed_from_u64(7));
    agent.run(tokio::time::sleep(for_)).await;
}

#[tokio::test(start_paused = true)]
async fn a_command_is_journaled_acknowledged_run_once_and_its_result_delivered() {
    let (fake, disk, events, runner) = (Fake::default(), Disk::default(), Events::default(), Counting::default());
    {
        let mut s = fake.0.borrow_mut();
        s.commands = vec![cmd("c1")];
        s.honour_acks = true;
    }
    run(&fake, &disk, &events, runner.clone(), Duration::from_secs(60)).await;
    let s = fake.0.borrow();
    assert_eq!(runner.runs.borrow().get("c1"), Some(&1));
    assert_eq!(s.results.len(), 1, "{:?}", s.results);
    assert_eq!((s.results[0].command_id.as_str(), s.results[0].result.as_str()), ("c1", "success"));
    // The first check-in carries no acknowledgement, the second carries c1, later ones none.
    assert!(s.checkins[0].get("acknowledged_commands").is_none(), "{}", s.checkins[0]);
    assert_eq!(s.checkins[1]["acknowledged_commands"], json!(["c1"]), "{}", s.checkins[1]);
    assert!(s.checkins[2..].iter().all(|c| c.get("acknowledged_commands").is_none()));
    // Journaled as done and delivered; the outbox is empty again.
    let journal = Journal::parse(&disk.files()[JOURNAL_FILE]).unwrap();
    assert_eq!(journal.get("c1").unwrap().state.as_str(), "done");
    assert!(journal.undelivered().is_empty());
    assert!(String::from_utf8_lossy(&disk.files()[OUTBOX_FILE]).contains("\"results\":[]"));
    assert_eq!(events.named("command_started").len(), 1);
    assert_eq!(events.named("result_delivered").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_command_sent_again_is_not_run_again_and_its_stored_result_is_resent() {
    // A server that ignores acknowledgements and sends c1 in every answer.
    let (fake, disk, events, runner) = (Fake::default(), Disk::default(), Events::default(), Counting::default());
    fake.0.borrow_mut().commands = vec![cmd("c1")];
    run(&fake, &disk, &events, runner.clone(), Duration::from_secs(60)).await;
    let s = fake.0.borrow();
    assert!(s.checkins.len() >= 4, "{} check-ins", s.checkins.len());
    assert_eq!(runner.runs.borrow().get("c1"), Some(&1), "run once however often it came");
    assert!(s.results.len() >= 2, "the stored result goes out again for each redelivery");
    assert!(s.results.iter().all(|r| r.command_id == "c1" && r.result == "success"));
    assert!(!events.named("command_duplicate").is_empty());
    // And again across a restart of the agent: the journal on disk still knows c1.
    drop(s);
    run(&fake, &disk, &events, runner.clone(), Duration::from_secs(30)).await;
    assert_eq!(runner.runs.borrow().get("c1"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn a_command_running_when_the_agent_died_is_reported_failed_and_never_run() {
    let (fake, disk, events, runner) = (Fake::default(), Disk::default(), Events::default(), Counting::default());
    // The disk of an agent killed in the middle of c1.
    {
        let mut store = disk.clone();
        let mut j = Journal::default();
        j.receive(&cmd("c1"), &mut store).unwrap();
        j.start("c1", &mut store).unwrap();
    }
    // The server has not seen the acknowledgement, so it sends c1 again.
    fake.0.borrow_mut().commands = vec![cmd("c1")];
    fake.0.borrow_mut().honour_acks = true;
    run(&fake, &disk, &events, runner.clone(), Duration::from_secs(60)).await;
    let s = fake.0.borrow();
    assert_eq!(runner.runs.borrow().get("c1"), None, "an interrupted command never runs again");
    assert_eq!(s.results.len(), 1, "{:?}", s.results);
    assert_eq!(s.results[0].result, "failed");
    assert_eq!(s.results[0].stderr, "interrupted by agent restart");
    assert_eq!(events.named("command_interrupted").len(), 1);
    // The first check-in acknowledges it (the journal remembered it was never acknowledged).
    assert_eq!(s.checkins[0]["acknowledged_commands"], json!(["c1"]));
}

#[tokio::test(start_paused = true)]
async fn results_wait_on_their_own_schedule_while_the_server_fails_them_and_check_ins_go_on() {
    let (fake, disk, events) = (Fake::default(), Disk::default(), Events::default());
    let runner = Counting { takes: Duration::from_secs(2), ..Counting::default() };
    {
        let mut s = fake.0.borrow_mut();
        s.commands = vec![cmd("c1"), cmd("c2")];
        s.honour_acks = true;
        s.logs_status = Some(503);
    }
    run(&fake, &disk, &events, runner.clone(), Duration::from_secs(90)).await;
    {
        let s = fake.0.borrow();
        assert!(s.results.is_empty());
        // Check-ins keep their pace (every 10 s +-10%, plus the 2 s commands once): a failing
        // /logs is not the check-in's business.
        let checkins = s.log.iter().filter(|p| **p == "checkin").count();
        assert!(checkins >= 8, "{checkins} check-ins in 90 s at a 10 s interval: {:?}", s.log);
        // Results are posted after check-ins, at most one failing post per check-in round.
        let posts = s.log.iter().filter(|p| **p == "result").count();
        assert!((2..=checkins).contains(&posts), "{posts} result posts for {checkins} check-ins: {:?}", s.log);
    }
    assert!(!events.named("results_held").is_empty());
    assert!(events.named("breaker").is_empty(), "a failing /logs moved the check-in breaker");
    let outbox = String::from_utf8_lossy(&disk.files()[OUTBOX_FILE]).to_string();
    assert!(outbox.contains("c1") && outbox.contains("c2"), "written before sending: {outbox}");
    // The server recovers: both results go out, oldest first, and check-ins go on.
    fake.0.borrow_mut().logs_status = None;
    run(&fake, &disk, &events, runner.clone(), Duration::from_secs(60)).await;
    let s = fake.0.borrow();
    let ids: Vec<&str> = s.results.iter().map(|r| r.command_id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert_eq!(runner.runs.borrow().values().copied().collect::<Vec<_>>(), [1, 1]);
    assert!(s.log.ends_with(&["checkin"]));
}

#[tokio::test(start_paused = true)]
async fn corrupt_state_files_are_moved_aside_and_the_agent_keeps_checking_in() {
    for (journal, outbox) in [
        (&b"{\"format\":\"redflag-agent-journal/1\",\"entries\":[{\"comm"[..], &b"{\"format\":\"redflag-agent-outbox/1\",\"results\":[]}"[..]),
        (&b"{\"format\":\"redflag-agent-journal/1\",\"entries\":[]}"[..], &b"\x00\x00garbage"[..]),
        (&b""[..], &b"{\"format\":\"redflag-agent-outbox/1\",\"results\":[]}"[..]),
        (&b"{\"format\":\"redflag-agent-journal/1\",\"entries\":[]}"[..], &b"{\"format\":\"redflag-agent-outbox/1\",\"results\":[{\"command_id\":\"x\"}]}"[..]),
    ] {
        let (fake, disk, events, runner) = (Fake::default(), Disk::default(), Events::default(), Counting::default());
        disk.0.borrow_mut().files.insert(JOURNAL_FILE.into(), journal.to_vec());
        disk.0.borrow_mut().files.insert(OUTBOX_FILE.into(), outbox.to_vec());
        fake.0.borrow_mut().commands = vec![cmd("c1")];
        fake.0.borrow_mut().honour_acks = true;
        run(&fake, &disk, &events, runner.clone(), Duration::from_secs(40)).await;
        let corrupt = events.named("state_corrupt");
        assert_eq!(corrupt.len(), 1, "{corrupt:?}");
        let Event::StateCorrupt { file, moved_to, .. } = &corrupt[0] else { unreachable!() };
        assert_eq!(moved_to, &format!("{file}.corrupt"));
        let files = disk.files();
        assert_eq!(files.get(moved_to.as_str()).map(Vec::as_slice), Some(if file == JOURNAL_FILE { journal } else { outbox }));
        // It kept working: checked in, ran the command once, delivered its result.
        assert!(fake.0.borrow().checkins.len() >= 3);
        assert_eq!(runner.runs.borrow().get("c1"), Some(&1));
        assert_eq!(fake.0.borrow().results.len(), 1);
    }
}
