//! Proves that every schema version's fixture, written by that version's own code, opens with
//! the current code and keeps every record, eTag, revision and timestamp. Each fixture is
//! checked as it was closed cleanly and as a crash left it. The expected records are the JSON
//! file that the same old code wrote beside the fixture.

mod support;

use akstore_migrations::FIRST_SCHEMA_VERSION;
use akstore_store::{
    CURRENT_SCHEMA_VERSION, Cluster, ClusterKey, ClusterScope, FileSchema, OpenError, OpenOptions,
    Pool, PoolKey, PoolLookup, Store, inspect_schema, migrate_file,
};
use serde_json::Value;
use support::{
    CURRENT_TABLES, copy_fixture, file_bytes, fixtures_dir, put_cluster, stored_schema_version,
    table_names,
};

fn expected_records(version: u64) -> Value {
    let path = fixtures_dir().join(format!("v{version}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let expected: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(expected["schema_version"], version, "{}", path.display());
    expected
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

fn assert_cluster(actual: &Cluster, expected: &Value) {
    let name = text(&expected["name"]);
    assert_eq!(
        actual.subscription,
        text(&expected["subscription"]),
        "{name}"
    );
    assert_eq!(
        actual.resource_group,
        text(&expected["resource_group"]),
        "{name}"
    );
    assert_eq!(actual.name, name);
    assert_eq!(actual.location, text(&expected["location"]), "{name}");
    assert_eq!(actual.tags.as_deref(), expected["tags"].as_str(), "{name}");
    assert_eq!(actual.properties, text(&expected["properties"]), "{name}");
    assert_eq!(actual.extra, text(&expected["extra"]), "{name}");
    assert_eq!(actual.etag.to_string(), text(&expected["etag"]), "{name}");
    assert_eq!(actual.revision, number(&expected["revision"]), "{name}");
    assert_eq!(actual.created_ms, number(&expected["created_ms"]), "{name}");
    assert_eq!(actual.changed_ms, number(&expected["changed_ms"]), "{name}");
}

fn assert_pool(actual: &Pool, expected: &Value) {
    let name = text(&expected["name"]);
    assert_eq!(actual.name, name);
    assert_eq!(actual.properties, text(&expected["properties"]), "{name}");
    assert_eq!(actual.etag.to_string(), text(&expected["etag"]), "{name}");
    assert_eq!(actual.revision, number(&expected["revision"]), "{name}");
    assert_eq!(actual.created_ms, number(&expected["created_ms"]), "{name}");
    assert_eq!(actual.changed_ms, number(&expected["changed_ms"]), "{name}");
}

fn key_of(expected: &Value) -> ClusterKey {
    ClusterKey {
        subscription: text(&expected["subscription"]).into(),
        resource_group: text(&expected["resource_group"]).into(),
        name: text(&expected["name"]).into(),
    }
}

/// Checks every record of `expected` through the store's reads, by key and by list.
fn assert_records(store: &Store, expected: &Value) {
    let clusters = expected["clusters"].as_array().unwrap();
    for expected_cluster in clusters {
        let key = key_of(expected_cluster);
        let view = store
            .get_cluster(&key)
            .unwrap()
            .unwrap_or_else(|| panic!("cluster {key:?} is missing"));
        assert_cluster(&view.cluster, expected_cluster);

        let expected_pools = expected_cluster["pools"].as_array().unwrap();
        assert_eq!(view.pools.len(), expected_pools.len(), "pools of {key:?}");
        for (pool, expected_pool) in view.pools.iter().zip(expected_pools) {
            assert_pool(pool, expected_pool);
            let lookup = store
                .get_pool(&PoolKey {
                    cluster: key.clone(),
                    name: pool.name.clone(),
                })
                .unwrap();
            let PoolLookup::Found(found) = lookup else {
                panic!("pool {} of {key:?} is missing: {lookup:?}", pool.name);
            };
            assert_pool(&found.pool, expected_pool);
        }
    }

    let mut listed = 0;
    for subscription in [
        "00000000-0000-0000-0000-00000000000a",
        "00000000-0000-0000-0000-00000000000b",
    ] {
        let page = store
            .list_clusters(&ClusterScope::Subscription(subscription.into()), None, 1000)
            .unwrap();
        listed += page.items.len();
    }
    assert_eq!(listed, clusters.len());

    for absent in expected["absent_clusters"].as_array().unwrap() {
        let key = ClusterKey {
            subscription: text(&absent[0]).into(),
            resource_group: text(&absent[1]).into(),
            name: text(&absent[2]).into(),
        };
        assert!(
            store.get_cluster(&key).unwrap().is_none(),
            "{key:?} is deleted"
        );
    }
    for absent in expected["absent_pools"].as_array().unwrap() {
        let key = PoolKey {
            cluster: ClusterKey {
                subscription: text(&absent[0]).into(),
                resource_group: text(&absent[1]).into(),
                name: text(&absent[2]).into(),
            },
            name: text(&absent[3]).into(),
        };
        let lookup = store.get_pool(&key).unwrap();
        assert!(
            matches!(lookup, PoolLookup::PoolMissing | PoolLookup::ClusterMissing),
            "{key:?} is deleted: {lookup:?}"
        );
    }

    let counts = store.counts().unwrap();
    assert_eq!(counts.revision, number(&expected["revision"]));
    assert_eq!(counts.clusters, number(&expected["cluster_count"]));
    assert_eq!(counts.pools, number(&expected["pool_count"]));
}

/// Opens a copy of a fixture with the current code, checks every record, and checks that a new
/// write continues the stored revision.
fn open_and_check(fixture: &str, version: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_fixture(fixture, dir.path());
    let expected = expected_records(version);
    assert_eq!(inspect_schema(&path).unwrap(), FileSchema::Version(version));

    let store = Store::open(&path).unwrap();
    assert_records(&store, &expected);
    store.write(put_cluster("after-upgrade", 1, &[])).unwrap();
    assert_eq!(
        store.counts().unwrap().revision,
        number(&expected["revision"]) + 1
    );
    drop(store);

    assert_eq!(stored_schema_version(&path), CURRENT_SCHEMA_VERSION);
    assert_eq!(table_names(&path), CURRENT_TABLES, "{fixture}");
}

#[test]
fn every_version_has_fixtures() {
    for version in FIRST_SCHEMA_VERSION..=CURRENT_SCHEMA_VERSION {
        for name in [
            format!("v{version}.redb"),
            format!("v{version}-unclean.redb"),
            format!("v{version}.json"),
        ] {
            let path = fixtures_dir().join(&name);
            assert!(path.is_file(), "fixture {} is missing", path.display());
        }
    }
}

#[test]
fn every_fixture_opens_with_records() {
    for version in FIRST_SCHEMA_VERSION..=CURRENT_SCHEMA_VERSION {
        open_and_check(&format!("v{version}.redb"), version);
    }
}

#[test]
fn every_unclean_fixture_opens_with_records() {
    for version in FIRST_SCHEMA_VERSION..=CURRENT_SCHEMA_VERSION {
        let name = format!("v{version}-unclean.redb");
        assert!(
            support::needs_repair(&fixtures_dir().join(&name)),
            "{name} must need crash repair"
        );
        open_and_check(&name, version);
    }
}

#[test]
fn older_fixture_without_migration_is_rejected_and_unchanged() {
    for version in FIRST_SCHEMA_VERSION..CURRENT_SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_fixture(&format!("v{version}.redb"), dir.path());
        let before = file_bytes(&path);

        let error = Store::open_with(&path, OpenOptions { migrate: false })
            .map(drop)
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, OpenError::OlderSchema { found, .. } if found == version),
            "{message}"
        );
        assert!(
            message.contains(&format!("akstore migrate --data {}", path.display())),
            "{message}"
        );
        assert!(
            file_bytes(&path) == before,
            "v{version} fixture was changed"
        );
    }
}

