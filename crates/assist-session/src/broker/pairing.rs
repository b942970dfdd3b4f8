//! Pairing by security code: issuing a code, redeeming it (lockouts, cross-tenant and
//! own-code refusals) and the sharer joining.

use super::*;

impl Broker {
    // ----------------------------------------------------------------- code flow

    pub(super) fn request_code(&mut self, conn: ConnId, id: &RequestId, now: Timestamp) -> Reply {
        let user = self.idle_user(conn)?;
        let party = self.conn(conn)?.party.clone();
        let Some(session_id) = self.fresh_session_id() else {
            return refuse(
                ErrorCode::Unavailable,
                "no fresh session id available; retry",
            );
        };
        let mut fresh = None;
        for _ in 0..FRESH_ATTEMPTS {
            let mut bytes = [0u8; CODE_LEN];
            self.crypto.fill_random(&mut bytes);
            let code = code_from_bytes(bytes);
            let digest = self.crypto.code_digest(&code);
            // Insert-if-absent: a code is unique among every pending and remembered one.
            if self
                .live
                .insert_code(&digest, LiveCode::Pending(session_id.clone()))
            {
                fresh = Some((code, digest));
                break;
            }
        }
        let Some((code, digest)) = fresh else {
            return refuse(ErrorCode::Unavailable, "no fresh code available; retry");
        };
        let tenant = party.tenant_id.clone();
        let expires_at = now.saturating_add(self.config.code_ttl);
        self.new_session(
            &session_id,
            Seat {
                conn: Some(conn),
                party,
            },
            Stage::AwaitingRedemption { digest },
        );
        self.set_deadline(&session_id, Some(expires_at));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.send(
            conn,
            ServerEvent::CodeIssued {
                id: id.clone(),
                session_id: session_id.clone(),
                code,
                expires_at,
            },
        );
        self.audit(
            now,
            &tenant,
            Some(&session_id),
            Some(user),
            AuditKind::CodeIssued,
        );
        Ok(())
    }

    pub(super) fn redeem_code(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        typed: &str,
        now: Timestamp,
    ) -> Reply {
        let user = self.idle_user(conn)?;
        let tenant = user.tenant_id.clone();
        if self.user_failures.is_locked(&user, now) || self.tenant_failures.is_locked(&tenant, now)
        {
            self.audit(
                now,
                &tenant,
                None,
                Some(user),
                AuditKind::RedemptionFailed {
                    code: ErrorCode::RateLimited.as_str().into(),
                    locked: false,
                },
            );
            return refuse(
                ErrorCode::RateLimited,
                "too many failed attempts; try again later",
            );
        }
        match self.lookup_code(typed) {
            Ok((digest, session_id)) => {
                let helper_tenant = self.sessions.get(&session_id).map(|s| s.tenant_id.clone());
                if helper_tenant.as_deref() != Some(tenant.as_str()) {
                    return self.redemption_failed(
                        user,
                        ErrorCode::Policy(DenyReason::CrossTenant),
                        now,
                    );
                }
                if self.is_own_session(&session_id, &user) {
                    // Not a guess: the code stays valid for its real sharer and is not counted
                    // as a failed redemption.
                    self.audit(
                        now,
                        &tenant,
                        Some(&session_id),
                        Some(user),
                        AuditKind::RedemptionFailed {
                            code: ErrorCode::OwnSession.as_str().into(),
                            locked: false,
                        },
                    );
                    return refuse(
                        ErrorCode::OwnSession,
                        "this is your own code: the person you help must enter it",
                    );
                }
                // Atomic: of two redemptions racing for one code (on two nodes), one wins.
                let pending = LiveCode::Pending(session_id.clone());
                if self
                    .live
                    .take_code_if(&digest, &|code| *code == pending)
                    .is_none()
                {
                    return self.redemption_failed(user, ErrorCode::InvalidCode, now);
                }
                self.join(&session_id, conn, Some(id.clone()), now);
                Ok(())
            }
            Err(code) => self.redemption_failed(user, code, now),
        }
    }

    /// Whether `user` is the helper of session `id` (nobody assists themselves).
    pub(super) fn is_own_session(&self, id: &SessionId, user: &UserRef) -> bool {
        self.sessions
            .get(id)
            .is_some_and(|s| s.helper.party.user_ref().as_ref() == Some(user))
    }

    /// Finds a pending code. A wrong code, a used one and a malformed one all give
    /// `invalidCode`; only an expired one (still remembered) says so.
    pub(super) fn lookup_code(&self, typed: &str) -> Result<(CodeDigest, SessionId), ErrorCode> {
        let code = normalize_code(typed).ok_or(ErrorCode::InvalidCode)?;
        let digest = self.crypto.code_digest(&code);
        // The map lookup compares digests of the guess, which reveals nothing about stored
        // codes; the constant-time comparison is the check that decides.
        let (stored, entry) = self.live.code(&digest).ok_or(ErrorCode::InvalidCode)?;
        if !self.crypto.digests_equal(&stored, &digest) {
            return Err(ErrorCode::InvalidCode);
        }
        match entry {
            LiveCode::Pending(session_id) => Ok((digest, session_id)),
            LiveCode::Expired { .. } => Err(ErrorCode::CodeExpired),
        }
    }

    pub(super) fn redemption_failed(
        &mut self,
        user: UserRef,
        code: ErrorCode,
        now: Timestamp,
    ) -> Reply {
        let tenant = user.tenant_id.clone();
        let user_locked = self.user_failures.fail(&user, now);
        let tenant_locked = self.tenant_failures.fail(&tenant, now);
        self.audit(
            now,
            &tenant,
            None,
            Some(user),
            AuditKind::RedemptionFailed {
                code: code.as_str().into(),
                locked: user_locked || tenant_locked,
            },
        );
        let message = match code {
            ErrorCode::CodeExpired => "the code has expired; ask for a new one",
            ErrorCode::Policy(DenyReason::CrossTenant) => {
                "the helper belongs to another organisation; sessions across tenants are not allowed"
            }
            _ => "the code is not valid",
        };
        refuse(code, message)
    }

    /// The sharer on `conn` joins session `id` (code redeemed or launch accepted).
    pub(super) fn join(
        &mut self,
        id: &SessionId,
        conn: ConnId,
        request: Option<RequestId>,
        now: Timestamp,
    ) {
        let Some(party) = self.conns.get(&conn).map(|c| c.party.clone()) else {
            return;
        };
        let join_deadline = now.saturating_add(self.config.join_timeout);
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        session.sharer = Some(Seat {
            conn: Some(conn),
            party: party.clone(),
        });
        session.stage = Stage::Joined;
        session.join_deadline = Some(join_deadline);
        let helper_conn = session.helper.conn;
        let helper_profile = session.helper.party.profile.clone();
        let tenant = session.tenant_id.clone();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(id.clone());
            c.offers.remove(id);
        }
        self.set_deadline(id, Some(join_deadline));
        self.publish(id);
        self.send(
            conn,
            ServerEvent::SessionJoined {
                id: request,
                session_id: id.clone(),
                role: Role::Sharer,
                peer_profile: helper_profile,
            },
        );
        self.send_to(
            helper_conn,
            ServerEvent::SessionJoined {
                id: None,
                session_id: id.clone(),
                role: Role::Helper,
                peer_profile: party.profile.clone(),
            },
        );
        self.audit(now, &tenant, Some(id), party.user_ref(), AuditKind::Joined);
    }
}
