//! Modes and consent: mode requests and the policy, consent and the unattended decline
//! window, relay tickets, and mode changes of an active session.

use assist_policy::{Decision, DenyReason, Mode, Warning};

use super::{refuse, Fx, Reply, SessionMachine, Stage};
use crate::message::{
    ConsentKind, EndReason, EndedBy, ErrorCode, RelayAccess, RequestId, Role, ServerEvent,
};
use crate::output::{AuditKind, EvalId, EvaluateRequest, Output, RecordEvent, ReportParty};

/// Why a decision or tickets do not apply to the session (the router's `InputError`).
#[derive(Debug)]
pub(in crate::broker) struct NotWaiting;

impl SessionMachine {
    /// The helper asks for `mode` (request `id`).
    pub(in crate::broker) fn request_mode(
        &mut self,
        id: &RequestId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        fx: &mut Fx<'_>,
    ) -> Reply {
        if !matches!(self.stage, Stage::Joined | Stage::Active) {
            return refuse(ErrorCode::NotAllowed, "the session cannot change mode now");
        }
        if let Some(current) = self.mode {
            if mode == current {
                return refuse(ErrorCode::NotAllowed, "the session is already in this mode");
            }
            if mode < current {
                // Downgrades need neither the policy nor consent.
                fx.send(
                    self.helper.conn,
                    ServerEvent::ModeRequested {
                        id: Some(id.clone()),
                        session_id: self.id.clone(),
                        mode,
                        consent: ConsentKind::None,
                        expires_at: None,
                    },
                );
                self.apply_mode(mode, self.chat, fx);
                return Ok(());
            }
        }
        self.begin_mode_request(mode, acknowledged, Some(id.clone()), fx);
        Ok(())
    }

    /// Asks the policy about `mode` (a helper's request, or the mode a launch asked for).
    pub(in crate::broker) fn begin_mode_request(
        &mut self,
        mode: Mode,
        acknowledged: Vec<Warning>,
        request: Option<RequestId>,
        fx: &mut Fx<'_>,
    ) {
        let (Some(helper), Some(sharer)) = (self.helper.party.user_ref(), self.sharer.as_ref())
        else {
            return;
        };
        let eval = fx.new_eval();
        let request_out = EvaluateRequest {
            eval,
            session_id: self.id.clone(),
            helper: helper.clone(),
            sharer: sharer.party.user_ref(),
            sharer_tenant_id: sharer.party.tenant_id.clone(),
            device_id: sharer.party.device.as_ref().map(|d| d.id.clone()),
            mode,
        };
        self.stage = Stage::AwaitingDecision {
            eval,
            mode,
            acknowledged,
            request,
        };
        let deadline = fx.now.saturating_add(fx.config.decision_timeout);
        self.set_deadline(Some(deadline), fx);
        fx.push(Output::Evaluate(request_out));
        self.audit(Some(helper), AuditKind::Requested { mode }, fx);
    }

    /// Puts a session whose mode request is over back to waiting for the next one.
    pub(super) fn settle(&mut self, fx: &mut Fx<'_>) {
        let deadline = if self.mode.is_some() {
            self.stage = Stage::Active;
            None
        } else {
            self.stage = Stage::Joined;
            self.join_deadline
        };
        self.set_deadline(deadline, fx);
    }

