//! Schema versions of akstore's database file and the ordered steps between them.
//!
//! Every akstore database has a `meta` table (`&str -> u64`) whose `schema_version` entry is the
//! version of the file's layout: its tables, their key and value types and the record encoding.
//! The store creates a new file at [`CURRENT_SCHEMA_VERSION`]. An older file is brought forward
//! by [`migrate`], which runs every pending step in order inside the one write transaction it
//! is given and commits once, so a crash or an error before that commit leaves the file at its
//! old version and the next open runs the same steps again.
//!
//! Each step names the tables it touches with its own definitions, as they were at the versions
//! it moves between, and never through the store's current ones: a later change to the store
//! must not change what an old step does. This crate never opens, creates or repairs files; the
//! store decides when a file may be opened for writing.

mod error;
mod progress;
mod v2;

use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};
use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle};

pub use error::{MigrationError, SchemaError};
pub use progress::{PROGRESS_LOG_INTERVAL, Progress};

/// Schema version of the first release. No akstore file carries a lower one.
pub const FIRST_SCHEMA_VERSION: u64 = 1;

/// Schema version that this build creates, reads and writes.
pub const CURRENT_SCHEMA_VERSION: u64 = 2;

/// Metadata table, present in every schema version: the schema version and, from version 1 on,
/// the global revision counter.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Metadata key of the schema version.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// One step from schema version `from` to `from + 1`.
pub struct Step {
    /// Version the step starts from.
    pub from: u64,
    /// What the step changes, in one sentence, as `akstore migrate --dry-run` prints it.
    pub summary: &'static str,
    /// Changes the tables inside the migration's write transaction. It must not commit, and it
    /// does not write the schema version: [`migrate`] does.
    apply: fn(&WriteTransaction, &mut Progress) -> Result<(), redb::Error>,
}

/// Every step, ordered by the version it starts from, with no gaps from
/// [`FIRST_SCHEMA_VERSION`] to [`CURRENT_SCHEMA_VERSION`].
pub const STEPS: &[Step] = &[v2::STEP];

// The steps form one chain from the first version to the current one.
const _: () = {
    let mut index = 0;
    while index < STEPS.len() {
        assert!(STEPS[index].from == FIRST_SCHEMA_VERSION + index as u64);
        index += 1;
    }
    assert!(FIRST_SCHEMA_VERSION + STEPS.len() as u64 == CURRENT_SCHEMA_VERSION);
};

/// The schema a database file carries, as its metadata table states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundSchema {
    /// The database has no tables: a new file, or one whose creation stopped before its first
    /// commit. The store initializes it at the current version.
    Empty,
    /// The schema version stored in the metadata table, at least [`FIRST_SCHEMA_VERSION`].
    Version(u64),
}

/// What [`migrate`] did to one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// Version the database had before the migration.
    pub from: u64,
    /// Version the database has now.
    pub to: u64,
    /// The steps that ran, in order; empty when the database was already current.
    pub steps: Vec<StepReport>,
}

/// One step that [`migrate`] ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    pub from: u64,
    pub to: u64,
    pub summary: &'static str,
    /// Records the step visited, as it counted them with [`Progress::advance`].
    pub records: u64,
    pub elapsed: Duration,
}

impl Step {
    /// Version the step leaves the database at.
    pub const fn to(&self) -> u64 {
        self.from + 1
    }
}

/// The steps a database at schema version `found` needs, in the order they run. Empty for the
/// current version and for any version this build does not know.
pub fn pending_steps(found: u64) -> &'static [Step] {
    if (FIRST_SCHEMA_VERSION..CURRENT_SCHEMA_VERSION).contains(&found) {
        &STEPS[(found - FIRST_SCHEMA_VERSION) as usize..]
    } else {
        &[]
    }
}

/// Reads the schema of the database that `txn` reads.
///
/// Errors: [`SchemaError::NotAkstore`] when the database has tables but no valid akstore
/// metadata, [`SchemaError::Storage`] when redb fails to read it.
pub fn read_schema(txn: &ReadTransaction) -> Result<FoundSchema, SchemaError> {
    let names = txn
        .list_tables()?
        .map(|handle| handle.name().to_owned())
        .collect();
    classify(names, || {
        let meta = txn.open_table(META)?;
        Ok(meta.get(SCHEMA_VERSION_KEY)?.map(|value| value.value()))
    })
}

/// Reads the schema inside a write transaction, without writing anything: the metadata table
/// is opened only when it exists, since opening a missing table in a write transaction creates
/// it.
pub fn read_schema_for_write(txn: &WriteTransaction) -> Result<FoundSchema, SchemaError> {
    let names = txn
        .list_tables()?
        .map(|handle| handle.name().to_owned())
        .collect();
    classify(names, || {
        let meta = txn.open_table(META)?;
        Ok(meta.get(SCHEMA_VERSION_KEY)?.map(|value| value.value()))
    })
}

