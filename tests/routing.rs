//! Proves routing over a real socket. Fixed path segments and names in any casing reach the
//! same resource, which keeps the casing it was created with in `id` and `name`. Paths of
//! other resource types are 404 and unsupported methods 405.

mod common;

use common::{SUBSCRIPTION, Server, cluster_body, pool_body, start_fresh};
use reqwest::Method;
use serde_json::json;

/// Builds the cluster path with every fixed segment and name cased by `case`.
fn cased_cluster_path(case: fn(&str) -> String, rg: &str, cluster: &str) -> String {
    format!(
        "/{}/{SUBSCRIPTION}/{}/{}/{}/{}/{}/{}",
        case("subscriptions"),
        case("resourceGroups"),
        case(rg),
        case("providers"),
        case("Microsoft.ContainerService"),
        case("managedClusters"),
        case(cluster)
    )
}

const CREATED_PATH: &str = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/My-RG/providers/Microsoft.ContainerService/managedClusters/MyCluster";

fn casings() -> [fn(&str) -> String; 3] {
    [str::to_lowercase, str::to_uppercase, |text| text.to_owned()]
}

fn start_with_cluster() -> (tempfile::TempDir, Server) {
    let (dir, server) = start_fresh(&[]);
    let created = server.put(CREATED_PATH, &cluster_body(&["np1"]));
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["id"], CREATED_PATH);
    (dir, server)
}

#[test]
fn any_casing_reaches_the_cluster() {
    let (_dir, server) = start_with_cluster();
    let etag = server.get(CREATED_PATH).etag();
    for case in casings() {
        let path = cased_cluster_path(case, "My-RG", "MyCluster");
        let reply = server.get(&path);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.etag(), etag, "{path}");
        assert_eq!(reply.body["id"], CREATED_PATH, "{path}");
        assert_eq!(reply.body["name"], "MyCluster", "{path}");
    }

    // A PUT in another casing updates the cluster and keeps its casing.
    let upper = cased_cluster_path(str::to_uppercase, "My-RG", "MyCluster");
    let updated = server.send(
        Method::PUT,
        &upper,
        &[("If-Match", &etag)],
        Some(&cluster_body(&[])),
    );
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["id"], CREATED_PATH);
    assert_eq!(updated.body["name"], "MyCluster");
    let profile = &updated.body["properties"]["agentPoolProfiles"][0];
    assert_eq!(profile["name"], "np1", "the pool survives the PUT");

    // Lists in any casing find it under its created casing.
    let lower_list = format!(
        "/subscriptions/{SUBSCRIPTION}/resourcegroups/my-rg/providers/microsoft.containerservice/managedclusters"
    );
    let listed = server.list_all(&lower_list);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], CREATED_PATH);
    let upper_list = format!(
        "/SUBSCRIPTIONS/{SUBSCRIPTION}/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS"
    );
    assert_eq!(server.list_all(&upper_list).len(), 1);

    // A DELETE in another casing removes it.
    let lower = cased_cluster_path(str::to_lowercase, "My-RG", "MyCluster");
    assert_eq!(server.send(Method::DELETE, &lower, &[], None).status, 200);
    assert_eq!(server.get(CREATED_PATH).status, 404);
}

#[test]
fn any_casing_reaches_the_pool() {
    let (_dir, server) = start_with_cluster();
    let pool_id = format!("{CREATED_PATH}/agentPools/np1");
    let etag = server.get(&pool_id).etag();
    for case in casings() {
        let path = format!(
            "{}/{}/{}",
            cased_cluster_path(case, "My-RG", "MyCluster"),
            case("agentPools"),
            case("np1")
        );
        let reply = server.get(&path);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.etag(), etag, "{path}");
        assert_eq!(reply.body["id"], pool_id.as_str(), "{path}");
        assert_eq!(reply.body["name"], "np1", "{path}");
    }

    // A PUT and a PATCH through an upper-case name update the lower-case pool.
    let upper = format!("{CREATED_PATH}/AGENTPOOLS/NP1");
    let put = server.send(
        Method::PUT,
        &upper,
        &[("If-Match", &etag)],
        Some(&pool_body(7)),
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["name"], "np1");
    let patch = server.send(
        Method::PATCH,
        &upper,
        &[],
        Some(&json!({"properties": {"count": 8}})),
    );
    assert_eq!(patch.status, 200, "{}", patch.body);
    assert_eq!(patch.body["properties"]["count"], 8);
    let listed = server.list_all(&format!("{CREATED_PATH}/AgentPools"));
    assert_eq!(listed.len(), 1, "no second pool");
    assert_eq!(listed[0]["id"], pool_id.as_str());

    // An upper-case name cannot create a pool; a DELETE through it removes the existing one.
    let missing = format!("{CREATED_PATH}/agentPools/NP2");
    let create = server.put(&missing, &pool_body(1));
    assert_eq!(create.status, 400);
    assert_eq!(create.error_code(), "InvalidResourceName");
    assert_eq!(server.get(&missing).status, 404);
    assert_eq!(server.send(Method::DELETE, &upper, &[], None).status, 200);
    assert_eq!(server.get(&pool_id).status, 404);
}

