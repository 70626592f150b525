//! Helpers shared by the store's integration tests: stores on a temporary file, opened plainly
//! or on a fault-injecting backend, and short constructors of write requests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use akstore_store::faults::{FaultPlan, FaultyBackend};
use akstore_store::{
    Applied, ClusterInput, ClusterKey, ClusterView, PoolInput, PoolKey, Precondition, Store,
    WriteOutcome, WriteRequest,
};

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
