//! Exactly-once retries on a real file: a retry with the same client request id gets the
//! recorded outcome, across a reopen of the file and inside one group commit, and the write
//! is applied once.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use akstore_store::{Applied, ClientRequest, Precondition, Store, WriteOutcome, WriteRequest};
use support::{cluster_input, cluster_key, cluster_view, put_cluster};

fn client(id: &str, fingerprint: u8) -> Option<ClientRequest> {
    Some(ClientRequest {
        id: id.into(),
        fingerprint: [fingerprint; 32],
    })
}

/// A create that fails its precondition once the cluster exists, as an SDK's create does.
fn create_cluster(name: &str, marker: u64) -> WriteRequest {
    WriteRequest::PutCluster {
        key: cluster_key(name),
        precondition: Precondition::IfNoneMatchAny,
        input: cluster_input(marker, &["np1"]),
    }
}

#[test]
fn retry_after_reopen_gets_original_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.redb");
    let store = Store::open(&path).unwrap();
    let created = store
        .write_once(create_cluster("c1", 1), client("id-1", 7))
        .unwrap();
    let Applied::Cluster(WriteOutcome::Created(original)) = created else {
        panic!("expected a create, got {created:?}");
    };
    drop(store);

    let store = Store::open(&path).unwrap();
    let revision = store.counts().unwrap().revision;
    let retried = store
        .write_once(create_cluster("c1", 1), client("id-1", 7))
        .unwrap();
    let Applied::Cluster(WriteOutcome::Created(replayed)) = retried else {
        panic!("a retry gets the original 201, got {retried:?}");
    };
    assert_eq!(replayed, original);
    assert_eq!(
        store.counts().unwrap().revision,
        revision,
        "a retry writes nothing"
    );
    assert_eq!(store.request_count().unwrap(), 1);

    // Without the id, the same create fails its precondition.
    let plain = store.write(create_cluster("c1", 1)).unwrap();
    assert!(matches!(
        plain,
        Applied::Cluster(WriteOutcome::PreconditionFailed)
    ));
}

#[test]
fn changed_resource_still_replays_original() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("a.redb")).unwrap();
    let first = cluster_view(
        store
            .write_once(put_cluster("c1", 1, &["np1"]), client("id-1", 1))
            .unwrap(),
    );
    let second = cluster_view(store.write(put_cluster("c1", 2, &["np1"])).unwrap());
    assert_ne!(first.cluster.etag, second.cluster.etag);

    let replayed = cluster_view(
        store
            .write_once(put_cluster("c1", 1, &["np1"]), client("id-1", 1))
            .unwrap(),
    );
    assert_eq!(replayed, first);
    let current = store.get_cluster(&cluster_key("c1")).unwrap().unwrap();
    assert_eq!(current, second, "the replay changed nothing");
}

#[test]
fn reused_id_with_other_request_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("a.redb")).unwrap();
    store
        .write_once(put_cluster("c1", 1, &[]), client("id-1", 1))
        .unwrap();
    let before = store.counts().unwrap();

    let reused = store
        .write_once(put_cluster("c2", 1, &[]), client("id-1", 2))
        .unwrap();
    assert!(matches!(
        reused,
        Applied::Cluster(WriteOutcome::RequestIdReused)
    ));
    assert_eq!(store.counts().unwrap(), before);
    assert!(store.get_cluster(&cluster_key("c2")).unwrap().is_none());
}

#[test]
fn same_id_twice_in_one_batch_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("a.redb")).unwrap();
    store.write(put_cluster("blocker", 0, &[])).unwrap();
    let revision = store.counts().unwrap().revision;

    // Hold the writer inside a PATCH so that both attempts queue into the next batch.
    let (entered_sender, entered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    store.submit(
        WriteRequest::PatchCluster {
            key: cluster_key("blocker"),
            precondition: Precondition::None,
            patch: Box::new(move |_| {
                entered_sender.send(()).unwrap();
                released.recv_timeout(Duration::from_secs(30)).unwrap();
                Err("left unchanged".into())
            }),
        },
        Box::new(|_| {}),
    );
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let attempts: Vec<_> = (0..2)
        .map(|_| {
            let (sender, receiver) = mpsc::channel();
            store.submit_once(
                create_cluster("c1", 1),
                client("id-1", 1),
                Box::new(move |result| sender.send(result).unwrap()),
            );
            receiver
        })
        .collect();
    release.send(()).unwrap();

    let views: Vec<_> = attempts
        .iter()
        .map(
            |attempt| match attempt.recv_timeout(Duration::from_secs(30)).unwrap() {
                Ok(Applied::Cluster(WriteOutcome::Created(view))) => view,
                other => panic!("both attempts get the create, got {other:?}"),
            },
        )
        .collect();
    assert_eq!(views[0], views[1]);
    assert_eq!(store.counts().unwrap().revision, revision + 1);
}
