//! The simulated world: builds a turmoil simulation from a scenario and steps it to the end,
//! applying and reverting faults at their simulated times (`faults.rs`).
//!
//! Hosts: `server` (the RedFlag server model), `proxy` (the nginx-like proxy in front of it)
//! and `agents-0` .. `agents-{hosts-1}`, each running its share of the fleet's agent loops,
//! dealt round-robin. Every agent is the production `CheckinLoop`, unchanged, over the
//! hyper-over-turmoil transport, with its own config, tokens and seeded RNG.
//!
//! What survives a crash is what would survive one in reality: the server's database and each
//! agent's disk (its config file's renewed token, its command journal and result outbox) live
//! outside the host closures; everything inside a host (open connections, rate-limit windows,
//! loop state, a command half-run) starts afresh when it restarts.
//!
//! Commands: the scenario's `[[commands]]` and `[workload]` become one list
//! (`Scenario::command_schedule`), queued at the server's database between steps at their
//! simulated times, each recorded as `command_queued`; agents run them with `SimRunner`
//! (`command_runner.rs`).
//!
//! A crashed host is modelled as a dead *process* on a live machine (`kill -9`): its software is
//! replaced by one that serves nothing, so every connection to it fails at once and the proxy
//! answers 502, as nginx does. A dead machine or a cut cable is a `partition`.
//!
//! Why "fails at once" is an accepted-then-closed connection rather than a refused one: turmoil
//! 0.7.2 never frees the client socket (and its ephemeral port) of a connect that is refused or
//! cancelled, so a proxy probing a dead server every few seconds for a day would run out of
//! ports. Accepting and closing reaches the same end (the proxy's upstream request fails
//! immediately, the proxy answers 502) without the leak. Connects that time out in a partition
//! still leak one port each, which is why the ephemeral port range is widened below.
//!
//! Determinism: one seed feeds turmoil's RNG, the server's token generator, the proxy's loss
//! RNG and every agent's RNG; the epoch is fixed; faults apply between steps, in file order.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use redflag_agent::checkin::{CheckinLoop, Host, Io, Settings};
use redflag_agent::log::events::{Event, Observer};
use redflag_agent::server::protocol::{Command, Metrics};
use redflag_agent::server::secret::Secret;
use redflag_agent::store::{Status, Store};
use turmoil::Sim;

mod command_runner;
mod faults;

pub use command_runner::SimRunner;

use crate::clock::{self, SIM_EPOCH_UNIX_SECONDS};
use faults::FaultState;
use crate::net::hyper_transport::HyperTransport;
use crate::net::{Net, TurmoilNet};
use crate::models::proxy::{PROXY_PORT, ProxyControl, run_proxy};
use crate::seed;
use crate::scenario::{Capacity, Fleet, Phase, Scenario, StrategyName};
use crate::models::baselines;
use crate::models::server::{SERVER_PORT, ServerDb, ServerModes, run_server_with};
use crate::trace::{Record, SimEvent, TraceEvent, TraceSink};

/// The simulation tick when the scenario sets none: fine enough that link latencies and
/// sub-second delays keep their shape, coarse enough that long runs stay fast.
pub const DEFAULT_TICK: Duration = Duration::from_millis(10);
/// Runs longer than this get a coarser default tick (100 ms): a 24-hour outage does not need
/// 10 ms resolution to judge a 30 s recovery.
pub const LONG_RUN: Duration = Duration::from_secs(2 * 3600);
pub const LONG_RUN_TICK: Duration = Duration::from_millis(100);
/// Link latency between any two hosts when no fault says otherwise (uniform-ish in this range).
pub const LINK_LATENCY_MIN: Duration = Duration::from_millis(1);
pub const LINK_LATENCY_MAX: Duration = Duration::from_millis(20);
/// Turmoil's per-socket message buffers and listen backlog. Large enough for a 1,000-agent
/// fleet's burst of connections in one tick.
pub const TCP_CAPACITY: usize = 1 << 16;
/// Agents start spread over this window (or their check-in interval, if shorter), so a fleet
/// does not open every connection in the same tick.
pub const START_SPREAD_MAX: Duration = Duration::from_secs(10);
/// Every port above the well-known ones is ephemeral (see the module comment on leaks).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

