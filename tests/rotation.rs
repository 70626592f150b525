//! Proves the eTag rotation rules over a real socket: which writes give the cluster and which
//! pools a new eTag, and that identical bodies still rotate. Along the way it checks that the
//! pools in a cluster's `agentPoolProfiles` carry the same eTags as the pool resources, and
//! that a cluster PUT or PATCH naming pools creates, replaces or merges them while keeping the
//! pools it does not name.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{Server, cluster_body, cluster_path, pool_body, pool_path, start_fresh};
use reqwest::Method;
use serde_json::{Value, json};

/// The eTags of a cluster: its own, and each pool's by name as the pool resources show them.
#[derive(Debug, PartialEq)]
struct Etags {
    cluster: String,
    pools: BTreeMap<String, String>,
}

/// Reads the eTags of cluster `name` in `rg1`, and checks that its `agentPoolProfiles` agree
/// with the pool resources.
fn etags(server: &Server, name: &str) -> Etags {
    let cluster = server.get(&cluster_path("rg1", name));
    assert_eq!(cluster.status, 200, "{}", cluster.body);
    let mut pools = BTreeMap::new();
    for profile in cluster.body["properties"]["agentPoolProfiles"]
        .as_array()
        .expect("agentPoolProfiles")
    {
        let pool_name = profile["name"].as_str().expect("pool name").to_owned();
        let pool = server.get(&pool_path("rg1", name, &pool_name));
        assert_eq!(pool.status, 200, "{pool_name}: {}", pool.body);
        assert_eq!(
            profile["eTag"], pool.body["properties"]["eTag"],
            "agentPoolProfiles entry of {pool_name}"
        );
        pools.insert(pool_name, pool.etag());
    }
    let listed = server.list_all(&format!("{}/agentPools", cluster_path("rg1", name)));
    assert_eq!(listed.len(), pools.len(), "pool list of {name}");
    Etags {
        cluster: cluster.etag(),
        pools,
    }
}

/// Asserts that every eTag in `after` differs from the one in `before` and from each other.
fn assert_all_new(before: &Etags, after: &Etags) {
    assert_ne!(after.cluster, before.cluster, "cluster eTag");
    for (name, etag) in &before.pools {
        if let Some(new) = after.pools.get(name) {
            assert_ne!(new, etag, "eTag of pool {name}");
        }
    }
    assert_unique_v4(after);
}

/// Asserts that the eTags are distinct UUIDs of version 4.
fn assert_unique_v4(etags: &Etags) {
    let mut seen = HashSet::new();
    for etag in std::iter::once(&etags.cluster).chain(etags.pools.values()) {
        let parsed = uuid::Uuid::parse_str(etag).expect("eTag is a UUID");
        assert_eq!(parsed.get_version_num(), 4, "eTag {etag} is a UUID v4");
        assert!(seen.insert(etag.clone()), "eTag {etag} appears twice");
    }
}

#[test]
fn cluster_put_rotates_every_pool() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let created = server.put(&path, &cluster_body(&["np1", "np2"]));
    assert_eq!(created.status, 201);
    let first = etags(&server, "c1");
    assert_eq!(first.pools.len(), 2, "pools created by the same PUT");
    assert_eq!(created.etag(), first.cluster);
    // The PUT's own response shows the eTags of the pools it created.
    let profiles = created.body["properties"]["agentPoolProfiles"].clone();
    assert_eq!(
        profiles[0]["eTag"].as_str(),
        Some(first.pools["np1"].as_str())
    );
    assert_unique_v4(&first);

    // A pool written on its own, then a cluster PUT naming only a new pool: all rotate and all
    // stay.
    let np3 = server.put(&pool_path("rg1", "c1", "np3"), &pool_body(1));
    assert_eq!(np3.status, 201);
    let before = etags(&server, "c1");
    let updated = server.put(&path, &cluster_body(&["np4"]));
    assert_eq!(updated.status, 200);
    let after = etags(&server, "c1");
    let names: Vec<&str> = after.pools.keys().map(String::as_str).collect();
    assert_eq!(names, ["np1", "np2", "np3", "np4"]);
    assert_all_new(&before, &after);
}

