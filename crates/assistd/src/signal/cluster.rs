//! Cluster mode's side of the signalling service: the envelopes nodes send each other over the
//! Redis bus, relay placement from the registry, and the heartbeat that keeps this node in the
//! registry, notices dead nodes and cleans up after them (docs/architecture.md, "Cluster
//! mode"). The driver does the routing; this file holds what it routes with.

use assist_live_redis::{
    BatchItem, BatchReply, Bus, Load, NodeRecord, RedisLive, Registry, RelayAd, Roles,
};
use assist_policy::Mode;
use assist_session::{LaunchError, LiveAnswer, LiveOp, LiveQuery, Party, SessionId, UserRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

use super::conn::Outbound;
use super::driver::HubInput;
use assist_live::LiveError;
use assist_session::message::CloseCode;

/// The envelope format's version (`v`); a node drops envelopes of another version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Writes, queries and envelopes queued for Redis; past it new envelopes are dropped (with a
/// warning) and writes and queries wait.
const OUTBOX: usize = 8192;
/// Items sent in one pipeline at most.
const PUBLISH_BATCH: usize = 64;
/// How long an admin launch waits for the device's node to answer.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(5);
/// `sessionEnded`-less end: what the end reason of a dead node's session records says.
pub const NODE_LOST: &str = "nodeLost";

/// One message between nodes: JSON `{"v":1,"from":"<node>","t":"<kind>",…fields}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_VERSION`].
    pub v: u8,
    /// The sending node.
    pub from: String,
    /// What it says.
    #[serde(flatten)]
    pub body: Body,
}

/// What an [`Envelope`] says. `conn` is always the connection's id on its home node (the node
/// holding its socket); the owner keys the remote connection by `(from, conn)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Body {
    /// Home → owner: connection `conn` of `party` moves to the owner; `replay` is the request
    /// that made it move, to handle there first.
    MoveIn {
        conn: u64,
        party: Party,
        replay: Option<String>,
    },
    /// Home → owner: a text frame from the socket of a moved connection.
    Text { conn: u64, text: String },
    /// Home → owner: the moved connection's socket closed.
    Closed { conn: u64 },
    /// Owner → home: write this text frame to the socket.
    Out { conn: u64, text: String },
    /// Owner → home: close the socket with this WebSocket close code.
    OutClose { conn: u64, code: u16 },
    /// Any → the device's node: run an admin launch (`requestRemoteAssistance`) there.
    Launch {
        req: u64,
        party: Party,
        device_id: String,
    },
    /// The device's node → the asker: the launch's session id, or its error code.
    LaunchReply {
        req: u64,
        session_id: Option<SessionId>,
        error: Option<String>,
    },
    /// Owner → a node holding `user`'s connections: move one idle connection of the user here
    /// (an admin-launched session waits for its helper).
    PullHelper { user: UserRef },
    /// Owner → relay node: change a relay session's mode.
    RelaySetMode {
        session_id: SessionId,
        mode: Mode,
        chat: bool,
    },
    /// Owner (or a dead node's cleaner, broadcast) → relay node: end a relay session.
    RelayEnd {
        session_id: SessionId,
        reason: String,
    },
    /// Relay node → owner: a leg of the relay session left.
    LegLeft { session_id: SessionId, role: String },
    /// Relay-only node → owner: the counters of a relay session that ended, for its record
    /// (the owner writes them as it writes its own relay's).
    RelayStats {
        session_id: SessionId,
        stats: RelayStats,
    },
    /// Broadcast: the sender started draining (no new relay session is placed there); the
    /// registry says so too, from the heartbeat the sender writes at once.
    Draining,
    /// Broadcast: a tenant's settings changed.
    Settings {
        tenant: String,
        block_chat: bool,
        enabled: bool,
    },
    /// Broadcast: the directory changed; drop cached policy facts.
    Facts,
    /// Broadcast: `user` failed a code redemption on the sender; it counts towards the user's
    /// and the tenant's brute-force locks on every node.
    RedeemFailed { user: UserRef },
}

fn launch_error_name(e: LaunchError) -> &'static str {
    match e {
        LaunchError::DeviceOffline => "deviceOffline",
        LaunchError::DeviceBusy => "deviceBusy",
        LaunchError::NotAUser => "notAUser",
        _ => "unavailable",
    }
}

fn launch_error_from(name: &str) -> LaunchError {
    match name {
        "deviceOffline" => LaunchError::DeviceOffline,
        "deviceBusy" => LaunchError::DeviceBusy,
        "notAUser" => LaunchError::NotAUser,
        _ => LaunchError::Unavailable,
    }
}

/// An admin launch's outcome as a [`Body::LaunchReply`].
pub fn launch_reply(req: u64, result: Result<SessionId, LaunchError>) -> Body {
    match result {
        Ok(sid) => Body::LaunchReply {
            req,
            session_id: Some(sid),
            error: None,
        },
        Err(e) => Body::LaunchReply {
            req,
            session_id: None,
            error: Some(launch_error_name(e).to_owned()),
        },
    }
}

