//! The storage-level benchmark: what the disk and the store allow without HTTP.
//!
//! Two measurements on temporary files:
//! - raw redb: durable commits (`Durability::Immediate`) of 1, 32 and 256 records of about
//!   the size of a cluster record, one after another from one thread: the fsync-bound limit;
//! - the store's conditional cluster updates through [`Store::write`] from 64 threads and from
//!   one, on the same data set as the HTTP workload: the limit that group commit reaches
//!   before HTTP, JSON and the async runtime add their cost.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use akstore_store::{
    Applied, ClusterInput, ClusterKey, EntityTag, PoolInput, Precondition, Store, WriteOutcome,
    WriteRequest,
};
use redb::{Database, Durability, TableDefinition};
use serde::Serialize;

use crate::dataset::{self, Fleet};
use crate::runner::percentile_ms;

/// Records per commit of the raw redb measurement.
const RAW_BATCH_SIZES: [usize; 3] = [1, 32, 256];

/// Bytes of one raw record, about a stored cluster with its properties.
const RAW_RECORD_BYTES: usize = 600;

/// Distinct keys the raw measurement overwrites, so the file stops growing.
const RAW_KEYS: u64 = 100_000;

const RAW_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

/// Figures of one raw redb batch size.
#[derive(Clone, Debug, Serialize)]
pub struct RawCommits {
    pub records_per_commit: usize,
    pub commits_per_sec: f64,
    pub records_per_sec: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
}

