//! Shared harness for the integration tests: runs the real `akstore` binary on a temporary
//! database and a free loopback port, and talks to it over a real socket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};

/// API version the tests send.
pub const API_VERSION: &str = "2026-08-01";
/// Subscription the tests use.
pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-0000000000aa";

/// How long the binary may take to start listening before a test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `akstore serve` process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    client: Client,
}

impl Server {
    /// Starts `akstore serve` on `data` and a free port on 127.0.0.1, with `extra` arguments.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::try_start(data, extra).unwrap_or_else(|log| panic!("akstore did not start:\n{log}"))
    }

    /// Starts the server, or returns its log when it exits or never listens.
    pub fn try_start(data: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_akstore"))
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("AKSTORE_TEST_LOG").unwrap_or("info".into()),
            )
            .env_remove("AKSTORE_DATA")
            .env_remove("AKSTORE_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn akstore");

        // Drain stderr on a thread so the pipe never fills, and report the listening address.
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_sender, addr_receiver) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening")
                        && let Some(addr) = parse_addr(&line)
                    {
                        let _ = addr_sender.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }

        let addr = match addr_receiver.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                return Err(log.lock().unwrap().join("\n"));
            }
        };
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client");
        Ok(Server {
            child,
            addr,
            data: data.to_path_buf(),
            log,
            client,
        })
    }

    /// Absolute URL of `path` with the test api-version appended.
    pub fn url(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!(
            "http://{}{path}{separator}api-version={API_VERSION}",
            self.addr
        )
    }

    /// Absolute URL of `path` exactly as given.
    pub fn raw_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request to `path` with the api-version appended.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Lines the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("wait for akstore").code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of a cluster.
pub fn cluster_path(resource_group: &str, cluster: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}/providers/Microsoft.ContainerService/managedClusters/{cluster}"
    )
}

/// Path of an agent pool.
pub fn pool_path(resource_group: &str, cluster: &str, pool: &str) -> String {
    format!(
        "{}/agentPools/{pool}",
        cluster_path(resource_group, cluster)
    )
}

/// The JSON body of a response; panics with the body text when it is not JSON.
pub fn json_body(response: Response) -> serde_json::Value {
    let text = response.text().expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// The eTag of a cluster (`eTag`) or pool (`properties.eTag`) resource.
pub fn etag_of(resource: &serde_json::Value) -> String {
    resource
        .get("eTag")
        .or_else(|| resource["properties"].get("eTag"))
        .and_then(|value| value.as_str())
        .unwrap_or_else(|| panic!("no eTag in {resource}"))
        .to_owned()
}

fn parse_addr(line: &str) -> Option<SocketAddr> {
    let start = line.find("addr=")? + "addr=".len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
