//! A [`Schedule`] as a standalone scenario file: the scenario's own text with its `[explore]`
//! table removed and its `[[faults]]`, fleet size, duration, seed and name replaced.
//!
//! Editing the original document (with `toml_edit`) rather than writing a new one keeps every
//! key this file does not know about (agent overrides, expectations, other tables) exactly as
//! written, so the file `redflag-sim run` reads is the scenario that was explored. Every run of
//! `explore`, shrinking included, goes through this text and the scenario parser, so what is
//! written is by construction what failed.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};

use super::schedule::{Planned, Schedule};
use crate::scenario::{Action, Direction, Target, fmt_duration};

/// The fault as a `[[faults]]` table.
fn fault_table(f: &Planned) -> Table {
    let mut t = Table::new();
    t["at"] = value(fmt_duration(f.at));
    t["action"] = value(f.action.name());
    t["target"] = value(f.target.to_string());
    if let Some(d) = f.duration {
        t["duration"] = value(fmt_duration(d));
    }
    let peer = |t: &mut Table, peer: &Target| {
        if *peer != Target::Proxy {
            t["peer"] = value(peer.to_string());
        }
    };
    match &f.action {
        Action::Partition { peer: p, direction } => {
            peer(&mut t, p);
            match direction {
                Direction::Both => {}
                Direction::To => t["direction"] = value("to"),
                Direction::From => t["direction"] = value("from"),
            }
        }
        Action::Latency { peer: p, delay } => {
            peer(&mut t, p);
            t["delay"] = value(fmt_duration(*delay));
        }
        Action::Loss { peer: p, rate } => {
            peer(&mut t, p);
            t["rate"] = value(*rate);
        }
        Action::HttpStatus { status, retry_after_seconds } => {
            t["status"] = value(i64::from(*status));
            if let Some(s) = retry_after_seconds {
                t["retry_after"] = value(*s as i64);
            }
        }
        Action::Slow { delay } => t["delay"] = value(fmt_duration(*delay)),
        Action::BrokenRoute { route, status, delay } => {
            t["route"] = value(route.name());
            if let Some(s) = status {
                t["status"] = value(i64::from(*s));
            }
            if let Some(d) = delay {
                t["delay"] = value(fmt_duration(*d));
            }
        }
        Action::Crash | Action::Restart | Action::SetupMode | Action::ExpireTokens | Action::RevokeRefresh => {}
    }
    t
}

/// The scenario text for `schedule`, from the original scenario's parsed text. `header` is put
/// first as `#` comment lines.
pub fn scenario_text(original: &DocumentMut, schedule: &Schedule, seed: u64, name: &str, description: &str, header: &str) -> String {
    let mut doc = original.clone();
    doc.remove("explore");
    doc.remove("faults");
    // The original's opening comment describes the original story, not this one.
    if let Some(mut k) = doc.as_table_mut().key_mut("name") {
        k.leaf_decor_mut().set_prefix("");
    }
    doc["name"] = value(name);
    doc["description"] = value(description);
    doc["duration"] = value(fmt_duration(schedule.run));
    doc["seed"] = value(i64::try_from(seed).unwrap_or(i64::MAX));
    if !doc.contains_key("fleet") {
        doc.insert("fleet", Item::Table(Table::new()));
    }
    doc["fleet"]["agents"] = value(i64::from(schedule.agents));
    doc["fleet"]["hosts"] = value(i64::from(schedule.hosts));
    let mut faults = ArrayOfTables::new();
    for f in &schedule.faults {
        faults.push(fault_table(f));
    }
    if !faults.is_empty() {
        doc.insert("faults", Item::ArrayOfTables(faults));
    }
    let mut out: String = header.lines().map(|l| format!("# {l}\n")).collect();
    out.push_str(doc.to_string().trim_start());
    out
}
