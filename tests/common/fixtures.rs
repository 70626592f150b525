//! The committed fixture databases of every schema version, one-shot runs of the binary, and a
//! check that a running server serves every record of a fixture with its eTag and content.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Server;

/// How long a one-shot command such as `akstore migrate` may run before a test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Directory of the committed fixture databases.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/fixtures")
}

/// Copies the fixture `name` (for example `v1.redb`) into `dir`, so a test never changes the
/// committed file, and returns the copy's path.
pub fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let source = fixtures_dir().join(name);
    let target = dir.join(name);
    std::fs::copy(&source, &target)
        .unwrap_or_else(|error| panic!("copy fixture {}: {error}", source.display()));
    target
}

/// The records that the fixture of schema `version` holds, as its own code read them.
pub fn expected_records(version: u64) -> Value {
    let path = fixtures_dir().join(format!("v{version}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The whole content of a file, to compare before and after a command that must not write.
pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// Runs the `akstore` binary with `args` and extra environment `env` until it exits, and
/// returns its output. Panics when it runs longer than [`COMMAND_TIMEOUT`].
pub fn run_akstore(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_akstore"))
        .args(args)
        .env_remove("AKSTORE_DATA")
        .env_remove("AKSTORE_LISTEN")
        .env_remove("AKSTORE_NO_MIGRATE")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn akstore");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait().expect("wait for akstore").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect the output");
            panic!(
                "akstore {args:?} did not exit within {COMMAND_TIMEOUT:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect the output")
}

/// Checks that `server` serves every cluster and pool of `expected` with its stored eTag,
/// location, tags and properties, and that the deleted ones are not found.
pub fn assert_serves_records(server: &Server, expected: &Value) {
    for cluster in expected["clusters"].as_array().expect("clusters") {
        let path = cluster_path(
            text(&cluster["subscription"]),
            text(&cluster["resource_group"]),
            text(&cluster["name"]),
        );
        let served = server.get(&path);
        assert_eq!(served.status, 200, "GET {path}: {}", served.body);
        let body = &served.body;
        assert_eq!(body["eTag"], cluster["etag"], "{path}");
        assert_eq!(body["name"], cluster["name"], "{path}");
        assert_eq!(body["location"], cluster["location"], "{path}");
        match cluster["tags"].as_str() {
            Some(tags) => assert_eq!(body["tags"], parse(tags), "{path}"),
            None => assert!(
                body.get("tags").is_none_or(Value::is_null),
                "{path}: {body}"
            ),
        }
        assert_fields(
            &body["properties"],
            &parse(text(&cluster["properties"])),
            &path,
        );
        assert_fields(body, &parse(text(&cluster["extra"])), &path);

        let pools = cluster["pools"].as_array().expect("pools");
        let listed = server.list_all(&format!("{path}/agentPools"));
        assert_eq!(listed.len(), pools.len(), "pools of {path}");
        for pool in pools {
            let pool_path = format!("{path}/agentPools/{}", text(&pool["name"]));
            let served = server.get(&pool_path);
            assert_eq!(served.status, 200, "GET {pool_path}: {}", served.body);
            assert_eq!(
                served.body["properties"]["eTag"], pool["etag"],
                "{pool_path}"
            );
            assert_fields(
                &served.body["properties"],
                &parse(text(&pool["properties"])),
                &pool_path,
            );
        }
    }

    for absent in expected["absent_clusters"]
        .as_array()
        .expect("absent_clusters")
    {
        let path = cluster_path(text(&absent[0]), text(&absent[1]), text(&absent[2]));
        assert_eq!(server.get(&path).status, 404, "{path} is deleted");
    }
    for absent in expected["absent_pools"].as_array().expect("absent_pools") {
        let path = format!(
            "{}/agentPools/{}",
            cluster_path(text(&absent[0]), text(&absent[1]), text(&absent[2])),
            text(&absent[3])
        );
        assert_eq!(server.get(&path).status, 404, "{path} is deleted");
    }
}

/// Checks that every field of the stored object `stored` appears in `served` with its value.
fn assert_fields(served: &Value, stored: &Value, path: &str) {
    for (name, value) in stored.as_object().expect("stored JSON text is an object") {
        assert_eq!(&served[name], value, "{path}: field {name}");
    }
}

fn cluster_path(subscription: &str, resource_group: &str, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/\
         Microsoft.ContainerService/managedClusters/{name}"
    )
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("{text} is not JSON: {error}"))
}