    /// The policy decision for `eval`; `chat_blocked` is the tenant's `blockChat` now.
    pub(in crate::broker) fn decide(
        &mut self,
        eval: EvalId,
        decision: Decision,
        chat_blocked: bool,
        fx: &mut Fx<'_>,
    ) -> Result<(), NotWaiting> {
        let (mode, acknowledged, request) = match &mut self.stage {
            Stage::AwaitingDecision {
                eval: waiting,
                mode,
                acknowledged,
                request,
            } if *waiting == eval => (*mode, std::mem::take(acknowledged), request.take()),
            _ => return Err(NotWaiting),
        };
        let helper_conn = self.helper.conn;
        let sharer_conn = self.conn_of(Role::Sharer);
        let sharer_present = self
            .sharer
            .as_ref()
            .is_some_and(|s| s.conn.is_some() && s.party.user_id.is_some());
        let denial = match &decision {
            Decision::Deny { reason } => Some(*reason),
            Decision::Allow { granted, .. } if !granted.contains(&mode) => {
                Some(DenyReason::PermissionMissing)
            }
            Decision::Allow { .. } => None,
        };
        let session_id = self.id.clone();
        let error = |code, message: String| ServerEvent::Error {
            id: request.clone(),
            code,
            message,
            session_id: Some(session_id.clone()),
        };
        if let Some(reason) = denial {
            self.settle(fx);
            self.audit(self.helper_user(), AuditKind::Denied { mode, reason }, fx);
            fx.send(
                helper_conn,
                error(
                    ErrorCode::Policy(reason),
                    format!("denied by policy: {reason}"),
                ),
            );
            return Ok(());
        }
        let warnings = decision.warnings().to_vec();
        if warnings.iter().any(|w| !acknowledged.contains(w)) {
            self.settle(fx);
            fx.send(
                helper_conn,
                ServerEvent::Warnings {
                    session_id: self.id.clone(),
                    mode,
                    warnings,
                },
            );
            fx.send(
                helper_conn,
                error(
                    ErrorCode::WarningNotAcknowledged,
                    "acknowledge the warnings and ask again".into(),
                ),
            );
            return Ok(());
        }
        let chat = decision.chat_allowed() && !chat_blocked;
        let answer = |consent, expires_at| ServerEvent::ModeRequested {
            id: request.clone(),
            session_id: self.id.clone(),
            mode,
            consent,
            expires_at,
        };
        let helper_profile = self.helper.party.profile.clone();
        if mode == Mode::Unattended && !sharer_present {
            fx.send(helper_conn, answer(ConsentKind::None, None));
            self.grant(mode, chat, fx);
        } else if mode == Mode::Unattended {
            let starts_at = fx.now.saturating_add(fx.config.unattended_decline_window);
            fx.send(
                helper_conn,
                answer(ConsentKind::DeclineWindow, Some(starts_at)),
            );
            self.stage = Stage::AwaitingDeclineWindow { mode, chat };
            self.set_deadline(Some(starts_at), fx);
            fx.send(
                sharer_conn,
                ServerEvent::UnattendedStarting {
                    session_id: self.id.clone(),
                    helper_profile,
                    starts_at,
                },
            );
        } else {
            let expires_at = fx.now.saturating_add(fx.config.consent_timeout);
            fx.send(helper_conn, answer(ConsentKind::Required, Some(expires_at)));
            self.stage = Stage::AwaitingConsent { mode, chat };
            self.set_deadline(Some(expires_at), fx);
            fx.send(
                sharer_conn,
                ServerEvent::ConsentRequested {
                    session_id: self.id.clone(),
                    mode,
                    helper_profile,
                    expires_at,
                },
            );
        }
        Ok(())
    }

    /// The sharer allows or declines (request `id`).
    pub(in crate::broker) fn consent(
        &mut self,
        id: &RequestId,
        allow: bool,
        fx: &mut Fx<'_>,
    ) -> Reply {
        let (mode, chat) = match self.stage {
            Stage::AwaitingConsent { mode, chat } | Stage::AwaitingDeclineWindow { mode, chat } => {
                (mode, chat)
            }
            _ => return refuse(ErrorCode::NotAllowed, "nothing to consent to"),
        };
        let upgrade = self.mode.is_some();
        let actor = self.sharer.as_ref().and_then(|s| s.party.user_ref());
        fx.send(
            self.conn_of(Role::Sharer),
            ServerEvent::Ack { id: id.clone() },
        );
        if allow {
            self.grant(mode, chat, fx);
            return Ok(());
        }
        self.audit(
            actor,
            AuditKind::ConsentRefused {
                mode,
                timed_out: false,
            },
            fx,
        );
        if upgrade {
            self.settle(fx);
            let event = ServerEvent::ConsentDeclined {
                session_id: self.id.clone(),
                mode,
            };
            self.broadcast(&event, fx);
        } else {
            fx.end(EndReason::Declined, EndedBy::Sharer);
        }
        Ok(())
    }

