//! Offline check of a database file: redb's integrity check, a decode of every record, and the
//! invariants every write keeps.
//!
//! The file is opened for writing, as `serve` opens it, so redb's recovery runs on a file that
//! was not closed cleanly; apart from that recovery the check writes nothing. It needs the file
//! to itself: a file that a running server holds is reported as locked.
//!
//! Invariants checked, each reported as a [`Violation`]:
//! - the schema version is [`CURRENT_SCHEMA_VERSION`];
//! - every record decodes, and its key is the lower-cased names it carries;
//! - every pool's cluster exists, and no pool's revision is below its cluster's (a cluster
//!   write gives every pool its revision, so a lower one is a half-applied cluster write);
//! - every eTag is a UUID v4 and no two records share one;
//! - no record's revision is above the global revision, and none is 0;
//! - a record was not changed before it was created;
//! - there are at most [`MAX_REQUEST_RECORDS`] request records.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableError};
use uuid::Uuid;

use crate::error::OpenError;
use crate::model::{Cluster, ClusterKey, Pool};
use crate::requests::{MAX_REQUEST_RECORDS, RequestRecord};
use crate::{CACHE_SIZE_BYTES, CURRENT_SCHEMA_VERSION, codec, tables};

/// Most violations a report lists; the count covers them all.
pub const MAX_LISTED_VIOLATIONS: usize = 100;

/// What [`check_file`] found.
#[derive(Debug)]
pub struct CheckReport {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub schema_version: Option<u64>,
    pub revision: u64,
    pub clusters: u64,
    pub pools: u64,
    pub requests: u64,
    /// False when redb's integrity check found damage (and repaired what it could).
    pub integrity_ok: bool,
    /// The first [`MAX_LISTED_VIOLATIONS`] violations.
    pub violations: Vec<Violation>,
    /// All violations, listed or not.
    pub violation_count: u64,
    pub elapsed: Duration,
}

/// One broken invariant: the record's table and key, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub table: &'static str,
    pub key: String,
    pub problem: String,
}

/// Why the check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("database file {0} does not exist")]
    Missing(PathBuf),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("failed to read database {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

impl CheckReport {
    /// Whether the file passed: the integrity check and no violation.
    pub fn passed(&self) -> bool {
        self.integrity_ok && self.violation_count == 0
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.table, self.key, self.problem)
    }
}

/// Checks the database at `path`. Violations are in the report; an `Err` means the file could
/// not be opened or read, and says why.
pub fn check_file(path: &Path) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let metadata = std::fs::metadata(path).map_err(|_| CheckError::Missing(path.to_path_buf()))?;
    let storage = |source: redb::Error| CheckError::Storage {
        path: path.to_path_buf(),
        source,
    };

    // With the check on open, a page altered behind redb's back fails the open with
    // `Corrupted` instead of making a later read panic.
    let mut db = Database::builder()
        .set_cache_size(CACHE_SIZE_BYTES)
        .set_check_integrity_on_open(true)
        .open(path)
        .map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked {
                path: path.to_path_buf(),
            },
            other => OpenError::Storage {
                path: path.to_path_buf(),
                source: other.into(),
            },
        })?;
    let integrity_ok = db.check_integrity().map_err(|e| storage(e.into()))?;

    let mut checker = Checker::default();
    let (schema_version, revision) = checker.check_records(&db).map_err(storage)?;
    Ok(CheckReport {
        path: path.to_path_buf(),
        file_bytes: metadata.len(),
        schema_version,
        revision,
        clusters: checker.clusters,
        pools: checker.pools,
        requests: checker.requests,
        integrity_ok,
        violations: checker.violations,
        violation_count: checker.violation_count,
        elapsed: started.elapsed(),
    })
}

/// Counts and violations gathered while the records are read.
#[derive(Default)]
struct Checker {
    clusters: u64,
    pools: u64,
    requests: u64,
    violations: Vec<Violation>,
    violation_count: u64,
    /// Where each eTag was seen first, to report repeats.
    etags: HashMap<Uuid, String>,
}

