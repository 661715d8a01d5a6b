//! What `tasker bench` reports: [`BenchReport`] (serialised as the `--json` output) and its
//! rendering as text, plus the helpers that turn samples into percentiles and read a process's
//! peak memory.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Version of the JSON layout; raised when a field changes meaning or disappears.
pub(crate) const REPORT_FORMAT: u32 = 1;

/// Everything one `tasker bench` run measured.
#[derive(Debug, Serialize)]
pub(crate) struct BenchReport {
    /// [`REPORT_FORMAT`].
    pub(crate) format: u32,
    /// What was run, on what.
    pub(crate) config: BenchConfig,
    /// The physical limits measured in the same run.
    pub(crate) baseline: Baseline,
    /// The engine run.
    pub(crate) workload: super::workload::WorkloadReport,
    /// The engine's figures divided by the baselines.
    pub(crate) ratios: Ratios,
    /// Peak resident memory.
    pub(crate) memory: Memory,
}

/// The run's settings, as resolved (defaults filled in).
#[derive(Debug, Serialize)]
pub(crate) struct BenchConfig {
    /// Tasks run.
    pub(crate) tasks: u32,
    /// `namespace/name` of the template.
    pub(crate) template: String,
    /// Its version.
    pub(crate) template_version: String,
    /// Steps per task.
    pub(crate) steps_per_task: usize,
    /// Worker count.
    pub(crate) workers: u32,
    /// Steps each worker runs at once.
    pub(crate) capacity: u32,
    /// `in_process` (Rust SDK workers on this process's runtime) or `processes` (`tasker
    /// worker` children).
    pub(crate) worker_mode: &'static str,
    /// `all_at_once` (every task created before the workers start) or `closed_loop` (at most
    /// `concurrency` tasks active; each finished task makes room for the next).
    pub(crate) arrival: &'static str,
    /// Tasks active at once in `closed_loop`; `null` in `all_at_once`.
    pub(crate) concurrency: Option<u32>,
    /// The engine's `batch_size`.
    pub(crate) batch_size: usize,
    /// `sqlite` or `postgres`.
    pub(crate) database: &'static str,
    /// The database URL, password hidden.
    pub(crate) database_url: String,
    /// For SQLite: `synchronous=full|normal|off`; for PostgreSQL: as configured on the server.
    pub(crate) durability: String,
    /// The endpoint the engine bound.
    pub(crate) endpoint: String,
    /// `tcp`, `ipc` or `inproc`.
    pub(crate) transport: String,
    /// CPUs available to this process.
    pub(crate) cpus: usize,
    /// When the run started (UTC, RFC 3339).
    pub(crate) started_at: String,
}

/// The physical limits: ZeroMQ round trips and database commits.
#[derive(Debug, Serialize)]
pub(crate) struct Baseline {
    /// Round trips of one frame.
    pub(crate) zeromq: super::transport_baseline::TransportBaseline,
    /// Commits.
    pub(crate) database: super::store_baseline::StoreBaseline,
}

/// The engine against the baselines.
#[derive(Debug, Serialize)]
pub(crate) struct Ratios {
    /// Step handoff p50 / raw libzmq round-trip p50.
    pub(crate) handoff_p50_over_raw_zeromq_rtt_p50: Option<f64>,
    /// Step handoff p50 / `tasker-transport` round-trip p50.
    pub(crate) handoff_p50_over_transport_rtt_p50: Option<f64>,
    /// Engine steps/s / rows/s of the batched-commit baseline.
    pub(crate) steps_per_s_over_batched_commit_rows_per_s: Option<f64>,
    /// Engine steps/s / commits/s of the single-row-commit baseline.
    pub(crate) steps_per_s_over_single_row_commits_per_s: Option<f64>,
}

/// Peak resident set sizes (`VmHWM`), in KiB.
#[derive(Debug, Serialize)]
pub(crate) struct Memory {
    /// This process (the engine, and the workers when they run in process).
    pub(crate) peak_rss_kib: Option<u64>,
    /// Each worker process, read just before it was stopped (empty for in-process workers).
    pub(crate) worker_processes_peak_rss_kib: Vec<u64>,
}