/// The tick a scenario runs with.
pub fn tick_for(scenario: &Scenario) -> Duration {
    scenario.tick.unwrap_or(if scenario.duration > LONG_RUN { LONG_RUN_TICK } else { DEFAULT_TICK })
}

/// A turmoil builder with the world's network: tick, seed, fixed epoch, link latency, socket
/// capacity and ephemeral ports. (The benches build their bare baseline on the same network.)
pub fn turmoil_builder(duration: Duration, tick: Duration, seed: u64) -> turmoil::Builder {
    let mut builder = turmoil::Builder::new();
    builder
        .simulation_duration(duration + Duration::from_secs(3600))
        .tick_duration(tick)
        .rng_seed(seed)
        .epoch(clock::sim_epoch())
        .tcp_capacity(TCP_CAPACITY)
        .ephemeral_ports(EPHEMERAL_PORTS)
        .min_message_latency(LINK_LATENCY_MIN)
        .max_message_latency(LINK_LATENCY_MAX);
    builder
}

/// When agent `index` starts in a run with `seed`: spread over its check-in interval, at most
/// [`START_SPREAD_MAX`], so a fleet does not open every connection in the same tick.
pub fn start_delay(seed: u64, index: u32, check_in_interval: Duration) -> Duration {
    start_delay_within(seed, index, check_in_interval.min(START_SPREAD_MAX))
}

/// When agent `index` starts when the fleet starts spread over `spread` (`[fleet] start_spread`).
pub fn start_delay_within(seed: u64, index: u32, spread: Duration) -> Duration {
    spread.mul_f64(seed::start_fraction(seed, index))
}

