//! A picture of a run, as one SVG page (`run --svg FILE`, `compare --svg DIR`): simulated time
//! along x, fault windows shaded, and three panels:
//!
//! 1. server requests per second by outcome (served, shed, wasted) against the capacity line;
//! 2. agents in each breaker state (closed, open, half-open);
//! 3. the share of disturbed agents recovered after each fault window.
//!
//! Drawn with plotters' SVG backend only: text is written as SVG `<text>` (the viewer picks the
//! font), so no font file, system font library or C library is involved. The data comes from the
//! trace and `judge/fleet.rs`; this file only draws. Pictures of the strategies of one `compare`
//! share their axes ([`Axes::shared`]) so they can be set side by side.

use std::path::Path;

use plotters::prelude::*;
use redflag_agent::log::events::Event;

use crate::judge::FleetFigures;
use crate::judge::fleet::BUCKET_MS;
use crate::scenario::Scenario;
use crate::trace::{Record, TraceEvent};

/// Page size, in pixels.
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 960;

/// What one picture shows, per second of the run.
#[derive(Debug, Clone)]
pub struct Picture {
    pub title: String,
    pub duration_s: f64,
    /// Fault windows, in seconds (to the end of the run when open-ended).
    pub faults: Vec<(f64, f64)>,
    pub served: Vec<u32>,
    pub shed: Vec<u32>,
    pub wasted: Vec<u32>,
    /// Work units per second the server could do (`None`: unlimited).
    pub capacity: Option<Vec<f64>>,
    pub closed: Vec<u32>,
    pub open: Vec<u32>,
    pub half_open: Vec<u32>,
    /// Share of each window's disturbed agents recovered, at each second from its end.
    pub recovered: Vec<Vec<(f64, f64)>>,
    pub agents: u32,
}

/// Axis ranges, shared by the pictures of one comparison.
#[derive(Debug, Clone, Copy)]
pub struct Axes {
    pub x_max_s: f64,
    pub requests_max: f64,
    pub agents: u32,
}

impl Axes {
    /// Axes that fit every picture.
    pub fn shared<'a>(pictures: impl IntoIterator<Item = &'a Picture>) -> Axes {
        let mut axes = Axes { x_max_s: 1.0, requests_max: 1.0, agents: 1 };
        for p in pictures {
            axes.x_max_s = axes.x_max_s.max(p.duration_s);
            let cap = p.capacity.iter().flatten().copied().fold(0.0, f64::max);
            let req = (0..p.served.len()).map(|s| p.served[s].max(p.shed[s]).max(p.wasted[s]) as f64).fold(cap, f64::max);
            axes.requests_max = axes.requests_max.max(req * 1.1);
            axes.agents = axes.agents.max(p.agents);
        }
        axes
    }
}

impl Picture {
    /// The picture of one run.
    pub fn of_run(scenario: &Scenario, seed: u64, records: &[Record], figures: &FleetFigures) -> Picture {
        let load = &figures.load;
        let n = load.seconds();
        let run_end_s = n as f64;
        let faults = figures_windows(records, run_end_s);
        let (closed, open, half_open) = breaker_states(records, scenario.fleet.agents, n);
        let recovered = figures
            .windows
            .iter()
            .filter(|w| w.disturbed > 0)
            .map(|w| {
                let end_s = w.end_ms / BUCKET_MS;
                let horizon_s = w.horizon_ms.div_ceil(BUCKET_MS);
                (end_s..=horizon_s)
                    .map(|s| {
                        let since = (s * BUCKET_MS).saturating_sub(w.end_ms);
                        let done = w.recovery_ms.partition_point(|&r| r <= since);
                        (s as f64, done as f64 / w.disturbed as f64)
                    })
                    .collect()
            })
            .collect();
        Picture {
            title: format!("{} (strategy {}, seed {seed})", scenario.name, scenario.strategy),
            duration_s: scenario.duration.as_secs_f64(),
            faults,
            served: load.served.clone(),
            shed: load.shed.clone(),
            wasted: load.wasted.clone(),
            capacity: load.capacity.clone(),
            closed,
            open,
            half_open,
            recovered,
            agents: scenario.fleet.agents,
        }
    }

    /// The SVG page, on the given axes.
    pub fn render(&self, axes: &Axes) -> Result<String, String> {
        let mut svg = String::new();
        draw(self, axes, &mut svg).map_err(|e| format!("cannot draw the picture: {e}"))?;
        Ok(svg)
    }

