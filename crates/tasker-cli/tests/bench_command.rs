//! `tasker bench` as a script would run it: a small run with `--json`, checked for the report's
//! structure and for every task and step completed. Never for timing: the figures depend on the
//! machine; only their presence and the completion checks are asserted.

#![allow(clippy::unwrap_used, reason = "a test should fail loudly on any error")]

mod support;

use serde_json::Value;
use support::tasker;

/// Runs `tasker bench --tasks 20 --json` plus `extra`, expects success, returns the report.
fn bench_json(extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "--tasks",
        "20",
        "--json",
        "--round-trips",
        "200",
        "--commit-rows",
        "20",
    ];
    args.extend_from_slice(extra);
    let output = tasker(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tasker bench failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `value[path…]` must be a number.
fn number(report: &Value, path: &[&str]) -> f64 {
    let mut value = report;
    for key in path {
        value = &value[*key];
    }
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {report:#}", path.join(".")))
}

fn check_report(report: &Value, worker_mode: &str) {
    assert_eq!(report["format"], 1);
    let config = &report["config"];
    assert_eq!(config["tasks"], 20);
    assert_eq!(config["template"], "examples/diamond");
    assert_eq!(config["steps_per_task"], 4);
    assert_eq!(config["workers"], 2);
    assert_eq!(config["worker_mode"], worker_mode);
    assert_eq!(config["arrival"], "all_at_once");
    assert_eq!(config["database"], "sqlite");
    assert_eq!(config["transport"], "tcp");

    let zeromq = &report["baseline"]["zeromq"];
    assert_eq!(zeromq["round_trips"], 200);
    for way in ["tasker_transport", "raw_libzmq"] {
        assert_eq!(zeromq[way]["latency"]["samples"], 200, "{way}");
        for field in ["p50_us", "p95_us", "p99_us", "max_us"] {
            number(zeromq, &[way, "latency", field]);
        }
    }
    let database = &report["baseline"]["database"];
    assert_eq!(database["single_row"]["commits"], 20);
    assert_eq!(database["batched"]["rows_per_commit"], 100);
    number(database, &["single_row", "commits_per_s"]);
    number(database, &["batched", "rows_per_s"]);

    let workload = &report["workload"];
    assert_eq!(workload["creation"]["tasks"], 20);
    assert_eq!(workload["creation"]["in_run_window"], false);
    assert_eq!(workload["run"]["tasks"], 20);
    assert_eq!(workload["run"]["steps"], 80);
    for field in ["seconds", "steps_per_s", "tasks_per_s"] {
        assert!(number(workload, &["run", field]) > 0.0, "run.{field}");
    }
    // b and c wait for a, d for b and c: at least three handoffs per diamond.
    assert!(number(workload, &["handoff_latency", "samples"]) >= 60.0);
    for field in ["p50_us", "p95_us", "p99_us", "max_us"] {
        number(workload, &["handoff_latency", field]);
    }
    assert_eq!(workload["task_latency"]["samples"], 20);
    assert_eq!(workload["engine"]["steps_dispatched"], 80);
    assert!(
        workload["store_calls_run"]
            .as_array()
            .unwrap()
            .iter()
            .any(|call| call["operation"] == "transitions_apply"),
        "{workload:#}"
    );

    let verification = &workload["verification"];
    assert_eq!(verification["ok"], true, "{verification:#}");
    assert_eq!(verification["tasks_complete"], 20);
    assert_eq!(verification["steps"], 80);
    assert_eq!(verification["steps_executed_once"], 80);
    assert_eq!(verification["steps_never_executed"], 0);
    assert_eq!(verification["steps_executed_more_than_once"], 0);
    assert_eq!(verification["store_steps_complete_once"], 80);

    for ratio in [
        "handoff_p50_over_raw_zeromq_rtt_p50",
        "handoff_p50_over_transport_rtt_p50",
        "steps_per_s_over_batched_commit_rows_per_s",
    ] {
        number(&report["ratios"], &[ratio]);
    }
    assert!(number(report, &["memory", "peak_rss_kib"]) > 0.0);
}

#[test]
fn in_process_workers_complete_every_task_and_report_every_figure() {
    let report = bench_json(&[]);
    check_report(&report, "in_process");
    assert_eq!(
        report["memory"]["worker_processes_peak_rss_kib"],
        serde_json::json!([])
    );
}

#[test]
fn worker_processes_complete_every_task_and_report_every_figure() {
    let report = bench_json(&["--worker-processes"]);
    check_report(&report, "processes");
    assert_eq!(
        report["memory"]["worker_processes_peak_rss_kib"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
