//! Proves durability across restarts of the real binary on the same file: the whole state
//! comes back unchanged after a SIGTERM stop and after a SIGKILL, and with writers running
//! while the signal arrives, every acknowledged write is still there afterwards.
//!
//! The interrupted runs check each writer against a model. A writer owns one cluster and
//! applies a fixed sequence of conditional writes to it; the state after the restart must be
//! the state after some prefix of that sequence, no shorter than the acknowledged prefix (a
//! write that was in flight may or may not have landed), with the acknowledged eTags when it
//! is exactly the acknowledged prefix.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Server, cluster_body, cluster_path, pool_body, pool_path};
use reqwest::Method;
use serde_json::{Value, json};

/// Writers running while the server is stopped.
const WRITERS: usize = 8;
/// Acknowledged writes, over all writers, before the signal is sent.
const ACKS_BEFORE_SIGNAL: usize = 200;
/// Bound on one writer's sequence, so a server that never stops cannot run a test forever.
const MAX_OPS_PER_WRITER: u64 = 2_000;

#[test]
fn state_survives_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let server = Server::start(&data, &[]);
    populate(&server);
    let before = server.snapshot();
    assert_eq!(server.stop(), Some(0), "a clean stop exits with 0");

    let server = Server::start(&data, &[]);
    assert_eq!(server.snapshot(), before);
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("database opened")),
        "the server logs the file it opened"
    );
}

#[test]
fn state_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let server = Server::start(&data, &[]);
    populate(&server);
    let before = server.snapshot();
    server.kill();

    let server = Server::start(&data, &[]);
    assert_eq!(server.snapshot(), before);
}

