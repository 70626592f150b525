//! Failpoints in the real binary, set by `FAILPOINTS`: an abort inside a commit leaves the
//! file with the write wholly applied or not at all, and a retry with the same client request
//! id after the restart gets a definite answer; returned errors answer 500 (outcome unknown)
//! or 503 (not applied) as documented, and the server keeps serving. Runs only in builds with
//! the `failpoints` feature.
#![cfg(feature = "failpoints")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{Server, cluster_path, etag_of, json_body};
use reqwest::Method;
use serde_json::{Value, json};

const REQUEST_ID: &str = "9d6c2a4e-1b7f-4c3e-8a5d-2f0e9b8c7a61";

/// Creates cluster `c1` with pools np1 and np2 and returns it.
fn create(server: &Server) -> Value {
    let created = server
        .request(Method::PUT, &cluster_path("rg1", "c1"))
        .json(&cluster_body("v1"))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    json_body(created)
}

fn cluster_body(version: &str) -> Value {
    json!({
        "location": "westeurope",
        "tags": {"v": version},
        "properties": {"agentPoolProfiles": [
            {"name": "np1", "tags": {"v": version}},
            {"name": "np2", "tags": {"v": version}},
        ]}
    })
}

/// Sends the update to `v2`, conditioned on `etag`, with the test's request id.
fn update(server: &Server, etag: &str) -> reqwest::Result<reqwest::blocking::Response> {
    server
        .request(Method::PUT, &cluster_path("rg1", "c1"))
        .header("If-Match", format!("\"{etag}\""))
        .header("x-ms-client-request-id", REQUEST_ID)
        .json(&cluster_body("v2"))
        .send()
}

/// The tag `v` of the cluster and of each pool; all must agree.
fn version(server: &Server) -> String {
    let cluster = json_body(
        server
            .request(Method::GET, &cluster_path("rg1", "c1"))
            .send()
            .unwrap(),
    );
    let version = cluster["tags"]["v"].as_str().unwrap().to_owned();
    for pool in cluster["properties"]["agentPoolProfiles"]
        .as_array()
        .unwrap()
    {
        assert_eq!(
            pool["tags"]["v"],
            version.as_str(),
            "half-applied write: {cluster}"
        );
    }
    version
}

/// Starts a server with one failpoint configured to abort, sends the update, and checks the
/// process aborted and what the restarted server holds.
fn abort_at(failpoint: &str, applied: bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a.redb");
    let server = Server::start(&data, &[]);
    let etag = etag_of(&create(&server));
    assert_eq!(server.stop(), Some(0));

    let actions = format!("{failpoint}=1*return(abort)");
    let server = Server::try_start_with_env(&data, &[], &[("FAILPOINTS", &actions)]).unwrap();
    assert!(update(&server, &etag).is_err(), "the process answered");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits");
    assert_eq!(status.signal(), Some(6), "not aborted: {status:?}");

    let server = Server::start(&data, &[]);
    let expected = if applied { "v2" } else { "v1" };
    assert_eq!(version(&server), expected, "after an abort at {failpoint}");

    // The retry with the same request id succeeds whether or not the first attempt applied.
    let retry = update(&server, &etag).unwrap();
    assert_eq!(retry.status(), 200, "retry after an abort at {failpoint}");
    assert_eq!(version(&server), "v2");
}

#[test]
fn abort_before_commit_applies_nothing() {
    abort_at("writer::before_commit", false);
}

#[test]
fn abort_between_cluster_and_pools_applies_nothing() {
    abort_at("apply::between_cluster_and_pools", false);
}

#[test]
fn abort_after_commit_keeps_write() {
    abort_at("writer::after_commit", true);
}

/// Starts a server whose failpoint returns an error once, creates `c1`, and returns the
/// server, the cluster's eTag and the update's response.
fn error_at(
    failpoint: &str,
) -> (
    Server,
    String,
    reqwest::blocking::Response,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a.redb");
    // The first write (the create) passes the failpoint; the second fails.
    let actions = format!("{failpoint}=1*off->1*return");
    let server = Server::try_start_with_env(&data, &[], &[("FAILPOINTS", &actions)]).unwrap();
    let etag = etag_of(&create(&server));
    let response = update(&server, &etag).unwrap();
    (server, etag, response, dir)
}

#[test]
fn error_after_commit_is_unknown_then_replayed() {
    let (server, etag, response, _dir) = error_at("writer::after_commit");
    assert_eq!(response.status(), 500);
    assert_eq!(json_body(response)["error"]["code"], "CommitOutcomeUnknown");
    assert_eq!(version(&server), "v2", "the commit was durable");

    let retry = update(&server, &etag).unwrap();
    assert_eq!(retry.status(), 200, "the retry gets the recorded outcome");
    assert_eq!(etag_of(&json_body(retry)), etag_of(&read(&server)));
}

#[test]
fn error_before_commit_is_unknown_and_not_applied() {
    let (server, etag, response, _dir) = error_at("writer::before_commit");
    assert_eq!(response.status(), 500);
    assert_eq!(json_body(response)["error"]["code"], "CommitOutcomeUnknown");
    assert_eq!(version(&server), "v1");

    let retry = update(&server, &etag).unwrap();
    assert_eq!(retry.status(), 200, "the retry applies the write now");
    assert_eq!(version(&server), "v2");
}

#[test]
fn error_between_cluster_and_pools_is_not_applied() {
    let (server, _etag, response, _dir) = error_at("apply::between_cluster_and_pools");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(json_body(response)["error"]["code"], "StorageUnavailable");
    assert_eq!(version(&server), "v1");
    let ready = server
        .client()
        .get(server.raw_url("/readyz"))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200, "the store reopened");
}

#[test]
fn invalid_failpoints_value_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a.redb");
    for value in [
        "writer::before_commit",
        "no::such_point=panic",
        "writer::after_commit=explode",
    ] {
        let log = Server::try_start_with_env(&data, &[], &[("FAILPOINTS", value)])
            .err()
            .unwrap_or_else(|| panic!("FAILPOINTS={value} started a server"));
        assert!(log.contains("FAILPOINTS"), "{value}: {log}");
    }
    assert!(!data.exists(), "a rejected start created the file");
}

fn read(server: &Server) -> Value {
    json_body(
        server
            .request(Method::GET, &cluster_path("rg1", "c1"))
            .send()
            .unwrap(),
    )
}