#[test]
fn cluster_patch_rotates_every_pool() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    assert_eq!(
        server.put(&path, &cluster_body(&["np1", "np2"])).status,
        201
    );
    let before = etags(&server, "c1");
    let reply = server.send(
        Method::PATCH,
        &path,
        &[],
        Some(&json!({"tags": {"a": "b"}})),
    );
    assert_eq!(reply.status, 200);
    let after = etags(&server, "c1");
    assert_all_new(&before, &after);
    assert_eq!(reply.etag(), after.cluster);
}

#[test]
fn pool_writes_rotate_only_that_pool() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let created = server.put(&path, &cluster_body(&["np1", "np2", "np3"]));
    assert_eq!(created.status, 201);

    let before = etags(&server, "c1");
    let put = server.put(&pool_path("rg1", "c1", "np1"), &pool_body(5));
    assert_eq!(put.status, 200);
    let after = etags(&server, "c1");
    assert_only_pool_rotated(&before, &after, "np1", "PUT");

    let before = after;
    let patch = server.send(
        Method::PATCH,
        &pool_path("rg1", "c1", "np2"),
        &[],
        Some(&json!({"properties": {"count": 4}})),
    );
    assert_eq!(patch.status, 200);
    let after = etags(&server, "c1");
    assert_only_pool_rotated(&before, &after, "np2", "PATCH");

    let before = after;
    let delete = server.send(Method::DELETE, &pool_path("rg1", "c1", "np3"), &[], None);
    assert_eq!(delete.status, 200);
    let after = etags(&server, "c1");
    assert_eq!(after.pools.len(), 2);
    assert_only_pool_rotated(&before, &after, "np3", "DELETE");
}

/// Asserts that a `verb` of pool `changed` left the cluster's eTag and every other pool's
/// eTag as they were, and changed or removed the eTag of `changed`.
fn assert_only_pool_rotated(before: &Etags, after: &Etags, changed: &str, verb: &str) {
    assert_eq!(
        after.cluster, before.cluster,
        "cluster eTag after a pool {verb}"
    );
    for (name, etag) in &before.pools {
        if name == changed {
            assert_ne!(after.pools.get(name), Some(etag), "{name} after its {verb}");
        } else {
            assert_eq!(
                after.pools.get(name),
                Some(etag),
                "{name} after a {verb} of {changed}"
            );
        }
    }
}

#[test]
fn identical_writes_still_rotate() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let pool = pool_path("rg1", "c1", "np1");
    assert_eq!(server.put(&path, &cluster_body(&["np1"])).status, 201);

    let mut before = etags(&server, "c1");
    for _ in 0..2 {
        assert_eq!(server.put(&path, &cluster_body(&["np1"])).status, 200);
        let after = etags(&server, "c1");
        assert_all_new(&before, &after);
        before = after;
    }

    let empty_patch = server.send(Method::PATCH, &path, &[], Some(&json!({})));
    assert_eq!(empty_patch.status, 200);
    let after = etags(&server, "c1");
    assert_all_new(&before, &after);

    let pool_before = server.get(&pool).etag();
    let same = server.get(&pool).body;
    // The body read back, read-only fields included, written again unchanged.
    let rewritten = server.put(&pool, &same);
    assert_eq!(rewritten.status, 200);
    assert_ne!(rewritten.etag(), pool_before);
    let patched = server.send(Method::PATCH, &pool, &[], Some(&json!({})));
    assert_eq!(patched.status, 200);
    assert_ne!(patched.etag(), rewritten.etag());
    assert_eq!(
        without_etag(&patched.body["properties"]),
        without_etag(&rewritten.body["properties"]),
        "an empty PATCH changes only the eTag"
    );
}

#[test]
fn cluster_delete_removes_its_pools() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    assert_eq!(
        server.put(&path, &cluster_body(&["np1", "np2"])).status,
        201
    );
    assert_eq!(
        server
            .put(&cluster_path("rg1", "c2"), &cluster_body(&["np1"]))
            .status,
        201
    );

    let delete = server.send(Method::DELETE, &path, &[], None);
    assert_eq!(delete.status, 200);
    assert_eq!(server.get(&path).status, 404);
    for pool in ["np1", "np2"] {
        let reply = server.get(&pool_path("rg1", "c1", pool));
        assert_eq!(reply.status, 404);
        assert_eq!(reply.error_code(), "ParentResourceNotFound");
    }
    let list = server.get(&format!("{path}/agentPools"));
    assert_eq!(list.status, 404);

    // A cluster created again under the same name starts without the old pools.
    assert_eq!(server.put(&path, &cluster_body(&[])).status, 201);
    assert_eq!(etags(&server, "c1").pools.len(), 0);
    assert!(server.list_all(&format!("{path}/agentPools")).is_empty());

    // The other cluster and its pool are untouched.
    assert_eq!(etags(&server, "c2").pools.len(), 1);
}

