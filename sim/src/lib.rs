//! placeholder until the simulation issue
