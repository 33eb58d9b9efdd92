//! Talking to a RedFlag server:
//!
//! * `protocol.rs`: the v1 agent API's paths, request bodies and answer parsing;
//! * `transport.rs`: the [`transport::Transport`] trait and its reqwest implementation;
//! * `exchange.rs`: the one place the loop sends requests (credentials, timeout, request events);
//! * `answers.rs`: what each answer means to the loop (pure rules: bare 404s, renewal, results);
//! * `rfc3339.rs`: the server's timestamps, in any offset; `secret.rs`: tokens that never print.

pub mod answers;
pub mod exchange;
pub mod protocol;
pub mod rfc3339;
pub mod secret;
pub mod transport;