/// Percentiles of latency samples, in microseconds (nearest rank, as the engine computes them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LatencySummary {
    /// Samples the figures come from.
    pub(crate) samples: usize,
    /// Median.
    pub(crate) p50_us: u64,
    /// 95th percentile.
    pub(crate) p95_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// Largest sample.
    pub(crate) max_us: u64,
    /// Arithmetic mean.
    pub(crate) mean_us: f64,
}

impl LatencySummary {
    /// The summary of `samples` (microseconds), or `None` without samples.
    pub(crate) fn of_micros(mut samples: Vec<u64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Self {
            samples: samples.len(),
            p50_us: rank(0.50),
            p95_us: rank(0.95),
            p99_us: rank(0.99),
            max_us: samples[samples.len() - 1],
            mean_us: sum as f64 / samples.len() as f64,
        })
    }
}

/// `duration` in whole microseconds (saturating).
pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `count / seconds`, or 0 for an empty interval.
pub(crate) fn per_second(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { count / seconds } else { 0.0 }
}

/// `numerator / denominator` when both are positive.
pub(crate) fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (numerator > 0.0 && denominator > 0.0).then(|| numerator / denominator)
}

/// The peak resident set size (`VmHWM` in `/proc/PID/status`) of `pid`, or of this process
/// for `None`, in KiB. `None` where `/proc` cannot tell (another OS, a process gone).
pub(crate) fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn us(us: u64) -> String {
    format!("{us} µs")
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn latency_line(summary: Option<&LatencySummary>, unit: fn(u64) -> String) -> String {
    match summary {
        Some(s) => format!(
            "p50 {} · p95 {} · p99 {} · max {} ({} samples)",
            unit(s.p50_us),
            unit(s.p95_us),
            unit(s.p99_us),
            unit(s.max_us),
            s.samples
        ),
        None => "no samples".to_owned(),
    }
}

fn times(value: Option<f64>) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(v) if v >= 100.0 => format!("{v:.0}×"),
        Some(v) if v >= 1.0 => format!("{v:.1}×"),
        Some(v) => format!("{v:.3}×"),
    }
}

