//! `redflag-sim explore` end to end:
//! * against a deliberately mistuned agent (a 2-minute breaker timeout against a 30 s recovery
//!   bound) it finds a failure, shrinks it to one fault and one agent, writes a standalone
//!   scenario with plain `[[faults]]` and no `[explore]`, and `redflag-sim run` on that file
//!   fails the same check (exit 1);
//! * the same seed draws the same schedules, another seed other ones;
//! * bad input (a reversed or empty range, an action no listed target allows, `--runs 0`) is
//!   refused with exit 2, naming the file, the line and the key.

use std::path::Path;
use std::process::Command;

use redflag_sim::explore::schedule::draw;
use redflag_sim::scenario::Scenario;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redflag-sim")
}

const MISTUNED: &str = r#"
name = "mistuned-explore"
description = "a 2-minute breaker timeout against a 30 s recovery bound"
duration = "8m"

[fleet]
agents = 3
hosts = 1

[agent]
check_in_interval = 20
[agent.resilience]
circuit_breaker_timeout_minutes = 2

[explore]
faults = "2..4"
actions = ["crash", "http_status"]
targets = ["server", "proxy"]
duration = "40s..1m"

[[expect]]
check = "recovers_within"
within = "30s"
"#;

#[test]
fn explore_finds_shrinks_and_writes_a_scenario_that_run_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mistuned.toml");
    std::fs::write(&file, MISTUNED).unwrap();
    let out = dir.path().join("shrunk.toml");
    let explored = Command::new(bin())
        .args(["explore", file.to_str().unwrap(), "--runs", "4", "--seed", "3", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&explored.stdout);
    assert_eq!(explored.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&explored.stderr));
    assert!(stdout.contains("reproduced: FAIL recovers_within 30s"), "{stdout}");
    assert!(stdout.contains("fault(s) -> 1, 3 agent(s) -> 1"), "shrinks to one fault and one agent: {stdout}");

    let text = std::fs::read_to_string(&out).unwrap();
    assert!(!text.contains("[explore]") && text.matches("[[faults]]").count() == 1, "{text}");
    let shrunk = Scenario::load(&out).unwrap_or_else(|e| panic!("{e}"));
    assert!(shrunk.explore.is_none() && shrunk.faults.len() == 1 && shrunk.fleet.agents == 1);

    let run = Command::new(bin()).args(["run", out.to_str().unwrap(), "--trace"]).arg(dir.path().join("t.jsonl")).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  recovers_within 30s"), "{stdout}");
}

#[test]
fn the_same_seed_draws_the_same_schedules() {
    let s = Scenario::parse(MISTUNED, Path::new("m.toml")).unwrap();
    let space = s.explore.clone().unwrap();
    let a: Vec<_> = (0..20).map(|i| draw(&s, &space, 7, i)).collect();
    let b: Vec<_> = (0..20).map(|i| draw(&s, &space, 7, i)).collect();
    let c: Vec<_> = (0..20).map(|i| draw(&s, &space, 8, i)).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    for sch in &a {
        assert!((2..=4).contains(&sch.faults.len()), "{sch:?}");
        for f in &sch.faults {
            let d = f.duration.expect("crash and http_status have durations");
            assert!(d >= std::time::Duration::from_secs(40) && d <= std::time::Duration::from_secs(60), "{f:?}");
            assert!(f.end() + space.settle <= s.duration, "{f:?} leaves {:?} to recover", s.duration - f.end());
        }
    }
}

fn explore_error(text: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(bin()).arg("explore").arg(&file).args(args).current_dir(dir.path()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn bad_explore_input_exits_2_naming_file_line_and_key() {
    let (code, e) = explore_error(&MISTUNED.replace("faults = \"2..4\"", "faults = \"4..2\""), &["--runs", "1"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("bad.toml:16:") && e.contains("faults") && e.contains("reversed"), "{e}");

    let (code, e) = explore_error(&MISTUNED.replace("duration = \"40s..1m\"", "duration = \"2m..40s\""), &["--runs", "1"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("bad.toml:19:") && e.contains("duration") && e.contains("reversed"), "{e}");

    let (code, e) = explore_error(&MISTUNED.replace("faults = \"2..4\"", "faults = \"0..0\""), &["--runs", "1"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("bad.toml:16:") && e.contains("faults"), "{e}");

    let (code, e) = explore_error(
        &MISTUNED.replace("actions = [\"crash\", \"http_status\"]", "actions = [\"crash\", \"slow\"]").replace("targets = [\"server\", \"proxy\"]", "targets = [\"proxy\"]"),
        &["--runs", "1"],
    );
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("bad.toml:18:") && e.contains("\"slow\"") && e.contains("\"server\""), "{e}");

    let (code, e) = explore_error(MISTUNED, &["--runs", "0"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("--runs 0"), "{e}");

    let (code, e) = explore_error(&MISTUNED.replace("[explore]", "[explor]"), &["--runs", "1"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("explor"), "{e}");
}
