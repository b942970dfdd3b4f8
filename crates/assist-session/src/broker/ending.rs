//! Chat, ending a session (by request, disconnect, relay leg, deadline) and tenant settings
//! changes.

use super::*;

impl Broker {
    // ----------------------------------------------------------------- chat and end

    pub(super) fn chat(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        text: String,
        now: Timestamp,
    ) -> Reply {
        let role = self.role_in(conn, session_id)?;
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such session");
        };
        if session.mode.is_none() {
            return refuse(
                ErrorCode::NotAllowed,
                "chat starts when the session is active",
            );
        }
        if text.chars().count() > MAX_CHAT_CHARS {
            return refuse(
                ErrorCode::TooLarge,
                format!("chat text over {MAX_CHAT_CHARS} characters"),
            );
        }
        if !session.chat {
            let tenant = session.tenant_id.clone();
            let actor = self.conn(conn)?.party.user_ref();
            self.audit(
                now,
                &tenant,
                Some(session_id),
                actor,
                AuditKind::ChatBlocked,
            );
            return refuse(
                ErrorCode::ChatBlocked,
                "chat is disabled by your organisation",
            );
        }
        let peer = session.conn_of(match role {
            Role::Helper => Role::Sharer,
            Role::Sharer => Role::Helper,
        });
        self.send_to(
            peer,
            ServerEvent::Chat {
                session_id: session_id.clone(),
                from: role,
                text,
                at: now,
            },
        );
        self.send(conn, ServerEvent::Ack { id: id.clone() });
        Ok(())
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

    /// Ends a session: tells both sides, the relay, the report and the audit log, and
    /// forgets it.
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
        self.live.remove_session(session_id);
        self.unattached.remove(session_id);
        let relay_knows =
            session.mode.is_some() || matches!(session.stage, Stage::AwaitingTickets { .. });
        let participants = [session.conn_of(Role::Helper), session.conn_of(Role::Sharer)];
        match session.stage {
            Stage::AwaitingRedemption { digest } => {
                if reason == EndReason::CodeExpired {
                    let forget_at = now.saturating_add(self.config.expired_code_memory);
                    self.live
                        .replace_code(&digest, LiveCode::Expired { forget_at });
                    self.schedule(forget_at, Timer::ForgetCode(digest));
                } else {
                    self.live.take_code_if(&digest, &|_| true);
                }
            }
            Stage::AwaitingSharer { offered, .. } => {
                for conn in offered {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.offers.remove(session_id);
                    }
                    self.send(
                        conn,
                        ServerEvent::LaunchWithdrawn {
                            session_id: session_id.clone(),
                            reason: WithdrawReason::Cancelled,
                        },
                    );
                }
            }
            Stage::AwaitingDecision { eval, .. } => {
                self.evals.remove(&eval);
            }
            _ => {}
        }
        let ended = ServerEvent::SessionEnded {
            session_id: session_id.clone(),
            reason,
            by,
        };
        for conn in participants.into_iter().flatten() {
            if let Some(c) = self.conns.get_mut(&conn) {
                if c.session.as_ref() == Some(session_id) {
                    c.session = None;
                }
            }
            self.send(conn, ended.clone());
        }
        if relay_knows {
            self.outputs.push_back(Output::RelayEnd {
                session_id: session_id.clone(),
                reason,
            });
        }
        if let Some(highest_mode) = session.highest {
            self.outputs.push_back(Output::Record(RecordEvent::Ended {
                session_id: session_id.clone(),
                tenant_id: session.tenant_id.clone(),
                ended_at: now,
                highest_mode,
                reason,
                by,
            }));
        }
        // The session is already gone from the map: name the actor from its seats here.
        let actor = match by {
            EndedBy::Helper => Some(&session.helper.party),
            EndedBy::Sharer => session.sharer.as_ref().map(|s| &s.party),
            EndedBy::Broker | EndedBy::Admin => None,
        };
        self.audit_named(
            now,
            &session.tenant_id,
            Some(session_id),
            actor.and_then(Party::user_ref),
            actor.and_then(|p| p.user_principal_name.clone()),
            AuditKind::Ended { reason, by },
        );
    }

    pub(super) fn on_deadline(&mut self, session_id: &SessionId, at: Timestamp, now: Timestamp) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        if session.deadline != Some(at) {
            return; // superseded
        }
        session.deadline = None;
        let upgrade = session.mode.is_some();
        let tenant = session.tenant_id.clone();
        match &mut session.stage {
            Stage::AwaitingRedemption { .. } => {
                self.end_session(session_id, EndReason::CodeExpired, EndedBy::Broker, now);
            }
            Stage::AwaitingSharer { .. } => {
                self.end_session(session_id, EndReason::LaunchTimedOut, EndedBy::Broker, now);
            }
            Stage::Joined => {
                self.end_session(session_id, EndReason::JoinTimedOut, EndedBy::Broker, now)
            }
            Stage::AwaitingDecision { eval, request, .. } => {
                let (eval, request) = (*eval, request.take());
                let helper_conn = session.helper.conn;
                self.evals.remove(&eval);
                self.settle(session_id);
                if let Some(conn) = helper_conn {
                    self.send_error(
                        conn,
                        request,
                        ErrorCode::Unavailable,
                        "the policy could not be evaluated in time; retry".into(),
                        Some(session_id.clone()),
                    );
                }
            }
            Stage::AwaitingConsent { mode, .. } => {
                let mode = *mode;
                let event = ServerEvent::ConsentTimedOut {
                    session_id: session_id.clone(),
                    mode,
                };
                self.broadcast(session_id, &event);
                self.audit(
                    now,
                    &tenant,
                    Some(session_id),
                    None,
                    AuditKind::ConsentRefused {
                        mode,
                        timed_out: true,
                    },
                );
                if upgrade {
                    self.settle(session_id);
                } else {
                    self.end_session(session_id, EndReason::ConsentTimedOut, EndedBy::Broker, now);
                }
            }
            Stage::AwaitingDeclineWindow { mode, chat } => {
                let (mode, chat) = (*mode, *chat);
                self.grant(session_id, mode, chat, now);
            }
            Stage::AwaitingTickets { .. } => {
                self.end_session(
                    session_id,
                    EndReason::RelayUnavailable,
                    EndedBy::Broker,
                    now,
                );
            }
            Stage::Active => {}
        }
    }

    // ----------------------------------------------------------------- admin

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
            .filter(|(_, s)| s.tenant_id == tenant_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            if !remote_help_enabled {
                self.end_session(&id, EndReason::RemoteHelpDisabled, EndedBy::Admin, now);
                continue;
            }
            let Some(session) = self.sessions.get_mut(&id) else {
                continue;
            };
            let allowed = !block_chat;
            if let Stage::AwaitingConsent { chat, .. }
            | Stage::AwaitingDeclineWindow { chat, .. }
            | Stage::AwaitingTickets { chat, .. } = &mut session.stage
            {
                *chat = *chat && allowed;
            }
            match session.mode {
                Some(mode) if session.chat != allowed => self.apply_mode(&id, mode, allowed, now),
                Some(_) => {}
                None => {
                    session.chat = allowed;
                    self.publish(&id);
                }
            }
        }
    }
}
