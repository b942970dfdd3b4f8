//! Connections and requests: opening and closing connections, the request rate limit and
//! abuse strikes, routing each parsed request to its flow, and the session directory entry.

use super::*;

impl Broker {
    // ----------------------------------------------------------------- connections

    /// A signalling connection opened and authenticated as `party`.
    pub fn handle_connect(
        &mut self,
        conn: ConnId,
        party: Party,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        if self.conns.contains_key(&conn) {
            return Err(InputError::DuplicateConnection(conn));
        }
        let user = party.user_ref();
        self.live.add_connection(
            conn,
            user.as_ref(),
            party
                .device
                .as_ref()
                .map(|d| (party.tenant_id.as_str(), d.id.as_str())),
        );
        self.conns.insert(
            conn,
            Conn {
                party,
                session: None,
                offers: BTreeSet::new(),
                bucket: RequestBucket::full(self.config.request_rate, now),
                strikes: Strikes::default(),
            },
        );
        if let Some(user) = user {
            self.attach_helper(conn, &user);
        }
        Ok(())
    }

    /// Gives an admin-launched session waiting for its helper to the helper's new connection.
    pub(super) fn attach_helper(&mut self, conn: ConnId, user: &UserRef) {
        let found = self.unattached.iter().find(|id| {
            self.sessions
                .get(*id)
                .is_some_and(|s| s.helper.party.user_ref().as_ref() == Some(user))
        });
        let Some(id) = found.cloned() else { return };
        self.unattached.remove(&id);
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        session.helper.conn = Some(conn);
        let event = match &session.stage {
            Stage::AwaitingSharer { device_id, .. } => ServerEvent::LaunchPending {
                id: None,
                session_id: id.clone(),
                device_id: device_id.clone(),
                expires_at: session.deadline.unwrap_or_default(),
            },
            _ => ServerEvent::SessionJoined {
                id: None,
                session_id: id.clone(),
                role: Role::Helper,
                peer_profile: session
                    .sharer
                    .as_ref()
                    .map(|s| s.party.profile.clone())
                    .unwrap_or_default(),
            },
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id.clone());
        }
        self.publish(&id);
        self.send(conn, event);
    }

    /// A connection closed (or the IO layer closed it after [`Output::Close`]). Its session
    /// ends with `disconnected`. Idempotent.
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Timestamp) {
        self.advance(now);
        self.drop_conn(conn, now);
    }

    pub(super) fn drop_conn(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.live.remove_connection(
            conn,
            c.party.user_ref().as_ref(),
            c.party
                .device
                .as_ref()
                .map(|d| (c.party.tenant_id.as_str(), d.id.as_str())),
        );
        for id in &c.offers {
            let emptied = match self.sessions.get_mut(id).map(|s| &mut s.stage) {
                Some(Stage::AwaitingSharer { offered, .. }) => {
                    offered.remove(&conn);
                    offered.is_empty()
                }
                _ => false,
            };
            if emptied {
                self.end_session(id, EndReason::LaunchDeclined, EndedBy::Sharer, now);
            }
        }
        if let Some(id) = c.session {
            let by = match self.sessions.get(&id) {
                Some(s) if s.helper.conn == Some(conn) => EndedBy::Helper,
                Some(_) => EndedBy::Sharer,
                None => return,
            };
            self.end_session(&id, EndReason::Disconnected, by, now);
        }
    }

    pub(super) fn close_for_abuse(&mut self, conn: ConnId, now: Timestamp) {
        self.outputs.push_back(Output::Close {
            conn,
            code: CloseCode::Abuse,
        });
        self.drop_conn(conn, now);
    }

    /// Counts an abuse strike; closes the connection when the limit is reached.
    pub(super) fn strike(&mut self, conn: ConnId, now: Timestamp) {
        let (max, window) = (self.config.abuse_strikes, self.config.abuse_window);
        let reached = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.strikes.strike(max, window, now));
        if reached {
            self.close_for_abuse(conn, now);
        }
    }

    /// Takes a request token; on an empty bucket answers `rateLimited` and strikes.
    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        id: Option<RequestId>,
        now: Timestamp,
    ) -> Result<bool, InputError> {
        let rate = self.config.request_rate;
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(InputError::UnknownConnection(conn))?;
        if c.bucket.take(rate, now) {
            return Ok(true);
        }
        self.send_error(
            conn,
            id,
            ErrorCode::RateLimited,
            "too many requests".into(),
            None,
        );
        self.strike(conn, now);
        Ok(false)
    }

    /// A text message arrived on `conn`: parse it and handle it. Malformed, unknown and
    /// oversized messages are answered with `error` and count as abuse strikes.
    pub fn handle_text(
        &mut self,
        conn: ConnId,
        text: &str,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        match ClientMessage::parse(text) {
            Ok(message) => self.handle_message_inner(conn, message, now),
            Err(e) => {
                if !self.admit(conn, e.id().cloned(), now)? {
                    return Ok(());
                }
                self.send_error(conn, e.id().cloned(), e.code(), e.to_string(), None);
                self.strike(conn, now);
                Ok(())
            }
        }
    }

    /// A parsed request arrived on `conn`.
    pub fn handle_message(
        &mut self,
        conn: ConnId,
        message: ClientMessage,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        self.handle_message_inner(conn, message, now)
    }

    pub(super) fn handle_message_inner(
        &mut self,
        conn: ConnId,
        message: ClientMessage,
        now: Timestamp,
    ) -> Result<(), InputError> {
        let ClientMessage { id, request } = message;
        if !self.admit(conn, Some(id.clone()), now)? {
            return Ok(());
        }
        let about = match &request {
            ClientRequest::AnswerLaunch { session_id, .. }
            | ClientRequest::RequestMode { session_id, .. }
            | ClientRequest::Consent { session_id, .. }
            | ClientRequest::Chat { session_id, .. }
            | ClientRequest::EndSession { session_id } => Some(session_id.clone()),
            _ => None,
        };
        let result = match request {
            ClientRequest::Ping => {
                self.send(conn, ServerEvent::Pong { id: id.clone() });
                Ok(())
            }
            ClientRequest::RequestCode => self.request_code(conn, &id, now),
            ClientRequest::RedeemCode { code } => self.redeem_code(conn, &id, &code, now),
            ClientRequest::RequestSession {
                device_id,
                mode,
                acknowledge_warnings,
            } => self.request_session(conn, &id, device_id, mode, acknowledge_warnings, now),
            ClientRequest::AnswerLaunch { session_id, accept } => {
                self.answer_launch(conn, &id, &session_id, accept, now)
            }
            ClientRequest::RequestMode {
                session_id,
                mode,
                acknowledge_warnings,
            } => self.request_mode(conn, &id, &session_id, mode, acknowledge_warnings, now),
            ClientRequest::Consent { session_id, allow } => {
                self.consent(conn, &id, &session_id, allow, now)
            }
            ClientRequest::Chat { session_id, text } => {
                self.chat(conn, &id, &session_id, text, now)
            }
            ClientRequest::EndSession { session_id } => {
                self.end_request(conn, &id, &session_id, now)
            }
        };
        if let Err((code, message)) = result {
            self.send_error(conn, Some(id), code, message, about);
        }
        Ok(())
    }

    pub(super) fn conn(&self, conn: ConnId) -> Result<&Conn, (ErrorCode, String)> {
        match self.conns.get(&conn) {
            Some(c) => Ok(c),
            None => refuse(ErrorCode::NotAllowed, "connection closed"),
        }
    }

    /// The caller's user, if it is a signed-in user with no session.
    pub(super) fn idle_user(&self, conn: ConnId) -> Result<UserRef, (ErrorCode, String)> {
        let c = self.conn(conn)?;
        if c.session.is_some() {
            return refuse(
                ErrorCode::NotAllowed,
                "this connection is already in a session",
            );
        }
        match c.party.user_ref() {
            Some(user) => Ok(user),
            None => refuse(ErrorCode::NotAllowed, "a signed-in user is required"),
        }
    }

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

    pub(super) fn fresh_session_id(&mut self) -> Option<SessionId> {
        for _ in 0..FRESH_ATTEMPTS {
            let mut bytes = [0u8; 16];
            self.crypto.fill_random(&mut bytes);
            let mut hex = String::with_capacity(32);
            for b in bytes {
                let _ = write!(hex, "{b:02x}");
            }
            let id = SessionId(hex);
            if !self.sessions.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    pub(super) fn new_session(&mut self, id: &SessionId, helper: Seat, stage: Stage) {
        let tenant_id = helper.party.tenant_id.clone();
        let chat = !self.chat_blocked.get(&tenant_id).copied().unwrap_or(false);
        self.sessions.insert(
            id.clone(),
            Session {
                tenant_id,
                helper,
                sharer: None,
                stage,
                mode: None,
                highest: None,
                chat,
                join_deadline: None,
                deadline: None,
            },
        );
        self.publish(id);
    }

    /// Writes a session's directory entry to the live state.
    pub(super) fn publish(&self, id: &SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let stage = match (&s.stage, s.mode) {
            (_, Some(_)) => LiveStage::Active,
            (Stage::AwaitingRedemption { .. } | Stage::AwaitingSharer { .. }, None) => {
                LiveStage::Pending
            }
            (_, None) => LiveStage::Joined,
        };
        let device_id = match &s.stage {
            Stage::AwaitingSharer { device_id, .. } => Some(device_id.clone()),
            _ => s
                .sharer
                .as_ref()
                .and_then(|seat| seat.party.device.as_ref())
                .map(|d| d.id.clone()),
        };
        self.live.put_session(
            id,
            LiveSession {
                tenant_id: s.tenant_id.clone(),
                stage,
                mode: s.mode,
                chat: s.chat,
                helper: s.helper.party.user_ref(),
                helper_conn: s.helper.conn,
                sharer: s.sharer.as_ref().and_then(|seat| seat.party.user_ref()),
                sharer_conn: s.sharer.as_ref().and_then(|seat| seat.conn),
                device_id,
            },
        );
    }
}
