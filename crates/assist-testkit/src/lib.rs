//! Test support for Assist: real servers for the tests to talk to, no mocks.
//!
//! [`PostgresInstance`] runs a throwaway PostgreSQL (Debian's `postgresql` package: `initdb` and
//! `postgres` from `/usr/lib/postgresql/*/bin`) in a temporary directory on a free loopback
//! port. A test binary shares one instance ([`PostgresInstance::shared`]) and gives each test a
//! database of its own ([`PostgresInstance::fresh_database`]); the server stops and its
//! directory is removed when the test binary exits, however it exits: a watchdog shell beside
//! the server reads the test process's end of a pipe and, at end of file, stops the server and
//! cleans up.
//!
//! A test of a database outage starts an instance of its own ([`PostgresInstance::start`]) and
//! stops it ([`PostgresInstance::stop`]) and starts it again ([`PostgresInstance::start_again`])
//! on the same port and data directory.
//!
//! Missing server binaries: with `CI=true` or `ASSIST_REQUIRE_POSTGRES` set the tests fail;
//! otherwise they print a loud message and skip (`./test.sh` and `.ci/run` install the package
//! first, through `scripts/install-test-deps.sh`). Binaries present but a server that does not
//! start is always a failure.
//!
//! `initdb` refuses to run as root: as root, the server runs as `nobody` (through `runuser`),
//! with the temporary directory owned by it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod redis;
pub use redis::{redis_required, redis_server_bin, RedisInstance, REDIS_DATABASES};

/// The role the tests connect as.
pub const POSTGRES_USER: &str = "assist";

/// How long a server gets to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server of the tests' own, on 127.0.0.1.
pub struct PostgresInstance {
    port: u16,
    password: String,
    bin: PathBuf,
    next_db: AtomicU64,
    /// The temporary directory (data directory and log).
    base: PathBuf,
    /// The watchdog's stdin: commands go there; closing it (at the latest when this process
    /// exits) stops the server for good.
    stop: Mutex<Option<ChildStdin>>,
    /// The watchdog's answers to commands.
    answers: Mutex<Option<BufReader<ChildStdout>>>,
    watchdog: Mutex<Child>,
}

/// Whether a missing PostgreSQL must fail the tests rather than skip them.
pub fn postgres_required() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("ASSIST_REQUIRE_POSTGRES") || set("CI")
}

