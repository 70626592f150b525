//! Records, keys, preconditions and write outcomes: the vocabulary of the store.
//!
//! Names keep the casing a client created them with; keys compare them case-insensitively by
//! lower-casing every part. Key parts never contain `/`, which separates them, because the API
//! layer validates names before they reach the store.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::operation::{Operation, OperationTarget, ProvisioningState};

/// Separator between the parts of a storage key. No valid name contains it.
pub(crate) const KEY_SEPARATOR: char = '/';

/// A managed cluster as stored. `properties` and `extra` hold JSON object text exactly as the
/// API layer produced it; the store never parses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    /// JSON object text of the tags, or `None` when the client sent none.
    pub tags: Option<String>,
    /// JSON object text of the client's properties, without `agentPoolProfiles`.
    pub properties: String,
    /// JSON object text of the client's other top-level fields (`sku`, `identity`, ...).
    pub extra: String,
    pub etag: Uuid,
    /// Global revision of the write that last changed this record.
    pub revision: u64,
    /// Creation time, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Time of the last change, in milliseconds since the Unix epoch.
    pub changed_ms: u64,
}

/// An agent pool as stored. The cluster it belongs to is part of its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    /// JSON object text of the client's properties, without `eTag`, `name` and
    /// `provisioningState`.
    pub properties: String,
    pub etag: Uuid,
    pub revision: u64,
    pub created_ms: u64,
    pub changed_ms: u64,
}

/// A cluster together with its pools, ordered by the pools' lower-cased names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster: Cluster,
    pub pools: Vec<Pool>,
    /// The operation running on the cluster or one of its pools, if any.
    pub operation: Option<Operation>,
}

/// A pool together with the cluster it belongs to, whose names build the pool's resource id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    pub cluster: Cluster,
    pub pool: Pool,
    /// The operation running on the cluster or one of its pools, if any.
    pub operation: Option<Operation>,
}

impl ClusterView {
    /// The cluster's `provisioningState`: that of a running cluster operation, else
    /// `Succeeded`. A pool operation leaves the cluster `Succeeded`.
    pub fn cluster_state(&self) -> ProvisioningState {
        match &self.operation {
            Some(op) if op.target == OperationTarget::Cluster => op.provisioning_state(),
            _ => ProvisioningState::Succeeded,
        }
    }

    /// The `provisioningState` of one of the cluster's pools.
    pub fn pool_state(&self, pool: &Pool) -> ProvisioningState {
        pool_state(self.operation.as_ref(), pool)
    }
}

impl PoolView {
    /// The pool's `provisioningState`: that of a running operation on the pool or on its
    /// cluster, else `Succeeded`.
    pub fn pool_state(&self) -> ProvisioningState {
        pool_state(self.operation.as_ref(), &self.pool)
    }
}

fn pool_state(operation: Option<&Operation>, pool: &Pool) -> ProvisioningState {
    match operation {
        Some(op) if op.covers_pool(&pool.name) => op.provisioning_state(),
        _ => ProvisioningState::Succeeded,
    }
}

/// Address of a cluster, in the casing of the request that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKey {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
}

/// Address of an agent pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolKey {
    pub cluster: ClusterKey,
    pub name: String,
}

/// The clusters a list request covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterScope {
    Subscription(String),
    ResourceGroup {
        subscription: String,
        resource_group: String,
    },
}

impl ClusterKey {
    /// Storage key: the lower-cased parts joined by `/`.
    pub fn storage_key(&self) -> String {
        join_lowercase(&[&self.subscription, &self.resource_group, &self.name])
    }

    /// Prefix that every pool key of this cluster starts with.
    pub(crate) fn pool_prefix(&self) -> String {
        let mut prefix = self.storage_key();
        prefix.push(KEY_SEPARATOR);
        prefix
    }
}

impl PoolKey {
    /// Storage key: the cluster's key, `/`, and the lower-cased pool name.
    pub fn storage_key(&self) -> String {
        let mut key = self.cluster.pool_prefix();
        key.push_str(&self.name.to_ascii_lowercase());
        key
    }
}

impl ClusterScope {
    /// Prefix that every cluster key in this scope starts with.
    pub fn key_prefix(&self) -> String {
        let mut prefix = match self {
            ClusterScope::Subscription(subscription) => join_lowercase(&[subscription]),
            ClusterScope::ResourceGroup {
                subscription,
                resource_group,
            } => join_lowercase(&[subscription, resource_group]),
        };
        prefix.push(KEY_SEPARATOR);
        prefix
    }
}

fn join_lowercase(parts: &[&str]) -> String {
    let mut key = String::new();
    for (index, part) in parts.iter().enumerate() {
        debug_assert!(
            !part.contains(KEY_SEPARATOR),
            "key part {part:?} contains the separator"
        );
        if index > 0 {
            key.push(KEY_SEPARATOR);
        }
        key.push_str(&part.to_ascii_lowercase());
    }
    key
}

/// An entity-tag from an `If-Match` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityTag {
    /// The tag without quotes or the `W/` prefix.
    pub value: String,
    /// A weak tag (`W/"..."`) never matches: akstore compares strongly.
    pub weak: bool,
}

impl EntityTag {
    /// Strong comparison: exact text, and a weak tag matches nothing.
    pub fn matches(&self, etag: &Uuid) -> bool {
        !self.weak && self.value == etag.hyphenated().to_string()
    }
}

