//! Assist's durable data.
//!
//! This crate owns the database: its schema (versioned migrations embedded in the binary,
//! applied on open, refused if the database is newer than the code), and the reads and writes
//! the broker and admin API make. Two databases sit behind one API: SQLite (one file in the
//! data directory, a single node) and PostgreSQL (shared by every node of a cluster). It does
//! not decide anything: validation happens before a write reaches it, permission checks in the
//! admin API.
//!
//! Both run the same SQL through sqlx (`backend.rs`, compiled once per database); each has its
//! own migrations with its own column types. An enum over the two pools rather than
//! `sqlx::Any`: `Any` knows only integers, floats, text and blobs, so PostgreSQL's columns
//! would have to be TEXT (or every query carry per-database casts), and SQLite's connection
//! options (WAL, pragmas) would be out of reach.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
mod codec;
pub mod directory;
mod migrations;
mod pg_batch;
pub mod sessions;
mod sqlite_batch;
mod url;

use assist_graph::settings::RemoteAssistanceSettings;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use audit::AuditEvent;
pub use url::{redact_url, StoreUrl};

/// The SQLite instantiation of `backend.rs`.
mod sqlite_db {
    type DB = sqlx::Sqlite;
    const POSTGRES: bool = false;
    const MIGRATIONS: crate::migrations::Migrations = crate::migrations::SQLITE;
    include!("backend.rs");
    use crate::sqlite_batch as batch;
}

/// The PostgreSQL instantiation of `backend.rs`.
mod postgres_db {
    type DB = sqlx::Postgres;
    const POSTGRES: bool = true;
    const MIGRATIONS: crate::migrations::Migrations = crate::migrations::POSTGRES;
    include!("backend.rs");
    use crate::pg_batch as batch;
}

/// Store failures. All are our side's (or the disk's, or the database server's) fault, never
/// the caller's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A query failed (or the database went away).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database could not be reached or opened at start.
    #[error("cannot open the database {url}")]
    Open {
        /// The store URL, password redacted.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The store URL is not one Assist can use.
    #[error("{0}")]
    InvalidUrl(String),
    /// The database was written by a newer Assist.
    #[error("database schema version {found} is newer than this assistd supports ({supported}); upgrade assistd")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Highest version this code knows.
        supported: i64,
    },
    /// A stored row does not decode (corruption or a manual edit).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A query asked for something the store cannot answer (e.g. a listing ordered by a
    /// field name that is not one); the caller validates first, so this is a bug there.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

impl StoreError {
    /// Whether the database server cannot be reached or refuses work for now: a connection
    /// refused, reset or timed out, no pooled connection within the acquire timeout, the pool
    /// closed, PostgreSQL shutting down or starting (`57P01` admin shutdown, `57P02` crash
    /// shutdown, `57P03` cannot connect now), a connection exception (class `08`) or too many
    /// connections (`53300`). The admin API answers these with 503 `ServiceUnavailable`, and
    /// the records writer holds its writes until the store is back. A busy SQLite database
    /// (`database is locked`) is not unavailable: see [`StoreError::is_retryable`].
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Open { .. } => true,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(db) => db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some_and(|pg| pg_unavailable(pg.code())),
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether the store is unavailable or busy for now (see [`StoreError::is_unavailable`]
    /// and [`StoreError::is_retryable`]): the admin API and the signalling handshake answer
    /// these with 503 `ServiceUnavailable` and `Retry-After`, logged as a warning, not an error.
    pub fn is_transient(&self) -> bool {
        self.is_unavailable() || self.is_retryable()
    }

    /// Whether the same work may succeed if tried again later without any change: the store
    /// is unavailable (see [`StoreError::is_unavailable`]; except a pool closed on purpose,
    /// which stays closed), or it refused this attempt because of other work at the same time:
    /// SQLite busy or locked (`database is locked`, `SQLITE_BUSY`/`SQLITE_LOCKED` and their
    /// extended codes), PostgreSQL serialization failure (`40001`) or deadlock (`40P01`).
    pub fn is_retryable(&self) -> bool {
        if matches!(self, StoreError::Database(sqlx::Error::PoolClosed)) {
            return false;
        }
        if self.is_unavailable() {
            return true;
        }
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return matches!(pg.code(), "40001" | "40P01");
        }
        sqlite_busy_error(db.as_ref())
    }
}

/// PostgreSQL SQLSTATEs meaning the server cannot take work now (see
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn pg_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