/// A relay session's counters in a [`Body::RelayStats`]: what the session record takes from
/// an [`assist_relay::SessionReport`] (`record_fields`), round-trip times in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayStats {
    /// Frames forwarded helper → sharer and sharer → helper.
    pub frames: [u64; 2],
    /// Bytes forwarded, same order.
    pub bytes: [u64; 2],
    /// Frames dropped (any reason).
    pub dropped: u64,
    /// Screen frames dropped under congestion.
    pub screen_dropped: u64,
    /// Keyframe requests sent to the sharer.
    pub keyframe_requests: u64,
    /// Mean round-trip time of the helper's and the sharer's leg, if measured.
    pub rtt_us: [Option<u64>; 2],
    /// How long the session was paired, in milliseconds.
    pub paired_ms: u64,
}

impl RelayStats {
    /// The counters of `r`.
    pub fn of(r: &assist_relay::SessionReport) -> RelayStats {
        let us = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        RelayStats {
            frames: r.frames,
            bytes: r.bytes,
            dropped: r.dropped,
            screen_dropped: r.screen_dropped,
            keyframe_requests: r.keyframe_requests,
            rtt_us: [us(r.rtt[0]), us(r.rtt[1])],
            paired_ms: u64::try_from(r.paired_for.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Back into a report for session `sid` (with no leg left: that travels as `legLeft`), to
    /// go through the records writer as a local relay's report does.
    pub fn into_report(self, sid: SessionId) -> assist_relay::SessionReport {
        assist_relay::SessionReport {
            sid: sid.0,
            frames: self.frames,
            bytes: self.bytes,
            dropped: self.dropped,
            screen_dropped: self.screen_dropped,
            keyframe_requests: self.keyframe_requests,
            rtt: self.rtt_us.map(|us| us.map(Duration::from_micros)),
            paired_for: Duration::from_millis(self.paired_ms),
            end: "remote",
            left: None,
        }
    }
}

/// Where this node's relay is reached, as the registry advertises it.
#[derive(Debug, Clone)]
pub struct Advert {
    /// The relay identity tickets name (`relay`, `inst`).
    pub identity: assist_relay::RelayIdentity,
    /// `host:port` of the WSS relay.
    pub address: String,
    /// `host:port` of the QUIC relay.
    pub quic_addr: String,
}

/// A relay chosen for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The relay's node.
    pub node_id: String,
    /// Its advertisement.
    pub relay: RelayAd,
}

/// The placement rule: among the nodes alive, not draining and advertising a relay, the one
/// with the fewest relay sessions (per its last heartbeat); a tie goes to the smallest node id.
pub fn place(nodes: &BTreeMap<String, NodeRecord>) -> Option<Placement> {
    nodes
        .values()
        .filter(|r| !r.draining && r.roles.relay)
        .filter_map(|r| r.relay.clone().map(|ad| (r, ad)))
        .min_by(|(a, _), (b, _)| {
            (a.load.relay_sessions, &a.node_id).cmp(&(b.load.relay_sessions, &b.node_id))
        })
        .map(|(r, ad)| Placement {
            node_id: r.node_id.clone(),
            relay: ad,
        })
}

/// What the driver queues for Redis, in the order it happened: live-state writes and queries
/// and envelopes leave through one queue and one connection ([`run_outbox`]), so Redis runs
/// them in that order.
enum Outgoing {
    /// An envelope: to a node (`None`: to all), its bytes, and who wants to know whether a
    /// node's subscriber took it.
    Envelope(Option<String>, Vec<u8>, Option<oneshot::Sender<bool>>),
    /// A live-state write.
    Op(LiveOp),
    /// A live-state query and who waits for its answer.
    Query(LiveQuery, oneshot::Sender<LiveAnswer>),
    /// A message for a connection of this node, handed to it once what was queued before it
    /// is done (a client never hears of a session before the session is in the directory).
    Deliver(mpsc::Sender<Outbound>, Outbound),
    /// Told once everything queued before it is done ([`Cluster::flush`]).
    Flush(oneshot::Sender<()>),
}

/// Hands `msg` to a local connection's writer; one that is not reading is closed.
pub(super) fn deliver(tx: &mpsc::Sender<Outbound>, msg: Outbound) {
    let close = matches!(msg, Outbound::Close(_));
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
        if !close {
            tracing::warn!("a signalling connection is not reading; closing it");
        }
        let _ = tx.try_send(Outbound::Close(CloseCode::Slow));
    }
}

/// The outbox's task: what queued while the last round trip was out leaves together, in
/// order, in one pipeline ([`RedisLive::run_batch`]), so a busy node does not wait one round
/// trip per write, query or envelope. A write Redis refused, or a batch it did not answer, is
/// logged (the live state is re-asserted when Redis comes back empty); a query then answers
/// [`LiveAnswer::Failed`] and an envelope "not taken".
/// `bus` is held for as long as the node runs: its subscriber stops when it is dropped.
async fn run_outbox(
    live: RedisLive,
    mut rx: mpsc::Receiver<Outgoing>,
    bus: Bus,
    done: Arc<AtomicU64>,
) {
    let _subscribed = bus;
    let mut queued: Vec<Outgoing> = Vec::with_capacity(PUBLISH_BATCH);
    while rx.recv_many(&mut queued, PUBLISH_BATCH).await > 0 {
        // Woken by the first item, the task lets the driver go on with the input it is
        // handling: the items that input queues next join this batch, not one of their own.
        tokio::task::yield_now().await;
        while queued.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(item) => queued.push(item),
                Err(_) => break,
            }
        }
        let items: Vec<BatchItem<'_>> = queued
            .iter()
            .filter_map(|o| match o {
                Outgoing::Envelope(to, payload, _) => Some(BatchItem::Publish {
                    to: to.as_deref(),
                    payload,
                }),
                Outgoing::Op(op) => Some(BatchItem::Op(op)),
                Outgoing::Query(q, _) => Some(BatchItem::Query(q)),
                Outgoing::Deliver(..) | Outgoing::Flush(_) => None,
            })
            .collect();
        let replies = match live.run_batch(&items).await {
            Ok(replies) => replies,
            Err(e) => {
                tracing::warn!(error = %e, items = items.len(), "a live-state batch failed");
                items.iter().map(|_| Err(e.clone())).collect()
            }
        };
        drop(items);
        let mut replies = replies.into_iter();
        let n = queued.len() as u64;
        for out in queued.drain(..) {
            let reply = match &out {
                Outgoing::Deliver(..) | Outgoing::Flush(_) => Ok(BatchReply::Applied),
                _ => replies
                    .next()
                    .unwrap_or_else(|| Err(LiveError("no reply".into()))),
            };
            match (out, reply) {
                (Outgoing::Deliver(tx, msg), _) => deliver(&tx, msg),
                (Outgoing::Flush(tx), _) => {
                    let _ = tx.send(());
                }
                (Outgoing::Envelope(to, _, delivered), reply) => {
                    let taken = match reply {
                        Ok(BatchReply::Published(Some(n))) => n > 0,
                        // The batch's failure is logged once, above.
                        Err(_) => false,
                        Ok(_) => {
                            tracing::warn!(to = ?to, "a cluster envelope was refused");
                            false
                        }
                    };
                    if let Some(d) = delivered {
                        let _ = d.send(taken);
                    }
                }
                (Outgoing::Op(_), Ok(_)) => {}
                (Outgoing::Op(_), Err(e)) => {
                    tracing::warn!(error = %e, "a live-state write failed");
                }
                (Outgoing::Query(_, tx), Ok(BatchReply::Answer(a))) => {
                    let _ = tx.send(a);
                }
                (Outgoing::Query(_, tx), reply) => {
                    if let Err(e) = reply {
                        tracing::warn!(error = %e, "a live-state query failed");
                    }
                    let _ = tx.send(LiveAnswer::Failed);
                }
            }
        }
        done.fetch_add(n, Ordering::Release);
    }
}

