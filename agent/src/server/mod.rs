//! Talking to a RedFlag server: the v1 agent API's paths and bodies (`protocol.rs`), the
//! [`transport::Transport`] trait and its reqwest implementation (`transport.rs`), the server's
//! timestamps (`rfc3339.rs`), and the token type that never prints (`secret.rs`).

pub mod protocol;
pub mod rfc3339;
pub mod secret;
pub mod transport;
