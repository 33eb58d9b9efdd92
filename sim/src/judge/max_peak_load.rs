//! `max_peak_load`: the busiest second of offered work (every request that reached the server,
//! at its cost, served, shed or wasted) is at most `limit` × the server's full capacity, over
//! the part of the run `during` names: `start` (before the first fault window: a fleet that
//! starts together), `recovery` (from the first fault window's start to the end: a fleet that
//! comes back together) or `run`. Reads the same figures `compare` prints as "pk start" and
//! "pk recovery".

use super::fleet::{BUCKET_MS, FleetFigures};
use super::secs;
use crate::scenario::PeakDuring;

pub(super) fn max_peak_load(figures: &FleetFigures, limit: f64, during: PeakDuring) -> Result<String, String> {
    let peak = match during {
        PeakDuring::Start => figures.peak_start_ratio(),
        PeakDuring::Recovery => figures.peak_recovery_ratio(),
        PeakDuring::Run => figures.peak_load_ratio(),
    };
    let Some(peak) = peak else {
        return match during {
            PeakDuring::Recovery => Err("no fault window, so there is no recovery to look at".into()),
            _ => Err("the server has no finite capacity to compare the load with".into()),
        };
    };
    let span = match during {
        PeakDuring::Start if figures.windows.is_empty() => "over the run (it has no fault)".to_string(),
        PeakDuring::Start => format!("before the first fault at {}", secs(figures.first_window_ms / BUCKET_MS * BUCKET_MS)),
        PeakDuring::Recovery => format!("from the first fault at {} to the end", secs(figures.first_window_ms)),
        PeakDuring::Run => "over the run".into(),
    };
    let text = format!("busiest second {span}: {peak:.2}x the server's capacity (limit {limit}x)");
    if peak > limit { Err(text) } else { Ok(text) }
}
