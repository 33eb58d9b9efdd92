//! The live chaos mode, end to end, through the real `redflag-sim live` binary and the release
//! `redflag-agent`:
//! * every `live = true` scenario in `scenarios/` passes against real agent processes (the runs
//!   go in parallel threads: each takes its scenario's wall-clock duration);
//! * the partition scenario passes with `--netns` too, where the partition is a real DROP rule
//!   (root, `ip` and `nft` or `iptables` needed; elsewhere the test prints why it is skipped,
//!   and passes, unless the `CI` environment variable is set: then it fails, so CI cannot skip
//!   it silently);
//! * a scenario without `live = true`, and a missing agent binary, are refused with exit 2;
//! * after a run, and after a run interrupted with SIGINT, no process it started is left, and
//!   its temporary folder and network namespace are gone.
//!
//! The agent binary is the one next to `redflag-sim` in the target folder
//! (`target/release/redflag-agent`). Cargo builds it for these tests only when the agent
//! package is tested in the same command (`cargo test --release --workspace` does); otherwise
//! build it first with `cargo build --release -p redflag-agent`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use redflag_sim::scenario::Scenario;
use redflag_sim::cli::sweep;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redflag-sim")
}

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// The release agent next to `redflag-sim`; a clear failure if it was not built.
fn agent_bin() -> PathBuf {
    let path = Path::new(bin()).with_file_name("redflag-agent");
    assert!(
        path.is_file(),
        "{} is missing: the live tests run the real agent binary. Build it first with \
         `cargo build --release -p redflag-agent` (or run `cargo test --release --workspace`, \
         which builds it)",
        path.display()
    );
    path
}

fn live_scenarios() -> Vec<PathBuf> {
    let files = sweep::collect_files(&[scenarios_dir()]).unwrap();
    files.into_iter().filter(|f| Scenario::load(f).unwrap_or_else(|e| panic!("{e}")).live).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `redflag-sim live FILE --json` with the release agent; the output, the parsed report
/// and the trace's lines.
fn run_live(file: &Path, extra: &[&str]) -> (Output, Option<serde_json::Value>, Vec<serde_json::Value>) {
    let trace = std::env::temp_dir().join(format!(
        "redflag-sim-test-{}-{}{}.jsonl",
        std::process::id(),
        file.file_stem().unwrap().to_string_lossy(),
        extra.join("")
    ));
    let out = Command::new(bin())
        .arg("live")
        .arg(file)
        .arg("--agent-bin")
        .arg(agent_bin())
        .arg("--json")
        .arg("--trace")
        .arg(&trace)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("redflag-sim runs");
    let report = serde_json::from_slice(&out.stdout).ok();
    let lines = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("trace line {l}: {e}")))
        .collect();
    let _ = std::fs::remove_file(&trace);
    (out, report, lines)
}

/// Whether `pid` is one of our processes still alive (a reused PID running something else
/// does not count).
fn still_running(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.starts_with("redflag-"),
        Err(_) => false,
    }
}

/// The processes a report says the run started; asserts none is left.
fn assert_all_stopped(report: &serde_json::Value, what: &str) -> usize {
    let procs = report["live"]["processes"].as_array().unwrap_or_else(|| panic!("{what}: no process list in {report}"));
    for p in procs {
        let pid = p["pid"].as_u64().unwrap();
        assert!(!still_running(pid), "{what}: {} (pid {pid}) is still running after the run", p["role"]);
    }
    procs.len()
}

