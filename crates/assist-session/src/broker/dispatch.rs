//! Inputs that go to one session's machine (requests inside a session, decisions, tickets,
//! relay legs, tenant settings), carrying out what a machine asks of the router, and ending a
//! session.

use assist_policy::{Decision, Mode, Warning};

use super::session::{Asked, Seat, Stage};
use super::*;
use crate::live::LiveOp;
use crate::message::{EndReason, EndedBy, RelayAccess, Role};

impl Broker {
    /// Carries out what a session's transition asked of the router.
    pub(super) fn apply_asked(&mut self, id: &SessionId, asked: Asked, now: Timestamp) {
        // Only the latest deadline and `Seen` time count (the machine ignores a superseded
        // deadline); the timers they replace are removed.
        if let Some(at) = asked.deadlines.last().copied() {
            self.reschedule(id, at, Timer::Session(id.clone()), |k| &mut k.deadline);
        }
        if let Some(at) = asked.seen {
            self.reschedule(id, at, Timer::Seen(id.clone()), |k| &mut k.seen);
        }
        if let Some(eval) = asked.eval_dropped {
            self.evals.remove(&eval);
        }
        if let Some(eval) = asked.eval_started {
            self.evals.insert(eval, id.clone());
        }
        if asked.publish {
            self.publish(id);
        }
        if let Some((reason, by)) = asked.end {
            self.end_session(id, reason, by, now);
        }
    }

    /// Starts session `id` with `helper` in `stage` until `deadline`, and lists it.
    pub(super) fn insert_session(
        &mut self,
        id: &SessionId,
        helper: Seat,
        stage: Stage,
        deadline: Timestamp,
        now: Timestamp,
    ) {
        let chat = !self
            .chat_blocked
            .get(&helper.party.tenant_id)
            .copied()
            .unwrap_or(false);
        let mut fx = Fx::new(&self.config, now, &mut self.outputs, &mut self.next_eval);
        let session = SessionMachine::start(id.clone(), helper, stage, chat, deadline, &mut fx);
        let asked = fx.finish();
        self.counts.add(session.bucket());
        if let Some(old) = self.sessions.insert(id.clone(), session) {
            // Never: ids are drawn fresh. Keep the counts true all the same.
            self.counts.remove(old.bucket());
        }
        self.apply_asked(id, asked, now);
    }

    /// Writes a session's directory entry to the live state.
    pub(super) fn publish(&mut self, id: &SessionId) {
        if let Some(s) = self.sessions.get(id) {
            let session = s.live_entry();
            self.live(LiveOp::PutSession {
                id: id.clone(),
                session,
            });
        }
    }

    /// The role `conn` has in session `id`.
    pub(super) fn role_in(
        &self,
        conn: ConnId,
        id: &SessionId,
    ) -> Result<Role, (ErrorCode, String)> {
        match self.sessions.get(id).and_then(|s| s.role_of(conn)) {
            Some(role) => Ok(role),
            None => refuse(ErrorCode::NotFound, "no such session"),
        }
    }

