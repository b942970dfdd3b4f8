//! CI guards on the workspace's shape (`cargo metadata`): the pure crates depend on no runtime
//! or IO crate, however deep, and every crate takes the shared `[workspace.lints]`.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Crates that make decisions and never block: no networking, no clock, no runtime.
const PURE: &[&str] = &[
    "assist-policy",
    "assist-session",
    "assist-relay-proto",
    "assist-screen",
    "assist-graph",
];

/// Runtime, networking, TLS, HTTP and database crates a pure crate must not reach.
const IO: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-rustls",
    "mio",
    "socket2",
    "async-std",
    "futures-executor",
    "hyper",
    "hyper-util",
    "axum",
    "tower",
    "reqwest",
    "h2",
    "quinn",
    "quinn-udp",
    "rustls",
    "sqlx",
    "libsqlite3-sys",
    "tracing-subscriber",
    "getrandom",
];

/// Crates a pure crate must not reach either: concurrent maps belong with the stores, not with
/// the machines (`assist-live` holds the in-process live state).
const NOT_PURE: &[&str] = &["dashmap"];

/// The host's target triple (`rustc -vV`), so metadata needs only the packages this machine
/// builds (and works offline).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &host_triple()])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn pure_crates_depend_on_no_runtime_or_io_crate() {
    let meta = metadata();
    let name_of: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal (not dev or build) dependency edges, by package id.
    let mut normal: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap())
            .collect();
        normal.insert(node["id"].as_str().unwrap(), deps);
    }
    let mut checked = 0;
    for (id, name) in &name_of {
        if !PURE.contains(name) {
            continue;
        }
        checked += 1;
        // Every crate reachable through normal dependencies, with the path that reaches it.
        let mut seen = BTreeSet::new();
        let mut stack = vec![(*id, name.to_string())];
        while let Some((at, path)) = stack.pop() {
            for dep in normal.get(at).into_iter().flatten() {
                if seen.insert(*dep) {
                    let dep_name = name_of[dep];
                    let path = format!("{path} → {dep_name}");
                    assert!(
                        !IO.contains(&dep_name),
                        "pure crate {name} reaches the IO crate {dep_name}: {path}"
                    );
                    assert!(
                        !NOT_PURE.contains(&dep_name),
                        "pure crate {name} reaches {dep_name}: {path}"
                    );
                    stack.push((dep, path));
                }
            }
        }
    }
    assert_eq!(checked, PURE.len(), "every pure crate is in the workspace");
}

#[test]
fn the_live_state_stores_are_a_crate_of_their_own() {
    let meta = metadata();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let live = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "assist-live" && members.contains(p["id"].as_str().unwrap()))
        .expect("assist-live is a workspace member");
    let manifest = std::fs::read_to_string(live["manifest_path"].as_str().unwrap()).unwrap();
    let table: toml::Table = manifest.parse().unwrap();
    assert_eq!(
        table
            .get("lints")
            .and_then(|l| l.get("workspace"))
            .and_then(|w| w.as_bool()),
        Some(true),
        "assist-live must have `[lints] workspace = true`"
    );
    let deps: BTreeSet<&str> = live["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        deps.contains("assist-session") && deps.contains("dashmap"),
        "assist-live implements the session crate's port on dashmap: {deps:?}"
    );
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    let meta = metadata();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for p in meta["packages"].as_array().unwrap() {
        if !members.contains(p["id"].as_str().unwrap()) {
            continue;
        }
        let manifest = std::fs::read_to_string(p["manifest_path"].as_str().unwrap()).unwrap();
        let table: toml::Table = manifest.parse().unwrap();
        assert_eq!(
            table
                .get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(|w| w.as_bool()),
            Some(true),
            "{} must have `[lints] workspace = true`",
            p["name"]
        );
    }
}
