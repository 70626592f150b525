//! The single writer thread and its group commit.
//!
//! Write requests queue on a channel. The writer takes the first waiting request and, without
//! waiting for more, every request already queued behind it up to [`MAX_BATCH_WRITES`] and
//! [`MAX_BATCH_BYTES`]; applies them in arrival order inside one redb write transaction, so
//! each request's precondition sees the requests before it; commits once with
//! `Durability::Immediate`; and only then reports every outcome, a failed precondition
//! included. A lone request therefore commits at once, and requests that arrive during a
//! commit share the next one.
//!
//! A request with a client request id goes through [`crate::requests`] in the same
//! transaction, so its retry record commits with it or not at all. A batch that fails with a
//! storage error is answered only after the writer has closed and reopened the database (see
//! [`run`]).

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability, ReadableTable};

use crate::Shared;
use crate::apply::{ApplyError, Batch};
use crate::error::WriteError;
use crate::failpoints;
use crate::model::{Applied, WriteRequest};
use crate::requests::{ClientRequest, RequestIndex, RequestLog};
use crate::tables;

/// Most requests in one commit. Bounds the time the first request of a batch waits for the
/// others to be applied; at this size the apply step stays well under a millisecond's work
/// per request.
pub const MAX_BATCH_WRITES: usize = 256;

/// Most request bytes in one commit, by [`WriteRequest::approximate_size`]. Bounds the memory a
/// batch holds and the size of one transaction.
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// First wait before the writer retries a failed reopen; it doubles up to
/// [`REOPEN_RETRY_MAX`]. Short, because most failures that reach a reopen are transient.
pub const REOPEN_RETRY_MIN: Duration = Duration::from_millis(100);

/// Longest wait between two reopen attempts, so a disk that comes back is noticed soon.
pub const REOPEN_RETRY_MAX: Duration = Duration::from_secs(5);

/// Histogram of the time to apply and commit one batch, from its write transaction's start to
/// the end of its commit or failure, in seconds.
pub const COMMIT_DURATION_METRIC: &str = "akstore_store_commit_duration_seconds";
/// Histogram of the number of write requests in each committed or failed batch.
pub const BATCH_SIZE_METRIC: &str = "akstore_store_commit_batch_size";
/// Counter of failed batches, labelled `outcome` = `not_applied` or `unknown`.
pub const COMMIT_FAILURES_METRIC: &str = "akstore_store_commit_failures_total";

/// Receives the result of one write once its batch has committed or failed.
pub type Completion = Box<dyn FnOnce(Result<Applied, WriteError>) + Send>;

pub(crate) struct Job {
    pub request: WriteRequest,
    pub client_request: Option<ClientRequest>,
    pub done: Completion,
}

/// Counters the writer keeps for [`crate::Store::writer_stats`].
#[derive(Default)]
pub(crate) struct Counters {
    /// Durable commits so far.
    pub commits: AtomicU64,
    /// Requests answered from durable commits so far, failed preconditions included.
    pub writes: AtomicU64,
}

/// Counters of the writer since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Durable commits, each holding one batch.
    pub commits: u64,
    /// Requests those commits answered; divided by `commits`, the mean batch size.
    pub writes: u64,
}

/// Failure of a batch, and whether the database must be reopened before the next one.
struct BatchFailure {
    error: WriteError,
    reopen: bool,
}

/// Runs the writer until every sender of `jobs` is dropped, then returns.
///
/// After a batch fails with a storage error, the writer closes the database and opens it again
/// before it takes the next batch. redb refuses every operation after an I/O error until the
/// file is reopened, and the reopen runs redb's recovery. While a reopen keeps failing, the
/// writer answers every queued write with [`WriteError::NotApplied`] and retries with backoff.
pub(crate) fn run(shared: Arc<Shared>, jobs: Receiver<Job>) {
    let mut retry_in = REOPEN_RETRY_MIN;
    // Loaded from the table by the first batch after each (re)open.
    let mut request_index = None;
    loop {
        let Some(db) = shared.current() else {
            request_index = None;
            match shared.reopen() {
                Ok(()) => retry_in = REOPEN_RETRY_MIN,
                Err(error) => {
                    tracing::error!(
                        %error,
                        retry_in_ms = retry_in.as_millis() as u64,
                        "failed to reopen the database"
                    );
                    if !reject_writes_for(&jobs, retry_in) {
                        break;
                    }
                    retry_in = (retry_in * 2).min(REOPEN_RETRY_MAX);
                }
            }
            continue;
        };

        let Ok(first) = jobs.recv() else {
            break;
        };
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

        commit_batch(&shared, db, batch, &mut request_index);
    }
    tracing::debug!("writer stopped: no more senders");
}

