//! Long-running operations in the store, on a real redb file: what a long-running write stores,
//! the conflict rule, reads before and after the deadline, settling and pruning, and an
//! operation that outlives a reopen of the file.
//!
//! A duration of zero makes an operation due at once and a duration of an hour keeps it
//! running for the whole test, so no test depends on the speed of the machine.

mod support;

use std::time::Duration;

use akstore_store::{
    Applied, ClusterView, EntityTag, Operation, OperationKind, OperationStatus, OperationTarget,
    PoolInput, PoolLookup, Precondition, ProvisioningState, SettleSummary, Store, WriteOutcome,
    WriteRequest,
};
use support::{cluster_key, cluster_view, pool_key, put_cluster};

const HOUR_MS: u64 = 3_600_000;

fn long_running(request: WriteRequest, duration_ms: u64) -> WriteRequest {
    WriteRequest::LongRunning {
        request: Box::new(request),
        duration_ms,
    }
}

fn delete_cluster(name: &str) -> WriteRequest {
    WriteRequest::DeleteCluster {
        key: cluster_key(name),
        precondition: Precondition::None,
    }
}

fn put_pool(cluster: &str, pool: &str) -> WriteRequest {
    WriteRequest::PutPool {
        key: pool_key(cluster, pool),
        precondition: Precondition::None,
        input: PoolInput {
            name: pool.into(),
            properties: "{}".into(),
        },
        may_create: true,
    }
}

fn delete_accepted(applied: Applied) -> Operation {
    match applied {
        Applied::Cluster(WriteOutcome::DeleteAccepted(operation))
        | Applied::Pool(WriteOutcome::DeleteAccepted(operation)) => operation,
        other => panic!("expected an accepted delete, got {other:?}"),
    }
}

fn conflict(applied: Applied) -> Operation {
    match applied {
        Applied::Cluster(WriteOutcome::Conflict(operation))
        | Applied::Pool(WriteOutcome::Conflict(operation)) => operation,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn settle(store: &Store, prune_ended_before_ms: Option<u64>) -> SettleSummary {
    match store
        .write(WriteRequest::SettleOperations {
            prune_ended_before_ms,
        })
        .unwrap()
    {
        Applied::Settled(summary) => summary,
        other => panic!("expected a settle summary, got {other:?}"),
    }
}

/// Creates a cluster with a long-running write that runs for the whole test.
fn start_create(store: &Store, name: &str, pools: &[&str]) -> ClusterView {
    cluster_view(
        store
            .write(long_running(put_cluster(name, 1, pools), HOUR_MS))
            .unwrap(),
    )
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("akstore.redb")).unwrap()
}

#[test]
fn long_running_put_stores_operation_with_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);

    let view = start_create(&store, "c1", &["np1"]);
    let operation = view
        .operation
        .clone()
        .expect("the write started an operation");
    assert_eq!(operation.kind, OperationKind::Create);
    assert_eq!(operation.target, OperationTarget::Cluster);
    assert_eq!(operation.status, OperationStatus::InProgress);
    assert_eq!(operation.deadline_ms - operation.started_ms, HOUR_MS);
    assert_eq!(operation.location, "westeurope");
    assert_eq!(view.cluster_state(), ProvisioningState::Creating);
    assert_eq!(view.pool_state(&view.pools[0]), ProvisioningState::Creating);

    let read = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    assert_eq!(read.operation, Some(operation.clone()));
    assert_eq!(read.cluster.etag, view.cluster.etag);
    assert_eq!(
        store.get_operation(&operation.id).unwrap(),
        Some(operation.clone())
    );
    let PoolLookup::Found(pool) = store.get_pool(&pool_key("c1", "np1")).unwrap() else {
        panic!("pool missing");
    };
    assert_eq!(pool.pool_state(), ProvisioningState::Creating);
    assert_eq!(store.operations_to_settle(None).unwrap(), 0);
}

