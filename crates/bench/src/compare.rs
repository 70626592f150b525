//! `akstore-bench compare`: start akstore and etcd on loopback with temporary data, run every
//! workload against each in turn, stop both, and report.
//!
//! The servers never run a workload at the same time: each gets the machine (shared with the
//! load generator) to itself while it is measured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::dataset::{self, MAIN};
use crate::etcd::PoolKeys;
use crate::process::{self, RssSampler, Server};
use crate::report::{Machine, MemoryResult, OpenResult, Report, WorkloadResult};
use crate::runner::{self, Summary, Timing, Worker};
use crate::{akstore, etcd, storage};

/// Pool counts of the cluster-write workloads.
const WIDE_POOL_COUNTS: [usize; 3] = [0, 10, 100];

/// Restarts measured for the open time.
const RESTARTS: usize = 3;

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// The akstore binary to measure; build it with `cargo build --release`.
    #[arg(long, default_value = "target/release/akstore")]
    pub akstore: PathBuf,

    /// The etcd binary: a path, or a name looked up in PATH.
    #[arg(long, default_value = "etcd")]
    pub etcd: String,

    /// Measure akstore alone.
    #[arg(long)]
    pub no_etcd: bool,

    /// Measured seconds per workload.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,

    /// Seconds of load before each measured window.
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,

    /// Concurrent connections of the multi-connection workloads.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,

    /// Clusters (of 3 pools each) of the small store.
    #[arg(long, default_value_t = 1_000)]
    pub clusters: usize,

    /// Clusters (of 3 pools each) of the large store, for the list, memory and open figures.
    #[arg(long, default_value_t = 100_000)]
    pub large_clusters: usize,

    /// Skip the storage-level benchmark.
    #[arg(long)]
    pub skip_storage: bool,

    /// Path of the JSON report.
    #[arg(long, default_value = "target/bench/results.json")]
    pub json: PathBuf,

    /// Directory for the servers' data and logs; a temporary directory, removed at the end,
    /// when not given.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,

    /// Record a CPU profile of akstore with `perf record` while it serves this workload (a
    /// name from the table, such as `update-64`), and write it and its flat report next to
    /// the JSON report.
    #[arg(long, value_name = "WORKLOAD")]
    pub perf: Option<String>,

    /// Record call graphs in the `--perf` profile (DWARF unwinding, at a lower frequency), and
    /// report inclusive time per function.
    #[arg(long, requires = "perf")]
    pub perf_call_graph: bool,
}

/// The servers of one run.
struct Servers {
    akstore: Server,
    etcd: Option<Server>,
    /// The workload whose akstore run is profiled, and how.
    perf: Option<PerfRequest>,
}

/// A CPU profile to record of one workload's akstore run.
struct PerfRequest {
    workload: String,
    output: PathBuf,
    call_graph: bool,
}

/// Sampling frequency of a flat CPU profile, in samples per second.
const PERF_FREQUENCY_HZ: u32 = 999;

/// Sampling frequency with call graphs: each sample copies 16 KiB of stack, so fewer samples
/// keep the profile small and perf's own CPU use low.
const PERF_CALL_GRAPH_FREQUENCY_HZ: u32 = 199;

/// Runs the whole comparison and returns its report.
pub async fn run(args: CompareArgs, command: String) -> Result<Report, String> {
    let temporary = tempfile::Builder::new()
        .prefix("akstore-bench-")
        .tempdir()
        .map_err(|error| format!("creating a temporary directory failed: {error}"))?;
    let dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&dir)
        .map_err(|error| format!("creating {} failed: {error}", dir.display()))?;
    let timing = Timing {
        warmup: Duration::from_secs(args.warmup_seconds),
        measure: Duration::from_secs(args.seconds),
    };
    let mut report = Report {
        machine: machine(),
        command,
        ..Report::default()
    };
    let started = std::time::Instant::now();
    let load_watch = LoadWatch::start();

    if !args.skip_storage {
        progress("storage level: raw redb commits and the store's group commit");
        let storage_dir = dir.join("storage");
        std::fs::create_dir_all(&storage_dir)
            .map_err(|error| format!("creating {} failed: {error}", storage_dir.display()))?;
        let (seconds, clusters) = (timing.measure, args.clusters);
        let threads = [args.connections, 1];
        report.storage = Some(
            tokio::task::spawn_blocking(move || {
                storage::run(&storage_dir, seconds, clusters, &threads)
            })
            .await
            .map_err(|error| error.to_string())??,
        );
    }

    let mut servers = start_servers(&args, &dir, &mut report).await?;
    let result = run_workloads(&args, timing, &dir, &mut servers, &mut report).await;
    let stopped = stop_servers(&mut servers).await;
    if let Err(error) = &result {
        print_logs(&dir);
        return Err(error.clone());
    }
    stopped?;
    report.machine.load_after = load_average();
    report.machine.load_max = load_watch.finish().await;
    report.machine.run_seconds = started.elapsed().as_secs_f64();
    report.check_targets();
    Ok(report)
}

