//! The single writer thread and its group commit.
//!
//! Write requests queue on a channel. The writer takes the first waiting request and, without
//! waiting for more, every request already queued behind it up to [`MAX_BATCH_WRITES`] and
//! [`MAX_BATCH_BYTES`]; applies them in arrival order inside one redb write transaction, so
//! each request's precondition sees the requests before it; commits once with
//! `Durability::Immediate`; and only then reports every outcome, a failed precondition
//! included. A lone request therefore commits at once, and requests that arrive during a
//! commit share the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable};

use crate::apply::Batch;
use crate::error::WriteError;
use crate::model::{Applied, WriteRequest};
use crate::tables;

/// Most requests in one commit. Bounds the time the first request of a batch waits for the
/// others to be applied; at this size the apply step stays well under a millisecond's work
/// per request.
pub const MAX_BATCH_WRITES: usize = 256;

/// Most request bytes in one commit, by [`WriteRequest::approximate_size`]. Bounds the memory a
/// batch holds and the size of one transaction.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Receives the result of one write once its batch has committed or failed.
pub type Completion = Box<dyn FnOnce(Result<Applied, WriteError>) + Send>;

pub(crate) struct Job {
    pub request: WriteRequest,
    pub done: Completion,
}

/// Shared state the writer reports to the rest of the store.
#[derive(Default)]
pub(crate) struct WriterHealth {
    /// Set after a failed commit: redb refuses further writes until the file is reopened.
    pub commit_failed: AtomicBool,
}

/// Runs the writer until every sender of `jobs` is dropped, then returns.
pub(crate) fn run(db: Arc<Database>, jobs: Receiver<Job>, health: Arc<WriterHealth>) {
    while let Ok(first) = jobs.recv() {
        let mut bytes = first.request.approximate_size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            match jobs.try_recv() {
                Ok(job) => {
                    bytes += job.request.approximate_size();
                    batch.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        commit_batch(&db, batch, &health);
    }
    tracing::debug!("writer stopped: no more senders");
}

/// Applies and commits one batch, then completes every job in it.
fn commit_batch(db: &Database, batch: Vec<Job>, health: &WriterHealth) {
    let size = batch.len();
    let (requests, completions): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|job| (job.request, job.done)).unzip();

    let results = match apply_and_commit(db, requests) {
        Ok(results) => results,
        Err(error) => {
            if matches!(error, WriteError::OutcomeUnknown(_)) {
                health.commit_failed.store(true, Ordering::SeqCst);
            }
            tracing::error!(%error, writes = size, "group commit failed");
            for done in completions {
                done(Err(error.clone()));
            }
            return;
        }
    };
    tracing::debug!(writes = size, "group commit durable");
    for (done, result) in completions.into_iter().zip(results) {
        done(Ok(result));
    }
}

fn apply_and_commit(
    db: &Database,
    requests: Vec<WriteRequest>,
) -> Result<Vec<Applied>, WriteError> {
    let not_applied = |error: &dyn std::fmt::Display| WriteError::NotApplied(error.to_string());

    let mut txn = db.begin_write().map_err(|e| not_applied(&e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| not_applied(&e))?;

    let mut results = Vec::with_capacity(requests.len());
    {
        let mut meta = txn.open_table(tables::META).map_err(|e| not_applied(&e))?;
        let revision = match meta
            .get(tables::REVISION_KEY)
            .map_err(|e| not_applied(&e))?
        {
            Some(value) => value.value(),
            None => 0,
        };
        let mut batch = Batch {
            clusters: txn
                .open_table(tables::CLUSTERS)
                .map_err(|e| not_applied(&e))?,
            pools: txn.open_table(tables::POOLS).map_err(|e| not_applied(&e))?,
            revision,
            now_ms: now_ms(),
        };
        // A storage error while applying aborts the whole batch when `txn` drops: no request
        // of it reaches the disk, and each learns that it was not applied.
        for request in requests {
            results.push(batch.apply(request).map_err(|e| not_applied(&e))?);
        }
        if batch.revision != revision {
            meta.insert(tables::REVISION_KEY, batch.revision)
                .map_err(|e| not_applied(&e))?;
        }
    }

    txn.commit()
        .map_err(|error| WriteError::OutcomeUnknown(error.to_string()))?;
    Ok(results)
}

/// Milliseconds since the Unix epoch; 0 if the clock is set before 1970.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
