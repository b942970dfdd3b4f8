//! The server keeps serving whatever happens to its log output, `/healthz` checks the HTTPS
//! serving path itself, and SIGTERM stops it promptly. The real `assistd` binary, real sockets.

mod common;

use assistd::health::{HttpsProbe, ProbeError};
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `assistd serve` on ephemeral ports with stdout and stderr piped to this test; returns the
/// child, its HTTPS and metrics base URLs (read from the first stdout line) and the reader.
fn serve(
    dir: &std::path::Path,
    log: &str,
) -> (Child, String, String, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_assistd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log",
            log,
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // "assistd: serving https://127.0.0.1:PORT (metrics on http://127.0.0.1:PORT); certificate …"
    let https = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    let metrics = line
        .split("metrics on ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default()
        .to_owned();
    assert!(
        https.starts_with("https://") && metrics.starts_with("http://"),
        "{line}"
    );
    (child, https, metrics, stdout)
}

/// HTTPS answers (each request also writes a log line), `/healthz` and `/readyz` say 200.
async fn still_serving(dir: &std::path::Path, https: &str, metrics: &str, requests: usize) {
    let client = client_trusting(&dir.join("tls/cert.pem"));
    for _ in 0..requests {
        let r = client
            .get(format!("{https}/helper/"))
            .send()
            .await
            .expect("HTTPS still answers");
        assert_eq!(r.status(), 200);
    }
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for path in ["/healthz", "/readyz"] {
        let r = plain.get(format!("{metrics}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

/// SIGTERM: the process exits 0 within 10 s.
fn stops_on_sigterm(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "exit after SIGTERM: {exit:?}");
            return;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("assistd ignored SIGTERM for 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_pipe_whose_reader_has_gone_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, https, metrics, stdout) = serve(dir.path(), "info");
    // The reader goes away: both pipes are broken from now on (EPIPE on every log line).
    drop(stdout);
    drop(child.stderr.take());
    still_serving(dir.path(), &https, &metrics, 20).await;
    let text = reqwest::get(format!("{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("assist_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dropped-lines counter is exported");
    assert!(
        dropped >= 20,
        "each request's lost line is counted: {dropped}"
    );
    stops_on_sigterm(child);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_pipe_nobody_reads_does_not_block_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // The reader stays connected and never reads: the pipe (64 KiB) fills after a few hundred
    // request lines, and a blocking log write would then wait forever.
    let (child, https, metrics, _stdout_kept) = serve(dir.path(), "debug");
    let _stderr_kept = &child.stderr;
    still_serving(dir.path(), &https, &metrics, 1500).await;
    stops_on_sigterm(child);
}

#[tokio::test]
async fn the_probe_fails_when_the_https_listener_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    let (certs, _) = assistd::tls::load_pem(
        &s.server.cert_path,
        &s.server.cert_path.with_file_name("key.pem"),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let cert = certs[0].clone();

    // The real listener answers.
    let probe = HttpsProbe::new(s.server.https_addr, cert.clone()).unwrap();
    probe.check(Duration::from_secs(5)).await.unwrap();

    // A listener that accepts connections and never answers (a stuck serving path).
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_addr = stuck.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = stuck.accept().await {
            held.push(c);
        }
    });
    let probe = HttpsProbe::new(stuck_addr, cert).unwrap();
    let started = Instant::now();
    let e = probe.check(Duration::from_millis(500)).await.unwrap_err();
    assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();

    // Another server's certificate is not this server's.
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestServer::start(other_dir.path()).await;
    let (other_certs, _) = assistd::tls::load_pem(
        &other.server.cert_path,
        &other.server.cert_path.with_file_name("key.pem"),
    )
    .unwrap();
    let probe = HttpsProbe::new(s.server.https_addr, other_certs[0].clone()).unwrap();
    assert!(probe.check(Duration::from_secs(5)).await.is_err());
    other.server.shutdown().await;
    s.server.shutdown().await;
}

/// The log says what happened at start and once per request, but not once per health probe:
/// the metrics listener's `/healthz` asks the HTTPS router for `/healthz` (a 404 there), and
/// that line is debug, not info.
#[tokio::test(flavor = "multi_thread")]
async fn health_probes_do_not_write_a_request_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, https, metrics, stdout) = serve(dir.path(), "info");
    let mut stderr = child.stderr.take().unwrap();
    let read_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let read_out = std::thread::spawn(move || {
        let mut s = String::new();
        let mut stdout = stdout;
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    still_serving(dir.path(), &https, &metrics, 1).await;
    for _ in 0..3 {
        let r = reqwest::get(format!("{metrics}/healthz")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    stops_on_sigterm(child);
    let log = format!("{}{}", read_out.join().unwrap(), read_err.join().unwrap());
    assert!(
        log.contains("path=/helper/"),
        "a request line per request:\n{log}"
    );
    assert!(
        !log.contains("path=/healthz"),
        "no request line per probe:\n{log}"
    );
    assert!(
        log.contains("transparent huge pages off for this process")
            || (std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
                && log.contains("transparent huge pages left to mimalloc")),
        "what start did about huge pages is logged:\n{log}"
    );
}