/// Cluster mode's handles, shared by the driver, the hub and the heartbeat.
pub struct Cluster {
    /// This node.
    pub node_id: String,
    /// The shared live state (the driver's `LiveStore`, with the cluster-only reads).
    pub live: RedisLive,
    /// The node registry.
    pub registry: Registry,
    /// Time between heartbeats; a node is dead 3 heartbeats after its last.
    pub heartbeat: Duration,
    /// See [`crate::config::ClusterSettings::stale_session_grace`].
    pub stale_session_grace: Duration,
    /// Set while the node drains: the registry says so and no relay session is placed here.
    pub draining: Arc<AtomicBool>,
    /// The nodes alive as of the last heartbeat, by id (this one included).
    nodes: Mutex<BTreeMap<String, NodeRecord>>,
    outbox: mpsc::Sender<Outgoing>,
    /// Items put in the outbox, and items it has finished ([`Cluster::outbox_idle`]).
    queued: AtomicU64,
    done: Arc<AtomicU64>,
    launches: Mutex<HashMap<u64, oneshot::Sender<Result<SessionId, LaunchError>>>>,
    next_req: AtomicU64,
    /// Wakes the heartbeat before its tick (the drain began).
    beat_now: tokio::sync::Notify,
    /// How many times the bus's connected state changed (the heartbeat's sign of a Redis
    /// outage, after which Redis may have come back empty).
    bus_changes: AtomicU64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects this node's handles; starts the publisher (one task, so envelopes leave in the
    /// order they were sent). Returns the bus's inbound receiver and connected-state watch for
    /// [`run_inbound`].
    pub async fn connect(
        url: &str,
        node_id: &str,
        heartbeat: Duration,
        stale_session_grace: Duration,
        draining: Arc<AtomicBool>,
        tracker: &tokio_util::task::TaskTracker,
    ) -> anyhow::Result<(
        Arc<Cluster>,
        mpsc::Receiver<Vec<u8>>,
        tokio::sync::watch::Receiver<bool>,
    )> {
        let live = RedisLive::connect(url, node_id, assist_live_redis::RedisOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Redis: {e}"))?;
        let registry = live.registry();
        let (bus, inbound) = Bus::start(url, node_id)
            .map_err(|e| anyhow::anyhow!("starting the cluster bus: {e}"))?;
        let connected = bus.connected();
        let (outbox, rx) = mpsc::channel::<Outgoing>(OUTBOX);
        let done = Arc::new(AtomicU64::new(0));
        tracker.spawn(run_outbox(live.clone(), rx, bus, done.clone()));
        let cluster = Arc::new(Cluster {
            node_id: node_id.to_owned(),
            live,
            registry,
            heartbeat,
            stale_session_grace,
            draining,
            nodes: Mutex::new(BTreeMap::new()),
            outbox,
            queued: AtomicU64::new(0),
            done,
            launches: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            beat_now: tokio::sync::Notify::new(),
            bus_changes: AtomicU64::new(0),
        });
        Ok((cluster, inbound, connected))
    }

    /// Joins the cluster `settings` names, before the node serves: connects
    /// ([`Cluster::connect`]) and compares this node's keys with the cluster's
    /// ([`crate::keys::check_cluster_keys`]: the relay-ticket key's id, and `broker_keys`, the
    /// [`crate::keys::keys_fingerprint`] of a node running the broker). Keys that differ are a
    /// [`crate::keys::KeysDiffer`] error, and the node has not joined the registry.
    pub(crate) async fn join(
        settings: &crate::config::ClusterSettings,
        draining: Arc<AtomicBool>,
        ticket_key_id: &str,
        broker_keys: Option<&str>,
        tracker: &tokio_util::task::TaskTracker,
    ) -> anyhow::Result<super::ClusterStart> {
        let redis = crate::config::redact_url(&settings.redis_url);
        let (cluster, inbound, connected) = Cluster::connect(
            &settings.redis_url,
            &settings.node_id,
            settings.heartbeat,
            settings.stale_session_grace,
            draining,
            tracker,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cluster mode: Redis at {redis}: {e:#}"))?;
        crate::keys::check_cluster_keys(&cluster.registry, ticket_key_id, broker_keys).await?;
        tracing::info!(node = %settings.node_id, %redis, "cluster mode");
        Ok(super::ClusterStart {
            cluster,
            inbound,
            connected,
        })
    }

    fn push(&self, to: Option<&str>, body: Body, delivered: Option<oneshot::Sender<bool>>) {
        let env = Envelope {
            v: ENVELOPE_VERSION,
            from: self.node_id.clone(),
            body,
        };
        let Ok(bytes) = serde_json::to_vec(&env) else {
            return;
        };
        // A dropped envelope drops its `delivered` sender too: its receiver hears "not taken".
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(e) =
            self.outbox
                .try_send(Outgoing::Envelope(to.map(str::to_owned), bytes, delivered))
        {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!("the cluster outbox is full; an envelope was dropped");
            }
        }
    }

    /// Queues a live-state write behind everything queued before it (waiting while the outbox
    /// is full: a write is never dropped).
    pub async fn apply(&self, op: LiveOp) {
        if self.enqueue(Outgoing::Op(op)).await.is_err() {
            tracing::warn!("the cluster outbox is closed; a live-state write was dropped");
        }
    }

    /// Puts `item` in the outbox, counted, waiting while it is full; gives it back once the
    /// outbox is closed (the node is stopping).
    async fn enqueue(&self, item: Outgoing) -> Result<(), Outgoing> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.outbox
            .send(item)
            .await
            .map_err(|mpsc::error::SendError(item)| {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                item
            })
    }

    /// Waits until everything queued so far is done (or the outbox is closed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.enqueue(Outgoing::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether everything put in the outbox is done.
    pub fn outbox_idle(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.queued.load(Ordering::Acquire)
    }

    /// Hands `msg` to a local connection: at once when the outbox is idle, else after
    /// everything queued before it is done (what a client hears never runs ahead of this
    /// node's live-state writes: a code it is given is already in the directory).
    pub async fn to_local(&self, tx: &mpsc::Sender<Outbound>, msg: Outbound) {
        if self.outbox_idle() {
            return deliver(tx, msg);
        }
        if let Err(Outgoing::Deliver(tx, msg)) =
            self.enqueue(Outgoing::Deliver(tx.clone(), msg)).await
        {
            deliver(&tx, msg);
        }
    }

    /// Queues a live-state query behind everything queued before it (so it sees this node's
    /// earlier writes); the receiver hears its answer ([`LiveAnswer::Failed`] when Redis did not
    /// answer it; nothing when the node is stopping).
    pub async fn query(&self, query: LiveQuery) -> oneshot::Receiver<LiveAnswer> {
        let (tx, rx) = oneshot::channel();
        // Given back only once the outbox is closed: its sender is then dropped.
        let _ = self.enqueue(Outgoing::Query(query, tx)).await;
        rx
    }

    /// Queues `body` for node `to`.
    pub fn send(&self, to: &str, body: Body) {
        self.push(Some(to), body, None);
    }

    /// Queues `body` for node `to`; the answer says whether that node's subscriber took it
    /// (`false`: not sent, or nobody subscribed there, e.g. just after a Redis restart, before
    /// the node resubscribed; pub/sub keeps nothing for later).
    pub fn send_tracked(&self, to: &str, body: Body) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.push(Some(to), body, Some(tx));
        rx
    }

