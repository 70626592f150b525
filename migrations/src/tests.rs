//! Unit tests of the migration runner on real redb files: the step chain, schema detection, the
//! one-transaction rule (a failing step leaves the file at its old version) and progress.

use redb::{Database, ReadableDatabase, ReadableTableMetadata};
use tempfile::TempDir;

use super::*;

const CLUSTERS_V1: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");
const POOLS_V1: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
const SCRATCH: TableDefinition<u64, u64> = TableDefinition::new("scratch");

/// A database laid out as version 1 wrote it: metadata, clusters and pools.
fn version_1_database(dir: &TempDir) -> Database {
    let db = Database::create(dir.path().join("v1.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(SCHEMA_VERSION_KEY, 1).unwrap();
        meta.insert("revision", 3).unwrap();
        let mut clusters = txn.open_table(CLUSTERS_V1).unwrap();
        clusters
            .insert("sub/rg/c1", [1u8, 2, 3].as_slice())
            .unwrap();
        let mut pools = txn.open_table(POOLS_V1).unwrap();
        pools.insert("sub/rg/c1/np1", [1u8, 4].as_slice()).unwrap();
    }
    txn.commit().unwrap();
    db
}

fn stored_version(db: &Database) -> FoundSchema {
    read_schema(&db.begin_read().unwrap()).unwrap()
}

fn table_names(db: &Database) -> Vec<String> {
    let txn = db.begin_read().unwrap();
    let mut names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|handle| handle.name().to_owned())
        .collect();
    names.sort();
    names
}

fn write_scratch(txn: &WriteTransaction, progress: &mut Progress) -> Result<(), redb::Error> {
    let mut table = txn.open_table(SCRATCH)?;
    progress.start("filling scratch", 1000);
    for key in 0..1000u64 {
        table.insert(key, key * 2)?;
        progress.advance(1);
    }
    Ok(())
}

fn fail_step(txn: &WriteTransaction, _progress: &mut Progress) -> Result<(), redb::Error> {
    txn.open_table(SCRATCH)?.insert(7, 7)?;
    Err(redb::Error::Corrupted("test step fails on purpose".into()))
}

#[test]
fn pending_steps_cover_every_older_version() {
    assert_eq!(pending_steps(FIRST_SCHEMA_VERSION).len(), STEPS.len());
    assert!(pending_steps(CURRENT_SCHEMA_VERSION).is_empty());
    assert!(pending_steps(CURRENT_SCHEMA_VERSION + 1).is_empty());
    assert!(pending_steps(0).is_empty());
    for version in FIRST_SCHEMA_VERSION..CURRENT_SCHEMA_VERSION {
        let steps = pending_steps(version);
        assert_eq!(steps[0].from, version);
        assert_eq!(steps.last().unwrap().to(), CURRENT_SCHEMA_VERSION);
    }
}

#[test]
fn read_schema_of_empty_database_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("empty.redb")).unwrap();
    assert_eq!(stored_version(&db), FoundSchema::Empty);
}

#[test]
fn read_schema_rejects_foreign_layouts() {
    let dir = tempfile::tempdir().unwrap();
    type Fill = fn(&WriteTransaction);
    let cases: [(&str, Fill); 4] = [
        ("no `meta` table", |txn| {
            txn.open_table(SCRATCH).unwrap().insert(1, 1).unwrap();
        }),
        ("not akstore's", |txn| {
            let other: TableDefinition<&str, &str> = TableDefinition::new("meta");
            txn.open_table(other).unwrap().insert("k", "v").unwrap();
        }),
        ("no `schema_version` entry", |txn| {
            txn.open_table(META).unwrap().insert("revision", 1).unwrap();
        }),
        ("schema version is 0", |txn| {
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, 0)
                .unwrap();
        }),
    ];
    for (index, (expected, fill)) in cases.into_iter().enumerate() {
        let db = Database::create(dir.path().join(format!("foreign-{index}.redb"))).unwrap();
        let txn = db.begin_write().unwrap();
        fill(&txn);
        txn.commit().unwrap();

        let error = read_schema(&db.begin_read().unwrap()).unwrap_err();
        assert!(
            matches!(&error, SchemaError::NotAkstore { reason } if reason.contains(expected)),
            "case {expected:?}: {error}"
        );
        let txn = db.begin_write().unwrap();
        let error = read_schema_for_write(&txn).unwrap_err();
        assert!(
            matches!(&error, SchemaError::NotAkstore { reason } if reason.contains(expected)),
            "case {expected:?} in a write transaction: {error}"
        );
    }
}

#[test]
fn read_schema_for_write_creates_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("foreign.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(SCRATCH).unwrap().insert(1, 1).unwrap();
    txn.commit().unwrap();

    let txn = db.begin_write().unwrap();
    assert!(read_schema_for_write(&txn).is_err());
    txn.commit().unwrap();
    assert_eq!(table_names(&db), ["scratch"]);
}

