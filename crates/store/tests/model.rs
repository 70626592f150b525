//! Model-based test of the store: random sequences of conditional writes run against the store
//! on a real file and against a small in-memory model of the rules, with I/O faults injected
//! through the fault-injecting storage backend.
//!
//! After every write the whole stored state must equal the model's prediction: the outcome,
//! every record's revision and marker, and which eTags changed. Faults fail the N-th write or
//! sync (transiently), or lose power at the N-th sync, keeping a random subset of the writes
//! since the last sync. A write that fails is then either not applied (a 503-kind error: the
//! state must equal the model) or of unknown outcome: the state, read once the store has
//! reopened, must be the state before the write or the state after it. The test reopens the
//! store at random points, after each power loss, and at the end, and compares again.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use akstore_store::faults::{FaultPlan, FaultyBackend};
use akstore_store::{
    Applied, ClusterInput, ClusterKey, ClusterScope, EntityTag, PoolInput, Precondition, Store,
    WriteError, WriteOutcome, WriteRequest,
};
use proptest::prelude::*;
use support::{RESOURCE_GROUP, SUBSCRIPTION, cluster_key, open_faulty, pool_key, wait_for};
use uuid::Uuid;

const CLUSTERS: [&str; 3] = ["a", "b", "c"];
const POOLS: [&str; 3] = ["p1", "p2", "p3"];

/// How long the test waits for the writer to reopen the database after a fault.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Which condition header a write carries.
#[derive(Clone, Copy, Debug)]
enum Condition {
    None,
    IfMatchAny,
    IfNoneMatchAny,
    /// `If-Match` with the target's current eTag (a random one when it does not exist).
    IfMatchCurrent,
    /// `If-Match` with an eTag no record has.
    IfMatchStale,
}

#[derive(Clone, Debug)]
enum Step {
    PutCluster {
        cluster: usize,
        condition: Condition,
        pools: Vec<usize>,
    },
    PatchCluster {
        cluster: usize,
        condition: Condition,
    },
    DeleteCluster {
        cluster: usize,
        condition: Condition,
    },
    PutPool {
        cluster: usize,
        pool: usize,
        condition: Condition,
    },
    PatchPool {
        cluster: usize,
        pool: usize,
        condition: Condition,
    },
    DeletePool {
        cluster: usize,
        pool: usize,
        condition: Condition,
    },
    FailWrite(u64),
    FailSync(u64),
    /// Loses power at the N-th sync from now, keeping the unsynced writes the pattern marks.
    PowerLoss {
        at_sync: u64,
        keep: Vec<bool>,
    },
    Reopen,
}

/// One stored record, as the model tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    etag: Uuid,
    revision: u64,
    marker: u64,
}

/// Everything stored, keyed by cluster name and (cluster, pool) name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct State {
    revision: u64,
    clusters: BTreeMap<String, Record>,
    pools: BTreeMap<(String, String), Record>,
}

/// What the model expects a write to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Created,
    Updated,
    Deleted,
    /// A DELETE found nothing to remove.
    Absent,
    NotFound,
    ParentNotFound,
    PreconditionFailed,
}

/// A placeholder eTag in a predicted state: the record must have a new eTag.
const FRESH: Uuid = Uuid::nil();

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        1 => Just(Condition::None),
        1 => Just(Condition::IfMatchAny),
        1 => Just(Condition::IfNoneMatchAny),
        3 => Just(Condition::IfMatchCurrent),
        1 => Just(Condition::IfMatchStale),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let cluster = 0..CLUSTERS.len();
    let pool = 0..POOLS.len();
    prop_oneof![
        4 => (cluster.clone(), condition(), proptest::collection::vec(pool.clone(), 0..3))
            .prop_map(|(cluster, condition, pools)| Step::PutCluster { cluster, condition, pools }),
        2 => (cluster.clone(), condition())
            .prop_map(|(cluster, condition)| Step::PatchCluster { cluster, condition }),
        1 => (cluster.clone(), condition())
            .prop_map(|(cluster, condition)| Step::DeleteCluster { cluster, condition }),
        4 => (cluster.clone(), pool.clone(), condition())
            .prop_map(|(cluster, pool, condition)| Step::PutPool { cluster, pool, condition }),
        2 => (cluster.clone(), pool.clone(), condition())
            .prop_map(|(cluster, pool, condition)| Step::PatchPool { cluster, pool, condition }),
        1 => (cluster, pool, condition())
            .prop_map(|(cluster, pool, condition)| Step::DeletePool { cluster, pool, condition }),
        1 => (0u64..6).prop_map(Step::FailWrite),
        1 => (0u64..3).prop_map(Step::FailSync),
        1 => (0u64..3, proptest::collection::vec(any::<bool>(), 1..16))
            .prop_map(|(at_sync, keep)| Step::PowerLoss { at_sync, keep }),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model_under_faults(steps in proptest::collection::vec(step(), 1..40)) {
        run(&steps);
    }
}

