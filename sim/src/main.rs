//! The `redflag-sim` command line.
//!
//! * `run [FILE] [--seed N] [--trace PATH] [--json]`: one scenario, one seed (FILE defaults to
//!   the embedded `scenarios/server-restart.toml`).
//! * `sweep PATH... --seeds A..B [--jobs N] [--shard K/N]`: many scenarios and seeds.
//! * `compare FILE --strategies a,b|all --seeds A..B [--json] [--svg DIR]`: one scenario under
//!   several retry strategies, one table row per strategy (`redflag_sim::cli::compare`).
//! * `list [PATH...]`: the scenarios and their descriptions.
//! * `explore FILE --runs N [--seed S] [--jobs J] [--out FILE]`: random fault schedules from the
//!   file's `[explore]` table; the first failure is shrunk to a minimal scenario file.
//! * `serve`, `proxy`, `live FILE`: the live chaos mode (`redflag_sim::live`): the server model
//!   and the fault proxy as real processes, and a scenario run against real agent processes.
//!
//! Exit codes: 0 every expectation held; 1 an expectation failed; 2 invalid scenario or
//! arguments; 3 the harness itself failed (a bug: please report it with the repro line).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use redflag_sim::cli::{compare, report, svg};
use redflag_sim::runner::{RunOptions, run_with};
use redflag_sim::scenario::Scenario;
use redflag_sim::cli::sweep;

use redflag_sim::exit::{FAILED as EXIT_FAILED, HARNESS as EXIT_HARNESS, INVALID as EXIT_INVALID};

/// mimalloc instead of the system allocator: a simulation allocates and frees for every
/// request, connection and trace line, and glibc's malloc and free were a fifth of a
/// 100,000-agent run's CPU time (perf). Where things live in memory never reaches a trace.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The scenario `run` uses when given no file.
const DEFAULT_SCENARIO: &str = include_str!("../../scenarios/server-restart.toml");
const DEFAULT_SCENARIO_PATH: &str = "scenarios/server-restart.toml";

#[derive(Parser, Debug)]
#[command(name = "redflag-sim", version, about = "Deterministic simulation and chaos harness for the RedFlag agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate one scenario with one seed and judge its expectations.
    Run {
        /// Scenario file (default: the embedded scenarios/server-restart.toml).
        file: Option<PathBuf>,
        /// Seed for every RNG in the run (default: the scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the JSON Lines trace (default: a file in the system temp folder).
        #[arg(long, value_name = "PATH")]
        trace: Option<PathBuf>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also draw the run as an SVG page here (server load, breaker states, recovery).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Run one scenario under several retry strategies and compare them, one row per strategy.
    Compare {
        /// Scenario file.
        file: PathBuf,
        /// `all`, or strategy names separated by commas (default, redflag-0.1.18, seed-p4-001,
        /// no-jitter, aws-standard, aws-standard-2026, grpc, grpc-retry).
        #[arg(long, default_value = "all")]
        strategies: String,
        /// Seed range: A..B (B excluded) or A..=B (default: ten seeds from the scenario's).
        #[arg(long)]
        seeds: Option<String>,
        /// Parallel runs (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print the rows as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write the rows as JSON to this file (the table still goes to stdout).
        #[arg(long, value_name = "FILE")]
        json_out: Option<PathBuf>,
        /// Draw DIR/pareto.svg (recovery p99 against outage traffic and against
        /// amplification, one point per strategy with its spread over seeds) and the first seed
        /// of each strategy as DIR/STRATEGY.svg, on shared axes.
        #[arg(long, value_name = "DIR")]
        svg: Option<PathBuf>,
    },
    /// Run every scenario under every seed of a range, in parallel.
    Sweep {
        /// Scenario files, or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Seed range: A..B (B excluded) or A..=B.
        #[arg(long)]
        seeds: String,
        /// Parallel runs (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run only shard K of N (1-based), for spreading a sweep over machines.
        #[arg(long, value_name = "K/N")]
        shard: Option<String>,
        /// Also write the runs as JUnit XML: one test case per scenario and seed.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Print one JSON object per run, one per line, on stdout (the summary goes to stderr).
        #[arg(long)]
        json: bool,
        /// Write the trace of every failing run into this folder.
        #[arg(long, value_name = "DIR")]
        traces: Option<PathBuf>,
    },
    /// List scenarios and their descriptions.
    List {
        /// Scenario files or folders (default: scenarios).
        paths: Vec<PathBuf>,
    },
    /// Draw random fault schedules from a scenario's `[explore]` table, run them, and shrink the
    /// first failure to a minimal standalone scenario file.
    Explore(redflag_sim::cli::explore::ExploreArgs),
    /// Run the RedFlag server model on a real socket (live mode), with a chaos control API.
    Serve(redflag_sim::live::ServeArgs),
    /// Run the fault proxy on real sockets (live mode), controlled over HTTP.
    Proxy(redflag_sim::live::ProxyArgs),
    /// Run a `live = true` scenario against real redflag-agent processes, in wall-clock time.
    Live(redflag_sim::live::LiveArgs),
}

