//! Proves export and import over the real binary: a database exported, imported into a new
//! file and exported again gives the same records, and a server on the imported file serves
//! the same resources with the same eTags, which still work as conditions. Import rejects a
//! non-empty target, a malformed line (naming it) and a truncated file, and changes nothing.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{Server, akstore_command, cluster_path, etag_of, json_body, pool_path};
use reqwest::Method;
use serde_json::{Value, json};

fn export(data: &Path, out: Option<&Path>) -> Output {
    let mut command = akstore_command();
    command.arg("export").arg("--data").arg(data);
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    command.output().unwrap()
}

fn import(data: &Path, input: &Path) -> Output {
    akstore_command()
        .arg("import")
        .arg("--data")
        .arg(data)
        .arg("--in")
        .arg(input)
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Resource paths of the fixture, for comparing GETs before and after.
fn fixture_paths() -> Vec<String> {
    vec![
        cluster_path("rg1", "Alpha"),
        pool_path("rg1", "Alpha", "np1"),
        pool_path("rg1", "Alpha", "np2"),
        pool_path("rg1", "Alpha", "np3"),
        cluster_path("rg2", "beta"),
        pool_path("rg2", "beta", "np1"),
    ]
}

/// Writes clusters with pools, non-ASCII values, a deleted cluster, a pool write and a patch;
/// returns the resources as GET returns them.
fn write_fixture(server: &Server) -> Vec<Value> {
    let put = |path: &str, body: Value| {
        let response = server
            .request(Method::PUT, path)
            .json(&body)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    };
    put(
        &cluster_path("rg1", "Alpha"),
        json!({
            "location": "westeurope",
            "tags": { "team": "zürich ✓", "z": "1", "a": "2" },
            "sku": { "name": "Base", "tier": "Free" },
            "properties": {
                "kubernetesVersion": "1.33",
                "agentPoolProfiles": [{ "name": "np1", "count": 3 }, { "name": "np2" }]
            }
        }),
    );
    put(
        &cluster_path("rg2", "beta"),
        json!({ "location": "eastus", "properties": { "agentPoolProfiles": [{ "name": "np1" }] } }),
    );
    put(
        &cluster_path("rg2", "gone"),
        json!({ "location": "eastus" }),
    );
    let deleted = server
        .request(Method::DELETE, &cluster_path("rg2", "gone"))
        .send()
        .unwrap();
    assert!(deleted.status().is_success());
    put(
        &pool_path("rg1", "Alpha", "np3"),
        json!({ "properties": { "count": 1, "mode": "User", "note": "日本語" } }),
    );
    let patched = server
        .request(Method::PATCH, &cluster_path("rg2", "beta"))
        .json(&json!({ "tags": { "patched": "yes" } }))
        .send()
        .unwrap();
    assert_eq!(patched.status(), 200);

    fixture_paths()
        .iter()
        .map(|path| json_body(server.request(Method::GET, path).send().unwrap()))
        .collect()
}

/// Parses the lines of an export and removes the header's `exportedAt`.
fn comparable_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            if let Some(header) = value.get_mut("header") {
                header.as_object_mut().unwrap().remove("exportedAt");
            }
            value
        })
        .collect()
}

#[test]
fn export_then_import_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.redb");
    let server = Server::start(&source, &[]);
    let resources = write_fixture(&server);
    assert_eq!(server.stop(), Some(0));

    let first = dir.path().join("first.jsonl");
    let exported = export(&source, Some(&first));
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(stderr(&exported).contains("exported 2 clusters and 4 pools at revision 6"));
    let first_text = std::fs::read_to_string(&first).unwrap();
    let lines = comparable_lines(&first_text);
    assert_eq!(lines.len(), 1 + 2 + 4);
    let header = &lines[0]["header"];
    assert_eq!(header["format"], "akstore-export");
    assert_eq!(header["revision"], 6);
    assert_eq!(
        (header["clusters"].as_u64(), header["pools"].as_u64()),
        (Some(2), Some(4))
    );
    assert!(first_text.contains("zürich ✓"), "{first_text}");
    assert!(first_text.contains("日本語"), "{first_text}");

    let target = dir.path().join("target.redb");
    let imported = import(&target, &first);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(stderr(&imported).contains("imported 2 clusters and 4 pools at revision 6"));

    // Export to stdout this time; only the export time may differ.
    let second = export(&target, None);
    assert!(second.status.success(), "{}", stderr(&second));
    let second_text = String::from_utf8(second.stdout).unwrap();
    assert_eq!(comparable_lines(&second_text), lines);
    let records = |text: &str| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        records(&second_text),
        records(&first_text),
        "records differ byte-wise"
    );

    let server = Server::start(&target, &[]);
    for (path, before) in fixture_paths().iter().zip(&resources) {
        let after = json_body(server.request(Method::GET, path).send().unwrap());
        assert_eq!(&after, before, "{path}");
    }
    // The kept eTag still works as a condition, and the revision continues after the import's.
    let etag = etag_of(&resources[4]);
    let updated = server
        .request(Method::PATCH, &cluster_path("rg2", "beta"))
        .header("If-Match", format!("\"{etag}\""))
        .json(&json!({ "tags": { "after": "import" } }))
        .send()
        .unwrap();
    assert_eq!(updated.status(), 200);
    assert_eq!(server.stop(), Some(0));
    let third = export(&target, None);
    let third_lines = comparable_lines(&String::from_utf8(third.stdout).unwrap());
    assert_eq!(third_lines[0]["header"]["revision"], 7);
    let beta = third_lines
        .iter()
        .find(|line| line["cluster"]["name"] == "beta")
        .unwrap();
    assert_eq!(beta["cluster"]["revision"], 7);
}

