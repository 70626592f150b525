//! Proves list paging over a real socket with a page size of 3: lists by subscription, by
//! resource group and of a cluster's pools follow the absolute `nextLink` until it is null and
//! return every item once, in key order, without items of other scopes; `$top` shrinks pages;
//! a changed or foreign `$skipToken` is 400.

mod common;

use std::collections::HashSet;

use common::{
    Server, cluster_body, cluster_path, pool_body, pool_path, resource_group_clusters_path,
    start_fresh, subscription_clusters_path,
};
use serde_json::Value;

const PAGE_SIZE: usize = 3;
const OTHER_SUBSCRIPTION: &str = "00000000-0000-0000-0000-0000000000bb";

/// Starts a server with a page size of 3 holding, in `SUBSCRIPTION`, 5 clusters in `rg-a`, 4 in
/// `rg-b` (whose name extends `rg`), 1 in `rg`, and 7 pools in `rg-a/c03`; plus a cluster in
/// another subscription.
fn start_populated() -> (tempfile::TempDir, Server) {
    let (dir, server) = start_fresh(&["--page-size", &PAGE_SIZE.to_string()]);
    for (rg, count) in [("rg-a", 5), ("rg-b", 4), ("rg", 1)] {
        for index in 0..count {
            let reply = server.put(
                &cluster_path(rg, &format!("c{index:02}")),
                &cluster_body(&[]),
            );
            assert_eq!(reply.status, 201);
        }
    }
    for index in 0..7 {
        let reply = server.put(
            &pool_path("rg-a", "c03", &format!("np{index}")),
            &pool_body(1),
        );
        assert_eq!(reply.status, 201);
    }
    let other = format!(
        "/subscriptions/{OTHER_SUBSCRIPTION}/resourceGroups/rg-a/providers/Microsoft.ContainerService/managedClusters/c00"
    );
    assert_eq!(server.put(&other, &cluster_body(&[])).status, 201);
    (dir, server)
}

/// Follows a list from its first page; returns the pages' item ids and checks each page's
/// shape and `nextLink`.
fn walk(server: &Server, path: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut reply = server.get(path);
    loop {
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        let items = reply.body["value"].as_array().expect("value array");
        assert!(items.len() <= PAGE_SIZE, "page of {} items", items.len());
        pages.push(ids(items));
        match &reply.body["nextLink"] {
            Value::Null => break,
            Value::String(next) => {
                let prefix = format!("http://{}{path}?", server.addr);
                assert!(
                    next.starts_with(&prefix),
                    "nextLink {next} is not under {prefix}"
                );
                assert_eq!(items.len(), PAGE_SIZE, "a page with a nextLink is full");
                reply = server.get_url(next);
            }
            other => panic!("nextLink {other}"),
        }
        assert!(pages.len() <= 10, "the list does not end");
    }
    pages
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Asserts that `pages` hold exactly `expected`, in order, each once.
fn assert_pages(pages: &[Vec<String>], expected: &[String]) {
    let flat: Vec<String> = pages.concat();
    let unique: HashSet<&String> = flat.iter().collect();
    assert_eq!(unique.len(), flat.len(), "duplicates in {flat:?}");
    assert_eq!(flat, expected);
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let mut expected_sizes = vec![PAGE_SIZE; expected.len() / PAGE_SIZE];
    if !expected.len().is_multiple_of(PAGE_SIZE) || expected.is_empty() {
        expected_sizes.push(expected.len() % PAGE_SIZE);
    }
    assert_eq!(sizes, expected_sizes, "page sizes");
}

fn cluster_ids(rg: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|index| cluster_path(rg, &format!("c{index:02}")))
        .collect()
}

#[test]
fn subscription_list_pages() {
    let (_dir, server) = start_populated();
    let pages = walk(&server, &subscription_clusters_path());
    // Keys order `rg-a` and `rg-b` before `rg`, because `-` sorts before the separator `/`.
    let expected = [
        cluster_ids("rg-a", 5),
        cluster_ids("rg-b", 4),
        cluster_ids("rg", 1),
    ]
    .concat();
    assert_pages(&pages, &expected);
}

#[test]
fn resource_group_list_pages() {
    let (_dir, server) = start_populated();
    for (rg, count) in [("rg-a", 5), ("rg-b", 4), ("rg", 1), ("rg-none", 0)] {
        let pages = walk(&server, &resource_group_clusters_path(rg));
        assert_pages(&pages, &cluster_ids(rg, count));
    }
}

