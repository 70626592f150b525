//! Shared harness for the integration tests: runs the real `akstore` binary on a temporary
//! database and a free loopback port, and talks to it over a real socket.
#![allow(dead_code)]

pub mod fixtures;
pub mod table;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// API version the tests send.
pub const API_VERSION: &str = "2026-08-01";
/// Subscription the tests use.
pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-0000000000aa";

/// How long the binary may take to start listening before a test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the binary may take to exit after SIGTERM before a test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `akstore serve` with `extra` arguments on a new database in a new temporary
/// directory, which lives as long as the returned guard.
pub fn start_fresh(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let server = Server::start(&dir.path().join("akstore.redb"), extra);
    (dir, server)
}

/// A running `akstore serve` process.
pub struct Server {
    /// The process; behind a lock so that `stop` and `kill` work while other threads send
    /// requests through a shared reference.
    child: Mutex<Child>,
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
            child: Mutex::new(child),
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

    /// Sends `method` to `path` (api-version appended) with `headers`, each added as its own
    /// header line, and an optional JSON body; reads the whole response.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.request(method, path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Reply::read(request.send().expect("send request"))
    }

    /// GET of `path` without conditions.
    pub fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None)
    }

    /// GET of an absolute URL exactly as given, such as a `nextLink`.
    pub fn get_url(&self, url: &str) -> Reply {
        Reply::read(self.client.get(url).send().expect("send request"))
    }

    /// PUT of `body` to `path` without conditions.
    pub fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, &[], Some(body))
    }

    /// Every item of a list, following `nextLink` until it is null; panics on a non-200 page.
    pub fn list_all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut page = self.get(path);
        loop {
            assert_eq!(page.status, 200, "list page of {path}: {}", page.body);
            items.extend(page.body["value"].as_array().expect("value array").clone());
            match page.body["nextLink"].as_str() {
                Some(next) => page = self.get_url(next),
                None => break,
            }
        }
        items
    }

    /// Every cluster of [`SUBSCRIPTION`] and every pool of each, as the API returns them,
    /// for comparing the whole state before and after a request.
    pub fn snapshot(&self) -> Value {
        let clusters = self.list_all(&subscription_clusters_path());
        let pools: Vec<Value> = clusters
            .iter()
            .flat_map(|cluster| {
                let id = cluster["id"].as_str().expect("cluster id");
                self.list_all(&format!("{id}/agentPools"))
            })
            .collect();
        json!({ "clusters": clusters, "pools": pools })
    }

    /// Lines the server has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns the exit status code. Panics
    /// with the log when it does not exit within [`STOP_TIMEOUT`].
    pub fn stop(&self) -> Option<i32> {
        let mut child = self.child.lock().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for akstore") {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "akstore did not exit after SIGTERM:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON, or `Value::Null` when the body is empty.
    pub body: Value,
}

impl Reply {
    /// Reads a response; panics with the text when a non-empty body is not JSON.
    pub fn read(response: Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().expect("read body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The resource's eTag from the body.
    pub fn etag(&self) -> String {
        etag_of(&self.body)
    }

    /// The `ETag` response header, as sent (quoted).
    pub fn etag_header(&self) -> Option<String> {
        self.headers
            .get("etag")
            .map(|value| value.to_str().expect("ETag is ASCII").to_owned())
    }

    /// `error.code` of an ARM error body; panics when the body is not one.
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("status {}: no error code in {}", self.status, self.body))
    }

    /// `error.message` of an ARM error body.
    pub fn error_message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("status {}: no error message in {}", self.status, self.body))
    }
}

/// Path of the subscription-wide cluster list.
pub fn subscription_clusters_path() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ContainerService/managedClusters")
}

/// Path of a resource group's cluster list.
pub fn resource_group_clusters_path(resource_group: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}/providers/Microsoft.ContainerService/managedClusters"
    )
}

/// A cluster PUT body in `westeurope` with the given agent pools, each with a count of 1.
pub fn cluster_body(pools: &[&str]) -> Value {
    let profiles: Vec<Value> = pools
        .iter()
        .map(|name| json!({"name": name, "count": 1, "vmSize": "Standard_D2s_v3"}))
        .collect();
    json!({
        "location": "westeurope",
        "properties": {"kubernetesVersion": "1.33", "dnsPrefix": "test", "agentPoolProfiles": profiles}
    })
}

/// A pool PUT body.
pub fn pool_body(count: u64) -> Value {
    json!({"properties": {"count": count, "vmSize": "Standard_D2s_v3", "mode": "User"}})
}

/// A fresh eTag value that matches no resource.
pub fn unknown_etag() -> String {
    uuid::Uuid::new_v4().to_string()
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