async fn start_servers(
    args: &CompareArgs,
    dir: &Path,
    report: &mut Report,
) -> Result<Servers, String> {
    if !args.akstore.is_file() {
        return Err(format!(
            "no akstore binary at {}; run `cargo build --release` first or pass --akstore",
            args.akstore.display()
        ));
    }
    let akstore = Server::akstore(
        &args.akstore,
        &dir.join("akstore.redb"),
        dir.join("akstore.log"),
    )
    .await?;
    progress(&format!("akstore listening on {}", akstore.addr));

    let etcd = match find_etcd(args) {
        Err(reason) => {
            eprintln!("akstore-bench: skipping the etcd column: {reason}");
            report.etcd_skipped = Some(reason);
            None
        }
        Ok(binary) => {
            report.etcd_version = etcd_version(&binary).await;
            match Server::etcd(&binary, &dir.join("etcd"), dir.join("etcd.log")).await {
                Ok(server) => {
                    progress(&format!("etcd listening on {}", server.addr));
                    Some(server)
                }
                Err(error) => {
                    // A run without the etcd column still measures akstore; the report and
                    // this message say why the column is empty.
                    print_log(&dir.join("etcd.log"));
                    report.etcd_version = None;
                    let reason = format!("etcd did not start: {error}");
                    eprintln!("akstore-bench: skipping the etcd column: {reason}");
                    report.etcd_skipped = Some(reason);
                    None
                }
            }
        }
    };
    let perf = args.perf.as_ref().map(|workload| {
        let dir = args.json.parent().unwrap_or(Path::new("."));
        PerfRequest {
            workload: workload.clone(),
            output: dir.join(format!("perf-{workload}.data")),
            call_graph: args.perf_call_graph,
        }
    });
    Ok(Servers {
        akstore,
        etcd,
        perf,
    })
}

