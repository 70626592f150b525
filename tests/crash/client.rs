//! One client of the kill harness: it owns a few clusters in its own resource group, sends
//! conditional writes to them one at a time, and keeps the model of what is on the server.
//!
//! A client owns its clusters alone, so the order of its writes is the order they apply in and
//! the model predicts every state exactly. Clients still run concurrently, so their writes
//! share group commits. A write whose outcome is unknown (a 500, or no response because the
//! server died) is resolved by reading the cluster back and retrying the write with the same
//! client request id: a retry of an applied write must return the recorded outcome.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::model::{self, ClusterState, EtagRegistry, Op, OpKind, Shape, conforms, exact, predict};

/// Pool names the clients choose from.
pub const POOL_NAMES: [&str; 4] = ["np1", "np2", "np3", "np4"];

/// The `If-Match` of a stale write: a UUID no record has.
const STALE_ETAG: &str = "00000000-0000-4000-8000-000000000000";

/// How long a client keeps reading while the server reopens its database after a failure.
const READ_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Counts of what a client's writes did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    pub acknowledged: u64,
    pub rejected_412: u64,
    pub not_applied_503: u64,
    pub unknown_applied: u64,
    pub unknown_not_applied: u64,
    pub replays: u64,
}

/// A client's identity and everything it knows, kept across server restarts.
pub struct ClientState {
    pub index: usize,
    pub resource_group: String,
    pub clusters: Vec<String>,
    pub model: BTreeMap<String, Option<ClusterState>>,
    /// The write in flight when the server died, not yet resolved.
    pub pending: Option<Op>,
    /// Markers of writes that must never appear on the server (4xx and 503 answers).
    pub rejected_markers: HashSet<String>,
    pub rng: fastrand::Rng,
    pub sequence: u64,
    pub tally: Tally,
}

/// Why a client stopped sending.
pub enum Stop {
    /// The server is gone: a request failed at the transport level.
    ServerGone,
    /// The server broke the contract; the text says how.
    Violation(String),
}

/// The response of a write or read: status and JSON body (if any).
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
}

impl ClientState {
    pub fn new(index: usize, clusters_per_client: usize, seed: u64) -> ClientState {
        let clusters = (0..clusters_per_client)
            .map(|k| format!("c{index}x{k}"))
            .collect::<Vec<_>>();
        ClientState {
            index,
            resource_group: format!("crash-rg{index}"),
            model: clusters.iter().map(|c| (c.clone(), None)).collect(),
            clusters,
            pending: None,
            rejected_markers: HashSet::new(),
            rng: fastrand::Rng::with_seed(
                seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            sequence: 0,
            tally: Tally::default(),
        }
    }

    /// Sends writes until the server dies or breaks the contract.
    pub fn run(
        &mut self,
        http: &Client,
        base: &str,
        etags: &std::sync::Mutex<EtagRegistry>,
    ) -> Stop {
        loop {
            let op = self.choose_op();
            let answer = match send(http, base, &self.resource_group, &op, self.current(&op)) {
                Ok(answer) => answer,
                Err(_) => {
                    self.pending = Some(op);
                    return Stop::ServerGone;
                }
            };
            match self.settle(http, base, &op, answer, etags) {
                Ok(()) => {}
                Err(Stop::ServerGone) => {
                    // Still unresolved, unless a 503 already settled it as not applied.
                    if !self.rejected_markers.contains(&op.marker) {
                        self.pending = Some(op);
                    }
                    return Stop::ServerGone;
                }
                Err(violation) => return violation,
            }
        }
    }

    /// Resolves the write left in flight by the last kill: the cluster must be as the model
    /// says or as the write leaves it, and a retry with the same request id must agree.
    pub fn resolve_pending(
        &mut self,
        http: &Client,
        base: &str,
        etags: &std::sync::Mutex<EtagRegistry>,
    ) -> Result<(), String> {
        let Some(op) = self.pending.take() else {
            return Ok(());
        };
        match self.resolve_unknown(http, base, &op, etags) {
            Ok(()) => Ok(()),
            Err(Stop::ServerGone) => Err("the server stopped answering during verification".into()),
            Err(Stop::Violation(message)) => Err(message),
        }
    }

    /// Reads every owned cluster and compares it with the model exactly; also checks that an
    /// absent cluster has no pools and that the resource group lists exactly the model's
    /// clusters.
    pub fn verify(
        &self,
        http: &Client,
        base: &str,
        etags: &std::sync::Mutex<EtagRegistry>,
    ) -> Result<(), String> {
        for cluster in &self.clusters {
            let observed = read_cluster(http, base, &self.resource_group, cluster)
                .map_err(|e| format!("reading {cluster}: {e}"))?;
            conforms(&exact(&self.model[cluster]), &observed)
                .map_err(|e| format!("cluster {cluster} after restart: {e}"))?;
            self.check_no_rejected(cluster, &observed)?;
            if let Some(state) = &observed {
                etags.lock().unwrap().observe(cluster, state)?;
                self.check_pool_reads(http, base, cluster, state)?;
            } else {
                let pools = get(
                    http,
                    base,
                    &format!("{}/agentPools", self.cluster_path(cluster)),
                )
                .map_err(|e| format!("listing pools of {cluster}: {e}"))?;
                if pools.status != 404 {
                    return Err(format!(
                        "pools of absent cluster {cluster} answered {} instead of 404",
                        pools.status
                    ));
                }
            }
        }
        self.verify_listing(http, base)
    }

    /// Checks that each pool read alone agrees with the cluster read.
    fn check_pool_reads(
        &self,
        http: &Client,
        base: &str,
        cluster: &str,
        state: &ClusterState,
    ) -> Result<(), String> {
        let listed = get(
            http,
            base,
            &format!("{}/agentPools", self.cluster_path(cluster)),
        )
        .map_err(|e| format!("listing pools of {cluster}: {e}"))?;
        let values = listed
            .body
            .as_ref()
            .and_then(|b| b.get("value"))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("pool list of {cluster} has no value array"))?;
        let mut pools = BTreeMap::new();
        for value in values {
            let name = value["name"].as_str().unwrap_or_default().to_owned();
            pools.insert(name, model::pool_from_json(value)?);
        }
        if pools != state.pools {
            return Err(format!(
                "pool list of {cluster} {pools:?} disagrees with the cluster read {:?}",
                state.pools
            ));
        }
        Ok(())
    }

