//! `redflag-sim explore FILE --runs N [--seed S] [--jobs J] [--out FILE] [--keep-going]`: what
//! the user types and sees. The exploring and shrinking themselves are `explore/`.
//!
//! Prints the runs' tally, the first failure (every failure with `--keep-going`), the shrink
//! steps, the original and shrunk fault counts, the file written and its repro line, after
//! running that file once more from disk to make sure it reproduces the same failed check.
//! Exit codes: 1 a failure was found, 0 every run passed, 2 invalid input, 3 the harness broke.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::exit;
use crate::explore::schedule::Schedule;
use crate::explore::shrink::{Shrunk, shrink};
use crate::explore::{self, Base, CheckId, Found, RUNS_MAX, SHRINK_RUNS_DEFAULT};
use crate::runner::run_one;
use crate::scenario::{Scenario, fmt_duration};

/// `redflag-sim explore`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExploreArgs {
    /// Scenario file with an `[explore]` table.
    pub file: PathBuf,
    /// Schedules to draw and run (at least 1).
    #[arg(long)]
    pub runs: u64,
    /// Seed of the schedules (default: the scenario's `seed`); the same seed explores the same
    /// schedules.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Parallel runs (default: every core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where to write the shrunk failing schedule (default: `NAME-explore-seed-S.toml` here).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Run every schedule and list every failure (the first one is still shrunk).
    #[arg(long)]
    pub keep_going: bool,
    /// Start at schedule number K (default 0): `--first-run 53 --runs 1` replays and shrinks
    /// run 53 of a `--keep-going` listing.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub first_run: u64,
    /// Most simulations shrinking may run.
    #[arg(long, default_value_t = SHRINK_RUNS_DEFAULT)]
    pub shrink_runs_max: u32,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

fn faults_line(s: &Schedule) -> String {
    if s.faults.is_empty() {
        return "no faults".into();
    }
    s.faults.iter().map(|f| f.describe()).collect::<Vec<_>>().join("; ")
}

fn print_found(f: &Found) {
    println!("FAIL run {} (seed {}): {} fault(s), {} agent(s) on {} host(s), {}", f.index, f.run_seed, f.schedule.faults.len(), f.schedule.agents, f.schedule.hosts, fmt_duration(f.schedule.run));
    for v in &f.failed {
        println!("     {}: {}", v.subject, v.reason);
    }
    println!("     faults: {}", faults_line(&f.schedule));
}

