//! The signalling service: WSS `/v1/signal` around the sans-IO session machine
//! (`assist-session`). One room per job:
//! - [`endpoint`] upgrades and authenticates a connection, and [`conn`] runs its WebSocket IO;
//!   the connection's task sends what it reads to the driver directly;
//! - `driver` is the one task that owns the [`Broker`] (every input fed with `now`, every
//!   output carried out in order, live-state ops and queries included);
//! - `records` writes session records and audit events in group-committed batches, through a
//!   bounded queue the driver never waits on, holding them while the store is unavailable;
//! - `crypto` hashes codes; `party` builds the machine's view of a caller.
//!
//! This file holds [`SignalHub`], the handle the rest of the server uses.

pub(crate) mod cluster;
pub mod conn;
mod crypto;
mod driver;
pub mod endpoint;
mod party;
mod records;

use assist_identity::Identity;
use assist_live::{InProcessLiveState, LiveStore};
use assist_relay::{Relay, TicketAuthority};
use assist_session::message::{EndReason, SessionId};
use assist_session::{Broker, BrokerConfig, ConnId, LaunchError, Party, Timestamp};
use assist_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

use crate::facts;
use conn::Outbound;
use crypto::HmacCrypto;
pub use crypto::CODE_KEY_FILE;
pub(crate) use crypto::{load_key as load_code_key, load_or_create_key as load_or_create_code_key};
pub use driver::SignalMetrics;
use driver::{Driver, HubInput};
pub use party::party_for;

fn now() -> Timestamp {
    Timestamp::from_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64,
    )
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
    live: Arc<dyn LiveStore>,
    /// The driver's policy facts (the endpoint notes tokens' `groups` claims in it).
    facts: Arc<facts::FactsCache>,
    /// Cluster mode's handles (`None`: embedded).
    cluster: Option<Arc<cluster::Cluster>>,
}

/// What cluster mode hands the signalling service at start.
pub(crate) struct ClusterStart {
    /// The node's cluster handles.
    pub(crate) cluster: Arc<cluster::Cluster>,
    /// The bus's inbound envelopes.
    pub(crate) inbound: mpsc::Receiver<Vec<u8>>,
    /// The bus's connected state.
    pub(crate) connected: tokio::sync::watch::Receiver<bool>,
}

