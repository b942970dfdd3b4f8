//! Modes and consent: mode requests and the policy, consent and the unattended decline
//! window, relay tickets, and mode changes of an active session.

use super::*;

impl Broker {
    // ----------------------------------------------------------------- modes and consent

    pub(super) fn request_mode(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Reply {
        if self.role_in(conn, session_id)? != Role::Helper {
            return refuse(ErrorCode::NotAllowed, "only the helper asks for a mode");
        }
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such session");
        };
        if !matches!(session.stage, Stage::Joined | Stage::Active) {
            return refuse(ErrorCode::NotAllowed, "the session cannot change mode now");
        }
        if let Some(current) = session.mode {
            if mode == current {
                return refuse(ErrorCode::NotAllowed, "the session is already in this mode");
            }
            if mode < current {
                // Downgrades need neither the policy nor consent.
                let chat = session.chat;
                self.send(
                    conn,
                    ServerEvent::ModeRequested {
                        id: Some(id.clone()),
                        session_id: session_id.clone(),
                        mode,
                        consent: ConsentKind::None,
                        expires_at: None,
                    },
                );
                self.apply_mode(session_id, mode, chat, now);
                return Ok(());
            }
        }
        self.begin_mode_request(session_id, mode, acknowledged, Some(id.clone()), now);
        Ok(())
    }

    pub(super) fn begin_mode_request(
        &mut self,
        session_id: &SessionId,
        mode: Mode,
        acknowledged: Vec<Warning>,
        request: Option<RequestId>,
        now: Timestamp,
    ) {
        self.next_eval = self.next_eval.wrapping_add(1);
        let eval = EvalId(self.next_eval);
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let (Some(helper), Some(sharer)) =
            (session.helper.party.user_ref(), session.sharer.as_ref())
        else {
            return;
        };
        let request_out = EvaluateRequest {
            eval,
            session_id: session_id.clone(),
            helper: helper.clone(),
            sharer: sharer.party.user_ref(),
            sharer_tenant_id: sharer.party.tenant_id.clone(),
            device_id: sharer.party.device.as_ref().map(|d| d.id.clone()),
            mode,
        };
        session.stage = Stage::AwaitingDecision {
            eval,
            mode,
            acknowledged,
            request,
        };
        let tenant = session.tenant_id.clone();
        self.evals.insert(eval, session_id.clone());
        let deadline = now.saturating_add(self.config.decision_timeout);
        self.set_deadline(session_id, Some(deadline));
        self.outputs.push_back(Output::Evaluate(request_out));
        self.audit(
            now,
            &tenant,
            Some(session_id),
            Some(helper),
            AuditKind::Requested { mode },
        );
    }