async fn run_workloads(
    args: &CompareArgs,
    timing: Timing,
    dir: &Path,
    servers: &mut Servers,
    report: &mut Report,
) -> Result<(), String> {
    let connections = args.connections;
    let wide_clusters = connections * 2;

    progress(&format!("seeding {} clusters of 3 pools", args.clusters));
    seed(servers, MAIN, 0..args.clusters, connections).await?;
    for pools in WIDE_POOL_COUNTS {
        seed(servers, dataset::wide(pools), 0..wide_clusters, connections).await?;
    }
    report.machine.load_before = load_average();

    let small = args.clusters;
    let name = |base: &str| format!("{base}-{connections}");
    measure(
        report,
        servers,
        &name("update"),
        format!("PUT of a cluster with If-Match of the eTag its previous write returned, {small} clusters of 3 pools; etcd: txn comparing mod_revision, then one put of the cluster document with its pools"),
        akstore::Update::workers(MAIN, small, connections),
        etcd::Update::workers(MAIN, PoolKeys::InDocument, small, connections),
        timing,
    )
    .await?;
    measure(
        report,
        servers,
        "update-1",
        "the same conditional updates over one connection".into(),
        akstore::Update::workers(MAIN, small, 1),
        etcd::Update::workers(MAIN, PoolKeys::InDocument, small, 1),
        timing,
    )
    .await?;
    measure(
        report,
        servers,
        &name("get"),
        format!(
            "GET of a cluster with its pools, {small} clusters; etcd: range of the cluster key"
        ),
        akstore::Read::workers(MAIN, small, connections),
        etcd::Read::workers(MAIN, small, connections),
        timing,
    )
    .await?;
    for pools in WIDE_POOL_COUNTS {
        let fleet = dataset::wide(pools);
        measure(
            report,
            servers,
            &format!("cluster-write-{pools}-pools"),
            format!("conditional PUT of a cluster of {pools} pools over {wide_clusters} such clusters, {connections} connections; etcd: txn comparing mod_revision, then puts of the cluster and each pool key"),
            akstore::Update::workers(fleet, wide_clusters, connections),
            etcd::Update::workers(fleet, PoolKeys::Put, wide_clusters, connections),
            timing,
        )
        .await?;
    }
    measure(
        report,
        servers,
        "list-1k",
        format!("list pages of 100 clusters of a subscription of {small} clusters, following nextLink, {connections} connections; etcd: range of the prefix with limit 100"),
        akstore::List::workers(MAIN, connections),
        etcd::List::workers(MAIN, connections),
        timing,
    )
    .await?;

    large_store(args, timing, servers, report).await?;
    report.open = Some(open_times(servers, args.large_clusters).await?);
    if let Some(memory) = &mut report.memory {
        memory.akstore_file_bytes = disk_usage(&dir.join("akstore.redb"));
        if servers.etcd.is_some() {
            memory.etcd_data_bytes = Some(disk_usage(&dir.join("etcd")));
        }
    }
    Ok(())
}

