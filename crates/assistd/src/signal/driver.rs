//! The driver: the one task that owns the [`Broker`]. It feeds the machine every input with
//! `now` and carries out every output in order: messages to connections, policy evaluations
//! (on their own tasks, answered as inputs), relay tickets, the relay, live-state ops and
//! queries (awaited inline and answered at once), and records for the records writer.

use assist_live::LiveStore;
use assist_relay::{Relay, Role as RelayRole, TicketAuthority};
use assist_session::code::normalize_code;
use assist_session::message::{ClientMessage, ClientRequest, CloseCode, RelayAccess, SessionId};
use assist_session::{
    Broker, ConnId, Crypto, DeviceRef, EvalId, LaunchError, LiveAnswer, LiveCode, LiveToken,
    Output, Party, RecordEvent, Timestamp,
};
use assist_store::Store;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::cluster::{self, Body, Cluster};
use super::conn::Outbound;
use super::records::{self, StoreWrite};
use super::{now, RelayEndpoint};
use crate::facts;

/// How long a shutting-down node waits for its outbox (writes, envelopes, and what its
/// connections are told) before it closes the connections.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// Inputs to the driver.
pub(super) enum HubInput {
    Connect {
        party: Party,
        out: mpsc::Sender<Outbound>,
        reply: oneshot::Sender<ConnId>,
    },
    Text {
        conn: ConnId,
        text: String,
    },
    Disconnect {
        conn: ConnId,
    },
    Decision {
        eval: EvalId,
        decision: assist_policy::Decision,
    },
    SettingsChanged {
        tenant: String,
        block_chat: bool,
        enabled: bool,
    },
    AdminLaunch {
        party: Party,
        device_id: String,
        reply: oneshot::Sender<Result<SessionId, LaunchError>>,
    },
    /// Cluster mode: an envelope from another node.
    Peer {
        from: String,
        body: Body,
    },
    /// Cluster mode: the `moveIn` of local connection `conn` to `owner` reached no subscriber
    /// there; the connection comes back to this broker and its request is answered
    /// `unavailable`.
    MoveFailed {
        conn: ConnId,
        owner: String,
        replay: Option<String>,
    },
    /// Cluster mode: Redis answered a live-state query (the hub goes on with other inputs
    /// meanwhile; the machine keeps what it needs until the answer).
    LiveAnswer {
        token: LiveToken,
        answer: LiveAnswer,
    },
    /// Cluster mode: where the first request of idle local connection `conn` goes, looked
    /// up in Redis while the hub went on (`owner`: the node it moves to; `None`: this broker).
    Routed {
        conn: ConnId,
        text: String,
        owner: Option<String>,
    },
    /// Cluster mode: a node's heartbeat expired.
    NodeDead(String),
    /// Cluster mode: the bus reconnected; re-write this node's live state (`attempt` counts
    /// the tries: a failed one is tried again, [`REASSERT_RETRY`] later, up to
    /// [`REASSERT_ATTEMPTS`] times).
    Reassert {
        attempt: u32,
    },
    /// The node drains: no new sessions (`Broker::handle_draining`).
    Draining,
    /// The grace is over: every session ends with `shuttingDown`; the reply comes once the
    /// ends are queued to the connections.
    ShuttingDown {
        reply: oneshot::Sender<()>,
    },
}

/// How long after a failed re-assertion it is tried again (Redis answers the bus before the
/// live-state connection's breaker has closed again).
const REASSERT_RETRY: Duration = Duration::from_millis(250);
/// How many times a re-assertion is tried (together about 15 s).
const REASSERT_ATTEMPTS: u32 = 60;

/// Cluster mode's routing state in the driver (docs/architecture.md, "Cluster mode").
#[derive(Default)]
pub(super) struct Routes {
    /// Local connections (sockets here) moved to another node: conn → owner node.
    moved: HashMap<ConnId, String>,
    /// Remote connections in this broker, by (home node, home conn id), and back.
    remote: HashMap<(String, u64), ConnId>,
    remote_rev: HashMap<ConnId, (String, u64)>,
    /// The party of each local connection (to move it).
    parties: HashMap<ConnId, Party>,
    /// Sessions whose relay is on another node: sid → that node.
    relay_of: HashMap<SessionId, String>,
    /// Local connections whose request is being routed ([`HubInput::Routed`]), with the
    /// texts they sent meanwhile, handled in order once the answer is in.
    routing: HashMap<ConnId, VecDeque<String>>,
}

/// Texts a connection may send while its first request is being routed (a Redis round
/// trip); one more closes it as abuse (4429).
const ROUTING_QUEUE: usize = 32;

/// What a local connection's first request needs looked up before it is routed.
enum Lookup {
    /// The session a code opens (by digest): its owner node.
    Code(assist_session::code::CodeDigest),
    /// A device asked for: is it connected here, or on which node.
    Device(DeviceRef),
}

