//! Shared harness for the integration tests: runs the real `akstore` binary on a temporary
//! database and a free loopback port, and talks to it over a real socket.
#![allow(dead_code)]

pub mod fixtures;
pub mod table;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

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

    /// Starts the server, or returns its log when it exits, never listens or never gets ready.
    pub fn try_start(data: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_command(serve_command(data, extra), data)
    }

    /// Starts `command`, a prepared `akstore serve` (see [`serve_command`]), possibly run through
    /// a wrapper such as a shell; waits until it listens and `/readyz` answers 200.
    pub fn try_start_command(command: Command, data: &Path) -> Result<Server, String> {
        let server = Self::launch(command, data)?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Starts the server with extra environment variables (such as `FAILPOINTS`), or returns
    /// its log when it exits, never listens or never gets ready. With an absolute `data` it
    /// runs in the directory of `data`, so a core dump of an aborted process lands beside the
    /// temporary file, not in the repository.
    pub fn try_start_with_env(
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut command = serve_command(data, extra);
        command.env_remove("FAILPOINTS").envs(env.iter().copied());
        if let Some(directory) = data.parent().filter(|d| data.is_absolute() && d.is_dir()) {
            command.current_dir(directory);
        }
        Self::try_start_command(command, data)
    }

    /// Starts `command` and returns once it listens, before its database is open; its probes
    /// answer from then on.
    pub fn launch(mut command: Command, data: &Path) -> Result<Server, String> {
        let mut child = command
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

    /// Polls `/readyz` until it answers 200; the server listens before its database is open.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            let exited = self.child.lock().unwrap().try_wait();
            if let Ok(Some(status)) = exited {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "akstore exited with {status}:\n{}",
                    self.log_text()
                ));
            }
            // Closed after the answer, so the poll leaves no idle connection holding a slot.
            let ready = self
                .client
                .get(self.raw_url("/readyz"))
                .header("connection", "close")
                .send()
                .is_ok_and(|response| response.status() == 200);
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "akstore was not ready in time:\n{}",
            self.log_text()
        ))
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

    /// GETs `path` exactly as given, as the probes and `/metrics` are read.
    pub fn get_raw(&self, path: &str) -> Response {
        self.client
            .get(self.raw_url(path))
            .send()
            .expect("GET from akstore")
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

    /// The log so far as one text.
    pub fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// Waits until a log line contains `text`; false on timeout.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().iter().any(|line| line.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Sends a signal by name (`TERM`, `INT`) without waiting.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().expect("poll akstore") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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

/// An `akstore serve` command on `data` and a free loopback port, with `extra` arguments and the
/// test log level; the caller may add environment or wrap it before starting it.
pub fn serve_command(data: &Path, extra: &[&str]) -> Command {
    let mut command = akstore_command();
    command
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra);
    command
}

/// The `akstore` binary with the test log level and no inherited `AKSTORE_*` settings.
pub fn akstore_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_akstore"));
    command.env(
        "RUST_LOG",
        std::env::var("AKSTORE_TEST_LOG").unwrap_or("info".into()),
    );
    for (name, _) in std::env::vars() {
        if name.starts_with("AKSTORE_") && name != "AKSTORE_TEST_LOG" {
            command.env_remove(name);
        }
    }
    command
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

/// The address of a `listening` line, in the text (`addr=...`) or JSON (`"addr":"..."`) format.
fn parse_addr(line: &str) -> Option<SocketAddr> {
    let start = match line.find("addr=") {
        Some(index) => index + "addr=".len(),
        None => line.find("\"addr\":\"")? + "\"addr\":\"".len(),
    };
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Wraps `command` in `bash -c`, running `prelude` (for example `ulimit -f 2048`) before it
/// replaces the shell, so the process keeps the shell's pid.
pub fn in_shell(command: &Command, prelude: &str) -> Command {
    let mut shell = Command::new("bash");
    shell
        .arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell
}

/// A raw HTTP/1.1 connection, for what a normal client cannot do: send a body in parts, or
/// hold a connection open without sending anything.
pub struct RawConnection {
    stream: TcpStream,
}

/// A response read from a [`RawConnection`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Status line and headers, lower-cased.
    pub head: String,
    pub body: String,
}

impl RawConnection {
    pub fn open(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr).expect("connect to akstore");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set read timeout");
        RawConnection { stream }
    }

    /// Opens a connection and sends a PUT of `body` to `target` (path and query), stopping
    /// after the first `sent` bytes of the body.
    pub fn partial_put(addr: SocketAddr, target: &str, body: &[u8], sent: usize) -> RawConnection {
        let mut connection = RawConnection::open(addr);
        let head = format!(
            "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        connection.send(head.as_bytes());
        connection.send(&body[..sent]);
        connection
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to akstore");
        self.stream.flush().expect("flush to akstore");
    }

    /// Reads one response: the head, then a body of its Content-Length, or to the end of the
    /// stream without one.
    pub fn read_response(&mut self) -> RawResponse {
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let read = self.stream.read(&mut buffer).expect("read response");
            assert!(
                read > 0,
                "connection closed before a response head: {bytes:?}"
            );
            bytes.extend_from_slice(&buffer[..read]);
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]).to_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head}"));
        let length = head.lines().find_map(|line| {
            line.strip_prefix("content-length:").map(|value| {
                value
                    .trim()
                    .parse::<usize>()
                    .expect("numeric content-length")
            })
        });
        let mut body = bytes[head_end..].to_vec();
        match length {
            Some(length) => {
                while body.len() < length {
                    let read = self.stream.read(&mut buffer).expect("read body");
                    assert!(read > 0, "connection closed inside the body");
                    body.extend_from_slice(&buffer[..read]);
                }
            }
            None => {
                self.stream.read_to_end(&mut body).expect("read body");
            }
        }
        RawResponse {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