#[test]
fn pool_list_pages() {
    let (_dir, server) = start_populated();
    let cluster = cluster_path("rg-a", "c03");
    let pages = walk(&server, &format!("{cluster}/agentPools"));
    let expected: Vec<String> = (0..7)
        .map(|index| pool_path("rg-a", "c03", &format!("np{index}")))
        .collect();
    assert_pages(&pages, &expected);

    // Exactly one full page: no nextLink and no empty page after it.
    for index in 0..PAGE_SIZE {
        let reply = server.put(
            &pool_path("rg-a", "c04", &format!("np{index}")),
            &pool_body(1),
        );
        assert_eq!(reply.status, 201);
    }
    let pages = walk(
        &server,
        &format!("{}/agentPools", cluster_path("rg-a", "c04")),
    );
    assert_eq!(pages.len(), 1);

    // A cluster without pools lists none; a missing cluster is 404.
    let pages = walk(
        &server,
        &format!("{}/agentPools", cluster_path("rg-a", "c00")),
    );
    assert_pages(&pages, &[]);
    let missing = server.get(&format!("{}/agentPools", cluster_path("rg-a", "missing")));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "ParentResourceNotFound");
}

#[test]
fn list_items_match_their_resources() {
    let (_dir, server) = start_populated();
    let cluster = cluster_path("rg-a", "c03");
    for item in server.list_all(&resource_group_clusters_path("rg-a")) {
        let id = item["id"].as_str().unwrap();
        assert_eq!(item, server.get(id).body, "{id}");
    }
    for item in server.list_all(&format!("{cluster}/agentPools")) {
        let id = item["id"].as_str().unwrap();
        assert_eq!(item, server.get(id).body, "{id}");
    }
}

#[test]
fn top_shrinks_pages() {
    let (_dir, server) = start_populated();
    let path = resource_group_clusters_path("rg-a");
    let mut reply = server.get(&format!("{path}?$top=2"));
    let mut seen = Vec::new();
    loop {
        assert_eq!(reply.status, 200);
        let items = reply.body["value"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(ids(items));
        match reply.body["nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.contains("%24top=2") || next.contains("$top=2"),
                    "{next}"
                );
                reply = server.get_url(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, cluster_ids("rg-a", 5));

    // A $top above the page size is capped by it.
    let capped = server.get(&format!("{path}?$top=50"));
    assert_eq!(capped.body["value"].as_array().unwrap().len(), PAGE_SIZE);
}

#[test]
fn changed_skip_token_is_rejected() {
    let (_dir, server) = start_populated();
    let path = subscription_clusters_path();
    let first = server.get(&path);
    let next = first.body["nextLink"]
        .as_str()
        .expect("nextLink")
        .to_owned();
    let url = reqwest::Url::parse(&next).unwrap();
    let token = url
        .query_pairs()
        .find(|(name, _)| name == "$skipToken")
        .map(|(_, value)| value.into_owned())
        .expect("$skipToken in nextLink");

    let mut changed_tokens = vec![
        String::new(),
        "garbage".to_owned(),
        token[..token.len() - 1].to_owned(),
        format!("{token}A"),
    ];
    for index in [0, token.len() / 2, token.len() - 1] {
        let mut bytes = token.clone().into_bytes();
        bytes[index] = if bytes[index] == b'x' { b'y' } else { b'x' };
        changed_tokens.push(String::from_utf8(bytes).unwrap());
    }
    // A valid token of another list: the pools of a cluster.
    let pools = server.get(&format!("{}/agentPools", cluster_path("rg-a", "c03")));
    let pool_next = reqwest::Url::parse(pools.body["nextLink"].as_str().unwrap()).unwrap();
    let (_, pool_token) = pool_next
        .query_pairs()
        .find(|(name, _)| name == "$skipToken")
        .unwrap();
    changed_tokens.push(pool_token.into_owned());

    for changed in changed_tokens {
        let mut url = server.url(&path).parse::<reqwest::Url>().unwrap();
        url.query_pairs_mut().append_pair("$skipToken", &changed);
        let reply = server.get_url(url.as_str());
        assert_eq!(reply.status, 400, "$skipToken {changed:?}: {}", reply.body);
        assert_eq!(
            reply.error_code(),
            "InvalidSkipToken",
            "$skipToken {changed}"
        );
    }

    // The unchanged token still works.
    assert_eq!(server.get_url(&next).status, 200);
}