fn describe(out: &Output, report: &Option<serde_json::Value>) -> String {
    let verdicts = report
        .as_ref()
        .and_then(|r| r["verdicts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|v| format!("{} {}: {}", if v["passed"] == true { "PASS" } else { "FAIL" }, v["subject"], v["reason"]))
        .collect::<Vec<_>>()
        .join("\n    ");
    format!("exit {:?}\n    {verdicts}\n  stderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr).trim())
}

#[test]
fn every_live_scenario_passes_against_real_agents() {
    agent_bin();
    let files = live_scenarios();
    assert!(files.len() >= 4, "the issue asks for at least 4 live scenarios, found {}", files.len());
    let runs: Vec<_> = files
        .into_iter()
        .map(|f| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let (out, report, _) = run_live(&f, &[]);
                (f, out, report, started.elapsed())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (file, out, report, took) = run.join().expect("a live run thread");
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!("{name}: exit {:?} in {:.1}s", out.status.code(), took.as_secs_f64());
        if out.status.code() != Some(0) {
            failures.push(format!("{name}: {}", describe(&out, &report)));
            continue;
        }
        let report = report.unwrap_or_else(|| panic!("{name}: exit 0 without a JSON report"));
        assert!(report["passed"] == true, "{name}: {report}");
        let n = assert_all_stopped(&report, &name);
        let agents = report["agents"].as_u64().unwrap() as usize;
        assert!(n >= agents + 2, "{name}: {n} processes for {agents} agents, a server and a proxy");
        for a in report["live"]["agents"].as_array().unwrap() {
            assert!(a["rss_start_kib"].as_u64().is_some_and(|k| k > 0), "{name}: no RSS at start: {a}");
            assert!(a["rss_end_kib"].as_u64().is_some_and(|k| k > 0), "{name}: no RSS at the end: {a}");
        }
    }
    assert!(failures.is_empty(), "live runs failed:\n{}", failures.join("\n"));
}

/// The firewall rules inside namespace `ns`, as nft or iptables lists them.
fn rules_in(ns: &str) -> String {
    let mut all = String::new();
    for list in [&["nft", "list", "ruleset"][..], &["iptables", "-w", "-S"][..]] {
        if let Ok(out) = Command::new("ip").args(["netns", "exec", ns]).args(list).output() {
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    all
}

/// Whether the netns test runs here, is skipped (with the reason), or fails because CI must
/// not skip it.
#[derive(Debug, PartialEq)]
enum NetnsGate {
    Run,
    Skip(String),
    Fail(String),
}

/// The folders `redflag-sim live --netns` looks for its tools in: `PATH`, then the sbin ones.
fn tool_dirs() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from)).collect()
}

/// Decides from root-ness, the tool folders and the `CI` variable (set, and not `0`/`false`).
fn netns_gate(root: bool, dirs: &[PathBuf], ci: Option<&OsStr>) -> NetnsGate {
    let found = |name: &str| dirs.iter().any(|d| d.join(name).is_file());
    let missing = if !root {
        Some("--netns needs root (it creates a network namespace, a veth pair and DROP rules)")
    } else if !found("ip") {
        Some("--netns needs `ip` (iproute2), which is not installed")
    } else if !found("nft") && !found("iptables") {
        Some("--netns needs `nft` (nftables) or `iptables`, and neither is installed")
    } else {
        None
    };
    let ci = ci.map(|v| v.to_string_lossy().trim().to_ascii_lowercase()).is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
    match missing {
        None => NetnsGate::Run,
        Some(why) if ci => NetnsGate::Fail(format!(
            "{why}; CI is set, so this test may not be skipped: run CI as root with iproute2 and nftables or iptables (.ci/run installs them)"
        )),
        Some(why) => NetnsGate::Skip(format!("skipped: {why}; CI runs it as root")),
    }
}

#[test]
fn the_netns_test_skips_with_a_reason_or_fails_under_ci() {
    let empty = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    for name in ["ip", "iptables"] {
        std::fs::write(tools.path().join(name), "").unwrap();
    }
    let none = [empty.path().to_path_buf()];
    let some = [tools.path().to_path_buf()];
    let ci = Some(OsStr::new("true"));
    assert_eq!(netns_gate(true, &some, None), NetnsGate::Run);
    assert_eq!(netns_gate(true, &some, ci), NetnsGate::Run);
    assert!(matches!(netns_gate(true, &none, None), NetnsGate::Skip(why) if why.contains("iproute2")));
    std::fs::write(empty.path().join("ip"), "").unwrap();
    assert!(matches!(netns_gate(true, &none, None), NetnsGate::Skip(why) if why.contains("nft") && why.contains("iptables")));
    assert!(matches!(netns_gate(true, &none, ci), NetnsGate::Fail(why) if why.contains("iptables") && why.contains("CI is set")));
    assert!(matches!(netns_gate(true, &none, Some(OsStr::new("false"))), NetnsGate::Skip(_)));
    assert!(matches!(netns_gate(true, &none, Some(OsStr::new(""))), NetnsGate::Skip(_)));
    assert!(matches!(netns_gate(false, &some, None), NetnsGate::Skip(why) if why.contains("root")));
    assert!(matches!(netns_gate(false, &some, Some(OsStr::new("1"))), NetnsGate::Fail(_)));
}

#[test]
fn partition_with_netns_is_a_real_drop_rule() {
    match netns_gate(is_root(), &tool_dirs(), std::env::var_os("CI").as_deref()) {
        NetnsGate::Run => {}
        NetnsGate::Skip(why) => {
            eprintln!("{why}");
            return;
        }
        NetnsGate::Fail(why) => panic!("{why}"),
    }
    let file = scenarios_dir().join("live-blackhole-partition.toml");
    let trace_path = std::env::temp_dir().join(format!("redflag-sim-test-{}-netns.jsonl", std::process::id()));
    let child = Command::new(bin())
        .arg("live")
        .arg(&file)
        .args(["--netns", "--json", "--agent-bin"])
        .arg(agent_bin())
        .arg("--trace")
        .arg(&trace_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ns = format!("rfsim-{}", child.id());
    // The partition lasts from 8 s to 18 s after the agents start (a moment after the spawn):
    // look for both DROP rules while it lasts, however long the set-up took.
    let spawned = Instant::now();
    let mut during = String::new();
    while spawned.elapsed() < Duration::from_secs(28) {
        during = rules_in(&ns);
        if during.to_lowercase().matches("drop").count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = child.wait_with_output().unwrap();
    let report: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    let trace: Vec<serde_json::Value> = std::fs::read_to_string(&trace_path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("trace line {l}: {e}")))
        .collect();
    let _ = std::fs::remove_file(&trace_path);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out, &report));
    let report = report.unwrap();
    assert_eq!(report["live"]["netns"].as_str(), Some(ns.as_str()));
    assert!(
        during.to_lowercase().matches("drop").count() >= 2,
        "no DROP rules (both directions) in namespace {ns} during the partition:\n{during}"
    );
    assert!(!Path::new("/run/netns").join(&ns).exists(), "namespace {ns} left behind");
    assert_all_stopped(&report, "--netns run");
    // Agent requests timed out while the proxy saw nothing at all (past one request timeout,
    // for those already in flight when the rule went in).
    let t = |event: &str| trace.iter().find(|r| r["event"] == event).and_then(|r| r["t_ms"].as_u64()).unwrap();
    let (applied, ended) = (t("fault_applied"), t("fault_ended"));
    let at_proxy = trace
        .iter()
        .filter(|r| r["event"] == "proxy_request")
        .filter_map(|r| r["t_ms"].as_u64())
        .filter(|&ms| ms > applied + 2_500 && ms < ended)
        .count();
    assert_eq!(at_proxy, 0, "the proxy answered {at_proxy} requests during the partition");
    let timeouts = trace.iter().filter(|r| r["event"] == "request_finished" && r["class"] == "timeout").count();
    assert!(timeouts > 0, "no request timed out during the partition");
}

#[test]
fn a_scenario_that_is_not_live_is_refused() {
    let out = Command::new(bin())
        .arg("live")
        .arg(scenarios_dir().join("server-restart.toml"))
        .arg("--agent-bin")
        .arg(agent_bin())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a live scenario") && stderr.contains("live = true"), "{stderr}");
}

#[test]
fn a_missing_agent_binary_is_named_with_the_build_command() {
    let out = Command::new(bin())
        .arg("live")
        .arg(scenarios_dir().join("live-server-kill.toml"))
        .arg("--agent-bin")
        .arg("/nonexistent/redflag-agent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/redflag-agent") && stderr.contains("cargo build --release -p redflag-agent"), "{stderr}");
}

/// PIDs whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn an_interrupted_run_stops_every_process_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("interrupted.toml");
    std::fs::write(
        &file,
        r#"
name = "interrupted"
duration = "60s"
live = true
[fleet]
agents = 2
[agent]
check_in_interval = 1
[[faults]]
at = "1s"
action = "crash"
target = "server"
duration = "50s"
"#,
    )
    .unwrap();
    let mut child = Command::new(bin())
        .arg("live")
        .arg(&file)
        .arg("--agent-bin")
        .arg(agent_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait for the server, the proxy and both agents, and for the crash at 1 s to have
    // happened (the server's process is gone by then: 3 children).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        for c in children_of(pid) {
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
        if seen.len() >= 4 && children_of(pid).len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.len() >= 4, "the run started {} processes: {seen:?}", seen.len());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "redflag-sim live did not stop within 20s of SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    for c in &seen {
        assert!(!still_running(*c), "pid {c} is still running after the interrupted run");
    }
    let temp = std::env::temp_dir().join(format!("redflag-sim-live-{pid}-0"));
    assert!(!temp.exists(), "{} left behind", temp.display());
}
