//! Long-running operations: the record of a write that clients poll until it finishes.
//!
//! An operation starts when its write is accepted and finishes at its deadline, a fixed wall
//! clock time stored with it. Reads report an operation whose deadline has passed as finished,
//! even before the store has recorded that, so the state a client sees never depends on when
//! the finishing write runs. The finishing write ([`crate::WriteRequest::SettleOperations`], or
//! any write to the same cluster) applies a pending delete and records the end; since the
//! deadline is on disk, an operation interrupted by a restart finishes at the same time.
//!
//! At most one operation runs per cluster, covering the cluster and all of its pools: a write
//! to either while one runs gets [`crate::WriteOutcome::Conflict`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A long-running operation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    /// Subscription of the resource, in the casing of the cluster record.
    pub subscription: String,
    /// The cluster's location, normalized as ARM puts it in operation URLs (see
    /// [`normalize_location`]).
    pub location: String,
    /// Name of the cluster the operation runs on, or that owns the pool it runs on.
    pub cluster_name: String,
    pub target: OperationTarget,
    pub kind: OperationKind,
    /// Acceptance time, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Time the operation finishes, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    pub status: OperationStatus,
    /// End time, in milliseconds since the Unix epoch; set once the status is terminal.
    pub ended_ms: Option<u64>,
}

/// The resource an operation changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationTarget {
    /// The cluster, and with it every one of its pools.
    Cluster,
    /// One pool of the cluster, by the name it was created with.
    Pool(String),
}

/// The write an operation carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    Create,
    Update,
    Delete,
}

/// Status of an operation, as ARM's operation-status resource names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationStatus {
    InProgress,
    Succeeded,
}

/// `provisioningState` of a cluster or pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisioningState {
    Succeeded,
    Creating,
    Updating,
    Deleting,
}

impl Operation {
    /// The operation as it stands at `now_ms`: one whose deadline has passed is `Succeeded`,
    /// with its deadline as end time, whether or not the store has recorded that yet.
    pub fn as_of(mut self, now_ms: u64) -> Operation {
        if self.status == OperationStatus::InProgress && now_ms >= self.deadline_ms {
            self.status = OperationStatus::Succeeded;
            self.ended_ms = Some(self.deadline_ms);
        }
        self
    }

    pub fn is_running(&self) -> bool {
        self.status == OperationStatus::InProgress
    }

    /// State that a running operation gives the resources it covers.
    pub fn provisioning_state(&self) -> ProvisioningState {
        match self.kind {
            OperationKind::Create => ProvisioningState::Creating,
            OperationKind::Update => ProvisioningState::Updating,
            OperationKind::Delete => ProvisioningState::Deleting,
        }
    }

    /// Whether the operation covers the pool named `pool`: a cluster operation covers every
    /// pool of its cluster.
    pub fn covers_pool(&self, pool: &str) -> bool {
        match &self.target {
            OperationTarget::Cluster => true,
            OperationTarget::Pool(name) => name.eq_ignore_ascii_case(pool),
        }
    }

    /// Milliseconds left until the deadline at `now_ms`; 0 once it has passed.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.deadline_ms.saturating_sub(now_ms)
    }
}

/// Normalizes an Azure location as ARM writes it in operation URLs: lower-case, with
/// everything but ASCII letters and digits removed (`West Europe` becomes `westeurope`).
/// A location with no letter or digit normalizes to `global`, so the URL keeps a segment.
pub fn normalize_location(location: &str) -> String {
    let normalized: String = location
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if normalized.is_empty() {
        "global".to_owned()
    } else {
        normalized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(deadline_ms: u64) -> Operation {
        Operation {
            id: Uuid::new_v4(),
            subscription: "sub".into(),
            location: "westeurope".into(),
            cluster_name: "c1".into(),
            target: OperationTarget::Pool("np1".into()),
            kind: OperationKind::Update,
            started_ms: 1_000,
            deadline_ms,
            status: OperationStatus::InProgress,
            ended_ms: None,
        }
    }

    #[test]
    fn as_of_finishes_at_the_deadline() {
        let running = operation(2_000).as_of(1_999);
        assert!(running.is_running());
        assert_eq!(running.ended_ms, None);
        assert_eq!(running.remaining_ms(1_999), 1);

        let done = operation(2_000).as_of(2_000);
        assert_eq!(done.status, OperationStatus::Succeeded);
        assert_eq!(done.ended_ms, Some(2_000));
        assert_eq!(done.remaining_ms(5_000), 0);
    }

    #[test]
    fn pool_operation_covers_only_its_pool() {
        let op = operation(2_000);
        assert!(op.covers_pool("NP1"));
        assert!(!op.covers_pool("np2"));
        let cluster_op = Operation {
            target: OperationTarget::Cluster,
            ..op
        };
        assert!(cluster_op.covers_pool("np2"));
    }

    #[test]
    fn locations_normalize_as_arm_writes_them() {
        assert_eq!(normalize_location("West Europe"), "westeurope");
        assert_eq!(normalize_location("eastus2"), "eastus2");
        assert_eq!(normalize_location(" - "), "global");
    }
}
