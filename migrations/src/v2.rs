//! Step from schema version 1 to 2: adds two empty tables, `requests` for the records that make
//! a retried write with the same client request id return its first outcome, and `operations`
//! for long-running operation records. Version 1 records are left as they are.

use redb::{TableDefinition, TableHandle, WriteTransaction};

use crate::{Progress, Step};

/// Client request id -> record of the write it carried (version 2).
const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("requests");
/// Operation id -> long-running operation record (version 2).
const OPERATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("operations");

pub(crate) const STEP: Step = Step {
    from: 1,
    summary: "add the empty tables `requests` (client request ids for exactly-once retries) and \
              `operations` (long-running operations); existing records stay unchanged",
    apply,
};

fn apply(txn: &WriteTransaction, _progress: &mut Progress) -> Result<(), redb::Error> {
    // Opening a table in a write transaction creates it.
    for table in [REQUESTS, OPERATIONS] {
        txn.open_table(table)?;
        tracing::info!(table = table.name(), "created table");
    }
    Ok(())
}