impl BenchReport {
    /// The report as a human reads it.
    pub(crate) fn render_text(&self) -> String {
        let c = &self.config;
        let w = &self.workload;
        let z = &self.baseline.zeromq;
        let d = &self.baseline.database;
        let mut out = String::new();
        let mut line = |text: String| {
            let _ = writeln!(out, "{text}");
        };
        line(format!(
            "tasker bench: {} × {} v{} ({} steps each), {} {} worker{} × capacity {}, {} ({}), {}, {} CPUs, {}",
            c.tasks,
            c.template,
            c.template_version,
            c.steps_per_task,
            c.workers,
            c.worker_mode.replace('_', "-"),
            if c.workers == 1 { "" } else { "s" },
            c.capacity,
            c.database,
            c.durability,
            c.endpoint,
            c.cpus,
            c.started_at
        ));
        line(format!(
            "  zeromq rtt       {} B frames over {}, {} round trips: tasker-transport {}; raw libzmq {}",
            z.frame_bytes,
            z.transport,
            z.round_trips,
            latency_line(Some(&z.tasker_transport.latency), us),
            latency_line(Some(&z.raw_libzmq.latency), us),
        ));
        line(format!(
            "  db commits       {} ledger rows: 1 row/commit {:.0} commits/s; {} rows/commit {:.0} rows/s ({:.0} commits/s)",
            d.rows,
            d.single_row.commits_per_s,
            d.batched.rows_per_commit,
            d.batched.rows_per_s,
            d.batched.commits_per_s
        ));
        line(format!(
            "  creation         {} tasks in {:.2} s ({:.0} tasks/s) via {}; {}",
            w.creation.tasks,
            w.creation.seconds,
            w.creation.tasks_per_s,
            w.creation.method,
            if w.creation.in_run_window {
                "inside the run window".to_owned()
            } else {
                format!(
                    "engine held every task after {:.2} s; excluded from the run window",
                    w.creation.engine_holding_all_after_s
                )
            }
        ));
        line(format!(
            "  run              {} tasks, {} steps in {:.2} s: {:.0} steps/s, {:.0} tasks/s (counting creation: {:.0} steps/s)",
            w.run.tasks,
            w.run.steps,
            w.run.seconds,
            w.run.steps_per_s,
            w.run.tasks_per_s,
            w.run.steps_per_s_including_creation
        ));
        line(format!(
            "  step handoff     {} — parent result received → child dispatched",
            latency_line(w.handoff_latency.as_ref(), ms)
        ));
        line(format!(
            "  task latency     {} — {}",
            latency_line(w.task_latency.as_ref(), ms),
            w.task_latency_from
        ));
        let e = &w.engine;
        line(format!(
            "  engine           {} group commits ({:.1} results each), {} batches ({:.1} steps each), {} steps dispatched; duplicates {}, fenced {}, timed out {}, lost {}",
            e.commits,
            e.results_per_commit,
            e.batches_dispatched,
            e.steps_per_batch,
            e.steps_dispatched,
            e.results_duplicate,
            e.results_fenced,
            e.steps_timed_out,
            e.steps_lost
        ));
        line(format!(
            "  ratios           handoff p50 / raw ZeroMQ RTT p50 {}; / tasker-transport RTT p50 {}; steps/s / batched-commit rows/s {}; steps/s / single-row commits/s {}",
            times(self.ratios.handoff_p50_over_raw_zeromq_rtt_p50),
            times(self.ratios.handoff_p50_over_transport_rtt_p50),
            times(self.ratios.steps_per_s_over_batched_commit_rows_per_s),
            times(self.ratios.steps_per_s_over_single_row_commits_per_s)
        ));
        for (label, calls) in [
            ("store (creation)", &w.store_calls_creation),
            ("store (run)", &w.store_calls_run),
        ] {
            if calls.is_empty() {
                continue;
            }
            line(format!(
                "  {label:<16} {}",
                calls
                    .iter()
                    .take(6)
                    .map(|c| format!(
                        "{} {}× ({:.2}/step, {:.2} ms each)",
                        c.operation,
                        c.calls,
                        c.per_step,
                        c.mean_us / 1000.0
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let workers_rss = if self.memory.worker_processes_peak_rss_kib.is_empty() {
            String::new()
        } else {
            format!(
                "; worker processes {}",
                self.memory
                    .worker_processes_peak_rss_kib
                    .iter()
                    .map(|kib| mib(*kib))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        line(format!(
            "  peak rss         this process {}{workers_rss}",
            self.memory
                .peak_rss_kib
                .map_or_else(|| "unknown".to_owned(), mib)
        ));
        let v = &w.verification;
        line(format!(
            "  verified         {}: {}/{} tasks complete; {}/{} steps executed exactly once ({} never, {} more than once, {} unknown); store: {} steps complete with one attempt, {} not",
            if v.ok { "OK" } else { "FAILED" },
            v.tasks_complete,
            v.tasks,
            v.steps_executed_once,
            v.steps,
            v.steps_never_executed,
            v.steps_executed_more_than_once,
            v.executions_of_unknown_steps,
            v.store_steps_complete_once,
            v.store_steps_not_complete_once
        ));
        for problem in &v.problems {
            line(format!("  problem          {problem}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let summary = LatencySummary::of_micros((1..=200).rev().collect()).expect("samples");
        assert_eq!(summary.samples, 200);
        assert_eq!(summary.p50_us, 100);
        assert_eq!(summary.p95_us, 190);
        assert_eq!(summary.p99_us, 198);
        assert_eq!(summary.max_us, 200);
        assert!((summary.mean_us - 100.5).abs() < 1e-9);
        assert_eq!(LatencySummary::of_micros(Vec::new()), None);
        let one = LatencySummary::of_micros(vec![7]).expect("one sample");
        assert_eq!((one.p50_us, one.p99_us, one.max_us), (7, 7, 7));
    }

    #[test]
    fn reads_the_peak_resident_set() {
        let status = "Name:\ttasker\nVmPeak:\t  300000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib(None).is_some_and(|kib| kib > 0));
        }
    }

    #[test]
    fn ratios_need_two_positive_figures() {
        assert_eq!(ratio(10.0, 4.0), Some(2.5));
        assert_eq!(ratio(10.0, 0.0), None);
        assert_eq!(ratio(0.0, 3.0), None);
        assert_eq!(per_second(10.0, 0.0), 0.0);
        assert_eq!(per_second(10.0, 2.0), 5.0);
    }
}