/// The report commands print and end, like other Unix tools: when the reader of their output
/// goes away (`redflag-sim run ... | head`), SIGPIPE ends them quietly instead of a panic in
/// `println!`. The service commands (`serve`, `proxy`, `live`) keep Rust's default (SIGPIPE
/// ignored, a write error instead): they hold sockets and child processes and must clean up.
fn quiet_on_closed_stdout() {
    // SAFETY: setting a signal's disposition to the default has no preconditions; it runs
    // before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Proxy(_) | Command::Live(_)) {
        quiet_on_closed_stdout();
    }
    match cli.command {
        Command::Run { file, seed, trace, json, svg } => run(file.as_deref(), seed, trace, json, svg.as_deref()),
        Command::Compare { file, strategies, seeds, jobs, json, json_out, svg } => {
            compare_cmd(&file, &strategies, seeds.as_deref(), jobs, json, json_out.as_deref(), svg.as_deref())
        }
        Command::Sweep { paths, seeds, jobs, shard, junit, json, traces } => {
            let out = SweepOutput { junit, json, traces };
            sweep_cmd(&paths, &seeds, jobs, shard.as_deref(), &out)
        }
        Command::List { paths } => list(&paths),
        Command::Explore(args) => ExitCode::from(redflag_sim::cli::explore::main(args)),
        Command::Serve(args) => ExitCode::from(redflag_sim::live::server_process::main(args)),
        Command::Proxy(args) => ExitCode::from(redflag_sim::live::proxy_process::main(args)),
        Command::Live(args) => ExitCode::from(redflag_sim::live::orchestrator::main(args)),
    }
}

fn load(file: Option<&Path>) -> Result<Scenario, String> {
    match file {
        Some(f) => Scenario::load(f).map_err(|e| e.to_string()),
        None => Scenario::parse(DEFAULT_SCENARIO, Path::new(DEFAULT_SCENARIO_PATH)).map_err(|e| e.to_string()),
    }
}