/// The signalling service's metrics (`assist_signal_*`); no user, tenant or session ids as labels.
#[derive(Clone)]
pub struct SignalMetrics {
    pub(super) connections: prometheus::IntGauge,
    pub(super) sessions: prometheus::IntGauge,
    /// `assist_signal_sessions_by_state{state}`: pending, joined, active.
    by_state: [prometheus::IntGauge; 3],
    /// `assist_signal_active_sessions{mode}`, in the order of `Mode::ALL`.
    active_by_mode: [prometheus::IntGauge; assist_policy::Mode::ALL.len()],
    /// `assist_signal_pairing_seconds`: session created (code issued, launch sent) → active.
    pairing: prometheus::Histogram,
    /// `assist_signal_join_to_active_seconds`: sharer joined → active.
    join_to_active: prometheus::Histogram,
    decisions: prometheus::IntCounterVec,
    started: prometheus::IntCounterVec,
    ended: prometheus::IntCounterVec,
    /// The records writer's (`assist_store_write*`).
    pub(super) store: records::StoreMetrics,
}

impl SignalMetrics {
    /// Sessions the broker holds now (the `assist_signal_sessions` gauge).
    pub fn sessions(&self) -> i64 {
        self.sessions.get()
    }

    /// Publishes the broker's session gauges. The counts by state and mode are the broker's
    /// own, kept as sessions change (`Broker::session_counts`, O(1)), rather than computed
    /// at scrape time: the broker belongs to this task, so a scrape would need a round trip
    /// to it, and a recount walks every session; setting seven atomics after each input is
    /// cheaper than either.
    pub(super) fn set_sessions(&self, broker: &Broker) {
        let counts = broker.session_counts();
        self.sessions.set(broker.session_count() as i64);
        for (gauge, n) in
            self.by_state
                .iter()
                .zip([counts.pending, counts.joined, counts.active_total()])
        {
            gauge.set(n as i64);
        }
        for (gauge, n) in self.active_by_mode.iter().zip(counts.active) {
            gauge.set(n as i64);
        }
    }

    /// A session became active: its pairing latencies.
    fn observe_started(&self, started: Timestamp, requested: Timestamp, joined: Timestamp) {
        let secs =
            |from: Timestamp| started.as_millis().saturating_sub(from.as_millis()) as f64 / 1000.0;
        self.pairing.observe(secs(requested));
        self.join_to_active.observe(secs(joined));
    }

    /// Registers the families in `registry`.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
        // Pairing includes people (typing a code, consenting): milliseconds to minutes.
        const PAIRING_BUCKETS: [f64; 16] = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            300.0, 600.0,
        ];
        let connections =
            IntGauge::new("assist_signal_connections", "Open signalling connections.")?;
        let sessions = IntGauge::new(
            "assist_signal_sessions",
            "Sessions the broker holds (any state before ended).",
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                "assist_signal_decisions_total",
                "Policy decisions for mode requests, by result (allow or the deny reason).",
            ),
            &["result"],
        )?;
        let started = IntCounterVec::new(
            Opts::new(
                "assist_signal_sessions_started_total",
                "Sessions that became active, by mode.",
            ),
            &["mode"],
        )?;
        let ended = IntCounterVec::new(
            Opts::new(
                "assist_signal_sessions_ended_total",
                "Active sessions that ended, by reason.",
            ),
            &["reason"],
        )?;
        let by_state_vec = IntGaugeVec::new(
            Opts::new(
                "assist_signal_sessions_by_state",
                "Sessions the broker holds by state: pending (waiting for the sharer: code not \
                 redeemed, launch not answered), joined (no mode granted yet), active.",
            ),
            &["state"],
        )?;
        let active_vec = IntGaugeVec::new(
            Opts::new(
                "assist_signal_active_sessions",
                "Active sessions the broker holds, by the mode in force.",
            ),
            &["mode"],
        )?;
        // Every series exists from the start (at 0), so dashboards and alerts see them.
        let by_state =
            ["pending", "joined", "active"].map(|s| by_state_vec.with_label_values(&[s]));
        let active_by_mode =
            assist_policy::Mode::ALL.map(|m| active_vec.with_label_values(&[m.as_str()]));
        let pairing = Histogram::with_opts(
            HistogramOpts::new(
                "assist_signal_pairing_seconds",
                "Time from a session's creation (code issued, or launch sent) to active (the \
                 first mode granted and the tickets issued).",
            )
            .buckets(PAIRING_BUCKETS.to_vec()),
        )?;
        let join_to_active = Histogram::with_opts(
            HistogramOpts::new(
                "assist_signal_join_to_active_seconds",
                "Time from the sharer joining (code redeemed, launch accepted) to active.",
            )
            .buckets(PAIRING_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(by_state_vec))?;
        registry.register(Box::new(active_vec))?;
        registry.register(Box::new(pairing.clone()))?;
        registry.register(Box::new(join_to_active.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(ended.clone()))?;
        let store = records::StoreMetrics::register(registry)?;
        Ok(Self {
            connections,
            sessions,
            by_state,
            active_by_mode,
            pairing,
            join_to_active,
            decisions,
            started,
            ended,
            store,
        })
    }
}

