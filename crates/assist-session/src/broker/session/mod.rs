//! One session's machine: its seats, stage, mode, chat and deadlines, and the transitions of
//! its lifecycle. It knows connections only by id (its seats' and a launch's offered ones)
//! and nothing of other sessions; what it needs from the router it asks through [`Fx`]. In
//! cluster mode this is what the session's owner node runs.
//!
//! Files by flow: this one holds the state, joining and the directory entry; [`mode`] mode
//! requests, the policy decision, consent, tickets and mode changes; [`ending`] chat,
//! deadlines, settings and the end.

use std::collections::{BTreeSet, VecDeque};

use assist_policy::{Mode, Warning};

use crate::code::CodeDigest;
use crate::config::BrokerConfig;
use crate::live::{LiveSession, LiveStage};
use crate::message::{EndReason, EndedBy, ErrorCode, RequestId, Role, ServerEvent, SessionId};
use crate::output::{AuditEvent, AuditKind, ConnId, EvalId, Output};
use crate::party::{Party, UserRef};
use crate::time::Timestamp;

use super::SessionState;

mod ending;
mod mode;

pub(super) type Reply = Result<(), (ErrorCode, String)>;

pub(super) fn refuse<T>(
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<T, (ErrorCode, String)> {
    Err((code, message.into()))
}

/// One side of a session: who, and on which connection (none while an admin-launched
/// session waits for its helper to connect).
#[derive(Debug)]
pub(super) struct Seat {
    pub(super) conn: Option<ConnId>,
    pub(super) party: Party,
}

#[derive(Debug)]
pub(super) enum Stage {
    AwaitingRedemption {
        digest: CodeDigest,
    },
    AwaitingSharer {
        device_id: String,
        offered: BTreeSet<ConnId>,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
    },
    Joined,
    AwaitingDecision {
        eval: EvalId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        request: Option<RequestId>,
    },
    AwaitingConsent {
        mode: Mode,
        chat: bool,
    },
    AwaitingDeclineWindow {
        mode: Mode,
        chat: bool,
    },
    AwaitingTickets {
        mode: Mode,
        chat: bool,
    },
    Active,
}

/// What a transition asks of the router, collected while it runs.
#[derive(Debug, Default)]
pub(super) struct Asked {
    /// Session deadlines to schedule (a superseded one is ignored when it fires).
    pub(super) deadlines: Vec<Timestamp>,
    /// When to write the next `Seen` record.
    pub(super) seen: Option<Timestamp>,
    /// An evaluation now waited for under this session.
    pub(super) eval_started: Option<EvalId>,
    /// An evaluation no longer waited for.
    pub(super) eval_dropped: Option<EvalId>,
    /// The directory entry changed.
    pub(super) publish: bool,
    /// End the session (always the transition's last step).
    pub(super) end: Option<(EndReason, EndedBy)>,
}

/// A transition's context: the configuration, the time, the output queue, and what it asks
/// of the router.
pub(super) struct Fx<'a> {
    pub(super) config: &'a BrokerConfig,
    pub(super) now: Timestamp,
    out: &'a mut VecDeque<Output>,
    next_eval: &'a mut u64,
    asked: Asked,
}

impl<'a> Fx<'a> {
    pub(super) fn new(
        config: &'a BrokerConfig,
        now: Timestamp,
        out: &'a mut VecDeque<Output>,
        next_eval: &'a mut u64,
    ) -> Self {
        Fx {
            config,
            now,
            out,
            next_eval,
            asked: Asked::default(),
        }
    }

    pub(super) fn finish(self) -> Asked {
        self.asked
    }

    pub(super) fn push(&mut self, output: Output) {
        self.out.push_back(output);
    }

    pub(super) fn send(&mut self, conn: Option<ConnId>, event: ServerEvent) {
        if let Some(conn) = conn {
            self.out.push_back(Output::Send { conn, event });
        }
    }

    pub(super) fn publish(&mut self) {
        self.asked.publish = true;
    }

    pub(super) fn end(&mut self, reason: EndReason, by: EndedBy) {
        self.asked.end = Some((reason, by));
    }

    fn new_eval(&mut self) -> EvalId {
        *self.next_eval = self.next_eval.wrapping_add(1);
        let eval = EvalId(*self.next_eval);
        self.asked.eval_started = Some(eval);
        eval
    }

    fn drop_eval(&mut self, eval: EvalId) {
        self.asked.eval_dropped = Some(eval);
    }

