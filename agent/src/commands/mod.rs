//! Commands the server queues for the agent, and how none is lost or run twice:
//!
//! * `desk.rs`: the command desk, which owns the journal, the outbox and the acknowledgements in
//!   flight, and says (as events) what it did with each command and result;
//! * `kinds.rs`: what each command type means to this agent;
//! * `heartbeat.rs`: rapid polling, the window a heartbeat command or an answer switches on;
//! * `journal.rs`: the durable record of every command; `outbox.rs`: the durable queue of
//!   results;
//! * `runner.rs`: what runs one command.

pub mod desk;
pub mod heartbeat;
pub mod journal;
pub mod kinds;
pub mod outbox;
pub mod runner;