pub(super) struct Driver {
    pub(super) metrics: SignalMetrics,
    pub(super) broker: Broker,
    /// Codes, the session directory and presence, shared with the admin API.
    pub(super) live: Arc<dyn LiveStore>,
    pub(super) conns: HashMap<ConnId, mpsc::Sender<Outbound>>,
    pub(super) store: Store,
    /// Policy facts cached between evaluations (dropped when the directory changes).
    pub(super) facts: Arc<facts::FactsCache>,
    /// This node's relay; `None` on a broker-only node (tickets are then placed elsewhere).
    pub(super) relay: Option<Relay>,
    pub(super) tickets: Arc<TicketAuthority>,
    pub(super) endpoint: RelayEndpoint,
    pub(super) tx: mpsc::Sender<HubInput>,
    /// The bounded queue to the records writer (a full one drops, never waits).
    pub(super) store_tx: records::RecordsQueue,
    /// Cluster mode's handles (`None`: embedded, one node).
    pub(super) cluster: Option<Arc<Cluster>>,
    /// Hashes typed codes as the broker does (cluster mode looks codes up before the broker).
    pub(super) crypto: super::crypto::HmacCrypto,
    pub(super) routes: Routes,
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<HubInput>,
        mut relay_reports: Option<mpsc::UnboundedReceiver<assist_relay::SessionReport>>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut next_conn = 1u64;
        let mut fresh_conn = move || {
            let id = ConnId(next_conn);
            next_conn += 1;
            id
        };
        loop {
            let deadline = self.broker.poll_timeout().map(|t| {
                let wait = t.as_millis().saturating_sub(now().as_millis());
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            tokio::select! {
                _ = cancel.cancelled() => {
                    for (_, out) in self.conns.drain() {
                        let _ = out.try_send(Outbound::Close(CloseCode::GoingAway));
                    }
                    return;
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    self.broker.handle_timeout(now());
                }
                report = async { match relay_reports.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                    match report {
                        Some(r) => self.relay_report(r, now()),
                        None => relay_reports = None,
                    }
                }
                input = rx.recv() => {
                    let Some(input) = input else { return };
                    let t = now();
                    match input {
                        HubInput::Connect { party, out, reply } => {
                            let id = fresh_conn();
                            self.conns.insert(id, out);
                            if self.cluster.is_some() {
                                self.routes.parties.insert(id, party.clone());
                            }
                            if let Err(e) = self.broker.handle_connect(id, party, t) {
                                tracing::warn!(error = %e, "signalling connection refused by the broker");
                            }
                            let _ = reply.send(id);
                        }
                        HubInput::Text { conn, text } => {
                            if let Some(text) = self.route_text(conn, text) {
                                // Errors are answered to the client by the machine itself.
                                let _ = self.broker.handle_text(conn, &text, t);
                            }
                        }
                        HubInput::Disconnect { conn } => {
                            self.conns.remove(&conn);
                            self.routes.parties.remove(&conn);
                            self.routes.routing.remove(&conn);
                            match (self.routes.moved.remove(&conn), &self.cluster) {
                                (Some(owner), Some(c)) => c.send(&owner, Body::Closed { conn: conn.0 }),
                                _ => self.broker.handle_disconnect(conn, t),
                            }
                        }
                        HubInput::Decision { eval, decision } => {
                            let result = decision.deny_reason().map(|r| r.as_str()).unwrap_or("allow");
                            self.metrics.decisions.with_label_values(&[result]).inc();
                            let _ = self.broker.handle_decision(eval, decision, t);
                        }
                        HubInput::SettingsChanged { tenant, block_chat, enabled } => {
                            self.broker.handle_settings_changed(&tenant, block_chat, enabled, t);
                        }
                        HubInput::AdminLaunch { party, device_id, reply } => {
                            let _ = reply.send(self.broker.handle_admin_launch(party, &device_id, t));
                        }
                        HubInput::Peer { from, body } => self.peer(from, body, &mut fresh_conn, t).await,
                        HubInput::MoveFailed { conn, owner, replay } => self.move_failed(conn, &owner, replay, t),
                        HubInput::LiveAnswer { token, answer } => {
                            if let Err(e) = self.broker.handle_live_answer(token, answer, t) {
                                tracing::warn!(error = %e, "a live-state answer was refused");
                            }
                        }
                        HubInput::Routed { conn, text, owner } => self.routed(conn, text, owner, t),
                        HubInput::NodeDead(node) => self.node_dead(&node, t),
                        HubInput::Reassert { attempt } => self.reassert(attempt).await,
                        HubInput::Draining => self.broker.handle_draining(t),
                        HubInput::ShuttingDown { reply } => {
                            self.broker.handle_shutting_down(t);
                            self.drain().await;
                            // What the connections are told leaves before they are closed.
                            if let Some(c) = &self.cluster {
                                if tokio::time::timeout(FLUSH_BOUND, c.flush()).await.is_err() {
                                    tracing::warn!("the cluster outbox did not empty before the shutdown");
                                }
                            }
                            let _ = reply.send(());
                        }
                    }
                }
            }
            self.drain().await;
            self.metrics.connections.set(self.conns.len() as i64);
            self.metrics.set_sessions(&self.broker);
        }
    }

    /// Cluster mode's routing of a text frame from a local socket: forwarded to the owner when
    /// the connection has moved; moved (with this request replayed there) when it asks for a
    /// session that lives on another node. `Some(text)` is for the local broker. Where that
    /// needs a Redis read (a code's session, a device's node), the read runs in a task of its
    /// own and answers [`HubInput::Routed`]: the hub does not wait a round trip per request.
    fn route_text(&mut self, conn: ConnId, text: String) -> Option<String> {
        let Some(c) = self.cluster.clone() else {
            return Some(text);
        };
        if let Some(owner) = self.routes.moved.get(&conn) {
            c.send(owner, Body::Text { conn: conn.0, text });
            return None;
        }
        if let Some(waiting) = self.routes.routing.get_mut(&conn) {
            if waiting.len() < ROUTING_QUEUE {
                waiting.push_back(text);
            } else if let Some(tx) = self.conns.get(&conn) {
                tracing::warn!(
                    conn = conn.0,
                    "a connection sent too much while its request was routed; closing it"
                );
                let _ = tx.try_send(Outbound::Close(CloseCode::Abuse));
            }
            return None;
        }
        if !self.broker.is_idle(conn) {
            return Some(text);
        }
        let lookup = match ClientMessage::parse(&text).map(|m| m.request) {
            Ok(ClientRequest::RedeemCode { code }) => {
                normalize_code(&code).map(|code| Lookup::Code(self.crypto.code_digest(&code)))
            }
            Ok(ClientRequest::RequestSession { device_id, .. }) => {
                let tenant = self.routes.parties.get(&conn)?.tenant_id.clone();
                Some(Lookup::Device(DeviceRef {
                    tenant_id: tenant,
                    device_id,
                }))
            }
            _ => None,
        };
        let Some(lookup) = lookup else {
            return Some(text);
        };
        self.routes.routing.insert(conn, VecDeque::new());
        let live = self.live.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let owner = match lookup {
                Lookup::Code(digest) => code_owner(&c, digest).await,
                Lookup::Device(device) => device_owner(&c, live.as_ref(), &device).await,
            };
            let _ = tx.send(HubInput::Routed { conn, text, owner }).await;
        });
        None
    }

    /// The answer to [`Self::route_text`]'s lookup for `conn`: its request moves it to `owner`
    /// or goes to this broker, then what it sent meanwhile follows, in order. A connection
    /// closed meanwhile is forgotten; one the broker gave a session meanwhile stays here.
    fn routed(&mut self, conn: ConnId, text: String, owner: Option<String>, t: Timestamp) {
        let Some(waiting) = self.routes.routing.remove(&conn) else {
            return;
        };
        match (owner, self.cluster.clone()) {
            (Some(owner), Some(c)) if self.broker.is_idle(conn) => {
                self.move_conn(&c, conn, owner, Some(text));
            }
            _ => {
                let _ = self.broker.handle_text(conn, &text, t);
            }
        }
        for text in waiting {
            if let Some(text) = self.route_text(conn, text) {
                let _ = self.broker.handle_text(conn, &text, t);
            }
        }
    }

    /// Moves idle local connection `conn` to node `owner`: the local broker forgets it, the
    /// owner's broker takes it (and handles `replay` first); the socket stays here.
    fn move_conn(&mut self, c: &Cluster, conn: ConnId, owner: String, replay: Option<String>) {
        let Some(party) = self.routes.parties.get(&conn).cloned() else {
            return;
        };
        self.broker.handle_disconnect(conn, now());
        tracing::debug!(conn = conn.0, owner = %owner, "signalling connection moved");
        let delivered = c.send_tracked(
            &owner,
            Body::MoveIn {
                conn: conn.0,
                party,
                replay: replay.clone(),
            },
        );
        let tx = self.tx.clone();
        let to = owner.clone();
        tokio::spawn(async move {
            if !delivered.await.unwrap_or(false) {
                let _ = tx
                    .send(HubInput::MoveFailed {
                        conn,
                        owner: to,
                        replay,
                    })
                    .await;
            }
        });
        self.routes.moved.insert(conn, owner);
    }

    /// A move that did not reach its owner: the connection is this broker's again (if it is
    /// still open and still moved there) and the request it carried is answered `unavailable`.
    fn move_failed(&mut self, conn: ConnId, owner: &str, replay: Option<String>, t: Timestamp) {
        if self.routes.moved.get(&conn).map(String::as_str) != Some(owner) {
            return;
        }
        self.routes.moved.remove(&conn);
        let (Some(party), Some(tx)) = (
            self.routes.parties.get(&conn).cloned(),
            self.conns.get(&conn),
        ) else {
            return;
        };
        tracing::warn!(
            conn = conn.0,
            owner,
            "a moved connection did not reach its owner; kept here"
        );
        let id = replay
            .as_deref()
            .and_then(|text| ClientMessage::parse(text).ok())
            .map(|m| m.id);
        let event = assist_session::ServerEvent::Error {
            id,
            code: assist_session::message::ErrorCode::Unavailable,
            message: "the node holding this session cannot be reached now; try again".into(),
            session_id: None,
        };
        let _ = tx.try_send(Outbound::Text(event.to_json()));
        if let Err(e) = self.broker.handle_connect(conn, party, t) {
            tracing::warn!(error = %e, "a connection taken back was refused by the broker");
        }
    }

    /// An envelope from node `from`.
    async fn peer(
        &mut self,
        from: String,
        body: Body,
        fresh_conn: &mut impl FnMut() -> ConnId,
        t: Timestamp,
    ) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        match body {
            Body::MoveIn {
                conn: hc,
                party,
                replay,
            } => {
                let key = (from, hc);
                if self.routes.remote.contains_key(&key) {
                    return;
                }
                let id = fresh_conn();
                self.routes.remote.insert(key.clone(), id);
                self.routes.remote_rev.insert(id, key);
                if let Err(e) = self.broker.handle_connect(id, party, t) {
                    tracing::warn!(error = %e, "a moved connection was refused by the broker");
                }
                if let Some(text) = replay {
                    let _ = self.broker.handle_text(id, &text, t);
                }
            }
            Body::Text { conn: hc, text } => {
                if let Some(id) = self.routes.remote.get(&(from, hc)) {
                    let _ = self.broker.handle_text(*id, &text, t);
                }
            }
            Body::Closed { conn: hc } => {
                if let Some(id) = self.routes.remote.remove(&(from, hc)) {
                    self.routes.remote_rev.remove(&id);
                    self.broker.handle_disconnect(id, t);
                }
            }
            Body::Out { conn: hc, text } => {
                let conn = ConnId(hc);
                if self.routes.moved.get(&conn) == Some(&from) {
                    if let Some(tx) = self.conns.get(&conn) {
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            tx.try_send(Outbound::Text(text))
                        {
                            let _ = tx.try_send(Outbound::Close(CloseCode::Slow));
                        }
                    }
                }
            }
            Body::OutClose { conn: hc, code } => {
                let conn = ConnId(hc);
                if self.routes.moved.get(&conn) == Some(&from) {
                    if let Some(tx) = self.conns.get(&conn) {
                        let code = CloseCode::from_code(code).unwrap_or(CloseCode::Internal);
                        let _ = tx.try_send(Outbound::Close(code));
                    }
                }
            }
            Body::Launch {
                req,
                party,
                device_id,
            } => {
                let user = party.user_ref();
                let result = self.broker.handle_admin_launch(party, &device_id, t);
                if let (Ok(sid), Some(user)) = (&result, user) {
                    if self.broker.is_unattached(sid) {
                        // The helper has no idle connection here: ask a node that has one.
                        let c2 = c.clone();
                        tokio::spawn(async move {
                            if let Ok(nodes) = c2.live.user_nodes(&user).await {
                                if let Some(node) = c2.other_alive(&nodes) {
                                    c2.send(&node, Body::PullHelper { user });
                                }
                            }
                        });
                    }
                }
                c.send(&from, cluster::launch_reply(req, result));
            }
            Body::PullHelper { user } => {
                let idle = self
                    .routes
                    .parties
                    .iter()
                    .filter(|(id, p)| {
                        p.user_ref().as_ref() == Some(&user)
                            && !self.routes.moved.contains_key(id)
                            && self.broker.is_idle(**id)
                    })
                    .map(|(id, _)| *id)
                    .min();
                if let Some(conn) = idle {
                    self.move_conn(&c, conn, from, None);
                }
            }
            Body::RelaySetMode {
                session_id,
                mode,
                chat,
            } => {
                if let Some(relay) = &self.relay {
                    relay.set_mode(session_id.as_str(), mode, chat);
                }
            }
            Body::RelayEnd { session_id, reason } => {
                if let Some(relay) = &self.relay {
                    relay.end_session(session_id.as_str(), &reason);
                }
            }
            Body::LegLeft { session_id, role } => {
                let role = match role.as_str() {
                    "helper" => assist_session::Role::Helper,
                    _ => assist_session::Role::Sharer,
                };
                self.broker.handle_relay_leg_left(&session_id, role, t);
            }
            Body::Settings {
                tenant,
                block_chat,
                enabled,
            } => self
                .broker
                .handle_settings_changed(&tenant, block_chat, enabled, t),
            Body::RedeemFailed { user } => self.broker.handle_peer_redemption_failure(&user, t),
            // A relay-only node's counters for a session of this node's: into its record.
            Body::RelayStats { session_id, stats } => {
                let _ = self
                    .store_tx
                    .send(StoreWrite::Stats(stats.into_report(session_id)));
            }
            Body::LaunchReply { .. } | Body::Facts | Body::Draining => {}
        }
    }

    /// Node `node` died: local sockets moved to it are told and closed (`unavailable`, then
    /// close 1001 `goingAway`); connections homed there leave this broker (their sessions end
    /// for the side here with `disconnected`).
    fn node_dead(&mut self, node: &str, t: Timestamp) {
        let lost: Vec<ConnId> = self
            .routes
            .moved
            .iter()
            .filter(|(_, owner)| owner.as_str() == node)
            .map(|(id, _)| *id)
            .collect();
        for conn in lost {
            self.routes.moved.remove(&conn);
            if let Some(tx) = self.conns.get(&conn) {
                let event = assist_session::ServerEvent::Error {
                    id: None,
                    code: assist_session::message::ErrorCode::Unavailable,
                    message: "the node holding this session stopped; reconnect".into(),
                    session_id: None,
                };
                let _ = tx.try_send(Outbound::Text(event.to_json()));
                let _ = tx.try_send(Outbound::Close(CloseCode::GoingAway));
            }
        }
        let homed: Vec<((String, u64), ConnId)> = self
            .routes
            .remote
            .iter()
            .filter(|((home, _), _)| home == node)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (key, id) in homed {
            self.routes.remote.remove(&key);
            self.routes.remote_rev.remove(&id);
            self.broker.handle_disconnect(id, t);
        }
        self.routes.relay_of.retain(|_, n| n != node);
    }

    /// The bus came back (Redis may have restarted empty): re-write this node's presence,
    /// sessions and codes. A failure (the live-state connection not answering yet) is tried
    /// again [`REASSERT_RETRY`] later, on a task, so the driver does not wait.
    async fn reassert(&mut self, attempt: u32) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let ops = self.broker.live_snapshot();
        let n = ops.len();
        match c.live.reassert(ops).await {
            Ok(()) => tracing::info!(ops = n, attempt, "live state re-asserted"),
            Err(e) if attempt + 1 < REASSERT_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "re-asserting the live state failed; trying again");
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(REASSERT_RETRY).await;
                    let _ = tx
                        .send(HubInput::Reassert {
                            attempt: attempt + 1,
                        })
                        .await;
                });
            }
            Err(e) => tracing::warn!(error = %e, "re-asserting the live state failed; giving up"),
        }
    }

    /// A relay session ended: a dropped leg ends the broker's session; the counters go to the
    /// session record.
    fn relay_report(&mut self, r: assist_relay::SessionReport, now: Timestamp) {
        if let Some(role) = r.left {
            let role = match role {
                RelayRole::Helper => assist_session::Role::Helper,
                RelayRole::Sharer => assist_session::Role::Sharer,
            };
            let sid = SessionId(r.sid.clone());
            match &self.cluster {
                // The session lives on another node: tell its owner.
                Some(c) if self.broker.session(&sid).is_none() => {
                    let c = c.clone();
                    let role = match role {
                        assist_session::Role::Helper => "helper",
                        assist_session::Role::Sharer => "sharer",
                    };
                    tokio::spawn(async move {
                        if let Ok(Some(owner)) = c.live.session_owner(&sid).await {
                            c.send(
                                &owner,
                                Body::LegLeft {
                                    session_id: sid,
                                    role: role.to_owned(),
                                },
                            );
                        }
                    });
                }
                _ => self.broker.handle_relay_leg_left(&sid, role, now),
            }
        }
        let _ = self.store_tx.send(StoreWrite::Stats(r));
    }

    /// Carries out every output of the machine, in order. In process, live-state ops and
    /// queries are applied inline (a query's answer goes back to the machine before the next
    /// output). In cluster mode they join the cluster's outbox with the envelopes (one ordered
    /// queue, one Redis connection): neither is awaited, and a query's answer comes back as a
    /// [`HubInput::LiveAnswer`].
    async fn drain(&mut self) {
        while let Some(out) = self.broker.poll_output() {
            match out {
                Output::Send { conn, event } => {
                    if let (Some((home, hc)), Some(c)) =
                        (self.routes.remote_rev.get(&conn), &self.cluster)
                    {
                        c.send(
                            home,
                            Body::Out {
                                conn: *hc,
                                text: event.to_json(),
                            },
                        );
                    } else if let Some(tx) = self.conns.get(&conn) {
                        to_local(self.cluster.as_deref(), tx, Outbound::Text(event.to_json()))
                            .await;
                    }
                }
                Output::Close { conn, code } => {
                    // A remote connection leaves this broker when its home reports the close.
                    if let (Some((home, hc)), Some(c)) =
                        (self.routes.remote_rev.get(&conn), &self.cluster)
                    {
                        c.send(
                            home,
                            Body::OutClose {
                                conn: *hc,
                                code: code.code(),
                            },
                        );
                    } else if let Some(tx) = self.conns.get(&conn) {
                        to_local(self.cluster.as_deref(), tx, Outbound::Close(code)).await;
                    }
                }
                Output::Evaluate(req) => {
                    let store = self.store.clone();
                    let facts = self.facts.clone();
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        match evaluate(&store, &facts, &req).await {
                            Ok(decision) => {
                                let _ = tx
                                    .send(HubInput::Decision {
                                        eval: req.eval,
                                        decision,
                                    })
                                    .await;
                            }
                            // The machine answers the helper `unavailable` when no decision comes.
                            Err(e) => tracing::error!(error = %e, "loading policy facts failed"),
                        }
                    });
                }
                Output::IssueTickets {
                    session_id,
                    mode,
                    chat,
                } => {
                    let sid = session_id.as_str();
                    // Cluster mode: the relay node the registry's load says (it may be this one).
                    let placed = self
                        .cluster
                        .as_ref()
                        .and_then(|c| c.place().filter(|p| p.node_id != c.node_id));
                    let (relay_id, address, quic_addr) = match (&placed, &self.relay) {
                        (Some(p), _) => {
                            self.routes
                                .relay_of
                                .insert(session_id.clone(), p.node_id.clone());
                            (
                                assist_relay::RelayIdentity {
                                    name: p.relay.name.clone(),
                                    instance: p.relay.inst.clone(),
                                },
                                p.relay.address.clone(),
                                p.relay.quic_addr.clone(),
                            )
                        }
                        (None, Some(relay)) => (
                            relay.identity().clone(),
                            self.endpoint.address.clone(),
                            Some(self.endpoint.quic_addr.clone()),
                        ),
                        (None, None) => {
                            // A broker-only node with no relay node alive in the registry.
                            tracing::warn!("no relay to issue tickets for: none is alive");
                            let _ = self.broker.handle_tickets_failed(&session_id, now());
                            continue;
                        }
                    };
                    let access = |role| RelayAccess {
                        ticket: self.tickets.mint(sid, role, mode, chat, &relay_id),
                        address: address.clone(),
                        wss_url: format!("wss://{address}/v1/relay"),
                        quic_addr: quic_addr.clone(),
                    };
                    let (h, s) = (access(RelayRole::Helper), access(RelayRole::Sharer));
                    if let Err(e) = self.broker.handle_tickets(&session_id, h, s, now()) {
                        tracing::debug!(error = %e, "tickets for a session that is gone");
                    }
                }
                Output::RelaySetMode {
                    session_id,
                    mode,
                    chat,
                } => match (self.routes.relay_of.get(&session_id), &self.cluster) {
                    (Some(node), Some(c)) => c.send(
                        node,
                        Body::RelaySetMode {
                            session_id,
                            mode,
                            chat,
                        },
                    ),
                    _ => {
                        if let Some(relay) = &self.relay {
                            relay.set_mode(session_id.as_str(), mode, chat);
                        }
                    }
                },
                Output::RelayEnd { session_id, reason } => {
                    match (self.routes.relay_of.remove(&session_id), &self.cluster) {
                        (Some(node), Some(c)) => c.send(
                            &node,
                            Body::RelayEnd {
                                session_id,
                                reason: reason.as_str().to_owned(),
                            },
                        ),
                        _ => {
                            if let Some(relay) = &self.relay {
                                relay.end_session(session_id.as_str(), reason.as_str());
                            }
                        }
                    }
                }
                Output::Record(ev) => {
                    match &ev {
                        RecordEvent::Started {
                            mode,
                            started_at,
                            requested_at,
                            joined_at,
                            ..
                        } => {
                            self.metrics
                                .started
                                .with_label_values(&[mode.as_str()])
                                .inc();
                            self.metrics
                                .observe_started(*started_at, *requested_at, *joined_at);
                        }
                        RecordEvent::Ended { reason, .. } => self
                            .metrics
                            .ended
                            .with_label_values(&[reason.as_str()])
                            .inc(),
                        RecordEvent::ModeRaised { .. } | RecordEvent::Seen { .. } => {}
                    }
                    let _ = self.store_tx.send(StoreWrite::Record(Box::new(ev)));
                }
                Output::Audit(ev) => {
                    let _ = self.store_tx.send(records::audit_write(ev));
                }
                // Its own limiter has counted it; a cluster's other brokers count it too.
                Output::RedemptionFailed { user } => {
                    if let Some(c) = &self.cluster {
                        c.broadcast(cluster::Body::RedeemFailed { user });
                    }
                }
                Output::Live(op) => match &self.cluster {
                    // Cluster mode: queued behind the envelopes and writes before it; the
                    // outbox pipelines what queues while a round trip is out.
                    Some(c) => c.apply(op).await,
                    // In process the future is ready at once: no task, no channel hop.
                    None => {
                        if let Err(e) = self.live.apply(op).await {
                            tracing::warn!(error = %e, "a live-state write failed");
                        }
                    }
                },
                Output::LiveQuery { token, query } => {
                    // Cluster mode: queued like a write; its answer comes back as an input.
                    if let Some(c) = &self.cluster {
                        let answer = c.query(query).await;
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            let answer = answer.await.unwrap_or(LiveAnswer::Failed);
                            let _ = tx.send(HubInput::LiveAnswer { token, answer }).await;
                        });
                        continue;
                    }
                    let answer = self.live.query(query).await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "a live-state query failed");
                        LiveAnswer::Failed
                    });
                    if let Err(e) = self.broker.handle_live_answer(token, answer, now()) {
                        tracing::warn!(error = %e, "a live-state answer was refused");
                    }
                }
            }
        }
    }
}