#[test]
fn writes_during_operation_conflict_after_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let view = start_create(&store, "c1", &["np1"]);
    let running = view.operation.unwrap();

    for request in [
        put_cluster("c1", 2, &[]),
        delete_cluster("c1"),
        put_pool("c1", "np2"),
        WriteRequest::DeletePool {
            key: pool_key("c1", "np1"),
            precondition: Precondition::None,
        },
    ] {
        assert_eq!(conflict(store.write(request).unwrap()), running);
    }

    // A failed precondition wins over the conflict.
    let stale = store
        .write(WriteRequest::PutCluster {
            key: cluster_key("c1"),
            precondition: Precondition::IfMatch(vec![EntityTag {
                value: "stale".into(),
                weak: false,
            }]),
            input: support::cluster_input(3, &[]),
        })
        .unwrap();
    assert!(matches!(
        stale,
        Applied::Cluster(WriteOutcome::PreconditionFailed)
    ));

    // Nothing changed; another cluster is not blocked.
    let read = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    assert_eq!(read.cluster.etag, view.cluster.etag);
    assert_eq!(read.pools.len(), 1);
    cluster_view(store.write(put_cluster("c2", 1, &[])).unwrap());
}

#[test]
fn pool_operation_covers_only_its_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    cluster_view(store.write(put_cluster("c1", 1, &["np1"])).unwrap());

    let Applied::Pool(WriteOutcome::Created(pool)) = store
        .write(long_running(put_pool("c1", "np2"), HOUR_MS))
        .unwrap()
    else {
        panic!("pool not created");
    };
    let operation = pool.operation.clone().unwrap();
    assert_eq!(operation.target, OperationTarget::Pool("np2".into()));
    assert_eq!(pool.pool_state(), ProvisioningState::Creating);

    let cluster: ClusterView = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    assert_eq!(cluster.cluster_state(), ProvisioningState::Succeeded);
    let states: Vec<ProvisioningState> = cluster
        .pools
        .iter()
        .map(|pool| cluster.pool_state(pool))
        .collect();
    assert_eq!(
        states,
        [ProvisioningState::Succeeded, ProvisioningState::Creating]
    );

    // The cluster's writes are blocked by its pool's operation.
    assert_eq!(
        conflict(store.write(put_cluster("c1", 2, &[])).unwrap()),
        operation
    );
}

#[test]
fn long_running_delete_keeps_resource_until_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    cluster_view(store.write(put_cluster("c1", 1, &["np1"])).unwrap());

    let operation = delete_accepted(
        store
            .write(long_running(delete_cluster("c1"), HOUR_MS))
            .unwrap(),
    );
    assert_eq!(operation.kind, OperationKind::Delete);

    let read = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    assert_eq!(read.cluster_state(), ProvisioningState::Deleting);
    assert_eq!(read.pool_state(&read.pools[0]), ProvisioningState::Deleting);
    assert_eq!(store.counts().unwrap().clusters, 1);
}

