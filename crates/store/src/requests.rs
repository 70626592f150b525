//! Exactly-once retries: a record of every applied write that carried a client request id,
//! written in the same transaction as the write.
//!
//! ARM clients send each call with an `x-ms-client-request-id` and reuse it when they retry
//! the call. When a write committed but its response was lost, the retry finds the record and
//! gets the original outcome back, instead of a 412 from the eTag that the first attempt
//! rotated itself. A retry whose request differs from the recorded one (its fingerprint
//! differs) gets [`WriteOutcome::RequestIdReused`] and changes nothing.
//!
//! Only writes that changed something (created, updated, deleted) are recorded; a request that
//! failed a check wrote nothing, so its retry is decided again. Records are kept for
//! [`REQUEST_RETENTION`] and at most [`MAX_REQUEST_RECORDS`] of them: the writer removes the
//! oldest in each batch's transaction, and a lookup ignores an expired record.

use std::collections::VecDeque;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};
use serde::{Deserialize, Serialize};

use crate::apply::ApplyError;
use crate::error::ReadError;
use crate::model::{Applied, ClusterView, PoolView, WriteOutcome};
use crate::operation::Operation;
use crate::{Store, codec, tables};

/// How long a retry is recognized after its first attempt was applied. ARM clients retry
/// within minutes (azure-core's default policy gives up after about ten).
pub const REQUEST_RETENTION: Duration = Duration::from_secs(60 * 60);

/// Most request records kept; the oldest go first. Each holds the resource the write returned,
/// so this bounds the table to tens of megabytes for clusters of a few pools.
pub const MAX_REQUEST_RECORDS: usize = 10_000;

/// Longest client request id accepted, in bytes. ARM clients send a 36-character GUID.
pub const MAX_REQUEST_ID_BYTES: usize = 256;

/// A write's client request id and the fingerprint of the request that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `x-ms-client-request-id` value, as sent.
    pub id: String,
    /// A digest of what makes two requests the same request; the API layer hashes the
    /// method, the path and the body. A retry carries the same fingerprint.
    pub fingerprint: [u8; 32],
}

/// A stored record: when and for which request a write was applied, and what it returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Time the write was applied, in milliseconds since the Unix epoch. First, so the
    /// writer can decode it alone.
    pub recorded_ms: u64,
    pub fingerprint: [u8; 32],
    pub outcome: RecordedOutcome,
}

/// The outcome of a recorded write, by resource kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordedOutcome {
    Cluster(Recorded<ClusterView>),
    Pool(Recorded<PoolView>),
}

/// A write outcome that changed something, with the resource it returned (and, for a
/// long-running write, the operation it started).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded<T> {
    Created(T),
    Updated(T),
    Deleted,
    DeleteAccepted(Operation),
}

/// The leading field of a [`RequestRecord`], decoded without the rest.
#[derive(Deserialize)]
struct RecordHead {
    recorded_ms: u64,
}

/// The ids of the stored records, oldest first, so eviction needs no table scan. The writer
/// keeps it across batches and rebuilds it from the table after every (re)open.
#[derive(Debug, Default)]
pub(crate) struct RequestIndex {
    by_age: VecDeque<(u64, String)>,
}

/// The requests table inside one write transaction, with the writer's index of it.
pub(crate) struct RequestLog<'txn, 'index> {
    pub table: Table<'txn, &'static str, &'static [u8]>,
    pub index: &'index mut RequestIndex,
    pub now_ms: u64,
}

impl Store {
    /// Counts the stored exactly-once retry records.
    pub fn request_count(&self) -> Result<u64, ReadError> {
        let txn = self.database()?.begin_read()?;
        Ok(txn.open_table(tables::REQUESTS)?.len()?)
    }
}

impl RequestIndex {
    /// Reads the age of every stored record.
    pub fn load(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Self, ApplyError> {
        let mut entries = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            let head: RecordHead = decode(id.value(), bytes.value())?;
            entries.push((head.recorded_ms, id.value().to_owned()));
        }
        entries.sort();
        Ok(RequestIndex {
            by_age: entries.into(),
        })
    }
}

impl RequestLog<'_, '_> {
    /// Applies a write at most once per client request id: replays the recorded outcome of
    /// the same request, rejects a different request with the same id, and otherwise runs
    /// `apply` and records what it changed.
    pub fn apply_once(
        &mut self,
        client: &ClientRequest,
        is_cluster: bool,
        apply: impl FnOnce() -> Result<Applied, ApplyError>,
    ) -> Result<Applied, ApplyError> {
        if let Some(record) = self.lookup(&client.id)? {
            if record.fingerprint != client.fingerprint {
                tracing::info!(client_request_id = %client.id, "client request id reused");
                return Ok(if is_cluster {
                    Applied::Cluster(WriteOutcome::RequestIdReused)
                } else {
                    Applied::Pool(WriteOutcome::RequestIdReused)
                });
            }
            tracing::info!(
                client_request_id = %client.id,
                "retry of an applied write: returning its recorded outcome"
            );
            return Ok(record.outcome.into_applied());
        }

        let applied = apply()?;
        if let Some(outcome) = RecordedOutcome::of(&applied) {
            let record = RequestRecord {
                recorded_ms: self.now_ms,
                fingerprint: client.fingerprint,
                outcome,
            };
            self.table
                .insert(client.id.as_str(), codec::encode(&record).as_slice())?;
            self.index
                .by_age
                .push_back((self.now_ms, client.id.clone()));
        }
        Ok(applied)
    }

