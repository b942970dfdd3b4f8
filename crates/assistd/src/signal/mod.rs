//! The signalling service: WSS `/v1/signal` around the sans-IO session machine
//! (`assist-session`). One driver task owns the [`Broker`]; connections, policy evaluation,
//! relay tickets, the relay and the store are the IO it does on the machine's behalf.
//!
//! Run loop (as `assist-session` documents it): every input is fed with `now`, then every
//! output is drained and carried out in order; the driver sleeps until the machine's next
//! deadline or the next input.

pub mod client;
pub mod conn;
pub mod endpoint;

use assist_identity::Identity;
use assist_relay::{Relay, Role as RelayRole, TicketAuthority};
use assist_session::message::{CloseCode, EndReason, Profile, RelayAccess, SessionId};
use assist_session::{
    Broker, BrokerConfig, ConnId, Crypto, DeviceInfo, EvalId, InProcessLiveState, LaunchError,
    LiveState, Output, Party, RecordEvent, Timestamp,
};
use assist_store::sessions::SessionWrite;
use assist_store::{AuditEvent as StoreAudit, Store};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

use crate::facts;
use conn::Outbound;

/// The HMAC key for security-code digests, in the data directory.
pub const CODE_KEY_FILE: &str = "signal-code-key";

fn now() -> Timestamp {
    Timestamp::from_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
    )
}

fn rfc3339(t: Timestamp) -> String {
    let ns = i128::from(t.as_millis()) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Codes are stored as HMAC-SHA-256 digests under a per-deployment key and compared in
/// constant time; randomness comes from the OS.
struct HmacCrypto {
    key: [u8; 32],
}

impl Crypto for HmacCrypto {
    fn fill_random(&mut self, dest: &mut [u8]) {
        if getrandom::fill(dest).is_err() {
            // No OS randomness means no safe codes: fail loudly rather than hand out guessable ones.
            tracing::error!("the OS random generator failed");
            std::process::abort();
        }
    }

    fn code_digest(&self, code: &str) -> assist_session::code::CodeDigest {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| {
            // HMAC accepts keys of any length; this branch cannot be taken.
            <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).expect("fixed-size key")
        });
        mac.update(code.as_bytes());
        assist_session::code::CodeDigest(mac.finalize().into_bytes().into())
    }

    fn digests_equal(
        &self,
        a: &assist_session::code::CodeDigest,
        b: &assist_session::code::CodeDigest,
    ) -> bool {
        use subtle::ConstantTimeEq;
        a.0.ct_eq(&b.0).into()
    }
}

fn load_or_create_key(dir: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let path = dir.join(CODE_KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            Ok(k)
        }
        Ok(_) => anyhow::bail!("{} must hold exactly 32 bytes", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("OS randomness: {e}"))?;
            use std::io::Write;
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            o.open(&path)?.write_all(&k)?;
            Ok(k)
        }
        Err(e) => Err(e.into()),
    }
}

/// Inputs to the driver.
enum HubInput {
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
}

/// The signalling service's metrics (`assist_signal_*`); no user, tenant or session ids as labels.
#[derive(Clone)]
pub struct SignalMetrics {
    connections: prometheus::IntGauge,
    sessions: prometheus::IntGauge,
    decisions: prometheus::IntCounterVec,
    started: prometheus::IntCounterVec,
    ended: prometheus::IntCounterVec,
}

impl SignalMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        use prometheus::{IntCounterVec, IntGauge, Opts};
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
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(started.clone()))?;
        registry.register(Box::new(ended.clone()))?;
        Ok(Self {
            connections,
            sessions,
            decisions,
            started,
            ended,
        })
    }
}

/// Where clients reach the relay (for tickets and `sessionActive`).
#[derive(Debug, Clone)]
pub struct RelayEndpoint {
    /// `host:port` of the HTTPS port (WSS relay).
    pub address: String,
    /// `host:port` of the QUIC port.
    pub quic_addr: String,
}

/// A handle to the signalling service; cheap to clone.
#[derive(Clone)]
pub struct SignalHub {
    tx: mpsc::Sender<HubInput>,
    live: Arc<dyn LiveState>,
    /// The driver's policy facts (the endpoint notes tokens' `groups` claims in it).
    facts: Arc<facts::FactsCache>,
}

