//! What the agent says about itself:
//!
//! * `events.rs`: the [`events::Event`]s the loop reports, the [`events::Observer`] hook the
//!   simulation traces them through, and how each event reads as a log line;
//! * `emitter.rs`: the one way events go out, with the log budget for command lines;
//! * `setup.rs` and `format.rs`: the log subscriber, its levels and its two formats;
//! * `writer.rs`: the line writer that never lets a closed log pipe stop the agent.

pub mod emitter;
pub mod events;
pub mod format;
pub mod setup;
pub mod writer;
