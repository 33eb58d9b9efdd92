//! The binary's long-running and one-shot commands, beyond parsing arguments (`main.rs`):
//! `run` (`run.rs`: start-up checks, the loop, reloads; `signals.rs`: SIGTERM/SIGINT/SIGHUP) and
//! `register` (`register.rs`).

pub mod register;
pub mod run;
pub mod signals;
