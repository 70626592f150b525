//! The same workloads against etcd's v3 HTTP JSON gateway.
//!
//! A conditional update is one `/v3/kv/txn`: compare the cluster key's `mod_revision` with the
//! revision of this worker's last write of it, then put the cluster document (its pools
//! included), and with [`PoolKeys::Put`] every pool key too. A read is one `/v3/kv/range` of the cluster key, and a list page is a `/v3/kv/range`
//! of the clusters' prefix with `limit` set. etcd's gateway takes keys and values in base64
//! and 64-bit integers as decimal strings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::dataset::{Fleet, pool_profile};
use crate::http::{Connection, Reply};
use crate::runner::{Outcome, Worker};

/// Most operations etcd accepts in one transaction (its `--max-txn-ops` default).
const MAX_TXN_OPS: usize = 128;

/// Items in one list page, as akstore's default page size.
pub const PAGE_SIZE: usize = 100;

/// Whether a cluster write also puts the pool keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKeys {
    /// Put only the cluster document, pools included: the single put of a plain
    /// compare-and-swap, etcd's cheapest write of the cluster.
    InDocument,
    /// Also put every pool key, as akstore rewrites every pool record of the cluster.
    Put,
}

/// Conditional cluster writes, one transaction each; see the module documentation.
pub struct Update {
    fleet: Fleet,
    pool_keys: PoolKeys,
    clusters: Vec<usize>,
    revisions: Vec<u64>,
    next: usize,
    generation: u64,
}

/// Range reads of single cluster keys.
pub struct Read {
    fleet: Fleet,
    clusters: Vec<usize>,
    next: usize,
}

/// Walks the clusters' prefix a page at a time, starting over at the end.
pub struct List {
    prefix: String,
    next_key: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    revision: String,
}

#[derive(Deserialize)]
struct TxnResponse {
    header: Header,
    /// The gateway leaves out `false` fields.
    #[serde(default)]
    succeeded: bool,
}

#[derive(Deserialize)]
struct RangeResponse {
    #[serde(default)]
    kvs: Vec<KeyValue>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    mod_revision: String,
}

impl Update {
    /// Workers for `connections` connections over clusters `0..clusters`, each owning every
    /// `connections`-th cluster.
    pub fn workers(
        fleet: Fleet,
        pool_keys: PoolKeys,
        clusters: usize,
        connections: usize,
    ) -> Vec<Update> {
        (0..connections)
            .map(|worker| Update {
                fleet,
                pool_keys,
                clusters: (worker..clusters).step_by(connections).collect(),
                revisions: Vec::new(),
                next: 0,
                generation: 1,
            })
            .collect()
    }
}

impl Worker for Update {
    async fn prepare(&mut self, connection: &mut Connection) -> Result<(), String> {
        self.revisions.clear();
        for &index in &self.clusters {
            self.revisions
                .push(mod_revision(connection, &self.fleet, index).await?);
        }
        Ok(())
    }

    async fn step(&mut self, connection: &mut Connection) -> Outcome {
        let slot = self.next % self.clusters.len();
        self.next += 1;
        self.generation += 1;
        let index = self.clusters[slot];
        let mut puts = vec![cluster_put(&self.fleet, index, self.generation)];
        if self.pool_keys == PoolKeys::Put {
            puts.extend(pool_puts(&self.fleet, index, self.generation));
        }
        let body = conditional_txn(&self.fleet, index, self.revisions[slot], &puts);
        let reply = match connection
            .send(Method::POST, "/v3/kv/txn", &[], Some(body))
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => reply,
            Ok(reply) => return unexpected(&reply),
            Err(error) => return Outcome::Error(error),
        };
        let response: TxnResponse = match parse(&reply) {
            Ok(response) => response,
            Err(error) => return Outcome::Error(error),
        };
        if !response.succeeded {
            if let Ok(revision) = mod_revision(connection, &self.fleet, index).await {
                self.revisions[slot] = revision;
            }
            return Outcome::PreconditionFailed;
        }
        match response.header.revision.parse() {
            Ok(revision) => {
                self.revisions[slot] = revision;
                Outcome::Ok
            }
            Err(_) => Outcome::Error(format!(
                "txn response revision {:?} is not a number",
                response.header.revision
            )),
        }
    }
}

impl Read {
    pub fn workers(fleet: Fleet, clusters: usize, connections: usize) -> Vec<Read> {
        (0..connections)
            .map(|worker| Read {
                fleet,
                clusters: (worker..clusters).step_by(connections).collect(),
                next: 0,
            })
            .collect()
    }
}

impl Worker for Read {
    async fn step(&mut self, connection: &mut Connection) -> Outcome {
        let index = self.clusters[self.next % self.clusters.len()];
        self.next += 1;
        let body = range_body(self.fleet.etcd_cluster_key(index).as_bytes(), None, None);
        match connection
            .send(Method::POST, "/v3/kv/range", &[], Some(body))
            .await
        {
            // A range of a missing key has no `kvs` field.
            Ok(reply) if reply.status == StatusCode::OK && contains(&reply.body, b"\"kvs\"") => {
                Outcome::Ok
            }
            Ok(reply) => unexpected(&reply),
            Err(error) => Outcome::Error(error),
        }
    }
}

impl List {
    pub fn workers(fleet: Fleet, connections: usize) -> Vec<List> {
        (0..connections)
            .map(|_| List {
                prefix: fleet.etcd_cluster_prefix(),
                next_key: None,
            })
            .collect()
    }
}