#[test]
fn migrate_from_version_1_adds_tables_and_keeps_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = version_1_database(&dir);

    let txn = db.begin_write().unwrap();
    assert_eq!(
        read_schema_for_write(&txn).unwrap(),
        FoundSchema::Version(1)
    );
    let report = migrate(txn, 1).unwrap();

    assert_eq!(report.from, 1);
    assert_eq!(report.to, CURRENT_SCHEMA_VERSION);
    assert_eq!(report.steps.len(), STEPS.len());
    assert_eq!(
        stored_version(&db),
        FoundSchema::Version(CURRENT_SCHEMA_VERSION)
    );
    assert_eq!(
        table_names(&db),
        ["clusters", "meta", "operations", "pools", "requests"]
    );
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("revision").unwrap().unwrap().value(), 3);
    let clusters = txn.open_table(CLUSTERS_V1).unwrap();
    assert_eq!(
        clusters.get("sub/rg/c1").unwrap().unwrap().value(),
        [1u8, 2, 3]
    );
    let pools = txn.open_table(POOLS_V1).unwrap();
    assert_eq!(
        pools.get("sub/rg/c1/np1").unwrap().unwrap().value(),
        [1u8, 4]
    );
}

#[test]
fn migrate_current_database_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = version_1_database(&dir);
    migrate(db.begin_write().unwrap(), 1).unwrap();
    let before = db
        .begin_read()
        .unwrap()
        .open_table(META)
        .unwrap()
        .len()
        .unwrap();

    let report = migrate(db.begin_write().unwrap(), CURRENT_SCHEMA_VERSION).unwrap();
    assert!(report.steps.is_empty());
    assert_eq!(report.from, report.to);
    let after = db
        .begin_read()
        .unwrap()
        .open_table(META)
        .unwrap()
        .len()
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn migrate_rejects_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = version_1_database(&dir);
    let error = migrate(db.begin_write().unwrap(), CURRENT_SCHEMA_VERSION + 1).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, MigrationError::Newer { .. }), "{message}");
    assert!(message.contains(&format!("schema version {}", CURRENT_SCHEMA_VERSION + 1)));
    assert!(message.contains(&format!("version {CURRENT_SCHEMA_VERSION}")));
    assert_eq!(stored_version(&db), FoundSchema::Version(1));
}

#[test]
fn failing_step_leaves_old_version_and_no_partial_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = version_1_database(&dir);
    let steps = [
        Step {
            from: 1,
            summary: "fill scratch",
            apply: write_scratch,
        },
        Step {
            from: 2,
            summary: "fail",
            apply: fail_step,
        },
    ];

    let error =
        migrate_with(db.begin_write().unwrap(), 1, &steps, PROGRESS_LOG_INTERVAL).unwrap_err();
    assert!(
        matches!(error, MigrationError::Step { from: 2, to: 3, .. }),
        "{error}"
    );

    // The first step's table and the version it wrote were in the aborted transaction.
    assert_eq!(stored_version(&db), FoundSchema::Version(1));
    assert_eq!(table_names(&db), ["clusters", "meta", "pools"]);
}

#[test]
fn steps_run_in_order_and_count_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = version_1_database(&dir);
    let steps = [
        Step {
            from: 1,
            summary: "fill scratch",
            apply: write_scratch,
        },
        Step {
            from: 2,
            summary: "double scratch",
            apply: |txn, progress| {
                let mut table = txn.open_table(SCRATCH)?;
                progress.start("doubling scratch", table.len()?);
                for key in 0..1000u64 {
                    let value = table.get(key)?.map(|value| value.value());
                    assert_eq!(value, Some(key * 2), "the first step ran before this one");
                    table.insert(key, key * 4)?;
                    progress.advance(1);
                }
                Ok(())
            },
        },
    ];

    let report = migrate_with(db.begin_write().unwrap(), 1, &steps, PROGRESS_LOG_INTERVAL).unwrap();
    assert_eq!(report.to, 3);
    let counted: Vec<(u64, u64)> = report.steps.iter().map(|s| (s.from, s.records)).collect();
    assert_eq!(counted, [(1, 1000), (2, 1000)]);
    assert_eq!(stored_version(&db), FoundSchema::Version(3));
    let txn = db.begin_read().unwrap();
    assert_eq!(
        txn.open_table(SCRATCH)
            .unwrap()
            .get(999)
            .unwrap()
            .unwrap()
            .value(),
        3996
    );
}

#[test]
fn progress_logs_once_per_interval() {
    let mut every_time = Progress::new(1, Duration::ZERO);
    every_time.start("counting", 10);
    for _ in 0..10 {
        every_time.advance(1);
    }
    assert_eq!(every_time.lines_logged(), 10);
    assert_eq!(every_time.records(), 10);

    let mut rarely = Progress::new(1, Duration::from_secs(3600));
    rarely.start("counting", 10);
    for _ in 0..10 {
        rarely.advance(1);
    }
    assert_eq!(rarely.lines_logged(), 0);
    assert_eq!(rarely.records(), 10);
}
