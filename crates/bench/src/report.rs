//! The results of a comparison run: Markdown tables on standard output and the same figures
//! as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::runner::Summary;
use crate::storage::StorageReport;

/// Every figure of one run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub etcd_version: Option<String>,
    /// Reason for an empty etcd column.
    pub etcd_skipped: Option<String>,
    pub workloads: Vec<WorkloadResult>,
    pub memory: Option<MemoryResult>,
    pub open: Option<OpenResult>,
    pub storage: Option<StorageReport>,
    pub targets: Vec<TargetCheck>,
}

/// The machine the run measured, read from `/proc`.
#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    /// One-minute load average just before the first workload and just after the last.
    pub load_before: f64,
    pub load_after: f64,
    /// Highest one-minute load average seen during the run, read every 5 seconds.
    pub load_max: f64,
    /// Length of the whole run, in seconds.
    pub run_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct WorkloadResult {
    pub name: String,
    pub description: String,
    pub akstore: Summary,
    pub etcd: Option<Summary>,
}

/// Resident memory of the servers, in KiB.
#[derive(Debug, Default, Serialize)]
pub struct MemoryResult {
    pub clusters: usize,
    /// Peak over the whole seeding of the large store.
    pub akstore_seed_peak_kib: u64,
    /// Peak during the 64-connection update load on the large store (`VmHWM` after a reset).
    pub akstore_load_peak_kib: u64,
    /// The largest of the samples taken every 50 ms during that load.
    pub akstore_load_sampled_kib: u64,
    pub etcd_load_peak_kib: Option<u64>,
    pub akstore_file_bytes: u64,
    /// Size of etcd's data directory (its bolt database and write-ahead log) at the end.
    pub etcd_data_bytes: Option<u64>,
}

/// Time from starting a server on an existing data set after a clean shutdown until it is
/// ready, in milliseconds, one figure per restart.
#[derive(Debug, Default, Serialize)]
pub struct OpenResult {
    pub clusters: usize,
    pub akstore_ms: Vec<f64>,
    pub akstore_stop_ms: Vec<f64>,
    pub etcd_ms: Vec<f64>,
}

/// One target of the comparison and whether this run met it.
#[derive(Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None` when the run lacks a figure the target needs (no etcd, say).
    pub met: Option<bool>,
}

impl Report {
    pub fn workload(&self, name: &str) -> Option<&WorkloadResult> {
        self.workloads.iter().find(|workload| workload.name == name)
    }