    /// The mode is granted (consent given, window over, or no consent needed).
    pub(super) fn grant(&mut self, mode: Mode, chat: bool, fx: &mut Fx<'_>) {
        if self.mode.is_some() {
            self.settle(fx);
            self.apply_mode(mode, chat, fx);
        } else {
            self.stage = Stage::AwaitingTickets { mode, chat };
            let deadline = fx.now.saturating_add(fx.config.ticket_timeout);
            self.set_deadline(Some(deadline), fx);
            fx.push(Output::IssueTickets {
                session_id: self.id.clone(),
                mode,
                chat,
            });
        }
    }

    /// Changes the mode (and chat) of an active session and tells everyone.
    pub(super) fn apply_mode(&mut self, mode: Mode, chat: bool, fx: &mut Fx<'_>) {
        let Some(from) = self.mode else { return };
        self.mode = Some(mode);
        self.chat = chat;
        let raised = self.highest.is_none_or(|h| mode > h);
        if raised {
            self.highest = Some(mode);
        }
        fx.publish();
        fx.push(Output::RelaySetMode {
            session_id: self.id.clone(),
            mode,
            chat,
        });
        let event = ServerEvent::ModeChanged {
            session_id: self.id.clone(),
            mode,
            chat,
        };
        self.broadcast(&event, fx);
        if raised {
            fx.push(Output::Record(RecordEvent::ModeRaised {
                session_id: self.id.clone(),
                tenant_id: self.tenant_id.clone(),
                mode,
                at: fx.now,
            }));
        }
        self.audit(
            self.helper_user(),
            AuditKind::ModeChanged {
                from,
                to: mode,
                chat,
            },
            fx,
        );
    }

    /// Relay tickets arrived: the session becomes active and each side gets `sessionActive`
    /// with its own ticket.
    pub(in crate::broker) fn tickets(
        &mut self,
        helper: RelayAccess,
        sharer: RelayAccess,
        fx: &mut Fx<'_>,
    ) -> Result<(), NotWaiting> {
        let Stage::AwaitingTickets { mode, chat } = self.stage else {
            return Err(NotWaiting);
        };
        let Some(sharer_seat) = self.sharer.as_ref() else {
            return Err(NotWaiting);
        };
        let record = RecordEvent::Started {
            session_id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            started_at: fx.now,
            requested_at: self.requested_at,
            joined_at: self.joined_at.unwrap_or(fx.now),
            mode,
            chat,
            helper: ReportParty::from(&self.helper.party),
            sharer: ReportParty::from(&sharer_seat.party),
            device: sharer_seat.party.device.clone(),
        };
        self.stage = Stage::Active;
        self.mode = Some(mode);
        self.highest = Some(mode);
        self.chat = chat;
        self.set_deadline(None, fx);
        fx.publish();
        for (role, relay) in [(Role::Helper, helper), (Role::Sharer, sharer)] {
            fx.send(
                self.conn_of(role),
                ServerEvent::SessionActive {
                    session_id: self.id.clone(),
                    mode,
                    chat,
                    relay,
                },
            );
        }
        fx.push(Output::Record(record));
        fx.seen_in(fx.config.seen_interval);
        self.audit(self.helper_user(), AuditKind::Started { mode }, fx);
        Ok(())
    }

    /// Tickets could not be issued: the session ends with `relayUnavailable`.
    pub(in crate::broker) fn tickets_failed(&mut self, fx: &mut Fx<'_>) -> Result<(), NotWaiting> {
        match self.stage {
            Stage::AwaitingTickets { .. } => {
                fx.end(EndReason::RelayUnavailable, EndedBy::Broker);
                Ok(())
            }
            _ => Err(NotWaiting),
        }
    }

    /// `role`'s relay leg dropped: an active session ends for both sides, by that side.
    pub(in crate::broker) fn relay_leg_left(&mut self, role: Role, fx: &mut Fx<'_>) {
        if self.mode.is_some() {
            fx.end(EndReason::Disconnected, role.into());
        }
    }
}
