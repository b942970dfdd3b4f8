//! # assist-live-redis
//!
//! Cluster mode's Redis layer (issue #13), an IO crate kept thin:
//!
//! - [`RedisLive`]: the live state ([`assist_live::LiveStore`]: codes, the session directory,
//!   presence) in Redis, shared by every node of a cluster. Connection ids are per node: a
//!   presence member is `"<node>/<conn>"`, and the trait's reads return this node's
//!   connections; [`RedisLive::device_nodes`] and [`RedisLive::user_nodes`] say which nodes
//!   hold a device or a user. [`RedisLive::forget_node`] removes what a dead node owned and
//!   [`RedisLive::reassert`] re-writes a node's state after Redis came back empty.
//! - [`Registry`]: the node registry (records with roles, relay advertisement, load and
//!   draining; an alive key per node with a TTL renewed by heartbeat), the cleanup claim that
//!   makes one survivor close a dead node's records, and the cluster's shared-keys fingerprint.
//! - [`Bus`]: messages between nodes over pub/sub (`assist:to:<node>` and `assist:all`), opaque
//!   bytes of bounded size, with a subscriber that reconnects with bounded backoff and reports
//!   its state in a `watch`.
//!
//! Every operation is bounded in time ([`RedisOptions::op_timeout`]): with Redis down, calls
//! return a [`LiveError`] within that bound, and after a connection-level failure a circuit
//! breaker makes them fail at once until a background probe finds Redis answering again
//! ([`RedisOptions::breaker_window`]); nothing panics on what Redis returns (values that do not
//! decode are a [`LiveError`]). The key space is documented in `docs/architecture.md`
//! ("Cluster: the Redis key space") and in [`keys`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

pub use assist_live::LiveError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

mod batch;
mod bus;
mod codec;
pub mod keys;
mod registry;
mod scripts;
mod store;

pub use batch::{BatchItem, BatchReply};
pub use bus::{Bus, BusOptions, MAX_PAYLOAD};
pub use registry::{KeysCheck, Load, NodeRecord, Registry, RelayAd, Roles};
pub use store::RedisLive;

/// Timeouts, reconnection and TTLs of a [`RedisLive`] or [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The safety TTL of a pending code (the machine withdraws its codes itself; this bounds
    /// what a dead node leaves behind). Default 1 hour.
    pub pending_code_ttl: Duration,
    /// The shortest TTL of a remembered-expired code: it expires at its `forget_at` (wall
    /// clock), but never sooner than this from now (clocks differ between nodes, and the machine
    /// removes it itself at `forget_at`). Default 60 s.
    pub min_code_ttl: Duration,
    /// The bound on one whole operation, reconnection included. Default 3 s.
    pub op_timeout: Duration,
    /// How long one command waits for its answer. Default 2 s.
    pub response_timeout: Duration,
    /// How long one connection attempt may take. Default 1 s.
    pub connect_timeout: Duration,
    /// How many times a lost connection is retried (exponential backoff with jitter) before
    /// operations fail; the next operation starts over. Default 3.
    pub reconnect_retries: usize,
    /// The longest pause between two reconnection attempts. Default 1 s.
    pub reconnect_max_delay: Duration,
    /// The circuit breaker's window: after a connection-level failure (refused, reset, no
    /// answer in time), operations on that connection fail at once, without a round trip, while
    /// one background `PING` per window (each bounded by `op_timeout`) checks whether Redis
    /// answers again; the first that does closes the breaker. Default 500 ms.
    pub breaker_window: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            pending_code_ttl: Duration::from_secs(3600),
            min_code_ttl: Duration::from_secs(60),
            op_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            reconnect_retries: 3,
            reconnect_max_delay: Duration::from_secs(1),
            breaker_window: Duration::from_millis(500),
        }
    }
}

/// Checks a node id: 1 to 128 bytes, none of them a space, a control character or `/` (the
/// separator of presence members).
pub fn check_node_id(node_id: &str) -> Result<(), LiveError> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 128
        && !node_id
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(LiveError(format!(
            "invalid node id {node_id:?}: 1 to 128 bytes, no '/', space or control character"
        )))
    }
}

pub(crate) fn redis_error(what: &str, e: redis::RedisError) -> LiveError {
    LiveError(format!("redis {what}: {e}"))
}

