//! Kill harness: akstore killed at any moment loses no acknowledged write and tears none.
//!
//! It runs the real `akstore` binary on a temporary file. Several clients, each owning a few
//! clusters, send conditional writes concurrently: cluster PUTs that create or replace pools,
//! cluster PATCHes that rotate every pool's eTag, pool PUTs and DELETEs, cluster DELETEs, and
//! writes with a stale `If-Match` that must get 412. Each cycle ends the server abruptly:
//! with SIGKILL after a seeded random delay, or by a failpoint that aborts the process at a
//! chosen step of a commit (in builds with the `failpoints` feature). Some cycles also
//! configure failpoints that fail commits with an error, so clients meet 500s and 503s while
//! the server keeps running. After every cycle the harness:
//! - runs `akstore check` on the file (redb's integrity check, every record decodes, every
//!   pool's revision is at least its cluster's, every eTag a unique UUID v4), which must pass;
//! - restarts the server, which must listen and answer `/readyz` within a bound;
//! - reads every cluster: each must be exactly as the acknowledged writes left it, or as the
//!   one write in flight at the kill leaves it. A state in between (a half-applied cluster
//!   write) fails, a marker of a write that got a 4xx or 503 fails, and the pool list and the
//!   resource group's cluster list must agree with the model (no pool without its cluster);
//! - retries the write that was in flight with its `x-ms-client-request-id`: when the first
//!   attempt was applied, the retry must return that outcome unchanged, not a 412;
//! - checks that no eTag value ever repeats across the run.
//!
//! `CRASH_SEED` (a u64) reproduces a run's choices: the writes, the failpoints and the kill
//! delays. Where a kill lands also depends on timing, so a rerun repeats the scenario rather
//! than the exact instant. `CRASH_CYCLES` sets the number of kill cycles.
//!
//! CI runs this test on the test-profile binary that `cargo test` builds anyway, with
//! [`DEFAULT_CYCLES`] cycles, which take about a minute there. The durability being tested
//! comes from redb's commit protocol and akstore's order of commit and response, which the
//! optimization level does not change; building a release binary in CI as well would double
//! the build for no extra coverage. `just crash` builds the release binary and runs hundreds
//! of cycles.

#[path = "../common/mod.rs"]
mod common;

mod client;
mod model;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use client::{ClientState, Stop};
use common::Server;
use model::EtagRegistry;

/// Cycles when `CRASH_CYCLES` is unset: enough to hit each kill kind many times, few enough
/// for CI.
const DEFAULT_CYCLES: u32 = 30;
/// Concurrent clients.
const CLIENTS: usize = 4;
/// Clusters each client owns.
const CLUSTERS_PER_CLIENT: usize = 3;
/// Longest time the load runs before a SIGKILL.
const MAX_LOAD: Duration = Duration::from_millis(1500);
/// Longest time a cycle waits for a failpoint to abort the process before it sends SIGKILL.
const MAX_ABORT_WAIT: Duration = Duration::from_secs(5);
/// Longest time a restarted server may take to answer `/readyz` with 200 once it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the binary under test has failpoints compiled in.
const FAILPOINTS: bool = cfg!(feature = "failpoints");

/// Failpoints at which an abort lands mid-commit.
const ABORT_POINTS: [&str; 3] = [
    "writer::before_commit",
    "writer::after_commit",
    "apply::between_cluster_and_pools",
];

/// How a cycle ends the server and which failpoints it sets.
#[derive(Clone, Debug)]
struct CyclePlan {
    failpoints: String,
    ending: Ending,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    KillAfter(Duration),
    /// A failpoint aborts the process; SIGKILL follows if it has not after the wait.
    Abort,
}

/// Figures the run prints at its end.
#[derive(Default)]
struct Figures {
    kills: u32,
    aborts: u32,
    abort_fallback_kills: u32,
    restart_ms: Vec<u64>,
    check_ms: Vec<u64>,
    tally: client::Tally,
}