fn run(file: Option<&Path>, seed: Option<u64>, trace: Option<PathBuf>, json: bool, svg: Option<&Path>) -> ExitCode {
    let scenario = match load(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let seed = seed.unwrap_or(scenario.seed);
    let trace_path = trace.unwrap_or_else(|| {
        std::env::temp_dir().join("redflag-sim").join(format!("{}-seed-{seed}.jsonl", scenario.name))
    });
    // The trace goes to its file and the timeline is gathered while the run goes; the lines
    // themselves are kept only for a picture.
    let mut timeline = report::Timeline::new(&scenario);
    let options = RunOptions {
        trace_file: Some(&trace_path),
        keep_records: svg.is_some(),
        observer: Some(&mut |r: &redflag_sim::trace::Record| timeline.push(r)),
    };
    let result = match run_with(&scenario, seed, options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("harness error: {e}\nrepro: {}", scenario.repro(seed));
            return ExitCode::from(EXIT_HARNESS);
        }
    };
    let timeline = timeline.finish(&result);
    let written = result.trace_written.clone().unwrap_or(Ok(0));
    if json {
        let trace_str = written.as_ref().ok().map(|_| trace_path.display().to_string());
        println!("{}", report::json_with_timeline(&scenario, &result, trace_str.as_deref(), timeline));
    } else {
        print!("{}", report::text_with_timeline(&scenario, &result, timeline));
        match &written {
            Ok(lines) => println!("trace:  {} ({lines} lines)", trace_path.display()),
            Err(e) => println!("trace:  not written: {e}"),
        }
    }
    if written.is_err() {
        return ExitCode::from(EXIT_HARNESS);
    }
    if let Some(path) = svg {
        let figures = redflag_sim::judge::FleetFigures::new(&result.index, &scenario, (result.tick * 2).as_millis() as u64);
        let picture = svg::Picture::of_run(&scenario, seed, &result.records, &figures);
        match picture.write(&svg::Axes::shared([&picture]), path) {
            Ok(()) if !json => println!("svg:    {}", path.display()),
            Ok(()) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_HARNESS);
            }
        }
    }
    if result.as_expected() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) }
}


/// What a sweep writes besides its summary.
struct SweepOutput {
    junit: Option<PathBuf>,
    json: bool,
    traces: Option<PathBuf>,
}

fn sweep_cmd(paths: &[PathBuf], seeds: &str, jobs: Option<usize>, shard: Option<&str>, out: &SweepOutput) -> ExitCode {
    let parsed = (|| -> Result<_, String> {
        let seeds = sweep::parse_seeds(seeds)?;
        let shard = shard.map(sweep::parse_shard).transpose()?.unwrap_or((1, 1));
        if jobs == Some(0) {
            return Err("--jobs must be at least 1".into());
        }
        let files = sweep::collect_files(paths)?;
        Ok((seeds, shard, files))
    })();
    let (seeds, shard, files) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let scenarios = match sweep::load_all(&files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let jobs = jobs.unwrap_or_else(sweep::default_jobs);
    let total = sweep::work_list(scenarios.len(), seeds.clone(), shard).len() as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let outcomes: std::sync::Mutex<Vec<sweep::RunOutcome>> = std::sync::Mutex::default();
    let stdout = std::sync::Mutex::new(());
    let on_run = |o: &sweep::RunOutcome| {
        if out.json {
            let _held = stdout.lock().unwrap_or_else(|p| p.into_inner());
            bar.suspend(|| println!("{}", serde_json::to_string(o).unwrap_or_default()));
        }
        if out.junit.is_some() {
            outcomes.lock().unwrap_or_else(|p| p.into_inner()).push(o.clone());
        }
    };
    let progress = |done, failed| {
        bar.set_position(done);
        if failed > 0 {
            bar.set_message(format!("({failed} failed)"));
        }
    };
    let summary = sweep::sweep_with(&scenarios, seeds.clone(), shard, jobs, out.traces.as_deref(), &progress, &on_run);
    bar.finish_and_clear();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if let Some(path) = &out.junit {
        let runs = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = redflag_sim::cli::junit::write(path, &runs) {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_HARNESS);
        }
    }
    // With --json, stdout carries only the runs.
    let say = |line: String| if out.json { eprintln!("{line}") } else { println!("{line}") };
    say(format!(
        "{} runs ({} scenarios x seeds {}..{}, shard {}/{}) on {jobs} threads in {:.1}s: {} passed, {} failed",
        summary.runs,
        scenarios.len(),
        seeds.start,
        seeds.end,
        shard.0,
        shard.1,
        started.elapsed().as_secs_f64(),
        summary.runs - summary.failures.len() as u64,
        summary.failures.len()
    ));
    let must_fail: Vec<&str> = scenarios.iter().filter(|s| s.expect_failure).map(|s| s.name.as_str()).collect();
    if !must_fail.is_empty() {
        say(format!("  (expect_failure = true: {} count as passing only when an expectation fails)", must_fail.join(", ")));
    }
    for f in &summary.failures {
        say(format!("FAIL {} seed {}", sweep::display_path(&f.file), f.seed));
        for r in &f.reasons {
            say(format!("     {r}"));
        }
        say(format!("     repro: {}", f.repro));
    }
    if summary.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) }
}