/// Runs `f` within `bound`; a Redis error or the timeout is a [`LiveError`].
pub(crate) async fn timed<T>(
    bound: Duration,
    what: &str,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, LiveError> {
    match tokio::time::timeout(bound, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(redis_error(what, e)),
        Err(_) => Err(LiveError(format!(
            "redis {what}: no answer within {bound:?}"
        ))),
    }
}

/// Whether `e` says the connection failed (rather than Redis answering an error).
fn is_connection_failure(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// The circuit breaker of one connection (shared by its clones).
struct Breaker {
    window: Duration,
    /// Open (failing fast) while a probe task runs.
    open: Mutex<bool>,
}

impl Breaker {
    fn is_open(&self) -> bool {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the breaker; `true` if it was closed (the caller starts the probe).
    fn trip(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        !std::mem::replace(&mut *open, true)
    }

    fn close(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = false;
    }
}

/// A connection manager with the bound on each operation and a circuit breaker. Its retry: an
/// operation that found the connection refused or closed (the manager has started
/// reconnecting) is tried once more within the same bound, so an operation just after Redis
/// came back does not fail on the connection that failed while it was away. (A command Redis
/// ran just before the connection dropped may so run twice; the live-state writes are
/// idempotent, and a query's second answer is the one the machine settles with.) After a
/// connection-level failure the breaker opens: operations fail at once (no round trip, no
/// waiting on reconnection) while a background task `PING`s once per
/// [`RedisOptions::breaker_window`]; the first answer closes it.
#[derive(Clone)]
pub(crate) struct Conn {
    manager: ConnectionManager,
    bound: Duration,
    breaker: Arc<Breaker>,
}

impl Conn {
    pub(crate) fn new(manager: ConnectionManager, opts: &RedisOptions) -> Self {
        Conn {
            manager,
            bound: opts.op_timeout,
            breaker: Arc::new(Breaker {
                window: opts.breaker_window,
                open: Mutex::new(false),
            }),
        }
    }

    /// Opens the breaker after a connection-level failure and starts its probe (one per
    /// breaker; it stops when the connection's last clone is dropped).
    fn trip(&self) {
        if !self.breaker.trip() {
            return;
        }
        tracing::warn!(
            window = ?self.breaker.window,
            "redis: connection failed; failing operations fast until it answers again"
        );
        let breaker: Weak<Breaker> = Arc::downgrade(&self.breaker);
        let manager = self.manager.clone();
        let bound = self.bound;
        tokio::spawn(async move {
            loop {
                let window = match breaker.upgrade() {
                    Some(b) => b.window,
                    None => return,
                };
                tokio::time::sleep(window).await;
                if breaker.strong_count() == 0 {
                    return;
                }
                let mut c = manager.clone();
                let ping = timed(bound, "ping", async move {
                    redis::cmd("PING").query_async::<redis::Value>(&mut c).await
                })
                .await;
                if ping.is_ok() {
                    if let Some(b) = breaker.upgrade() {
                        b.close();
                        tracing::info!("redis: answering again; operations resume");
                    }
                    return;
                }
            }
        });
    }

    async fn attempt<T, Fut>(
        &self,
        what: &str,
        f: impl Fn(ConnectionManager) -> Fut,
    ) -> Result<T, LiveError>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.breaker.is_open() {
            return Err(LiveError(format!(
                "redis {what}: unavailable (the connection failed; failing fast until it answers)"
            )));
        }
        let bound = self.bound;
        let run = async {
            match f(self.manager.clone()).await {
                // Refused, or the connection closed (an idle connection whose socket died
                // while Redis was away fails its first command this way, unsent): once more,
                // on the manager's new connection.
                Err(e) if e.is_connection_refusal() || e.is_unrecoverable_error() => {
                    f(self.manager.clone()).await
                }
                r => r,
            }
        };
        match tokio::time::timeout(bound, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_connection_failure(&e) {
                    self.trip();
                }
                Err(redis_error(what, e))
            }
            Err(_) => {
                self.trip();
                Err(LiveError(format!(
                    "redis {what}: no answer within {bound:?}"
                )))
            }
        }
    }

    /// Runs one command.
    pub(crate) async fn cmd<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, LiveError> {
        self.attempt(what, |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs a pipeline, its replies ignored.
    pub(crate) async fn exec(&self, what: &str, pipe: &redis::Pipeline) -> Result<(), LiveError> {
        self.attempt(what, |mut c| async move { pipe.exec_async(&mut c).await })
            .await
    }

    /// Runs a pipeline and returns its replies.
    pub(crate) async fn pipe<T: redis::FromRedisValue>(
        &self,
        what: &str,
        pipe: &redis::Pipeline,
    ) -> Result<T, LiveError> {
        self.attempt(what, |mut c| async move { pipe.query_async(&mut c).await })
            .await
    }

    /// Calls a script (EVALSHA, loading it if Redis does not have it).
    pub(crate) async fn script<T: redis::FromRedisValue>(
        &self,
        what: &str,
        call: &scripts::Call,
    ) -> Result<T, LiveError> {
        self.attempt(what, |mut c| async move { call.invoke(&mut c).await })
            .await
    }
}

pub(crate) fn client(url: &str) -> Result<redis::Client, LiveError> {
    redis::Client::open(url).map_err(|e| LiveError(format!("redis url: {e}")))
}

fn manager_config(opts: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(opts.reconnect_retries)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(opts.reconnect_max_delay)
        .set_response_timeout(Some(opts.response_timeout))
        .set_connection_timeout(Some(opts.connect_timeout))
}

/// A connection manager that connects now (within [`RedisOptions::op_timeout`]).
pub(crate) async fn connect_manager(url: &str, opts: &RedisOptions) -> Result<Conn, LiveError> {
    let client = client(url)?;
    let manager = timed(
        opts.op_timeout,
        "connect",
        ConnectionManager::new_with_config(client, manager_config(opts)),
    )
    .await?;
    Ok(Conn::new(manager, opts))
}

/// A connection manager that connects on first use.
pub(crate) fn lazy_manager(url: &str, opts: &RedisOptions) -> Result<Conn, LiveError> {
    let client = client(url)?;
    let manager = ConnectionManager::new_lazy_with_config(client, manager_config(opts))
        .map_err(|e| redis_error("connect", e))?;
    Ok(Conn::new(manager, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        for ok in ["node-1", "a.b_c:9", &"x".repeat(128)] {
            assert!(check_node_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "a\nb", "\u{7f}", &"x".repeat(129)] {
            assert!(check_node_id(bad).is_err(), "{bad:?}");
        }
    }
}