    /// Queues `body` for every node (this one hears it too and ignores its own).
    pub fn broadcast(&self, body: Body) {
        self.push(None, body, None);
    }

    /// The drain began (the `draining` flag is set): the heartbeat writes it to the registry at
    /// once rather than at its next tick, and every other node hears it ([`Body::Draining`]) so
    /// that none places a relay session here in between.
    pub fn draining_started(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.beat_now.notify_one();
        self.broadcast(Body::Draining);
    }

    /// `node` said it is draining: no relay session is placed there from now on.
    fn mark_draining(&self, node: &str) {
        if let Some(r) = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(node)
        {
            r.draining = true;
        }
    }

    /// Decodes an envelope from the bus: `None` (with a warning) for one that does not decode,
    /// and for another version's or this node's own broadcasts. A [`Body::Draining`] is noted
    /// here, for placement, and handed on.
    pub(crate) fn decode(&self, payload: &[u8]) -> Option<Envelope> {
        let env: Envelope = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "a cluster envelope does not decode; dropped");
                return None;
            }
        };
        if env.v != ENVELOPE_VERSION || env.from == self.node_id {
            return None;
        }
        if let Body::Draining = env.body {
            self.mark_draining(&env.from);
        }
        Some(env)
    }

    /// Whether `node` was alive at the last heartbeat.
    pub fn alive(&self, node: &str) -> bool {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(node)
    }

    /// The first of `nodes` that is alive and not this one.
    pub fn other_alive(&self, nodes: &[String]) -> Option<String> {
        nodes
            .iter()
            .find(|n| **n != self.node_id && self.alive(n))
            .cloned()
    }

    /// Where to put a new relay session ([`place`] over the nodes alive).
    pub fn place(&self) -> Option<Placement> {
        place(
            &self
                .nodes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Asks `node` to run an admin launch and waits for its answer, at most [`LAUNCH_TIMEOUT`].
    pub async fn remote_launch(
        &self,
        node: &str,
        party: Party,
        device_id: String,
    ) -> Result<SessionId, LaunchError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(req, tx);
        self.send(
            node,
            Body::Launch {
                req,
                party,
                device_id,
            },
        );
        let answer = tokio::time::timeout(LAUNCH_TIMEOUT, rx).await;
        self.launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&req);
        match answer {
            Ok(Ok(r)) => r,
            _ => Err(LaunchError::Unavailable),
        }
    }

    fn launch_answered(&self, req: u64, session_id: Option<SessionId>, error: Option<String>) {
        let waiter = self
            .launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&req);
        if let Some(w) = waiter {
            let _ = w.send(match (session_id, error) {
                (Some(sid), None) => Ok(sid),
                (_, e) => Err(launch_error_from(e.as_deref().unwrap_or(""))),
            });
        }
    }
}