#[test]
fn import_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.redb");
    let server = Server::start(&source, &[]);
    let resources = write_fixture(&server);
    assert_eq!(server.stop(), Some(0));
    let exported = export(&source, None);
    assert!(exported.status.success());

    let target = dir.path().join("target.redb");
    let mut child = akstore_command()
        .args(["import", "--data"])
        .arg(&target)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&exported.stdout)
        .unwrap();
    let imported = child.wait_with_output().unwrap();
    assert!(imported.status.success(), "{}", stderr(&imported));

    let server = Server::start(&target, &[]);
    let alpha = json_body(
        server
            .request(Method::GET, &cluster_path("rg1", "Alpha"))
            .send()
            .unwrap(),
    );
    assert_eq!(alpha, resources[0]);
}

#[test]
fn import_rejects_a_non_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.redb");
    let server = Server::start(&source, &[]);
    write_fixture(&server);
    assert_eq!(server.stop(), Some(0));
    let file = dir.path().join("export.jsonl");
    assert!(export(&source, Some(&file)).status.success());
    let before = export(&source, None).stdout;
    let bytes_before = std::fs::read(&source).unwrap();

    let imported = import(&source, &file);
    assert!(!imported.status.success());
    assert!(
        std::fs::read(&source).unwrap() == bytes_before,
        "the rejected import changed the file's bytes"
    );
    assert!(
        stderr(&imported).contains("is not empty"),
        "{}",
        stderr(&imported)
    );
    let after = export(&source, None).stdout;
    assert_eq!(
        comparable_lines(&String::from_utf8(after).unwrap()),
        comparable_lines(&String::from_utf8(before).unwrap())
    );
}

#[test]
fn import_rejects_a_malformed_line_by_number() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.redb");
    let server = Server::start(&source, &[]);
    write_fixture(&server);
    assert_eq!(server.stop(), Some(0));
    let text = String::from_utf8(export(&source, None).stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let cases: Vec<(String, &str)> = vec![
        // Broken JSON on line 3.
        (
            [&lines[..2], &["{\"cluster\": {"], &lines[3..]]
                .concat()
                .join("\n"),
            "line 3, column 13: invalid record: EOF while parsing an object",
        ),
        // A pool before its cluster: the first pool line moved to line 2.
        (
            [&lines[..1], &lines[3..4], &lines[1..3], &lines[4..]]
                .concat()
                .join("\n"),
            "line 2: the pool",
        ),
        // A record whose key does not match its names.
        (
            [
                &lines[..1],
                &[lines[1].replacen("\"key\":\"", "\"key\":\"x", 1).as_str()],
                &lines[2..],
            ]
            .concat()
            .join("\n"),
            "line 2: the key",
        ),
        // The last line missing.
        (lines[..lines.len() - 1].join("\n"), "may be truncated"),
        // No header.
        (
            lines[1..].join("\n"),
            "line 1: the first line must be the export header",
        ),
    ];
    for (index, (input, expected)) in cases.iter().enumerate() {
        let input_file = dir.path().join(format!("case{index}.jsonl"));
        std::fs::write(&input_file, input).unwrap();
        let target = dir.path().join(format!("target{index}.redb"));
        let imported = import(&target, &input_file);
        assert!(!imported.status.success(), "case {index} was imported");
        assert!(
            stderr(&imported).contains(expected),
            "case {index}: expected {expected:?} in:\n{}",
            stderr(&imported)
        );
        assert!(!target.exists(), "case {index} left a database behind");
    }
}

#[test]
fn export_reports_a_database_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let server = Server::start(&data, &[]);
    let exported = export(&data, None);
    assert!(!exported.status.success());
    assert!(
        stderr(&exported).contains("locked"),
        "{}",
        stderr(&exported)
    );
    drop(server);

    let missing = export(&dir.path().join("missing.redb"), None);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
}
