//! What users type and see: the report printed after a run and the many-seed sweep. The
//! command-line parsing itself is `main.rs`; the run is `runner.rs`.

pub mod compare;
pub mod report;
pub mod svg;
pub mod sweep;