/// Brings a database at schema version `found` to [`CURRENT_SCHEMA_VERSION`]: runs every
/// pending step inside `txn`, writes the new version, and commits `txn` durably.
///
/// `found` must be the version [`read_schema_for_write`] read in this same transaction. A
/// database that is already current commits nothing.
///
/// Errors: [`MigrationError::Newer`] for a version above the current one; every other error but
/// [`MigrationError::CommitFailed`] aborts `txn`, which leaves the file as it was.
pub fn migrate(txn: WriteTransaction, found: u64) -> Result<MigrationReport, MigrationError> {
    migrate_with(txn, found, STEPS, PROGRESS_LOG_INTERVAL)
}

fn migrate_with(
    mut txn: WriteTransaction,
    found: u64,
    steps: &[Step],
    progress_interval: Duration,
) -> Result<MigrationReport, MigrationError> {
    let current = FIRST_SCHEMA_VERSION + steps.len() as u64;
    if found > current {
        return Err(MigrationError::Newer {
            found,
            supported: current,
        });
    }
    if found < FIRST_SCHEMA_VERSION {
        return Err(MigrationError::NotAkstore {
            reason: format!("its schema version is {found}, which no akstore writes"),
        });
    }
    let pending = &steps[(found - FIRST_SCHEMA_VERSION) as usize..];
    if pending.is_empty() {
        return Ok(MigrationReport {
            from: found,
            to: found,
            steps: Vec::new(),
        });
    }
    txn.set_durability(Durability::Immediate)
        .map_err(|error| MigrationError::NotApplied(error.to_string()))?;

    tracing::info!(
        from = found,
        to = current,
        steps = pending.len(),
        "migrating the database schema in one transaction"
    );
    let mut reports = Vec::with_capacity(pending.len());
    for step in pending {
        reports.push(run_step(&txn, step, progress_interval)?);
    }

    // `return` injects an error, which aborts the transaction; `return(abort)` ends the process
    // as a crash at this instant would, the same actions the store's failpoints take.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("migration::before_commit", |argument: Option<String>| {
        if argument.as_deref() == Some("abort") {
            tracing::error!(
                failpoint = "migration::before_commit",
                "failpoint aborts the process"
            );
            std::process::abort();
        }
        Err(MigrationError::NotApplied(
            "failpoint migration::before_commit injected an error".into(),
        ))
    });

    let started = Instant::now();
    txn.commit()
        .map_err(|source| MigrationError::CommitFailed {
            from: found,
            to: current,
            source,
        })?;
    tracing::info!(
        from = found,
        to = current,
        commit_ms = started.elapsed().as_millis() as u64,
        "schema migration committed"
    );
    Ok(MigrationReport {
        from: found,
        to: current,
        steps: reports,
    })
}

/// Runs one step and writes the version it leaves the database at, inside `txn`.
fn run_step(
    txn: &WriteTransaction,
    step: &Step,
    progress_interval: Duration,
) -> Result<StepReport, MigrationError> {
    let step_failed = |source: redb::Error| MigrationError::Step {
        from: step.from,
        to: step.to(),
        source,
    };
    tracing::info!(
        from = step.from,
        to = step.to(),
        summary = step.summary,
        "schema step started"
    );
    let started = Instant::now();
    let mut progress = Progress::new(step.from, progress_interval);

    (step.apply)(txn, &mut progress).map_err(step_failed)?;
    txn.open_table(META)
        .and_then(|mut meta| {
            meta.insert(SCHEMA_VERSION_KEY, step.to())?;
            Ok(())
        })
        .map_err(|error| step_failed(error.into()))?;

    let report = StepReport {
        from: step.from,
        to: step.to(),
        summary: step.summary,
        records: progress.records(),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        from = report.from,
        to = report.to,
        records = report.records,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "schema step applied; it commits with the rest of the migration"
    );
    Ok(report)
}

/// Turns the table names and the stored version of a database into its schema.
fn classify(
    names: Vec<String>,
    read_version: impl FnOnce() -> Result<Option<u64>, TableError>,
) -> Result<FoundSchema, SchemaError> {
    if names.is_empty() {
        return Ok(FoundSchema::Empty);
    }
    if !names.iter().any(|name| name == META.name()) {
        return Err(SchemaError::NotAkstore {
            reason: format!(
                "it has no `{}` table (its tables: {})",
                META.name(),
                names.join(", ")
            ),
        });
    }
    let version = match read_version() {
        Ok(version) => version,
        Err(TableError::Storage(error)) => return Err(SchemaError::Storage(error.into())),
        Err(other) => {
            return Err(SchemaError::NotAkstore {
                reason: format!("its `{}` table is not akstore's ({other})", META.name()),
            });
        }
    };
    match version {
        None => Err(SchemaError::NotAkstore {
            reason: format!(
                "its `{}` table has no `{SCHEMA_VERSION_KEY}` entry",
                META.name()
            ),
        }),
        Some(version) if version < FIRST_SCHEMA_VERSION => Err(SchemaError::NotAkstore {
            reason: format!("its schema version is {version}, which no akstore writes"),
        }),
        Some(version) => Ok(FoundSchema::Version(version)),
    }
}

#[cfg(test)]
mod tests;
