//! The `assist` CLI signs in with the device authorization grant against the dev provider
//! (prints the verification URI and the user code, polls, connects once approved), and takes a
//! token from a file; tokens never reach its output.

// The server fixture assistd's own integration tests use.
#[path = "../../assistd/tests/common/mod.rs"]
mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `assist helper` against the server; returns the child and a channel of its stdout lines.
fn spawn_cli(ts: &TestServer, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_assist"))
        .args(["helper", "--server", &server(ts), "--ca"])
        .arg(&ts.server.cert_path)
        .args(extra)
        .env_remove("ASSIST_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("assist runs");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx2.send(format!("stderr: {line}")).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The server as the CLI names it (its certificate is for localhost).
fn server(ts: &TestServer) -> String {
    format!("https://localhost:{}", ts.server.https_addr.port())
}

/// The next line matching `pred`, within `secs`; every line seen is kept in `seen`.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    secs: u64,
    pred: impl Fn(&str) -> bool,
) -> String {
    // The server runs on this test's runtime: wait without holding a worker.
    tokio::task::block_in_place(|| wait_line_blocking(rx, seen, secs, pred))
}

fn wait_line_blocking(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    secs: u64,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                seen.push(l.clone());
                if pred(&l) {
                    return l;
                }
            }
            Err(_) => panic!("no matching line within {secs} s; output: {seen:#?}"),
        }
    }
}

async fn enable(ts: &TestServer) {
    let admin = ts.token("contoso", &[WRITE]);
    let (s, _) = ts
        .patch(
            SETTINGS,
            &admin,
            &serde_json::json!({"remoteAssistanceState": "enabled"}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_signs_in_with_the_device_grant() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    enable(&ts).await;
    let (mut child, rx) = spawn_cli(&ts, &[]);
    let mut seen = Vec::new();
    let prompt = wait_line(&rx, &mut seen, 20, |l| l.starts_with("To sign in, open "));
    let expected_uri = format!("{}/dev-issuer/device", server(&ts));
    assert!(prompt.contains(&expected_uri), "{prompt}");
    let user_code = prompt.rsplit(' ').next().unwrap().to_owned();
    assert!(
        user_code.len() == 9 && user_code.as_bytes()[4] == b'-',
        "{user_code}"
    );

    // Approve it on the verification page, as a person would in a browser.
    let pem = std::fs::read(&ts.server.cert_path).unwrap();
    let browser = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser
        .get(format!(
            "{expected_uri}?user_code={}",
            user_code.to_lowercase()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    let id = html
        .split("name=\"request\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("request", id),
            ("user", "other"),
            ("tenant", "contoso"),
            ("upn", "helen@contoso.com"),
        ])
        .finish();
    let resp = browser
        .post(&expected_uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", cookie)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    wait_line(&rx, &mut seen, 20, |l| l == "Signed in.");
    // Connected as helen: the helper's first request is answered.
    wait_line(&rx, &mut seen, 20, |l| {
        l.starts_with("Your code is") || l.starts_with("Error")
    });
    let _ = child.kill();
    let _ = child.wait();
    for l in &seen {
        assert!(!l.contains("eyJ"), "a token reached the output: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_a_token_from_a_file_and_refuses_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let ts = TestServer::start(dir.path()).await;
    enable(&ts).await;
    let mut r = request("contoso", &[]);
    r.user_principal_name = "helen@contoso.com".into();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", ts.dev.mint(&r).unwrap())).unwrap();
    let (mut child, rx) = spawn_cli(&ts, &["--token-file", file.to_str().unwrap()]);
    let mut seen = Vec::new();
    wait_line(&rx, &mut seen, 20, |l| {
        l.starts_with("Your code is") || l.starts_with("Error")
    });
    assert!(
        !seen.iter().any(|l| l.starts_with("To sign in")),
        "{seen:?}"
    );
    let _ = child.kill();
    let _ = child.wait();

    std::fs::write(&file, "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_assist"))
        .args([
            "helper",
            "--server",
            &ts.base,
            "--token-file",
            file.to_str().unwrap(),
            "--ca",
        ])
        .arg(&ts.server.cert_path)
        .env_remove("ASSIST_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
}
