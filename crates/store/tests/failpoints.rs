//! The store's failpoints, triggered in process: each returned error, and a panic, fails the
//! write in the documented way, leaves the batch wholly applied or not at all, and the store
//! accepts writes again afterwards. Runs only in builds with the `failpoints` feature.
#![cfg(feature = "failpoints")]

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use akstore_store::failpoints::{self, AFTER_COMMIT, BEFORE_COMMIT, BETWEEN_CLUSTER_AND_POOLS};
use akstore_store::{Store, WriteError};
use support::{cluster_key, cluster_view, put_cluster, wait_for};

/// Failpoints are process-wide, so the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Configures one failpoint for the life of the guard. Take [`serial`] first.
struct Armed {
    name: &'static str,
}

fn arm(name: &'static str, actions: &str) -> Armed {
    failpoints::configure(name, actions).unwrap();
    Armed { name }
}

impl Drop for Armed {
    fn drop(&mut self) {
        failpoints::remove(self.name);
    }
}

/// Opens a store and writes cluster `c1` (pools np1, np2) with marker 1.
fn store_with_cluster(dir: &tempfile::TempDir) -> Store {
    let store = Store::open(dir.path().join("a.redb")).unwrap();
    store.write(put_cluster("c1", 1, &["np1", "np2"])).unwrap();
    store
}

fn marker(store: &Store) -> String {
    let view = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    for pool in &view.pools {
        assert_eq!(
            pool.properties, view.cluster.properties,
            "pool and cluster disagree"
        );
        assert_eq!(pool.revision, view.cluster.revision);
    }
    view.cluster.properties
}

fn wait_writable(store: &Store) {
    assert!(wait_for(Duration::from_secs(10), || store.is_writable()));
}

#[test]
fn before_commit_error_is_unknown_and_not_applied() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_cluster(&dir);
    let armed = arm(BEFORE_COMMIT, "1*return");
    let result = store.write(put_cluster("c1", 2, &["np1", "np2"]));
    drop(armed);

    assert!(
        matches!(result, Err(WriteError::OutcomeUnknown(_))),
        "{result:?}"
    );
    wait_writable(&store);
    assert_eq!(marker(&store), r#"{"marker":1}"#);
}

#[test]
fn reopen_does_not_recreate_deleted_file() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_cluster(&dir);
    let path = dir.path().join("a.redb");
    std::fs::remove_file(&path).unwrap();

    // The failed commit makes the writer close the database and try to open it again.
    let armed = arm(BEFORE_COMMIT, "1*return");
    let result = store.write(put_cluster("c1", 2, &["np1", "np2"]));
    drop(armed);
    assert!(
        matches!(result, Err(WriteError::OutcomeUnknown(_))),
        "{result:?}"
    );

    std::thread::sleep(Duration::from_millis(500));
    assert!(!path.exists(), "the reopen created a new, empty database");
    assert!(!store.is_writable());
    let next = store.write(put_cluster("c1", 3, &["np1"]));
    assert!(matches!(next, Err(WriteError::NotApplied(_))), "{next:?}");
}

#[test]
fn after_commit_error_is_unknown_but_applied() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_cluster(&dir);
    let armed = arm(AFTER_COMMIT, "1*return");
    let result = store.write(put_cluster("c1", 2, &["np1", "np2"]));
    drop(armed);

    assert!(
        matches!(result, Err(WriteError::OutcomeUnknown(_))),
        "{result:?}"
    );
    wait_writable(&store);
    assert_eq!(marker(&store), r#"{"marker":2}"#);
}

#[test]
fn error_between_cluster_and_pools_applies_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_cluster(&dir);
    let armed = arm(BETWEEN_CLUSTER_AND_POOLS, "1*return");
    let result = store.write(put_cluster("c1", 2, &["np1", "np2"]));
    drop(armed);

    assert!(
        matches!(result, Err(WriteError::NotApplied(_))),
        "{result:?}"
    );
    wait_writable(&store);
    assert_eq!(marker(&store), r#"{"marker":1}"#);
    let view = cluster_view(store.write(put_cluster("c1", 3, &["np1", "np2"])).unwrap());
    assert_eq!(view.pools.len(), 2);
    assert_eq!(marker(&store), r#"{"marker":3}"#);
}

#[test]
fn writer_panic_is_unknown_and_writer_survives() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_cluster(&dir);
    let armed = arm(BETWEEN_CLUSTER_AND_POOLS, "1*panic(injected)");
    let result = store.write(put_cluster("c1", 2, &["np1", "np2"]));
    drop(armed);

    assert!(
        matches!(result, Err(WriteError::OutcomeUnknown(_))),
        "{result:?}"
    );
    wait_writable(&store);
    assert_eq!(marker(&store), r#"{"marker":1}"#);
    store.write(put_cluster("c1", 3, &["np1", "np2"])).unwrap();
    assert_eq!(marker(&store), r#"{"marker":3}"#);
}

#[test]
fn configure_rejects_unknown_actions() {
    let _serial = serial();
    let error = failpoints::configure(BEFORE_COMMIT, "explode").unwrap_err();
    assert!(error.contains("explode"), "{error}");
}
