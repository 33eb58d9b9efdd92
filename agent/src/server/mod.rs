//! Talking to a RedFlag server:
//!
//! * `protocol.rs`: the v1 agent API's paths, request bodies and answer parsing;
//! * `checkin_answer.rs`: the check-in answer read command by command, over the structural JSON
//!   scanner in `json_scan.rs` (one poisoned command cannot spoil the rest; a cut answer's
//!   complete commands are taken);
//! * `transport.rs`: the [`transport::Transport`] trait and its reqwest implementation;
//! * `exchange.rs`: the one place the loop sends requests (credentials, timeout, request events);
//! * `answers.rs`: what each answer means to the loop (pure rules: bare 404s, renewal, results);
//! * `rfc3339.rs`: the server's timestamps, in any offset; `secret.rs`: tokens that never print.

pub mod answers;
pub mod checkin_answer;
pub mod exchange;
pub mod json_scan;
pub mod protocol;
pub mod rfc3339;
pub mod secret;
pub mod transport;