/// Hands `msg` to a local connection: in cluster mode behind the outbox
/// ([`Cluster::to_local`]), else at once.
async fn to_local(cluster: Option<&Cluster>, tx: &mpsc::Sender<Outbound>, msg: Outbound) {
    match cluster {
        Some(c) => c.to_local(tx, msg).await,
        None => cluster::deliver(tx, msg),
    }
}

/// The live node other than this one that a device asked for is connected to, if it is not
/// connected here.
async fn device_owner(c: &Cluster, live: &dyn LiveStore, device: &DeviceRef) -> Option<String> {
    let here = live.device_connections(device).await.unwrap_or_default();
    if !here.is_empty() {
        return None;
    }
    match c.live.device_nodes(device).await {
        Ok(nodes) => c.other_alive(&nodes),
        Err(_) => None,
    }
}

/// The live node other than this one that owns the session a code (by digest) opens, if any.
async fn code_owner(c: &Cluster, digest: assist_session::code::CodeDigest) -> Option<String> {
    // One round trip: the code, and its session's directory entry.
    let (sid, owner) = match c.live.code_and_owner(&digest).await {
        Ok(Some((LiveCode::Pending(sid), owner))) => (sid, owner),
        other => {
            tracing::debug!(code = ?other, "a redeemed code has no pending session; answered here");
            return None;
        }
    };
    let Some(owner) = owner else {
        tracing::debug!(session = %sid.0, "a redeemed code's session is not listed; answered here");
        return None;
    };
    let alive = c.other_alive(std::slice::from_ref(&owner));
    if alive.is_none() && owner != c.node_id {
        tracing::debug!(session = %sid.0, owner, "a redeemed code's session is on a node not alive; answered here");
    }
    alive
}

