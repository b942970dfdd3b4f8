//! The `assist` terminal client against a real server: a whole session typed on standard input,
//! run from a directory other than the data directory's parent (the certificate is found through
//! ASSIST_DATA_DIR), and both programs exiting 0 once the session has ended.

// The server fixture assistd's own integration tests use.
#[path = "../../assistd/tests/common/mod.rs"]
mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One terminal: the CLI process, its stdin, and its stdout lines as they come.
struct Terminal {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Terminal {
    fn start(name: &'static str, args: &[&str], data_dir: &std::path::Path) -> Terminal {
        let cwd = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_assist"))
            .args(args)
            .current_dir(cwd.path())
            .env("ASSIST_DATA_DIR", data_dir)
            .env_remove("DISPLAY")
            .env_remove("ASSIST_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Terminal {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (10 s at most) for a line containing `text`; returns it.
    fn expect(&mut self, text: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "{} never printed {text:?}; it printed:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The process exits by itself, with status 0, within 10 s.
    fn exits_zero(mut self) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} exited {status:?}", self.name);
                return;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("{} kept running after the session ended", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_clients_run_a_session_from_stdin_and_exit_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path()).await;
    help_desk_tenant_as(&s, ADMIN_BUT_DEVICES).await;
    let mint = |upn: &str| {
        let mut r = request("contoso", &[]);
        r.user_principal_name = upn.into();
        s.dev.mint(&r).unwrap()
    };
    let (helper_token, sharer_token) = (mint("helen@contoso.com"), mint("sam@contoso.com"));
    let server = format!("https://localhost:{}", s.server.https_addr.port());
    let data_dir = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut helper = Terminal::start(
            "helper",
            &["helper", "--server", &server, "--token", &helper_token],
            &data_dir,
        );
        let line = helper.expect("Your code is ");
        let code = line
            .split_whitespace()
            .nth(3)
            .expect("a code after 'Your code is'")
            .to_owned();
        let mut sharer = Terminal::start(
            "sharer",
            &[
                "sharer",
                "--server",
                &server,
                "--token",
                &sharer_token,
                "--code",
                &code,
                "--no-screen",
            ],
            &data_dir,
        );
        sharer.expect("Joined. The other side: Helen Helper");
        helper.expect("Joined. The other side: Sam Sharer");
        helper.type_line("mode viewOnly");
        helper.expect("Warnings:");
        helper.type_line("ack");
        sharer.expect("asks for viewOnly");
        sharer.type_line("allow");
        helper.expect("Session active in viewOnly");
        sharer.expect("Session active in viewOnly");
        helper.type_line("chat hello Sam");
        sharer.expect("hello Sam");
        helper.type_line("end");
        helper.expect("Session ended");
        helper.expect("The session is over; exiting.");
        sharer.expect("Session ended");
        helper.exits_zero();
        sharer.exits_zero();
    })
    .await
    .unwrap();
    s.server.shutdown().await;
}
