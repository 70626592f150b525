//! The write rules, applied to open tables inside one write transaction.
//!
//! Rules this module keeps, all inside the caller's transaction:
//! - a cluster PUT or PATCH gives the cluster and every pool of it a new eTag;
//! - a pool PUT or PATCH gives only that pool a new eTag;
//! - a cluster DELETE removes the cluster and all of its pools;
//! - a request that fails its precondition, or names a missing resource, writes nothing;
//! - a DELETE of a missing resource is a success that writes nothing, whatever its condition;
//! - every applied write takes the next global revision, even when its body changes nothing;
//! - a write first finishes the operation on its cluster if that operation's deadline has
//!   passed;
//! - a write to a cluster, or to one of its pools, while an operation on that cluster still
//!   runs is a conflict and writes nothing. The precondition is checked first, so a stale
//!   eTag gets a failed precondition whether or not an operation runs;
//! - a long-running write rotates eTags and stores its operation in the same transaction as the
//!   resource; a long-running delete removes the resource only when its operation finishes.
//!
//! It does not begin or commit transactions: the writer does, so several requests can share
//! one commit.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table};
use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::failpoints;
use crate::model::{
    Applied, Cluster, ClusterInput, ClusterKey, ClusterView, KEY_SEPARATOR, Pool, PoolInput,
    PoolKey, PoolView, Precondition, SettleSummary, WriteOutcome, WriteRequest,
};
use crate::operation::{
    Operation, OperationKind, OperationStatus, OperationTarget, normalize_location,
};
use crate::tables;

/// Failure to apply a request. Either way the transaction must be aborted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("stored record {key} cannot be decoded: {source}")]
    Corrupt { key: String, source: CodecError },
    #[error(transparent)]
    Injected(#[from] failpoints::Injected),
}

/// The tables of one write transaction and the revision counter as this batch left it.
pub(crate) struct Batch<'txn> {
    pub clusters: Table<'txn, &'static str, &'static [u8]>,
    pub pools: Table<'txn, &'static str, &'static [u8]>,
    pub operations: Table<'txn, &'static str, &'static [u8]>,
    /// Revision of the last write applied so far.
    pub revision: u64,
    pub now_ms: u64,
}

/// The HTTP verb a precondition is checked for, since the table differs per verb.
#[derive(Clone, Copy)]
enum Verb {
    Put,
    Patch,
    Delete,
}

/// What the precondition table decides before anything is written.
enum Decision {
    Proceed,
    /// PATCH of a missing resource.
    NotFound,
    /// DELETE of a missing resource, whatever its condition.
    Absent,
    PreconditionFailed,
}

impl Decision {
    /// The outcome of a request the table stops, or `None` when it proceeds.
    fn refusal<T>(self) -> Option<WriteOutcome<T>> {
        match self {
            Decision::Proceed => None,
            Decision::NotFound => Some(WriteOutcome::NotFound),
            Decision::Absent => Some(WriteOutcome::Absent),
            Decision::PreconditionFailed => Some(WriteOutcome::PreconditionFailed),
        }
    }
}

