//! Proves the precondition table for managed clusters over a real socket: every cell of PUT,
//! PATCH and DELETE against a missing and an existing cluster, and the conditional GET rules.

mod common;

use common::table::{Kind, Verb, check_get_rules, run_rows};
use common::{cluster_body, cluster_path, start_fresh};

#[test]
fn cluster_put_rows() {
    let (_dir, server) = start_fresh(&[]);
    run_rows(&server, Kind::Cluster, Verb::Put);
}

#[test]
fn cluster_patch_rows() {
    let (_dir, server) = start_fresh(&[]);
    run_rows(&server, Kind::Cluster, Verb::Patch);
}

#[test]
fn cluster_delete_rows() {
    let (_dir, server) = start_fresh(&[]);
    run_rows(&server, Kind::Cluster, Verb::Delete);
}

#[test]
fn cluster_get_conditions() {
    let (_dir, server) = start_fresh(&[]);
    let existing = cluster_path("rg1", "c1");
    assert_eq!(server.put(&existing, &cluster_body(&["np1"])).status, 201);
    check_get_rules(
        &server,
        &existing,
        &cluster_path("rg1", "missing"),
        "ResourceNotFound",
    );
}

#[test]
fn arm_profile_deletes_with_202() {
    let (_dir, server) = start_fresh(&["--profile", "arm"]);
    let path = cluster_path("rg1", "c1");
    let etag = server.put(&path, &cluster_body(&["np1"])).etag();
    let pool = server.send(
        reqwest::Method::DELETE,
        &common::pool_path("rg1", "c1", "np1"),
        &[],
        None,
    );
    assert_eq!(pool.status, 202);
    let cluster = server.send(reqwest::Method::DELETE, &path, &[("If-Match", &etag)], None);
    assert_eq!(cluster.status, 202);
    assert_eq!(cluster.body, serde_json::Value::Null);
    let again = server.send(reqwest::Method::DELETE, &path, &[], None);
    assert_eq!(again.status, 204);
}
