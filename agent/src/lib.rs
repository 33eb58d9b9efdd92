//! `redflag-agent`: a RedFlag update-agent check-in loop that never gives up.
//!
//! The crate is split the way quinn splits quinn-proto from quinn:
//!
//! * [`resilience`] is the pure core (backoff, breaker, classification, Retry-After). No I/O.
//! * [`checkin`] is the I/O shell: the loop that drives the core with `tokio::time`, generic over
//!   a [`transport::Transport`] and a [`store::Store`] so the simulation harness can run it
//!   unchanged over turmoil.
//! * [`config`], [`protocol`], [`transport`], [`store`], [`events`] and [`secret`] are the pieces
//!   the loop is built from; [`config_rewrite`] writes a renewed token back, [`file_read`] reads
//!   operator-given files safely, [`rfc3339`] reads timestamps with offsets.
//! * [`service`] is the `run` command (start-up checks, [`signals`], reloads), [`logging`] and
//!   [`log_writer`] its log output; `main.rs` is the command line.

pub mod checkin;
pub mod commands;
pub mod config;
pub mod config_rewrite;
pub mod events;
pub mod file_read;
pub mod log_writer;
pub mod logging;
pub mod protocol;
pub mod resilience;
pub mod rfc3339;
pub mod secret;
pub mod service;
pub mod signals;
pub mod store;
pub mod transport;
