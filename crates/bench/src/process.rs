//! The servers under test as child processes on loopback ports: start, wait until ready,
//! read memory figures from `/proc`, stop cleanly.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::http::Connection;

/// How long a server may take to become ready before the run fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between two readings of a server's resident memory.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// Signal number of SIGTERM on Linux.
const SIGTERM: i32 = 15;

/// A server process that this program started; killed when dropped.
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
    ready_path: &'static str,
    command: CommandLine,
}

/// Everything needed to start the same server again on the same data.
#[derive(Clone)]
struct CommandLine {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Memory {
    /// Resident set size now, in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since start or since [`reset_peak`], in KiB (`VmHWM`).
    pub peak_kib: u64,
}

/// Samples a process's resident memory in the background and keeps the largest reading.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts `akstore serve` on `data` and a free loopback port.
    pub async fn akstore(binary: &Path, data: &Path, log: PathBuf) -> Result<Server, String> {
        let addr = free_addr()?;
        let command = CommandLine {
            program: binary.to_path_buf(),
            args: vec![
                "serve".into(),
                "--data".into(),
                data.display().to_string(),
                "--listen".into(),
                addr.to_string(),
            ],
            // Request logs would measure the terminal; warnings and errors still show.
            env: vec![("RUST_LOG", "warn".into())],
        };
        Server::start("akstore", addr, command, log, "/readyz").await
    }

    /// Starts a single-member etcd with its data under `dir`, on free loopback ports.
    pub async fn etcd(binary: &Path, dir: &Path, log: PathBuf) -> Result<Server, String> {
        let client = free_addr()?;
        let peer = free_addr()?;
        let command = CommandLine {
            program: binary.to_path_buf(),
            args: vec![
                "--name".into(),
                "bench".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--listen-client-urls".into(),
                format!("http://{client}"),
                "--advertise-client-urls".into(),
                format!("http://{client}"),
                "--listen-peer-urls".into(),
                format!("http://{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://{peer}"),
                "--initial-cluster".into(),
                format!("bench=http://{peer}"),
                "--logger".into(),
                "zap".into(),
                "--log-level".into(),
                "warn".into(),
            ],
            env: Vec::new(),
        };
        Server::start("etcd", client, command, log, "/health").await
    }

    async fn start(
        name: &'static str,
        addr: SocketAddr,
        command: CommandLine,
        log: PathBuf,
        ready_path: &'static str,
    ) -> Result<Server, String> {
        let child = spawn(&command, &log)?;
        let mut server = Server {
            name,
            addr,
            child,
            log,
            ready_path,
            command,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server with SIGTERM and waits for it to exit; returns how long that took.
    pub async fn stop(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let Some(pid) = self.child.id() else {
            return Ok(Duration::ZERO);
        };
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|error| format!("running kill failed: {error}"))?;
        if !status.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            // etcd ends by re-raising SIGTERM once it has shut down cleanly.
            Ok(Ok(status)) if status.success() || status.signal() == Some(SIGTERM) => {
                Ok(started.elapsed())
            }
            Ok(Ok(status)) => Err(format!("{} exited with {status} after SIGTERM", self.name)),
            Ok(Err(error)) => Err(format!("waiting for {} failed: {error}", self.name)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(format!(
                    "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it",
                    self.name
                ))
            }
        }
    }

    /// Starts the stopped server again on the same data and port; returns the time from the
    /// start of the process until it is ready.
    pub async fn restart(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        self.child = spawn(&self.command, &self.log)?;
        self.wait_ready().await?;
        Ok(started.elapsed())
    }

    /// Polls the readiness path until it returns 200.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut connection = Connection::new(self.addr);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before it was ready; its log is {}",
                    self.name,
                    self.log.display()
                ));
            }
            let reply = connection
                .send(Method::GET, self.ready_path, &[], None)
                .await;
            if matches!(reply, Ok(ref reply) if reply.status == StatusCode::OK) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} was not ready within {READY_TIMEOUT:?}; its log is {}",
                    self.name,
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, peak_kib) = (Arc::clone(&stop), Arc::clone(&peak_kib));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(memory) = memory(pid) {
                        peak_kib.fetch_max(memory.rss_kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(RSS_SAMPLE_INTERVAL).await;
                }
            })
        };
        RssSampler {
            stop,
            peak_kib,
            task,
        }
    }

    /// Stops sampling and returns the largest resident set size seen, in KiB.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak_kib.load(Ordering::Relaxed)
    }
}

/// Reads the current and peak resident memory of process `pid`.
pub fn memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|error| format!("reading {path} failed: {error}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no {name} field"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Resets the peak resident set size (`VmHWM`) of process `pid` to its current size, so the
/// next reading covers only what follows. Returns false where the kernel does not allow it.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn spawn(command: &CommandLine, log: &Path) -> Result<Child, String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| format!("opening {} failed: {error}", log.display()))?;
    let stderr = log_file
        .try_clone()
        .map_err(|error| format!("opening {} failed: {error}", log.display()))?;
    Command::new(&command.program)
        .args(&command.args)
        .envs(command.env.iter().map(|(name, value)| (*name, value)))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("starting {} failed: {error}", command.program.display()))
}

/// Returns a loopback address with a port that was free a moment ago.
fn free_addr() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| format!("finding a free loopback port failed: {error}"))?;
    listener
        .local_addr()
        .map_err(|error| format!("reading a free port failed: {error}"))
}