    fn seen_in(&mut self, after: std::time::Duration) {
        self.asked.seen = Some(self.now.saturating_add(after));
    }
}

/// One session's state machine.
#[derive(Debug)]
pub(super) struct SessionMachine {
    id: SessionId,
    tenant_id: String,
    helper: Seat,
    sharer: Option<Seat>,
    stage: Stage,
    /// The mode in force; `Some` exactly when the session is (or was) active.
    mode: Option<Mode>,
    highest: Option<Mode>,
    chat: bool,
    /// When the first grant must have happened (set on join).
    join_deadline: Option<Timestamp>,
    /// The current stage's deadline.
    deadline: Option<Timestamp>,
    /// When the session was created (code issued, or launch sent).
    requested_at: Timestamp,
    /// When the sharer joined (`None` before).
    joined_at: Option<Timestamp>,
    /// The router's: the keys of this session's pending timers.
    pub(in crate::broker) timer_keys: super::TimerKeys,
}

impl SessionMachine {
    /// A new session of the helper's tenant, in `stage`, until `deadline`.
    pub(super) fn start(
        id: SessionId,
        helper: Seat,
        stage: Stage,
        chat: bool,
        deadline: Timestamp,
        fx: &mut Fx<'_>,
    ) -> Self {
        let mut s = SessionMachine {
            id,
            tenant_id: helper.party.tenant_id.clone(),
            helper,
            sharer: None,
            stage,
            mode: None,
            highest: None,
            chat,
            join_deadline: None,
            deadline: None,
            requested_at: fx.now,
            joined_at: None,
            timer_keys: Default::default(),
        };
        s.set_deadline(Some(deadline), fx);
        fx.publish();
        s
    }

    pub(super) fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub(super) fn mode(&self) -> Option<Mode> {
        self.mode
    }

    pub(super) fn chat_allowed(&self) -> bool {
        self.chat
    }

    /// The session's bucket in [`super::SessionCounts`]: the directory's stage, and the mode
    /// in force once active (so a mode change in flight still counts as active).
    pub(super) fn bucket(&self) -> super::Bucket {
        match (&self.stage, self.mode) {
            (_, Some(mode)) => super::Bucket::Active(mode),
            (Stage::AwaitingRedemption { .. } | Stage::AwaitingSharer { .. }, None) => {
                super::Bucket::Pending
            }
            (_, None) => super::Bucket::Joined,
        }
    }

    pub(super) fn stage(&self) -> &Stage {
        &self.stage
    }

    pub(super) fn stage_mut(&mut self) -> &mut Stage {
        &mut self.stage
    }

    pub(super) fn helper(&self) -> &Seat {
        &self.helper
    }

    pub(super) fn helper_user(&self) -> Option<UserRef> {
        self.helper.party.user_ref()
    }

    pub(super) fn role_of(&self, conn: ConnId) -> Option<Role> {
        if self.helper.conn == Some(conn) {
            Some(Role::Helper)
        } else if self.sharer.as_ref().and_then(|s| s.conn) == Some(conn) {
            Some(Role::Sharer)
        } else {
            None
        }
    }

    pub(super) fn conn_of(&self, role: Role) -> Option<ConnId> {
        match role {
            Role::Helper => self.helper.conn,
            Role::Sharer => self.sharer.as_ref().and_then(|s| s.conn),
        }
    }

    /// A seat's connection closed: forget it (the session ends next).
    pub(super) fn detach(&mut self, conn: ConnId) {
        if self.helper.conn == Some(conn) {
            self.helper.conn = None;
        }
        if let Some(s) = self.sharer.as_mut().filter(|s| s.conn == Some(conn)) {
            s.conn = None;
        }
        if let Stage::AwaitingSharer { offered, .. } = &mut self.stage {
            offered.remove(&conn);
        }
    }

    pub(super) fn state(&self) -> SessionState {
        match self.stage {
            Stage::AwaitingRedemption { .. } => SessionState::AwaitingRedemption,
            Stage::AwaitingSharer { .. } => SessionState::AwaitingSharer,
            Stage::Joined => SessionState::Joined,
            Stage::AwaitingDecision { .. } => SessionState::AwaitingDecision,
            Stage::AwaitingConsent { .. } => SessionState::AwaitingConsent,
            Stage::AwaitingDeclineWindow { .. } => SessionState::AwaitingDeclineWindow,
            Stage::AwaitingTickets { .. } => SessionState::AwaitingTickets,
            Stage::Active => SessionState::Active,
        }
    }

