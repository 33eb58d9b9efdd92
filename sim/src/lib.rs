//! `redflag-sim`: the deterministic simulation and chaos harness for the RedFlag agent.
//!
//! It runs the agent's own check-in loop (`redflag_agent::checkin`) unchanged inside turmoil
//! simulations, applies the faults a scenario file describes, and judges the scenario's
//! expectations from the run's trace. Layout, one concept per file:
//!
//! * `scenario.rs`: the TOML scenario schema and its validation (errors name word and line).
//! * `world.rs`: builds the turmoil world (server, proxy, agent hosts) and steps it, applying
//!   faults at their simulated times.
//! * `server_model.rs`: the RedFlag server model (axum), its persistent "database" and its
//!   chaos modes.
//! * `proxy.rs`: the nginx-like reverse proxy (502 on refused upstream, 504 on timeout) and its
//!   fault modes.
//! * `net.rs`: the socket layer those models and the hyper transport are generic over (turmoil
//!   in simulation, tokio on real sockets in live mode).
//! * `hyper_transport.rs`: the agent `Transport` over hyper, used inside turmoil.
//! * `trace.rs`: the JSON Lines trace; `checks.rs`: the expectations, judged from the trace.
//! * `report.rs`: the timeline and verdicts printed after a run; `sweep.rs`: many seeds at once.
//! * `runner.rs`: one run end to end (simulate, then judge).
//! * `seed.rs`: every seed in a run, derived from the run's one seed.
//! * `clock.rs`: virtual time inside the simulation, real time outside; `exit.rs`: exit codes.
//! * `live/`: the live chaos mode (`serve`, `proxy`, `live`): the same scenarios against real
//!   processes, sockets and kills.

pub mod checks;
pub mod clock;
pub mod exit;
pub mod hyper_transport;
pub mod live;
pub mod net;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod seed;
pub mod server_model;
pub mod sweep;
pub mod trace;
pub mod world;