impl Worker for List {
    async fn step(&mut self, connection: &mut Connection) -> Outcome {
        let start = self
            .next_key
            .take()
            .unwrap_or_else(|| self.prefix.clone().into_bytes());
        let body = range_body(&start, Some(&prefix_end(&self.prefix)), Some(PAGE_SIZE));
        let reply = match connection
            .send(Method::POST, "/v3/kv/range", &[], Some(body))
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => reply,
            Ok(reply) => return unexpected(&reply),
            Err(error) => return Outcome::Error(error),
        };
        let page: RangeResponse = match parse(&reply) {
            Ok(page) => page,
            Err(error) => return Outcome::Error(error),
        };
        if page.more
            && let Some(last) = page.kvs.last()
        {
            match BASE64.decode(&last.key) {
                Ok(mut key) => {
                    // The smallest key after the last one of this page.
                    key.push(0);
                    self.next_key = Some(key);
                }
                Err(error) => return Outcome::Error(format!("a key is not base64: {error}")),
            }
        }
        Outcome::Ok
    }
}

/// Puts clusters `range` of `fleet` and their pools, in as few transactions as etcd's
/// operation limit allows, over `connections` connections.
pub async fn seed(
    addr: SocketAddr,
    fleet: Fleet,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<(), String> {
    let per_txn = (MAX_TXN_OPS / (1 + fleet.pools)).max(1);
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let next = Arc::clone(&next);
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(addr);
            loop {
                let first = next.fetch_add(per_txn, Ordering::Relaxed);
                if first >= end {
                    return Ok::<(), String>(());
                }
                let mut puts = Vec::new();
                for index in first..(first + per_txn).min(end) {
                    puts.push(cluster_put(&fleet, index, 0));
                    puts.extend(pool_puts(&fleet, index, 0));
                }
                let body = Bytes::from(format!(r#"{{"success":[{}]}}"#, puts.join(",")));
                let reply = connection
                    .send(Method::POST, "/v3/kv/txn", &[], Some(body))
                    .await?;
                if reply.status != StatusCode::OK {
                    return Err(reply.describe());
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

/// Builds a transaction that runs `puts` if the cluster key's `mod_revision` is `expected`.
fn conditional_txn(fleet: &Fleet, index: usize, expected: u64, puts: &[String]) -> Bytes {
    Bytes::from(format!(
        r#"{{"compare":[{{"key":"{}","target":"MOD","result":"EQUAL","mod_revision":"{expected}"}}],"success":[{}]}}"#,
        BASE64.encode(fleet.etcd_cluster_key(index)),
        puts.join(",")
    ))
}

/// Builds the `request_put` of a cluster document.
fn cluster_put(fleet: &Fleet, index: usize, generation: u64) -> String {
    put(
        fleet.etcd_cluster_key(index).as_bytes(),
        &fleet.cluster_body(index, generation),
    )
}

/// Builds the `request_put` operations of a cluster's pool keys.
fn pool_puts(fleet: &Fleet, index: usize, generation: u64) -> Vec<String> {
    (0..fleet.pools)
        .map(|pool| {
            put(
                fleet.etcd_pool_key(index, pool).as_bytes(),
                pool_profile(pool, generation).as_bytes(),
            )
        })
        .collect()
}

fn put(key: &[u8], value: &[u8]) -> String {
    format!(
        r#"{{"request_put":{{"key":"{}","value":"{}"}}}}"#,
        BASE64.encode(key),
        BASE64.encode(value)
    )
}

fn range_body(key: &[u8], range_end: Option<&[u8]>, limit: Option<usize>) -> Bytes {
    let mut body = format!(r#"{{"key":"{}""#, BASE64.encode(key));
    if let Some(end) = range_end {
        body.push_str(&format!(r#","range_end":"{}""#, BASE64.encode(end)));
    }
    if let Some(limit) = limit {
        body.push_str(&format!(r#","limit":"{limit}""#));
    }
    body.push('}');
    Bytes::from(body)
}

/// Returns the exclusive end of the keys that start with `prefix`, which ends in `/`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

async fn mod_revision(
    connection: &mut Connection,
    fleet: &Fleet,
    index: usize,
) -> Result<u64, String> {
    let body = range_body(fleet.etcd_cluster_key(index).as_bytes(), None, None);
    let reply = connection
        .send(Method::POST, "/v3/kv/range", &[], Some(body))
        .await?;
    if reply.status != StatusCode::OK {
        return Err(reply.describe());
    }
    let range: RangeResponse = parse(&reply)?;
    let kv = range
        .kvs
        .first()
        .ok_or_else(|| format!("etcd has no key {}", fleet.etcd_cluster_key(index)))?;
    kv.mod_revision
        .parse()
        .map_err(|_| format!("mod_revision {:?} is not a number", kv.mod_revision))
}

fn parse<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, String> {
    serde_json::from_slice(&reply.body)
        .map_err(|error| format!("etcd response is not the expected JSON: {error}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn unexpected(reply: &Reply) -> Outcome {
    Outcome::Error(reply.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_txn_compares_then_puts_every_record() {
        let fleet = crate::dataset::wide(2);
        let mut puts = vec![cluster_put(&fleet, 4, 9)];
        puts.extend(pool_puts(&fleet, 4, 9));
        let body = conditional_txn(&fleet, 4, 41, &puts);
        let txn: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(txn["compare"][0]["mod_revision"], "41");
        assert_eq!(txn["compare"][0]["target"], "MOD");
        assert_eq!(txn["success"].as_array().unwrap().len(), 3);
        let key = txn["success"][0]["request_put"]["key"].as_str().unwrap();
        assert_eq!(
            BASE64.decode(key).unwrap(),
            fleet.etcd_cluster_key(4).into_bytes()
        );
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("clusters/s/"), b"clusters/s0".to_vec());
    }
}
