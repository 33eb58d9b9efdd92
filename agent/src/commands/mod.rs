//! Commands the server queues for the agent, and how none is lost or run twice: what each
//! command type means (`kinds.rs`), the heartbeat it may switch on (`heartbeat.rs`), the durable
//! record of every command (`journal.rs`), the durable queue of results (`outbox.rs`), and what
//! runs a command (`runner.rs`).

pub mod heartbeat;
pub mod journal;
pub mod kinds;
pub mod outbox;
pub mod runner;
