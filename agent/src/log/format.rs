//! The two log formats the agent writes: human-readable text (the default) and JSON lines.
//! Both `setup.rs` (the subscriber) and `writer.rs` (the line writer) read it.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