    /// Puts a session whose mode request is over back to waiting for the next one.
    pub(super) fn settle(&mut self, session_id: &SessionId) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let deadline = if session.mode.is_some() {
            session.stage = Stage::Active;
            None
        } else {
            session.stage = Stage::Joined;
            session.join_deadline
        };
        self.set_deadline(session_id, deadline);
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
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Err(InputError::UnknownEvaluation(eval));
        };
        let (mode, acknowledged, request) = match &mut session.stage {
            Stage::AwaitingDecision {
                eval: waiting,
                mode,
                acknowledged,
                request,
            } if *waiting == eval => (*mode, std::mem::take(acknowledged), request.take()),
            _ => return Err(InputError::UnknownEvaluation(eval)),
        };
        let tenant = session.tenant_id.clone();
        let helper_conn = session.helper.conn;
        let helper_user = session.helper.party.user_ref();
        let helper_profile = session.helper.party.profile.clone();
        let sharer_conn = session.conn_of(Role::Sharer);
        let sharer_present = session
            .sharer
            .as_ref()
            .is_some_and(|s| s.conn.is_some() && s.party.user_id.is_some());
        let blocked = self.chat_blocked.get(&tenant).copied().unwrap_or(false);
        let denial = match &decision {
            Decision::Deny { reason } => Some(*reason),
            Decision::Allow { granted, .. } if !granted.contains(&mode) => {
                Some(DenyReason::PermissionMissing)
            }
            Decision::Allow { .. } => None,
        };
        if let Some(reason) = denial {
            self.settle(&session_id);
            self.audit(
                now,
                &tenant,
                Some(&session_id),
                helper_user,
                AuditKind::Denied { mode, reason },
            );
            if let Some(conn) = helper_conn {
                self.send_error(
                    conn,
                    request,
                    ErrorCode::Policy(reason),
                    format!("denied by policy: {reason}"),
                    Some(session_id),
                );
            }
            return Ok(());
        }
        let warnings = decision.warnings().to_vec();
        if warnings.iter().any(|w| !acknowledged.contains(w)) {
            self.settle(&session_id);
            if let Some(conn) = helper_conn {
                self.send(
                    conn,
                    ServerEvent::Warnings {
                        session_id: session_id.clone(),
                        mode,
                        warnings,
                    },
                );
                self.send_error(
                    conn,
                    request,
                    ErrorCode::WarningNotAcknowledged,
                    "acknowledge the warnings and ask again".into(),
                    Some(session_id),
                );
            }
            return Ok(());
        }
        let chat = decision.chat_allowed() && !blocked;
        let answer = |consent, expires_at| ServerEvent::ModeRequested {
            id: request.clone(),
            session_id: session_id.clone(),
            mode,
            consent,
            expires_at,
        };
        if mode == Mode::Unattended && !sharer_present {
            self.send_to(helper_conn, answer(ConsentKind::None, None));
            self.grant(&session_id, mode, chat, now);
        } else if mode == Mode::Unattended {
            let starts_at = now.saturating_add(self.config.unattended_decline_window);
            if let Some(s) = self.sessions.get_mut(&session_id) {
                s.stage = Stage::AwaitingDeclineWindow { mode, chat };
            }
            self.set_deadline(&session_id, Some(starts_at));
            self.send_to(
                helper_conn,
                answer(ConsentKind::DeclineWindow, Some(starts_at)),
            );
            self.send_to(
                sharer_conn,
                ServerEvent::UnattendedStarting {
                    session_id: session_id.clone(),
                    helper_profile,
                    starts_at,
                },
            );
        } else {
            let expires_at = now.saturating_add(self.config.consent_timeout);
            if let Some(s) = self.sessions.get_mut(&session_id) {
                s.stage = Stage::AwaitingConsent { mode, chat };
            }
            self.set_deadline(&session_id, Some(expires_at));
            self.send_to(helper_conn, answer(ConsentKind::Required, Some(expires_at)));
            self.send_to(
                sharer_conn,
                ServerEvent::ConsentRequested {
                    session_id: session_id.clone(),
                    mode,
                    helper_profile,
                    expires_at,
                },
            );
        }
        Ok(())
    }

    pub(super) fn consent(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        allow: bool,
        now: Timestamp,
    ) -> Reply {
        if self.role_in(conn, session_id)? != Role::Sharer {
            return refuse(ErrorCode::NotAllowed, "only the sharer consents");
        }
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such session");
        };
        let (mode, chat) = match session.stage {
            Stage::AwaitingConsent { mode, chat } | Stage::AwaitingDeclineWindow { mode, chat } => {
                (mode, chat)
            }
            _ => return refuse(ErrorCode::NotAllowed, "nothing to consent to"),
        };
        let upgrade = session.mode.is_some();
        let tenant = session.tenant_id.clone();
        let actor = session.sharer.as_ref().and_then(|s| s.party.user_ref());
        self.send(conn, ServerEvent::Ack { id: id.clone() });
        if allow {
            self.grant(session_id, mode, chat, now);
            return Ok(());
        }
        self.audit(
            now,
            &tenant,
            Some(session_id),
            actor,
            AuditKind::ConsentRefused {
                mode,
                timed_out: false,
            },
        );
        if upgrade {
            self.settle(session_id);
            let event = ServerEvent::ConsentDeclined {
                session_id: session_id.clone(),
                mode,
            };
            self.broadcast(session_id, &event);
        } else {
            self.end_session(session_id, EndReason::Declined, EndedBy::Sharer, now);
        }
        Ok(())
    }

    pub(super) fn broadcast(&mut self, session_id: &SessionId, event: &ServerEvent) {
        let conns: Vec<ConnId> = self
            .sessions
            .get(session_id)
            .map(|s| s.conns().collect())
            .unwrap_or_default();
        for conn in conns {
            self.send(conn, event.clone());
        }
    }

    /// The mode is granted (consent given, window over, or no consent needed).
    pub(super) fn grant(&mut self, session_id: &SessionId, mode: Mode, chat: bool, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        if session.mode.is_some() {
            self.settle(session_id);
            self.apply_mode(session_id, mode, chat, now);
        } else {
            session.stage = Stage::AwaitingTickets { mode, chat };
            let deadline = now.saturating_add(self.config.ticket_timeout);
            self.set_deadline(session_id, Some(deadline));
            self.outputs.push_back(Output::IssueTickets {
                session_id: session_id.clone(),
                mode,
                chat,
            });
        }
    }

    /// Changes the mode (and chat) of an active session and tells everyone.
    pub(super) fn apply_mode(
        &mut self,
        session_id: &SessionId,
        mode: Mode,
        chat: bool,
        now: Timestamp,
    ) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        let Some(from) = session.mode else { return };
        session.mode = Some(mode);
        session.chat = chat;
        let raised = session.highest.is_none_or(|h| mode > h);
        if raised {
            session.highest = Some(mode);
        }
        let tenant = session.tenant_id.clone();
        let actor = session.helper.party.user_ref();
        self.publish(session_id);
        self.outputs.push_back(Output::RelaySetMode {
            session_id: session_id.clone(),
            mode,
            chat,
        });
        let event = ServerEvent::ModeChanged {
            session_id: session_id.clone(),
            mode,
            chat,
        };
        self.broadcast(session_id, &event);
        if raised {
            self.outputs
                .push_back(Output::Record(RecordEvent::ModeRaised {
                    session_id: session_id.clone(),
                    tenant_id: tenant.clone(),
                    mode,
                    at: now,
                }));
        }
        self.audit(
            now,
            &tenant,
            Some(session_id),
            actor,
            AuditKind::ModeChanged {
                from,
                to: mode,
                chat,
            },
        );
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
        let not_awaiting = || InputError::NotAwaitingTickets(session_id.clone());
        let session = self.sessions.get_mut(session_id).ok_or_else(not_awaiting)?;
        let Stage::AwaitingTickets { mode, chat } = session.stage else {
            return Err(not_awaiting());
        };
        let Some(sharer_seat) = session.sharer.as_ref() else {
            return Err(not_awaiting());
        };
        session.stage = Stage::Active;
        session.mode = Some(mode);
        session.highest = Some(mode);
        session.chat = chat;
        let record = RecordEvent::Started {
            session_id: session_id.clone(),
            tenant_id: session.tenant_id.clone(),
            started_at: now,
            mode,
            chat,
            helper: ReportParty::from(&session.helper.party),
            sharer: ReportParty::from(&sharer_seat.party),
            device: sharer_seat.party.device.clone(),
        };
        let tenant = session.tenant_id.clone();
        let actor = session.helper.party.user_ref();
        let (helper_conn, sharer_conn) =
            (session.conn_of(Role::Helper), session.conn_of(Role::Sharer));
        self.set_deadline(session_id, None);
        self.publish(session_id);
        for (conn, relay) in [(helper_conn, helper), (sharer_conn, sharer)] {
            self.send_to(
                conn,
                ServerEvent::SessionActive {
                    session_id: session_id.clone(),
                    mode,
                    chat,
                    relay,
                },
            );
        }
        self.outputs.push_back(Output::Record(record));
        self.schedule(
            now.saturating_add(self.config.seen_interval),
            Timer::Seen(session_id.clone()),
        );
        self.audit(
            now,
            &tenant,
            Some(session_id),
            actor,
            AuditKind::Started { mode },
        );
        Ok(())
    }

    /// Tickets could not be issued (no relay available): the session ends with
    /// `relayUnavailable`.
    pub fn handle_tickets_failed(
        &mut self,
        session_id: &SessionId,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        match self.sessions.get(session_id).map(|s| &s.stage) {
            Some(Stage::AwaitingTickets { .. }) => {
                self.end_session(
                    session_id,
                    EndReason::RelayUnavailable,
                    EndedBy::Broker,
                    now,
                );
                Ok(())
            }
            _ => Err(InputError::NotAwaitingTickets(session_id.clone())),
        }
    }

    /// The relay says `role`'s leg of an active session dropped (closed, failed or stopped
    /// reading) after pairing. The session ends for both sides with `disconnected`, by that
    /// side, so both apps may start a new one. A session that is not active (already ended,
    /// or never granted) is left alone.
    pub fn handle_relay_leg_left(&mut self, session_id: &SessionId, role: Role, now: Timestamp) {
        self.advance(now);
        if self.sessions.get(session_id).and_then(|s| s.mode).is_none() {
            return;
        }
        let by = match role {
            Role::Helper => EndedBy::Helper,
            Role::Sharer => EndedBy::Sharer,
        };
        self.end_session(session_id, EndReason::Disconnected, by, now);
    }
}