#[test]
fn migrate_file_upgrades_fixture_once() {
    for version in FIRST_SCHEMA_VERSION..CURRENT_SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let path = copy_fixture(&format!("v{version}.redb"), dir.path());

        let report = migrate_file(&path).unwrap();
        assert_eq!(report.from, version);
        assert_eq!(report.to, CURRENT_SCHEMA_VERSION);
        let steps: Vec<(u64, u64)> = report.steps.iter().map(|s| (s.from, s.to)).collect();
        let expected: Vec<(u64, u64)> = (version..CURRENT_SCHEMA_VERSION)
            .map(|from| (from, from + 1))
            .collect();
        assert_eq!(steps, expected);
        assert_eq!(stored_schema_version(&path), CURRENT_SCHEMA_VERSION);

        let again = migrate_file(&path).unwrap();
        assert!(again.steps.is_empty(), "a second run finds nothing to do");

        let store = Store::open_with(&path, OpenOptions { migrate: false }).unwrap();
        assert_records(&store, &expected_records(version));
    }
}

#[test]
fn fixtures_carry_their_own_version() {
    for version in FIRST_SCHEMA_VERSION..=CURRENT_SCHEMA_VERSION {
        let path = fixtures_dir().join(format!("v{version}.redb"));
        assert_eq!(stored_schema_version(&path), version, "{}", path.display());
    }
    assert_eq!(
        table_names(&fixtures_dir().join("v1.redb")),
        ["clusters", "meta", "pools"]
    );
}
