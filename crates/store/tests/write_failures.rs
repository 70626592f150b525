//! What the store does when its disk fails during a write, with faults injected by the
//! fault-injecting storage backend on a real file: a failed commit answers every request of
//! its batch with the unknown-outcome error, applies the batch wholly or not at all, and the
//! writer reopens the database so later writes succeed without a restart.

mod support;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use akstore_store::faults::FaultPlan;
use akstore_store::{
    Applied, ClusterInput, Precondition, Store, WriteError, WriteOutcome, WriteRequest,
};
use support::{cluster_key, cluster_view, open_faulty, put_cluster, wait_for};

/// How long a test waits for the writer to reopen the database.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Submits a PATCH whose merge blocks the writer thread until `release` receives, and returns
/// once the writer is inside it. The PATCH keeps the cluster's input unchanged.
fn block_writer(store: &Store, cluster: &str, done: akstore_store::Completion) -> mpsc::Sender<()> {
    let (entered_sender, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    store.submit(
        WriteRequest::PatchCluster {
            key: cluster_key(cluster),
            precondition: Precondition::None,
            patch: Box::new(move |view| {
                entered_sender.send(()).unwrap();
                released
                    .recv_timeout(Duration::from_secs(30))
                    .expect("the test releases the writer");
                Ok(ClusterInput {
                    location: view.cluster.location.clone(),
                    tags: view.cluster.tags.clone(),
                    properties: view.cluster.properties.clone(),
                    extra: view.cluster.extra.clone(),
                    pools: Vec::new(),
                })
            }),
        },
        done,
    );
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer starts the blocking PATCH");
    release
}

/// Submits `request` and returns the receiver of its result.
fn submit(store: &Store, request: WriteRequest) -> mpsc::Receiver<Result<Applied, WriteError>> {
    let (sender, receiver) = mpsc::channel();
    store.submit(
        request,
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    receiver
}

#[test]
fn failed_group_commit_answers_every_member_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = open_faulty(&dir.path().join("a.redb"), &plan);
    store.write(put_cluster("blocker", 0, &["np1"])).unwrap();

    // The blocker's batch commits; its completion arms a sync failure for the next batch,
    // which holds every request queued while the blocker ran.
    let armed_plan = Arc::clone(&plan);
    let release = block_writer(
        &store,
        "blocker",
        Box::new(move |result| {
            assert!(result.is_ok(), "the blocker's batch commits: {result:?}");
            armed_plan.fail_sync_after(0);
        }),
    );
    let members: Vec<_> = (0..5)
        .map(|i| {
            submit(
                &store,
                put_cluster(&format!("member{i}"), i, &["np1", "np2"]),
            )
        })
        .collect();
    release.send(()).unwrap();

    for (index, member) in members.iter().enumerate() {
        let result = member.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            matches!(result, Err(WriteError::OutcomeUnknown(_))),
            "member {index} of the failed batch: {result:?}"
        );
    }
    assert_eq!(plan.injected(), 1);

    // The writer reopens the database; the batch is on disk wholly or not at all.
    assert!(wait_for(REOPEN_TIMEOUT, || store.is_writable()));
    let present: Vec<bool> = (0..5)
        .map(|i| {
            store
                .get_cluster(&cluster_key(&format!("member{i}")))
                .unwrap()
                .is_some()
        })
        .collect();
    assert!(
        present.iter().all(|p| *p) || present.iter().all(|p| !*p),
        "a failed batch is applied wholly or not at all: {present:?}"
    );
}