    /// Fills [`Report::targets`] from the measured figures.
    pub fn check_targets(&mut self) {
        let mut checks = Vec::new();
        let pair = |name: &str| {
            self.workload(name)
                .and_then(|w| w.etcd.as_ref().map(|etcd| (&w.akstore, etcd)))
        };

        checks.push(match pair("update-64") {
            Some((akstore, etcd)) => ratio_check(
                "conditional updates, 64 connections: at least 5x etcd's ops/s",
                akstore.ops_per_sec / etcd.ops_per_sec,
                5.0,
            ),
            None => missing("conditional updates, 64 connections: at least 5x etcd's ops/s"),
        });
        checks.push(match pair("update-64") {
            Some((akstore, etcd)) => TargetCheck {
                target: "conditional updates, 64 connections: p99 no higher than etcd's".into(),
                measured: format!("{:.2} ms vs {:.2} ms", akstore.p99_ms, etcd.p99_ms),
                met: Some(akstore.p99_ms <= etcd.p99_ms),
            },
            None => missing("conditional updates, 64 connections: p99 no higher than etcd's"),
        });
        checks.push(match pair("update-1") {
            Some((akstore, etcd)) => TargetCheck {
                target: "conditional updates, 1 connection: median no higher than etcd's".into(),
                measured: format!("{:.2} ms vs {:.2} ms", akstore.median_ms, etcd.median_ms),
                met: Some(akstore.median_ms <= etcd.median_ms),
            },
            None => missing("conditional updates, 1 connection: median no higher than etcd's"),
        });
        checks.push(match pair("get-64") {
            Some((akstore, etcd)) => ratio_check(
                "GET of a cluster, 64 connections: at least 3x etcd's range reads",
                akstore.ops_per_sec / etcd.ops_per_sec,
                3.0,
            ),
            None => missing("GET of a cluster, 64 connections: at least 3x etcd's range reads"),
        });
        if let (Some(small), Some(large)) = (self.workload("list-1k"), self.workload("list-100k")) {
            // "As fast as" within the run-to-run noise of a shared machine.
            let ratio = large.akstore.ops_per_sec / small.akstore.ops_per_sec;
            checks.push(TargetCheck {
                target: "list pages from 100,000 clusters as fast as from 1,000 (within 10%)"
                    .into(),
                measured: format!(
                    "{:.0} vs {:.0} pages/s ({ratio:.2}x)",
                    large.akstore.ops_per_sec, small.akstore.ops_per_sec
                ),
                met: Some(ratio >= 0.9),
            });
        }
        if let Some(memory) = &self.memory {
            let peak = memory
                .akstore_load_peak_kib
                .max(memory.akstore_load_sampled_kib);
            checks.push(TargetCheck {
                target: format!(
                    "peak RSS under the 64-connection load with {} clusters: under 200 MiB",
                    memory.clusters
                ),
                measured: format!("{:.1} MiB", peak as f64 / 1024.0),
                met: Some(peak < 200 * 1024),
            });
        }
        if let Some(open) = &self.open
            && let Some(worst) = open.akstore_ms.iter().copied().reduce(f64::max)
        {
            checks.push(TargetCheck {
                target: format!(
                    "open after a clean shutdown with {} clusters: under 1 s",
                    open.clusters
                ),
                measured: format!("{worst:.0} ms (slowest of {})", open.akstore_ms.len()),
                met: Some(worst < 1000.0),
            });
        }
        self.targets = checks;
    }

