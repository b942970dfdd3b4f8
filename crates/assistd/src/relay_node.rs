//! A relay-only node in cluster mode (`--role relay` with `cluster.redis_url`): it joins the
//! node registry (a heartbeat advertising its relay and its relay sessions, and whether it
//! drains), applies what sessions' owners send it over the bus (`relaySetMode`, `relayEnd`),
//! and sends each owner what the relay reports: a leg that left (`legLeft`) and the counters
//! of a session that ended (`relayStats`), which the owner writes to the session's record. It
//! opens no database. docs/architecture.md, "Cluster mode", has the rules; the envelopes,
//! heartbeat and keys check are signal/cluster.rs's.

use assist_relay::{Relay, SessionReport};
use assist_session::SessionId;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::signal::cluster::{self, Advert, Body, Cluster, RelayStats};

/// Sessions whose end an owner asked for, remembered until the relay reports them (by then
/// the owner has usually left the session directory, so `session_owner` would not find it).
const OWNERS_MAX: usize = 65_536;
/// How long an owner is remembered without a report (a session's legs close within seconds).
const OWNER_TTL: Duration = Duration::from_secs(60);

/// Session id → the node that ended it (its owner, or a dead owner's cleaner), and when.
#[derive(Default)]
struct Owners(Mutex<HashMap<String, (String, Instant)>>);

impl Owners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, sid: &str, owner: &str) {
        let mut m = self.lock();
        if m.len() >= OWNERS_MAX {
            m.retain(|_, (_, at)| at.elapsed() < OWNER_TTL);
        }
        if m.len() < OWNERS_MAX {
            m.insert(sid.to_owned(), (owner.to_owned(), Instant::now()));
        }
    }

    fn forget(&self, sid: &str) {
        self.lock().remove(sid);
    }

    fn take(&self, sid: &str) -> Option<String> {
        self.lock().remove(sid).map(|(owner, _)| owner)
    }
}

/// Joins the cluster as a relay-only node, before it serves: connects to Redis, checks the
/// relay-ticket key against the cluster's (a difference refuses the start), then starts the
/// heartbeat (with `advert`, where clients reach the relay), the bus reader and the reports'
/// sender. `ticket_key_id` is the relay-ticket key's ([`assist_relay::TicketAuthority::key_id`]).
/// Returns the node's cluster handles (the drain tells them).
#[allow(clippy::too_many_arguments)] // the handles of the relay a node shares with the rest of start
pub(crate) async fn start(
    settings: &crate::config::ClusterSettings,
    relay: Relay,
    ticket_key_id: &str,
    advert: Advert,
    reports: mpsc::UnboundedReceiver<SessionReport>,
    draining: Arc<AtomicBool>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Arc<Cluster>> {
    let joined = Cluster::join(settings, draining, ticket_key_id, None, tracker).await?;
    let c = joined.cluster;
    tracker.spawn(cluster::run_heartbeat(
        c.clone(),
        cluster::HeartbeatSource {
            relay: Some((relay.clone(), advert)),
            broker: None,
        },
        cancel.clone(),
    ));
    let owners = Arc::new(Owners::default());
    tracker.spawn(run_inbound(
        c.clone(),
        relay,
        joined.inbound,
        owners.clone(),
        cancel.clone(),
    ));
    tracker.spawn(run_reports(c.clone(), reports, owners, cancel.clone()));
    Ok(c)
}

/// Applies owners' envelopes to the relay; every other kind is for brokers.
async fn run_inbound(
    c: Arc<Cluster>,
    relay: Relay,
    mut inbound: mpsc::Receiver<Vec<u8>>,
    owners: Arc<Owners>,
    cancel: CancellationToken,
) {
    loop {
        let payload = tokio::select! {
            _ = cancel.cancelled() => return,
            p = inbound.recv() => match p {
                Some(p) => p,
                None => return,
            },
        };
        let Some(env) = c.decode(&payload) else {
            continue;
        };
        match env.body {
            Body::RelaySetMode {
                session_id,
                mode,
                chat,
            } => {
                relay.set_mode(session_id.as_str(), mode, chat);
            }
            Body::RelayEnd { session_id, reason } => {
                // Noted first: the report may come before `end_session` returns.
                owners.note(session_id.as_str(), &env.from);
                if !relay.end_session(session_id.as_str(), &reason) {
                    owners.forget(session_id.as_str());
                }
            }
            _ => {}
        }
    }
}

/// Sends each relay report to the session's owner: the counters (`relayStats`), then the leg
/// that left, if one did (`legLeft`). At stop, what is queued still goes out.
async fn run_reports(
    c: Arc<Cluster>,
    mut reports: mpsc::UnboundedReceiver<SessionReport>,
    owners: Arc<Owners>,
    cancel: CancellationToken,
) {
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => break,
            r = reports.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        report(&c, &owners, r).await;
    }
    while let Ok(r) = reports.try_recv() {
        report(&c, &owners, r).await;
    }
}

async fn report(c: &Cluster, owners: &Owners, r: SessionReport) {
    let sid = SessionId(r.sid.clone());
    let owner = match owners.take(&r.sid) {
        Some(o) => Some(o),
        None => match c.live.session_owner(&sid).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "looking up a relay session's owner failed");
                None
            }
        },
    };
    let Some(owner) = owner else {
        tracing::warn!(
            "a relay session ended whose owner is unknown; its counters are not recorded"
        );
        return;
    };
    c.send(
        &owner,
        Body::RelayStats {
            session_id: sid.clone(),
            stats: RelayStats::of(&r),
        },
    );
    if let Some(role) = r.left {
        let role = match role {
            assist_relay::Role::Helper => "helper",
            assist_relay::Role::Sharer => "sharer",
        };
        c.send(
            &owner,
            Body::LegLeft {
                session_id: sid,
                role: role.to_owned(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_remembered_once_and_bounded() {
        let o = Owners::default();
        o.note("s1", "node-a");
        assert_eq!(o.take("s1").as_deref(), Some("node-a"));
        assert_eq!(o.take("s1"), None);
        o.note("s2", "node-b");
        o.forget("s2");
        assert_eq!(o.take("s2"), None);
        for i in 0..OWNERS_MAX + 10 {
            o.note(&format!("x{i}"), "n");
        }
        assert_eq!(
            o.lock().len(),
            OWNERS_MAX,
            "fresh entries beyond the cap are not kept"
        );
    }
}
