//! The check-in loop: the I/O shell around the pure `resilience` core, and the thin driver of
//! the components that do the agent's work.
//!
//! One loop per agent. It waits until the next attempt is due, asks its [`Strategy`] (in
//! production the [`Policy`]: backoff, breaker, Retry-After) whether it may go, probes
//! `GET /health` while recovering, checks in, renews the token on 401, takes the answer in, asks
//! the strategy when the next attempt is due, reports and records the attempt, then runs the
//! commands it was sent and posts results (on their own schedule) until the next check-in is
//! due, and goes round again. It returns only when its shutdown
//! future completes. Who does what:
//!
//! * `driver.rs`: the loop itself: awaiting, asking the strategy, handing answers on;
//! * `attempt.rs`: the requests of one admitted attempt (probe, check-in, renewal);
//! * `work.rs`: running journaled commands and posting results, in the time before the next
//!   check-in is due;
//! * `result_lane.rs`: when results are posted (after a check-in, on their own backoff);
//! * `status.rs`: what an attempt's end is reported as, and the status file's bookkeeping;
//! * `system_info.rs`: `POST /system-info` at start and hourly, after a successful check-in and
//!   never in the way of the next one (its schedule is pure);
//! * the components it drives: the command desk (`commands::desk`), the rapid-polling window
//!   (`commands::heartbeat`), the exchange and its answer rules (`server::exchange`,
//!   `server::answers`), and the emitter with its log budget (`log::emitter`).
//!
//! Components return events; only the driver emits them (through the emitter) and awaits. Time
//! comes from `tokio::time` only, and every `select!` is `biased;`, so the simulation harness runs
//! this exact code inside turmoil and replays it identically.

mod attempt;
mod driver;
pub mod result_lane;
pub mod status;
pub mod system_info;
mod work;

use std::time::Duration;

use rand::rngs::StdRng;

use crate::commands::desk::Desk;
use crate::commands::heartbeat::RapidPolling;
use crate::commands::runner::{CommandRunner, ProductionRunner};
use crate::config::Config;
use crate::log::emitter::Emitter;
use crate::log::events::Observer;
use crate::resilience::{Policy, PolicyConfig, Strategy};
use crate::server::exchange::{Credentials, Exchange};
use crate::server::secret::Secret;
use crate::server::transport::Transport;
use crate::store::Store;

pub use crate::host::{Host, SystemHost};

use result_lane::ResultLane;
use status::StatusBook;
use system_info::SystemInfoSchedule;

/// What the loop needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub agent_id: String,
    pub token: Secret,
    pub refresh_token: Secret,
    pub policy: PolicyConfig,
    pub request_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            agent_id: config.agent_id.clone(),
            token: config.token.clone(),
            refresh_token: config.refresh_token.clone(),
            policy: config.policy(),
            request_timeout: config.resilience.request_timeout,
        }
    }
}

/// Everything the loop touches outside itself. Production: reqwest, the config file and
/// `state_dir`, the system clock and `/proc`, no observer, the production runner. The
/// simulation: hyper over turmoil, a disk that survives simulated crashes, simulated time, its
/// trace, commands that take simulated time.
#[derive(Debug)]
pub struct Io<T, S, H, O, R = ProductionRunner> {
    pub transport: T,
    pub store: S,
    pub host: H,
    pub observer: O,
    pub runner: R,
}

/// The types of an [`Io`], so the loop names them with one parameter.
pub trait Parts {
    type Transport: Transport;
    type Store: Store;
    type Host: Host;
    type Observer: Observer;
    type Runner: CommandRunner;
    fn split(self) -> (Self::Transport, Self::Store, Self::Host, Self::Observer, Self::Runner);
}

impl<T: Transport, S: Store, H: Host, O: Observer, R: CommandRunner> Parts for Io<T, S, H, O, R> {
    type Transport = T;
    type Store = S;
    type Host = H;
    type Observer = O;
    type Runner = R;
    fn split(self) -> (T, S, H, O, R) {
        (self.transport, self.store, self.host, self.observer, self.runner)
    }
}

/// One agent's check-in loop. Build it with [`CheckinLoop::production`] (the production
/// [`Policy`]) or [`CheckinLoop::new`] (any [`Strategy`]: the simulation's baselines), then
/// [`CheckinLoop::run`] it.
pub struct CheckinLoop<IO: Parts, P = Policy> {
    agent_id: String,
    /// Decides whether an attempt may go and when the next one is due.
    strategy: P,
    exchange: Exchange<IO::Transport>,
    store: IO::Store,
    host: IO::Host,
    runner: IO::Runner,
    emitter: Emitter<IO::Observer>,
    rng: StdRng,
    /// Journal, outbox and acknowledgements (loaded when the loop starts).
    desk: Desk,
    rapid: RapidPolling,
    /// When results may be posted (their own schedule, apart from the check-ins').
    results: ResultLane,
    status: StatusBook,
    /// When the next `POST /system-info` is due (`system_info.rs`).
    system_info: SystemInfoSchedule,
    /// The last probe failed: the next attempt skips it and goes straight to the check-in.
    skip_next_probe: bool,
    /// Bare 404s on the check-in route in a row (see `server::answers`).
    bare_404_streak: u32,
}

impl<IO: Parts> CheckinLoop<IO, Policy> {
    /// The production loop: the [`Policy`] built from `settings.policy`. `rng` drives all
    /// jitter; seed it from the OS in production and from the run's seed in simulation.
    pub fn production(settings: Settings, io: IO, rng: StdRng) -> Self {
        let policy = Policy::new(settings.policy);
        CheckinLoop::new(settings, io, policy, rng)
    }
}

impl<IO: Parts, P: Strategy> CheckinLoop<IO, P> {
    /// The loop deciding with `strategy`. Every request runs under the strategy's own timeout
    /// if it brings one ([`Strategy::request_timeout`]; the [`Policy`] does not), otherwise
    /// under `settings.request_timeout`.
    pub fn new(settings: Settings, io: IO, strategy: P, rng: StdRng) -> Self {
        let (transport, store, host, observer, runner) = io.split();
        let request_timeout = strategy.request_timeout().unwrap_or(settings.request_timeout);
        let credentials =
            Credentials { agent_id: settings.agent_id.clone(), token: settings.token, refresh_token: settings.refresh_token };
        CheckinLoop {
            emitter: Emitter::new(settings.agent_id.clone(), observer),
            agent_id: settings.agent_id,
            strategy,
            exchange: Exchange::new(transport, credentials, request_timeout),
            store,
            host,
            runner,
            rng,
            desk: Desk::default(),
            rapid: RapidPolling::default(),
            results: ResultLane::new(settings.policy.backoff, settings.policy.retry_after_max),
            status: StatusBook::default(),
            system_info: SystemInfoSchedule::default(),
            skip_next_probe: false,
            bare_404_streak: 0,
        }
    }
}