    /// Formats the whole report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        let _ = writeln!(
            out,
            "Machine: {} ({} CPUs), {} MiB memory, Linux {}.",
            machine.cpu_model, machine.cpus, machine.memory_mib, machine.kernel
        );
        let _ = writeln!(
            out,
            "Load average (1 min): {:.2} before the workloads, {:.2} after, {:.2} at most; the run took {:.0} s.",
            machine.load_before, machine.load_after, machine.load_max, machine.run_seconds
        );
        match (&self.etcd_version, &self.etcd_skipped) {
            (Some(version), _) => {
                let _ = writeln!(out, "etcd: {version}");
            }
            (None, Some(reason)) => {
                let _ = writeln!(out, "etcd: skipped ({reason})");
            }
            (None, None) => {}
        }
        let _ = writeln!(out, "Command: `{}`\n", self.command);

        self.write_workloads(&mut out);
        self.write_memory_and_open(&mut out);
        self.write_storage(&mut out);
        self.write_targets(&mut out);
        out
    }

    fn write_workloads(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "| workload | server | conns | ops/s | median ms | p99 ms | errors | 412 | akstore/etcd ops/s | server CPU | generator CPU |"
        );
        let _ = writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for workload in &self.workloads {
            let ratio = workload.etcd.as_ref().map_or("n/a".to_owned(), |etcd| {
                format!("{:.2}x", workload.akstore.ops_per_sec / etcd.ops_per_sec)
            });
            write_row(out, &workload.name, "akstore", &workload.akstore, &ratio);
            if let Some(etcd) = &workload.etcd {
                write_row(out, "", "etcd", etcd, "");
            }
        }
        let _ = writeln!(out);
        for workload in &self.workloads {
            let _ = writeln!(out, "- `{}`: {}", workload.name, workload.description);
            for (server, summary) in [
                ("akstore", Some(&workload.akstore)),
                ("etcd", workload.etcd.as_ref()),
            ] {
                if let Some(error) = summary.and_then(|s| s.first_error.as_ref()) {
                    let _ = writeln!(out, "  - first {server} error: {error}");
                }
            }
        }
        let _ = writeln!(out);
    }

    fn write_memory_and_open(&self, out: &mut String) {
        if let Some(memory) = &self.memory {
            let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
            let _ = writeln!(
                out,
                "| memory, {} clusters of 3 pools | akstore | etcd |",
                memory.clusters
            );
            let _ = writeln!(out, "|---|---:|---:|");
            let _ = writeln!(
                out,
                "| peak RSS under the 64-connection update load | {} (sampled {}) | {} |",
                mib(memory.akstore_load_peak_kib),
                mib(memory.akstore_load_sampled_kib),
                memory.etcd_load_peak_kib.map_or("n/a".into(), mib)
            );
            let _ = writeln!(
                out,
                "| peak RSS while seeding | {} | |",
                mib(memory.akstore_seed_peak_kib)
            );
            let _ = writeln!(
                out,
                "| data on disk at the end of the run | {} | {} |\n",
                mib(memory.akstore_file_bytes / 1024),
                memory
                    .etcd_data_bytes
                    .map_or("n/a".into(), |bytes| mib(bytes / 1024))
            );
        }
        if let Some(open) = &self.open {
            let list = |values: &[f64]| {
                if values.is_empty() {
                    "n/a".to_owned()
                } else {
                    values
                        .iter()
                        .map(|ms| format!("{ms:.0}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let _ = writeln!(
                out,
                "| restart with {} clusters | akstore | etcd |",
                open.clusters
            );
            let _ = writeln!(out, "|---|---:|---:|");
            let _ = writeln!(
                out,
                "| start to first ready answer, ms | {} | {} |",
                list(&open.akstore_ms),
                list(&open.etcd_ms)
            );
            let _ = writeln!(
                out,
                "| SIGTERM to exit, ms | {} | |\n",
                list(&open.akstore_stop_ms)
            );
        }
    }

    fn write_storage(&self, out: &mut String) {
        let Some(storage) = &self.storage else {
            return;
        };
        let _ = writeln!(
            out,
            "| raw redb, records per durable commit | commits/s | records/s | median ms | p99 ms |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        for raw in &storage.raw {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.2} | {:.2} |",
                raw.records_per_commit,
                raw.commits_per_sec,
                raw.records_per_sec,
                raw.median_ms,
                raw.p99_ms
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| store conditional updates, no HTTP | threads | ops/s | median ms | p99 ms | requests per commit | errors |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for run in &storage.store {
            let _ = writeln!(
                out,
                "| {} clusters of 3 pools | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} |",
                run.clusters,
                run.threads,
                run.ops_per_sec,
                run.median_ms,
                run.p99_ms,
                run.mean_batch,
                run.errors
            );
        }
        let _ = writeln!(out);
    }

    fn write_targets(&self, out: &mut String) {
        if self.targets.is_empty() {
            return;
        }
        let _ = writeln!(out, "| target | measured | met |");
        let _ = writeln!(out, "|---|---|---|");
        for check in &self.targets {
            let met = match check.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {met} |", check.target, check.measured);
        }
    }
}

fn write_row(out: &mut String, name: &str, server: &str, summary: &Summary, ratio: &str) {
    let _ = writeln!(
        out,
        "| {name} | {server} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {ratio} | {} | {} |",
        summary.connections,
        summary.ops_per_sec,
        summary.median_ms,
        summary.p99_ms,
        summary.errors,
        summary.precondition_failed,
        percent(summary.server_cpu_percent),
        percent(summary.generator_cpu_percent)
    );
}

/// CPU use in percent of one core, as a table cell.
fn percent(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |percent| format!("{percent:.0}%"))
}

fn ratio_check(target: &str, ratio: f64, required: f64) -> TargetCheck {
    TargetCheck {
        target: target.into(),
        measured: format!("{ratio:.2}x"),
        met: Some(ratio >= required),
    }
}

fn missing(target: &str) -> TargetCheck {
    TargetCheck {
        target: target.into(),
        measured: "no etcd figure".into(),
        met: None,
    }
}