    fn verify_listing(&self, http: &Client, base: &str) -> Result<(), String> {
        let path = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerService/managedClusters",
            crate::common::SUBSCRIPTION,
            self.resource_group
        );
        let listed = get(http, base, &path).map_err(|e| format!("listing clusters: {e}"))?;
        let mut names: Vec<String> = listed
            .body
            .as_ref()
            .and_then(|b| b.get("value"))
            .and_then(Value::as_array)
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let expected: Vec<String> = self
            .model
            .iter()
            .filter(|(_, state)| state.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        if names != expected {
            return Err(format!(
                "resource group {} lists {names:?}, expected {expected:?}",
                self.resource_group
            ));
        }
        Ok(())
    }

    fn check_no_rejected(
        &self,
        cluster: &str,
        observed: &Option<ClusterState>,
    ) -> Result<(), String> {
        let Some(state) = observed else {
            return Ok(());
        };
        let markers = std::iter::once(&state.marker).chain(state.pools.values().map(|p| &p.marker));
        for marker in markers {
            if self.rejected_markers.contains(marker) {
                return Err(format!(
                    "cluster {cluster} carries marker {marker} of a write that was rejected"
                ));
            }
        }
        Ok(())
    }

    /// Handles the answer to `op`: updates the model or reports a violation.
    fn settle(
        &mut self,
        http: &Client,
        base: &str,
        op: &Op,
        answer: Answer,
        etags: &std::sync::Mutex<EtagRegistry>,
    ) -> Result<(), Stop> {
        let status = answer.status;
        if op.stale {
            return match status {
                412 => {
                    self.tally.rejected_412 += 1;
                    self.rejected_markers.insert(op.marker.clone());
                    Ok(())
                }
                500 => self.resolve_unknown(http, base, op, etags),
                503 => self.not_applied(http, base, op),
                _ => Err(violation(
                    op,
                    format!("a stale write got {status}, expected 412"),
                )),
            };
        }
        match status {
            200..=299 => {
                self.tally.acknowledged += 1;
                self.accept(op, &answer, etags)
            }
            500 => self.resolve_unknown(http, base, op, etags),
            503 => self.not_applied(http, base, op),
            _ => Err(violation(
                op,
                format!("got {status} {:?}", answer.body.map(|b| b.to_string())),
            )),
        }
    }