/// How often, and how far apart, opening a SQLite database is tried again while another process
/// holds the lock that switching a new file to WAL takes (5 s in all, the busy timeout).
const SQLITE_OPEN_ATTEMPTS: u32 = 50;
const SQLITE_OPEN_RETRY: Duration = Duration::from_millis(100);

/// SQLite's `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6), with any extended code.
fn sqlite_busy(extended: i32) -> bool {
    matches!(extended & 0xff, 5 | 6)
}

/// Whether `db` is a SQLite error saying busy or locked (SQLite reports extended result codes;
/// the primary code is the low byte).
fn sqlite_busy_error(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(sqlite_busy)
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `backend.rs`'s `$f` on a connection from the store's pool.
macro_rules! on_pool {
    ($store:expr, $f:ident($($a:expr),* $(,)?)) => {
        match &$store.pool {
            $crate::Pool::Sqlite(p) => {
                let mut c = p.acquire().await?;
                $crate::sqlite_db::$f(&mut c, $($a),*).await
            }
            $crate::Pool::Postgres(p) => {
                let mut c = p.acquire().await?;
                $crate::postgres_db::$f(&mut c, $($a),*).await
            }
        }
    };
}

/// Runs `backend.rs`'s `$f` inside a transaction.
macro_rules! on_tx {
    ($tx:expr, $f:ident($($a:expr),* $(,)?)) => {
        match &mut $tx {
            $crate::Tx::Sqlite(t) => $crate::sqlite_db::$f(t, $($a),*).await,
            $crate::Tx::Postgres(t) => $crate::postgres_db::$f(t, $($a),*).await,
        }
    };
}
pub(crate) use {on_pool, on_tx};

/// The write lock held by [`Store::hold_write_lock_for_tests`], until [`Self::release`].
#[doc(hidden)]
pub struct WriteLockForTests(Tx);

impl WriteLockForTests {
    /// Rolls the transaction back, releasing the lock before it returns.
    pub async fn release(self) -> Result<(), StoreError> {
        match self.0 {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// A transaction of either database.
pub(crate) enum Tx {
    Sqlite(sqlite_db::Tx),
    Postgres(postgres_db::Tx),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// How long connecting to PostgreSQL may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a PostgreSQL query may wait for a pooled connection (sqlx keeps retrying a refused
/// connection until then): while the database is down, this is how long an admin request or
/// `/readyz` takes to answer 503.
const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// Moves on after every committed change to policy inputs (settings, directory objects,
    /// group memberships) made through this handle or its clones.
    generation: Arc<AtomicU64>,
    /// Woken after each such change (cluster mode tells the other nodes to drop their caches).
    changed: Arc<tokio::sync::Notify>,
}

/// The current time as Graph writes it (RFC 3339, UTC), to the microsecond: what both
/// databases keep, so a time reads back as it was written from either.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let micros = now.nanosecond() / 1000 * 1000;
    now.replace_nanosecond(micros)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Connections in a PostgreSQL store's pool, all opened at start.
const PG_POOL_SIZE: u32 = 8;

impl Store {
    /// Opens the store `url` names (creating a SQLite file if missing) and applies migrations.
    /// Errors name the URL with its password redacted.
    pub async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => Self::open_sqlite(path).await,
            StoreUrl::Postgres(s) => Self::open_postgres(s).await,
        }
    }

    /// Opens (creating if missing) the SQLite database at `path` and applies migrations.
    pub async fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Reads through a memory map instead of a read() per page missed, and a larger page
            // cache per connection (16 MiB): the signalling path's commits re-read the same
            // index pages all the time. The map covers the file up to SQLite's own limit
            // (0x7fff0000, just under 2 GiB; address space, not memory): past the map's end,
            // pages are copied into each connection's cache (anonymous memory) instead of
            // being read in place from the page cache the kernel can reclaim.
            .pragma("mmap_size", SQLITE_MMAP_SIZE)
            .pragma("cache_size", "-16384")
            // Checkpoint every ~40 MiB of WAL instead of 4 MiB: pages written again and again
            // (index tails, the sessions table) are copied to the database once per checkpoint.
            .pragma("wal_autocheckpoint", "10000");
        // Two processes creating one database at once (two nodes starting together, or `assistd
        // token` during a first `serve`): switching a new file to WAL takes a lock that SQLite's
        // busy handler does not wait for, so the loser gets `database is locked` at once. Try
        // again for as long as the busy timeout would have waited.
        let mut attempt = 0;
        let pool = loop {
            let opened = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
                .await;
            match opened {
                Ok(pool) => break pool,
                Err(sqlx::Error::Database(db))
                    if attempt < SQLITE_OPEN_ATTEMPTS && sqlite_busy_error(db.as_ref()) =>
                {
                    attempt += 1;
                    tokio::time::sleep(SQLITE_OPEN_RETRY).await;
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        url: format!("sqlite://{}", path.display()),
                        source,
                    })
                }
            }
        };
        sqlite_db::migrate(&pool).await?;
        Ok(Self::with_pool(Pool::Sqlite(pool)))
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:port/db`)
    /// and applies migrations. Connecting is bounded (10 s); a failure names the URL with its
    /// password redacted.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let redacted = redact_url(url);
        let opts = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::InvalidUrl(format!("store URL {redacted} is not a PostgreSQL URL: {e}"))
        })?;
        let opts = opts.application_name("assistd");
        let open_error = |source| StoreError::Open {
            url: redacted.clone(),
            source,
        };
        // One connection first, so that a refused or failed connection is reported at once
        // (the pool would retry it until its acquire timeout), bounded for a host that never
        // answers.
        let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts))
            .await
            .map_err(|_| open_error(sqlx::Error::PoolTimedOut))?
            .map_err(open_error)?;
        first.close().await.map_err(open_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(PG_POOL_SIZE)
            // Every connection opened at start (and kept open), so the first burst of load
            // does not wait for connections being opened on a busy server: the cluster bench's
            // cross-node runs stalled 2 s there (docs/benchmarks.md).
            .min_connections(PG_POOL_SIZE)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(open_error)?;
        postgres_db::migrate(&pool).await?;
        Ok(Self::with_pool(Pool::Postgres(pool)))
    }

    fn with_pool(pool: Pool) -> Self {
        Self {
            pool,
            generation: Arc::new(AtomicU64::new(0)),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Begins a transaction: `write_lock` makes SQLite's a `BEGIN IMMEDIATE`.
    pub(crate) async fn begin(&self, write_lock: bool) -> Result<Tx, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(sqlite_db::begin(p, write_lock).await?),
            Pool::Postgres(p) => Tx::Postgres(postgres_db::begin(p, write_lock).await?),
        })
    }

    /// A tenant's settings; the defaults if the tenant never configured them.
    pub async fn settings(&self, tenant_id: &str) -> Result<RemoteAssistanceSettings, StoreError> {
        Ok(on_pool!(self, settings(tenant_id, false))?.unwrap_or_default())
    }

    /// Replaces a tenant's settings and appends `audit` in the same transaction, so a change is
    /// never stored without its audit event (nor the other way round). A read-modify-write
    /// (PATCH) goes through [`Store::admin_transaction`] instead.
    pub async fn save_settings(
        &self,
        tenant_id: &str,
        settings: &RemoteAssistanceSettings,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut tx = self.admin_transaction(tenant_id).await?;
        tx.save_settings(settings, audit).await?;
        tx.commit().await
    }

    /// The directory generation: it changes after every committed change to what the policy
    /// decides on (settings, directory objects, group memberships) made through this store
    /// handle or a clone of it. Caches of policy facts compare it to know they are current.
    /// Changes made by other processes sharing the database do not move it.
    pub fn directory_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn directory_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// Resolves after the next change that moves [`Store::directory_generation`] (or at once if
    /// one happened since the last call returned): changes made while nobody waits coalesce into
    /// one wake-up. Meant for one waiter (cluster mode's invalidation broadcaster).
    pub async fn directory_change(&self) {
        self.changed.notified().await;
    }

    /// Appends an audit event that records no stored change (e.g. a session event).
    pub async fn append_audit(
        &self,
        tenant_id: &str,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        on_pool!(self, audit_insert(tenant_id, event))
    }

    /// Streams a tenant's audit events, oldest first, to `visit`, one at a time (what the
    /// caller keeps is all that stays in memory), until `visit` returns `false`.
    pub async fn for_each_audit_event(
        &self,
        tenant_id: &str,
        visit: &mut (dyn FnMut(serde_json::Value) -> bool + Send),
    ) -> Result<(), StoreError> {
        on_pool!(self, audit_for_each(tenant_id, visit))
    }

    /// One of a tenant's audit events by id, if it exists.
    pub async fn audit_event(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        on_pool!(self, audit_get(tenant_id, id))
    }

    /// A tenant's audit events, oldest first, all in memory (tests; the admin API streams them
    /// with [`Store::for_each_audit_event`]).
    pub async fn audit_events(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        on_pool!(self, audit_list(tenant_id))
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, ping())
    }

    /// Runs one SQL statement as given, for tests that set up states the API cannot make
    /// (a newer schema, a corrupt row). Not for production code.
    #[doc(hidden)]
    pub async fn execute_raw_for_tests(&self, sql: &'static str) -> Result<u64, StoreError> {
        on_pool!(self, execute_raw(sql))
    }

    /// Takes the database's write lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the transaction
    /// an admin write takes) and holds it until [`WriteLockForTests::release`], for tests of what
    /// a busy database answers. Not for production code.
    #[doc(hidden)]
    pub async fn hold_write_lock_for_tests(&self) -> Result<WriteLockForTests, StoreError> {
        Ok(WriteLockForTests(self.begin(true).await?))
    }

    /// The database's plan for `sql`, one line per step, for tests that check an index is used.
    /// Not for production code.
    #[doc(hidden)]
    pub async fn query_plan_for_tests(&self, sql: &'static str) -> Result<Vec<String>, StoreError> {
        on_pool!(self, query_plan(sql))
    }

    /// The database's plans for the writes to one open session (its last-seen time, its end, a
    /// broker's close), by name, for the test that checks each finds its row by its key.
    #[doc(hidden)]
    pub async fn session_write_plans_for_tests(
        &self,
    ) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
        on_pool!(self, session_write_plans())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

// Behaviours are tested on both databases in tests/conformance.rs.

/// `PRAGMA mmap_size` of every SQLite connection: SQLite's maximum (`SQLITE_MAX_MMAP_SIZE`).
const SQLITE_MMAP_SIZE: &str = "2147418112";

#[cfg(test)]
mod tests {
    use super::*;

    // A larger value would be clamped silently by the SQLite build: this one is taken whole,
    // on every connection of the pool.
    #[tokio::test]
    async fn sqlite_maps_the_database_up_to_its_limit_on_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("a.db")).await.unwrap();
        let Pool::Sqlite(pool) = &store.pool else {
            panic!("a SQLite store")
        };
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut c = pool.acquire().await.unwrap();
            let size: i64 = sqlx::query_scalar("PRAGMA mmap_size")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(size.to_string(), SQLITE_MMAP_SIZE);
            held.push(c);
        }
    }

    #[test]
    fn connection_failures_are_unavailable_and_retryable() {
        let refused = StoreError::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let reset = StoreError::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        let timed_out = StoreError::Database(sqlx::Error::PoolTimedOut);
        for e in [&refused, &reset, &timed_out] {
            assert!(e.is_unavailable() && e.is_retryable(), "{e}");
        }
        let closed = StoreError::Database(sqlx::Error::PoolClosed);
        assert!(closed.is_unavailable() && !closed.is_retryable());
        for e in [
            StoreError::Corrupt("x".into()),
            StoreError::InvalidUrl("x".into()),
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::SchemaTooNew {
                found: 9,
                supported: 1,
            },
        ] {
            assert!(!e.is_unavailable() && !e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn sqlstates_and_sqlite_codes_are_classified() {
        for c in ["57P01", "57P02", "57P03", "08006", "08001", "53300"] {
            assert!(pg_unavailable(c), "{c}");
        }
        for c in ["23505", "40001", "42P01", "57014"] {
            assert!(!pg_unavailable(c), "{c}");
        }
        // SQLITE_BUSY, BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT, SQLITE_LOCKED, LOCKED_SHAREDCACHE.
        for c in [5, 261, 517, 773, 6, 262] {
            assert!(sqlite_busy(c), "{c}");
        }
        // SQLITE_CONSTRAINT_UNIQUE, SQLITE_FULL, SQLITE_CORRUPT, SQLITE_IOERR.
        for c in [2067, 13, 11, 10] {
            assert!(!sqlite_busy(c), "{c}");
        }
    }

    #[tokio::test]
    async fn a_locked_sqlite_database_is_retryable_not_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        // A second connection that does not wait for the lock, while the store holds it.
        let mut other = sqlx::SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(Duration::ZERO),
        )
        .await
        .unwrap();
        let tx = store.begin(true).await.unwrap();
        let e: StoreError = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap_err()
            .into();
        assert!(e.is_retryable() && !e.is_unavailable(), "{e}");
        drop(tx);
    }
}