    fn set_deadline(&mut self, at: Option<Timestamp>, fx: &mut Fx<'_>) {
        self.deadline = at;
        if let Some(at) = at {
            fx.asked.deadlines.push(at);
        }
    }

    fn broadcast(&self, event: &ServerEvent, fx: &mut Fx<'_>) {
        for role in [Role::Helper, Role::Sharer] {
            fx.send(self.conn_of(role), event.clone());
        }
    }

    /// An audit event of this session; the actor's name comes from the seat they sit in.
    fn audit(&self, actor: Option<UserRef>, kind: AuditKind, fx: &mut Fx<'_>) {
        let actor_name = actor.as_ref().and_then(|user| {
            std::iter::once(&self.helper)
                .chain(self.sharer.as_ref())
                .map(|seat| &seat.party)
                .find(|p| p.user_ref().as_ref() == Some(user))
                .and_then(|p| p.user_principal_name.clone())
        });
        fx.push(Output::Audit(AuditEvent {
            at: fx.now,
            tenant_id: self.tenant_id.clone(),
            session_id: Some(self.id.clone()),
            actor,
            actor_name,
            kind,
        }));
    }

    /// The session's entry in the live directory.
    pub(super) fn live_entry(&self) -> LiveSession {
        let stage = match self.bucket() {
            super::Bucket::Pending => LiveStage::Pending,
            super::Bucket::Joined => LiveStage::Joined,
            super::Bucket::Active(_) => LiveStage::Active,
        };
        let device_id = match &self.stage {
            Stage::AwaitingSharer { device_id, .. } => Some(device_id.clone()),
            _ => self
                .sharer
                .as_ref()
                .and_then(|seat| seat.party.device.as_ref())
                .map(|d| d.id.clone()),
        };
        LiveSession {
            tenant_id: self.tenant_id.clone(),
            stage,
            mode: self.mode,
            chat: self.chat,
            helper: self.helper.party.user_ref(),
            helper_conn: self.helper.conn,
            sharer: self.sharer.as_ref().and_then(|seat| seat.party.user_ref()),
            sharer_conn: self.sharer.as_ref().and_then(|seat| seat.conn),
            device_id,
        }
    }

    /// The helper of an admin launch connected on `conn`: it gets the event it missed.
    pub(super) fn attach_helper(&mut self, conn: ConnId, fx: &mut Fx<'_>) {
        self.helper.conn = Some(conn);
        let event = match &self.stage {
            Stage::AwaitingSharer { device_id, .. } => ServerEvent::LaunchPending {
                id: None,
                session_id: self.id.clone(),
                device_id: device_id.clone(),
                expires_at: self.deadline.unwrap_or_default(),
            },
            _ => ServerEvent::SessionJoined {
                id: None,
                session_id: self.id.clone(),
                role: Role::Helper,
                peer_profile: self
                    .sharer
                    .as_ref()
                    .map(|s| s.party.profile.clone())
                    .unwrap_or_default(),
            },
        };
        fx.publish();
        fx.send(Some(conn), event);
    }

    /// The sharer `party` on `conn` joins (code redeemed or launch accepted).
    pub(super) fn join(
        &mut self,
        conn: ConnId,
        party: Party,
        request: Option<RequestId>,
        fx: &mut Fx<'_>,
    ) {
        let join_deadline = fx.now.saturating_add(fx.config.join_timeout);
        let actor = party.user_ref();
        let sharer_profile = party.profile.clone();
        self.sharer = Some(Seat {
            conn: Some(conn),
            party,
        });
        self.stage = Stage::Joined;
        self.joined_at = Some(fx.now);
        self.join_deadline = Some(join_deadline);
        self.set_deadline(Some(join_deadline), fx);
        fx.publish();
        fx.send(
            Some(conn),
            ServerEvent::SessionJoined {
                id: request,
                session_id: self.id.clone(),
                role: Role::Sharer,
                peer_profile: self.helper.party.profile.clone(),
            },
        );
        fx.send(
            self.helper.conn,
            ServerEvent::SessionJoined {
                id: None,
                session_id: self.id.clone(),
                role: Role::Helper,
                peer_profile: sharer_profile,
            },
        );
        self.audit(actor, AuditKind::Joined, fx);
    }
}
