//! The closed-loop load runner: a fixed number of workers, each with one connection and one
//! request in flight, for a warm-up and then a measured window.
//!
//! Throughput counts the successful requests that started inside the measured window, divided
//! by the window's length. Latencies cover every request that started inside the window,
//! 412s and errors included, measured from just before the request is written to just after
//! its body is read.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http::Connection;

/// Result class of one request.
pub enum Outcome {
    Ok,
    /// A failed precondition: HTTP 412 from akstore, `succeeded: false` from etcd.
    PreconditionFailed,
    Error(String),
}

/// One load worker: its own state (keys it owns, the last version it saw) and its requests.
pub trait Worker: Send + 'static {
    /// Runs before the clock starts, such as reading the current version of every owned key.
    /// Does nothing unless a workload needs it.
    fn prepare(
        &mut self,
        _connection: &mut Connection,
    ) -> impl Future<Output = Result<(), String>> + Send {
        std::future::ready(Ok(()))
    }

    /// Sends one request and classifies its response.
    fn step(&mut self, connection: &mut Connection) -> impl Future<Output = Outcome> + Send;
}

/// How long a workload runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Requests before the measured window, to fill caches and connection pools.
    pub warmup: Duration,
    pub measure: Duration,
}

/// The figures of one workload run against one server.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub connections: usize,
    /// Length of the measured window, in seconds.
    pub seconds: f64,
    /// Requests that started inside the window.
    pub requests: u64,
    pub ok: u64,
    pub precondition_failed: u64,
    pub errors: u64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU time the server used during the window, in percent of one core, so 200 is both
    /// cores of a 2-core machine. `None` where `/proc` has no figure.
    pub server_cpu_percent: Option<f64>,
    /// CPU time this load generator used during the window, in percent of one core.
    pub generator_cpu_percent: Option<f64>,
    /// The first error seen, to tell a broken run from a slow one.
    pub first_error: Option<String>,
}

/// Counts and latencies gathered by one worker.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    precondition_failed: u64,
    errors: u64,
    first_error: Option<String>,
    last_finish: Option<Instant>,
}

/// Runs `workers` against `addr`, one connection each, and summarizes the measured window.
/// `server_pid` is the process whose CPU time the summary reports.
pub async fn run<W: Worker>(
    addr: SocketAddr,
    server_pid: Option<u32>,
    workers: Vec<W>,
    timing: Timing,
) -> Result<Summary, String> {
    let connections = workers.len();

    // Prepare every worker before any clock starts.
    let mut prepared = Vec::with_capacity(connections);
    for mut worker in workers {
        prepared.push(tokio::spawn(async move {
            let mut connection = Connection::new(addr);
            worker.prepare(&mut connection).await?;
            Ok::<_, String>((worker, connection))
        }));
    }
    let mut ready = Vec::with_capacity(connections);
    for task in prepared {
        ready.push(task.await.map_err(|error| error.to_string())??);
    }

    let measure_start = Instant::now() + timing.warmup;
    let end = measure_start + timing.measure;
    let cpu = tokio::spawn(cpu_during(server_pid, measure_start, end));
    let mut running = Vec::with_capacity(connections);
    for (worker, connection) in ready {
        running.push(tokio::spawn(drive(worker, connection, measure_start, end)));
    }
    let mut tallies = Vec::with_capacity(connections);
    for task in running {
        tallies.push(task.await.map_err(|error| error.to_string())?);
    }
    let mut summary = summarize(connections, measure_start, timing.measure, tallies);
    (summary.server_cpu_percent, summary.generator_cpu_percent) =
        cpu.await.map_err(|error| error.to_string())?;
    Ok(summary)
}

/// CPU use of the server and of this process between `start` and `end`, in percent of one
/// core.
async fn cpu_during(
    server_pid: Option<u32>,
    start: Instant,
    end: Instant,
) -> (Option<f64>, Option<f64>) {
    tokio::time::sleep_until(start.into()).await;
    let server_before = server_pid.and_then(cpu_seconds);
    let own_before = cpu_seconds(std::process::id());
    tokio::time::sleep_until(end.into()).await;
    let seconds = end.duration_since(start).as_secs_f64();
    let percent =
        |before: Option<f64>, after: Option<f64>| Some((after? - before?) / seconds * 100.0);
    (
        percent(server_before, server_pid.and_then(cpu_seconds)),
        percent(own_before, cpu_seconds(std::process::id())),
    )
}

/// User plus system CPU time of all threads of process `pid`, in seconds, from
/// `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    // Clock ticks per second of the `/proc` time fields; 100 on every Linux architecture
    // that Rust targets, and not readable without libc.
    const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may contain spaces; the fields after it do not.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / CLOCK_TICKS_PER_SECOND)
}

async fn drive<W: Worker>(
    mut worker: W,
    mut connection: Connection,
    measure_start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let started = Instant::now();
        if started >= end {
            return tally;
        }
        let outcome = worker.step(&mut connection).await;
        if started < measure_start {
            continue;
        }
        let finished = Instant::now();
        let micros = finished.duration_since(started).as_micros();
        tally
            .latencies_us
            .push(u32::try_from(micros).unwrap_or(u32::MAX));
        tally.last_finish = Some(finished);
        match outcome {
            Outcome::Ok => tally.ok += 1,
            Outcome::PreconditionFailed => tally.precondition_failed += 1,
            Outcome::Error(error) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(error);
            }
        }
    }
}

fn summarize(
    connections: usize,
    measure_start: Instant,
    planned: Duration,
    tallies: Vec<Tally>,
) -> Summary {
    let mut latencies: Vec<u32> = Vec::new();
    let (mut ok, mut precondition_failed, mut errors) = (0, 0, 0);
    let mut first_error = None;
    let mut last_finish = measure_start;
    for tally in tallies {
        latencies.extend_from_slice(&tally.latencies_us);
        ok += tally.ok;
        precondition_failed += tally.precondition_failed;
        errors += tally.errors;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
        if let Some(finish) = tally.last_finish {
            last_finish = last_finish.max(finish);
        }
    }
    latencies.sort_unstable();

    // Requests that started just before the end finish a little after it: the window is
    // measured to the last finish, so throughput is not overstated.
    let seconds = last_finish
        .duration_since(measure_start)
        .max(planned)
        .as_secs_f64();
    Summary {
        connections,
        seconds,
        requests: latencies.len() as u64,
        ok,
        precondition_failed,
        errors,
        ops_per_sec: ok as f64 / seconds,
        median_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        server_cpu_percent: None,
        generator_cpu_percent: None,
        first_error,
    }
}

/// Returns the nearest-rank percentile of sorted microsecond latencies, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], fraction: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (fraction * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[index]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&[7000], 0.99), 7.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