impl Batch<'_> {
    /// Applies one request to the tables of this batch.
    pub fn apply(&mut self, request: WriteRequest) -> Result<Applied, ApplyError> {
        self.apply_as(request, None)
    }

    /// Applies one request; with `duration_ms`, as a long-running operation of that length.
    fn apply_as(
        &mut self,
        request: WriteRequest,
        duration_ms: Option<u64>,
    ) -> Result<Applied, ApplyError> {
        match request {
            WriteRequest::PutCluster {
                key,
                precondition,
                input,
            } => self
                .put_cluster(&key, &precondition, input, duration_ms)
                .map(Applied::Cluster),
            WriteRequest::PatchCluster {
                key,
                precondition,
                patch,
            } => self
                .patch_cluster(&key, &precondition, patch, duration_ms)
                .map(Applied::Cluster),
            WriteRequest::DeleteCluster { key, precondition } => self
                .delete_cluster(&key, &precondition, duration_ms)
                .map(Applied::Cluster),
            WriteRequest::PutPool {
                key,
                precondition,
                input,
                may_create,
            } => self
                .put_pool(&key, &precondition, input, may_create, duration_ms)
                .map(Applied::Pool),
            WriteRequest::PatchPool {
                key,
                precondition,
                patch,
            } => self
                .patch_pool(&key, &precondition, patch, duration_ms)
                .map(Applied::Pool),
            WriteRequest::DeletePool { key, precondition } => self
                .delete_pool(&key, &precondition, duration_ms)
                .map(Applied::Pool),
            WriteRequest::LongRunning {
                request,
                duration_ms,
            } => self.apply_as(*request, Some(duration_ms)),
            WriteRequest::SettleOperations {
                prune_ended_before_ms,
            } => self
                .settle_operations(prune_ended_before_ms)
                .map(Applied::Settled),
        }
    }

    fn put_cluster(
        &mut self,
        key: &ClusterKey,
        precondition: &Precondition,
        input: ClusterInput,
        duration_ms: Option<u64>,
    ) -> Result<WriteOutcome<ClusterView>, ApplyError> {
        let running = self.running_operation(&key.storage_key())?;
        let current = self.cluster(key)?;
        if let Some(refused) =
            decide(Verb::Put, precondition, current.as_ref().map(|c| &c.etag)).refusal()
        {
            return Ok(refused);
        }
        if let Some(operation) = running {
            return Ok(WriteOutcome::Conflict(operation));
        }

        let created = current.is_none();
        let mut view = self.write_cluster(key, current, input)?;
        if let Some(duration_ms) = duration_ms {
            let kind = if created {
                OperationKind::Create
            } else {
                OperationKind::Update
            };
            let operation = self.start_operation(
                key,
                &view.cluster,
                OperationTarget::Cluster,
                kind,
                duration_ms,
            )?;
            view.operation = Some(operation);
        }
        Ok(if created {
            WriteOutcome::Created(view)
        } else {
            WriteOutcome::Updated(view)
        })
    }

    fn patch_cluster(
        &mut self,
        key: &ClusterKey,
        precondition: &Precondition,
        patch: crate::ClusterPatch,
        duration_ms: Option<u64>,
    ) -> Result<WriteOutcome<ClusterView>, ApplyError> {
        let running = self.running_operation(&key.storage_key())?;
        let current = self.cluster(key)?;
        if let Some(refused) =
            decide(Verb::Patch, precondition, current.as_ref().map(|c| &c.etag)).refusal()
        {
            return Ok(refused);
        }
        let Some(cluster) = current else {
            unreachable!(
                "the precondition table proceeds with a PATCH only on an existing cluster"
            );
        };
        if let Some(operation) = running {
            return Ok(WriteOutcome::Conflict(operation));
        }

        // The merge runs against the state this transaction reads, so it cannot race a
        // concurrent write that its precondition did not see.
        let pools = self.pools_of(&key.storage_key())?.into_values().collect();
        let view = ClusterView {
            cluster,
            pools,
            operation: None,
        };
        let input = match patch(&view) {
            Ok(input) => input,
            Err(reason) => return Ok(WriteOutcome::Invalid(reason)),
        };
        let mut updated = self.write_cluster(key, Some(view.cluster), input)?;
        if let Some(duration_ms) = duration_ms {
            let operation = self.start_operation(
                key,
                &updated.cluster,
                OperationTarget::Cluster,
                OperationKind::Update,
                duration_ms,
            )?;
            updated.operation = Some(operation);
        }
        Ok(WriteOutcome::Updated(updated))
    }

    fn delete_cluster(
        &mut self,
        key: &ClusterKey,
        precondition: &Precondition,
        duration_ms: Option<u64>,
    ) -> Result<WriteOutcome<ClusterView>, ApplyError> {
        let running = self.running_operation(&key.storage_key())?;
        let current = self.cluster(key)?;
        if let Some(refused) = decide(
            Verb::Delete,
            precondition,
            current.as_ref().map(|c| &c.etag),
        )
        .refusal()
        {
            return Ok(refused);
        }
        let Some(cluster) = current else {
            unreachable!(
                "the precondition table proceeds with a DELETE only on an existing cluster"
            );
        };
        if let Some(operation) = running {
            return Ok(WriteOutcome::Conflict(operation));
        }

        self.next_revision();
        if let Some(duration_ms) = duration_ms {
            let operation = self.start_operation(
                key,
                &cluster,
                OperationTarget::Cluster,
                OperationKind::Delete,
                duration_ms,
            )?;
            return Ok(WriteOutcome::DeleteAccepted(operation));
        }
        self.remove_cluster(&key.storage_key())?;
        Ok(WriteOutcome::Deleted)
    }

    fn put_pool(
        &mut self,
        key: &PoolKey,
        precondition: &Precondition,
        input: PoolInput,
        may_create: bool,
        duration_ms: Option<u64>,
    ) -> Result<WriteOutcome<PoolView>, ApplyError> {
        let running = self.running_operation(&key.cluster.storage_key())?;
        let Some(cluster) = self.cluster(&key.cluster)? else {
            return Ok(WriteOutcome::ParentNotFound);
        };
        let current = self.pool(key)?;
        if current.is_none() && !may_create {
            return Ok(WriteOutcome::NotFound);
        }
        if let Some(refused) =
            decide(Verb::Put, precondition, current.as_ref().map(|p| &p.etag)).refusal()
        {
            return Ok(refused);
        }
        if let Some(operation) = running {
            return Ok(WriteOutcome::Conflict(operation));
        }

        let created = current.is_none();
        let pool = self.write_pool(key, current, input)?;
        let operation = match duration_ms {
            Some(duration_ms) => {
                let kind = if created {
                    OperationKind::Create
                } else {
                    OperationKind::Update
                };
                let target = OperationTarget::Pool(pool.name.clone());
                Some(self.start_operation(&key.cluster, &cluster, target, kind, duration_ms)?)
            }
            None => None,
        };
        let view = PoolView {
            cluster,
            pool,
            operation,
        };
        Ok(if created {
            WriteOutcome::Created(view)
        } else {
            WriteOutcome::Updated(view)
        })
    }

    fn patch_pool(
        &mut self,
        key: &PoolKey,
        precondition: &Precondition,
        patch: crate::PoolPatch,
        duration_ms: Option<u64>,
    ) -> Result<WriteOutcome<PoolView>, ApplyError> {
        let running = self.running_operation(&key.cluster.storage_key())?;
        let Some(cluster) = self.cluster(&key.cluster)? else {
            return Ok(WriteOutcome::ParentNotFound);
        };
        let current = self.pool(key)?;
        if let Some(refused) =
            decide(Verb::Patch, precondition, current.as_ref().map(|p| &p.etag)).refusal()
        {
            return Ok(refused);
        }
        let Some(pool) = current else {
            unreachable!("the precondition table proceeds with a PATCH only on an existing pool");
        };
        if let Some(operation) = running {
            return Ok(WriteOutcome::Conflict(operation));
        }

        let view = PoolView {
            cluster,
            pool,
            operation: None,
        };
        let input = match patch(&view) {
            Ok(input) => input,
            Err(reason) => return Ok(WriteOutcome::Invalid(reason)),
        };
        let pool = self.write_pool(key, Some(view.pool), input)?;
        let operation = match duration_ms {
            Some(duration_ms) => {
                let target = OperationTarget::Pool(pool.name.clone());
                Some(self.start_operation(
                    &key.cluster,
                    &view.cluster,
                    target,
                    OperationKind::Update,
                    duration_ms,
                )?)
            }
            None => None,
        };
        Ok(WriteOutcome::Updated(PoolView {
            cluster: view.cluster,
            pool,
            operation,
        }))
    }

    fn delete_pool(
        &mut self,
        key: &PoolKey,
        precondition: &Precondition,
        duration_ms: Option<u64>,
    ) -> Result<WriteOutcome<PoolView>, ApplyError> {
        let running = self.running_operation(&key.cluster.storage_key())?;
        // A pool of a missing cluster is a missing pool: DELETE is idempotent.
        let Some(cluster) = self.cluster(&key.cluster)? else {
            return Ok(WriteOutcome::Absent);
        };
        let current = self.pool(key)?;
        if let Some(refused) = decide(
            Verb::Delete,
            precondition,
            current.as_ref().map(|p| &p.etag),
        )
        .refusal()
        {
            return Ok(refused);
        }
        let Some(pool) = current else {
            unreachable!("the precondition table proceeds with a DELETE only on an existing pool");
        };
        if let Some(operation) = running {
            return Ok(WriteOutcome::Conflict(operation));
        }

        self.next_revision();
        if let Some(duration_ms) = duration_ms {
            let operation = self.start_operation(
                &key.cluster,
                &cluster,
                OperationTarget::Pool(pool.name),
                OperationKind::Delete,
                duration_ms,
            )?;
            return Ok(WriteOutcome::DeleteAccepted(operation));
        }
        self.pools.remove(key.storage_key().as_str())?;
        Ok(WriteOutcome::Deleted)
    }

    /// Finishes every operation whose deadline has passed, then prunes the records of
    /// operations that ended before `prune_ended_before_ms`.
    fn settle_operations(
        &mut self,
        prune_ended_before_ms: Option<u64>,
    ) -> Result<SettleSummary, ApplyError> {
        let mut summary = SettleSummary::default();

        // Collected first: the table cannot change while a range over it is open.
        let mut due = Vec::new();
        let running_range = tables::prefix_range(tables::RUNNING_PREFIX, None);
        for entry in self
            .operations
            .range(tables::as_str_bounds(&running_range))?
        {
            let (key, bytes) = entry?;
            let operation: Operation = decode(key.value(), bytes.value())?;
            if operation.deadline_ms <= self.now_ms {
                let cluster_key = key.value()[tables::RUNNING_PREFIX.len()..].to_owned();
                due.push((cluster_key, operation));
            }
        }
        for (cluster_key, operation) in due {
            self.finish_operation(&cluster_key, operation)?;
            summary.finished += 1;
        }

        if let Some(before_ms) = prune_ended_before_ms {
            let mut expired = Vec::new();
            let records_range = tables::prefix_range(tables::OPERATION_PREFIX, None);
            for entry in self
                .operations
                .range(tables::as_str_bounds(&records_range))?
            {
                let (key, bytes) = entry?;
                let operation: Operation = decode(key.value(), bytes.value())?;
                if operation
                    .ended_ms
                    .is_some_and(|ended_ms| ended_ms < before_ms)
                {
                    expired.push(key.value().to_owned());
                }
            }
            for key in expired {
                self.operations.remove(key.as_str())?;
                summary.pruned += 1;
            }
        }
        Ok(summary)
    }

    /// Returns the operation running on the cluster with storage key `cluster_key`, after
    /// finishing it if its deadline has passed (in which case none runs any more).
    fn running_operation(&mut self, cluster_key: &str) -> Result<Option<Operation>, ApplyError> {
        let running_key = tables::running_key(cluster_key);
        let operation: Operation = match self.operations.get(running_key.as_str())? {
            Some(bytes) => decode(&running_key, bytes.value())?,
            None => return Ok(None),
        };
        if operation.deadline_ms > self.now_ms {
            return Ok(Some(operation));
        }
        self.finish_operation(cluster_key, operation)?;
        Ok(None)
    }

    /// Records a new running operation on a cluster, or on one of its pools.
    fn start_operation(
        &mut self,
        key: &ClusterKey,
        cluster: &Cluster,
        target: OperationTarget,
        kind: OperationKind,
        duration_ms: u64,
    ) -> Result<Operation, ApplyError> {
        let operation = Operation {
            id: Uuid::new_v4(),
            subscription: cluster.subscription.clone(),
            location: normalize_location(&cluster.location),
            cluster_name: cluster.name.clone(),
            target,
            kind,
            started_ms: self.now_ms,
            deadline_ms: self.now_ms.saturating_add(duration_ms),
            status: OperationStatus::InProgress,
            ended_ms: None,
        };
        let record = codec::encode(&operation);
        self.operations.insert(
            tables::operation_key(&operation.id).as_str(),
            record.as_slice(),
        )?;
        self.operations.insert(
            tables::running_key(&key.storage_key()).as_str(),
            record.as_slice(),
        )?;
        Ok(operation)
    }

    /// Finishes an operation whose deadline has passed: applies its pending delete, stores it
    /// as `Succeeded` with its deadline as end time, and clears the cluster's running entry.
    fn finish_operation(
        &mut self,
        cluster_key: &str,
        operation: Operation,
    ) -> Result<(), ApplyError> {
        if operation.kind == OperationKind::Delete {
            self.next_revision();
            match &operation.target {
                OperationTarget::Cluster => self.remove_cluster(cluster_key)?,
                OperationTarget::Pool(name) => {
                    let pool_key =
                        format!("{cluster_key}{KEY_SEPARATOR}{}", name.to_ascii_lowercase());
                    self.pools.remove(pool_key.as_str())?;
                }
            }
        }
        let finished = operation.as_of(self.now_ms);
        debug_assert!(
            !finished.is_running(),
            "finished an operation before its deadline"
        );
        self.operations.insert(
            tables::operation_key(&finished.id).as_str(),
            codec::encode(&finished).as_slice(),
        )?;
        self.operations
            .remove(tables::running_key(cluster_key).as_str())?;
        tracing::debug!(operation = %finished.id, kind = ?finished.kind, "operation finished");
        Ok(())
    }

    /// Removes a cluster record and every pool of it.
    fn remove_cluster(&mut self, cluster_key: &str) -> Result<(), ApplyError> {
        self.clusters.remove(cluster_key)?;
        let pool_keys: Vec<String> = self.pools_of(cluster_key)?.into_keys().collect();
        for pool_key in pool_keys {
            self.pools.remove(pool_key.as_str())?;
        }
        Ok(())
    }

    /// Writes a cluster and rotates the eTag of every pool it has, creating or replacing the
    /// pools that `input` names.
    fn write_cluster(
        &mut self,
        key: &ClusterKey,
        current: Option<Cluster>,
        input: ClusterInput,
    ) -> Result<ClusterView, ApplyError> {
        let revision = self.next_revision();

        // An existing cluster keeps the casing it was created with.
        let (subscription, resource_group, name, created_ms) = match current {
            Some(existing) => (
                existing.subscription,
                existing.resource_group,
                existing.name,
                existing.created_ms,
            ),
            None => (
                key.subscription.clone(),
                key.resource_group.clone(),
                key.name.clone(),
                self.now_ms,
            ),
        };
        let cluster = Cluster {
            subscription,
            resource_group,
            name,
            location: input.location,
            tags: input.tags,
            properties: input.properties,
            extra: input.extra,
            etag: Uuid::new_v4(),
            revision,
            created_ms,
            changed_ms: self.now_ms,
        };
        self.clusters.insert(
            key.storage_key().as_str(),
            codec::encode(&cluster).as_slice(),
        )?;
        failpoints::check(failpoints::BETWEEN_CLUSTER_AND_POOLS)?;

        // Pools named by the request replace their properties; the others keep theirs. All of
        // them get a new eTag and this revision.
        let mut pools = self.pools_of(&key.storage_key())?;
        for pool_input in input.pools {
            let pool_key = PoolKey {
                cluster: key.clone(),
                name: pool_input.name.clone(),
            }
            .storage_key();
            match pools.get_mut(&pool_key) {
                Some(pool) => pool.properties = pool_input.properties,
                None => {
                    let pool = Pool {
                        name: pool_input.name,
                        properties: pool_input.properties,
                        etag: Uuid::nil(),
                        revision,
                        created_ms: self.now_ms,
                        changed_ms: self.now_ms,
                    };
                    pools.insert(pool_key, pool);
                }
            }
        }
        for (pool_key, pool) in &mut pools {
            pool.etag = Uuid::new_v4();
            pool.revision = revision;
            pool.changed_ms = self.now_ms;
            self.pools
                .insert(pool_key.as_str(), codec::encode(&*pool).as_slice())?;
        }

        Ok(ClusterView {
            cluster,
            pools: pools.into_values().collect(),
            operation: None,
        })
    }

    /// Writes one pool with a new eTag; its cluster is left as it is.
    fn write_pool(
        &mut self,
        key: &PoolKey,
        current: Option<Pool>,
        input: PoolInput,
    ) -> Result<Pool, ApplyError> {
        let revision = self.next_revision();
        let (name, created_ms) = match current {
            Some(existing) => (existing.name, existing.created_ms),
            None => (input.name, self.now_ms),
        };
        let pool = Pool {
            name,
            properties: input.properties,
            etag: Uuid::new_v4(),
            revision,
            created_ms,
            changed_ms: self.now_ms,
        };
        self.pools
            .insert(key.storage_key().as_str(), codec::encode(&pool).as_slice())?;
        Ok(pool)
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn cluster(&self, key: &ClusterKey) -> Result<Option<Cluster>, ApplyError> {
        let storage_key = key.storage_key();
        match self.clusters.get(storage_key.as_str())? {
            Some(bytes) => decode(&storage_key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn pool(&self, key: &PoolKey) -> Result<Option<Pool>, ApplyError> {
        let storage_key = key.storage_key();
        match self.pools.get(storage_key.as_str())? {
            Some(bytes) => decode(&storage_key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the pools of the cluster with storage key `cluster_key` with one range scan,
    /// keyed by storage key.
    fn pools_of(&self, cluster_key: &str) -> Result<BTreeMap<String, Pool>, ApplyError> {
        let mut pools = BTreeMap::new();
        let prefix = format!("{cluster_key}{KEY_SEPARATOR}");
        for entry in self
            .pools
            .range(tables::as_str_bounds(&tables::prefix_range(&prefix, None)))?
        {
            let (pool_key, bytes) = entry?;
            let pool_key = pool_key.value().to_owned();
            let pool = decode(&pool_key, bytes.value())?;
            pools.insert(pool_key, pool);
        }
        Ok(pools)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ApplyError> {
    codec::decode(bytes).map_err(|source| ApplyError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

/// The precondition table of the AKS ETag documentation, for one verb.
fn decide(verb: Verb, precondition: &Precondition, current: Option<&Uuid>) -> Decision {
    match (verb, current) {
        (Verb::Put, None) => match precondition {
            Precondition::None | Precondition::IfNoneMatchAny => Decision::Proceed,
            Precondition::IfMatchAny | Precondition::IfMatch(_) => Decision::PreconditionFailed,
        },
        (Verb::Patch, None) => Decision::NotFound,
        (Verb::Delete, None) => Decision::Absent,
        (_, Some(etag)) => match precondition {
            Precondition::None | Precondition::IfMatchAny => Decision::Proceed,
            Precondition::IfMatch(tags) if tags.iter().any(|tag| tag.matches(etag)) => {
                Decision::Proceed
            }
            Precondition::IfMatch(_) | Precondition::IfNoneMatchAny => Decision::PreconditionFailed,
        },
    }
}
