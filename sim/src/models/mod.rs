//! What the agents talk to, modelled: the RedFlag server (`server/`) and the nginx-like proxy
//! in front of it (`proxy.rs`). Both are written against `net::Net`, so the code judged in
//! simulation is the code that runs on real sockets in live mode.

pub mod baselines;
pub mod proxy;
pub mod server;