/// Runs `scenario` with `seed` to its end, handing every line of the trace to `on_line` in
/// trace order as the run goes (see [`TraceSink::drain_before`]): after each step, the lines
/// older than the simulation's time. Returns the number of steps.
pub fn run(scenario: &Scenario, seed: u64, on_line: &mut dyn FnMut(Record)) -> Result<u64, String> {
    let tick = tick_for(scenario);
    let mut sim = turmoil_builder(scenario.duration, tick, seed).build();

    let trace = TraceSink::new(SIM_EPOCH_UNIX_SECONDS * 1000);
    let world = Shared::new(scenario, seed, trace.clone());
    register_hosts(&world, &mut sim);
    trace.record_at(
        0,
        &world.names.harness,
        None,
        TraceEvent::Sim(SimEvent::RunStarted {
            scenario: scenario.name.clone(),
            seed,
            agents: scenario.fleet.agents,
            hosts: scenario.fleet.hosts,
        }),
    );

    let mut faults = FaultState::new(scenario);
    let schedule = scenario.schedule();
    let commands = scenario.command_schedule(seed);
    let mut next_command = 0;
    let mut next = 0;
    let mut steps = 0u64;
    let mut lines = Vec::new();
    let end_ms = ms(scenario.duration);
    while sim.elapsed() < scenario.duration {
        let now = sim.elapsed();
        while next_command < commands.len() && commands[next_command].at <= now {
            queue_command(&world, &commands[next_command], ms(now));
            next_command += 1;
        }
        while next < schedule.len() && schedule[next].0 <= now {
            let (_, phase, index) = schedule[next];
            let fault = &scenario.faults[index];
            let t_ms = ms(now);
            match phase {
                Phase::Apply => faults.apply(&mut sim, &world, fault, t_ms),
                Phase::EndEarlier | Phase::EndInstant => faults.end(&mut sim, &world, fault, t_ms),
            }
            next += 1;
        }
        sim.step().map_err(|e| format!("simulation error at {}ms: {e}", ms(sim.elapsed())))?;
        steps += 1;
        // Every later line is at least this old: hosts' clocks start the next step here, the
        // world records faults and commands at it, and the run's end line at `end_ms`.
        trace.drain_before(ms(sim.elapsed()).min(end_ms), &mut lines);
        lines.drain(..).for_each(&mut *on_line);
    }
    trace.record_at(end_ms, &world.names.harness, None, TraceEvent::Sim(SimEvent::RunEnded));
    drop(sim);
    trace.drain_before(u64::MAX, &mut lines);
    lines.drain(..).for_each(&mut *on_line);
    match trace.late() {
        0 => Ok(steps),
        late => Err(format!(
            "{late} trace line(s) arrived after newer lines had been written (a harness bug: the trace would not be in time order)"
        )),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Queues one of the scenario's commands at the server's database (which survives crashes, so
/// the server need not be up) and records it when the database took it.
fn queue_command(world: &Shared, c: &crate::scenario::QueuedCommand, t_ms: u64) {
    let agent = &world.names.agents[c.agent as usize];
    let command = Command { id: c.id.clone(), kind: c.kind.clone(), params: c.params.clone() };
    if world.db.queue_command(agent, command) {
        let event = SimEvent::CommandQueued { id: c.id.clone(), kind: c.kind.clone() };
        world.trace.record_at(t_ms, &world.names.harness, Some(agent), TraceEvent::Sim(event));
    }
}

/// Interned names, so trace lines share their strings.
struct Names {
    harness: Arc<str>,
    server: Arc<str>,
    proxy: Arc<str>,
    hosts: Vec<Arc<str>>,
    agents: Vec<Arc<str>>,
}

/// What the world keeps outside the hosts: it survives crashes.
struct Shared {
    names: Names,
    trace: TraceSink,
    db: ServerDb,
    modes: ServerModes,
    proxy: ProxyControl,
    /// Hosts whose software is "dead" (crashed and not yet restarted).
    down: Rc<RefCell<BTreeMap<String, u32>>>,
    agents: Vec<Rc<AgentSlot>>,
    /// How agents run commands.
    runner: SimRunner,
    /// Where every agent's transport connects (`http://proxy`).
    server_url: String,
    seed: u64,
    fleet: Fleet,
    /// `[agent] strategy`: who decides when agents retry.
    strategy: StrategyName,
    /// `[server]` capacity (`None`: unlimited).
    capacity: Option<Capacity>,
}

/// One agent's life across host restarts: its settings, its "disk", its restart count.
struct AgentSlot {
    index: u32,
    /// As read from its config file at start-up (the token is replaced by a renewed one).
    settings: Settings,
    /// Its config file's `token` as last rewritten: a renewed token survives a host crash.
    saved_token: Rc<RefCell<Option<Secret>>>,
    /// Its `state_dir` files (journal, outbox) by name: they survive a host crash too.
    files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
    generation: Cell<u64>,
    start_delay: Duration,
}

/// An agent's disk: the config file's token and the state files (journal, outbox), each write
/// whole, as the agent's atomic writes are. The status file is for `redflag-agent status`;
/// nothing in a simulation reads it, so it is not kept.
struct DiskStore {
    token: Rc<RefCell<Option<Secret>>>,
    files: Rc<RefCell<BTreeMap<String, Vec<u8>>>>,
}

impl Store for DiskStore {
    fn save_token(&mut self, token: &Secret) -> Result<(), String> {
        *self.token.borrow_mut() = Some(token.clone());
        Ok(())
    }

    fn save_status(&mut self, _status: &Status) -> Result<(), String> {
        Ok(())
    }

    fn load_state(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.files.borrow().get(name).cloned())
    }

    fn save_state(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.files.borrow_mut().insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn quarantine_state(&mut self, name: &str) -> Result<String, String> {
        let mut files = self.files.borrow_mut();
        let bytes = files.remove(name).ok_or_else(|| format!("no state file {name}"))?;
        let to = format!("{name}.corrupt");
        files.insert(to.clone(), bytes);
        Ok(to)
    }
}

/// An agent host's clock and metrics: virtual wall time, no system metrics.
struct SimHost;

impl Host for SimHost {
    fn wall_clock(&self) -> std::time::SystemTime {
        clock::wall_clock()
    }

    fn metrics(&self, _into: &mut Metrics) {}
}

/// Records an agent's events in the trace under its host and name.
struct TraceObserver {
    trace: TraceSink,
    host: Arc<str>,
    agent: Arc<str>,
}

impl Observer for TraceObserver {
    fn on_event(&mut self, event: &Event) {
        self.trace.record(&self.host, Some(&self.agent), TraceEvent::Agent(event.clone()));
    }
}

impl Shared {
    fn new(scenario: &Scenario, seed: u64, trace: TraceSink) -> Rc<Shared> {
        let fleet = scenario.fleet;
        let names = Names {
            harness: "harness".into(),
            server: "server".into(),
            proxy: "proxy".into(),
            hosts: (0..fleet.hosts).map(|h| Arc::from(Fleet::host_name(h))).collect(),
            agents: (0..fleet.agents).map(|i| Arc::from(Fleet::agent_name(i))).collect(),
        };
        let db = ServerDb::new(seed::server_db(seed));
        db.set_delivery(scenario.delivery);
        // The scenario validated the agents' config once; agents differ only in name and tokens.
        let template = Settings::from_config(&scenario.agent_config);
        let interval = scenario.agent_config.check_in_interval;
        let agents = (0..fleet.agents)
            .map(|i| {
                let (token, refresh) = crate::scenario::initial_tokens(seed, i);
                let agent_id = Fleet::agent_name(i);
                db.register(&agent_id, &token, &refresh);
                let settings = Settings {
                    agent_id,
                    token: Secret::new(token),
                    refresh_token: Secret::new(refresh),
                    ..template.clone()
                };
                Rc::new(AgentSlot {
                    index: i,
                    settings,
                    saved_token: Rc::default(),
                    files: Rc::default(),
                    generation: Cell::new(0),
                    start_delay: match scenario.start_spread {
                        Some(spread) => start_delay_within(seed, i, spread),
                        None => start_delay(seed, i, interval),
                    },
                })
            })
            .collect();
        Rc::new(Shared {
            server_url: scenario.agent_config.server_url.to_string(),
            names,
            trace,
            db,
            modes: ServerModes::default(),
            proxy: ProxyControl::new(seed::proxy(seed)),
            down: Rc::default(),
            agents,
            runner: SimRunner { execution_time: scenario.workload.execution_time },
            seed,
            fleet,
            strategy: scenario.strategy,
            capacity: scenario.server.capacity,
        })
    }

    fn is_down(&self, host: &str) -> bool {
        self.down.borrow().get(host).copied().unwrap_or(0) > 0
    }
}

/// Registers the server, the proxy and the agent hosts. Each host's software first checks
/// whether its process is "dead" (crashed and not yet restarted) and idles if so.
fn register_hosts(shared: &Rc<Shared>, sim: &mut Sim<'_>) {
    let world = shared.clone();
    sim.host("server", move || {
        let world = world.clone();
        async move {
            if world.is_down("server") {
                return dead_process(Some(SERVER_PORT)).await;
            }
            let listener = <TurmoilNet as Net>::bind(SocketAddr::from(([0, 0, 0, 0], SERVER_PORT))).await?;
            run_server_with::<TurmoilNet>(
                listener,
                world.db.clone(),
                world.modes.clone(),
                world.trace.clone(),
                world.names.server.clone(),
                world.capacity,
            )
            .await
        }
    });

    let world = shared.clone();
    sim.host("proxy", move || {
        let world = world.clone();
        async move {
            if world.is_down("proxy") {
                return dead_process(Some(PROXY_PORT)).await;
            }
            let listener = <TurmoilNet as Net>::bind(SocketAddr::from(([0, 0, 0, 0], PROXY_PORT))).await?;
            run_proxy::<TurmoilNet>(
                listener,
                "server".to_string(),
                SERVER_PORT,
                world.proxy.clone(),
                world.trace.clone(),
                world.names.proxy.clone(),
            )
            .await
        }
    });

    for h in 0..shared.fleet.hosts {
        let world = shared.clone();
        let name = Fleet::host_name(h);
        sim.host(name.as_str(), move || {
            let world = world.clone();
            async move {
                let host_name = world.names.hosts[h as usize].clone();
                if world.is_down(&host_name) {
                    return dead_process(None).await;
                }
                // Agent i runs on host i % hosts (`Fleet::host_of`): this host's agents are
                // h, h + hosts, ... (not a scan of the whole fleet per host).
                for slot in world.agents.iter().skip(h as usize).step_by(world.fleet.hosts as usize) {
                    debug_assert_eq!(world.fleet.host_of(slot.index), h);
                    spawn_agent(&world, slot.clone(), host_name.clone());
                }
                idle().await
            }
        });
    }
}

/// Software that does nothing, forever.
async fn idle() -> Result<(), Box<dyn std::error::Error>> {
    std::future::pending::<()>().await;
    Ok(())
}

/// A host whose process is dead: connections to its service port fail at once (accepted and
/// closed before a byte is read; see the module comment for why not refused).
async fn dead_process(port: Option<u16>) -> Result<(), Box<dyn std::error::Error>> {
    let Some(port) = port else { return idle().await };
    let listener = <TurmoilNet as Net>::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?;
    loop {
        let (stream, _) = <TurmoilNet as Net>::accept(&listener).await?;
        drop(stream);
    }
}

/// Starts one agent loop on the current host, with a supervisor that records in the trace if
/// the loop ever ends (it must not).
fn spawn_agent(world: &Rc<Shared>, slot: Rc<AgentSlot>, host: Arc<str>) {
    let generation = slot.generation.get() + 1;
    slot.generation.set(generation);
    let agent_name = world.names.agents[slot.index as usize].clone();
    let mut settings = slot.settings.clone();
    if let Some(token) = &*slot.saved_token.borrow() {
        settings.token = token.clone();
    }
    let transport = match HyperTransport::<TurmoilNet>::new(&world.server_url) {
        Ok(t) => t,
        Err(e) => {
            world.trace.record(&host, Some(&agent_name), TraceEvent::Sim(SimEvent::LoopEnded { reason: format!("transport: {e}") }));
            return;
        }
    };
    let rng = StdRng::seed_from_u64(seed::agent_rng(world.seed, slot.index, generation));
    let observer = TraceObserver { trace: world.trace.clone(), host: host.clone(), agent: agent_name.clone() };
    let store = DiskStore { token: slot.saved_token.clone(), files: slot.files.clone() };
    // Every strategy, the production policy included, through the same hooks: what its system
    // brings to the loop (a wait before the first check-in here; its request timeout and
    // whether the answer's rapid polling counts, in the loop).
    let strategy = baselines::build(world.strategy, &settings.policy);
    let mut start_rng = StdRng::seed_from_u64(seed::strategy_start(world.seed, slot.index, generation));
    let start_delay = slot.start_delay + strategy.first_attempt_delay(&mut start_rng);
    let io = Io { transport, store, host: SimHost, observer, runner: world.runner };
    let agent = CheckinLoop::new(settings, io, strategy, rng);
    let task = tokio::task::spawn_local(async move {
        tokio::time::sleep(start_delay).await;
        agent.run(std::future::pending()).await;
    });
    let trace = world.trace.clone();
    tokio::task::spawn_local(async move {
        let reason = match task.await {
            Ok(()) => "the loop returned".to_string(),
            Err(e) if e.is_panic() => format!("the loop panicked: {}", panic_message(e.into_panic())),
            // Cancelled: the host crashed, which is not the loop's doing.
            Err(_) => return,
        };
        trace.record(&host, Some(&agent_name), TraceEvent::Sim(SimEvent::LoopEnded { reason }));
    });
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".into()
    }
}