/// Reads the bus: decodes envelopes (dropping malformed ones and this node's own broadcasts),
/// answers launch replies and facts invalidations itself, and hands the rest to the driver.
/// When the bus reconnects, asks the driver to re-assert this node's live state.
pub(super) async fn run_inbound(
    cluster: Arc<Cluster>,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    mut connected: tokio::sync::watch::Receiver<bool>,
    facts: Arc<crate::facts::FactsCache>,
    driver: mpsc::Sender<HubInput>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut was_connected = *connected.borrow();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *connected.borrow_and_update();
                if now && !was_connected {
                    tracing::info!("the cluster bus is back; re-asserting this node's live state");
                    let _ = driver.send(HubInput::Reassert { attempt: 0 }).await;
                }
                if now != was_connected {
                    cluster.bus_changes.fetch_add(1, Ordering::SeqCst);
                }
                was_connected = now;
            }
            payload = inbound.recv() => {
                let Some(payload) = payload else { return };
                let Some(env) = cluster.decode(&payload) else { continue };
                match env.body {
                    Body::LaunchReply { req, session_id, error } => {
                        cluster.launch_answered(req, session_id, error)
                    }
                    Body::Facts => facts.invalidate(),
                    Body::Draining => {}
                    body => {
                        let _ = driver.send(HubInput::Peer { from: env.from, body }).await;
                    }
                }
            }
        }
    }
}

/// What the heartbeat reports about this node.
pub struct HeartbeatSource {
    /// This node's relay, if it runs one.
    pub relay: Option<(assist_relay::Relay, Advert)>,
    /// The broker's side; `None` on a relay-only node, which neither notices dead nodes nor
    /// cleans up after them (it has no sessions of its own and no store).
    pub broker: Option<BrokerSource>,
}

