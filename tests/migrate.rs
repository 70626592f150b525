//! Proves schema migration through the real binary: `akstore serve` migrates an older fixture
//! on open and serves every record with its eTag; `--no-migrate` rejects it with the command to
//! run; `akstore migrate` and `--dry-run` migrate or describe without serving; and a file of a
//! newer schema is rejected by every command, naming both versions, with its bytes unchanged.

mod common;

use std::path::Path;

use akstore_store::{CURRENT_SCHEMA_VERSION, FileSchema, inspect_schema};
use common::Server;
use common::fixtures::{
    assert_serves_records, copy_fixture, expected_records, file_bytes, run_akstore,
};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Writes `version` as the schema version of the database at `path`, as a newer akstore would.
fn set_schema_version(path: &Path, version: u64) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(akstore_store::tables::META)
        .unwrap()
        .insert(akstore_store::tables::SCHEMA_VERSION_KEY, version)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn serve_migrates_every_older_fixture() {
    for version in 1..CURRENT_SCHEMA_VERSION {
        for fixture in [
            format!("v{version}.redb"),
            format!("v{version}-unclean.redb"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let data = copy_fixture(&fixture, dir.path());

            let server = Server::start(&data, &[]);
            assert_serves_records(&server, &expected_records(version));
            let log = server.log().join("\n");
            assert!(
                log.contains("schema migration committed"),
                "{fixture}: {log}"
            );
            assert_eq!(server.stop(), Some(0));

            assert_eq!(
                inspect_schema(&data).unwrap(),
                FileSchema::Version(CURRENT_SCHEMA_VERSION)
            );
        }
    }
}

#[test]
fn serve_no_migrate_rejects_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture("v1.redb", dir.path());
    let before = file_bytes(&data);

    let output = run_akstore(
        &[
            "serve",
            "--data",
            path_arg(&data),
            "--listen",
            "127.0.0.1:0",
            "--no-migrate",
        ],
        &[],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("schema version 1"), "{message}");
    assert!(
        message.contains(&format!("akstore migrate --data {}", data.display())),
        "{message}"
    );
    assert!(file_bytes(&data) == before, "the file was changed");

    let output = run_akstore(
        &[
            "serve",
            "--data",
            path_arg(&data),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("AKSTORE_NO_MIGRATE", "true")],
    );
    assert!(
        !output.status.success(),
        "AKSTORE_NO_MIGRATE=true sets --no-migrate"
    );
    assert!(file_bytes(&data) == before, "the file was changed");
}

#[test]
fn migrate_dry_run_lists_steps_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture("v1-unclean.redb", dir.path());
    let before = file_bytes(&data);

    let output = run_akstore(&["migrate", "--data", path_arg(&data), "--dry-run"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let listing = stdout(&output);
    assert!(listing.contains("schema version 1"), "{listing}");
    assert!(
        listing.contains("1 -> 2: add the empty tables"),
        "{listing}"
    );
    assert!(listing.contains("nothing was changed"), "{listing}");
    assert!(file_bytes(&data) == before, "a dry run changed the file");
}

#[test]
fn migrate_then_serve_without_migration() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture("v1.redb", dir.path());

    let output = run_akstore(&["migrate", "--data", path_arg(&data)], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = stdout(&output);
    assert!(
        summary.contains(&format!(
            "from schema version 1 to {CURRENT_SCHEMA_VERSION}"
        )),
        "{summary}"
    );
    assert!(
        stderr(&output).contains("schema step started"),
        "steps are logged"
    );

    let again = run_akstore(&["migrate", "--data", path_arg(&data)], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing was changed"),
        "{}",
        stdout(&again)
    );

    let server = Server::start(&data, &["--no-migrate"]);
    assert_serves_records(&server, &expected_records(1));
}

#[test]
fn migrate_rejects_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("missing.redb");
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["migrate", "--data", path_arg(&data)];
        args.extend_from_slice(extra);
        let output = run_akstore(&args, &[]);
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("no akstore database"),
            "{}",
            stderr(&output)
        );
        assert!(!data.exists(), "migrate created a file");
    }
}

#[test]
fn newer_schema_is_rejected_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture(&format!("v{CURRENT_SCHEMA_VERSION}.redb"), dir.path());
    let newer = CURRENT_SCHEMA_VERSION + 1;
    set_schema_version(&data, newer);
    let before = file_bytes(&data);

    let data_arg = path_arg(&data);
    let commands: [&[&str]; 4] = [
        &["serve", "--data", data_arg, "--listen", "127.0.0.1:0"],
        &[
            "serve",
            "--data",
            data_arg,
            "--listen",
            "127.0.0.1:0",
            "--no-migrate",
        ],
        &["migrate", "--data", data_arg],
        &["migrate", "--data", data_arg, "--dry-run"],
    ];
    for args in commands {
        let output = run_akstore(args, &[]);
        assert!(!output.status.success(), "{args:?} succeeded");
        let message = stderr(&output);
        assert!(
            message.contains(&format!("schema version {newer}")),
            "{args:?}: {message}"
        );
        assert!(
            message.contains(&format!("version {CURRENT_SCHEMA_VERSION}")),
            "{args:?}: {message}"
        );
        assert!(file_bytes(&data) == before, "{args:?} changed the file");
    }
}
