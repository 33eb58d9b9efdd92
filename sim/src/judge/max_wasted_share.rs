//! `max_wasted_share`: at most `limit` (0-1) of the work the server did went to clients that had
//! gone (timed out or closed before the answer): work done for nobody, the fuel of metastable
//! failures.

use super::fleet::FleetFigures;

pub(super) fn max_wasted_share(figures: &FleetFigures, limit: f64) -> Result<String, String> {
    let t = &figures.totals;
    let share = t.wasted_share();
    let text = format!(
        "{:.1}% of the work was wasted ({:.1} of {:.1} units; {} requests served, {} wasted, {} shed; limit {:.1}%)",
        share * 100.0,
        t.wasted_units,
        t.served_units + t.wasted_units + t.shed_work_units,
        t.served,
        t.wasted,
        t.shed,
        limit * 100.0
    );
    if share > limit { Err(text) } else { Ok(text) }
}
