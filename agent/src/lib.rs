//! `redflag-agent`: a RedFlag update-agent check-in loop that never gives up.
//!
//! The crate is split the way quinn splits quinn-proto from quinn: a pure core that decides, and
//! a thin shell that performs I/O. Folders by role; imports point one way, from the top of this
//! list to the bottom (a folder never imports one above it):
//!
//! * [`cli`]: the binary's commands: `run` (start-up checks, signals, reloads) and `register`.
//! * [`checkin`]: the check-in loop, the driver that awaits and hands answers to the parts below.
//! * [`commands`]: commands the server sends: their types, the heartbeat (rapid polling), the
//!   durable journal and result outbox, and the runner that executes one.
//! * [`host`]: the machine: wall clock, system metrics, identity.
//! * [`store`]: what outlives the process: atomic writes, the status file, the token write-back.
//! * [`config`]: the JSON config file, its limits and validation; reading operator-given files.
//! * [`server`]: the RedFlag API: protocol types, the `Transport` trait and its reqwest
//!   implementation, timestamps, secrets.
//! * [`log`]: the events the loop reports, the observer hook, the log format and writer.
//! * [`resilience`]: the pure core (backoff, breaker, classification, Retry-After, policy). No
//!   I/O, no clock reads.
//!
//! `main.rs` is the command line.

pub mod checkin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod host;
pub mod log;
pub mod resilience;
pub mod server;
pub mod store;
