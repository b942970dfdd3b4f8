//! [`RedisInstance`]: a throwaway `redis-server` (Debian's `redis-server` package) on a free
//! 127.0.0.1 port, with persistence off (`--save "" --appendonly no`), in a temporary
//! directory. A test binary shares one instance ([`RedisInstance::shared`]) and gives each test
//! a logical database of its own ([`RedisInstance::fresh_url`]); a test that restarts Redis
//! starts its own ([`RedisInstance::start`], then [`RedisInstance::stop`] and
//! [`RedisInstance::restart`] on the same port, which comes back empty).
//!
//! Like [`crate::PostgresInstance`], a watchdog shell beside the server reads the test
//! process's end of a pipe and, at end of file (at the latest when the test binary exits,
//! however it exits), stops the server and removes its directory.
//!
//! A missing `redis-server`: with `CI=true` or `ASSIST_REQUIRE_REDIS` set the tests fail;
//! otherwise they print a loud message and skip. A server that does not start is always a
//! failure.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::free_port;

/// How many logical databases an instance has (`--databases`): the number of
/// [`RedisInstance::fresh_url`]s it can hand out.
pub const REDIS_DATABASES: u32 = 1000;

/// How long a server gets to answer `PING` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a missing `redis-server` must fail the tests rather than skip them.
pub fn redis_required() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("ASSIST_REQUIRE_REDIS") || set("CI")
}

/// The `redis-server` binary: `ASSIST_REDIS_SERVER`, else the first `redis-server` on `PATH`
/// (or in `/usr/bin`, `/usr/local/bin`).
pub fn redis_server_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("ASSIST_REDIS_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// Runs the server until stdin reaches end of file, then stops it and removes the directory.
const WATCHDOG: &str = r#"
base="$1"; bin="$2"; port="$3"; dbs="$4"
"$bin" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$base" \
  --databases "$dbs" --daemonize no --protected-mode yes --loglevel warning \
  >"$base/redis.log" 2>&1 &
pid=$!
cat >/dev/null
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rm -rf "$base"
"#;

/// One running server process (one watchdog).
struct Running {
    /// The watchdog's stdin: closing it stops the server.
    stop: Option<ChildStdin>,
    watchdog: Child,
}

/// A `redis-server` of the tests' own, on 127.0.0.1.
pub struct RedisInstance {
    port: u16,
    bin: PathBuf,
    next_db: AtomicU32,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for RedisInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInstance")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RedisInstance {
    /// The instance this test binary shares, started on first use. `None` only when
    /// `redis-server` is missing and [`redis_required`] is false (after a loud message on
    /// stderr: the caller skips). Panics if it is missing but required, or if the server fails.
    pub fn shared() -> Option<&'static RedisInstance> {
        static SHARED: OnceLock<Option<RedisInstance>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                if !Self::available() {
                    return None;
                }
                match Self::start() {
                    Ok(r) => Some(r),
                    Err(e) => panic!("cannot start a test Redis: {e}"),
                }
            })
            .as_ref()
    }

    /// Whether `redis-server` is installed. When it is not: panics if [`redis_required`], else
    /// prints a loud message and returns false (the caller skips).
    pub fn available() -> bool {
        if redis_server_bin().is_some() {
            return true;
        }
        let why = "redis-server is not installed (looked in ASSIST_REDIS_SERVER and PATH)";
        if redis_required() {
            panic!(
                "{why}; CI/ASSIST_REQUIRE_REDIS requires it: install the redis-server package \
                 (scripts/install-test-deps.sh)"
            );
        }
        eprintln!(
            "\n************************************************************\n\
             SKIPPING the Redis tests: {why}.\n\
             Install it with scripts/install-test-deps.sh (./test.sh does),\n\
             or set ASSIST_REQUIRE_REDIS=1 to fail instead of skipping.\n\
             ************************************************************\n"
        );
        false
    }

    /// Starts a new instance of this test's own (for tests that stop and restart it; others
    /// want [`RedisInstance::shared`]). It stops when the value is dropped or this process
    /// exits.
    pub fn start() -> Result<RedisInstance, String> {
        let bin = redis_server_bin().ok_or("redis-server is not installed")?;
        let mut last = String::new();
        // A port taken between our probe and the server's bind is retried on another.
        for _ in 0..3 {
            let instance = RedisInstance {
                port: free_port()?,
                bin: bin.clone(),
                next_db: AtomicU32::new(1),
                running: Mutex::new(None),
            };
            match instance.restart() {
                Ok(()) => return Ok(instance),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Starts the server again on the same port after [`RedisInstance::stop`] (empty: nothing
    /// is persisted). Does nothing if it is running.
    pub fn restart(&self) -> Result<(), String> {
        let mut running = self.running.lock().map_err(|_| "poisoned lock")?;
        if running.is_some() {
            return Ok(());
        }
        let base = tempfile::Builder::new()
            .prefix("assist-redis-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let mut watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&base)
            .arg(&self.bin)
            .arg(self.port.to_string())
            .arg(REDIS_DATABASES.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting redis-server: {e}"))?;
        let stop = watchdog.stdin.take();
        let mut run = Running { stop, watchdog };
        if let Err(e) = self.wait_ready(&base, &mut run.watchdog) {
            drop(run.stop.take());
            let _ = run.watchdog.wait();
            return Err(e);
        }
        *running = Some(run);
        Ok(())
    }

    fn wait_ready(&self, base: &Path, watchdog: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.port) {
                return Ok(());
            }
            let exited = watchdog.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(base.join("redis.log")).unwrap_or_default();
                return Err(format!(
                    "redis-server on port {} {}: {log}",
                    self.port,
                    if exited {
                        "exited"
                    } else {
                        "did not answer PING"
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of logical database 0 (`redis://127.0.0.1:<port>/0`).
    pub fn url(&self) -> String {
        self.url_of(0)
    }

    /// The URL of logical database `db`.
    pub fn url_of(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of a logical database no other caller got: one per test keeps the keys of tests
    /// on a shared instance apart (pub/sub channels are server-wide, not per database). Panics
    /// after [`REDIS_DATABASES`] − 1 of them.
    pub fn fresh_url(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        assert!(n < REDIS_DATABASES, "out of Redis databases");
        self.url_of(n)
    }

    /// Whether the server answers `PING` now.
    pub fn is_up(&self) -> bool {
        ping(self.port)
    }

    /// Stops the server now and waits until it has exited (its data is lost). Tests of a Redis
    /// restart call this on their own instance, then [`RedisInstance::restart`].
    pub fn stop(&self) {
        let run = self.running.lock().ok().and_then(|mut r| r.take());
        if let Some(mut run) = run {
            if let Some(mut stdin) = run.stop.take() {
                let _ = stdin.flush();
            }
            let _ = run.watchdog.wait();
        }
    }
}

impl Drop for RedisInstance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends `PING` and expects `+PONG`, within a short timeout.
fn ping(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_restarts_on_the_same_port_and_stops() {
        if !RedisInstance::available() {
            return;
        }
        let r = RedisInstance::start().expect("starts");
        assert!(r.is_up());
        assert!(r.url().starts_with("redis://127.0.0.1:"), "{}", r.url());
        assert_ne!(r.fresh_url(), r.fresh_url());
        let port = r.port();
        r.stop();
        assert!(!ping(port), "stopped");
        r.restart().expect("starts again");
        assert_eq!(r.port(), port);
        assert!(ping(port), "up again on the same port");
        drop(r);
        assert!(!ping(port), "stopped when dropped");
    }
}