/// Runs `steps` against a fresh store and the model; panics on the first difference.
fn run(steps: &[Step]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.redb");
    let plan = FaultPlan::new();
    let mut store = open_faulty(&path, &plan);
    let mut model = State::default();
    let mut marker = 0u64;

    for step in steps {
        match step {
            Step::FailWrite(n) => plan.fail_write_after(*n),
            Step::FailSync(n) => plan.fail_sync_after(*n),
            Step::PowerLoss { at_sync, keep } => {
                let mut pattern = keep.clone().into_iter().cycle();
                plan.power_loss_at_sync(*at_sync, move || pattern.next().unwrap_or(false));
            }
            Step::Reopen => {
                store = reopen(store, &path, &plan);
                assert_eq!(read_state(&store), model, "state changed across a reopen");
            }
            write => {
                marker += 1;
                store = run_write(store, &path, &plan, &mut model, write, marker);
            }
        }
    }

    plan.clear();
    let store = reopen(store, &path, &plan);
    assert_eq!(
        read_state(&store),
        model,
        "state changed across the final reopen"
    );
}

/// Runs one write, checks its outcome against the model, and moves the model on. Returns the
/// store, reopened when a power loss took it down.
fn run_write(
    store: Store,
    path: &Path,
    plan: &Arc<FaultPlan>,
    model: &mut State,
    step: &Step,
    marker: u64,
) -> Store {
    let (request, precondition_etag) = request(step, model, marker);
    let (expected, predicted) = predict(model, step, precondition_etag, marker);

    match store.write(request) {
        Ok(applied) => {
            assert_eq!(outcome_kind(&applied), expected, "{step:?} on {model:?}");
            let observed = read_state(&store);
            assert_conforms(&predicted, &observed, model, step);
            *model = observed;
            store
        }
        Err(error) => {
            // A write that was not applied leaves the state as it was; one of unknown outcome
            // leaves it as it was or as the write makes it.
            let store = settle(store, path, plan);
            let observed = read_state(&store);
            if observed != *model {
                assert!(
                    matches!(error, WriteError::OutcomeUnknown(_)),
                    "{step:?} failed with {error} but changed the state"
                );
                assert_conforms(&predicted, &observed, model, step);
            }
            *model = observed;
            store
        }
    }
}

/// Waits for the store to accept writes again. A power loss (which may come during the
/// writer's own reopen) leaves the disk unavailable: then the test restores power and opens a
/// new store on the file, as a restarted server would.
fn settle(store: Store, path: &Path, plan: &Arc<FaultPlan>) -> Store {
    assert!(
        wait_for(REOPEN_TIMEOUT, || store.is_writable()
            || plan.is_unavailable()),
        "the store did not reopen after a fault"
    );
    if plan.is_unavailable() {
        drop(store);
        plan.clear();
        return open_after_faults(path, plan);
    }
    store
}

/// Opens the store, restoring power and trying again when a fault still due fails the open
/// (redb's open and recovery write and sync too). A failed open must leave the file usable.
fn open_after_faults(path: &Path, plan: &Arc<FaultPlan>) -> Store {
    let mut errors = Vec::new();
    for _ in 0..5 {
        plan.set_unavailable(false);
        let file = path.to_path_buf();
        let backend_plan = Arc::clone(plan);
        match Store::open_with_backend(path, move || {
            FaultyBackend::open(&file, Arc::clone(&backend_plan))
        }) {
            Ok(store) => return store,
            Err(error) => errors.push(error.to_string()),
        }
    }
    panic!("the store did not open after faults: {errors:?}");
}

fn reopen(store: Store, path: &Path, plan: &Arc<FaultPlan>) -> Store {
    drop(store);
    open_after_faults(path, plan)
}

