//! Commands in the harness, end to end:
//! * RedFlag 0.1.18's delivery loses commands and `no_lost_commands` names them; the scenario
//!   that shows it (`expect_failure = true`) makes `run` exit 0 and say why, and a scenario
//!   that expects a failure but passes exits 1;
//! * a result the server stored but whose answer was lost (a 504) comes back as a duplicate,
//!   answered 200, and still counts once;
//! * runs with commands are deterministic;
//! * the command keys are validated with the word and the line.

use std::path::{Path, PathBuf};
use std::process::Command;

use redflag_sim::runner::run_one;
use redflag_sim::scenario::Scenario;
use redflag_sim::trace::{SimEvent, write_jsonl};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redflag-sim")
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn parse(text: &str) -> Scenario {
    Scenario::parse(text, Path::new("inline.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    Scenario::parse(text, Path::new("inline.toml")).unwrap_err().to_string()
}

#[test]
fn redflag_delivery_loses_commands_and_the_check_names_them() {
    let scenario = Scenario::load(&scenarios_dir().join("redflag-0.1.18-loses-commands.toml")).unwrap();
    assert!(scenario.expect_failure);
    let result = run_one(&scenario, 3).unwrap();
    let lost = result.verdicts.iter().find(|v| v.check == "no_lost_commands").unwrap();
    assert!(!lost.passed, "{lost:?}");
    assert!(lost.reason.contains("commands lost") && lost.reason.contains("00000000-0000-4000-8000-"), "{}", lost.reason);
    // Everything else holds: the agents recovered and ran nothing twice; only commands were lost.
    assert!(result.verdicts.iter().filter(|v| v.check != "no_lost_commands").all(|v| v.passed), "{:?}", result.verdicts);
    assert!(result.as_expected());
    // The same faults with at-least-once delivery lose nothing.
    let twin = Scenario::load(&scenarios_dir().join("commands-through-504.toml")).unwrap();
    let result = run_one(&twin, 3).unwrap();
    assert!(result.passed(), "{:?}", result.verdicts);
    let redelivered = result.records.iter().filter(|r| matches!(r.sim_event(), Some(SimEvent::CommandDelivered { delivery, .. }) if *delivery > 1)).count();
    assert!(redelivered > 0, "the 504s must have forced redeliveries");
}

#[test]
fn run_counts_an_expected_failure_as_a_pass_and_an_unexpected_pass_as_a_failure() {
    let out = Command::new(bin())
        .args(["run"])
        .arg(scenarios_dir().join("redflag-0.1.18-loses-commands.toml"))
        .args(["--seed", "2", "--trace"])
        .arg(std::env::temp_dir().join(format!("redflag-sim-cmd-test-{}.jsonl", std::process::id())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("FAIL  no_lost_commands") && stdout.contains("as expected: this scenario must fail"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expects-failure.toml");
    let text = std::fs::read_to_string(scenarios_dir().join("commands-through-504.toml")).unwrap();
    std::fs::write(&file, text.replacen("duration = \"14m\"", "duration = \"14m\"\nexpect_failure = true", 1)).unwrap();
    let out = Command::new(bin()).args(["run"]).arg(&file).arg("--trace").arg(dir.path().join("t.jsonl")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("NOT as expected"), "{stdout}");
}

/// Results posted while the server answers slower than the proxy's read timeout are stored
/// and answered 504; the agent posts them again, the server keeps the first and answers 200.
const RESULTS_INTO_504: &str = r#"
name = "results-into-504"
duration = "9m"
[fleet]
agents = 4
hosts = 2
[agent]
check_in_interval = 20
[agent.resilience]
request_timeout_seconds = 90
health_check = false
[workload]
execution_time = "70s"
[[commands]]
at = "10s"
type = "install_updates"
[[faults]]
at = "1m"
action = "slow"
target = "server"
delay = "65s"
duration = "3m"
[[expect]]
check = "no_lost_commands"
grace = "1m"
[[expect]]
check = "no_duplicate_execution"
"#;

#[test]
fn a_result_whose_answer_was_lost_comes_back_as_a_duplicate_and_counts_once() {
    let scenario = parse(RESULTS_INTO_504);
    let result = run_one(&scenario, 1).unwrap();
    assert!(result.passed(), "{:?}", result.verdicts);
    let duplicates = result
        .records
        .iter()
        .filter(|r| matches!(r.sim_event(), Some(SimEvent::CommandResult { duplicate: true, .. })))
        .count();
    assert!(duplicates > 0, "every result went into the slow window, so some must have come twice");
}

#[test]
fn runs_with_commands_are_deterministic() {
    let scenario = parse(
        r#"
name = "commands-determinism"
duration = "5m"
[fleet]
agents = 4
hosts = 2
[agent]
check_in_interval = 10
[workload]
commands_per_agent_per_hour = 60
execution_time = "5s"
[[faults]]
at = "1m"
action = "crash"
target = "agents-1"
duration = "20s"
[[faults]]
at = "2m"
action = "loss"
target = "agents"
rate = 0.3
duration = "1m"
"#,
    );
    let bytes = |seed| {
        let mut out = Vec::new();
        write_jsonl(&run_one(&scenario, seed).unwrap().records, &mut out).unwrap();
        out
    };
    let (a, b, c) = (bytes(9), bytes(9), bytes(10));
    assert!(a == b, "same seed, different traces");
    assert!(a != c);
    let text = String::from_utf8(a).unwrap();
    for event in ["command_queued", "command_delivered", "command_started", "command_finished", "command_result", "state_saved"] {
        assert!(text.contains(&format!("\"event\":\"{event}\"")), "trace lacks {event}");
    }
}

#[test]
fn command_keys_are_checked_with_word_and_line() {
    let base = "name = \"x\"\nduration = \"5m\"\n[fleet]\nagents = 2\n";
    let e = error(&format!("{base}[server]\ndelivery = \"exactly-once\"\n"));
    assert!(e.starts_with("inline.toml:6:") && e.contains("\"exactly-once\"") && e.contains("at-least-once"), "{e}");
    let e = error(&format!("{base}[server]\ndelivery = \"redflag-0.1.18\"\nredeliver_after = \"10s\"\n"));
    assert!(e.starts_with("inline.toml:7:") && e.contains("never redelivers"), "{e}");
    let e = error(&format!("{base}[server]\nredeliver_after = \"0s\"\n"));
    assert!(e.contains("redeliver_after must be between"), "{e}");
    let e = error(&format!("{base}[[commands]]\nat = \"1m\"\ntype = \"scan_updates\"\nagents = 3\n"));
    assert!(e.starts_with("inline.toml:8:") && e.contains("from 1 to 2"), "{e}");
    let e = error(&format!("{base}[[commands]]\nat = \"9m\"\ntype = \"scan_updates\"\n"));
    assert!(e.starts_with("inline.toml:6:") && e.contains("not before the end"), "{e}");
    let e = error(&format!("{base}[[commands]]\nat = \"1m\"\ntype = \"scan updates\"\n"));
    assert!(e.starts_with("inline.toml:7:") && e.contains("letters, digits or underscores"), "{e}");
    let e = error(&format!("{base}[[commands]]\nat = \"1m\"\ntpye = \"scan_updates\"\n"));
    assert!(e.contains("tpye"), "{e}");
    let e = error(&format!("{base}[workload]\ncommands_per_agent_per_hour = -1\n"));
    assert!(e.starts_with("inline.toml:6:") && e.contains("commands_per_agent_per_hour"), "{e}");
    let e = error(&format!("{base}[workload]\nexecution_time = \"2h\"\n"));
    assert!(e.contains("execution_time must be at most 1h"), "{e}");
    let e = error(&format!("name = \"x\"\nduration = \"30d\"\n[fleet]\nagents = 1000\n[workload]\ncommands_per_agent_per_hour = 3600\n"));
    assert!(e.contains("more than the limit"), "{e}");
    let e = error(&format!("{base}[[expect]]\ncheck = \"no_duplicate_execution\"\ngrace = \"1m\"\n"));
    assert!(e.contains("\"grace\" does not apply to check \"no_duplicate_execution\""), "{e}");
    let e = error(&format!("{base}[server]\ncommands_per_answer = 0\n"));
    assert!(e.starts_with("inline.toml:6:") && e.contains("commands_per_answer must be between 1 and"), "{e}");
    let e = error(&format!("{base}[[commands]]\nat = \"1m\"\ntype = \"scan_updates\"\ncount = 0\n"));
    assert!(e.starts_with("inline.toml:8:") && e.contains("count must be from 1"), "{e}");
    let e = error(&format!("{base}[[commands]]\nat = \"1m\"\ntype = \"scan_updates\"\ncount = 100000\n[[commands]]\nat = \"2m\"\ntype = \"x\"\ncount = 100000\n"));
    assert!(e.contains("more than the limit"), "{e}");
    // A queue of thousands is one entry; a server that sends them all at once is one key.
    let s = parse(&format!("{base}[server]\ncommands_per_answer = 5000\n[[commands]]\nat = \"1m\"\ntype = \"scan_updates\"\nagents = 1\ncount = 3000\n"));
    assert_eq!(s.delivery.commands_per_answer, 5000);
    let schedule = s.command_schedule(1);
    assert_eq!(schedule.len(), 3000);
    assert!(schedule.iter().all(|c| c.agent == 0) && schedule[2999].id.ends_with("000000003000"));
    // A check about commands in a scenario without any fails, rather than passing vacuously.
    let s = parse(&format!("{base}[agent]\ncheck_in_interval = 30\n[[expect]]\ncheck = \"no_lost_commands\"\n"));
    let v = run_one(&s, 1).unwrap().verdicts;
    assert!(!v[0].passed && v[0].reason.contains("no command was queued"), "{v:?}");
}
