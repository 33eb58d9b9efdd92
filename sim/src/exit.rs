//! The exit codes every `redflag-sim` command shares, in one place so that `run`, `sweep`,
//! `live`, `serve` and `proxy` cannot drift apart.

/// Every expectation held (or a service stopped cleanly).
pub const OK: u8 = 0;
/// An expectation failed.
pub const FAILED: u8 = 1;
/// An invalid scenario or invalid arguments.
pub const INVALID: u8 = 2;
/// The harness itself failed: a bug, or the machine refused something (ports, processes).
pub const HARNESS: u8 = 3;
/// Interrupted by SIGINT or SIGTERM (128 + SIGINT, the shell's convention).
pub const INTERRUPTED: u8 = 130;
