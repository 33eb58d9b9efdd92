//! What the agent says about itself: the [`events::Event`]s the loop reports and the observer
//! hook the simulation traces them through (`events.rs`), the log set-up (`setup.rs`), its two formats (`format.rs`)
//! and the writer that never lets a closed log pipe stop the agent (`writer.rs`).

pub mod events;
pub mod format;
pub mod setup;
pub mod writer;