pub fn main(args: ExploreArgs) -> u8 {
    if args.runs == 0 {
        eprintln!("error: --runs 0 explores nothing; give at least 1 (like --runs 1000)");
        return exit::INVALID;
    }
    if args.runs > RUNS_MAX {
        eprintln!("error: --runs {} is more than the limit of {RUNS_MAX}", args.runs);
        return exit::INVALID;
    }
    if args.jobs == Some(0) {
        eprintln!("error: --jobs must be at least 1");
        return exit::INVALID;
    }
    if args.shrink_runs_max == 0 {
        eprintln!("error: --shrink-runs-max must be at least 1");
        return exit::INVALID;
    }
    let loaded = Scenario::load(&args.file).map_err(|e| e.to_string()).and_then(|s| {
        let text = std::fs::read_to_string(&args.file).map_err(|e| format!("{}: cannot read: {e}", args.file.display()))?;
        Ok((s, text))
    });
    let (scenario, text) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let seed = args.seed.unwrap_or(scenario.seed);
    let out = args.out.clone().unwrap_or_else(|| Base::default_out(&scenario, seed));
    let base = match Base::new(scenario, &text, out.clone()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let jobs = args.jobs.unwrap_or_else(crate::cli::sweep::default_jobs);
    println!(
        "explore {}: {} schedule(s) of {}..={} fault(s) from [explore] (line {}), seed {seed}, on {jobs} thread(s)",
        args.file.display(),
        args.runs,
        base.space.faults.start(),
        base.space.faults.end(),
        base.space.line
    );

    let started = Instant::now();
    let progress = bar(args.runs, "runs");
    let explored = explore::explore(&base, seed, args.first_run, args.runs, jobs, args.keep_going, &|done, failed| {
        progress.set_position(done);
        if failed > 0 {
            progress.set_message(format!("({failed} failed)"));
        }
    });
    progress.finish_and_clear();
    let explored = match explored {
        Ok(e) => e,
        Err(e) => {
            eprintln!("harness error: {e}");
            return exit::HARNESS;
        }
    };
    let failed_runs = explored.failures.len() as u64;
    println!(
        "{} run(s) in {:.1}s: {} passed, {} failed{}",
        explored.runs,
        started.elapsed().as_secs_f64(),
        explored.runs - failed_runs,
        failed_runs,
        if !args.keep_going && failed_runs > 0 { " (stopped at the first failure)" } else { "" }
    );
    for f in &explored.failures {
        print_found(f);
    }
    let Some(first) = explored.failures.first() else { return exit::OK };

    // Shrink the first failure on its first failed check.
    let target = CheckId::of(&first.failed[0]);
    println!("\nshrinking run {} while \"{}\" still fails", first.index, target.subject);
    let shrink_started = Instant::now();
    let sbar = bar(u64::from(args.shrink_runs_max), "shrink runs");
    let shrunk = shrink(&base, first, &target, jobs, args.shrink_runs_max, &|runs, steps| {
        sbar.set_position(u64::from(runs));
        sbar.set_message(format!("({steps} steps)"));
    });
    sbar.finish_and_clear();
    let shrunk: Shrunk = match shrunk {
        Ok(s) => s,
        Err(e) => {
            eprintln!("harness error while shrinking: {e}");
            return exit::HARNESS;
        }
    };
    let (o, s) = (&first.schedule, &shrunk.schedule);
    println!(
        "shrunk in {} run(s), {:.1}s{}: {} fault(s) -> {}, {} agent(s) -> {}, {} host(s) -> {}, run {} -> {}",
        shrunk.runs,
        shrink_started.elapsed().as_secs_f64(),
        if shrunk.budget_spent { " (budget spent: --shrink-runs-max)" } else { "" },
        o.faults.len(),
        s.faults.len(),
        o.agents,
        s.agents,
        o.hosts,
        s.hosts,
        fmt_duration(o.run),
        fmt_duration(s.run)
    );
    for (n, step) in shrunk.steps.iter().enumerate() {
        println!("  {:>2}. {step}", n + 1);
    }
    println!("minimal schedule: {}", faults_line(s));

    let header = format!(
        "Shrunk by `redflag-sim explore {} --seed {seed}` from run {} ({} fault(s) -> {}):\nit fails {}. Reproduce with:\n  cargo run --release -p redflag-sim -- run {} --seed {}",
        args.file.display(),
        first.index,
        o.faults.len(),
        s.faults.len(),
        target.subject,
        out.display(),
        first.run_seed
    );
    if let Err(e) = explore::write_file(&out, &base.text(s, first.run_seed, &header)) {
        eprintln!("error: {e}");
        return exit::HARNESS;
    }
    println!("written: {}", out.display());

    // Read the file back and run it, as `redflag-sim run` would.
    let reproduced = Scenario::load(&out).map_err(|e| e.to_string()).and_then(|sc| run_one(&sc, first.run_seed).map(|r| (sc, r)));
    match reproduced {
        Ok((sc, r)) => match r.verdicts.iter().find(|v| !v.passed && CheckId::of(v) == target) {
            Some(v) => {
                println!("reproduced: FAIL {}: {}", v.subject, v.reason);
                println!("repro:  {}", sc.repro(first.run_seed));
                exit::FAILED
            }
            None => {
                eprintln!("harness error: {} does not reproduce the failed {} (a bug in explore)", out.display(), target.check);
                exit::HARNESS
            }
        },
        Err(e) => {
            eprintln!("harness error: the written file does not run: {e}");
            exit::HARNESS
        }
    }
}
