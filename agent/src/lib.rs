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
//! * [`journal`], [`outbox`] and [`runner`] are how commands are never lost or run twice: the
//!   durable record of every command, the durable queue of results, and what runs a command.

pub mod checkin;
pub mod commands;
pub mod config;
pub mod events;
pub mod journal;
pub mod logging;
pub mod outbox;
pub mod protocol;
pub mod resilience;
pub mod runner;
pub mod secret;
pub mod store;
pub mod transport;