    /// Checks a 2xx answer against the prediction and moves the model to it.
    fn accept(
        &mut self,
        op: &Op,
        answer: &Answer,
        etags: &std::sync::Mutex<EtagRegistry>,
    ) -> Result<(), Stop> {
        let current = self.model[&op.cluster].clone();
        let shape = predict(&current, op);
        let next = self
            .state_after(op, &current, answer)
            .map_err(|e| violation(op, e))?;
        conforms(&shape, &next).map_err(|e| violation(op, format!("the answer: {e}")))?;
        if let Some(state) = &next {
            etags
                .lock()
                .unwrap()
                .observe(&op.cluster, state)
                .map_err(|e| violation(op, e))?;
        }
        self.model.insert(op.cluster.clone(), next);
        Ok(())
    }

    /// The cluster state a 2xx answer to `op` describes.
    fn state_after(
        &self,
        op: &Op,
        current: &Option<ClusterState>,
        answer: &Answer,
    ) -> Result<Option<ClusterState>, String> {
        let body = || answer.body.as_ref().ok_or("a 2xx write answer has no body");
        Ok(match &op.kind {
            OpKind::PutCluster { .. } | OpKind::PatchCluster => {
                Some(model::cluster_from_json(body()?)?)
            }
            OpKind::DeleteCluster => None,
            OpKind::PutPool { pool } => {
                let mut state = current.clone().ok_or("pool write on an absent cluster")?;
                state
                    .pools
                    .insert(pool.clone(), model::pool_from_json(body()?)?);
                Some(state)
            }
            OpKind::DeletePool { pool } => {
                let mut state = current.clone().ok_or("pool delete on an absent cluster")?;
                state.pools.remove(pool);
                Some(state)
            }
        })
    }

    /// A 503 promises the write was not applied: the cluster must be unchanged.
    fn not_applied(&mut self, http: &Client, base: &str, op: &Op) -> Result<(), Stop> {
        self.tally.not_applied_503 += 1;
        self.rejected_markers.insert(op.marker.clone());
        let observed = self.read_with_retry(http, base, &op.cluster)?;
        conforms(&exact(&self.model[&op.cluster]), &observed)
            .map_err(|e| violation(op, format!("answered 503 (not applied), but {e}")))
    }

    /// Resolves a write whose outcome is unknown: reads the cluster, which must match either
    /// the model or the write's prediction, then retries the write with the same request id
    /// until the retry gets a definite answer.
    fn resolve_unknown(
        &mut self,
        http: &Client,
        base: &str,
        op: &Op,
        etags: &std::sync::Mutex<EtagRegistry>,
    ) -> Result<(), Stop> {
        loop {
            let current = self.model[&op.cluster].clone();
            let observed = self.read_with_retry(http, base, &op.cluster)?;
            let applied_now = classify(&current, op, &observed)?;
            self.check_no_rejected(&op.cluster, &observed)
                .map_err(Stop::Violation)?;
            if let Some(state) = &observed {
                etags
                    .lock()
                    .unwrap()
                    .observe(&op.cluster, state)
                    .map_err(|e| violation(op, e))?;
            }

            // The retry carries the same request id: an applied write is replayed unchanged,
            // an unapplied one is applied now.
            let answer = send(http, base, &self.resource_group, op, current.clone())
                .map_err(|_| Stop::ServerGone)?;
            match answer.status {
                // The retry's own commit failed: decide again from what is stored.
                500 => continue,
                503 if applied_now => {
                    self.tally.unknown_applied += 1;
                    self.model.insert(op.cluster.clone(), observed);
                    return Ok(());
                }
                503 => {
                    self.tally.unknown_not_applied += 1;
                    self.rejected_markers.insert(op.marker.clone());
                    return Ok(());
                }
                412 if op.stale => {
                    self.tally.rejected_412 += 1;
                    self.rejected_markers.insert(op.marker.clone());
                    return Ok(());
                }
                200..=299 if !op.stale && applied_now => {
                    self.tally.unknown_applied += 1;
                    self.tally.replays += 1;
                    let replayed = self
                        .state_after(op, &current, &answer)
                        .map_err(|e| violation(op, e))?;
                    if replayed != observed {
                        return Err(violation(
                            op,
                            format!(
                                "the replayed outcome {replayed:?} differs from the stored \
                                 {observed:?}"
                            ),
                        ));
                    }
                    self.model.insert(op.cluster.clone(), observed);
                    return Ok(());
                }
                200..=299 if !op.stale => {
                    self.tally.unknown_not_applied += 1;
                    self.tally.acknowledged += 1;
                    return self.accept(op, &answer, etags);
                }
                status => {
                    return Err(violation(
                        op,
                        format!(
                            "retry with the same request id got {status} {:?} (the first \
                             attempt was {})",
                            answer.body.map(|b| b.to_string()),
                            if applied_now {
                                "applied"
                            } else {
                                "not applied"
                            }
                        ),
                    ));
                }
            }
        }
    }

