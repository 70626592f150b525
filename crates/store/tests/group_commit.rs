//! Proves group commit's ordering and isolation rules on a real redb file: requests of one
//! batch are decided in order against the state the earlier ones left, no outcome (a 412
//! included) is sent before the batch's commit is durable, reads do not wait for the writer,
//! and a failed commit fails every request of its batch with "outcome unknown".
//!
//! The tests make requests share one batch deterministically by holding the writer inside the
//! fsync of an earlier commit, with a storage backend whose `sync_data` waits at a gate:
//! requests submitted meanwhile queue up, and the writer takes them together as its next
//! batch.

use std::fmt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use akstore_store::faults::{FaultPlan, FaultyBackend};
use akstore_store::{
    Applied, ClusterInput, ClusterKey, ClusterView, EntityTag, PoolInput, PoolKey, Precondition,
    Store, WriteError, WriteOutcome, WriteRequest,
};
use redb::{BackendError, StorageBackend};
use uuid::Uuid;

/// How long a test waits for the writer before it fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

/// A gate in front of `sync_data`: while closed, every sync waits until it is opened or a
/// single sync is let through.
#[derive(Default)]
struct SyncGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    /// Syncs that may pass the closed gate.
    permits: u64,
    /// Syncs waiting at the gate now.
    waiting: u64,
}

/// The crash-test backend, with a [`SyncGate`] in front of its syncs.
struct GatedBackend {
    inner: FaultyBackend,
    gate: Arc<SyncGate>,
}

/// Results of submitted writes, by label, in the order their completions ran.
type Results = Arc<Mutex<Vec<(&'static str, Result<Applied, WriteError>)>>>;

impl SyncGate {
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
    }

    fn open(&self) {
        self.state.lock().unwrap().closed = false;
        self.changed.notify_all();
    }

    /// Lets one sync pass while the gate stays closed.
    fn let_one_through(&self) {
        self.state.lock().unwrap().permits += 1;
        self.changed.notify_all();
    }

    /// Blocks until a sync waits at the gate.
    fn wait_for_sync(&self) {
        let state = self.state.lock().unwrap();
        let (state, timeout) = self
            .changed
            .wait_timeout_while(state, WAIT, |state| state.waiting == 0)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "no commit reached its sync within {WAIT:?}"
        );
        drop(state);
    }

    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        if !state.closed {
            return;
        }
        state.waiting += 1;
        self.changed.notify_all();
        while state.closed && state.permits == 0 {
            state = self.changed.wait(state).unwrap();
        }
        if state.closed {
            state.permits -= 1;
        }
        state.waiting -= 1;
        self.changed.notify_all();
    }
}

impl fmt::Debug for SyncGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncGate")
    }
}

impl fmt::Debug for GatedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedBackend")
            .field("inner", &self.inner)
            .finish()
    }
}