    /// Runs a request of `conn` on session `id`'s machine, once `conn` is known to sit in it.
    fn in_session(
        &mut self,
        conn: ConnId,
        id: &SessionId,
        now: Timestamp,
        f: impl FnOnce(Role, &mut SessionMachine, &mut Fx<'_>) -> Reply,
    ) -> Reply {
        let role = self.role_in(conn, id)?;
        self.with_session(id, now, |s, fx| f(role, s, fx))
            .unwrap_or_else(|| refuse(ErrorCode::NotFound, "no such session"))
    }

    pub(super) fn request_mode(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Reply {
        self.in_session(conn, session_id, now, |role, s, fx| {
            if role != Role::Helper {
                return refuse(ErrorCode::NotAllowed, "only the helper asks for a mode");
            }
            s.request_mode(id, mode, acknowledged, fx)
        })
    }

    pub(super) fn consent(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        allow: bool,
        now: Timestamp,
    ) -> Reply {
        self.in_session(conn, session_id, now, |role, s, fx| {
            if role != Role::Sharer {
                return refuse(ErrorCode::NotAllowed, "only the sharer consents");
            }
            s.consent(id, allow, fx)
        })
    }

    pub(super) fn chat(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        text: String,
        now: Timestamp,
    ) -> Reply {
        self.in_session(conn, session_id, now, |role, s, fx| {
            s.chat(role, id, text, fx)
        })
    }

    pub(super) fn end_request(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        now: Timestamp,
    ) -> Reply {
        let role = self.role_in(conn, session_id)?;
        self.send(conn, ServerEvent::Ack { id: id.clone() });
        self.end_session(session_id, EndReason::Ended, role.into(), now);
        Ok(())
    }

    /// The policy decision for `eval` (from [`Output::Evaluate`]).
    pub fn handle_decision(
        &mut self,
        eval: EvalId,
        decision: Decision,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        let session_id = self
            .evals
            .remove(&eval)
            .ok_or(InputError::UnknownEvaluation(eval))?;
        let blocked = self
            .sessions
            .get(&session_id)
            .and_then(|s| self.chat_blocked.get(s.tenant_id()))
            .copied()
            .unwrap_or(false);
        self.with_session(&session_id, now, |s, fx| {
            s.decide(eval, decision, blocked, fx)
        })
        .and_then(Result::ok)
        .ok_or(InputError::UnknownEvaluation(eval))
    }

    /// Relay tickets for a session that [`Output::IssueTickets`] asked for: the session
    /// becomes active and each side gets `sessionActive` with its own ticket.
    pub fn handle_tickets(
        &mut self,
        session_id: &SessionId,
        helper: RelayAccess,
        sharer: RelayAccess,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        self.with_session(session_id, now, |s, fx| s.tickets(helper, sharer, fx))
            .and_then(Result::ok)
            .ok_or_else(|| InputError::NotAwaitingTickets(session_id.clone()))
    }

    /// Tickets could not be issued (no relay available): the session ends with
    /// `relayUnavailable`.
    pub fn handle_tickets_failed(
        &mut self,
        session_id: &SessionId,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        self.with_session(session_id, now, |s, fx| s.tickets_failed(fx))
            .and_then(Result::ok)
            .ok_or_else(|| InputError::NotAwaitingTickets(session_id.clone()))
    }

    /// The relay says `role`'s leg of an active session dropped (closed, failed or stopped
    /// reading) after pairing. The session ends for both sides with `disconnected`, by that
    /// side, so both apps may start a new one. A session that is not active (already ended,
    /// or never granted) is left alone.
    pub fn handle_relay_leg_left(&mut self, session_id: &SessionId, role: Role, now: Timestamp) {
        self.advance(now);
        self.with_session(session_id, now, |s, fx| s.relay_leg_left(role, fx));
    }

    /// An admin changed the tenant's Remote Help settings (PATCH). `blockChat` applies to
    /// running sessions at once (the relay and both sides are told); disabling Remote Help
    /// ends every session of the tenant, pending codes and launches included.
    pub fn handle_settings_changed(
        &mut self,
        tenant_id: &str,
        block_chat: bool,
        remote_help_enabled: bool,
        now: Timestamp,
    ) {
        self.advance(now);
        self.chat_blocked.insert(tenant_id.to_owned(), block_chat);
        let mut ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.tenant_id() == tenant_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            if remote_help_enabled {
                self.with_session(&id, now, |s, fx| s.settings_changed(block_chat, fx));
            } else {
                self.end_session(&id, EndReason::RemoteHelpDisabled, EndedBy::Admin, now);
            }
        }
    }

    /// Ends a session: its machine tells both sides, the relay, the report and the audit log;
    /// the router forgets it and tidies the connections and timers that referred to it.
    pub(super) fn end_session(
        &mut self,
        session_id: &SessionId,
        reason: EndReason,
        by: EndedBy,
        now: Timestamp,
    ) {
        let Some(session) = self.sessions.remove(session_id) else {
            return;
        };
        self.counts.remove(session.bucket());
        self.cancel(session.timer_keys.deadline);
        self.cancel(session.timer_keys.seen);
        self.live(LiveOp::RemoveSession {
            id: session_id.clone(),
        });
        self.unattached.remove(session_id);
        let mut fx = Fx::new(&self.config, now, &mut self.outputs, &mut self.next_eval);
        let ended = session.end(reason, by, &mut fx);
        drop(fx.finish());
        for conn in &ended.offered {
            if let Some(c) = self.conns.get_mut(conn) {
                c.offers.remove(session_id);
            }
        }
        for conn in ended.participants.into_iter().flatten() {
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.session.as_ref() == Some(session_id) {
                    c.session = None;
                }
            }
        }
        if let Some(eval) = ended.eval {
            self.evals.remove(&eval);
        }
        if let Some((at, digest)) = ended.forget {
            self.schedule(at, Timer::ForgetCode(digest));
        }
    }
}