impl SignalHub {
    /// Starts the driver. `relay_reports` carries the relay's per-session counters, merged
    /// into the session records when sessions end.
    #[allow(clippy::too_many_arguments)] // each is a distinct handle the driver owns
    pub fn start(
        metrics: SignalMetrics,
        config: BrokerConfig,
        store: Store,
        relay: Relay,
        tickets: Arc<TicketAuthority>,
        endpoint: RelayEndpoint,
        data_dir: &std::path::Path,
        relay_reports: Option<mpsc::UnboundedReceiver<assist_relay::SessionReport>>,
        cancel: tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> anyhow::Result<SignalHub> {
        let key = load_or_create_key(data_dir)?;
        // Single process: the live state is in memory, readable by the admin API directly.
        let live: Arc<dyn LiveState> = Arc::new(InProcessLiveState::new());
        let broker = Broker::with_live_state(config, Box::new(HmacCrypto { key }), live.clone())
            .map_err(|e| anyhow::anyhow!("broker config: {e}"))?;
        let (tx, rx) = mpsc::channel(4096);
        let (store_tx, store_rx) = mpsc::unbounded_channel();
        tracker.spawn(store_writer(store.clone(), store_rx));
        let facts = Arc::new(facts::FactsCache::default());
        let driver = Driver {
            metrics,
            broker,
            conns: HashMap::new(),
            store,
            facts: facts.clone(),
            relay,
            tickets,
            endpoint,
            tx: tx.clone(),
            store_tx,
        };
        tracker.spawn(driver.run(rx, relay_reports, cancel));
        Ok(SignalHub { tx, live, facts })
    }

    /// Counts the `groups` claim of a token just presented for the policy decisions about
    /// `user_id`, the directory user it was matched to.
    pub fn note_token_groups(&self, identity: &Identity, user_id: &str) {
        self.facts.note_token_groups(identity, user_id);
    }

    /// The broker's live state: pending codes, open sessions and who is connected. Readers
    /// see it without a round trip through the driver.
    pub fn live_state(&self) -> &Arc<dyn LiveState> {
        &self.live
    }

    /// Registers a connection; returns its id (None if the service is stopping).
    async fn connect(&self, party: Party, out: mpsc::Sender<Outbound>) -> Option<ConnId> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(HubInput::Connect { party, out, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    async fn text(&self, conn: ConnId, text: String) {
        let _ = self.tx.send(HubInput::Text { conn, text }).await;
    }

    async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(HubInput::Disconnect { conn }).await;
    }

    /// Tells running sessions that a tenant's settings changed (chat blocked, Remote Help off).
    pub async fn settings_changed(&self, tenant: &str, block_chat: bool, enabled: bool) {
        let _ = self
            .tx
            .send(HubInput::SettingsChanged {
                tenant: tenant.to_owned(),
                block_chat,
                enabled,
            })
            .await;
    }

    /// `requestRemoteAssistance`: notifies the device's connections on behalf of `party`.
    pub async fn admin_launch(
        &self,
        party: Party,
        device_id: String,
    ) -> Result<SessionId, LaunchError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(HubInput::AdminLaunch {
                party,
                device_id,
                reply,
            })
            .await
            .map_err(|_| LaunchError::Unavailable)?;
        rx.await.unwrap_or(Err(LaunchError::Unavailable))
    }
}

/// Builds the machine's view of a signed-in caller from the token and the directory.
pub async fn party_for(store: &Store, id: &Identity) -> Result<Party, assist_store::StoreError> {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    if id.is_device {
        // A device token: no user, nobody present.
        let d = id.device_id.clone().unwrap_or_default();
        let managed = facts::find_device(store, &id.tenant_id, &d).await?;
        let dev = facts::device(store, &id.tenant_id, &d, &id.tenant_id).await?;
        let name = managed
            .as_ref()
            .and_then(|m| s(&m["deviceName"]))
            .unwrap_or_else(|| d.clone());
        return Ok(Party {
            tenant_id: id.tenant_id.clone(),
            user_id: None,
            user_principal_name: None,
            given_name: None,
            family_name: None,
            profile: Profile {
                display_name: name.clone(),
                job_title: None,
                company_name: None,
                verified_domain: None,
            },
            device: Some(DeviceInfo {
                id: d,
                display_name: Some(name),
                operating_system: managed.as_ref().and_then(|m| s(&m["operatingSystem"])),
                enrolled: dev.enrolled,
            }),
        });
    }
    let user = facts::ensure_user(store, id).await?;
    let p = facts::profile(store, &id.tenant_id, &user).await?;
    let device = match &id.device_id {
        Some(d) => {
            let managed = facts::find_device(store, &id.tenant_id, d).await?;
            let dev = facts::device(store, &id.tenant_id, d, &id.tenant_id).await?;
            Some(DeviceInfo {
                id: d.clone(),
                display_name: managed.as_ref().and_then(|m| s(&m["deviceName"])),
                operating_system: managed.as_ref().and_then(|m| s(&m["operatingSystem"])),
                enrolled: dev.enrolled,
            })
        }
        None => None,
    };
    Ok(Party {
        tenant_id: id.tenant_id.clone(),
        user_id: s(&user["id"]),
        user_principal_name: Some(id.user_principal_name.clone()),
        given_name: id.given_name.clone().or_else(|| s(&user["givenName"])),
        family_name: id.family_name.clone().or_else(|| s(&user["surname"])),
        profile: Profile {
            display_name: s(&p["displayName"]).unwrap_or_else(|| id.user_principal_name.clone()),
            job_title: s(&p["jobTitle"]),
            company_name: s(&p["companyName"]),
            verified_domain: s(&p["verifiedDomain"]),
        },
        device,
    })
}

enum StoreWrite {
    Record(Box<RecordEvent>),
    Audit(String, StoreAudit),
    Stats(assist_relay::SessionReport),
}

/// Writes taken from the queue into one transaction at most.
const WRITE_BATCH: usize = 512;

/// How long the writer waits after the first write of a batch for others to join it. Under
/// load this turns thousands of commits per second into at most 200; idle, it delays a record
/// by this much (docs/benchmarks.md: 2 ms gave 1,914 pairings per CPU-second, 5 ms 2,332).
const GROUP_COMMIT: Duration = Duration::from_millis(5);

/// Writes records and audit events in the order the machine produced them. Whatever is
/// waiting in the queue [`GROUP_COMMIT`] after a first write (up to [`WRITE_BATCH`]) is
/// written in one transaction; if that fails,
/// each write is retried on its own so one bad write loses nothing else.
async fn store_writer(store: Store, mut rx: mpsc::UnboundedReceiver<StoreWrite>) {
    let mut batch: Vec<SessionWrite> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Group commit: let the writes of the next moment join this transaction.
        tokio::time::sleep(GROUP_COMMIT).await;
        let mut next = Some(first);
        while let Some(w) = next.take() {
            to_session_writes(w, &mut batch);
            if batch.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = store.write_session_batch(&batch).await {
            tracing::warn!(error = %e, writes = batch.len(), "a batch of session records failed; writing one by one");
            for w in &batch {
                if let Err(e) = store.write_session_batch(std::slice::from_ref(w)).await {
                    tracing::error!(error = %e, "writing a session record failed");
                }
            }
        }
        batch.clear();
    }
}

fn to_session_writes(w: StoreWrite, out: &mut Vec<SessionWrite>) {
    match w {
        StoreWrite::Audit(tenant_id, event) => out.push(SessionWrite::Audit { tenant_id, event }),
        StoreWrite::Record(ev) => record_writes(*ev, out),
        StoreWrite::Stats(r) => out.push(SessionWrite::MergeBody {
            id: r.sid.clone(),
            extra: r.record_fields(),
        }),
    }
}

/// The store writes of one session record event.
fn record_writes(ev: RecordEvent, out: &mut Vec<SessionWrite>) {
    match ev {
        RecordEvent::Started {
            session_id,
            tenant_id,
            started_at,
            mode,
            helper,
            sharer,
            device,
            ..
        } => out.push(SessionWrite::Started {
            tenant_id,
            id: session_id.0,
            start_time: rfc3339(started_at),
            mode: mode.as_str().to_owned(),
            body: json!({
                "helperEmail": helper.user_principal_name, "helperTenantId": helper.tenant_id,
                "helperFirstName": helper.given_name, "helperLastName": helper.family_name,
                "sharerEmail": sharer.user_principal_name, "sharerTenantId": sharer.tenant_id,
                "sharerFirstName": sharer.given_name, "sharerLastName": sharer.family_name,
                "sharerDeviceAadId": device.as_ref().map(|d| d.id.clone()),
                "sharerDeviceName": device.as_ref().and_then(|d| d.display_name.clone()),
                "sharerOs": device.as_ref().and_then(|d| d.operating_system.clone()),
                "sharerEnrollmentState": device.as_ref().map(|d| if d.enrolled { "enrolled" } else { "unknown" }),
            }),
        }),
        RecordEvent::ModeRaised {
            session_id,
            tenant_id,
            mode,
            at,
        } => out.push(SessionWrite::Seen {
            tenant_id,
            id: session_id.0,
            now: rfc3339(at),
            mode: Some(mode.as_str().to_owned()),
        }),
        RecordEvent::Seen {
            session_id,
            tenant_id,
            at,
        } => out.push(SessionWrite::Seen {
            tenant_id,
            id: session_id.0,
            now: rfc3339(at),
            mode: None,
        }),
        RecordEvent::Ended {
            session_id,
            tenant_id,
            ended_at,
            highest_mode,
            reason,
            by,
        } => out.push(SessionWrite::Ended {
            tenant_id,
            id: session_id.0,
            end_time: rfc3339(ended_at),
            reason: reason.as_str().to_owned(),
            by: wire(&by),
            mode: Some(highest_mode.as_str().to_owned()),
        }),
    }
}

/// A serde enum's wire name.
fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

struct Driver {
    metrics: SignalMetrics,
    broker: Broker,
    conns: HashMap<ConnId, mpsc::Sender<Outbound>>,
    store: Store,
    /// Policy facts cached between evaluations (dropped when the directory changes).
    facts: Arc<facts::FactsCache>,
    relay: Relay,
    tickets: Arc<TicketAuthority>,
    endpoint: RelayEndpoint,
    tx: mpsc::Sender<HubInput>,
    store_tx: mpsc::UnboundedSender<StoreWrite>,
}

impl Driver {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<HubInput>,
        mut relay_reports: Option<mpsc::UnboundedReceiver<assist_relay::SessionReport>>,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut next_conn = 1u64;
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
                            let id = ConnId(next_conn);
                            next_conn += 1;
                            self.conns.insert(id, out);
                            if let Err(e) = self.broker.handle_connect(id, party, t) {
                                tracing::warn!(error = %e, "signalling connection refused by the broker");
                            }
                            let _ = reply.send(id);
                        }
                        HubInput::Text { conn, text } => {
                            // Errors are answered to the client by the machine itself.
                            let _ = self.broker.handle_text(conn, &text, t);
                        }
                        HubInput::Disconnect { conn } => {
                            self.conns.remove(&conn);
                            self.broker.handle_disconnect(conn, t);
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
                    }
                }
            }
            self.drain();
            self.metrics.connections.set(self.conns.len() as i64);
            self.metrics
                .sessions
                .set(self.broker.session_count() as i64);
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
            self.broker
                .handle_relay_leg_left(&SessionId(r.sid.clone()), role, now);
        }
        let _ = self.store_tx.send(StoreWrite::Stats(r));
    }

    fn drain(&mut self) {
        while let Some(out) = self.broker.poll_output() {
            match out {
                Output::Send { conn, event } => {
                    if let Some(tx) = self.conns.get(&conn) {
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            tx.try_send(Outbound::Text(event.to_json()))
                        {
                            tracing::warn!("a signalling connection is not reading; closing it");
                            let _ = tx.try_send(Outbound::Close(CloseCode::Slow));
                        }
                    }
                }
                Output::Close { conn, code } => {
                    if let Some(tx) = self.conns.get(&conn) {
                        let _ = tx.try_send(Outbound::Close(code));
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
                    let relay_id = self.relay.identity();
                    let access = |role| RelayAccess {
                        ticket: self.tickets.mint(sid, role, mode, chat, relay_id),
                        address: self.endpoint.address.clone(),
                        wss_url: format!("wss://{}/v1/relay", self.endpoint.address),
                        quic_addr: Some(self.endpoint.quic_addr.clone()),
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
                } => {
                    self.relay.set_mode(session_id.as_str(), mode, chat);
                }
                Output::RelayEnd { session_id, reason } => {
                    self.relay.end_session(session_id.as_str(), reason.as_str());
                }
                Output::Record(ev) => {
                    match &ev {
                        RecordEvent::Started { mode, .. } => self
                            .metrics
                            .started
                            .with_label_values(&[mode.as_str()])
                            .inc(),
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
                    let kind = serde_json::to_value(&ev.kind).unwrap_or_default();
                    let activity = kind["kind"].as_str().unwrap_or("session").to_owned();
                    let (upn, uid) = ev
                        .actor
                        .as_ref()
                        .map(|a| (ev.actor_name.clone().unwrap_or_default(), a.user_id.clone()))
                        .unwrap_or_default();
                    let mut audit = StoreAudit::new(
                        &format!("Remote Help session: {activity}"),
                        "Action",
                        "RemoteAssistance",
                    )
                    .actor(&upn, &uid, None);
                    audit.body["resources"] = json!([{
                        "@odata.type": "#microsoft.graph.auditResource",
                        "displayName": "remoteAssistanceSession",
                        "type": "remoteAssistanceSession",
                        "resourceId": ev.session_id.as_ref().map(|s| s.as_str().to_owned()),
                        "modifiedProperties": [],
                    }]);
                    audit.body["activityDetails"] = kind;
                    // Stamped once, by the machine, like the session records.
                    audit.body["activityDateTime"] = json!(rfc3339(ev.at));
                    let _ = self
                        .store_tx
                        .send(StoreWrite::Audit(ev.tenant_id.clone(), audit));
                }
            }
        }
    }
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

/// Why a launch could not be sent, for the admin API.
pub fn launch_error_message(e: &LaunchError) -> &'static str {
    match e {
        LaunchError::DeviceOffline => {
            "The device has no Remote Help connection; ask the user to open Remote Help."
        }
        LaunchError::DeviceBusy => "The device is already in a Remote Help session.",
        LaunchError::NotAUser => "Only a signed-in user can request remote assistance.",
        _ => "The signalling service is unavailable; try again.",
    }
}

/// `EndReason` text for the relay.
pub fn end_reason_text(r: EndReason) -> &'static str {
    r.as_str()
}
