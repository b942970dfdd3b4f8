//! Draining: a node told to stop (SIGTERM) refuses new sessions while the running ones carry
//! on, then ends whatever is left with `shuttingDown` when its grace period is over.

use super::*;
use crate::message::{ClientRequest, EndReason, EndedBy};

/// The message a request that would start a session gets while the node drains.
pub const DRAINING_MESSAGE: &str =
    "this node is draining and starts no new sessions; connect again to reach another node";

/// Whether `request` would start a session (the requests a draining node refuses).
pub(super) fn starts_a_session(request: &ClientRequest) -> bool {
    matches!(
        request,
        ClientRequest::RequestCode
            | ClientRequest::RedeemCode { .. }
            | ClientRequest::RequestSession { .. }
    )
}

/// The answer to such a request: `unavailable`.
pub(super) fn refusal() -> Reply {
    refuse(ErrorCode::Unavailable, DRAINING_MESSAGE)
}

impl Broker {
    /// The node is draining: from now on `requestCode`, `redeemCode` and `requestSession` are
    /// answered `unavailable` ([`DRAINING_MESSAGE`]) and admin launches fail with
    /// [`LaunchError::Unavailable`]. Sessions already started, pending codes and launches
    /// included, carry on (a pending code can no longer be redeemed here). Idempotent; there is
    /// no way back (a drained node stops).
    pub fn handle_draining(&mut self, now: Timestamp) {
        self.advance(now);
        self.draining = true;
    }

    /// Whether [`Broker::handle_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The grace period is over: every session still open ends with `shuttingDown`, by the
    /// broker (both sides, the relay, the record and the audit log are told, as for any end).
    /// Implies [`Broker::handle_draining`].
    pub fn handle_shutting_down(&mut self, now: Timestamp) {
        self.handle_draining(now);
        let mut ids: Vec<SessionId> = self.sessions.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.end_session(&id, EndReason::ShuttingDown, EndedBy::Broker, now);
        }
    }
}
