//! `redflag-sim live FILE`: one scenario in wall-clock time against real processes.
//!
//! It starts `redflag-sim serve` and `redflag-sim proxy` (this same executable) and one real
//! `redflag-agent` process per agent, with configs pointing at the proxy and a server database
//! pre-registered with every agent's initial tokens for the run's seed. It then applies the
//! scenario's faults at their wall-clock times (`fault_state.rs` decides what each one does to
//! which process), gathers the observations into the simulation's trace format, and judges
//! them with the simulation's own `judge::evaluate` and prints them with `cli/report.rs`:
//!
//! * the server's and the proxy's request logs (their `--trace` files, Unix-ms `t_ms`);
//! * every agent's events, parsed from its `--log-format json` stderr (`agent_log.rs`);
//! * the harness's own `run_started`, `fault_applied`/`fault_ended`, `host_crashed`/
//!   `host_restarted`, `command_queued` and `loop_ended` (an agent process that exited by
//!   itself) lines.
//!
//! Commands: the server runs with the scenario's `[server]` delivery; the scenario's commands
//! (`Scenario::command_schedule`, the same list the simulation queues) are queued at their
//! wall-clock times through the server's `POST /commands`, or straight into its database file
//! while it is down. The real agent's production runner answers every type but the heartbeats
//! with `failed` ("not implemented by this agent") at once, so a scenario with commands gives
//! the agents the test-only `REDFLAG_AGENT_TEST_COMMAND_DELAY_MS` = `[workload]
//! execution_time`: each command then takes that long, and a kill can land in the middle of one.
//!
//! Every `t_ms` becomes milliseconds since the agents were started; lines are sorted by time
//! (stable) and lines after the run's end (processes being stopped) are dropped. Verdicts use
//! a tolerance of [`TOLERANCE`] for process scheduling, where the simulation uses two ticks.
//!
//! Whatever happens (a failed expectation, a harness error, a panic, Ctrl-C), every process it
//! started is stopped (`processes.rs`), the network namespace removed (`netns.rs`) and the
//! temporary folder deleted: they are fields of [`Live`], dropped in that
//! order. It also reports each agent's RSS a few seconds after it started and at the end, for
//! the memory soak (`scenarios/soak/`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::agent_log::{AgentLogReader, Collector};
use super::control_client::request_ok;
use super::fault_state::{self, Effect, LiveFaults, Proc};
use super::netns::{self, Netns};
use super::processes::{self, Processes, Role, STOP_GRACE};
use super::signals;
use super::server_process;
use super::trace_file;
use crate::clock::unix_now_ms;
use crate::cli::report;
use crate::runner::RunResult;
use crate::scenario::{Fleet, Phase, QueuedCommand, Scenario, fmt_duration, initial_tokens};
use crate::models::server::ServerDb;
use crate::trace::{Record, SimEvent, TraceEvent, write_jsonl_file};
use crate::seed;

/// Agent processes one live run starts at most.
pub const AGENTS_MAX: u32 = 200;
/// The longest live scenario (wall-clock time).
pub const DURATION_MAX: Duration = Duration::from_secs(2 * 3600);
/// Slack in every time bound of the checks, for process scheduling and start-up.
pub const TOLERANCE: Duration = Duration::from_secs(1);
/// How long the server or the proxy may take to answer its control API after a start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// When an agent's "RSS at start" is measured, after the run started.
pub const RSS_SAMPLE_AFTER: Duration = Duration::from_secs(3);
/// Trace records kept from the agents, and from each process trace file.
pub const RECORDS_MAX: usize = 2_000_000;
/// Deadline of one control API request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the main loop wakes up (signals, exited processes).
const POLL: Duration = Duration::from_millis(20);
/// How long the agents' log readers get to reach the end of their streams after the stop.
const READERS_DRAIN_MAX: Duration = Duration::from_secs(5);
/// The agents' log filter: their events (DEBUG and up), and warnings from everything else.
const AGENT_RUST_LOG: &str = "warn,redflag_agent=debug";

pub use crate::exit::{FAILED as EXIT_FAILED, HARNESS as EXIT_HARNESS, INTERRUPTED as EXIT_INTERRUPTED, INVALID as EXIT_INVALID};

