//! Proves the precondition table for agent pools over a real socket: every cell of PUT, PATCH
//! and DELETE against a missing and an existing pool of an existing cluster, the conditional
//! GET rules, and the status of each verb when the parent cluster is missing.

mod common;

use common::table::{Kind, Verb, check_get_rules, run_rows};
use common::{cluster_body, cluster_path, pool_body, pool_path, start_fresh, unknown_etag};
use reqwest::Method;
use serde_json::json;

#[test]
fn pool_put_rows() {
    let (_dir, server) = start_fresh(&[]);
    run_rows(&server, Kind::Pool, Verb::Put);
}

#[test]
fn pool_patch_rows() {
    let (_dir, server) = start_fresh(&[]);
    run_rows(&server, Kind::Pool, Verb::Patch);
}

#[test]
fn pool_delete_rows() {
    let (_dir, server) = start_fresh(&[]);
    run_rows(&server, Kind::Pool, Verb::Delete);
}

#[test]
fn pool_get_conditions() {
    let (_dir, server) = start_fresh(&[]);
    assert_eq!(
        server
            .put(&cluster_path("rg1", "c1"), &cluster_body(&["np1"]))
            .status,
        201
    );
    check_get_rules(
        &server,
        &pool_path("rg1", "c1", "np1"),
        &pool_path("rg1", "c1", "missing"),
        "ResourceNotFound",
    );
    check_get_rules(
        &server,
        &pool_path("rg1", "c1", "np1"),
        &pool_path("rg1", "nocluster", "np1"),
        "ParentResourceNotFound",
    );
}

#[test]
fn pool_writes_without_cluster() {
    let (_dir, server) = start_fresh(&[]);
    let path = pool_path("rg1", "nocluster", "np1");
    let stale = format!("\"{}\"", unknown_etag());
    let conditions: [&[(&str, &str)]; 4] = [
        &[],
        &[("If-Match", "*")],
        &[("If-Match", &stale)],
        &[("If-None-Match", "*")],
    ];

    // PUT and PATCH name a parent that must exist, whatever their condition.
    for headers in conditions {
        let put = server.send(Method::PUT, &path, headers, Some(&pool_body(1)));
        assert_eq!(put.status, 404, "PUT with {headers:?}");
        assert_eq!(
            put.error_code(),
            "ParentResourceNotFound",
            "PUT with {headers:?}"
        );
        let patch = server.send(
            Method::PATCH,
            &path,
            headers,
            Some(&json!({"properties": {"count": 2}})),
        );
        assert_eq!(patch.status, 404, "PATCH with {headers:?}");
        assert_eq!(
            patch.error_code(),
            "ParentResourceNotFound",
            "PATCH with {headers:?}"
        );
    }

    // A pool of a missing cluster is a missing pool, so DELETE returns 204.
    for headers in conditions {
        let delete = server.send(Method::DELETE, &path, headers, None);
        assert_eq!(
            delete.status, 204,
            "DELETE with {headers:?}: {}",
            delete.body
        );
    }
    assert_eq!(server.get(&cluster_path("rg1", "nocluster")).status, 404);
}
