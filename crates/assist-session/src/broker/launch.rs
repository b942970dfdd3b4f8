//! The launch flow: a helper (or an admin) asks for a device and its connections answer.

use assist_policy::{Mode, Warning};

use super::session::{Seat, Stage};
use super::*;
use crate::message::{EndReason, EndedBy, WithdrawReason};
use crate::output::{AuditEvent, AuditKind};

impl Broker {
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
        if self.draining {
            return Err(LaunchError::Unavailable);
        }
        let user = requested_by.user_ref().ok_or(LaunchError::NotAUser)?;
        let helper_conn = self
            .user_connections(&user)
            .find(|c| self.conns.get(c).is_some_and(Conn::is_idle));
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

    fn launch(
        &mut self,
        helper: Seat,
        device_id: &str,
        mode: Option<Mode>,
        acknowledged: Vec<Warning>,
        now: Timestamp,
    ) -> Result<(SessionId, Timestamp), LaunchError> {
        let tenant = helper.party.tenant_id.clone();
        let device = DeviceRef {
            tenant_id: tenant.clone(),
            device_id: device_id.to_owned(),
        };
        let device_conns: Vec<ConnId> = self
            .device_connections(&device)
            .filter(|c| Some(*c) != helper.conn)
            .collect();
        if device_conns.is_empty() {
            return Err(LaunchError::DeviceOffline);
        }
        let offered: BTreeSet<ConnId> = device_conns
            .into_iter()
            .filter(|c| self.conns.get(c).is_some_and(Conn::is_idle))
            .collect();
        if offered.is_empty() {
            return Err(LaunchError::DeviceBusy);
        }
        let session_id = self.fresh_session_id().ok_or(LaunchError::Unavailable)?;
        let expires_at = now.saturating_add(self.config.launch_timeout);
        let helper_profile = helper.party.profile.clone();
        let actor = helper.party.user_ref();
        let actor_name = helper.party.user_principal_name.clone();
        self.insert_session(
            &session_id,
            helper,
            Stage::AwaitingSharer {
                device_id: device_id.to_owned(),
                offered: offered.clone(),
                mode,
                acknowledged,
            },
            expires_at,
            now,
        );
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
        self.outputs.push_back(Output::Audit(AuditEvent {
            at: now,
            tenant_id: tenant,
            session_id: Some(session_id.clone()),
            actor,
            actor_name,
            kind: AuditKind::LaunchRequested {
                device_id: device_id.to_owned(),
                notified: offered.len(),
            },
        }));
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
        let Some(session) = self.sessions.get(session_id) else {
            return refuse(ErrorCode::NotFound, "no such launch request");
        };
        let offered_here = matches!(
            session.stage(),
            Stage::AwaitingSharer { offered, .. } if offered.contains(&conn)
        );
        if !offered_here {
            return refuse(ErrorCode::NotFound, "no such launch request");
        }
        let own = session.helper_user();
        let c = self.conn(conn)?;
        if accept && c.session.is_some() {
            return refuse(
                ErrorCode::NotAllowed,
                "this connection is already in a session",
            );
        }
        if accept && own.is_some() && c.party.user_ref() == own {
            return refuse(
                ErrorCode::OwnSession,
                "you cannot accept your own launch request; decline it",
            );
        }
        let party = c.party.clone();
        let Some(Stage::AwaitingSharer {
            offered,
            mode,
            acknowledged,
            ..
        }) = self.sessions.get_mut(session_id).map(|s| s.stage_mut())
        else {
            return refuse(ErrorCode::NotFound, "no such launch request");
        };
        offered.remove(&conn);
        if !accept {
            let emptied = offered.is_empty();
            if let Some(c) = self.conns.get_mut(&conn) {
                c.offers.remove(session_id);
            }
            self.send(conn, ServerEvent::Ack { id: id.clone() });
            if emptied {
                self.end_session(session_id, EndReason::LaunchDeclined, EndedBy::Sharer, now);
            }
            return Ok(());
        }
        let others = std::mem::take(offered);
        let pending = mode.take().map(|m| (m, std::mem::take(acknowledged)));
        for other in others.iter().copied().chain([conn]) {
            if let Some(c) = self.conns.get_mut(&other) {
                c.offers.remove(session_id);
            }
        }
        for other in others {
            self.send(
                other,
                ServerEvent::LaunchWithdrawn {
                    session_id: session_id.clone(),
                    reason: WithdrawReason::AnsweredElsewhere,
                },
            );
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.with_session(session_id, now, |s, fx| {
            s.join(conn, party, Some(id.clone()), fx);
            // The mode the launch asked for, once the helper is there to hear the answer.
            if let (Some((mode, acknowledged)), true) = (pending, s.helper().conn.is_some()) {
                s.begin_mode_request(mode, acknowledged, None, fx);
            }
        });
        Ok(())
    }
}