/// Answers every write that arrives within `duration` with [`WriteError::NotApplied`];
/// returns false when every sender is gone.
fn reject_writes_for(jobs: &Receiver<Job>, duration: Duration) -> bool {
    let deadline = std::time::Instant::now() + duration;
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        match jobs.recv_timeout(remaining) {
            Ok(job) => (job.done)(Err(WriteError::NotApplied(
                "the database is being reopened after a failed write".into(),
            ))),
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// Applies and commits one batch, then completes every job in it.
///
/// When the batch fails with a storage error, the writer closes the database and tries once
/// to reopen it before it answers, so a client that reads right after its error reads from the
/// reopened file. Until the reopen succeeds the store reports itself unwritable.
fn commit_batch(
    shared: &Shared,
    db: Arc<Database>,
    batch: Vec<Job>,
    request_index: &mut Option<RequestIndex>,
) {
    let size = batch.len();
    let (requests, completions): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|job| ((job.request, job.client_request), job.done))
        .unzip();

    // A panic inside the transaction (a bug, or a failpoint) fails the batch like a failed
    // commit: the transaction is dropped, and whether it reached the disk is not known.
    let started = std::time::Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        apply_and_commit(&db, requests, request_index)
    }))
    .unwrap_or_else(|_| {
        Err(BatchFailure {
            error: WriteError::OutcomeUnknown("the writer panicked during the batch".into()),
            reopen: true,
        })
    });
    metrics::histogram!(COMMIT_DURATION_METRIC).record(started.elapsed().as_secs_f64());
    metrics::histogram!(BATCH_SIZE_METRIC).record(size as f64);

    match result {
        Ok(results) => {
            let counters = &shared.counters;
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.writes.fetch_add(size as u64, Ordering::Relaxed);
            tracing::debug!(writes = size, "group commit durable");
            for (done, result) in completions.into_iter().zip(results) {
                done(Ok(result));
            }
        }
        Err(failure) => {
            let outcome = match failure.error {
                WriteError::OutcomeUnknown(_) => "unknown",
                WriteError::NotApplied(_) | WriteError::Closed => "not_applied",
            };
            metrics::counter!(COMMIT_FAILURES_METRIC, "outcome" => outcome).increment(1);
            tracing::error!(error = %failure.error, writes = size, "group commit failed");
            // The index may hold entries of the aborted transaction; reload it.
            *request_index = None;
            if failure.reopen {
                shared.mark_unwritable();
                drop(db);
                shared.close_database();
                // On failure the writer's loop retries with backoff.
                if let Err(error) = shared.reopen() {
                    tracing::error!(%error, "failed to reopen the database");
                }
            }
            for done in completions {
                done(Err(failure.error.clone()));
            }
        }
    }
}

fn apply_and_commit(
    db: &Database,
    requests: Vec<(WriteRequest, Option<ClientRequest>)>,
    request_index: &mut Option<RequestIndex>,
) -> Result<Vec<Applied>, BatchFailure> {
    let not_applied = |error: &dyn std::fmt::Display| BatchFailure {
        error: WriteError::NotApplied(error.to_string()),
        reopen: true,
    };
    let outcome_unknown = |error: &dyn std::fmt::Display| BatchFailure {
        error: WriteError::OutcomeUnknown(error.to_string()),
        reopen: true,
    };

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
        let now_ms = now_ms();
        let mut batch = Batch {
            clusters: txn
                .open_table(tables::CLUSTERS)
                .map_err(|e| not_applied(&e))?,
            pools: txn.open_table(tables::POOLS).map_err(|e| not_applied(&e))?,
            operations: txn
                .open_table(tables::OPERATIONS)
                .map_err(|e| not_applied(&e))?,
            revision,
            now_ms,
        };
        let table = txn
            .open_table(tables::REQUESTS)
            .map_err(|e| not_applied(&e))?;
        let apply_failed = |error: ApplyError| BatchFailure {
            reopen: !matches!(error, ApplyError::Corrupt { .. }),
            error: WriteError::NotApplied(error.to_string()),
        };
        let index = match request_index {
            Some(index) => index,
            None => request_index.insert(RequestIndex::load(&table).map_err(apply_failed)?),
        };
        let mut log = RequestLog {
            table,
            index,
            now_ms,
        };

        // An error while applying aborts the whole batch when `txn` drops: no request of it
        // reaches the disk, and each learns that it was not applied. A record that fails to
        // decode needs no reopen; a storage error does.
        for (request, client_request) in requests {
            let applied = match client_request {
                Some(client) => {
                    let is_cluster = request.is_cluster();
                    log.apply_once(&client, is_cluster, || batch.apply(request))
                }
                None => batch.apply(request),
            };
            results.push(applied.map_err(apply_failed)?);
        }
        log.evict().map_err(apply_failed)?;
        if batch.revision != revision {
            meta.insert(tables::REVISION_KEY, batch.revision)
                .map_err(|e| not_applied(&e))?;
        }
    }

    // An injected failure here stands for a failed commit: `txn` is dropped uncommitted.
    failpoints::check(failpoints::BEFORE_COMMIT).map_err(|e| outcome_unknown(&e))?;
    txn.commit().map_err(|e| outcome_unknown(&e))?;
    failpoints::check(failpoints::AFTER_COMMIT).map_err(|e| outcome_unknown(&e))?;
    Ok(results)
}

/// Milliseconds since the Unix epoch; 0 if the clock is set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