#[test]
fn writes_succeed_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = open_faulty(&dir.path().join("a.redb"), &plan);
    let before = cluster_view(store.write(put_cluster("c1", 1, &["np1"])).unwrap());

    plan.fail_sync_after(0);
    let failed = store.write(put_cluster("c1", 2, &["np1"]));
    assert!(
        matches!(failed, Err(WriteError::OutcomeUnknown(_))),
        "{failed:?}"
    );

    assert!(wait_for(REOPEN_TIMEOUT, || store.is_writable()));
    let after = cluster_view(store.write(put_cluster("c1", 3, &["np1"])).unwrap());
    assert_ne!(after.cluster.etag, before.cluster.etag);
    assert!(after.cluster.revision > before.cluster.revision);
    let read = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    assert_eq!(read.cluster.etag, after.cluster.etag);
    assert_eq!(read.cluster.properties, r#"{"marker":3}"#);
}

#[test]
fn failed_write_leaves_batch_out_or_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = open_faulty(&dir.path().join("a.redb"), &plan);
    let acknowledged = cluster_view(store.write(put_cluster("c1", 1, &["np1", "np2"])).unwrap());

    plan.fail_write_after(0);
    let failed = store.write(put_cluster("c1", 2, &["np1", "np2"]));
    assert!(
        matches!(
            failed,
            Err(WriteError::OutcomeUnknown(_) | WriteError::NotApplied(_))
        ),
        "{failed:?}"
    );
    assert_eq!(plan.injected(), 1);
    assert!(wait_for(REOPEN_TIMEOUT, || store.is_writable()));

    let read = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    let marker = &read.cluster.properties;
    assert!(
        marker == r#"{"marker":1}"# || marker == r#"{"marker":2}"#,
        "unexpected cluster {marker}"
    );
    for pool in &read.pools {
        assert_eq!(&pool.properties, marker, "pool and cluster disagree");
        assert_eq!(pool.revision, read.cluster.revision);
    }
    if marker == r#"{"marker":1}"# {
        assert_eq!(read.cluster.etag, acknowledged.cluster.etag);
    }
}

#[test]
fn unavailable_disk_rejects_writes_until_back() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new();
    let store = open_faulty(&dir.path().join("a.redb"), &plan);
    store.write(put_cluster("c1", 1, &[])).unwrap();

    plan.set_unavailable(true);
    let failed = store.write(put_cluster("c1", 2, &[]));
    assert!(failed.is_err(), "{failed:?}");
    assert!(!store.is_writable());

    // While the reopen fails, writes are rejected as not applied, and never hang.
    let rejected = store.write(put_cluster("c2", 1, &[]));
    assert!(
        matches!(rejected, Err(WriteError::NotApplied(_))),
        "{rejected:?}"
    );
    assert!(!store.is_writable());

    plan.set_unavailable(false);
    assert!(wait_for(REOPEN_TIMEOUT, || store.is_writable()));
    store.write(put_cluster("c2", 1, &[])).unwrap();
    assert!(store.get_cluster(&cluster_key("c2")).unwrap().is_some());
    assert!(matches!(
        store
            .write(WriteRequest::DeleteCluster {
                key: cluster_key("c2"),
                precondition: Precondition::None,
            })
            .unwrap(),
        Applied::Cluster(WriteOutcome::Deleted)
    ));
}

#[test]
fn power_loss_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.redb");
    let plan = FaultPlan::new();
    let store = open_faulty(&path, &plan);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let view = cluster_view(
            store
                .write(put_cluster(&format!("c{i}"), i, &["np1"]))
                .unwrap(),
        );
        acknowledged.push(view);
    }

    // Lose power at the sync of the next commit, dropping every write not yet synced.
    plan.power_loss_at_sync(0, || false);
    let lost = store.write(put_cluster("lost", 99, &["np1"]));
    assert!(
        matches!(lost, Err(WriteError::OutcomeUnknown(_))),
        "{lost:?}"
    );
    assert!(plan.is_unavailable());
    drop(store);
    plan.set_unavailable(false);

    let store = Store::open(&path).unwrap();
    for view in &acknowledged {
        let read = store.get_cluster(&cluster_key(&view.cluster.name)).unwrap();
        assert_eq!(read.as_ref(), Some(view), "acknowledged write lost");
    }
    assert!(store.get_cluster(&cluster_key("lost")).unwrap().is_none());
}