/// The heartbeat's view of a node running the broker.
pub struct BrokerSource {
    /// Open signalling connections.
    pub connections: prometheus::IntGauge,
    /// Sessions the broker holds.
    pub sessions: prometheus::IntGauge,
    /// The store, for closing a dead node's session records.
    pub store: assist_store::Store,
    /// The driver, told about nodes that died.
    pub(super) driver: mpsc::Sender<HubInput>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every heartbeat: writes this node's record (alive for 3 heartbeats), reads the registry,
/// tells the driver about nodes that died since the last read, and cleans up after a dead
/// node when this node wins the claim: forgets its live state, closes its session records
/// ([`NODE_LOST`]) and ends its relay sessions on every node (dead nodes: brokers only). A
/// drain beginning ([`Cluster::draining_started`]) writes the record at once. On stop, leaves
/// the registry.
pub(crate) async fn run_heartbeat(
    cluster: Arc<Cluster>,
    source: HeartbeatSource,
    cancel: tokio_util::sync::CancellationToken,
) {
    let started_at_ms = wall_ms();
    let ttl = cluster.heartbeat * 3;
    let mut alive_before: BTreeSet<String> = BTreeSet::new();
    // After a Redis outage (a failed heartbeat, or the bus lost), Redis may have come back
    // empty: until every node has had a TTL to write its record again, a node missing from
    // the registry is not taken for dead (one whose alive key expired still is).
    let mut outage = false;
    let mut bus_changes = cluster.bus_changes.load(Ordering::SeqCst);
    let mut grace_until: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(cluster.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The sweep of session records no node keeps alive: every half grace, by one node.
    let sweep_every = (cluster.stale_session_grace / 2).max(cluster.heartbeat);
    let mut next_sweep = tokio::time::Instant::now() + sweep_every;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                if let Err(e) = cluster.registry.remove(&cluster.node_id).await {
                    tracing::debug!(error = %e, "leaving the registry");
                }
                return;
            }
            _ = tick.tick() => {}
            _ = cluster.beat_now.notified() => {}
        }
        let gauge = |g: fn(&BrokerSource) -> &prometheus::IntGauge| {
            source
                .broker
                .as_ref()
                .map_or(0, |b| g(b).get().max(0) as u64)
        };
        let record = NodeRecord {
            node_id: cluster.node_id.clone(),
            roles: Roles {
                broker: source.broker.is_some(),
                relay: source.relay.is_some(),
            },
            relay: source.relay.as_ref().map(|(_, a)| RelayAd {
                name: a.identity.name.clone(),
                inst: a.identity.instance.clone(),
                address: a.address.clone(),
                quic_addr: Some(a.quic_addr.clone()),
            }),
            load: Load {
                connections: gauge(|b| &b.connections),
                sessions: gauge(|b| &b.sessions),
                relay_sessions: source
                    .relay
                    .as_ref()
                    .map_or(0, |(r, _)| r.active_sessions() as u64),
            },
            draining: cluster.draining.load(Ordering::SeqCst),
            started_at_ms,
            heartbeat_at_ms: wall_ms(),
        };
        if let Err(e) = cluster.registry.heartbeat(&record, ttl).await {
            tracing::warn!(error = %e, "registry heartbeat failed");
            outage = true;
            continue;
        }
        let listed = match cluster.registry.nodes().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "reading the registry failed");
                outage = true;
                continue;
            }
        };
        let changes = cluster.bus_changes.load(Ordering::SeqCst);
        if outage || changes != bus_changes {
            outage = false;
            bus_changes = changes;
            grace_until = Some(tokio::time::Instant::now() + ttl);
        }
        let in_grace = grace_until.is_some_and(|g| tokio::time::Instant::now() < g);
        let mut alive = BTreeMap::new();
        let mut dead: BTreeSet<String> = BTreeSet::new();
        for (r, is_alive) in listed {
            if is_alive {
                alive.insert(r.node_id.clone(), r);
            } else if r.node_id != cluster.node_id {
                dead.insert(r.node_id);
            }
        }
        // A node that was alive and is no longer listed at all was removed by its cleaner
        // (after an outage: once the grace is over, it did not come back).
        if in_grace {
            alive_before.extend(alive.keys().cloned());
        } else {
            for gone in alive_before.iter().filter(|n| !alive.contains_key(*n)) {
                if *gone != cluster.node_id {
                    dead.insert(gone.clone());
                }
            }
            alive_before = alive.keys().cloned().collect();
        }
        *cluster
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = alive;
        let Some(broker) = &source.broker else {
            continue;
        };
        for node in dead {
            let _ = broker.driver.send(HubInput::NodeDead(node.clone())).await;
            let relay = source.relay.as_ref().map(|(r, _)| r);
            cleanup(&cluster, &broker.store, relay, &node, ttl).await;
        }
        // Not while Redis may have come back empty and the owners are still writing their
        // sessions' entries again.
        if !in_grace && tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + sweep_every;
            sweep_stale_sessions(&cluster, &broker.store, sweep_every).await;
        }
    }
}