#[test]
fn acknowledged_writes_survive_sigterm() {
    interrupt_writers(|server| {
        assert_eq!(server.stop(), Some(0), "a stop during writes exits with 0");
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    interrupt_writers(Server::kill);
}

/// Creates clusters in two resource groups, pools, a PATCH, and deleted resources.
fn populate(server: &Server) {
    for rg in ["rg1", "Rg2"] {
        for name in ["c1", "C2", "c3"] {
            let reply = server.put(&cluster_path(rg, name), &cluster_body(&["np1", "np2"]));
            assert_eq!(reply.status, 201);
        }
    }
    assert_eq!(
        server
            .put(&pool_path("rg1", "c1", "np3"), &pool_body(3))
            .status,
        201
    );
    let patch = json!({"tags": {"a": "b"}, "properties": {"agentPoolProfiles": [{"name": "np1", "count": 9}]}});
    assert_eq!(
        server
            .send(Method::PATCH, &cluster_path("rg1", "C2"), &[], Some(&patch))
            .status,
        200
    );
    assert_eq!(
        server
            .send(Method::DELETE, &pool_path("rg1", "c3", "np2"), &[], None)
            .status,
        200
    );
    assert_eq!(
        server
            .send(Method::DELETE, &cluster_path("Rg2", "c3"), &[], None)
            .status,
        200
    );
}

/// Runs `WRITERS` writers, calls `interrupt` once `ACKS_BEFORE_SIGNAL` writes are
/// acknowledged, restarts the server on the same file and checks every writer's cluster.
fn interrupt_writers(interrupt: impl FnOnce(&Server)) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let server = Server::start(&data, &[]);
    let acks = AtomicUsize::new(0);

    let writers: Vec<Writer> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..WRITERS)
            .map(|index| {
                let (server, acks) = (&server, &acks);
                scope.spawn(move || Writer::run(server, index, acks))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acks.load(Ordering::SeqCst) < ACKS_BEFORE_SIGNAL {
            assert!(Instant::now() < deadline, "writers too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        interrupt(&server);
        threads
            .into_iter()
            .map(|thread| thread.join().expect("writer thread"))
            .collect()
    });
    drop(server);

    let server = Server::start(&data, &[]);
    for writer in &writers {
        writer.check(&server);
    }
    let landed: u64 = writers.iter().map(|writer| writer.acked).sum();
    assert!(landed as usize >= ACKS_BEFORE_SIGNAL);
    continue_after_restart(&server, &writers[0]);
}

/// A writer's cluster after its first `k` operations.
#[derive(Debug, PartialEq, Eq)]
struct ModelState {
    /// Sequence number in the cluster's tags, of its last PUT.
    cluster_seq: u64,
    /// Sequence number in `np1`'s properties, of its last PUT.
    np1_seq: u64,
    /// Sequence number of `np2`'s creation while it exists.
    np2_seq: Option<u64>,
}

/// The eTags an acknowledged prefix left.
#[derive(Clone, Debug, Default)]
struct Etags {
    cluster: String,
    np1: String,
    np2: Option<String>,
}

/// One writer's record: the operations it attempted and the ones acknowledged.
struct Writer {
    index: usize,
    /// Operations sent, acknowledged or not. Operation `k` (from 1) is `op(k)`.
    attempted: u64,
    /// Operations acknowledged, which are always a prefix of the attempted ones.
    acked: u64,
    etags: Etags,
}

/// What operation `k` does: three kinds in turn.
enum Op {
    PutCluster,
    PutNp1,
    ToggleNp2,
}

fn op(k: u64) -> Op {
    match k % 3 {
        1 => Op::PutCluster,
        2 => Op::PutNp1,
        _ => Op::ToggleNp2,
    }
}

/// The state after the first `k` operations; set-up is operation 0.
fn model(k: u64) -> ModelState {
    let mut state = ModelState {
        cluster_seq: 0,
        np1_seq: 0,
        np2_seq: None,
    };
    for step in 1..=k {
        match op(step) {
            Op::PutCluster => state.cluster_seq = step,
            Op::PutNp1 => state.np1_seq = step,
            Op::ToggleNp2 => {
                state.np2_seq = match state.np2_seq {
                    Some(_) => None,
                    None => Some(step),
                }
            }
        }
    }
    state
}

impl Writer {
    fn cluster(&self) -> String {
        cluster_path("writers", &format!("w{}", self.index))
    }

    fn pool(&self, name: &str) -> String {
        pool_path("writers", &format!("w{}", self.index), name)
    }

    /// Creates the writer's cluster, then applies operations until a request fails to get an
    /// answer (the server is gone) or the bound is reached.
    fn run(server: &Server, index: usize, acks: &AtomicUsize) -> Writer {
        let mut writer = Writer {
            index,
            attempted: 0,
            acked: 0,
            etags: Etags::default(),
        };
        let created = server.put(&writer.cluster(), &writer.cluster_body(0));
        assert_eq!(created.status, 201, "set-up of writer {index}");
        writer.etags.cluster = created.etag();
        writer.etags.np1 = profile_etag(&created.body, "np1").expect("np1 eTag");

        while writer.attempted < MAX_OPS_PER_WRITER {
            let k = writer.attempted + 1;
            writer.attempted = k;
            let Some(reply) = writer.send(server, k) else {
                break;
            };
            writer.record(k, &reply);
            acks.fetch_add(1, Ordering::SeqCst);
        }
        writer
    }

    fn cluster_body(&self, seq: u64) -> Value {
        let mut body = cluster_body(&["np1"]);
        body["tags"] = json!({"seq": seq.to_string()});
        body["properties"]["agentPoolProfiles"][0]["seq"] = json!(0);
        if seq > 0 {
            // Later cluster PUTs leave the pools' properties alone.
            body["properties"]
                .as_object_mut()
                .unwrap()
                .remove("agentPoolProfiles");
        }
        body
    }

    /// Sends operation `k` with the condition the writer's own state implies; `None` when no
    /// answer came back.
    fn send(&self, server: &Server, k: u64) -> Option<common::Reply> {
        let client = server.client();
        let (method, path, header, body) = match op(k) {
            Op::PutCluster => (
                Method::PUT,
                self.cluster(),
                ("If-Match", format!("\"{}\"", self.etags.cluster)),
                Some(self.cluster_body(k)),
            ),
            Op::PutNp1 => (
                Method::PUT,
                self.pool("np1"),
                ("If-Match", format!("\"{}\"", self.etags.np1)),
                Some(json!({"properties": {"seq": k}})),
            ),
            Op::ToggleNp2 => match &self.etags.np2 {
                Some(etag) => (
                    Method::DELETE,
                    self.pool("np2"),
                    ("If-Match", format!("\"{etag}\"")),
                    None,
                ),
                None => (
                    Method::PUT,
                    self.pool("np2"),
                    ("If-None-Match", "*".to_owned()),
                    Some(json!({"properties": {"seq": k}})),
                ),
            },
        };
        let mut request = client
            .request(method, server.url(&path))
            .header(header.0, header.1);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().ok().map(common::Reply::read)
    }

    /// Records the answer to operation `k`, which must be a success: the writer is the only
    /// client of its cluster, so a failed condition means a write was lost or invented.
    fn record(&mut self, k: u64, reply: &common::Reply) {
        let index = self.index;
        match op(k) {
            Op::PutCluster => {
                assert_eq!(reply.status, 200, "writer {index} op {k}: {}", reply.body);
                self.etags.cluster = reply.etag();
                self.etags.np1 = profile_etag(&reply.body, "np1").expect("np1 eTag");
                self.etags.np2 = profile_etag(&reply.body, "np2");
            }
            Op::PutNp1 => {
                assert_eq!(reply.status, 200, "writer {index} op {k}: {}", reply.body);
                self.etags.np1 = reply.etag();
            }
            Op::ToggleNp2 if self.etags.np2.is_some() => {
                assert_eq!(reply.status, 200, "writer {index} op {k}: {}", reply.body);
                self.etags.np2 = None;
            }
            Op::ToggleNp2 => {
                assert_eq!(reply.status, 201, "writer {index} op {k}: {}", reply.body);
                self.etags.np2 = Some(reply.etag());
            }
        }
        self.acked = k;
    }

    /// Checks the writer's cluster after the restart against the model.
    fn check(&self, server: &Server) {
        let index = self.index;
        let cluster = server.get(&self.cluster());
        assert_eq!(cluster.status, 200, "writer {index}");
        let np1 = server.get(&self.pool("np1"));
        assert_eq!(np1.status, 200, "writer {index}");
        let np2 = server.get(&self.pool("np2"));
        let stored = ModelState {
            cluster_seq: cluster.body["tags"]["seq"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            np1_seq: np1.body["properties"]["seq"].as_u64().unwrap(),
            np2_seq: match np2.status {
                200 => Some(np2.body["properties"]["seq"].as_u64().unwrap()),
                404 => None,
                other => panic!("writer {index}: np2 answered {other}"),
            },
        };

        let prefix = (self.acked..=self.attempted)
            .find(|k| model(*k) == stored)
            .unwrap_or_else(|| {
                panic!(
                    "writer {index}: stored {stored:?} is no state after {} to {} operations; \
                     after the acknowledged ones it would be {:?}",
                    self.acked,
                    self.attempted,
                    model(self.acked)
                )
            });
        if prefix == self.acked {
            assert_eq!(
                cluster.etag(),
                self.etags.cluster,
                "writer {index} cluster eTag"
            );
            assert_eq!(np1.etag(), self.etags.np1, "writer {index} np1 eTag");
            let np2_etag = (np2.status == 200).then(|| np2.etag());
            assert_eq!(np2_etag, self.etags.np2, "writer {index} np2 eTag");
        }
    }
}

/// The eTag of pool `name` in a cluster body's `agentPoolProfiles`.
fn profile_etag(cluster: &Value, name: &str) -> Option<String> {
    cluster["properties"]["agentPoolProfiles"]
        .as_array()?
        .iter()
        .find(|profile| profile["name"] == name)
        .map(|profile| profile["eTag"].as_str().expect("eTag").to_owned())
}

/// Writes again after the restart, with the eTag read back, to show the file is writable.
fn continue_after_restart(server: &Server, writer: &Writer) {
    let path = writer.cluster();
    let etag = server.get(&path).etag();
    let reply = server.send(
        Method::PUT,
        &path,
        &[("If-Match", &etag)],
        Some(&writer.cluster_body(MAX_OPS_PER_WRITER + 1)),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
}
