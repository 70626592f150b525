//! `akstore check` on real files: a file written by the server passes with a summary and exit
//! status 0; a file with a broken invariant fails with the violation listed and a non-zero
//! status; a missing file is an error that names it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use akstore_store::tables;
use common::{Server, cluster_path};
use reqwest::Method;
use serde_json::json;

fn check(data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_akstore"))
        .args(["check", "--data"])
        .arg(data)
        .env_remove("AKSTORE_DATA")
        .output()
        .unwrap()
}

/// Writes one cluster with two pools through the server, then stops it.
fn written_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let data = dir.path().join("a.redb");
    let server = Server::start(&data, &[]);
    let created = server
        .request(Method::PUT, &cluster_path("rg1", "c1"))
        .header(
            "x-ms-client-request-id",
            "11111111-2222-4333-8444-555555555555",
        )
        .json(&json!({
            "location": "westeurope",
            "properties": {"agentPoolProfiles": [{"name": "np1"}, {"name": "np2"}]}
        }))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(server.stop(), Some(0));
    data
}

#[test]
fn check_passes_on_server_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_file(&dir);
    let output = check(&data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("clusters:        1"), "{stdout}");
    assert!(stdout.contains("agent pools:     2"), "{stdout}");
    assert!(stdout.contains("request records: 1"), "{stdout}");
    assert!(stdout.contains("redb integrity:  passed"), "{stdout}");
    assert!(stdout.contains("violations:      0"), "{stdout}");
}

#[test]
fn check_fails_on_orphan_pool() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_file(&dir);
    {
        let db = redb::Database::create(&data).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::CLUSTERS)
            .unwrap()
            .remove(format!("{}/rg1/c1", common::SUBSCRIPTION).as_str())
            .unwrap();
        txn.commit().unwrap();
    }

    let output = check(&data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("violations:      2"), "{stdout}");
    assert!(stdout.contains("its cluster does not exist"), "{stdout}");
    assert!(stderr.contains("failed the check"), "{stderr}");
}

#[test]
fn check_of_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("missing.redb");
    let output = check(&data);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!data.exists(), "check created the file");
}