impl StorageBackend for GatedBackend {
    fn len(&self) -> Result<u64, BackendError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendError> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendError> {
        self.gate.pass();
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendError> {
        self.inner.close()
    }
}

/// Opens a store on `path` behind a sync gate and a fault plan.
fn open_gated(path: &Path) -> (Store, Arc<SyncGate>, Arc<FaultPlan>) {
    let gate = Arc::new(SyncGate::default());
    let plan = FaultPlan::new();
    let store = {
        let (gate, plan, file) = (Arc::clone(&gate), Arc::clone(&plan), path.to_path_buf());
        Store::open_with_backend(path, move || {
            Ok(GatedBackend {
                inner: FaultyBackend::open(&file, Arc::clone(&plan))?,
                gate: Arc::clone(&gate),
            })
        })
        .expect("open the store")
    };
    (store, gate, plan)
}

fn cluster_key(name: &str) -> ClusterKey {
    ClusterKey {
        subscription: "00000000-0000-0000-0000-000000000001".into(),
        resource_group: "rg".into(),
        name: name.into(),
    }
}

fn cluster_input(location: &str) -> ClusterInput {
    ClusterInput {
        location: location.into(),
        tags: None,
        properties: "{}".into(),
        extra: "{}".into(),
        pools: vec![PoolInput {
            name: "np1".into(),
            properties: r#"{"count":1}"#.into(),
        }],
    }
}

fn if_match(etag: Uuid) -> Precondition {
    Precondition::IfMatch(vec![EntityTag {
        value: etag.hyphenated().to_string(),
        weak: false,
    }])
}

fn put_cluster(name: &str, precondition: Precondition, location: &str) -> WriteRequest {
    WriteRequest::PutCluster {
        key: cluster_key(name),
        precondition,
        input: cluster_input(location),
    }
}

/// Creates cluster `name` with one pool and returns it.
fn create(store: &Store, name: &str) -> ClusterView {
    match store.write(put_cluster(
        name,
        Precondition::IfNoneMatchAny,
        "westeurope",
    )) {
        Ok(Applied::Cluster(WriteOutcome::Created(view))) => view,
        other => panic!("creating {name} returned {other:?}"),
    }
}

/// Submits `request` and records its result under `label` once the writer completes it.
fn submit(store: &Store, results: &Results, label: &'static str, request: WriteRequest) {
    let results = Arc::clone(results);
    store.submit(
        request,
        Box::new(move |result| results.lock().unwrap().push((label, result))),
    );
}

/// Waits until `count` results are in and returns them.
fn wait_for_results(
    results: &Results,
    count: usize,
) -> Vec<(&'static str, Result<Applied, WriteError>)> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        {
            let mut done = results.lock().unwrap();
            if done.len() >= count {
                return std::mem::take(&mut *done);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {count} writes were answered within {WAIT:?}",
            results.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn result_of<'a>(
    results: &'a [(&'static str, Result<Applied, WriteError>)],
    label: &str,
) -> &'a Result<Applied, WriteError> {
    &results
        .iter()
        .find(|(name, _)| *name == label)
        .unwrap_or_else(|| panic!("no result for {label}"))
        .1
}

fn cluster_outcome<'a>(
    results: &'a [(&'static str, Result<Applied, WriteError>)],
    label: &str,
) -> &'a WriteOutcome<ClusterView> {
    match result_of(results, label) {
        Ok(Applied::Cluster(outcome)) => outcome,
        other => panic!("{label} returned {other:?}"),
    }
}

/// Holds the writer in the sync of a commit of `blocker`, so that what is submitted next
/// queues up as one batch. Returns the results collector with `blocker` submitted.
fn hold_writer(store: &Store, gate: &SyncGate) -> Results {
    let results: Results = Arc::default();
    gate.close();
    submit(
        store,
        &results,
        "blocker",
        put_cluster("blocker", Precondition::None, "westeurope"),
    );
    gate.wait_for_sync();
    results
}