impl Checker {
    /// Reads every table and returns the schema version and the global revision.
    fn check_records(&mut self, db: &Database) -> Result<(Option<u64>, u64), redb::Error> {
        let txn = db.begin_read()?;

        let meta = txn.open_table(tables::META)?;
        let schema_version = meta.get(tables::SCHEMA_VERSION_KEY)?.map(|v| v.value());
        let revision = meta.get(tables::REVISION_KEY)?.map_or(0, |v| v.value());
        match schema_version {
            Some(CURRENT_SCHEMA_VERSION) => {}
            Some(found) => self.report(
                "meta",
                tables::SCHEMA_VERSION_KEY,
                format!("schema version {found}, expected {CURRENT_SCHEMA_VERSION}"),
            ),
            None => self.report("meta", tables::SCHEMA_VERSION_KEY, "missing".into()),
        }

        // Clusters first, so each pool can be compared with its cluster.
        let mut cluster_revisions = HashMap::new();
        for entry in txn.open_table(tables::CLUSTERS)?.iter()? {
            let (key, bytes) = entry?;
            self.clusters += 1;
            let key = key.value().to_owned();
            if let Some(cluster) = self.decode::<Cluster>("clusters", &key, bytes.value()) {
                self.check_cluster(&key, &cluster, revision);
                cluster_revisions.insert(key, cluster.revision);
            }
        }

        for entry in txn.open_table(tables::POOLS)?.iter()? {
            let (key, bytes) = entry?;
            self.pools += 1;
            let key = key.value().to_owned();
            if let Some(pool) = self.decode::<Pool>("pools", &key, bytes.value()) {
                self.check_pool(&key, &pool, revision, &cluster_revisions);
            }
        }

        match txn.open_table(tables::REQUESTS) {
            Ok(table) => {
                for entry in table.iter()? {
                    let (key, bytes) = entry?;
                    self.requests += 1;
                    self.decode::<RequestRecord>("requests", key.value(), bytes.value());
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(error.into()),
        }
        if self.requests > MAX_REQUEST_RECORDS as u64 {
            self.report(
                "requests",
                "*",
                format!(
                    "{} records, more than the limit of {MAX_REQUEST_RECORDS}",
                    self.requests
                ),
            );
        }
        Ok((schema_version, revision))
    }

    fn check_cluster(&mut self, key: &str, cluster: &Cluster, revision: u64) {
        let expected_key = ClusterKey {
            subscription: cluster.subscription.clone(),
            resource_group: cluster.resource_group.clone(),
            name: cluster.name.clone(),
        }
        .storage_key();
        if expected_key != key {
            self.report("clusters", key, format!("the record names {expected_key}"));
        }
        self.check_common("clusters", key, cluster.etag, cluster.revision, revision);
        if cluster.changed_ms < cluster.created_ms {
            self.report("clusters", key, "changed before it was created".into());
        }
    }

    fn check_pool(
        &mut self,
        key: &str,
        pool: &Pool,
        revision: u64,
        cluster_revisions: &HashMap<String, u64>,
    ) {
        let (cluster_key, pool_name) = key.rsplit_once('/').unwrap_or(("", key));
        if pool_name != pool.name.to_ascii_lowercase() {
            self.report("pools", key, format!("the record names pool {}", pool.name));
        }
        match cluster_revisions.get(cluster_key) {
            None => self.report("pools", key, "its cluster does not exist".into()),
            Some(&cluster_revision) if pool.revision < cluster_revision => self.report(
                "pools",
                key,
                format!(
                    "revision {} is below its cluster's revision {cluster_revision}, so a \
                     cluster write is half applied",
                    pool.revision
                ),
            ),
            Some(_) => {}
        }
        self.check_common("pools", key, pool.etag, pool.revision, revision);
        if pool.changed_ms < pool.created_ms {
            self.report("pools", key, "changed before it was created".into());
        }
    }

    /// Checks the eTag and revision that clusters and pools both carry.
    fn check_common(
        &mut self,
        table: &'static str,
        key: &str,
        etag: Uuid,
        record_revision: u64,
        revision: u64,
    ) {
        if etag.get_version_num() != 4 {
            self.report(table, key, format!("eTag {etag} is not a UUID v4"));
        }
        let location = format!("{table} {key}");
        if let Some(first) = self.etags.insert(etag, location.clone()) {
            self.report(table, key, format!("eTag {etag} repeats that of {first}"));
        }
        if record_revision == 0 || record_revision > revision {
            self.report(
                table,
                key,
                format!("revision {record_revision} is outside 1..={revision}"),
            );
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &mut self,
        table: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Option<T> {
        match codec::decode(bytes) {
            Ok(record) => Some(record),
            Err(error) => {
                self.report(table, key, format!("cannot be decoded: {error}"));
                None
            }
        }
    }

    fn report(&mut self, table: &'static str, key: &str, problem: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_LISTED_VIOLATIONS {
            self.violations.push(Violation {
                table,
                key: key.to_owned(),
                problem,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PoolInput, Store, WriteRequest};

    fn cluster_key() -> ClusterKey {
        ClusterKey {
            subscription: "sub".into(),
            resource_group: "RG".into(),
            name: "c1".into(),
        }
    }

    /// Writes a cluster with two pools through the store, then closes it.
    fn healthy_file(dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("a.redb");
        let store = Store::open(&path).unwrap();
        let pools = ["np1", "np2"]
            .iter()
            .map(|name| PoolInput {
                name: (*name).into(),
                properties: "{}".into(),
            })
            .collect();
        store
            .write(WriteRequest::PutCluster {
                key: cluster_key(),
                precondition: crate::Precondition::None,
                input: crate::ClusterInput {
                    location: "westeurope".into(),
                    tags: None,
                    properties: "{}".into(),
                    extra: "{}".into(),
                    pools,
                },
            })
            .unwrap();
        drop(store);
        path
    }

    /// Rewrites the pool `np1` of the file with `change` applied, as a bug would.
    fn tamper_pool(path: &Path, change: impl FnOnce(&mut Pool)) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut pools = txn.open_table(tables::POOLS).unwrap();
            let key = "sub/rg/c1/np1";
            let mut pool: Pool = codec::decode(pools.get(key).unwrap().unwrap().value()).unwrap();
            change(&mut pool);
            pools.insert(key, codec::encode(&pool).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    fn problems_of(path: &Path) -> Vec<String> {
        let report = check_file(path).unwrap();
        assert!(report.integrity_ok);
        report.violations.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn healthy_file_passes() {
        let dir = tempfile::tempdir().unwrap();
        let report = check_file(&healthy_file(&dir)).unwrap();
        assert!(report.passed(), "{:?}", report.violations);
        assert_eq!(report.schema_version, Some(CURRENT_SCHEMA_VERSION));
        assert_eq!((report.clusters, report.pools, report.revision), (1, 2, 1));
    }

    #[test]
    fn half_applied_cluster_write_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = healthy_file(&dir);
        tamper_pool(&path, |pool| pool.revision = 0);
        let problems = problems_of(&path);
        assert!(
            problems.iter().any(|p| p.contains("half applied")),
            "{problems:?}"
        );
    }

    #[test]
    fn repeated_and_non_v4_etags_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = healthy_file(&dir);
        tamper_pool(&path, |pool| pool.etag = Uuid::nil());
        let problems = problems_of(&path);
        assert!(
            problems.iter().any(|p| p.contains("not a UUID v4")),
            "{problems:?}"
        );

        let other_dir = tempfile::tempdir().unwrap();
        let path = healthy_file(&other_dir);
        let db = Database::create(&path).unwrap();
        let cluster_etag = {
            let txn = db.begin_read().unwrap();
            let clusters = txn.open_table(tables::CLUSTERS).unwrap();
            let cluster: Cluster =
                codec::decode(clusters.get("sub/rg/c1").unwrap().unwrap().value()).unwrap();
            cluster.etag
        };
        drop(db);
        tamper_pool(&path, |pool| pool.etag = cluster_etag);
        let problems = problems_of(&path);
        assert!(
            problems.iter().any(|p| p.contains("repeats")),
            "{problems:?}"
        );
    }

    #[test]
    fn orphan_pool_and_bad_record_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = healthy_file(&dir);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut clusters = txn.open_table(tables::CLUSTERS).unwrap();
                clusters.remove("sub/rg/c1").unwrap();
                clusters.insert("sub/rg/broken", &[9u8, 9, 9][..]).unwrap();
            }
            txn.commit().unwrap();
        }
        let problems = problems_of(&path);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("cluster does not exist")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("cannot be decoded")),
            "{problems:?}"
        );
    }

    #[test]
    fn wrong_schema_version_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = healthy_file(&dir);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert(tables::SCHEMA_VERSION_KEY, CURRENT_SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let problems = problems_of(&path);
        assert!(
            problems.iter().any(|p| p.contains("schema version")),
            "{problems:?}"
        );
    }

    #[test]
    fn missing_and_locked_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = check_file(&dir.path().join("none.redb")).unwrap_err();
        assert!(matches!(missing, CheckError::Missing(_)), "{missing}");

        let path = healthy_file(&dir);
        let store = Store::open(&path).unwrap();
        let locked = check_file(&path).unwrap_err();
        assert!(locked.to_string().contains("locked"), "{locked}");
        drop(store);
    }
}