    /// Reads a cluster, retrying while the server answers 503 (reopening its database).
    fn read_with_retry(
        &self,
        http: &Client,
        base: &str,
        cluster: &str,
    ) -> Result<Option<ClusterState>, Stop> {
        let deadline = std::time::Instant::now() + READ_RETRY_WINDOW;
        loop {
            match read_cluster(http, base, &self.resource_group, cluster) {
                Ok(state) => return Ok(state),
                Err(ReadFailure::Transport) => return Err(Stop::ServerGone),
                Err(ReadFailure::Status(503)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(other) => {
                    return Err(Stop::Violation(format!("reading {cluster}: {other}")));
                }
            }
        }
    }

    /// Picks the next write from the model, by weights that keep most clusters populated.
    fn choose_op(&mut self) -> Op {
        self.sequence += 1;
        let cluster = self.clusters[self.rng.usize(..self.clusters.len())].clone();
        let marker = format!("m{}x{}", self.index, self.sequence);
        let request_id = format!(
            "crash-{}-{}",
            self.index,
            uuid::Uuid::from_u128(self.rng.u128(..))
        );
        let state = self.model[&cluster].clone();
        let stale = state.is_some() && self.rng.u8(..100) < 10;

        let kind = match &state {
            None => OpKind::PutCluster {
                pools: self.some_pools(1, 2),
            },
            Some(state) => {
                let roll = self.rng.u8(..100);
                let existing: Vec<String> = state.pools.keys().cloned().collect();
                match roll {
                    0..25 => {
                        let mut pools = self.pick_subset(&existing);
                        if self.rng.bool() {
                            pools.extend(self.some_pools(0, 1));
                        }
                        pools.sort();
                        pools.dedup();
                        OpKind::PutCluster { pools }
                    }
                    25..45 => OpKind::PatchCluster,
                    45..75 => OpKind::PutPool {
                        pool: POOL_NAMES[self.rng.usize(..POOL_NAMES.len())].to_owned(),
                    },
                    75..92 if !existing.is_empty() => OpKind::DeletePool {
                        pool: existing[self.rng.usize(..existing.len())].clone(),
                    },
                    92..100 => OpKind::DeleteCluster,
                    _ => OpKind::PatchCluster,
                }
            }
        };
        Op {
            cluster,
            kind,
            stale,
            marker,
            request_id,
        }
    }

    fn some_pools(&mut self, min: usize, max: usize) -> Vec<String> {
        let count = self.rng.usize(min..=max);
        let mut pools: Vec<String> = (0..count)
            .map(|_| POOL_NAMES[self.rng.usize(..POOL_NAMES.len())].to_owned())
            .collect();
        pools.sort();
        pools.dedup();
        pools
    }

    fn pick_subset(&mut self, names: &[String]) -> Vec<String> {
        names.iter().filter(|_| self.rng.bool()).cloned().collect()
    }

    /// The model's state of the cluster `op` writes.
    fn current(&self, op: &Op) -> Option<ClusterState> {
        self.model[&op.cluster].clone()
    }

    fn cluster_path(&self, cluster: &str) -> String {
        cluster_path(&self.resource_group, cluster)
    }
}

/// Whether `observed` shows `op` applied to `current`; a state that is neither before nor
/// after the write is a violation.
fn classify(
    current: &Option<ClusterState>,
    op: &Op,
    observed: &Option<ClusterState>,
) -> Result<bool, Stop> {
    let unapplied = conforms(&exact(current), observed);
    if op.stale {
        return unapplied.map(|()| false).map_err(|e| violation(op, e));
    }
    let applied: Shape = predict(current, op);
    match (unapplied, conforms(&applied, observed)) {
        (Ok(()), _) => Ok(false),
        (_, Ok(())) => Ok(true),
        (Err(unapplied), Err(applied)) => Err(violation(
            op,
            format!(
                "an unknown outcome left a state that is neither before the write \
                 ({unapplied}) nor after it ({applied})"
            ),
        )),
    }
}

fn violation(op: &Op, message: String) -> Stop {
    Stop::Violation(format!("{op:?}: {message}"))
}

pub fn cluster_path(resource_group: &str, cluster: &str) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{resource_group}/providers/Microsoft.ContainerService/managedClusters/{cluster}",
        crate::common::SUBSCRIPTION
    )
}