    /// Renders to a file, creating its folder.
    pub fn write(&self, axes: &Axes, path: &Path) -> Result<(), String> {
        let svg = self.render(axes)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// Fault windows from the trace's fault lines, in seconds.
fn figures_windows(records: &[Record], run_end_s: f64) -> Vec<(f64, f64)> {
    use crate::trace::SimEvent;
    let mut open: std::collections::BTreeMap<usize, f64> = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for r in records {
        match r.sim_event() {
            Some(SimEvent::FaultApplied { fault, .. }) => {
                open.insert(*fault, r.t_ms as f64 / 1000.0);
            }
            Some(SimEvent::FaultEnded { fault, .. }) => {
                if let Some(start) = open.remove(fault) {
                    // An instant fault (a restart) still gets a visible sliver.
                    out.push((start, (r.t_ms as f64 / 1000.0).max(start + 1.0)));
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_values().map(|start| (start, run_end_s)));
    out
}

/// Agents closed / open / half-open at the end of each second.
fn breaker_states(records: &[Record], agents: u32, seconds: usize) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut state: std::collections::BTreeMap<&str, u8> = std::collections::BTreeMap::new();
    let (mut open, mut half) = (0u32, 0u32);
    let mut out = (vec![agents; seconds], vec![0; seconds], vec![0; seconds]);
    let mut s = 0usize;
    let mut flush = |upto: usize, open: u32, half: u32, out: &mut (Vec<u32>, Vec<u32>, Vec<u32>)| {
        while s < upto.min(seconds) {
            out.0[s] = agents.saturating_sub(open + half);
            out.1[s] = open;
            out.2[s] = half;
            s += 1;
        }
    };
    for r in records {
        let Some(TraceEvent::Agent(e)) = Some(&r.event) else { continue };
        let Some(agent) = r.agent.as_deref() else { continue };
        let to = match e {
            Event::Breaker { to, .. } => match to.as_str() {
                "open" => 1,
                "half_open" => 2,
                _ => 0,
            },
            // A restarted agent starts closed.
            Event::AgentStarted { .. } => 0,
            _ => continue,
        };
        flush((r.t_ms / BUCKET_MS) as usize, open, half, &mut out);
        let from = state.insert(agent, to).unwrap_or(0);
        match from {
            1 => open -= 1,
            2 => half -= 1,
            _ => {}
        }
        match to {
            1 => open += 1,
            2 => half += 1,
            _ => {}
        }
    }
    flush(seconds, open, half, &mut out);
    out
}

const SERVED: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
const SHED: RGBColor = RGBColor(0xe6, 0xab, 0x02);
const WASTED: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const CAPACITY: RGBColor = RGBColor(0x33, 0x33, 0x33);
const OPEN: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const HALF_OPEN: RGBColor = RGBColor(0x75, 0x70, 0xb3);
const RECOVERED: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
const FAULT_SHADE: RGBColor = RGBColor(0xbb, 0xbb, 0xbb);

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn series<T: Copy + Into<f64>>(values: &[T]) -> Vec<(f64, f64)> {
    values.iter().enumerate().map(|(s, v)| (s as f64 + 0.5, (*v).into())).collect()
}

fn draw(p: &Picture, axes: &Axes, svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&p.title, ("sans-serif", 22))?;
    let panels = root.split_evenly((3, 1));
    let x = 0f64..axes.x_max_s;

    // 1. Requests per second by outcome, against capacity.
    let mut c = ChartBuilder::on(&panels[0])
        .caption("server requests per second, by outcome", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), 0f64..axes.requests_max)?;
    c.configure_mesh().x_desc("simulated time (s)").y_desc("requests/s").light_line_style(WHITE).draw()?;
    shade(&mut c, &p.faults, axes.requests_max)?;
    if let Some(cap) = &p.capacity {
        c.draw_series(LineSeries::new(series(cap), CAPACITY.stroke_width(2)))?
            .label("capacity (units/s)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CAPACITY.stroke_width(2)));
    }
    for (name, values, color) in [("served", &p.served, SERVED), ("shed", &p.shed, SHED), ("wasted", &p.wasted, WASTED)] {
        c.draw_series(LineSeries::new(series(values), color.stroke_width(1)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.85)).draw()?;

    // 2. Breaker states.
    let agents = f64::from(axes.agents) * 1.05;
    let mut c = ChartBuilder::on(&panels[1])
        .caption("agents in each breaker state", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), 0f64..agents)?;
    c.configure_mesh().x_desc("simulated time (s)").y_desc("agents").light_line_style(WHITE).draw()?;
    shade(&mut c, &p.faults, agents)?;
    for (name, values, color) in [("closed", &p.closed, SERVED), ("open", &p.open, OPEN), ("half-open", &p.half_open, HALF_OPEN)] {
        c.draw_series(LineSeries::new(series(values), color.stroke_width(1)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.85)).draw()?;

    // 3. Share of disturbed agents recovered after each window.
    let mut c = ChartBuilder::on(&panels[2])
        .caption("share of disturbed agents recovered after each fault window", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x, 0f64..1.05)?;
    c.configure_mesh().x_desc("simulated time (s)").y_desc("recovered").light_line_style(WHITE).draw()?;
    shade(&mut c, &p.faults, 1.05)?;
    for (i, points) in p.recovered.iter().enumerate() {
        let s = c.draw_series(LineSeries::new(points.iter().copied(), RECOVERED.stroke_width(2)))?;
        if i == 0 {
            s.label("recovered").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RECOVERED.stroke_width(2)));
        }
    }
    c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.85)).draw()?;
    root.present()?;
    Ok(())
}