impl SignalHub {
    /// Starts the driver with the security-code key `code_key` (`crate::keys::code_key`).
    /// `relay` is this node's relay, `None` on a broker-only node (which issues no tickets for
    /// a local relay). `relay_reports` carries the relay's per-session counters, merged into the
    /// session records when sessions end.
    #[allow(clippy::too_many_arguments)] // each is a distinct handle the driver owns
    pub(crate) fn start(
        metrics: SignalMetrics,
        config: BrokerConfig,
        store: Store,
        relay: Option<Relay>,
        tickets: Arc<TicketAuthority>,
        endpoint: RelayEndpoint,
        code_key: [u8; 32],
        relay_reports: Option<mpsc::UnboundedReceiver<assist_relay::SessionReport>>,
        cluster_start: Option<ClusterStart>,
        cancel: tokio_util::sync::CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> anyhow::Result<SignalHub> {
        let key = code_key;
        let cluster = cluster_start.as_ref().map(|c| c.cluster.clone());
        let live: Arc<dyn LiveStore> = match &cluster {
            // Cluster mode: the live state is the cluster's, in Redis.
            Some(c) => Arc::new(c.live.clone()),
            // Single process: the live state is in memory, readable by the admin API directly.
            None => Arc::new(InProcessLiveState::new()),
        };
        let broker = Broker::new(config, Box::new(HmacCrypto { key }))
            .map_err(|e| anyhow::anyhow!("broker config: {e}"))?;
        let (tx, rx) = mpsc::channel(4096);
        let (store_tx, store_rx) =
            records::RecordsQueue::new(records::QUEUE_CAPACITY, metrics.store.clone());
        tracker.spawn(records::store_writer(
            store.clone(),
            store_rx,
            metrics.store.clone(),
        ));
        let facts = Arc::new(facts::FactsCache::default());
        if let Some(start) = cluster_start {
            let c = start.cluster;
            tracker.spawn(cluster::run_inbound(
                c.clone(),
                start.inbound,
                start.connected,
                facts.clone(),
                tx.clone(),
                cancel.clone(),
            ));
            tracker.spawn(cluster::run_heartbeat(
                c.clone(),
                cluster::HeartbeatSource {
                    relay: relay.clone().map(|relay| {
                        let advert = cluster::Advert {
                            identity: relay.identity().clone(),
                            address: endpoint.address.clone(),
                            quic_addr: endpoint.quic_addr.clone(),
                        };
                        (relay, advert)
                    }),
                    broker: Some(cluster::BrokerSource {
                        connections: metrics.connections.clone(),
                        sessions: metrics.sessions.clone(),
                        store: store.clone(),
                        driver: tx.clone(),
                    }),
                },
                cancel.clone(),
            ));
            // A directory or settings change made here drops every other node's facts at once.
            let (store2, c2, cancel2) = (store.clone(), c.clone(), cancel.clone());
            tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = cancel2.cancelled() => return,
                        _ = store2.directory_change() => c2.broadcast(cluster::Body::Facts),
                    }
                }
            });
        }
        let driver = Driver {
            metrics,
            broker,
            live: live.clone(),
            conns: HashMap::new(),
            store,
            facts: facts.clone(),
            relay,
            tickets,
            endpoint,
            tx: tx.clone(),
            store_tx,
            cluster: cluster.clone(),
            crypto: HmacCrypto { key },
            routes: Default::default(),
        };
        tracker.spawn(driver.run(rx, relay_reports, cancel));
        Ok(SignalHub {
            tx,
            live,
            facts,
            cluster,
        })
    }

    /// Counts the `groups` claim of a token just presented for the policy decisions about
    /// `user_id`, the directory user it was matched to.
    pub fn note_token_groups(&self, identity: &Identity, user_id: &str) {
        self.facts.note_token_groups(identity, user_id);
    }

    /// The broker's live state: pending codes, open sessions and who is connected. Readers
    /// see it without a round trip through the driver.
    pub fn live_state(&self) -> &Arc<dyn LiveStore> {
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
        if let Some(c) = &self.cluster {
            c.broadcast(cluster::Body::Settings {
                tenant: tenant.to_owned(),
                block_chat,
                enabled,
            });
        }
        let _ = self
            .tx
            .send(HubInput::SettingsChanged {
                tenant: tenant.to_owned(),
                block_chat,
                enabled,
            })
            .await;
    }

    /// The node drains: `requestCode`, `redeemCode`, `requestSession` and admin launches are
    /// refused (`unavailable`) from now on; running sessions carry on.
    pub async fn drain(&self) {
        let _ = self.tx.send(HubInput::Draining).await;
    }

    /// The grace period is over: every session still open ends with `shuttingDown` (both
    /// sides are told, the records written). Returns once the ends are queued to the
    /// connections, or at once if the service has stopped.
    pub async fn shut_down(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(HubInput::ShuttingDown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// `requestRemoteAssistance`: notifies the device's connections on behalf of `party`.
    /// Cluster mode: a device with no connection here gets the launch on a node where it has
    /// one (that node's broker runs it).
    pub async fn admin_launch(
        &self,
        party: Party,
        device_id: String,
    ) -> Result<SessionId, LaunchError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(HubInput::AdminLaunch {
                party: party.clone(),
                device_id: device_id.clone(),
                reply,
            })
            .await
            .map_err(|_| LaunchError::Unavailable)?;
        let local = rx.await.unwrap_or(Err(LaunchError::Unavailable));
        let Some(c) = self
            .cluster
            .as_ref()
            .filter(|_| local == Err(LaunchError::DeviceOffline))
        else {
            return local;
        };
        let device = assist_session::DeviceRef {
            tenant_id: party.tenant_id.clone(),
            device_id: device_id.clone(),
        };
        let nodes = c
            .live
            .device_nodes(&device)
            .await
            .map_err(|_| LaunchError::Unavailable)?;
        match c.other_alive(&nodes) {
            Some(node) => c.remote_launch(&node, party, device_id).await,
            None => local,
        }
    }
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
