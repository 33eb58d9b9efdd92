//! Fleet scale, end to end: the server's finite capacity (served, shed and wasted work in the
//! trace), the fleet checks failing when their behaviour is missing, baselines running through
//! the same loop, `compare`, the SVG picture, and the bad-input errors of the new keys.

use std::path::Path;
use std::process::Command;

use redflag_sim::judge::{FleetFigures, TraceIndex};
use redflag_sim::runner::run_one;
use redflag_sim::scenario::{Scenario, StrategyName};
use redflag_sim::trace::{SimEvent, WorkOutcome, write_jsonl};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redflag-sim")
}

fn parse(text: &str) -> Scenario {
    Scenario::parse(text, Path::new("inline.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A small herd: 120 agents on a server that does 10 check-ins a second, restarted after an
/// outage longer than their interval.
const HERD: &str = r#"
name = "small-herd"
duration = "6m"
[fleet]
agents = 120
hosts = 4
[agent]
check_in_interval = 60
[server]
capacity_per_second = 10
queue_max = 20
shed_retry_after = "auto"
[[faults]]
at = "1m"
action = "crash"
target = "server"
duration = "2m"
[[expect]]
check = "fleet_recovers_within"
limit_factor = 3
[[expect]]
check = "max_amplification"
limit = 3
[[expect]]
check = "load_settles"
below = 0.8
within = "1m"
[[expect]]
check = "max_wasted_share"
limit = 0.2
"#;

fn outcomes(records: &[redflag_sim::trace::Record]) -> (usize, usize, usize) {
    let mut n = (0, 0, 0);
    for r in records {
        if let Some(SimEvent::ServerWork { outcome, .. }) = r.sim_event() {
            match outcome {
                WorkOutcome::Served => n.0 += 1,
                WorkOutcome::Shed => n.1 += 1,
                WorkOutcome::Wasted => n.2 += 1,
            }
        }
    }
    n
}

#[test]
fn a_small_herd_is_served_through_the_queue_and_the_fleet_checks_pass() {
    let scenario = parse(HERD);
    let result = run_one(&scenario, 3).unwrap();
    let failed: Vec<_> = result.verdicts.iter().filter(|v| !v.passed).map(|v| format!("{}: {}", v.subject, v.reason)).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let (served, _shed, _wasted) = outcomes(&result.records);
    assert!(served > 120 * 4, "every check-in goes through the queue: {served} served");
    // The physical limit of 120 units at 10/s is 12 s; the fleet cannot beat it.
    let idx = TraceIndex::new(&result.records, &scenario.fleet);
    let f = FleetFigures::new(&idx, &scenario, 20);
    let w = &f.windows[0];
    assert_eq!(w.physical_limit_ms, Some(12_000), "{w:?}");
    assert!(w.slowest.as_ref().unwrap().1 >= 12_000, "{w:?}");
}

#[test]
fn a_synchronised_fleet_overruns_the_queue_and_is_shed() {
    // A fleet started within one second, with no random spread anywhere: every agent checks in
    // at the same instant, fails at the same instant and retries at the same instant.
    let in_step = HERD.replace("hosts = 4\n", "hosts = 4\nstart_spread = \"1s\"\n");
    let scenario = parse(&in_step.replace("check_in_interval = 60", "check_in_interval = 60\nstrategy = \"no-jitter\""));
    assert_eq!(scenario.strategy, StrategyName::NoJitter);
    let result = run_one(&scenario, 3).unwrap();
    let (_, shed, _) = outcomes(&result.records);
    assert!(shed > 0, "a queue of 20 cannot hold 120 synchronised retries");
    let shed_503 = result.records.iter().any(|r| matches!(r.sim_event(), Some(SimEvent::ServerRequest { status: 503, .. })));
    assert!(shed_503, "a shed request is answered 503");
}

/// The trigger of a retry storm: answers held past the request timeout. The work is done
/// for clients that have gone.
const STORM: &str = r#"
name = "small-storm"
duration = "6m"
[fleet]
agents = 240
hosts = 3
start_spread = "30s"
[agent]
check_in_interval = 30
[server]
capacity_per_second = 10
queue_max = 600
[[faults]]
at = "1m"
action = "slow"
target = "server"
delay = "12s"
duration = "1m"
[[expect]]
check = "max_wasted_share"
limit = 0.01
[[expect]]
check = "load_settles"
below = 0.95
within = "1m"
"#;

#[test]
fn answers_past_the_timeout_are_wasted_work() {
    let scenario = parse(STORM);
    let result = run_one(&scenario, 1).unwrap();
    let (_, _, wasted) = outcomes(&result.records);
    assert!(wasted > 0, "requests whose clients timed out are wasted");
    let share = result.verdicts.iter().find(|v| v.check == "max_wasted_share").unwrap();
    assert!(!share.passed, "more than 1% of the work was wasted: {share:?}");
}

#[test]
fn a_retry_storm_that_outlives_its_trigger_fails_load_settles() {
    // Clients that retry a timed-out request at once, into a queue longer than their timeout,
    // keep the server saturated after the trigger is gone: a metastable failure.
    let scenario = parse(&STORM.replace("check_in_interval = 30", "check_in_interval = 30\nstrategy = \"aws-standard\""));
    let result = run_one(&scenario, 1).unwrap();
    let v = result.verdicts.iter().find(|v| v.check == "load_settles").unwrap();
    let default = run_one(&parse(STORM), 1).unwrap();
    let d = default.verdicts.iter().find(|v| v.check == "load_settles").unwrap();
    assert!(d.passed, "the production policy lets the load settle: {d:?}");
    assert!(!v.passed, "aws-standard keeps the queue full: {v:?}");
}

#[test]
fn capacity_runs_are_deterministic_and_unlimited_runs_have_no_queue() {
    let scenario = parse(HERD);
    let bytes = |s: &Scenario| {
        let mut out = Vec::new();
        write_jsonl(&run_one(s, 9).unwrap().records, &mut out).unwrap();
        out
    };
    assert!(bytes(&scenario) == bytes(&scenario), "same seed, different traces");
    let unlimited = parse(&HERD.replace("[server]\ncapacity_per_second = 10\nqueue_max = 20\nshed_retry_after = \"auto\"\n", "").replace("limit_factor = 3", "within = \"1m\"").replace("[[expect]]\ncheck = \"load_settles\"\nbelow = 0.8\nwithin = \"1m\"\n", "").replace("[[expect]]\ncheck = \"max_wasted_share\"\nlimit = 0.2\n", ""));
    assert!(unlimited.server.capacity.is_none());
    let text = String::from_utf8(bytes(&unlimited)).unwrap();
    assert!(!text.contains("server_work"), "an unlimited server has no queue to report");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file.to_str().unwrap().to_string()
}

#[test]
fn bad_fleet_keys_exit_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (HERD.replace("capacity_per_second = 10", "capacity_per_second = 0"), "capacity_per_second", 10),
        (HERD.replace("queue_max = 20", "queue_max = 20\nwarmup = \"7m\""), "warmup", 12),
        (HERD.replace("check_in_interval = 60", "check_in_interval = 60\nstrategy = \"exponential\""), "strategy", 9),
        (HERD.replace("limit_factor = 3", "limit_factor = 0.5"), "limit_factor", 20),
        (HERD.replace("[server]\n", "[server]\nshed_after = 3\n"), "shed_after", 10),
        (HERD.replace("queue_max = 20", "queue_max = 20\nshed_cost = 1.5"), "shed_cost", 12),
        (HERD.replace("limit = 0.2\n", "limit = 0.2\n[[expect]]\ncheck = \"max_peak_load\"\nlimit = 2\nduring = \"later\"\n"), "during", 34),
    ];
    for (i, (text, key, line)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.toml"), text);
        let out = Command::new(bin()).args(["run", &file]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(&format!("bad{i}.toml:{line}:")) && stderr.contains(key), "{key}: {stderr}");
    }
    let file = write(dir.path(), "herd.toml", HERD);
    let out = Command::new(bin()).args(["compare", &file, "--strategies", "default,backoff"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn compare_prints_one_row_per_strategy_with_every_seed_and_draws_each_on_shared_axes() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "herd.toml", HERD);
    let svg_dir = dir.path().join("svg");
    let out = Command::new(bin())
        .args(["compare", &file, "--strategies", "default,redflag-0.1.18", "--seeds", "1..3", "--json", "--svg"])
        .arg(&svg_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["strategy"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "redflag-0.1.18"]);
    for row in rows.as_array().unwrap() {
        let seeds: Vec<u64> = row["by_seed"].as_array().unwrap().iter().map(|s| s["seed"].as_u64().unwrap()).collect();
        assert_eq!(seeds, [1, 2], "{row}");
        for key in ["recovery_p99_ms", "peak_recovery_ratio", "outage_requests_per_agent_minute", "steady_requests_per_agent_minute"] {
            let s = &row[key];
            let (lo, mid, hi) = (s["min"].as_f64().unwrap(), s["median"].as_f64().unwrap(), s["max"].as_f64().unwrap());
            assert!(lo <= mid && mid <= hi && lo > 0.0, "{key}: {row}");
        }
        assert_eq!(row["recovery_p99_censored"], false, "{row}");
    }
    // Both sides of the trade: RedFlag 0.1.18 waits an interval plus 0-29 s whatever happens,
    // so it sends one request per (60 + 14.5) s in steady running and in an outage alike;
    // ours is faster back and costs more during the outage.
    let steady = rows[1]["steady_requests_per_agent_minute"]["median"].as_f64().unwrap();
    assert!((steady - 60.0 / 74.5).abs() < 0.05, "{steady}");
    let outage = |r: usize| rows[r]["outage_requests_per_agent_minute"]["median"].as_f64().unwrap();
    assert!(outage(0) > 2.0 * outage(1), "{} vs {}", outage(0), outage(1));
    for name in names {
        let svg = std::fs::read_to_string(svg_dir.join(format!("{name}.svg"))).unwrap();
        assert_svg_has_series(&svg);
    }
    let pareto = std::fs::read_to_string(svg_dir.join("pareto.svg")).unwrap();
    let doc = roxmltree::Document::parse(&pareto).unwrap_or_else(|e| panic!("not XML: {e}"));
    let texts: Vec<String> = doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text().map(|t| t.trim().to_string())).collect();
    for label in ["default", "redflag-0.1.18", "recovery p99 (s)", "requests per agent-minute while faults last", "server work per recovered agent (shed cost included)"] {
        assert!(texts.iter().filter(|t| *t == label).count() >= 1, "no {label:?} in {texts:?}");
    }
    // One point per strategy and panel.
    assert_eq!(doc.descendants().filter(|n| n.has_tag_name("circle")).count() >= 4, true);
}

#[test]
fn compare_extends_the_run_so_no_strategy_is_cut_short() {
    // The herd's 6 minutes end 3 minutes after the outage: seed-p4-001 can be locked out for
    // 5 + 10 + 20 + 40 + 80 s + one 60 s interval + 29 s, more than that.
    let scenario = parse(HERD);
    let (length, extension) = redflag_sim::cli::compare::run_length(&scenario);
    let x = extension.expect("extended");
    assert!(length > scenario.duration && x.strategy == StrategyName::SeedP4001, "{x:?}");
    let mut seed = scenario.clone();
    seed.strategy = StrategyName::SeedP4001;
    let short = run_one(&seed, 1).unwrap();
    let idx = TraceIndex::new(&short.records, &seed.fleet);
    let cut: usize = FleetFigures::new(&idx, &seed, 20).windows.iter().map(|w| w.unrecovered.len()).sum();
    seed.duration = length;
    let long = run_one(&seed, 1).unwrap();
    let idx = TraceIndex::new(&long.records, &seed.fleet);
    let never: usize = FleetFigures::new(&idx, &seed, 20).windows.iter().map(|w| w.unrecovered.len()).sum();
    assert!(cut > 0, "the file's length cuts some agents short");
    assert_eq!(never, 0, "every agent is back in the extended run");
}

#[test]
fn shedding_costs_work_in_amplification_and_load() {
    // Half the capacity and a queue of 5: the returning herd is shed.
    let dear = parse(
        &HERD
            .replace("capacity_per_second = 10", "capacity_per_second = 5")
            .replace("queue_max = 20", "queue_max = 5")
            .replace("shed_retry_after = \"auto\"", "shed_cost = 1"),
    );
    let r = run_one(&dear, 3).unwrap();
    let idx = TraceIndex::new(&r.records, &dear.fleet);
    // The same run's trace, priced with and without the cost of shedding.
    let mut free = dear.clone();
    free.server.capacity = free.server.capacity.map(|c| redflag_sim::scenario::Capacity { shed_cost: 0.0, ..c });
    let (d, f) = (FleetFigures::new(&idx, &dear, 20), FleetFigures::new(&idx, &free, 20));
    assert!(d.windows[0].shed > 0, "{:?}", d.windows[0]);
    assert_eq!(f.totals.shed_work_units, 0.0);
    assert!((d.totals.shed_work_units - d.totals.shed_units).abs() < 1e-9);
    let amp = |f: &FleetFigures| f.windows[0].amplification.unwrap();
    assert!(amp(&d) > amp(&f) + 0.01, "{} vs {}", amp(&d), amp(&f));
    let done = |f: &FleetFigures| f.load.completed.iter().sum::<f64>();
    assert!((done(&d) - done(&f) - d.totals.shed_units).abs() < 1e-6, "{} vs {}", done(&d), done(&f));
}

#[test]
fn in_step_partition_shows_what_jitter_buys() {
    let scenario = Scenario::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/in-step-partition.toml"))).unwrap();
    let peak = |s: &Scenario| {
        let r = run_one(s, 1).unwrap();
        let v = r.verdicts.iter().find(|v| v.check == "max_peak_load").unwrap().clone();
        (r.passed(), v)
    };
    let (passed, v) = peak(&scenario);
    assert!(passed && v.passed, "{v:?}");
    let mut in_step = scenario.clone();
    in_step.strategy = StrategyName::NoJitter;
    let (_, v) = peak(&in_step);
    assert!(!v.passed, "without its random spreads the fleet comes back in step: {v:?}");
}

/// Parses the page as XML and finds every series by its legend label, and the lines drawn.
fn assert_svg_has_series(svg: &str) {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let texts: Vec<String> = doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text().map(|t| t.trim().to_string())).collect();
    for series in ["served", "shed", "wasted", "capacity (units/s)", "closed", "open", "half-open", "recovered"] {
        assert!(texts.iter().any(|t| t == series), "no series {series:?} among {texts:?}");
    }
    let lines = doc.descendants().filter(|n| n.has_tag_name("polyline")).count();
    assert!(lines >= 8, "{lines} polylines");
    // Fault windows are shaded.
    let shaded = doc.descendants().any(|n| {
        n.has_tag_name("rect")
            && n.attribute("fill") == Some("#BBBBBB")
            && n.attribute("opacity").and_then(|o| o.parse::<f64>().ok()).is_some_and(|o| o < 1.0)
    });
    assert!(shaded, "no shaded fault window");
}

#[test]
fn run_svg_draws_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "herd.toml", HERD);
    let svg = dir.path().join("run.svg");
    let out = Command::new(bin()).args(["run", &file, "--trace"]).arg(dir.path().join("t.jsonl")).arg("--svg").arg(&svg).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_svg_has_series(&std::fs::read_to_string(svg).unwrap());
}

#[test]
fn serve_validates_the_capacity_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db.json");
    for (args, needle) in [
        (vec!["--capacity-per-second", "0"], "--capacity-per-second"),
        (vec!["--capacity-per-second", "10", "--shed-retry-after", "soon"], "--shed-retry-after"),
        (vec!["--capacity-per-second", "10", "--warmup", "a while"], "--warmup"),
        (vec!["--queue-max", "10"], "--capacity-per-second"),
    ] {
        let out = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
