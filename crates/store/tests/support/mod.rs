//! Helpers shared by the store's integration tests: stores on a temporary file, opened plainly
//! or on a fault-injecting backend, short constructors of write requests, the committed fixture
//! databases, raw redb edits that make files akstore must reject, and copies of open databases
//! as a crash leaves them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use akstore_store::faults::{FaultPlan, FaultyBackend};
use akstore_store::{
    Applied, ClusterInput, ClusterKey, ClusterView, PoolInput, PoolKey, Precondition, Store,
    WriteOutcome, WriteRequest, tables,
};
use redb::{Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, TableHandle};

pub const SUBSCRIPTION: &str = "sub";
pub const RESOURCE_GROUP: &str = "rg";

/// Opens the store at `path` on a [`FaultyBackend`] driven by `plan`.
pub fn open_faulty(path: &Path, plan: &Arc<FaultPlan>) -> Store {
    let file = path.to_path_buf();
    let plan = Arc::clone(plan);
    Store::open_with_backend(path, move || FaultyBackend::open(&file, Arc::clone(&plan)))
        .expect("open the store on the faulty backend")
}

pub fn cluster_key(name: &str) -> ClusterKey {
    ClusterKey {
        subscription: SUBSCRIPTION.into(),
        resource_group: RESOURCE_GROUP.into(),
        name: name.into(),
    }
}

pub fn pool_key(cluster: &str, pool: &str) -> PoolKey {
    PoolKey {
        cluster: cluster_key(cluster),
        name: pool.into(),
    }
}

pub fn cluster_input(marker: u64, pools: &[&str]) -> ClusterInput {
    ClusterInput {
        location: "westeurope".into(),
        tags: None,
        properties: format!(r#"{{"marker":{marker}}}"#),
        extra: "{}".into(),
        pools: pools
            .iter()
            .map(|name| PoolInput {
                name: (*name).into(),
                properties: format!(r#"{{"marker":{marker}}}"#),
            })
            .collect(),
    }
}

pub fn put_cluster(name: &str, marker: u64, pools: &[&str]) -> WriteRequest {
    WriteRequest::PutCluster {
        key: cluster_key(name),
        precondition: Precondition::None,
        input: cluster_input(marker, pools),
    }
}

/// The view of a cluster write that created or updated it; panics on any other outcome.
pub fn cluster_view(applied: Applied) -> ClusterView {
    match applied {
        Applied::Cluster(WriteOutcome::Created(view) | WriteOutcome::Updated(view)) => view,
        other => panic!("expected a created or updated cluster, got {other:?}"),
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// Tables of a database at the current schema, sorted by name.
pub const CURRENT_TABLES: [&str; 5] = ["clusters", "meta", "operations", "pools", "requests"];

/// Directory of the committed fixture databases.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/fixtures")
}

/// Copies the fixture `name` (for example `v1.redb`) into `dir`, so a test never changes the
/// committed file, and returns the copy's path.
pub fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let source = fixtures_dir().join(name);
    let target = dir.join(name);
    std::fs::copy(&source, &target)
        .unwrap_or_else(|error| panic!("copy fixture {}: {error}", source.display()));
    target
}

/// The whole content of a file, to compare before and after an open that must not write.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// Writes `version` as the schema version of the database at `path` with plain redb.
pub fn set_schema_version(path: &Path, version: u64) {
    let db = Database::open(path).unwrap();
    write_schema_version(&db, version);
}

/// Writes `version` as the schema version through an open database.
pub fn write_schema_version(db: &Database, version: u64) {
    let txn = db.begin_write().unwrap();
    txn.open_table(tables::META)
        .unwrap()
        .insert(tables::SCHEMA_VERSION_KEY, version)
        .unwrap();
    txn.commit().unwrap();
}

/// Copies the database at `path` while `db` still has it open: the copy is what a crash at
/// this moment leaves, so redb must repair it before it can be opened for writing.
pub fn crash_image(db: &Database, path: &Path, image: &Path) {
    // Every commit so far was durable, so the file contains it. `db` stays open until the copy
    // is done, so the record of a clean shutdown is not in the copy.
    std::fs::copy(path, image).unwrap();
    let _ = db;
    assert!(
        needs_repair(image),
        "{} should need crash repair",
        image.display()
    );
}

/// Checks whether redb rejects a read-only open of `path` because it needs crash repair.
pub fn needs_repair(path: &Path) -> bool {
    matches!(
        Builder::new().open_read_only(path),
        Err(DatabaseError::RepairAborted)
    )
}

/// Names of every table in the database at `path`, sorted.
pub fn table_names(path: &Path) -> Vec<String> {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let mut names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|table| table.name().to_owned())
        .collect();
    names.sort();
    names
}

/// The schema version stored in the database at `path`, read without writing.
pub fn stored_schema_version(path: &Path) -> u64 {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(tables::META).unwrap();
    meta.get(tables::SCHEMA_VERSION_KEY)
        .unwrap()
        .unwrap()
        .value()
}