/// Figures of conditional updates through the store's writer.
#[derive(Clone, Debug, Serialize)]
pub struct StoreUpdates {
    pub threads: usize,
    pub clusters: usize,
    pub ops_per_sec: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
    /// Requests per durable commit, on average.
    pub mean_batch: f64,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StorageReport {
    pub raw: Vec<RawCommits>,
    pub store: Vec<StoreUpdates>,
}

/// Runs both measurements in `dir` for `seconds` each.
pub fn run(
    dir: &Path,
    seconds: Duration,
    clusters: usize,
    thread_counts: &[usize],
) -> Result<StorageReport, String> {
    let mut raw = Vec::new();
    for records in RAW_BATCH_SIZES {
        raw.push(raw_commits(
            &dir.join(format!("raw-{records}.redb")),
            records,
            seconds,
        )?);
    }

    let store = Arc::new(
        Store::open(dir.join("store.redb"))
            .map_err(|error| format!("opening the store: {error}"))?,
    );
    seed(&store, clusters)?;
    let mut updates = Vec::new();
    for &threads in thread_counts {
        updates.push(store_updates(&store, clusters, threads, seconds)?);
    }
    store.close();
    Ok(StorageReport {
        raw,
        store: updates,
    })
}

fn raw_commits(path: &Path, records: usize, seconds: Duration) -> Result<RawCommits, String> {
    let fail = |error: &dyn std::fmt::Display| {
        format!("raw redb benchmark on {}: {error}", path.display())
    };
    let db = Database::create(path).map_err(|e| fail(&e))?;
    let value = vec![b'x'; RAW_RECORD_BYTES];
    let mut key = 0u64;
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < seconds {
        let commit_started = Instant::now();
        let mut txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| fail(&e))?;
        {
            let mut table = txn.open_table(RAW_TABLE).map_err(|e| fail(&e))?;
            for _ in 0..records {
                // Spread the keys over the table, as writes to many clusters are.
                let spread = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) % RAW_KEYS;
                table
                    .insert(spread, value.as_slice())
                    .map_err(|e| fail(&e))?;
                key += 1;
            }
        }
        txn.commit().map_err(|e| fail(&e))?;
        latencies.push(micros(commit_started.elapsed()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = latencies.len();
    latencies.sort_unstable();
    Ok(RawCommits {
        records_per_commit: records,
        commits_per_sec: commits as f64 / elapsed,
        records_per_sec: (commits * records) as f64 / elapsed,
        median_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    })
}

/// Creates the clusters of the main fleet that do not exist yet.
fn seed(store: &Store, clusters: usize) -> Result<(), String> {
    for index in 0..clusters {
        let request = WriteRequest::PutCluster {
            key: key(&dataset::MAIN, index),
            precondition: Precondition::IfNoneMatchAny,
            input: input(&dataset::MAIN, index, 0),
        };
        match store.write(request) {
            Ok(Applied::Cluster(WriteOutcome::Created(_) | WriteOutcome::PreconditionFailed)) => {}
            Ok(other) => return Err(format!("seeding cluster {index} returned {other:?}")),
            Err(error) => return Err(format!("seeding cluster {index} failed: {error}")),
        }
    }
    Ok(())
}

fn store_updates(
    store: &Arc<Store>,
    clusters: usize,
    threads: usize,
    seconds: Duration,
) -> Result<StoreUpdates, String> {
    let before = store.writer_stats();
    let end = Instant::now() + seconds;
    let started = Instant::now();
    let mut handles = Vec::with_capacity(threads);
    for worker in 0..threads {
        let store = Arc::clone(store);
        handles.push(std::thread::spawn(move || {
            update_loop(&store, (worker..clusters).step_by(threads).collect(), end)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for handle in handles {
        let (worker_latencies, worker_errors) = handle
            .join()
            .map_err(|_| "a store benchmark thread panicked".to_owned())??;
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = store.writer_stats();
    latencies.sort_unstable();
    let ok = latencies.len() as u64 - errors;
    Ok(StoreUpdates {
        threads,
        clusters,
        ops_per_sec: ok as f64 / elapsed,
        median_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        mean_batch: (after.writes - before.writes) as f64
            / (after.commits - before.commits).max(1) as f64,
        errors,
    })
}

/// Updates `owned` clusters in turn with `If-Match` of the last eTag until `end`; returns the
/// latencies and the count of requests that did not update.
fn update_loop(store: &Store, owned: Vec<usize>, end: Instant) -> Result<(Vec<u32>, u64), String> {
    let fleet = dataset::MAIN;
    let mut etags = Vec::with_capacity(owned.len());
    for &index in &owned {
        let view = store
            .get_cluster(&key(&fleet, index))
            .map_err(|error| format!("reading cluster {index}: {error}"))?
            .ok_or_else(|| format!("cluster {index} was not seeded"))?;
        etags.push(view.cluster.etag);
    }

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut generation = 1;
    for slot in (0..owned.len()).cycle() {
        if Instant::now() >= end {
            break;
        }
        generation += 1;
        let index = owned[slot];
        let request = WriteRequest::PutCluster {
            key: key(&fleet, index),
            precondition: Precondition::IfMatch(vec![EntityTag {
                value: etags[slot].hyphenated().to_string(),
                weak: false,
            }]),
            input: input(&fleet, index, generation),
        };
        let started = Instant::now();
        let result = store.write(request);
        latencies.push(micros(started.elapsed()));
        match result {
            Ok(Applied::Cluster(WriteOutcome::Updated(view))) => etags[slot] = view.cluster.etag,
            _ => errors += 1,
        }
    }
    Ok((latencies, errors))
}

fn key(fleet: &Fleet, index: usize) -> ClusterKey {
    ClusterKey {
        subscription: fleet.subscription().to_owned(),
        resource_group: fleet.group(index),
        name: fleet.name(index),
    }
}

/// Builds the store input that the HTTP layer derives from [`Fleet::cluster_body`].
fn input(fleet: &Fleet, index: usize, generation: u64) -> ClusterInput {
    ClusterInput {
        location: "westeurope".into(),
        tags: Some(format!(r#"{{"env":"bench","generation":"{generation}"}}"#)),
        properties: format!(
            r#"{{"kubernetesVersion":"1.30.5","dnsPrefix":"{}","enableRBAC":true,"networkProfile":{{"networkPlugin":"azure","loadBalancerSku":"standard","serviceCidr":"10.0.0.0/16","dnsServiceIP":"10.0.0.10"}}}}"#,
            fleet.name(index)
        ),
        extra: r#"{"sku":{"name":"Base","tier":"Free"}}"#.into(),
        pools: (0..fleet.pools)
            .map(|pool| PoolInput {
                name: dataset::pool_name(pool),
                properties: dataset::pool_profile(pool, generation),
            })
            .collect(),
    }
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}