#[test]
fn cluster_put_replaces_named_pools() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let body = json!({"location": "westeurope", "properties": {"agentPoolProfiles": [
        {"name": "np1", "count": 3, "vmSize": "Standard_D4s_v3"},
        {"name": "np2", "count": 1}
    ]}});
    assert_eq!(server.put(&path, &body).status, 201);

    // A PUT replaces the properties of the pools it names and keeps the others as they are.
    let body = json!({"location": "westeurope", "properties": {"agentPoolProfiles": [
        {"name": "np1", "count": 5, "eTag": "ignored", "provisioningState": "Failed"}
    ]}});
    assert_eq!(server.put(&path, &body).status, 200);
    let np1 = server.get(&pool_path("rg1", "c1", "np1")).body;
    assert_eq!(np1["properties"]["count"], 5);
    assert_eq!(
        np1["properties"].get("vmSize"),
        None,
        "a PUT replaces the pool's properties"
    );
    assert_eq!(np1["properties"]["provisioningState"], "Succeeded");
    assert_ne!(np1["properties"]["eTag"], "ignored");
    let np2 = server.get(&pool_path("rg1", "c1", "np2")).body;
    assert_eq!(np2["properties"]["count"], 1);
}

#[test]
fn cluster_patch_merges_named_pools() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let body = json!({"location": "westeurope", "tags": {"team": "a", "env": "dev"}, "properties": {
        "kubernetesVersion": "1.33",
        "networkProfile": {"networkPlugin": "azure", "podCidr": "10.0.0.0/16"},
        "agentPoolProfiles": [
            {"name": "np1", "count": 3, "vmSize": "Standard_D4s_v3", "nodeLabels": {"a": "1", "b": "2"}},
            {"name": "np2", "count": 1}
        ]
    }});
    assert_eq!(server.put(&path, &body).status, 201);

    let patch = json!({"tags": {"env": null, "owner": "b"}, "properties": {
        "networkProfile": {"podCidr": null},
        "agentPoolProfiles": [
            {"name": "np1", "count": 4, "nodeLabels": {"a": null, "c": "3"}},
            {"name": "np3", "count": 2}
        ]
    }});
    let reply = server.send(Method::PATCH, &path, &[], Some(&patch));
    assert_eq!(reply.status, 200, "{}", reply.body);

    let cluster = server.get(&path).body;
    assert_eq!(cluster["tags"], json!({"team": "a", "owner": "b"}));
    assert_eq!(cluster["location"], "westeurope");
    assert_eq!(cluster["properties"]["kubernetesVersion"], "1.33");
    assert_eq!(
        cluster["properties"]["networkProfile"],
        json!({"networkPlugin": "azure"})
    );

    // np1 merges the entry into its properties, np3 is created from its entry, np2 stays.
    let np1 = server.get(&pool_path("rg1", "c1", "np1")).body["properties"].clone();
    assert_eq!(np1["count"], 4);
    assert_eq!(np1["vmSize"], "Standard_D4s_v3");
    assert_eq!(np1["nodeLabels"], json!({"b": "2", "c": "3"}));
    let np3 = server.get(&pool_path("rg1", "c1", "np3"));
    assert_eq!(np3.status, 200);
    assert_eq!(np3.body["properties"]["count"], 2);
    let np2 = server.get(&pool_path("rg1", "c1", "np2")).body["properties"].clone();
    assert_eq!(np2["count"], 1);

    let profiles: Vec<&str> = reply.body["properties"]["agentPoolProfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|profile| profile["name"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["np1", "np2", "np3"]);
}

/// Returns a pool's properties without their eTag, for comparing two versions of one pool.
fn without_etag(properties: &Value) -> Value {
    let mut properties = properties.clone();
    properties
        .as_object_mut()
        .expect("properties object")
        .remove("eTag");
    properties
}