const LIVE_HELP: &str = "\
Runs a scenario that says `live = true` against real processes on this machine: `redflag-sim
serve` (the server model, its database in a file), `redflag-sim proxy` (the fault proxy) and
one `redflag-agent` process per agent (at most 200), then applies the faults at their
wall-clock times:
  crash / restart       SIGKILL the server, the proxy or the agents (restarted when the
                        crash's duration ends, on the same port, with the same data)
  partition             proxy blackhole; with --netns a DROP rule (nft or iptables) inside the
                        agents' network namespace
  latency, loss, http_status   proxy modes (http_status on the server: the server's switch)
  slow, setup_mode, expire_tokens, revoke_refresh   the server's chaos API
Network faults must act between the agents and the proxy (the one link a live run has).
The trace has the simulation's format (t_ms: wall ms since the agents started); verdicts come
from the same checks, with a tolerance of 1s. Each agent's RSS is reported a few seconds after
it started and at the end. Every process started is stopped at the end, also on failure or
Ctrl-C. Exit codes: 0 pass, 1 an expectation failed, 2 invalid scenario or arguments (not
live, --netns without root), 3 harness error, 130 interrupted.";

/// `redflag-sim live`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = LIVE_HELP)]
pub struct LiveArgs {
    /// Scenario file with `live = true`.
    pub file: PathBuf,
    /// The agent binary (default: `redflag-agent` next to this executable).
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// Where to write the JSON Lines trace (default: a file in the system temp folder).
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Run the agents in their own network namespace behind a veth pair (root only); a
    /// partition is then a real DROP rule.
    #[arg(long)]
    pub netns: bool,
    /// Seed of the tokens and the proxy's loss choices (default: the scenario's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Why a live run stopped early.
#[derive(Debug)]
pub enum LiveError {
    /// Bad input: exit 2.
    Invalid(String),
    /// The harness failed: exit 3.
    Harness(String),
    /// SIGINT or SIGTERM: exit 130.
    Interrupted(i32),
}

impl LiveError {
    fn code(&self) -> u8 {
        match self {
            LiveError::Invalid(_) => EXIT_INVALID,
            LiveError::Harness(_) => EXIT_HARNESS,
            LiveError::Interrupted(_) => EXIT_INTERRUPTED,
        }
    }
}

fn harness(e: impl Into<String>) -> LiveError {
    LiveError::Harness(e.into())
}

/// One agent across its restarts.
#[derive(Debug, Default, Clone)]
struct AgentLife {
    config: PathBuf,
    /// The first process's PID and its RSS at [`RSS_SAMPLE_AFTER`].
    first_pid: Option<u32>,
    rss_start_kib: Option<u64>,
    rss_start_at_ms: Option<u64>,
    /// The process running at the end, and its RSS then.
    last_pid: Option<u32>,
    rss_end_kib: Option<u64>,
    starts: u32,
}

/// Ports and addresses of a run.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    server: SocketAddr,
    server_control: SocketAddr,
    proxy: SocketAddr,
    proxy_control: SocketAddr,
}

/// Everything a live run holds. Field order is drop order: processes first, then the
/// namespace, then the temporary folder.
struct Live<'a> {
    procs: Processes,
    readers: Vec<(u32, AgentLogReader)>,
    netns: Option<Netns>,
    dir: tempfile::TempDir,
    scenario: &'a Scenario,
    seed: u64,
    exe: PathBuf,
    agent_bin: PathBuf,
    addrs: Addrs,
    db_path: PathBuf,
    server_trace: PathBuf,
    proxy_trace: PathBuf,
    faults: LiveFaults,
    agents: Vec<AgentLife>,
    names: Vec<(Arc<str>, Arc<str>)>,
    records: Vec<Record>,
    collector: Arc<Mutex<Collector>>,
    origin_unix_ms: u64,
    started: Instant,
    /// The scenario's commands, queued at their times.
    commands: Vec<QueuedCommand>,
}

/// Runs `redflag-sim live`; the exit code.
pub fn main(args: LiveArgs) -> u8 {
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            match &e {
                LiveError::Invalid(m) => eprintln!("error: {m}"),
                LiveError::Harness(m) => eprintln!("harness error: {m}"),
                LiveError::Interrupted(s) => eprintln!("interrupted (signal {s}): every process this run started was stopped"),
            }
            e.code()
        }
    }
}

/// The default agent binary: `redflag-agent` next to this executable.
fn default_agent_bin() -> Result<PathBuf, LiveError> {
    let exe = std::env::current_exe().map_err(|e| harness(format!("cannot find this executable: {e}")))?;
    Ok(exe.with_file_name("redflag-agent"))
}

/// The lowest port of the kernel's ephemeral range (what `connect` and `bind(:0)` pick from).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

/// A free port on `ip`, held until the listener is dropped. Chosen below the ephemeral range:
/// while a crashed server is down, its port must not be taken as the source port of some
/// outgoing connection (the proxy's own, say), or the restart could not bind it again.
fn free_port(ip: IpAddr, salt: u32) -> Result<TcpListener, LiveError> {
    const LOWEST: u32 = 10_000;
    const ATTEMPTS_MAX: u32 = 500;
    let high = u32::from(ephemeral_low());
    if high > LOWEST + 100 {
        let span = high - LOWEST;
        let start = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(salt.wrapping_mul(7919));
        for n in 0..ATTEMPTS_MAX {
            let port = LOWEST + start.wrapping_add(n.wrapping_mul(104_729)) % span;
            if let Ok(l) = TcpListener::bind((ip, port as u16)) {
                return Ok(l);
            }
        }
    }
    TcpListener::bind((ip, 0)).map_err(|e| harness(format!("cannot find a free port on {ip}: {e}")))
}

fn run(args: &LiveArgs) -> Result<u8, LiveError> {
    let scenario = Scenario::load(&args.file).map_err(|e| LiveError::Invalid(e.to_string()))?;
    if !scenario.live {
        return Err(LiveError::Invalid(format!(
            "{} is not a live scenario: `redflag-sim live` only runs scenarios that say `live = true` at the top level (they run in wall-clock time, so keep them short). Simulate it instead: redflag-sim run {}",
            scenario.path.display(),
            scenario.path.display()
        )));
    }
    if scenario.fleet.agents > AGENTS_MAX {
        return Err(LiveError::Invalid(format!(
            "{}: live mode starts one process per agent, at most {AGENTS_MAX}; the scenario asks for {}",
            scenario.path.display(),
            scenario.fleet.agents
        )));
    }
    if scenario.duration > DURATION_MAX {
        return Err(LiveError::Invalid(format!(
            "{}: a live run lasts at most {} of wall-clock time; the scenario asks for {}",
            scenario.path.display(),
            fmt_duration(DURATION_MAX),
            fmt_duration(scenario.duration)
        )));
    }
    fault_state::check_supported(&scenario).map_err(LiveError::Invalid)?;
    let agent_bin = match &args.agent_bin {
        Some(p) => p.clone(),
        None => default_agent_bin()?,
    };
    if !agent_bin.is_file() {
        return Err(LiveError::Invalid(format!(
            "the agent binary {} is missing (or not a file): build it with cargo build --release -p redflag-agent, or pass --agent-bin PATH",
            agent_bin.display()
        )));
    }
    let netns_tools = if args.netns { Some(netns::preflight().map_err(LiveError::Invalid)?) } else { None };
    signals::install().map_err(harness)?;
    let exe = std::env::current_exe().map_err(|e| harness(format!("cannot find this executable: {e}")))?;
    let seed = args.seed.unwrap_or(scenario.seed);

    // Private (mode 0700) and removed on drop: it holds the agents' tokens.
    let dir = tempfile::Builder::new()
        .prefix("redflag-sim-live-")
        .tempdir()
        .map_err(|e| harness(format!("cannot create a temporary folder: {e}")))?;
    let netns = match netns_tools {
        Some((ip, fw, fw_bin)) => Some(Netns::create(ip, fw, fw_bin).map_err(|e| harness(format!("--netns: {e}")))?),
        None => None,
    };
    // Hold every chosen port until all are chosen, so none is picked twice.
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let proxy_ip = netns.as_ref().map_or(loopback, |n| IpAddr::V4(n.host_ip));
    let commands = scenario.command_schedule(seed);
    let held = [free_port(loopback, 0)?, free_port(loopback, 1)?, free_port(proxy_ip, 2)?, free_port(loopback, 3)?];
    let port = |i: usize| held[i].local_addr().map_err(|e| harness(format!("cannot read a bound port: {e}")));
    let addrs = Addrs { server: port(0)?, server_control: port(1)?, proxy: port(2)?, proxy_control: port(3)? };
    drop(held);

    let mut live = Live {
        procs: Processes::new(),
        readers: Vec::new(),
        db_path: dir.path().join("server-db.json"),
        server_trace: dir.path().join("server-trace.jsonl"),
        proxy_trace: dir.path().join("proxy-trace.jsonl"),
        netns,
        dir,
        scenario: &scenario,
        seed,
        exe,
        agent_bin,
        addrs,
        faults: LiveFaults::new(scenario.fleet, args.netns),
        agents: Vec::new(),
        names: (0..scenario.fleet.agents)
            .map(|i| (Arc::from(Fleet::host_name(scenario.fleet.host_of(i))), Arc::from(Fleet::agent_name(i))))
            .collect(),
        records: Vec::new(),
        collector: Collector::new(RECORDS_MAX),
        origin_unix_ms: 0,
        started: Instant::now(),
        commands,
    };
    live.prepare()?;
    live.start_server()?;
    live.start_proxy()?;
    live.origin_unix_ms = unix_now_ms();
    live.started = Instant::now();
    live.record("harness", None, SimEvent::RunStarted {
        scenario: scenario.name.clone(),
        seed,
        agents: scenario.fleet.agents,
        hosts: scenario.fleet.hosts,
    });
    for i in 0..scenario.fleet.agents {
        live.start_agent(i)?;
    }
    live.drive()?;
    let end_ms = live.now_ms();
    live.records.push(Record { t_ms: end_ms, host: Arc::from("harness"), agent: None, event: TraceEvent::Sim(SimEvent::RunEnded) });
    for i in 0..scenario.fleet.agents {
        let pid = live.procs.pids(Role::Agent(i)).first().copied();
        let a = &mut live.agents[i as usize];
        a.last_pid = pid;
        a.rss_end_kib = pid.and_then(processes::rss_kib);
    }
    let wall = live.started.elapsed();
    live.procs.stop_all(STOP_GRACE);
    let (records, counts) = live.collect(end_ms)?;
    Ok(live.judge_and_report(args, records, counts, wall))
}

/// Trace lines by source, for the report.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    harness: usize,
    agents: usize,
    server: usize,
    proxy: usize,
    skipped: usize,
    dropped: usize,
}

impl Live<'_> {
    fn now_ms(&self) -> u64 {
        unix_now_ms().saturating_sub(self.origin_unix_ms)
    }

    fn record(&mut self, host: &str, agent: Option<&Arc<str>>, event: SimEvent) {
        let t_ms = self.now_ms();
        self.records.push(Record { t_ms, host: Arc::from(host), agent: agent.cloned(), event: TraceEvent::Sim(event) });
    }

    fn interrupted(&self) -> Result<(), LiveError> {
        match signals::received() {
            Some(s) => Err(LiveError::Interrupted(s)),
            None => Ok(()),
        }
    }

    /// The server database with every agent's initial tokens, and one config file per agent.
    fn prepare(&mut self) -> Result<(), LiveError> {
        let db = ServerDb::open(&self.db_path, seed::server_db(self.seed)).map_err(harness)?;
        let url = format!("http://{}", self.addrs.proxy);
        for i in 0..self.scenario.fleet.agents {
            let (token, refresh) = initial_tokens(self.seed, i);
            db.register(&Fleet::agent_name(i), &token, &refresh);
            let state_dir = self.dir.path().join(format!("agent-{i}-state"));
            let config = self.scenario.agent_config_json(i, self.seed, &url, &state_dir.to_string_lossy());
            let bytes = serde_json::to_vec_pretty(&config).map_err(|e| harness(format!("cannot encode a config: {e}")))?;
            let path = self.dir.path().join(format!("agent-{i}.json"));
            redflag_agent::store::write_atomic(&path, &bytes, 0o600).map_err(harness)?;
            self.agents.push(AgentLife { config: path, ..AgentLife::default() });
        }
        Ok(())
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File, LiveError> {
        let path = self.dir.path().join(name);
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| harness(format!("cannot open {}: {e}", path.display())))
    }

    /// The last lines of a process log in the temporary folder, for error messages.
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn start_server(&mut self) -> Result<(), LiveError> {
        let modes = serde_json::to_string(&self.faults.server_modes()).map_err(|e| harness(e.to_string()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.addrs.server.to_string())
            .arg("--control")
            .arg(self.addrs.server_control.to_string())
            .arg("--data")
            .arg(&self.db_path)
            .arg("--trace")
            .arg(&self.server_trace)
            .arg("--seed")
            .arg(seed::server_db(self.seed).to_string())
            .arg("--modes")
            .arg(modes)
            .arg("--delivery")
            .arg(self.scenario.delivery.mode.as_str())
            .arg("--redeliver-after")
            .arg(format!("{}ms", self.scenario.delivery.redeliver_after.as_millis()))
            .arg("--commands-per-answer")
            .arg(self.scenario.delivery.commands_per_answer.to_string())
            .args(server_process::capacity_args(self.scenario.server.capacity.as_ref()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("server.log")?);
        self.procs.spawn(Role::Server, cmd).map_err(|e| harness(format!("cannot start {} serve: {e}", self.exe.display())))?;
        self.wait_ready(Role::Server, self.addrs.server_control, "/modes", "server.log")
    }

    fn start_proxy(&mut self) -> Result<(), LiveError> {
        let mode = serde_json::to_string(&self.faults.proxy_mode()).map_err(|e| harness(e.to_string()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("proxy")
            .arg("--listen")
            .arg(self.addrs.proxy.to_string())
            .arg("--upstream")
            .arg(self.addrs.server.to_string())
            .arg("--control")
            .arg(self.addrs.proxy_control.to_string())
            .arg("--trace")
            .arg(&self.proxy_trace)
            .arg("--seed")
            .arg(seed::proxy(self.seed).to_string())
            .arg("--mode")
            .arg(mode)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_file("proxy.log")?);
        self.procs.spawn(Role::Proxy, cmd).map_err(|e| harness(format!("cannot start {} proxy: {e}", self.exe.display())))?;
        self.wait_ready(Role::Proxy, self.addrs.proxy_control, "/mode", "proxy.log")
    }

    /// Waits until the process answers its control API (it binds its service port first).
    fn wait_ready(&mut self, role: Role, control: SocketAddr, path: &str, log: &str) -> Result<(), LiveError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.interrupted()?;
            self.check_children()?;
            if !self.procs.is_running(role) {
                return Err(harness(format!("the {role} process is gone before it was ready; its log: {}", self.log_tail(log))));
            }
            if request_ok(control, "GET", path, None, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(harness(format!(
                    "the {role} process did not answer on {control} within {}s; its log: {}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(log)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn start_agent(&mut self, i: u32) -> Result<(), LiveError> {
        let life = &self.agents[i as usize];
        let mut cmd = match &self.netns {
            Some(ns) => ns.command(&self.agent_bin),
            None => Command::new(&self.agent_bin),
        };
        if !self.commands.is_empty() {
            let delay_ms = self.scenario.workload.execution_time.as_millis().to_string();
            cmd.env(redflag_agent::commands::runner::TEST_COMMAND_DELAY_ENV, delay_ms);
        }
        cmd.arg("--config")
            .arg(&life.config)
            .args(["--log-format", "json", "--log-level", "debug"])
            .env("RUST_LOG", AGENT_RUST_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = self
            .procs
            .spawn(Role::Agent(i), cmd)
            .map_err(|e| harness(format!("cannot start {}: {e}", self.agent_bin.display())))?;
        let pid = child.id();
        let stderr = child.stderr.take().ok_or_else(|| harness("the agent's stderr was not piped"))?;
        let (host, agent) = self.names[i as usize].clone();
        let reader = AgentLogReader::spawn(stderr, host, agent, self.origin_unix_ms, self.collector.clone())
            .map_err(|e| harness(format!("cannot start a log reader thread: {e}")))?;
        self.readers.push((i, reader));
        let life = &mut self.agents[i as usize];
        life.starts += 1;
        life.first_pid.get_or_insert(pid);
        Ok(())
    }

    /// Notices processes that exited by themselves: the server or the proxy is a harness
    /// failure; an agent's exit is a `loop_ended` in the trace (its loop must never end).
    fn check_children(&mut self) -> Result<(), LiveError> {
        for (role, pid, status) in self.procs.reap_exited() {
            match role {
                Role::Server | Role::Proxy => {
                    let log = if role == Role::Server { "server.log" } else { "proxy.log" };
                    return Err(harness(format!("the {role} process (pid {pid}) exited by itself ({status}); its log: {}", self.log_tail(log))));
                }
                Role::Agent(i) => {
                    let last = self
                        .readers
                        .iter()
                        .rev()
                        .find(|(n, _)| *n == i)
                        .map(|(_, r)| {
                            let deadline = Instant::now() + Duration::from_millis(500);
                            while !r.is_finished() && Instant::now() < deadline {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            r.last_lines()
                        })
                        .unwrap_or_default();
                    let reason = format!("the redflag-agent process (pid {pid}) exited by itself ({status}); last log lines: {last}");
                    let (host, agent) = self.names[i as usize].clone();
                    self.record(&host, Some(&agent), SimEvent::LoopEnded { reason });
                }
            }
        }
        Ok(())
    }

    fn agents_on(&self, host: u32) -> Vec<u32> {
        (0..self.scenario.fleet.agents).filter(|i| self.scenario.fleet.host_of(*i) == host).collect()
    }

    fn carry_out(&mut self, effects: Vec<Effect>) -> Result<(), LiveError> {
        for effect in effects {
            match effect {
                Effect::Record { host, event } => self.record(&host, None, event),
                Effect::Kill(Proc::Server) => self.procs.kill(Role::Server),
                Effect::Kill(Proc::Proxy) => self.procs.kill(Role::Proxy),
                Effect::Kill(Proc::AgentHost(h)) => {
                    for i in self.agents_on(h) {
                        self.procs.kill(Role::Agent(i));
                    }
                }
                Effect::Start(Proc::Server) => self.start_server()?,
                Effect::Start(Proc::Proxy) => self.start_proxy()?,
                Effect::Start(Proc::AgentHost(h)) => {
                    for i in self.agents_on(h) {
                        self.start_agent(i)?;
                    }
                }
                Effect::ServerModes(spec) => {
                    let body = serde_json::to_string(&spec).map_err(|e| harness(e.to_string()))?;
                    request_ok(self.addrs.server_control, "PUT", "/modes", Some(&body), CONTROL_TIMEOUT).map_err(harness)?;
                }
                Effect::ProxyMode(spec) => {
                    let body = serde_json::to_string(&spec).map_err(|e| harness(e.to_string()))?;
                    request_ok(self.addrs.proxy_control, "PUT", "/mode", Some(&body), CONTROL_TIMEOUT).map_err(harness)?;
                }
                Effect::ExpireTokens { server_running: true } => {
                    request_ok(self.addrs.server_control, "POST", "/expire_tokens", None, CONTROL_TIMEOUT).map_err(harness)?;
                }
                Effect::ExpireTokens { server_running: false } => {
                    // The server is down: change its database as the simulation does.
                    ServerDb::open(&self.db_path, seed::server_db(self.seed)).map_err(harness)?.expire_all_tokens();
                }
                Effect::Firewall { to_proxy, from_proxy } => {
                    let ns = self.netns.as_mut().ok_or_else(|| harness("a firewall effect without --netns"))?;
                    ns.set_drop(to_proxy, from_proxy).map_err(|e| harness(format!("--netns: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// The run itself: faults at their times until the scenario's duration has passed.
    fn drive(&mut self) -> Result<(), LiveError> {
        let schedule = self.scenario.schedule();
        let end = self.scenario.duration;
        let rss_at = RSS_SAMPLE_AFTER.min(end / 2);
        let mut rss_sampled = false;
        let mut next = 0;
        let mut next_command = 0;
        loop {
            self.interrupted()?;
            self.check_children()?;
            let now = self.started.elapsed();
            while next_command < self.commands.len() && self.commands[next_command].at <= now && self.commands[next_command].at < end {
                let c = self.commands[next_command].clone();
                self.queue_command(&c)?;
                next_command += 1;
            }
            if !rss_sampled && now >= rss_at {
                rss_sampled = true;
                let t = self.now_ms();
                for i in 0..self.scenario.fleet.agents {
                    let life = &mut self.agents[i as usize];
                    if let Some(pid) = life.first_pid.filter(|p| self.procs.pids(Role::Agent(i)).contains(p)) {
                        life.rss_start_kib = processes::rss_kib(pid);
                        life.rss_start_at_ms = Some(t);
                    }
                }
            }
            while next < schedule.len() && schedule[next].0 <= now && schedule[next].0 < end {
                let (_, phase, index) = schedule[next];
                let fault = &self.scenario.faults[index];
                let effects = match phase {
                    Phase::Apply => self.faults.apply(fault),
                    Phase::EndEarlier | Phase::EndInstant => self.faults.end(fault),
                };
                self.carry_out(effects)?;
                next += 1;
            }
            let now = self.started.elapsed();
            if now >= end {
                return Ok(());
            }
            let mut due = end;
            if let Some((t, _, _)) = schedule.get(next) {
                due = due.min(*t);
            }
            if let Some(c) = self.commands.get(next_command) {
                due = due.min(c.at);
            }
            if !rss_sampled {
                due = due.min(rss_at);
            }
            std::thread::sleep(due.saturating_sub(now).min(POLL));
        }
    }

    /// Queues one of the scenario's commands: through the server's control API, or straight
    /// into its database file while it is down (as the simulation queues into its database).
    /// Recorded as `command_queued` when the database took it.
    fn queue_command(&mut self, c: &QueuedCommand) -> Result<(), LiveError> {
        let agent = Fleet::agent_name(c.agent);
        let queued = if self.procs.is_running(Role::Server) {
            let body = json!({ "agent_id": agent, "id": c.id, "type": c.kind, "params": c.params }).to_string();
            match super::control_client::request(self.addrs.server_control, "POST", "/commands", Some(&body), CONTROL_TIMEOUT) {
                Ok((200, _)) => true,
                Ok((409, _)) => false,
                Ok((status, answer)) => return Err(harness(format!("cannot queue command {}: the server answered {status}: {answer}", c.id))),
                Err(e) => return Err(harness(format!("cannot queue command {}: {e}", c.id))),
            }
        } else {
            let db = ServerDb::open(&self.db_path, seed::server_db(self.seed)).map_err(harness)?;
            db.queue_command(&agent, redflag_agent::server::protocol::Command { id: c.id.clone(), kind: c.kind.clone(), params: c.params.clone() })
        };
        if queued {
            let (_, name) = self.names[c.agent as usize].clone();
            self.record("harness", Some(&name), SimEvent::CommandQueued { id: c.id.clone(), kind: c.kind.clone() });
        } else {
            eprintln!("warning: the server refused command {} for {agent}", c.id);
        }
        Ok(())
    }

    /// Every observation, merged in time order, before `end_ms` (then `run_ended`).
    fn collect(&mut self, end_ms: u64) -> Result<(Vec<Record>, Counts), LiveError> {
        let deadline = Instant::now() + READERS_DRAIN_MAX;
        for (_, r) in std::mem::take(&mut self.readers) {
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if r.is_finished() {
                r.join();
            }
        }
        let (agent_records, dropped) = {
            let mut c = self.collector.lock().unwrap_or_else(|p| p.into_inner());
            (c.take(), c.dropped)
        };
        let server = trace_file::read(&self.server_trace, self.origin_unix_ms, RECORDS_MAX).map_err(harness)?;
        let proxy = trace_file::read(&self.proxy_trace, self.origin_unix_ms, RECORDS_MAX).map_err(harness)?;
        let counts = Counts {
            harness: self.records.len(),
            agents: agent_records.len(),
            server: server.records.len(),
            proxy: proxy.records.len(),
            skipped: server.skipped + proxy.skipped,
            dropped: dropped + server.dropped + proxy.dropped,
        };
        let mut records = std::mem::take(&mut self.records);
        records.extend(agent_records);
        records.extend(server.records);
        records.extend(proxy.records);
        // What happens while the processes are being stopped is not part of the scenario.
        records.retain(|r| r.t_ms < end_ms || matches!(r.event, TraceEvent::Sim(SimEvent::RunEnded)));
        records.sort_by_key(|r| r.t_ms);
        Ok((records, counts))
    }

    fn judge_and_report(&self, args: &LiveArgs, records: Vec<Record>, counts: Counts, wall: Duration) -> u8 {
        let scenario = self.scenario;
        let result = RunResult::judged(scenario, self.seed, records, TOLERANCE, wall);
        let trace_path = args.trace.clone().unwrap_or_else(|| {
            std::env::temp_dir().join("redflag-sim").join(format!("{}-live-seed-{}.jsonl", scenario.name, self.seed))
        });
        let written = write_jsonl_file(&trace_path, &result.records);
        let pids: Vec<serde_json::Value> =
            self.procs.started().iter().map(|s| json!({ "role": s.role.to_string(), "pid": s.pid })).collect();
        if args.json {
            let mut out = report::json(scenario, &result, written.as_ref().ok().map(|_| trace_path.to_string_lossy()).as_deref());
            out["live"] = json!({
                "tolerance_ms": TOLERANCE.as_millis() as u64,
                "agent_bin": self.agent_bin.display().to_string(),
                "network": self.netns.as_ref().map_or("loopback".to_string(), |n| n.describe()),
                "netns": self.netns.as_ref().map(|n| n.name.clone()),
                "agents": self.agents.iter().enumerate().map(|(i, a)| json!({
                    "agent": Fleet::agent_name(i as u32),
                    "first_pid": a.first_pid,
                    "rss_start_kib": a.rss_start_kib,
                    "rss_start_at_ms": a.rss_start_at_ms,
                    "last_pid": a.last_pid,
                    "rss_end_kib": a.rss_end_kib,
                    "starts": a.starts,
                })).collect::<Vec<_>>(),
                "processes": pids,
                "trace_lines": { "harness": counts.harness, "agents": counts.agents, "server": counts.server, "proxy": counts.proxy, "skipped": counts.skipped, "dropped": counts.dropped },
                "repro": format!("redflag-sim live {}", scenario.path.display()),
            });
            println!("{out}");
        } else {
            print!("{}", report::text(scenario, &result));
            print!("{}", self.live_section(&counts));
            match &written {
                Ok(()) => println!("trace:  {} ({} lines)", trace_path.display(), result.records.len()),
                Err(e) => println!("trace:  not written: {e}"),
            }
        }
        if let Err(e) = written {
            eprintln!("harness error: {e}");
            return EXIT_HARNESS;
        }
        if result.as_expected() { 0 } else { EXIT_FAILED }
    }

    fn live_section(&self, counts: &Counts) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let network = self.netns.as_ref().map_or("loopback".to_string(), |n| format!("network namespace {}", n.describe()));
        let _ = writeln!(out, "\nlive");
        let _ = writeln!(
            out,
            "  {} redflag-agent process(es) ({}), proxy and server on {network}; checks judged with a tolerance of {}",
            self.scenario.fleet.agents,
            self.agent_bin.display(),
            fmt_duration(TOLERANCE)
        );
        for (i, a) in self.agents.iter().enumerate() {
            let start = match (a.rss_start_kib, a.rss_start_at_ms) {
                (Some(k), Some(t)) => format!("{} at {}", processes::fmt_kib(k), report::clock_time(t)),
                _ => "not measured (not running then)".into(),
            };
            let end = match a.rss_end_kib {
                Some(k) => processes::fmt_kib(k),
                None => "not measured (not running)".into(),
            };
            let delta = match (a.rss_start_kib, a.rss_end_kib, a.first_pid == a.last_pid) {
                (Some(s), Some(e), true) => format!(" ({:+} KiB)", e as i64 - s as i64),
                (Some(_), Some(_), false) => " (a later process)".into(),
                _ => String::new(),
            };
            let _ = writeln!(out, "  {:<9} RSS {start}; at the end {end}{delta}; {} start(s)", Fleet::agent_name(i as u32), a.starts);
        }
        let _ = writeln!(
            out,
            "  trace lines: {} agent, {} server, {} proxy, {} harness{}",
            counts.agents,
            counts.server,
            counts.proxy,
            counts.harness,
            if counts.skipped + counts.dropped > 0 { format!(" ({} unreadable, {} over the limit)", counts.skipped, counts.dropped) } else { String::new() }
        );
        let _ = writeln!(out, "  processes started: {} (all stopped)", self.procs.started().len());
        let _ = writeln!(out, "live repro: redflag-sim live {}", self.scenario.path.display());
        out
    }
}