#[test]
fn names_differing_in_case_are_one_resource() {
    let (_dir, server) = start_with_cluster();
    let other_casing = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/MY-RG/providers/Microsoft.ContainerService/managedClusters/MYCLUSTER"
    );
    let create = server.send(
        Method::PUT,
        &other_casing,
        &[("If-None-Match", "*")],
        Some(&cluster_body(&[])),
    );
    assert_eq!(
        create.status, 412,
        "the cluster exists under another casing"
    );
    let subscription_list = format!(
        "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ContainerService/managedClusters"
    );
    assert_eq!(server.list_all(&subscription_list).len(), 1);
}

#[test]
fn other_paths_and_methods_are_rejected() {
    let (_dir, server) = start_with_cluster();
    let base = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/My-RG");
    for path in [
        "/".to_owned(),
        "/subscriptions".to_owned(),
        base.clone(),
        format!("{base}/providers/Microsoft.Compute/virtualMachines/vm1"),
        format!("{CREATED_PATH}/agentPools/np1/extra"),
        format!("{CREATED_PATH}/upgradeProfiles/default"),
    ] {
        let reply = server.get(&path);
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.error_code(), "InvalidResourceType", "{path}");
    }

    for (method, path) in [
        (Method::POST, CREATED_PATH.to_owned()),
        (Method::PUT, format!("{CREATED_PATH}/agentPools")),
        (
            Method::DELETE,
            format!(
                "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ContainerService/managedClusters"
            ),
        ),
    ] {
        let reply = server.send(method.clone(), &path, &[], Some(&json!({})));
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.error_code(), "MethodNotAllowed", "{method} {path}");
        let allow = reply.headers.get("allow").expect("Allow header");
        assert!(
            allow.to_str().unwrap().starts_with("GET, HEAD"),
            "{allow:?}"
        );
    }

    // Health probes need no api-version.
    let health = server.get_url(&server.raw_url("/healthz"));
    assert_eq!(health.status, 200);
    let ready = server.get_url(&server.raw_url("/readyz"));
    assert_eq!(ready.status, 200);
}

#[test]
fn head_is_get_without_body() {
    let (_dir, server) = start_with_cluster();
    let get = server.get(CREATED_PATH);
    let head = server.send(Method::HEAD, CREATED_PATH, &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.body, serde_json::Value::Null);
    assert_eq!(head.etag_header(), get.etag_header());

    let etag = get.etag_header().unwrap();
    let not_modified = server.send(
        Method::HEAD,
        CREATED_PATH,
        &[("If-None-Match", &etag)],
        None,
    );
    assert_eq!(not_modified.status, 304);
    let missing = server.send(Method::HEAD, &format!("{CREATED_PATH}x"), &[], None);
    assert_eq!(missing.status, 404);
    let list = server.send(
        Method::HEAD,
        &format!("{CREATED_PATH}/agentPools"),
        &[],
        None,
    );
    assert_eq!(list.status, 200);
}

#[test]
fn request_id_headers() {
    let (_dir, server) = start_with_cluster();
    let client_id = "4d3c2b1a-0000-4000-8000-000000000001";
    let reply = server.send(
        Method::GET,
        CREATED_PATH,
        &[("x-ms-client-request-id", client_id)],
        None,
    );
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(header("x-ms-client-request-id").as_deref(), Some(client_id));
    assert_eq!(
        header("x-ms-correlation-request-id").as_deref(),
        Some(client_id)
    );
    let request_id = header("x-ms-request-id").expect("x-ms-request-id");
    assert_ne!(request_id, client_id);

    // Errors carry the headers too; without a client id the correlation id is the request id.
    let error = server.get(&format!("{CREATED_PATH}x"));
    assert_eq!(error.status, 404);
    let request_id = error
        .headers
        .get("x-ms-request-id")
        .expect("x-ms-request-id");
    assert_eq!(
        error.headers.get("x-ms-correlation-request-id"),
        Some(request_id)
    );
    assert_eq!(error.headers.get("x-ms-client-request-id"), None);
}

#[test]
fn query_names_in_any_case() {
    let (_dir, server) = start_with_cluster();
    let url = server.raw_url(&format!("{CREATED_PATH}?API-Version=2026-08-01"));
    assert_eq!(server.get_url(&url).status, 200);
}