/// How many stale records one sweep looks at (the rest wait for the next).
const SWEEP_LIMIT: u32 = 1000;

/// Closes the session records that no node keeps alive, if this node wins the sweep's claim
/// (one node per `period`): records still open whose heartbeat (`last_seen`) is older than
/// [`Cluster::stale_session_grace`] and whose session is not in the live directory. A dead
/// node's records are closed by [`cleanup`] from its directory entries; these are the ones it
/// cannot find: a node that died while Redis was away, when Redis came back empty.
async fn sweep_stale_sessions(cluster: &Cluster, store: &assist_store::Store, period: Duration) {
    match cluster.registry.claim_sweep(period).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(error = %e, "claiming the stale-session sweep failed");
            return;
        }
    }
    let grace =
        time::Duration::try_from(cluster.stale_session_grace).unwrap_or(time::Duration::HOUR);
    let Ok(cutoff) = (time::OffsetDateTime::now_utc() - grace)
        .format(&time::format_description::well_known::Rfc3339)
    else {
        return;
    };
    let stale = match store.stale_open_sessions(&cutoff, SWEEP_LIMIT).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "the stale-session sweep could not read the store");
            return;
        }
    };
    let ids: Vec<SessionId> = stale.iter().cloned().map(SessionId).collect();
    let listed = match cluster.live.sessions_listed(&ids).await {
        Ok(listed) => listed,
        // Without the directory nothing is known to be gone: leave it to the next sweep.
        Err(e) => {
            tracing::debug!(error = %e, "the stale-session sweep could not read the directory");
            return;
        }
    };
    let orphans: Vec<String> = stale
        .into_iter()
        .zip(listed)
        .filter_map(|(id, listed)| (!listed).then_some(id))
        .collect();
    if orphans.is_empty() {
        return;
    }
    match store.close_sessions(&orphans, NODE_LOST).await {
        Ok(n) => tracing::warn!(
            sessions = orphans.len(),
            closed = n,
            %cutoff,
            "closed session records no node keeps alive: no heartbeat since the cutoff and not \
             in the live directory ({NODE_LOST})"
        ),
        Err(e) => tracing::error!(error = %e, "closing stale session records failed"),
    }
}

/// Cleans up after dead `node` if this node wins the claim. Its relay sessions end on every
/// node: the others hear a broadcast, this node's `relay` (a node ignores its own broadcasts)
/// is told directly.
async fn cleanup(
    cluster: &Cluster,
    store: &assist_store::Store,
    relay: Option<&assist_relay::Relay>,
    node: &str,
    ttl: Duration,
) {
    match cluster.registry.claim_cleanup(node, ttl).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, node, "claiming a dead node's cleanup failed");
            return;
        }
    }
    let sids = match cluster.live.forget_node(node).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, node, "forgetting a dead node's live state failed");
            return;
        }
    };
    let ids: Vec<String> = sids.iter().map(|s| s.0.clone()).collect();
    if ids.is_empty() {
        // A node that stopped (it leaves the registry) or died idle: nothing to close.
        tracing::info!(node, "a node left the cluster; it had no sessions");
    } else {
        close_lost_sessions(store, node, &ids).await;
    }
    for sid in sids {
        if let Some(relay) = relay {
            relay.end_session(sid.as_str(), NODE_LOST);
        }
        cluster.broadcast(Body::RelayEnd {
            session_id: sid,
            reason: NODE_LOST.to_owned(),
        });
    }
    if let Err(e) = cluster.registry.remove(node).await {
        tracing::warn!(error = %e, node, "removing a dead node from the registry failed");
    }
}