    /// Removes the records past [`REQUEST_RETENTION`] and the oldest beyond
    /// [`MAX_REQUEST_RECORDS`]; returns how many it removed.
    pub fn evict(&mut self) -> Result<usize, ApplyError> {
        let retention_ms = REQUEST_RETENTION.as_millis() as u64;
        let mut removed = 0;
        while let Some((recorded_ms, _)) = self.index.by_age.front() {
            let expired = recorded_ms.saturating_add(retention_ms) < self.now_ms;
            if !expired && self.index.by_age.len() <= MAX_REQUEST_RECORDS {
                break;
            }
            let (recorded_ms, id) = self
                .index
                .by_age
                .pop_front()
                .expect("the loop condition saw a front entry");

            // A record replaced after it expired is newer than its index entry: keep it.
            let stored_ms = match self.table.get(id.as_str())? {
                Some(bytes) => Some(decode::<RecordHead>(&id, bytes.value())?.recorded_ms),
                None => None,
            };
            if stored_ms == Some(recorded_ms) {
                self.table.remove(id.as_str())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The live record of `id`: `None` when there is none or it has expired.
    fn lookup(&self, id: &str) -> Result<Option<RequestRecord>, ApplyError> {
        let Some(bytes) = self.table.get(id)? else {
            return Ok(None);
        };
        let record: RequestRecord = decode(id, bytes.value())?;
        let retention_ms = REQUEST_RETENTION.as_millis() as u64;
        if record.recorded_ms.saturating_add(retention_ms) < self.now_ms {
            return Ok(None);
        }
        Ok(Some(record))
    }
}

impl RecordedOutcome {
    /// The outcome to record for `applied`: `None` for an outcome that wrote nothing.
    fn of(applied: &Applied) -> Option<RecordedOutcome> {
        match applied {
            Applied::Cluster(outcome) => Recorded::of(outcome).map(RecordedOutcome::Cluster),
            Applied::Pool(outcome) => Recorded::of(outcome).map(RecordedOutcome::Pool),
            Applied::Settled(_) => None,
        }
    }

    fn into_applied(self) -> Applied {
        match self {
            RecordedOutcome::Cluster(recorded) => Applied::Cluster(recorded.into_outcome()),
            RecordedOutcome::Pool(recorded) => Applied::Pool(recorded.into_outcome()),
        }
    }
}

impl<T: Clone> Recorded<T> {
    fn of(outcome: &WriteOutcome<T>) -> Option<Recorded<T>> {
        match outcome {
            WriteOutcome::Created(view) => Some(Recorded::Created(view.clone())),
            WriteOutcome::Updated(view) => Some(Recorded::Updated(view.clone())),
            WriteOutcome::Deleted => Some(Recorded::Deleted),
            WriteOutcome::DeleteAccepted(operation) => {
                Some(Recorded::DeleteAccepted(operation.clone()))
            }
            _ => None,
        }
    }

    fn into_outcome(self) -> WriteOutcome<T> {
        match self {
            Recorded::Created(view) => WriteOutcome::Created(view),
            Recorded::Updated(view) => WriteOutcome::Updated(view),
            Recorded::Deleted => WriteOutcome::Deleted,
            Recorded::DeleteAccepted(operation) => WriteOutcome::DeleteAccepted(operation),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(id: &str, bytes: &[u8]) -> Result<T, ApplyError> {
    codec::decode(bytes).map_err(|source| ApplyError::Corrupt {
        key: format!("requests/{id}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables;
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableTableMetadata};

    const T0_MS: u64 = 1_000_000;

    fn client(id: &str, fingerprint: u8) -> ClientRequest {
        ClientRequest {
            id: id.into(),
            fingerprint: [fingerprint; 32],
        }
    }

    /// Runs `apply_once` for `client` at `now_ms` in its own committed transaction, with an
    /// applied pool delete standing for the write; returns the outcome and whether the write
    /// ran.
    fn apply_at(
        db: &Database,
        index: &mut RequestIndex,
        client: &ClientRequest,
        now_ms: u64,
    ) -> (Applied, bool) {
        let txn = db.begin_write().unwrap();
        let mut ran = false;
        let applied = {
            let mut log = RequestLog {
                table: txn.open_table(tables::REQUESTS).unwrap(),
                index,
                now_ms,
            };
            let applied = log
                .apply_once(client, false, || {
                    ran = true;
                    Ok(Applied::Pool(WriteOutcome::Deleted))
                })
                .unwrap();
            log.evict().unwrap();
            applied
        };
        txn.commit().unwrap();
        (applied, ran)
    }

    fn stored(db: &Database) -> u64 {
        let txn = db.begin_write().unwrap();
        let count = txn.open_table(tables::REQUESTS).unwrap().len().unwrap();
        txn.abort().unwrap();
        count
    }

    fn memory_database() -> Database {
        Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap()
    }

    #[test]
    fn retry_replays_and_other_request_is_rejected() {
        let db = memory_database();
        let mut index = RequestIndex::default();

        let (first, ran) = apply_at(&db, &mut index, &client("a", 1), T0_MS);
        assert!(ran);
        assert!(matches!(first, Applied::Pool(WriteOutcome::Deleted)));

        let (retry, ran) = apply_at(&db, &mut index, &client("a", 1), T0_MS + 10);
        assert!(!ran, "a retry must not run the write again");
        assert!(matches!(retry, Applied::Pool(WriteOutcome::Deleted)));

        let (other, ran) = apply_at(&db, &mut index, &client("a", 2), T0_MS + 20);
        assert!(!ran, "a different request with a used id must not run");
        assert!(matches!(
            other,
            Applied::Pool(WriteOutcome::RequestIdReused)
        ));
        assert_eq!(stored(&db), 1);
    }

    #[test]
    fn expired_record_is_ignored_and_evicted() {
        let db = memory_database();
        let mut index = RequestIndex::default();
        let retention_ms = REQUEST_RETENTION.as_millis() as u64;
        apply_at(&db, &mut index, &client("old", 1), T0_MS);

        // Within the retention the id is still taken; past it, the id is free again.
        let (_, ran) = apply_at(&db, &mut index, &client("old", 2), T0_MS + retention_ms);
        assert!(!ran);
        let (_, ran) = apply_at(&db, &mut index, &client("old", 2), T0_MS + retention_ms + 1);
        assert!(ran, "an expired record no longer blocks its id");
        assert_eq!(
            stored(&db),
            1,
            "the replaced record stays, the expired one is gone"
        );

        // A write with another id past the new record's retention evicts it.
        let later = T0_MS + 2 * retention_ms + 2;
        apply_at(&db, &mut index, &client("new", 1), later);
        assert_eq!(stored(&db), 1);
        let (_, ran) = apply_at(&db, &mut index, &client("old", 3), later);
        assert!(ran);
    }

    #[test]
    fn oldest_records_beyond_count_are_evicted() {
        let db = memory_database();
        let mut index = RequestIndex::default();
        let txn = db.begin_write().unwrap();
        {
            let mut log = RequestLog {
                table: txn.open_table(tables::REQUESTS).unwrap(),
                index: &mut index,
                now_ms: T0_MS,
            };
            for i in 0..MAX_REQUEST_RECORDS + 5 {
                log.now_ms = T0_MS + i as u64;
                log.apply_once(&client(&format!("id{i}"), 1), false, || {
                    Ok(Applied::Pool(WriteOutcome::Deleted))
                })
                .unwrap();
            }
            assert_eq!(log.evict().unwrap(), 5);
        }
        txn.commit().unwrap();
        assert_eq!(stored(&db), MAX_REQUEST_RECORDS as u64);

        // The index rebuilt from the table agrees, and the five oldest ids are free again.
        let txn = db.begin_write().unwrap();
        let loaded = RequestIndex::load(&txn.open_table(tables::REQUESTS).unwrap()).unwrap();
        assert_eq!(loaded.by_age.len(), MAX_REQUEST_RECORDS);
        assert_eq!(loaded.by_age.front().unwrap().1, "id5");
        txn.abort().unwrap();
        let (_, ran) = apply_at(&db, &mut index, &client("id0", 2), T0_MS + 20_000);
        assert!(ran);
    }

    #[test]
    fn unapplied_outcomes_are_not_recorded() {
        let db = memory_database();
        let mut index = RequestIndex::default();
        let txn = db.begin_write().unwrap();
        {
            let mut log = RequestLog {
                table: txn.open_table(tables::REQUESTS).unwrap(),
                index: &mut index,
                now_ms: T0_MS,
            };
            let applied = log
                .apply_once(&client("a", 1), true, || {
                    Ok(Applied::Cluster(WriteOutcome::PreconditionFailed))
                })
                .unwrap();
            assert!(matches!(
                applied,
                Applied::Cluster(WriteOutcome::PreconditionFailed)
            ));
        }
        txn.commit().unwrap();
        assert_eq!(stored(&db), 0);
    }
}