fn compare_cmd(
    file: &Path,
    strategies: &str,
    seeds: Option<&str>,
    jobs: Option<usize>,
    json: bool,
    json_out: Option<&Path>,
    svg_dir: Option<&Path>,
) -> ExitCode {
    let parsed = (|| -> Result<_, String> {
        let scenario = Scenario::load(file).map_err(|e| e.to_string())?;
        let strategies = compare::parse_strategies(strategies)?;
        let seeds = match seeds {
            Some(s) => sweep::parse_seeds(s)?,
            None => scenario.seed..scenario.seed.saturating_add(compare::SEEDS_DEFAULT),
        };
        if jobs == Some(0) {
            return Err("--jobs must be at least 1".into());
        }
        if let Some(dir) = json_out.and_then(Path::parent).filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            return Err(format!("--json-out: folder {} does not exist; create it or write elsewhere", dir.display()));
        }
        Ok((scenario, strategies, seeds))
    })();
    let (scenario, strategies, seeds) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let total = strategies.len() as u64 * (seeds.end - seeds.start);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let jobs = jobs.unwrap_or_else(sweep::default_jobs);
    let result = compare::compare(&scenario, &strategies, seeds.clone(), jobs, svg_dir.is_some(), &|done| bar.set_position(done));
    bar.finish_and_clear();
    let comparison = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("harness error: {e}");
            return ExitCode::from(EXIT_HARNESS);
        }
    };
    if let Some(path) = json_out {
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&comparison.rows).unwrap_or_default()) {
            eprintln!("error: cannot write --json-out {}: {e}", path.display());
            return ExitCode::from(EXIT_HARNESS);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&comparison.rows).unwrap_or_default());
    } else {
        print!("{}", compare::table(&scenario, &seeds, &comparison));
        println!("{total} runs on {jobs} threads in {:.1}s", started.elapsed().as_secs_f64());
    }
    if let Some(dir) = svg_dir {
        let points: Vec<_> = comparison.rows.iter().map(|r| r.pareto_point()).collect();
        let title = format!("{}: {} agents, seeds {}..{} (median, and min-max over seeds)", scenario.name, scenario.fleet.agents, seeds.start, seeds.end);
        let path = dir.join("pareto.svg");
        let written = svg::pareto(&title, &points).and_then(|page| {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
        if let Err(e) = written {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_HARNESS);
        }
        if !json {
            println!("svg:    {}", path.display());
        }
        let axes = svg::Axes::shared(comparison.pictures.iter().map(|(_, p)| p));
        for (name, picture) in &comparison.pictures {
            let path = dir.join(format!("{name}.svg"));
            if let Err(e) = picture.write(&axes, &path) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_HARNESS);
            }
            if !json {
                println!("svg:    {}", path.display());
            }
        }
    }
    ExitCode::SUCCESS
}

fn list(paths: &[PathBuf]) -> ExitCode {
    let paths = if paths.is_empty() { vec![PathBuf::from("scenarios")] } else { paths.to_vec() };
    let files = match sweep::collect_files(&paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut invalid = false;
    for f in files {
        match Scenario::load(&f) {
            Ok(s) => {
                let live = if s.live { " [live]" } else { "" };
                println!(
                    "{:<28} {:>6} {:>5} agents  {}{live}",
                    s.name,
                    redflag_sim::scenario::fmt_duration(s.duration),
                    s.fleet.agents,
                    s.description
                );
            }
            Err(e) => {
                invalid = true;
                println!("INVALID {e}");
            }
        }
    }
    if invalid { ExitCode::from(EXIT_INVALID) } else { ExitCode::SUCCESS }
}