/// Closes the session records of dead `node` ([`NODE_LOST`]).
async fn close_lost_sessions(store: &assist_store::Store, node: &str, ids: &[String]) {
    match store.close_sessions(ids, NODE_LOST).await {
        Ok(n) => tracing::warn!(
            node,
            sessions = ids.len(),
            closed = n,
            "a node died; closed its sessions ({NODE_LOST})"
        ),
        Err(e) => tracing::error!(error = %e, node, "closing a dead node's sessions failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, relay_sessions: u64, draining: bool, relay: bool) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            roles: Roles {
                broker: true,
                relay,
            },
            relay: relay.then(|| RelayAd {
                name: format!("{id}:443"),
                inst: "i".into(),
                address: format!("{id}:443"),
                quic_addr: None,
            }),
            load: Load {
                connections: 0,
                sessions: 0,
                relay_sessions,
            },
            draining,
            started_at_ms: 0,
            heartbeat_at_ms: 0,
        }
    }

    fn placed(nodes: &[NodeRecord]) -> Option<String> {
        let m = nodes
            .iter()
            .map(|n| (n.node_id.clone(), n.clone()))
            .collect();
        place(&m).map(|p| p.node_id)
    }

    #[test]
    fn placement_takes_the_least_loaded_relay_then_the_smallest_id() {
        let a = node("a", 3, false, true);
        let b = node("b", 1, false, true);
        let c = node("c", 1, false, true);
        assert_eq!(
            placed(&[a.clone(), b.clone(), c.clone()]).as_deref(),
            Some("b")
        );
        // Draining nodes and nodes without a relay are never chosen.
        let b_draining = node("b", 0, true, true);
        let c_no_relay = node("c", 0, false, false);
        assert_eq!(
            placed(&[a.clone(), b_draining, c_no_relay]).as_deref(),
            Some("a")
        );
        assert_eq!(placed(&[node("x", 0, true, true)]), None);
        assert_eq!(placed(&[]), None);
    }

    #[test]
    fn relay_stats_carry_what_the_record_takes() {
        let report = assist_relay::SessionReport {
            sid: "s1".into(),
            frames: [3, 40],
            bytes: [120, 90_000],
            dropped: 2,
            screen_dropped: 1,
            keyframe_requests: 4,
            rtt: [Some(Duration::from_micros(12_345)), None],
            paired_for: Duration::from_millis(2_500),
            end: "ended",
            left: Some(assist_relay::Role::Helper),
        };
        let body = Body::RelayStats {
            session_id: SessionId("s1".into()),
            stats: RelayStats::of(&report),
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"t": "relayStats", "sessionId": "s1", "stats": {
                "frames": [3, 40], "bytes": [120, 90000], "dropped": 2, "screenDropped": 1,
                "keyframeRequests": 4, "rttUs": [12345, null], "pairedMs": 2500}})
        );
        let Body::RelayStats { session_id, stats } = serde_json::from_value(json).unwrap() else {
            panic!("not relayStats");
        };
        let back = stats.into_report(session_id);
        assert_eq!(back.sid, "s1");
        assert_eq!(back.record_fields(), report.record_fields());
        assert_eq!(back.left, None, "a leg that left travels as legLeft");
        assert_eq!(
            serde_json::to_value(Body::Draining).unwrap(),
            serde_json::json!({"t": "draining"})
        );
    }

    #[test]
    fn envelopes_round_trip_in_the_documented_shape() {
        let env = Envelope {
            v: ENVELOPE_VERSION,
            from: "node-1".into(),
            body: Body::Text {
                conn: 7,
                text: "{}".into(),
            },
        };
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "from": "node-1", "t": "text", "conn": 7, "text": "{}"})
        );
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert!(matches!(back.body, Body::Text { conn: 7, .. }));
        let reply = serde_json::to_value(launch_reply(3, Err(LaunchError::DeviceBusy))).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"t": "launchReply", "req": 3, "sessionId": null, "error": "deviceBusy"})
        );
        assert_eq!(launch_error_from("deviceBusy"), LaunchError::DeviceBusy);
        assert_eq!(launch_error_from("nonsense"), LaunchError::Unavailable);
    }

    /// A message for a local connection waits for the writes queued before it: while Redis is
    /// paused (`CLIENT PAUSE`) a write is out, so the message is held; it arrives once the
    /// write is done. Envelopes count too: one sent first does not make the outbox look idle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_message_waits_for_the_writes_before_it() {
        // An instance of its own: `CLIENT PAUSE` holds every client of the server.
        if !assist_testkit::RedisInstance::available() {
            return;
        }
        let redis = assist_testkit::RedisInstance::start().expect("a test Redis starts");
        let url = redis.fresh_url();
        let tracker = tokio_util::task::TaskTracker::new();
        let (c, _inbound, _connected) = Cluster::connect(
            &url,
            "n1",
            Duration::from_secs(2),
            Duration::from_secs(60),
            Arc::new(AtomicBool::new(false)),
            &tracker,
        )
        .await
        .expect("connects");
        let idle = || async {
            for _ in 0..500 {
                if c.outbox_idle() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the outbox never went idle");
        };
        let (tx, mut rx) = mpsc::channel(8);
        // Idle: straight through.
        c.to_local(&tx, Outbound::Text("first".into())).await;
        assert!(matches!(rx.try_recv(), Ok(Outbound::Text(t)) if t == "first"));
        c.send("n2", Body::Draining);
        idle().await;

        let client = redis::Client::open(url.as_str()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1000)
            .arg("ALL")
            .query_async(&mut raw)
            .await
            .unwrap();
        let id = SessionId("5e".repeat(16));
        c.apply(LiveOp::PutSession {
            id: id.clone(),
            session: assist_session::LiveSession {
                tenant_id: "t1".into(),
                stage: assist_session::LiveStage::Pending,
                mode: None,
                chat: true,
                helper: None,
                helper_conn: None,
                sharer: None,
                sharer_conn: None,
                device_id: None,
            },
        })
        .await;
        assert!(!c.outbox_idle(), "a write is out");
        c.to_local(&tx, Outbound::Text("after the write".into()))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "held while the write is out");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("delivered once Redis answers");
        assert!(matches!(got, Some(Outbound::Text(t)) if t == "after the write"));
        assert_eq!(
            c.live.session_owner(&id).await.unwrap().as_deref(),
            Some("n1"),
            "the write was done before the message"
        );
        idle().await;
        tracker.close();
    }
}
