//! The live chaos mode: the same scenario files, judged by the same checks, but against the
//! real `redflag-agent` binary, real sockets and real process kills, in wall-clock time.
//!
//! Three commands of `redflag-sim` live here, one concept per file:
//!
//! * `serve` (`server_process.rs`): the server model on a real socket, its database in a file,
//!   and a loopback-only chaos control API.
//! * `proxy` (`proxy_process.rs`): the nginx-like fault proxy on real sockets, switched over a
//!   loopback-only HTTP control API like toxiproxy.
//! * `live` (`orchestrator.rs`): starts those two and one agent process per agent, applies the
//!   scenario's faults at their times, merges every observation into the simulation's trace
//!   format and judges it with `judge/`.
//!
//! Their parts: `modes.rs` (the control APIs' JSON), `control_http.rs` and `control_client.rs`
//! (both ends of those APIs), `service.rs` (what `serve` and `proxy` share), `trace_file.rs`
//! (their trace files), `agent_log.rs` (agents' JSON logs into trace records),
//! `fault_state.rs` (what each fault does to which process; the live twin of `world/faults.rs`),
//! `processes.rs` (children that never outlive the run), `netns.rs` (`--netns`), and `signals.rs`
//! (Ctrl-C).

pub mod agent_log;
pub mod control_client;
pub mod control_http;
pub mod fault_state;
pub mod modes;
pub mod netns;
pub mod orchestrator;
pub mod processes;
pub mod proxy_process;
pub mod server_process;
pub mod service;
pub mod signals;
pub mod trace_file;

pub use orchestrator::LiveArgs;
pub use proxy_process::ProxyArgs;
pub use server_process::ServeArgs;
