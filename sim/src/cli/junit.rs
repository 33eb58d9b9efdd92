//! `redflag-sim sweep --junit FILE`: a sweep's runs as JUnit XML (with `quick-junit`), so any
//! CI shows them as tests: one test suite per scenario file, one test case per seed. A failed
//! run's message holds its failed checks and its repro line; a harness failure is an error.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::sweep::RunOutcome;

/// The report for `runs` (any order; sorted by file and seed here, so the XML is stable).
pub fn report(runs: &[RunOutcome]) -> Report {
    let mut by_file: BTreeMap<&str, Vec<&RunOutcome>> = BTreeMap::new();
    for r in runs {
        by_file.entry(r.file.as_str()).or_default().push(r);
    }
    let mut report = Report::new("redflag-sim sweep");
    let mut total = Duration::ZERO;
    for (file, mut runs) in by_file {
        runs.sort_by_key(|r| r.seed);
        let mut suite = TestSuite::new(file);
        let mut suite_time = Duration::ZERO;
        for r in runs {
            let status = if r.passed {
                TestCaseStatus::success()
            } else if let Some(e) = &r.harness_error {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(format!("harness error: {e}"));
                s.set_description(format!("harness error: {e}\nrepro: {}", r.repro));
                s
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let checks: Vec<String> = r.failed.iter().map(|v| v.subject.clone()).collect();
                s.set_message(format!("failed: {}; repro: {}", checks.join(", "), r.repro));
                let mut text: String = r.failed.iter().map(|v| format!("FAIL {}: {}\n", v.subject, v.reason)).collect();
                text.push_str(&format!("repro: {}\n", r.repro));
                if let Some(t) = &r.trace {
                    text.push_str(&format!("trace: {t}\n"));
                }
                s.set_description(text);
                s.set_type("expectation failed");
                s
            };
            let mut case = TestCase::new(format!("seed {}", r.seed), status);
            case.set_classname(r.scenario.clone());
            let t = Duration::from_millis(r.wall_ms);
            case.set_time(t);
            suite_time += t;
            suite.add_test_case(case);
        }
        suite.set_time(suite_time);
        total += suite_time;
        report.add_test_suite(suite);
    }
    report.set_time(total);
    report
}

/// Writes the report to `path`.
pub fn write(path: &Path, runs: &[RunOutcome]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    report(runs).serialize(std::io::BufWriter::new(file)).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
