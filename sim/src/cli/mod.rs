//! What users type and see: the report printed after a run, the many-seed sweep and `explore`. The
//! command-line parsing itself is `main.rs`; the run is `runner.rs`.

pub mod compare;
pub mod explore;
pub mod junit;
pub mod report;
pub mod svg;
pub mod sweep;