fn shade<DB: DrawingBackend>(
    c: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>,
    faults: &[(f64, f64)],
    top: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    c.draw_series(faults.iter().map(|(a, b)| Rectangle::new([(*a, 0.0), (*b, top)], FAULT_SHADE.mix(0.35).filled())))?;
    Ok(())
}

// ---- the Pareto picture of a comparison -----------------------------------------------------

/// One strategy in the Pareto picture: its recovery p99 against its outage traffic and its
/// amplification, each as median over seeds with the spread (min-max).
#[derive(Debug, Clone)]
pub struct ParetoPoint {
    pub strategy: String,
    /// Recovery p99 in seconds: (median, min, max); `None` where censored (an agent never
    /// recovered: drawn at the top edge, marked "> end").
    pub recovery_p99_s: (Option<f64>, Option<f64>, Option<f64>),
    pub outage_per_agent_minute: (Option<f64>, Option<f64>, Option<f64>),
    pub amplification: (Option<f64>, Option<f64>, Option<f64>),
}

/// Page size of the Pareto picture, in pixels.
const PARETO_WIDTH: u32 = 1400;
const PARETO_HEIGHT: u32 = 620;

/// One colour per strategy, in row order (colour-blind-safe Dark2, then greys).
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0xe7, 0x29, 0x8a),
    RGBColor(0x66, 0xa6, 0x1e),
    RGBColor(0xe6, 0xab, 0x02),
    RGBColor(0xa6, 0x76, 0x1d),
    RGBColor(0x33, 0x33, 0x33),
    RGBColor(0x88, 0x88, 0x88),
    RGBColor(0x00, 0x00, 0x00),
];

/// The Pareto picture of one scenario's comparison: recovery p99 (y) against outage traffic
/// and against amplification (x), one point per strategy with its spread over seeds as error
/// bars. Down and to the left is better on both panels; a point no other point is below and to
/// the left of is on the front.
pub fn pareto(title: &str, points: &[ParetoPoint]) -> Result<String, String> {
    let mut svg = String::new();
    draw_pareto(title, points, &mut svg).map_err(|e| format!("cannot draw the Pareto picture: {e}"))?;
    Ok(svg)
}

fn draw_pareto(title: &str, points: &[ParetoPoint], svg: &mut String) -> DrawResult {
    let root = SVGBackend::with_string(svg, (PARETO_WIDTH, PARETO_HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let panels = root.split_evenly((1, 2));
    let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
    // Censored values sit on a line above every finite one; the legend has the space above it.
    let y_censored = points
        .iter()
        .flat_map(|p| [p.recovery_p99_s.0, p.recovery_p99_s.2])
        .filter_map(finite)
        .fold(1.0, f64::max)
        * 1.15;
    let y_top = y_censored * 1.4;
    type Axis = fn(&ParetoPoint) -> (Option<f64>, Option<f64>, Option<f64>);
    let axes: [(&str, &str, bool, Axis); 2] = [
        ("recovery p99 against outage traffic", "requests per agent-minute while faults last", true, |p| p.outage_per_agent_minute),
        ("recovery p99 against amplification", "server work per recovered agent (shed cost included)", false, |p| p.amplification),
    ];
    for (panel, (caption, x_desc, from_zero, pick)) in panels.iter().zip(axes) {
        let x_top = points.iter().flat_map(|p| [pick(p).0, pick(p).2]).filter_map(finite).fold(0.1, f64::max) * 1.1;
        let x_low = points.iter().flat_map(|p| [pick(p).0, pick(p).1]).filter_map(finite).fold(x_top, f64::min);
        let x_bottom = if from_zero { 0.0 } else { (x_low - 0.1 * (x_top - x_low)).max(0.0).min(x_top * 0.9) };
        let mut c = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_bottom..x_top, 0f64..y_top)?;
        c.configure_mesh().x_desc(x_desc).y_desc("recovery p99 (s)").light_line_style(WHITE).draw()?;
        for (i, p) in points.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let (Some(x), x_lo, x_hi) = pick(p) else { continue };
            let (y, y_lo, y_hi) = p.recovery_p99_s;
            // A censored median sits on the censored line as a triangle: it is beyond the run.
            let censored = y.is_none();
            let y = y.unwrap_or(y_censored);
            let bars = vec![
                PathElement::new(vec![(x_lo.unwrap_or(x), y), (x_hi.unwrap_or(x), y)], color.stroke_width(2)),
                PathElement::new(vec![(x, y_lo.unwrap_or(y)), (x, y_hi.unwrap_or(y_censored))], color.stroke_width(2)),
            ];
            c.draw_series(bars)?;
            let s = if censored {
                c.draw_series(std::iter::once(TriangleMarker::new((x, y), 7, color.filled())))?
            } else {
                c.draw_series(std::iter::once(Circle::new((x, y), 6, color.filled())))?
            };
            let label = if censored { format!("{} (> end)", p.strategy) } else { p.strategy.clone() };
            s.label(label).legend(move |(lx, ly)| Circle::new((lx + 10, ly), 5, color.filled()));
        }
        c.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.85)).position(SeriesLabelPosition::UpperRight).draw()?;
    }
    root.present()?;
    Ok(())
}