#[test]
fn shared_batch_decides_in_order_durably() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, _plan) = open_gated(&dir.path().join("akstore.redb"));
    let target = create(&store, "target");
    let pool_etag = target.pools[0].etag;
    let commits_before = store.writer_stats().commits;

    let results = hold_writer(&store, &gate);
    // Each request is decided against the state the requests before it in the batch leave.
    submit(
        &store,
        &results,
        "update",
        put_cluster("target", if_match(target.cluster.etag), "eastus"),
    );
    submit(
        &store,
        &results,
        "stale update",
        put_cluster("target", if_match(target.cluster.etag), "westus"),
    );
    submit(
        &store,
        &results,
        "stale pool update",
        WriteRequest::PutPool {
            key: PoolKey {
                cluster: cluster_key("target"),
                name: "np1".into(),
            },
            precondition: if_match(pool_etag),
            input: PoolInput {
                name: "np1".into(),
                properties: r#"{"count":5}"#.into(),
            },
            may_create: true,
        },
    );
    submit(
        &store,
        &results,
        "stale delete",
        WriteRequest::DeleteCluster {
            key: cluster_key("target"),
            precondition: if_match(target.cluster.etag),
        },
    );
    submit(
        &store,
        &results,
        "create",
        put_cluster("fresh", Precondition::IfNoneMatchAny, "northeurope"),
    );
    submit(
        &store,
        &results,
        "second create",
        put_cluster("fresh", Precondition::IfNoneMatchAny, "westus"),
    );
    let (seen_sender, seen_receiver) = mpsc::channel();
    submit(
        &store,
        &results,
        "patch",
        WriteRequest::PatchCluster {
            key: cluster_key("fresh"),
            precondition: Precondition::IfMatchAny,
            patch: Box::new(move |view| {
                seen_sender.send(view.cluster.location.clone()).unwrap();
                Ok(cluster_input("uksouth"))
            }),
        },
    );

    // The blocker's commit goes through; the next batch reaches its own sync and waits there.
    gate.let_one_through();
    let blocker = wait_for_results(&results, 1);
    assert_eq!(blocker[0].0, "blocker");
    gate.wait_for_sync();
    // Every request of the batch is decided, 412s included, but none is completed before
    // the commit is durable.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        results.lock().unwrap().is_empty(),
        "a write was completed before its batch's commit was durable"
    );
    // Reads do not wait for the writer, and see only committed state.
    let read = store.get_cluster(&cluster_key("target")).unwrap().unwrap();
    assert_eq!(read.cluster.etag, target.cluster.etag);
    assert!(store.get_cluster(&cluster_key("fresh")).unwrap().is_none());

    gate.open();
    let batch = wait_for_results(&results, 7);
    assert_eq!(
        store.writer_stats().commits,
        commits_before + 2,
        "the seven requests shared one commit"
    );

    let WriteOutcome::Updated(updated) = cluster_outcome(&batch, "update") else {
        panic!("update: {:?}", result_of(&batch, "update"));
    };
    assert_eq!(updated.cluster.location, "eastus");
    assert!(matches!(
        cluster_outcome(&batch, "stale update"),
        WriteOutcome::PreconditionFailed
    ));
    assert!(matches!(
        result_of(&batch, "stale pool update"),
        Ok(Applied::Pool(WriteOutcome::PreconditionFailed))
    ));
    assert!(matches!(
        cluster_outcome(&batch, "stale delete"),
        WriteOutcome::PreconditionFailed
    ));
    let WriteOutcome::Created(created) = cluster_outcome(&batch, "create") else {
        panic!("create: {:?}", result_of(&batch, "create"));
    };
    assert!(matches!(
        cluster_outcome(&batch, "second create"),
        WriteOutcome::PreconditionFailed
    ));
    let WriteOutcome::Updated(patched) = cluster_outcome(&batch, "patch") else {
        panic!("patch: {:?}", result_of(&batch, "patch"));
    };
    assert_eq!(seen_receiver.recv().unwrap(), "northeurope");
    assert_eq!(patched.cluster.location, "uksouth");

    // Applied writes take distinct revisions in submission order.
    assert!(updated.cluster.revision < created.cluster.revision);
    assert!(created.cluster.revision < patched.cluster.revision);

    // The returned records are the stored ones.
    let stored = store.get_cluster(&cluster_key("target")).unwrap().unwrap();
    assert_eq!(stored.cluster.etag, updated.cluster.etag);
    assert_eq!(stored.pools[0].etag, updated.pools[0].etag);
    let stored = store.get_cluster(&cluster_key("fresh")).unwrap().unwrap();
    assert_eq!(stored.cluster.etag, patched.cluster.etag);
}

#[test]
fn failed_commit_fails_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, plan) = open_gated(&dir.path().join("akstore.redb"));
    let target = create(&store, "target");

    let results = hold_writer(&store, &gate);
    submit(
        &store,
        &results,
        "create",
        put_cluster("fresh", Precondition::IfNoneMatchAny, "westus"),
    );
    submit(
        &store,
        &results,
        "update",
        put_cluster("target", if_match(target.cluster.etag), "eastus"),
    );
    submit(
        &store,
        &results,
        "stale update",
        put_cluster("target", if_match(Uuid::new_v4()), "westus"),
    );
    // The blocker's sync is still ahead of the backend: let it succeed and fail the next one,
    // the batch's.
    plan.fail_sync_after(1);
    gate.open();

    let answered = wait_for_results(&results, 4);
    assert!(
        matches!(
            result_of(&answered, "blocker"),
            Ok(Applied::Cluster(WriteOutcome::Created(_)))
        ),
        "blocker: {:?}",
        result_of(&answered, "blocker")
    );
    for label in ["create", "update", "stale update"] {
        assert!(
            matches!(
                result_of(&answered, label),
                Err(WriteError::OutcomeUnknown(_))
            ),
            "{label}: {:?}",
            result_of(&answered, label)
        );
    }
}