/// Why a read did not return a cluster state.
#[derive(Debug)]
pub enum ReadFailure {
    Transport,
    Status(u16),
    Malformed(String),
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::Transport => write!(f, "the request failed at the transport level"),
            ReadFailure::Status(status) => write!(f, "unexpected status {status}"),
            ReadFailure::Malformed(reason) => write!(f, "malformed body: {reason}"),
        }
    }
}

/// GETs a cluster: its state, or `None` on 404.
pub fn read_cluster(
    http: &Client,
    base: &str,
    resource_group: &str,
    cluster: &str,
) -> Result<Option<ClusterState>, ReadFailure> {
    let answer = get(http, base, &cluster_path(resource_group, cluster))
        .map_err(|_| ReadFailure::Transport)?;
    match answer.status {
        200 => {
            let body = answer
                .body
                .ok_or_else(|| ReadFailure::Malformed("no body".into()))?;
            model::cluster_from_json(&body)
                .map(Some)
                .map_err(ReadFailure::Malformed)
        }
        404 => Ok(None),
        status => Err(ReadFailure::Status(status)),
    }
}

pub fn get(http: &Client, base: &str, path: &str) -> Result<Answer, reqwest::Error> {
    let url = format!("{base}{path}?api-version={}", crate::common::API_VERSION);
    let response = http.get(url).send()?;
    into_answer(response)
}

/// Sends `op`, conditioned on `current` (the model's state of its cluster).
pub fn send(
    http: &Client,
    base: &str,
    resource_group: &str,
    op: &Op,
    current: Option<ClusterState>,
) -> Result<Answer, reqwest::Error> {
    let cluster_path = cluster_path(resource_group, &op.cluster);
    let tags = json!({ "w": op.marker });
    let profile =
        |name: &str| json!({"name": name, "count": 1, "vmSize": "Standard_D2s_v3", "tags": tags});
    let pool_etag = |pool: &str| {
        current
            .as_ref()
            .and_then(|state| state.pools.get(pool))
            .map(|pool| pool.etag.clone())
    };
    let cluster_etag = current.as_ref().map(|state| state.etag.clone());

    let (method, path, body, etag) = match &op.kind {
        OpKind::PutCluster { pools } => {
            let profiles: Vec<Value> = pools.iter().map(|name| profile(name)).collect();
            let body = json!({
                "location": "westeurope",
                "tags": tags,
                "properties": { "kubernetesVersion": "1.33", "agentPoolProfiles": profiles },
            });
            (Method::PUT, cluster_path, Some(body), cluster_etag)
        }
        OpKind::PatchCluster => (
            Method::PATCH,
            cluster_path,
            Some(json!({ "tags": tags })),
            cluster_etag,
        ),
        OpKind::DeleteCluster => (Method::DELETE, cluster_path, None, cluster_etag),
        OpKind::PutPool { pool } => {
            let body =
                json!({ "properties": {"count": 1, "vmSize": "Standard_D2s_v3", "tags": tags} });
            (
                Method::PUT,
                format!("{cluster_path}/agentPools/{pool}"),
                Some(body),
                pool_etag(pool),
            )
        }
        OpKind::DeletePool { pool } => (
            Method::DELETE,
            format!("{cluster_path}/agentPools/{pool}"),
            None,
            pool_etag(pool),
        ),
    };

    let url = format!("{base}{path}?api-version={}", crate::common::API_VERSION);
    let mut request = http
        .request(method, url)
        .header("x-ms-client-request-id", &op.request_id);
    request = match (op.stale, etag) {
        (true, _) => request.header("If-Match", format!("\"{STALE_ETAG}\"")),
        (false, Some(etag)) => request.header("If-Match", format!("\"{etag}\"")),
        (false, None) => request.header("If-None-Match", "*"),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    into_answer(request.send()?)
}

fn into_answer(response: reqwest::blocking::Response) -> Result<Answer, reqwest::Error> {
    let status = response.status().as_u16();
    let bytes = response.bytes()?;
    let body = serde_json::from_slice(&bytes).ok();
    Ok(Answer { status, body })
}