/// Adds up the sizes of the files at or under `path`, in bytes; 0 for what cannot be read.
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| disk_usage(&entry.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Grows the store to the large size, then measures list pages and memory under load.
async fn large_store(
    args: &CompareArgs,
    timing: Timing,
    servers: &mut Servers,
    report: &mut Report,
) -> Result<(), String> {
    let (connections, large) = (args.connections, args.large_clusters);
    progress(&format!("seeding up to {large} clusters of 3 pools"));
    seed(servers, MAIN, args.clusters..large, connections).await?;
    let akstore_pid = servers.akstore.pid().ok_or("akstore is not running")?;
    let mut memory = MemoryResult {
        clusters: large,
        akstore_seed_peak_kib: process::memory(akstore_pid)?.peak_kib,
        ..MemoryResult::default()
    };

    measure(
        report,
        servers,
        &format!("list-{}k", large / 1000),
        format!("the same list pages from a subscription of {large} clusters"),
        akstore::List::workers(MAIN, connections),
        etcd::List::workers(MAIN, connections),
        timing,
    )
    .await?;

    // The peak under load alone: reset the kernel's high-water mark and also sample.
    let reset = process::reset_peak(akstore_pid);
    if !reset {
        eprintln!("akstore-bench: cannot reset VmHWM; the load peak includes the seeding");
    }
    let etcd_pid = servers.etcd.as_ref().and_then(Server::pid);
    if let Some(pid) = etcd_pid {
        process::reset_peak(pid);
    }
    let sampler = RssSampler::start(akstore_pid);
    let akstore_workers = akstore::Update::workers(MAIN, large, connections);
    let akstore_summary = run_one(&servers.akstore, akstore_workers, timing).await?;
    memory.akstore_load_sampled_kib = sampler.finish().await;
    memory.akstore_load_peak_kib = process::memory(akstore_pid)?.peak_kib;
    let etcd_summary = match &servers.etcd {
        Some(etcd_server) => {
            let workers = etcd::Update::workers(MAIN, PoolKeys::InDocument, large, connections);
            Some(run_one(etcd_server, workers, timing).await?)
        }
        None => None,
    };
    memory.etcd_load_peak_kib = match etcd_pid {
        Some(pid) => Some(process::memory(pid)?.peak_kib),
        None => None,
    };
    report.workloads.push(WorkloadResult {
        name: format!("update-{connections}-{}k", large / 1000),
        description: format!("the conditional updates over all {large} clusters"),
        akstore: akstore_summary,
        etcd: etcd_summary,
    });
    report.memory = Some(memory);
    Ok(())
}

/// Stops and restarts each server on its data, timing each restart until the server is ready.
async fn open_times(servers: &mut Servers, clusters: usize) -> Result<OpenResult, String> {
    progress("restarting the servers on the large store");
    let mut open = OpenResult {
        clusters,
        ..OpenResult::default()
    };
    for _ in 0..RESTARTS {
        let stop = servers.akstore.stop().await?;
        open.akstore_stop_ms.push(stop.as_secs_f64() * 1000.0);
        let start = servers.akstore.restart().await?;
        open.akstore_ms.push(start.as_secs_f64() * 1000.0);
    }
    if let Some(etcd_server) = &mut servers.etcd {
        for _ in 0..RESTARTS {
            etcd_server.stop().await?;
            let start = etcd_server.restart().await?;
            open.etcd_ms.push(start.as_secs_f64() * 1000.0);
        }
    }
    Ok(open)
}

/// Runs one workload against akstore, then against etcd when it runs, and records both.
async fn measure<A: Worker, E: Worker>(
    report: &mut Report,
    servers: &Servers,
    name: &str,
    description: String,
    akstore_workers: Vec<A>,
    etcd_workers: Vec<E>,
    timing: Timing,
) -> Result<(), String> {
    let recording = match &servers.perf {
        Some(request) if request.workload == name => {
            Some(start_perf(&servers.akstore, request, timing).await?)
        }
        _ => None,
    };
    let akstore = run_one(&servers.akstore, akstore_workers, timing).await?;
    if let (Some(perf), Some(request)) = (recording, &servers.perf) {
        finish_perf(perf, request).await?;
    }
    let etcd = match &servers.etcd {
        Some(server) => Some(run_one(server, etcd_workers, timing).await?),
        None => None,
    };
    report.workloads.push(WorkloadResult {
        name: name.to_owned(),
        description,
        akstore,
        etcd,
    });
    Ok(())
}

/// Starts `perf record` on the server for the length of one workload run.
async fn start_perf(
    server: &Server,
    request: &PerfRequest,
    timing: Timing,
) -> Result<tokio::process::Child, String> {
    let pid = server.pid().ok_or("akstore is not running")?;
    let output = &request.output;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|error| format!("creating {} failed: {error}", dir.display()))?;
    }
    let seconds = (timing.warmup + timing.measure).as_secs_f64();

    let mut command = tokio::process::Command::new("perf");
    command.args(["record", "-e", "cpu-clock"]);
    if request.call_graph {
        command.args(["-F", &PERF_CALL_GRAPH_FREQUENCY_HZ.to_string()]);
        command.args(["--call-graph", "dwarf,16384"]);
    } else {
        command.args(["-F", &PERF_FREQUENCY_HZ.to_string()]);
    }
    let child = command
        .args(["-p", &pid.to_string(), "-o"])
        .arg(output)
        .args(["--", "sleep", &format!("{seconds:.1}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|error| format!("starting perf failed (is linux-perf installed?): {error}"))?;
    progress(&format!(
        "recording a CPU profile of akstore into {}",
        output.display()
    ));
    Ok(child)
}

/// Waits for `perf record` and writes its report by symbol next to the profile: self time
/// per function, or with call graphs the inclusive time per function.
async fn finish_perf(mut perf: tokio::process::Child, request: &PerfRequest) -> Result<(), String> {
    let output = &request.output;
    let status = perf
        .wait()
        .await
        .map_err(|error| format!("waiting for perf failed: {error}"))?;
    if !status.success() {
        return Err(format!("perf record exited with {status}"));
    }

    let mut command = tokio::process::Command::new("perf");
    command.args(["report", "--stdio", "--sort", "dso,symbol"]);
    if request.call_graph {
        command.args(["--children", "-g", "none"]);
    } else {
        command.arg("--no-children");
    }
    let report = command
        .args(["--percent-limit", "0.5", "-i"])
        .arg(output)
        .output()
        .await
        .map_err(|error| format!("running perf report failed: {error}"))?;

    // perf pads every line to the terminal width it assumes.
    let text: String = String::from_utf8_lossy(&report.stdout)
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect();
    let text_path = output.with_extension("txt");
    std::fs::write(&text_path, text)
        .map_err(|error| format!("writing {} failed: {error}", text_path.display()))?;
    progress(&format!(
        "wrote the profile's report to {}",
        text_path.display()
    ));
    Ok(())
}

async fn run_one<W: Worker>(
    server: &Server,
    workers: Vec<W>,
    timing: Timing,
) -> Result<Summary, String> {
    let connections = workers.len();
    let summary = runner::run(server.addr, server.pid(), workers, timing)
        .await
        .map_err(|error| format!("{}: {error}", server.name))?;
    let cpu = |percent: Option<f64>| percent.map_or("n/a".into(), |p| format!("{p:.0}%"));
    progress(&format!(
        "{}: {connections} connections, {:.0} ops/s, median {:.2} ms, p99 {:.2} ms, {} errors, {} 412s, server CPU {}, generator CPU {}",
        server.name,
        summary.ops_per_sec,
        summary.median_ms,
        summary.p99_ms,
        summary.errors,
        summary.precondition_failed,
        cpu(summary.server_cpu_percent),
        cpu(summary.generator_cpu_percent)
    ));
    Ok(summary)
}

async fn seed(
    servers: &Servers,
    fleet: dataset::Fleet,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<(), String> {
    akstore::seed(servers.akstore.addr, fleet, range.clone(), connections)
        .await
        .map_err(|error| format!("seeding akstore: {error}"))?;
    if let Some(etcd_server) = &servers.etcd {
        etcd::seed(etcd_server.addr, fleet, range, connections)
            .await
            .map_err(|error| format!("seeding etcd: {error}"))?;
    }
    Ok(())
}

async fn stop_servers(servers: &mut Servers) -> Result<(), String> {
    let akstore = servers.akstore.stop().await;
    if let Some(etcd_server) = &mut servers.etcd {
        etcd_server.stop().await?;
    }
    akstore.map(|_| ())
}

/// Finds the etcd binary to run, or returns why there is none.
fn find_etcd(args: &CompareArgs) -> Result<PathBuf, String> {
    if args.no_etcd {
        return Err("--no-etcd was given".into());
    }
    let candidate = PathBuf::from(&args.etcd);
    if candidate.components().count() > 1 {
        return if candidate.is_file() {
            Ok(candidate)
        } else {
            Err(format!("no etcd binary at {}", candidate.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(&candidate))
        .find(|file| file.is_file())
        .ok_or_else(|| {
            format!(
                "{} is not in PATH; install Debian's etcd-server package or pass --etcd PATH",
                args.etcd
            )
        })
}

async fn etcd_version(binary: &Path) -> Option<String> {
    let output = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .next()
        .map(|line| line.trim_start_matches("etcd Version:").trim().to_owned())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        memory_mib: memory_kib / 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_before: load_average(),
        ..Machine::default()
    }
}

/// Samples the one-minute load average during the run and keeps the highest, so a run that
/// other processes disturbed shows it.
struct LoadWatch {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<f64>,
}

impl LoadWatch {
    /// Interval between two readings of the load average.
    const INTERVAL: Duration = Duration::from_secs(5);

    fn start() -> LoadWatch {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut highest = load_average();
            loop {
                tokio::select! {
                    _ = stopped.changed() => return highest,
                    () = tokio::time::sleep(LoadWatch::INTERVAL) => {
                        highest = highest.max(load_average());
                    }
                }
            }
        });
        LoadWatch { stop, task }
    }

    async fn finish(self) -> f64 {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(0.0)
    }
}

/// Reads the one-minute load average; 0 where `/proc/loadavg` cannot be read.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn print_logs(dir: &Path) {
    for name in ["akstore.log", "etcd.log"] {
        print_log(&dir.join(name));
    }
}

/// Prints the last lines of a server's log, if it has any.
fn print_log(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return;
    }
    let tail = &lines[lines.len().saturating_sub(20)..];
    eprintln!("--- last lines of {}:\n{}", path.display(), tail.join("\n"));
}

fn progress(message: &str) {
    eprintln!("akstore-bench: {message}");
}