#[test]
fn due_delete_reads_as_gone_and_settles() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    cluster_view(store.write(put_cluster("c1", 1, &["np1", "np2"])).unwrap());
    cluster_view(store.write(put_cluster("c2", 1, &["np1"])).unwrap());

    // Due at once: reads see the delete done although nothing has recorded it yet.
    let operation = delete_accepted(store.write(long_running(delete_cluster("c1"), 0)).unwrap());
    let pool_operation = delete_accepted(
        store
            .write(long_running(
                WriteRequest::DeletePool {
                    key: pool_key("c2", "np1"),
                    precondition: Precondition::None,
                },
                0,
            ))
            .unwrap(),
    );
    assert_eq!(store.get_cluster(&cluster_key("c1")).unwrap(), None);
    assert_eq!(
        store.get_pool(&pool_key("c1", "np1")).unwrap(),
        PoolLookup::ClusterMissing
    );
    assert_eq!(
        store.get_pool(&pool_key("c2", "np1")).unwrap(),
        PoolLookup::PoolMissing
    );
    assert!(
        store
            .get_cluster(&cluster_key("c2"))
            .unwrap()
            .unwrap()
            .pools
            .is_empty()
    );
    let scope = akstore_store::ClusterScope::Subscription(support::SUBSCRIPTION.into());
    let names: Vec<String> = store
        .list_clusters(&scope, None, 10)
        .unwrap()
        .items
        .into_iter()
        .map(|view| view.cluster.name)
        .collect();
    assert_eq!(names, ["c2"]);
    let done = store.get_operation(&operation.id).unwrap().unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded);
    assert_eq!(done.ended_ms, Some(operation.deadline_ms));

    // Settling removes the records durably and records the end.
    assert_eq!(store.counts().unwrap().clusters, 2);
    assert_eq!(store.operations_to_settle(None).unwrap(), 2);
    let summary = settle(&store, None);
    assert_eq!(
        summary,
        SettleSummary {
            finished: 2,
            pruned: 0
        }
    );
    let counts = store.counts().unwrap();
    assert_eq!((counts.clusters, counts.pools), (1, 0));
    assert_eq!(store.operations_to_settle(None).unwrap(), 0);
    assert_eq!(store.get_operation(&operation.id).unwrap(), Some(done));
    assert_eq!(
        store
            .get_operation(&pool_operation.id)
            .unwrap()
            .unwrap()
            .status,
        OperationStatus::Succeeded
    );
}

#[test]
fn write_after_due_delete_sees_resource_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    cluster_view(store.write(put_cluster("c1", 1, &["np1"])).unwrap());
    delete_accepted(store.write(long_running(delete_cluster("c1"), 0)).unwrap());

    // The write finishes the due delete in its own transaction, so the name is free.
    let created = store
        .write(WriteRequest::PutCluster {
            key: cluster_key("c1"),
            precondition: Precondition::IfNoneMatchAny,
            input: support::cluster_input(2, &[]),
        })
        .unwrap();
    let Applied::Cluster(WriteOutcome::Created(view)) = created else {
        panic!("expected a create, got {created:?}");
    };
    assert!(
        view.pools.is_empty(),
        "the deleted cluster's pools are gone"
    );
    assert_eq!(store.operations_to_settle(None).unwrap(), 0);
}

#[test]
fn settle_prunes_old_operation_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let view = cluster_view(
        store
            .write(long_running(put_cluster("c1", 1, &[]), 0))
            .unwrap(),
    );
    let operation = view.operation.unwrap();
    let running = start_create(&store, "c2", &[]).operation.unwrap();

    // Records that ended before the cut-off go; running ones stay whatever their start.
    let cut_off = operation.deadline_ms + 1;
    assert_eq!(store.operations_to_settle(Some(cut_off)).unwrap(), 2);
    let summary = settle(&store, Some(cut_off));
    assert_eq!(
        summary,
        SettleSummary {
            finished: 1,
            pruned: 1
        }
    );
    assert_eq!(store.get_operation(&operation.id).unwrap(), None);
    assert_eq!(store.get_operation(&running.id).unwrap(), Some(running));
    assert_eq!(store.operations_to_settle(Some(cut_off)).unwrap(), 0);
}

#[test]
fn operation_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (running, due) = {
        let store = open(&dir);
        cluster_view(store.write(put_cluster("c2", 1, &[])).unwrap());
        let running = start_create(&store, "c1", &[]).operation.unwrap();
        let due = delete_accepted(
            store
                .write(long_running(delete_cluster("c2"), 200))
                .unwrap(),
        );
        (running, due)
    };
    std::thread::sleep(Duration::from_millis(250));

    let store = open(&dir);
    assert_eq!(store.get_operation(&running.id).unwrap(), Some(running));
    assert_eq!(
        store
            .get_cluster(&cluster_key("c1"))
            .unwrap()
            .unwrap()
            .cluster_state(),
        ProvisioningState::Creating
    );
    assert_eq!(store.get_cluster(&cluster_key("c2")).unwrap(), None);
    assert_eq!(
        store.get_operation(&due.id).unwrap().unwrap().status,
        OperationStatus::Succeeded
    );
    assert_eq!(settle(&store, None).finished, 1);
}
