//! `redflag-agent`: a RedFlag update-agent check-in loop that never gives up.
//!
//! The crate is split the way quinn splits quinn-proto from quinn:
//!
//! * [`resilience`] is the pure core (backoff, breaker, classification, Retry-After). No I/O.
//! * [`checkin`] is the I/O shell: the loop that drives the core with `tokio::time`, generic over
//!   a [`transport::Transport`] and a [`store::Store`] so the simulation harness can run it
//!   unchanged over turmoil.
//! * [`config`], [`protocol`], [`transport`], [`store`], [`events`] and [`secret`] are the pieces
//!   the loop is built from; `main.rs` is the command line.
//! * [`host`] is the machine (clock, system metrics, identity), [`heartbeat`] the rapid-polling
//!   state reported to the server, [`rfc3339`] the server's local-time timestamps, and
//!   [`register`] the `register` command.

pub mod checkin;
pub mod commands;
pub mod config;
pub mod events;
pub mod heartbeat;
pub mod host;
pub mod logging;
pub mod protocol;
pub mod register;
pub mod resilience;
pub mod rfc3339;
pub mod secret;
pub mod store;
pub mod transport;
