//! CI guards on the workspace's shape (`cargo metadata`): the pure crates depend on no runtime
//! or IO crate, however deep; the server does not build the clients (no sharer agent, no X11);
//! and every crate takes the shared `[workspace.lints]`.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

/// Crates that make decisions and never block: no networking, no clock, no runtime.
const PURE: &[&str] = &[
    "assist-policy",
    "assist-session",
    "assist-relay-proto",
    "assist-screen",
    "assist-graph",
    "assist-ws",
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

/// The packages by id, and the normal (not dev or build) dependency edges between them.
struct Graph {
    name_of: HashMap<String, String>,
    normal: HashMap<String, Vec<String>>,
}

impl Graph {
    fn of(meta: &Value) -> Graph {
        let name_of = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut normal = HashMap::new();
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
                .map(|d| d["pkg"].as_str().unwrap().to_owned())
                .collect();
            normal.insert(node["id"].as_str().unwrap().to_owned(), deps);
        }
        Graph { name_of, normal }
    }

    /// The id of the workspace package `name`.
    fn id(&self, name: &str) -> &str {
        self.name_of
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.as_str())
            .unwrap_or_else(|| panic!("{name} is in the workspace"))
    }

    /// Every package reachable from `name` through normal dependencies, by name, with the path
    /// that first reaches it.
    fn reachable(&self, name: &str) -> Vec<(String, String)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut stack = vec![(self.id(name).to_owned(), name.to_owned())];
        while let Some((at, path)) = stack.pop() {
            for dep in self.normal.get(&at).into_iter().flatten() {
                if seen.insert(dep.clone()) {
                    let dep_name = &self.name_of[dep];
                    let path = format!("{path} → {dep_name}");
                    out.push((dep_name.clone(), path.clone()));
                    stack.push((dep.clone(), path));
                }
            }
        }
        out
    }
}

#[test]
fn pure_crates_depend_on_no_runtime_or_io_crate() {
    let graph = Graph::of(&metadata());
    for name in PURE {
        for (dep, path) in graph.reachable(name) {
            assert!(
                !IO.contains(&dep.as_str()),
                "pure crate {name} reaches the IO crate {dep}: {path}"
            );
            assert!(
                !NOT_PURE.contains(&dep.as_str()),
                "pure crate {name} reaches {dep}: {path}"
            );
        }
    }
}

#[test]
fn the_server_builds_no_client() {
    let graph = Graph::of(&metadata());
    // The server build stops compiling the sharer agent and its X11 connection.
    let server = graph.reachable("assistd");
    assert!(
        server.iter().any(|(d, _)| d == "assist-relay"),
        "{server:?}"
    );
    for (dep, path) in server {
        assert!(
            !["assist-agent", "assist-cli", "x11rb"].contains(&dep.as_str()),
            "assistd reaches {dep}: {path}"
        );
    }
    // The sharer agent and the load generator join the relay through the client crate, not
    // the relay node.
    for client in ["assist-agent", "assist-loadgen"] {
        let deps = graph.reachable(client);
        assert!(deps.iter().any(|(d, _)| d == "assist-client"), "{deps:?}");
        for (dep, path) in deps {
            assert_ne!(
                dep, "assist-relay",
                "{client} reaches the relay node: {path}"
            );
        }
    }
}

#[test]
fn the_live_state_stores_are_a_crate_of_their_own() {
    // Its `[lints]` are checked with every other crate's below.
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
    let mut checked = BTreeSet::new();
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
        checked.insert(p["name"].as_str().unwrap());
    }
    for name in PURE
        .iter()
        .chain(&["assist-client", "assist-cli", "assistd"])
    {
        assert!(checked.contains(name), "{name} is a workspace member");
    }
}