#[test]
fn kill_at_any_moment_loses_nothing() {
    let seed = env_u64("CRASH_SEED").unwrap_or_else(|| fastrand::u64(..));
    let cycles = env_u64("CRASH_CYCLES").map_or(DEFAULT_CYCLES, |c| c as u32);
    eprintln!(
        "crash harness: CRASH_SEED={seed} CRASH_CYCLES={cycles} clients={CLIENTS} \
         failpoints={FAILPOINTS}"
    );
    let started = Instant::now();
    let fail = |cycle: u32, message: &str| -> ! {
        panic!("CRASH_SEED={seed} cycle {cycle}: {message}");
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("crash.redb");
    let etags = Mutex::new(EtagRegistry::default());
    let mut clients: Vec<ClientState> = (0..CLIENTS)
        .map(|index| ClientState::new(index, CLUSTERS_PER_CLIENT, seed))
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut figures = Figures::default();

    for cycle in 0..cycles {
        let plan = choose_plan(&mut rng);

        // Load, then the abrupt end.
        let mut server = start(&data, &plan.failpoints).unwrap_or_else(|e| fail(cycle, &e));
        let base = format!("http://{}", server.addr);
        let stops = std::thread::scope(|scope| {
            let runs: Vec<_> = clients
                .iter_mut()
                .map(|client| {
                    let (base, etags) = (&base, &etags);
                    scope.spawn(move || client.run(&http_client(), base, etags))
                })
                .collect();
            end_server(&mut server, plan.ending, &mut figures);
            runs.into_iter()
                .map(|run| run.join().expect("client thread"))
                .collect::<Vec<_>>()
        });
        for stop in stops {
            if let Stop::Violation(message) = stop {
                fail(cycle, &format!("{plan:?}: {message}"));
            }
        }
        check_log(&server.log()).unwrap_or_else(|e| fail(cycle, &e));
        drop(server);

        // The offline check, then a restart without failpoints to verify.
        let checked = Instant::now();
        run_check(&data).unwrap_or_else(|e| fail(cycle, &e));
        figures.check_ms.push(checked.elapsed().as_millis() as u64);

        let restarted = Instant::now();
        let server = start(&data, "").unwrap_or_else(|e| fail(cycle, &e));
        wait_ready(&server).unwrap_or_else(|e| fail(cycle, &e));
        figures
            .restart_ms
            .push(restarted.elapsed().as_millis() as u64);
        let base = format!("http://{}", server.addr);
        let http = http_client();
        for client in &mut clients {
            client
                .resolve_pending(&http, &base, &etags)
                .and_then(|()| client.verify(&http, &base, &etags))
                .unwrap_or_else(|e| fail(cycle, &format!("client {}: {e}", client.index)));
        }
        check_log(&server.log()).unwrap_or_else(|e| fail(cycle, &e));
        server.kill();
    }

    for client in &clients {
        add_tally(&mut figures.tally, &client.tally);
    }
    print_figures(
        seed,
        cycles,
        &figures,
        etags.lock().unwrap().len(),
        started.elapsed(),
    );
    let file_bytes = std::fs::metadata(&data).map_or(0, |m| m.len());
    eprintln!("  database file at the end: {file_bytes} bytes");
    assert!(
        figures.tally.acknowledged > u64::from(cycles),
        "CRASH_SEED={seed}: too few writes were acknowledged to prove anything"
    );
}

/// Chooses how a cycle ends and which failpoints it sets.
fn choose_plan(rng: &mut fastrand::Rng) -> CyclePlan {
    let kill_after = Duration::from_millis(rng.u64(20..=MAX_LOAD.as_millis() as u64));
    if !FAILPOINTS {
        return CyclePlan {
            failpoints: String::new(),
            ending: Ending::KillAfter(kill_after),
        };
    }
    match rng.u8(..10) {
        // A plain SIGKILL at a random moment.
        0..4 => CyclePlan {
            failpoints: String::new(),
            ending: Ending::KillAfter(kill_after),
        },
        // Commits fail with errors now and then (500s and 503s), then a SIGKILL.
        4..6 => CyclePlan {
            failpoints: "writer::before_commit=3%return;writer::after_commit=3%return;\
                         apply::between_cluster_and_pools=3%return"
                .to_owned(),
            ending: Ending::KillAfter(kill_after),
        },
        // An abort at one step of a commit.
        _ => {
            let point = ABORT_POINTS[rng.usize(..ABORT_POINTS.len())];
            let percent = [2, 5, 20][rng.usize(..3)];
            CyclePlan {
                failpoints: format!("{point}={percent}%return(abort)"),
                ending: Ending::Abort,
            }
        }
    }
}

fn start(data: &Path, failpoints: &str) -> Result<Server, String> {
    let env: Vec<(&str, &str)> = if failpoints.is_empty() {
        Vec::new()
    } else {
        vec![("FAILPOINTS", failpoints)]
    };
    Server::try_start_with_env(data, &["--profile", "arm"], &env)
        .map_err(|log| format!("akstore did not start (FAILPOINTS={failpoints:?}):\n{log}"))
}

/// Ends the server as the plan says and counts how it ended.
fn end_server(server: &mut Server, ending: Ending, figures: &mut Figures) {
    match ending {
        Ending::KillAfter(delay) => {
            std::thread::sleep(delay);
            sigkill(server);
            figures.kills += 1;
        }
        Ending::Abort => match server.wait_exit(MAX_ABORT_WAIT) {
            Some(_) => figures.aborts += 1,
            None => {
                sigkill(server);
                figures.abort_fallback_kills += 1;
            }
        },
    }
}

fn sigkill(server: &mut Server) {
    let pid = server.pid().to_string();
    let status = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -KILL {pid} failed");
    server
        .wait_exit(Duration::from_secs(10))
        .expect("a killed process exits");
}

/// Runs `akstore check` on the file; it must exit 0.
fn run_check(data: &Path) -> Result<(), String> {
    let output = Command::new(env!("CARGO_BIN_EXE_akstore"))
        .args(["check", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| format!("failed to run akstore check: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "akstore check failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Waits for `/readyz` to answer 200.
fn wait_ready(server: &Server) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let status = server
            .client()
            .get(server.raw_url("/readyz"))
            .send()
            .map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "/readyz did not answer 200 within {READY_TIMEOUT:?}: {status:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A server log must show no panic.
fn check_log(log: &[String]) -> Result<(), String> {
    match log.iter().find(|line| line.contains("panicked")) {
        Some(line) => Err(format!("the server panicked: {line}")),
        None => Ok(()),
    }
}

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not an unsigned integer")),
    )
}

fn add_tally(total: &mut client::Tally, tally: &client::Tally) {
    total.acknowledged += tally.acknowledged;
    total.rejected_412 += tally.rejected_412;
    total.not_applied_503 += tally.not_applied_503;
    total.unknown_applied += tally.unknown_applied;
    total.unknown_not_applied += tally.unknown_not_applied;
    total.replays += tally.replays;
}

fn print_figures(seed: u64, cycles: u32, figures: &Figures, etags: usize, elapsed: Duration) {
    let tally = &figures.tally;
    eprintln!("crash harness passed: CRASH_SEED={seed} CRASH_CYCLES={cycles}");
    eprintln!(
        "  endings: {} SIGKILL, {} failpoint aborts, {} SIGKILL after an abort failpoint did not fire",
        figures.kills, figures.aborts, figures.abort_fallback_kills
    );
    eprintln!(
        "  writes: {} acknowledged, {} rejected with 412, {} answered 503, unknown outcomes \
         {} applied / {} not applied, {} replayed by request id",
        tally.acknowledged,
        tally.rejected_412,
        tally.not_applied_503,
        tally.unknown_applied,
        tally.unknown_not_applied,
        tally.replays
    );
    eprintln!("  distinct eTags seen: {etags}");
    eprintln!("  restart to ready (ms): {}", summary(&figures.restart_ms));
    eprintln!("  akstore check (ms):    {}", summary(&figures.check_ms));
    eprintln!("  total: {:.1} s", elapsed.as_secs_f64());
}

/// Minimum, median, 95th percentile and maximum of `values`.
fn summary(values: &[u64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |fraction: f64| sorted[((sorted.len() - 1) as f64 * fraction).round() as usize];
    format!(
        "min {} / median {} / p95 {} / max {}",
        sorted[0],
        at(0.5),
        at(0.95),
        sorted[sorted.len() - 1]
    )
}
