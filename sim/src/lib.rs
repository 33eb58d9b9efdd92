//! `redflag-sim`: the deterministic simulation and chaos harness for the RedFlag agent.
//!
//! It runs the agent's own check-in loop (`redflag_agent::checkin`) unchanged inside turmoil
//! simulations, applies the faults a scenario file describes, and judges the scenario's
//! expectations from the run's trace. Folders by role; imports point one way,
//! `cli -> runner -> judge/world -> models/net -> scenario/trace -> redflag_agent`:
//!
//! * `scenario/`: the TOML scenario schema and its validation (errors name word and line).
//! * `world/`: builds the turmoil world (server, proxy, agent hosts) and steps it, applying
//!   faults at their simulated times (`faults.rs`).
//! * `models/`: what the agents talk to: the RedFlag server model (`server/`: the axum routes,
//!   its persistent database, its chaos switches, its rate limiter) and the nginx-like proxy.
//! * `net/`: the socket layer the models and the hyper transport are generic over (turmoil in
//!   simulation, tokio on real sockets in live mode), and the agent `Transport` over hyper.
//! * `judge/`: the expectations, judged from the trace alone (one check per file).
//! * `cli/`: what users see: the report printed after a run, the seed sweep.
//! * `explore/`: random fault schedules from a scenario's `[explore]` space, and shrinking a
//!   failing one to a minimal standalone scenario file (`redflag-sim explore`).
//! * `live/`: the live chaos mode (`serve`, `proxy`, `live`): the same scenarios against real
//!   processes, sockets and kills.
//!
//! Shared vocabulary at the top: `trace.rs` (the JSON Lines trace every part writes and the
//! judge reads), `runner.rs` (one run end to end: simulate, then judge), `seed.rs` (every seed
//! in a run, derived from its one seed), `clock.rs` (virtual time inside the simulation, real
//! time outside) and `exit.rs` (exit codes).

pub mod cli;
pub mod clock;
pub mod exit;
pub mod explore;
pub mod judge;
pub mod live;
pub mod models;
pub mod net;
pub mod runner;
pub mod scenario;
pub mod seed;
pub mod trace;
pub mod world;