/// The condition a write carries, already parsed from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// No condition header, or only empty ones.
    None,
    /// `If-Match: *`: the resource must exist.
    IfMatchAny,
    /// `If-Match` with entity-tags: the resource must exist and one tag must match its eTag.
    IfMatch(Vec<EntityTag>),
    /// `If-None-Match: *`: the resource must not exist.
    IfNoneMatchAny,
}

/// Result of a write. Every variant but `Created`, `Updated`, `Deleted` and `DeleteAccepted`
/// wrote nothing.
#[derive(Debug)]
pub enum WriteOutcome<T> {
    /// The resource was created; as a long-running write, the view contains the new operation.
    Created(T),
    /// The resource was replaced; as a long-running write, the view contains the new operation.
    Updated(T),
    Deleted,
    /// A long-running delete started: the resource reads as `Deleting` until the operation's
    /// deadline, when it is gone.
    DeleteAccepted(Operation),
    /// A DELETE found no resource to remove (for a pool, possibly no cluster either).
    Absent,
    /// An operation runs on the resource's cluster, so the write was rejected. Carries the
    /// running operation.
    Conflict(Operation),
    /// The resource does not exist: a PATCH, or a PUT that may not create it.
    NotFound,
    /// The parent cluster of a pool does not exist.
    ParentNotFound,
    PreconditionFailed,
    /// The merge of a PATCH produced a resource the API layer rejects; the text gives the reason.
    Invalid(String),
    /// The client request id was already used by a different applied request.
    RequestIdReused,
}

/// The desired state of a cluster, as a PUT or a merged PATCH describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInput {
    pub location: String,
    pub tags: Option<String>,
    pub properties: String,
    pub extra: String,
    /// Pools named by `agentPoolProfiles`, created or replaced in the same transaction.
    pub pools: Vec<PoolInput>,
}

/// The desired state of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInput {
    pub name: String,
    pub properties: String,
}

/// Computes a cluster's new state from its current one inside the write transaction, so a merge
/// patch and its precondition see the same record. An `Err` is reported as
/// [`WriteOutcome::Invalid`].
pub type ClusterPatch = Box<dyn FnOnce(&ClusterView) -> Result<ClusterInput, String> + Send>;

/// Computes a pool's new properties from its current state inside the write transaction.
pub type PoolPatch = Box<dyn FnOnce(&PoolView) -> Result<PoolInput, String> + Send>;

/// One write request for the writer.
pub enum WriteRequest {
    PutCluster {
        key: ClusterKey,
        precondition: Precondition,
        input: ClusterInput,
    },
    PatchCluster {
        key: ClusterKey,
        precondition: Precondition,
        patch: ClusterPatch,
    },
    DeleteCluster {
        key: ClusterKey,
        precondition: Precondition,
    },
    PutPool {
        key: PoolKey,
        precondition: Precondition,
        input: PoolInput,
        /// Whether the PUT may create the pool. When false, a missing pool yields
        /// [`WriteOutcome::NotFound`] and nothing is written; the API layer sets it for a
        /// name that may address an existing pool but is not valid for a new one.
        may_create: bool,
    },
    PatchPool {
        key: PoolKey,
        precondition: Precondition,
        patch: PoolPatch,
    },
    DeletePool {
        key: PoolKey,
        precondition: Precondition,
    },
    /// Applies `request` as a long-running operation that finishes `duration_ms` after its
    /// acceptance. The write's effect and eTag rotation happen at acceptance, except a delete's,
    /// which happens when the operation finishes. `request` is one of the variants above.
    LongRunning {
        request: Box<WriteRequest>,
        duration_ms: u64,
    },
    /// Finishes every operation whose deadline has passed, applying pending deletes, and,
    /// with `prune_ended_before_ms`, removes the records of operations that ended before then.
    SettleOperations { prune_ended_before_ms: Option<u64> },
}

/// Result of a write request, by resource kind.
#[derive(Debug)]
pub enum Applied {
    Cluster(WriteOutcome<ClusterView>),
    Pool(WriteOutcome<PoolView>),
    /// What [`WriteRequest::SettleOperations`] did.
    Settled(SettleSummary),
}

/// Counts of what [`WriteRequest::SettleOperations`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettleSummary {
    /// Operations that finished, pending deletes among them.
    pub finished: usize,
    /// Records of finished operations removed.
    pub pruned: usize,
}

impl WriteRequest {
    /// Whether the request writes a cluster (rather than a pool).
    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            WriteRequest::PutCluster { .. }
            | WriteRequest::PatchCluster { .. }
            | WriteRequest::DeleteCluster { .. } => true,
            WriteRequest::LongRunning { request, .. } => request.is_cluster(),
            _ => false,
        }
    }

    /// Approximate size in bytes, used to bound a group commit.
    pub(crate) fn approximate_size(&self) -> usize {
        match self {
            WriteRequest::PutCluster { input, .. } => {
                input.properties.len()
                    + input.extra.len()
                    + input.tags.as_ref().map_or(0, String::len)
                    + input
                        .pools
                        .iter()
                        .map(|pool| pool.properties.len())
                        .sum::<usize>()
            }
            WriteRequest::PutPool { input, .. } => input.properties.len(),
            WriteRequest::LongRunning { request, .. } => request.approximate_size(),
            // A patch's size is only known once it is merged; count it as one small record.
            _ => 1024,
        }
    }
}