/// Builds the store request of a write step; returns it with the eTag its `If-Match` names.
fn request(step: &Step, model: &State, marker: u64) -> (WriteRequest, Option<Uuid>) {
    let properties = format!(r#"{{"m":{marker}}}"#);
    let current_etag = |target: Option<&Record>| target.map_or_else(Uuid::new_v4, |r| r.etag);
    let condition_of = |condition: Condition, target: Option<&Record>| match condition {
        Condition::None => (Precondition::None, None),
        Condition::IfMatchAny => (Precondition::IfMatchAny, None),
        Condition::IfNoneMatchAny => (Precondition::IfNoneMatchAny, None),
        Condition::IfMatchCurrent => {
            let etag = current_etag(target);
            (if_match(etag), Some(etag))
        }
        Condition::IfMatchStale => {
            let etag = Uuid::new_v4();
            (if_match(etag), Some(etag))
        }
    };
    let cluster_record = |cluster: usize| model.clusters.get(CLUSTERS[cluster]);
    let pool_record = |cluster: usize, pool: usize| {
        model
            .pools
            .get(&(CLUSTERS[cluster].to_owned(), POOLS[pool].to_owned()))
    };

    match step {
        Step::PutCluster {
            cluster,
            condition,
            pools,
        } => {
            let (precondition, etag) = condition_of(*condition, cluster_record(*cluster));
            let pools = unique(pools)
                .into_iter()
                .map(|pool| PoolInput {
                    name: POOLS[pool].into(),
                    properties: properties.clone(),
                })
                .collect();
            let input = ClusterInput {
                location: "westeurope".into(),
                tags: None,
                properties,
                extra: "{}".into(),
                pools,
            };
            let request = WriteRequest::PutCluster {
                key: key(*cluster),
                precondition,
                input,
            };
            (request, etag)
        }
        Step::PatchCluster { cluster, condition } => {
            let (precondition, etag) = condition_of(*condition, cluster_record(*cluster));
            let request = WriteRequest::PatchCluster {
                key: key(*cluster),
                precondition,
                patch: Box::new(move |view| {
                    Ok(ClusterInput {
                        location: view.cluster.location.clone(),
                        tags: view.cluster.tags.clone(),
                        properties,
                        extra: view.cluster.extra.clone(),
                        pools: Vec::new(),
                    })
                }),
            };
            (request, etag)
        }
        Step::DeleteCluster { cluster, condition } => {
            let (precondition, etag) = condition_of(*condition, cluster_record(*cluster));
            let request = WriteRequest::DeleteCluster {
                key: key(*cluster),
                precondition,
            };
            (request, etag)
        }
        Step::PutPool {
            cluster,
            pool,
            condition,
        } => {
            let (precondition, etag) = condition_of(*condition, pool_record(*cluster, *pool));
            let request = WriteRequest::PutPool {
                key: pool_key(CLUSTERS[*cluster], POOLS[*pool]),
                precondition,
                input: PoolInput {
                    name: POOLS[*pool].into(),
                    properties,
                },
                may_create: true,
            };
            (request, etag)
        }
        Step::PatchPool {
            cluster,
            pool,
            condition,
        } => {
            let (precondition, etag) = condition_of(*condition, pool_record(*cluster, *pool));
            let request = WriteRequest::PatchPool {
                key: pool_key(CLUSTERS[*cluster], POOLS[*pool]),
                precondition,
                patch: Box::new(move |view| {
                    Ok(PoolInput {
                        name: view.pool.name.clone(),
                        properties,
                    })
                }),
            };
            (request, etag)
        }
        Step::DeletePool {
            cluster,
            pool,
            condition,
        } => {
            let (precondition, etag) = condition_of(*condition, pool_record(*cluster, *pool));
            let request = WriteRequest::DeletePool {
                key: pool_key(CLUSTERS[*cluster], POOLS[*pool]),
                precondition,
            };
            (request, etag)
        }
        other => unreachable!("{other:?} is not a write"),
    }
}

/// The model of the rules: what a write step does to `state`. Records it creates or rotates
/// get the [`FRESH`] placeholder eTag.
fn predict(state: &State, step: &Step, if_match: Option<Uuid>, marker: u64) -> (Expected, State) {
    let mut next = state.clone();
    let revision = state.revision + 1;
    let fresh = Record {
        etag: FRESH,
        revision,
        marker,
    };

    let (verb, condition, cluster) = match step {
        Step::PutCluster {
            cluster, condition, ..
        } => (Verb::Put, *condition, *cluster),
        Step::PatchCluster { cluster, condition } => (Verb::Patch, *condition, *cluster),
        Step::DeleteCluster { cluster, condition } => (Verb::Delete, *condition, *cluster),
        Step::PutPool {
            cluster, condition, ..
        } => (Verb::Put, *condition, *cluster),
        Step::PatchPool {
            cluster, condition, ..
        } => (Verb::Patch, *condition, *cluster),
        Step::DeletePool {
            cluster, condition, ..
        } => (Verb::Delete, *condition, *cluster),
        other => unreachable!("{other:?} is not a write"),
    };
    let cluster_name = CLUSTERS[cluster].to_owned();
    let cluster_record = state.clusters.get(&cluster_name).copied();

    match step {
        Step::PutCluster { .. } | Step::PatchCluster { .. } | Step::DeleteCluster { .. } => {
            if let Some(failure) = decide(verb, condition, cluster_record.map(|r| r.etag), if_match)
            {
                return (failure, next);
            }
            next.revision = revision;
            let pool_keys: Vec<_> = state
                .pools
                .keys()
                .filter(|(c, _)| *c == cluster_name)
                .cloned()
                .collect();
            if let Step::DeleteCluster { .. } = step {
                next.clusters.remove(&cluster_name);
                for key in pool_keys {
                    next.pools.remove(&key);
                }
                return (Expected::Deleted, next);
            }

            // A cluster write rotates every pool; a PUT also writes the pools it lists.
            next.clusters.insert(cluster_name.clone(), fresh);
            for key in pool_keys {
                let pool = next.pools.get_mut(&key).expect("listed from the state");
                pool.etag = FRESH;
                pool.revision = revision;
            }
            if let Step::PutCluster { pools, .. } = step {
                for pool in unique(pools) {
                    next.pools
                        .insert((cluster_name.clone(), POOLS[pool].to_owned()), fresh);
                }
            }
            let expected = if cluster_record.is_some() {
                Expected::Updated
            } else {
                Expected::Created
            };
            (expected, next)
        }
        Step::PutPool { pool, .. }
        | Step::PatchPool { pool, .. }
        | Step::DeletePool { pool, .. } => {
            let pool_key = (cluster_name.clone(), POOLS[*pool].to_owned());
            if cluster_record.is_none() {
                let missing = match verb {
                    Verb::Delete => Expected::Absent,
                    Verb::Put | Verb::Patch => Expected::ParentNotFound,
                };
                return (missing, next);
            }
            let pool_record = state.pools.get(&pool_key).copied();
            if let Some(failure) = decide(verb, condition, pool_record.map(|r| r.etag), if_match) {
                return (failure, next);
            }
            next.revision = revision;
            if verb == Verb::Delete {
                next.pools.remove(&pool_key);
                return (Expected::Deleted, next);
            }
            next.pools.insert(pool_key, fresh);
            let expected = if pool_record.is_some() {
                Expected::Updated
            } else {
                Expected::Created
            };
            (expected, next)
        }
        other => unreachable!("{other:?} is not a write"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Put,
    Patch,
    Delete,
}

/// The precondition table: `None` to proceed, or the failure.
fn decide(
    verb: Verb,
    condition: Condition,
    current: Option<Uuid>,
    if_match: Option<Uuid>,
) -> Option<Expected> {
    match (verb, current) {
        (Verb::Put, None) => match condition {
            Condition::None | Condition::IfNoneMatchAny => None,
            _ => Some(Expected::PreconditionFailed),
        },
        (Verb::Patch, None) => Some(Expected::NotFound),
        (Verb::Delete, None) => Some(Expected::Absent),
        (_, Some(etag)) => match condition {
            Condition::None | Condition::IfMatchAny => None,
            Condition::IfNoneMatchAny => Some(Expected::PreconditionFailed),
            Condition::IfMatchCurrent | Condition::IfMatchStale => {
                (if_match != Some(etag)).then_some(Expected::PreconditionFailed)
            }
        },
    }
}

/// Checks `observed` against `predicted`: equal, except that a [`FRESH`] eTag must be a new
/// one, different from the record's eTag in `before`.
fn assert_conforms(predicted: &State, observed: &State, before: &State, step: &Step) {
    let context = format!(
        "{step:?}\nbefore:    {before:?}\npredicted: {predicted:?}\nobserved:  {observed:?}"
    );
    assert_eq!(predicted.revision, observed.revision, "revision: {context}");
    assert_eq!(
        predicted.clusters.keys().collect::<Vec<_>>(),
        observed.clusters.keys().collect::<Vec<_>>(),
        "clusters: {context}"
    );
    assert_eq!(
        predicted.pools.keys().collect::<Vec<_>>(),
        observed.pools.keys().collect::<Vec<_>>(),
        "pools: {context}"
    );
    let records = predicted
        .clusters
        .iter()
        .map(|(k, r)| {
            (
                format!("cluster {k}"),
                r,
                observed.clusters[k],
                before.clusters.get(k),
            )
        })
        .chain(predicted.pools.iter().map(|(k, r)| {
            (
                format!("pool {k:?}"),
                r,
                observed.pools[k],
                before.pools.get(k),
            )
        }));
    for (name, expected, found, previous) in records {
        assert_eq!(
            expected.revision, found.revision,
            "{name} revision: {context}"
        );
        assert_eq!(expected.marker, found.marker, "{name} marker: {context}");
        if expected.etag == FRESH {
            assert_ne!(found.etag, FRESH, "{name} eTag: {context}");
            assert_ne!(
                Some(found.etag),
                previous.map(|p| p.etag),
                "{name} eTag kept: {context}"
            );
        } else {
            assert_eq!(expected.etag, found.etag, "{name} eTag changed: {context}");
        }
    }
}

/// Reads the whole stored state.
fn read_state(store: &Store) -> State {
    let scope = ClusterScope::ResourceGroup {
        subscription: SUBSCRIPTION.into(),
        resource_group: RESOURCE_GROUP.into(),
    };
    let page = store
        .list_clusters(&scope, None, 1000)
        .expect("list the clusters");
    assert!(page.continuation.is_none());
    let mut state = State {
        revision: store.counts().expect("read the counts").revision,
        ..State::default()
    };
    for view in page.items {
        let record = |etag, revision, properties: &str| Record {
            etag,
            revision,
            marker: marker_of(properties),
        };
        let cluster = view.cluster.name.clone();
        state.clusters.insert(
            cluster.clone(),
            record(
                view.cluster.etag,
                view.cluster.revision,
                &view.cluster.properties,
            ),
        );
        for pool in view.pools {
            state.pools.insert(
                (cluster.clone(), pool.name.clone()),
                record(pool.etag, pool.revision, &pool.properties),
            );
        }
    }
    state
}

fn marker_of(properties: &str) -> u64 {
    let digits: String = properties.chars().filter(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no marker in {properties}"))
}

fn outcome_kind(applied: &Applied) -> Expected {
    let kind = |outcome: &dyn OutcomeKind| outcome.kind();
    match applied {
        Applied::Cluster(outcome) => kind(outcome),
        Applied::Pool(outcome) => kind(outcome),
        Applied::Settled(summary) => panic!("a client write settled operations: {summary:?}"),
    }
}

trait OutcomeKind {
    fn kind(&self) -> Expected;
}

impl<T> OutcomeKind for WriteOutcome<T> {
    fn kind(&self) -> Expected {
        match self {
            WriteOutcome::Created(_) => Expected::Created,
            WriteOutcome::Updated(_) => Expected::Updated,
            WriteOutcome::Deleted => Expected::Deleted,
            WriteOutcome::Absent => Expected::Absent,
            WriteOutcome::NotFound => Expected::NotFound,
            WriteOutcome::ParentNotFound => Expected::ParentNotFound,
            WriteOutcome::PreconditionFailed => Expected::PreconditionFailed,
            other => panic!("unexpected outcome {}", std::any::type_name_of_val(other)),
        }
    }
}

fn key(cluster: usize) -> ClusterKey {
    cluster_key(CLUSTERS[cluster])
}

fn if_match(etag: Uuid) -> Precondition {
    Precondition::IfMatch(vec![EntityTag {
        value: etag.to_string(),
        weak: false,
    }])
}

fn unique(indexes: &[usize]) -> Vec<usize> {
    let mut unique = indexes.to_vec();
    unique.sort_unstable();
    unique.dedup();
    unique
}