async fn evaluate(
    store: &Store,
    facts: &facts::FactsCache,
    req: &assist_session::EvaluateRequest,
) -> Result<assist_policy::Decision, assist_store::StoreError> {
    let tenant = &req.helper.tenant_id;
    let policy = facts.tenant_policy(store, tenant).await?;
    let helper = assist_policy::Helper {
        tenant_id: tenant.clone(),
        user_id: req.helper.user_id.clone(),
        group_ids: facts.groups_of(store, tenant, &req.helper.user_id).await?,
    };
    let device = match &req.device_id {
        Some(d) if &req.sharer_tenant_id == tenant => {
            Some(facts.device(store, tenant, d, tenant).await?)
        }
        Some(d) => Some(assist_policy::Device {
            id: d.clone(),
            tenant_id: req.sharer_tenant_id.clone(),
            enrolled: false,
            compliance: assist_policy::ComplianceState::Unknown,
            primary_user_id: None,
            group_ids: Default::default(),
        }),
        None => None,
    };
    let sharer_in_tenant = |user_id: String| async move {
        Ok::<_, assist_store::StoreError>(assist_policy::Sharer {
            tenant_id: tenant.clone(),
            group_ids: facts.groups_of(store, tenant, &user_id).await?,
            user_id,
        })
    };
    let sharer = match &req.sharer {
        Some(s) if &s.tenant_id == tenant => sharer_in_tenant(s.user_id.clone()).await?,
        Some(s) => assist_policy::Sharer {
            tenant_id: s.tenant_id.clone(),
            user_id: s.user_id.clone(),
            group_ids: Default::default(),
        },
        // Nobody signed in on the device (a device token): the device's primary user stands for
        // the sharer in scope checks, when the directory names one.
        None => match device.as_ref().and_then(|d| d.primary_user_id.clone()) {
            Some(uid) if &req.sharer_tenant_id == tenant => sharer_in_tenant(uid).await?,
            _ => assist_policy::Sharer {
                tenant_id: req.sharer_tenant_id.clone(),
                user_id: String::new(),
                group_ids: Default::default(),
            },
        },
    };
    let request = assist_policy::SessionRequest {
        helper,
        sharer,
        device,
        mode: req.mode,
    };
    Ok(assist_policy::decide(&policy, &request))
}
