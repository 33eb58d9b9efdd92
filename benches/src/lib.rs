//! Criterion benches live in the [[bench]] targets.
