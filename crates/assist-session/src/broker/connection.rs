//! Connections and requests: opening and closing connections (and their presence), the
//! request rate limit and abuse strikes, and routing each parsed request to its flow.

use super::session::Stage;
use super::*;
use crate::live::LiveOp;
use crate::message::{ClientMessage, ClientRequest, CloseCode, EndReason, EndedBy, Role};

fn add_to<K: std::hash::Hash + Eq>(map: &mut HashMap<K, BTreeSet<ConnId>>, key: K, conn: ConnId) {
    map.entry(key).or_default().insert(conn);
}

fn remove_from<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, BTreeSet<ConnId>>,
    key: &K,
    conn: ConnId,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&conn);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

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
        let c = Conn {
            party,
            session: None,
            offers: BTreeSet::new(),
            bucket: RequestBucket::full(self.config.request_rate, now),
            strikes: Strikes::default(),
            busy: None,
        };
        let device = c.device();
        if let Some(user) = &user {
            add_to(&mut self.by_user, user.clone(), conn);
        }
        if let Some(device) = &device {
            add_to(&mut self.by_device, device.clone(), conn);
        }
        self.live(LiveOp::AddConnection {
            conn,
            user: user.clone(),
            device,
        });
        self.conns.insert(conn, c);
        if let Some(user) = user {
            self.attach_helper(conn, &user, now);
        }
        Ok(())
    }

    /// Gives an admin-launched session waiting for its helper to the helper's new connection.
    fn attach_helper(&mut self, conn: ConnId, user: &UserRef, now: Timestamp) {
        let found = self.unattached.iter().find(|id| {
            self.sessions
                .get(*id)
                .is_some_and(|s| s.helper_user().as_ref() == Some(user))
        });
        let Some(id) = found.cloned() else { return };
        self.unattached.remove(&id);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id.clone());
        }
        self.with_session(&id, now, |s, fx| s.attach_helper(conn, fx));
    }

    /// A connection closed (or the IO layer closed it after [`Output::Close`]). Its session
    /// ends with `disconnected`. Idempotent.
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Timestamp) {
        self.advance(now);
        self.drop_conn(conn, now);
    }

    fn drop_conn(&mut self, conn: ConnId, now: Timestamp) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let user = c.party.user_ref();
        let device = c.device();
        if let Some(user) = &user {
            remove_from(&mut self.by_user, user, conn);
        }
        if let Some(device) = &device {
            remove_from(&mut self.by_device, device, conn);
        }
        self.live(LiveOp::RemoveConnection { conn, user, device });
        // A live-state query of this connection still out is undone when it is answered.
        for id in &c.offers {
            let emptied = self.sessions.get_mut(id).is_some_and(|s| {
                s.detach(conn);
                matches!(s.stage(), Stage::AwaitingSharer { offered, .. } if offered.is_empty())
            });
            if emptied {
                self.end_session(id, EndReason::LaunchDeclined, EndedBy::Sharer, now);
            }
        }
        if let Some(id) = c.session {
            let Some(s) = self.sessions.get_mut(&id) else {
                return;
            };
            let by = match s.role_of(conn) {
                Some(Role::Helper) => EndedBy::Helper,
                _ => EndedBy::Sharer,
            };
            s.detach(conn);
            self.end_session(&id, EndReason::Disconnected, by, now);
        }
    }

    fn close_for_abuse(&mut self, conn: ConnId, now: Timestamp) {
        self.outputs.push_back(Output::Close {
            conn,
            code: CloseCode::Abuse,
        });
        self.drop_conn(conn, now);
    }

    /// Counts an abuse strike; closes the connection when the limit is reached.
    fn strike(&mut self, conn: ConnId, now: Timestamp) {
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
    fn admit(
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

    fn handle_message_inner(
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
        let needs_idle = matches!(
            request,
            ClientRequest::RequestCode
                | ClientRequest::RedeemCode { .. }
                | ClientRequest::RequestSession { .. }
                | ClientRequest::AnswerLaunch { .. }
        );
        let busy = self.conns.get(&conn).is_some_and(|c| c.busy.is_some());
        let result = match request {
            _ if needs_idle && busy => refuse(
                ErrorCode::NotAllowed,
                "the previous request on this connection is still being answered; retry",
            ),
            ref r if self.draining && drain::starts_a_session(r) => drain::refusal(),
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

    /// This node's open connections of `user`, in ascending order.
    pub(super) fn user_connections(&self, user: &UserRef) -> impl Iterator<Item = ConnId> + '_ {
        self.by_user.get(user).into_iter().flatten().copied()
    }

    /// This node's open connections of a device, in ascending order.
    pub(super) fn device_connections(
        &self,
        device: &DeviceRef,
    ) -> impl Iterator<Item = ConnId> + '_ {
        self.by_device.get(device).into_iter().flatten().copied()
    }
}
