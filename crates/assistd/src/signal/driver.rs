//! The driver: the one task that owns the [`Broker`]. It feeds the machine every input with
//! `now` and carries out every output in order: messages to connections, policy evaluations
//! (on their own tasks, answered as inputs), relay tickets, the relay, live-state ops and
//! queries (awaited inline and answered at once), and records for the records writer.

use assist_live::LiveStore;
use assist_relay::{Relay, Role as RelayRole, TicketAuthority};
use assist_session::message::{CloseCode, RelayAccess, SessionId};
use assist_session::{
    Broker, ConnId, EvalId, LaunchError, LiveAnswer, Output, Party, RecordEvent, Timestamp,
};
use assist_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::conn::Outbound;
use super::records::{self, StoreWrite};
use super::{now, RelayEndpoint};
use crate::facts;

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
    /// The node drains: no new sessions (`Broker::handle_draining`).
    Draining,
    /// The grace is over: every session ends with `shuttingDown`; the reply comes once the
    /// ends are queued to the connections.
    ShuttingDown {
        reply: oneshot::Sender<()>,
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
    /// Sessions the broker holds now (the `assist_signal_sessions` gauge).
    pub fn sessions(&self) -> i64 {
        self.sessions.get()
    }

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
    pub(super) store_tx: mpsc::UnboundedSender<StoreWrite>,
}

impl Driver {
    pub(super) async fn run(
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
                        HubInput::Draining => self.broker.handle_draining(t),
                        HubInput::ShuttingDown { reply } => {
                            self.broker.handle_shutting_down(t);
                            self.drain().await;
                            let _ = reply.send(());
                        }
                    }
                }
            }
            self.drain().await;
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

    /// Carries out every output of the machine, in order. Live-state ops and queries are
    /// awaited inline, so their effects keep the machine's order and an answer goes back before
    /// the next output.
    async fn drain(&mut self) {
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
                    let Some(relay) = &self.relay else {
                        // A broker-only node has no local relay to issue tickets for (cluster
                        // mode places the session on a relay node).
                        tracing::warn!("no relay to issue tickets for on this node");
                        let _ = self.broker.handle_tickets_failed(&session_id, now());
                        continue;
                    };
                    let relay_id = relay.identity();
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
                    if let Some(relay) = &self.relay {
                        relay.set_mode(session_id.as_str(), mode, chat);
                    }
                }
                Output::RelayEnd { session_id, reason } => {
                    if let Some(relay) = &self.relay {
                        relay.end_session(session_id.as_str(), reason.as_str());
                    }
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
                    let _ = self.store_tx.send(records::audit_write(ev));
                }
                Output::Live(op) => {
                    // In process the future is ready at once: no task, no channel hop.
                    if let Err(e) = self.live.apply(op).await {
                        tracing::warn!(error = %e, "a live-state write failed");
                    }
                }
                Output::LiveQuery { token, query } => {
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