/// The directory holding `initdb` and `postgres`: `ASSIST_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` that has both.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(d) = std::env::var("ASSIST_POSTGRES_BIN") {
        return Some(PathBuf::from(d)).filter(|d| has_both(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn id_of(flag: &str, user: &str) -> Result<u32, String> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| format!("id {flag} {user}: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("no user '{user}' to run PostgreSQL as"))
}

/// A command run as the unprivileged user when we are root.
fn as_server_user(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// 32 hex digits from the kernel's random source.
fn random_password() -> Result<String, String> {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Runs the server; reads commands on stdin (`stop`: fast shutdown, keeping the data directory;
/// `start`: the server again on the same port and directory), answering each with a line on
/// stdout once done. At end of file it stops the server and removes the directory.
const WATCHDOG: &str = r#"
base="$1"; bin="$2"; port="$3"; pid=
run() {
  "$bin/postgres" -D "$base/data" -p "$port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$base" -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB \
    >>"$base/postgres.log" 2>&1 &
  pid=$!
}
halt() {
  if [ -n "$pid" ]; then kill -INT "$pid" 2>/dev/null; wait "$pid"; pid=; fi
}
run
while read -r cmd; do
  case "$cmd" in
    stop) halt; echo stopped ;;
    start) halt; run; echo started ;;
  esac
done
halt
rm -rf "$base"
"#;

impl PostgresInstance {
    /// The instance this test binary shares, started on first use. `None` only when the server
    /// binaries are missing and [`postgres_required`] is false (after a loud message on stderr:
    /// the caller skips). Panics if they are missing but required, or if the server fails.
    pub fn shared() -> Option<&'static PostgresInstance> {
        static SHARED: OnceLock<Option<PostgresInstance>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                if postgres_bin_dir().is_none() {
                    let why = "PostgreSQL's server binaries (initdb, postgres) are not installed \
                               (looked in ASSIST_POSTGRES_BIN and /usr/lib/postgresql/*/bin)";
                    if postgres_required() {
                        panic!(
                            "{why}; CI/ASSIST_REQUIRE_POSTGRES requires them: install the \
                                postgresql package (scripts/install-test-deps.sh)"
                        );
                    }
                    eprintln!(
                        "\n************************************************************\n\
                         SKIPPING the PostgreSQL tests: {why}.\n\
                         Install them with scripts/install-test-deps.sh (./test.sh does),\n\
                         or set ASSIST_REQUIRE_POSTGRES=1 to fail instead of skipping.\n\
                         ************************************************************\n"
                    );
                    return None;
                }
                match Self::start() {
                    Ok(pg) => Some(pg),
                    Err(e) => panic!("cannot start a test PostgreSQL: {e}"),
                }
            })
            .as_ref()
    }

    /// Starts a new instance (most tests want [`PostgresInstance::shared`]). It stops when the
    /// value is dropped or this process exits.
    pub fn start() -> Result<PostgresInstance, String> {
        let bin = postgres_bin_dir().ok_or("PostgreSQL's server binaries are not installed")?;
        let mut last = String::new();
        // A port taken between our probe and the server's bind is retried on another.
        for _ in 0..3 {
            match Self::start_once(&bin) {
                Ok(pg) => return Ok(pg),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn start_once(bin: &Path) -> Result<PostgresInstance, String> {
        let root = is_root();
        let base = tempfile::Builder::new()
            .prefix("assist-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let password = random_password()?;
        let pwfile = base.join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| format!("pwfile: {e}"))?;
        if root {
            let (uid, gid) = (id_of("-u", "nobody")?, id_of("-g", "nobody")?);
            for p in [&base, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        let out = as_server_user(root, &bin.join("initdb"))
            .arg("-D")
            .arg(base.join("data"))
            .args(["-U", POSTGRES_USER, "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&base);
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = std::fs::remove_file(&pwfile);
        let port = free_port()?;
        let mut watchdog = as_server_user(root, Path::new("/bin/sh"))
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&base)
            .arg(bin)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let stop = watchdog.stdin.take();
        let answers = watchdog.stdout.take().map(BufReader::new);
        let pg = PostgresInstance {
            port,
            password,
            bin: bin.to_path_buf(),
            next_db: AtomicU64::new(0),
            base: base.clone(),
            stop: Mutex::new(stop),
            answers: Mutex::new(answers),
            watchdog: Mutex::new(watchdog),
        };
        pg.wait_ready()?;
        Ok(pg)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let base = &self.base;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            let exited = self
                .watchdog
                .lock()
                .ok()
                .and_then(|mut w| w.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(base.join("postgres.log")).unwrap_or_default();
                return Err(format!(
                    "postgres on port {} {}: {log}",
                    self.port,
                    if exited {
                        "exited"
                    } else {
                        "did not become ready"
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (`postgres://assist:<password>@127.0.0.1:<port>/<db>`).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{POSTGRES_USER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// Creates a new, empty database and returns its URL: one per test keeps tests apart.
    pub fn fresh_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("test_{}_{n}", std::process::id());
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                POSTGRES_USER,
                "-d",
                "postgres",
            ])
            .args(["-c", &format!("CREATE DATABASE \"{name}\"")])
            .env("PGPASSWORD", &self.password)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => self.url(&name),
            Ok(o) => panic!(
                "CREATE DATABASE {name} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("running psql: {e}"),
        }
    }

    /// Sends `cmd` to the watchdog and waits for its answer `done`.
    fn command(&self, cmd: &str, done: &str) -> Result<(), String> {
        let mut stdin = self.stop.lock().map_err(|_| "watchdog lock poisoned")?;
        let stdin = stdin.as_mut().ok_or("the server was shut down for good")?;
        writeln!(stdin, "{cmd}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("telling the watchdog to {cmd}: {e}"))?;
        let mut answers = self.answers.lock().map_err(|_| "watchdog lock poisoned")?;
        let answers = answers.as_mut().ok_or("no watchdog output")?;
        let mut line = String::new();
        answers
            .read_line(&mut line)
            .map_err(|e| format!("reading the watchdog: {e}"))?;
        if line.trim() == done {
            Ok(())
        } else {
            Err(format!("the watchdog answered {line:?} to {cmd}"))
        }
    }

    /// Stops the server (PostgreSQL's fast shutdown: clients get `57P01` and are disconnected)
    /// and returns once it has exited, keeping its data directory; [`start_again`] brings it
    /// back on the same port. For tests of a database outage, on an instance of their own
    /// ([`PostgresInstance::start`], never the shared one).
    ///
    /// [`start_again`]: PostgresInstance::start_again
    pub fn stop(&self) -> Result<(), String> {
        self.command("stop", "stopped")
    }

    /// Starts a server stopped by [`PostgresInstance::stop`] again, on the same port and data
    /// directory (every database and role as they were), and returns once it accepts
    /// connections.
    pub fn start_again(&self) -> Result<(), String> {
        self.command("start", "started")?;
        self.wait_ready()
    }

    /// Stops the server for good and removes its directory (also done when the value is dropped
    /// or this process exits).
    pub fn shut_down(&self) {
        if let Ok(mut s) = self.stop.lock() {
            // Closing stdin is the watchdog's end of file.
            drop(s.take());
        }
        if let Ok(mut w) = self.watchdog.lock() {
            let _ = w.wait();
        }
    }
}

impl Drop for PostgresInstance {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_gives_fresh_databases_and_cleans_up() {
        let Some(bin) = postgres_bin_dir() else {
            assert!(!postgres_required(), "PostgreSQL is required here");
            eprintln!("SKIPPING: no PostgreSQL server binaries");
            return;
        };
        let pg = PostgresInstance::start().expect("starts");
        let a = pg.fresh_database();
        let b = pg.fresh_database();
        assert_ne!(a, b);
        assert!(a.starts_with("postgres://assist:"), "{a}");
        let psql = |url: &str, sql: &str| {
            Command::new(bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-t",
                    "-A",
                    "-v",
                    "ON_ERROR_STOP=1",
                    url,
                    "-c",
                    sql,
                ])
                .output()
                .expect("psql")
        };
        let o = psql(&a, "SELECT 40 + 2");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "42");
        // Password authentication is on: a wrong password is refused.
        let wrong = a.replacen(&pg.password, "wrong", 1);
        assert!(!psql(&wrong, "SELECT 1").status.success());
        let port = pg.port();
        // Stopped, the server refuses connections; started again, it has the same data.
        let ready = || {
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .expect("pg_isready")
                .success()
        };
        let o = psql(&a, "CREATE TABLE kept (x INT); INSERT INTO kept VALUES (7)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        pg.stop().expect("stops");
        assert!(!ready(), "stopped");
        assert!(!psql(&a, "SELECT 1").status.success());
        pg.start_again().expect("starts again");
        let o = psql(&a, "SELECT x FROM kept");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "7", "same data");
        let base = pg.base.clone();
        drop(pg);
        assert!(!base.exists(), "directory removed");
        assert!(
            !Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .expect("pg_isready")
                .success(),
            "stopped when dropped"
        );
    }
}
