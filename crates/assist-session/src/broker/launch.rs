//! The launch flow: a helper (or an admin) asks for a device and its connections answer.

use super::*;

impl Broker {
    // ----------------------------------------------------------------- launch flow

    pub(super) fn request_session(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        device_id: String,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Reply {
        self.idle_user(conn)?;
        let party = self.conn(conn)?.party.clone();
        let (session_id, expires_at) = self
            .launch(
                Seat {
                    conn: Some(conn),
                    party,
                },
                &device_id,
                mode,
                acknowledged,
                now,
            )
            .map_err(|e| (e.code(), e.to_string()))?;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.send(
            conn,
            ServerEvent::LaunchPending {
                id: Some(id.clone()),
                session_id,
                device_id,
                expires_at,
            },
        );
        Ok(())
    }

    /// An admin asked for a session with a device (`requestRemoteAssistance`); `requested_by`
    /// is the helper. The admin API checks the caller's Graph permission; the policy runs when
    /// the helper asks for a mode. The helper's signalling connection (an idle one now, or
    /// the next one the user opens) gets `launchPending`.
    pub fn handle_admin_launch(
        &mut self,
        requested_by: Party,
        device_id: &str,
        now: Timestamp,
    ) -> Result<SessionId, LaunchError> {
        self.advance(now);
        let user = requested_by.user_ref().ok_or(LaunchError::NotAUser)?;
        let helper_conn = self
            .live
            .user_connections(&user)
            .into_iter()
            .find(|c| self.conns.get(c).is_some_and(|c| c.session.is_none()));
        let (session_id, expires_at) = self.launch(
            Seat {
                conn: helper_conn,
                party: requested_by,
            },
            device_id,
            None,
            Vec::new(),
            now,
        )?;
        match helper_conn {
            Some(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(session_id.clone());
                }
                self.send(
                    conn,
                    ServerEvent::LaunchPending {
                        id: None,
                        session_id: session_id.clone(),
                        device_id: device_id.to_owned(),
                        expires_at,
                    },
                );
            }
            None => {
                self.unattached.insert(session_id.clone());
            }
        }
        Ok(session_id)
    }

    pub(super) fn launch(
        &mut self,
        helper: Seat,
        device_id: &str,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Result<(SessionId, Timestamp), LaunchError> {
        let tenant = helper.party.tenant_id.clone();
        let device_conns: Vec<ConnId> = self
            .live
            .device_connections(&tenant, device_id)
            .into_iter()
            .filter(|c| Some(*c) != helper.conn)
            .collect();
        if device_conns.is_empty() {
            return Err(LaunchError::DeviceOffline);
        }
        let offered: BTreeSet<ConnId> = device_conns
            .into_iter()
            .filter(|c| self.conns.get(c).is_some_and(|c| c.session.is_none()))
            .collect();
        if offered.is_empty() {
            return Err(LaunchError::DeviceBusy);
        }
        let session_id = self.fresh_session_id().ok_or(LaunchError::Unavailable)?;
        let expires_at = now.saturating_add(self.config.launch_timeout);
        let helper_profile = helper.party.profile.clone();
        let actor = helper.party.user_ref();
        self.new_session(
            &session_id,
            helper,
            Stage::AwaitingSharer {
                device_id: device_id.to_owned(),
                offered: offered.clone(),
                mode,
                acknowledged,
            },
        );
        self.set_deadline(&session_id, Some(expires_at));
        for conn in &offered {
            if let Some(c) = self.conns.get_mut(conn) {
                c.offers.insert(session_id.clone());
            }
            self.send(
                *conn,
                ServerEvent::LaunchRequested {
                    session_id: session_id.clone(),
                    helper_profile: helper_profile.clone(),
                    mode,
                    expires_at,
                },
            );
        }
        self.audit(
            now,
            &tenant,
            Some(&session_id),
            actor,
            AuditKind::LaunchRequested {
                device_id: device_id.to_owned(),
                notified: offered.len(),
            },
        );
        Ok((session_id, expires_at))
    }

    pub(super) fn answer_launch(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        session_id: &SessionId,
        accept: bool,
        now: Timestamp,
    ) -> Reply {
        let offered_here = matches!(
            self.sessions.get(session_id).map(|s| &s.stage),
            Some(Stage::AwaitingSharer { offered, .. }) if offered.contains(&conn)
        );
        if !offered_here {
            return refuse(ErrorCode::NotFound, "no such launch request");
        }
        if accept && self.conn(conn)?.session.is_some() {
            return refuse(
                ErrorCode::NotAllowed,
                "this connection is already in a session",
            );
        }
        if accept {
            if let Some(user) = self.conn(conn)?.party.user_ref() {
                if self.is_own_session(session_id, &user) {
                    return refuse(
                        ErrorCode::OwnSession,
                        "you cannot accept your own launch request; decline it",
                    );
                }
            }
        }
        let Some(Stage::AwaitingSharer {
            offered,
            mode,
            acknowledged,
            ..
        }) = self.sessions.get_mut(session_id).map(|s| &mut s.stage)
        else {
            return refuse(ErrorCode::NotFound, "no such launch request");
        };
        offered.remove(&conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.offers.remove(session_id);
        }
        if !accept {
            let emptied = offered.is_empty();
            self.send(conn, ServerEvent::Ack { id: id.clone() });
            if emptied {
                self.end_session(session_id, EndReason::LaunchDeclined, EndedBy::Sharer, now);
            }
            return Ok(());
        }
        let others = std::mem::take(offered);
        let pending = mode.take().map(|m| (m, std::mem::take(acknowledged)));
        for other in others {
            if let Some(c) = self.conns.get_mut(&other) {
                c.offers.remove(session_id);
            }
            self.send(
                other,
                ServerEvent::LaunchWithdrawn {
                    session_id: session_id.clone(),
                    reason: WithdrawReason::AnsweredElsewhere,
                },
            );
        }
        self.join(session_id, conn, Some(id.clone()), now);
        let helper_present = self
            .sessions
            .get(session_id)
            .is_some_and(|s| s.helper.conn.is_some());
        if let (Some((mode, acknowledged)), true) = (pending, helper_present) {
            self.begin_mode_request(session_id, mode, acknowledged, None, now);
        }
        Ok(())
    }
}
