//! Pairing by security code: issuing a code (insert-if-absent in the live state, retried with
//! a fresh code on a collision), redeeming it (lockouts, lookup, cross-tenant and own-code
//! refusals, the atomic take) and the sharer joining. Every live-state step is a query the
//! IO layer answers with [`Broker::handle_live_answer`]; what the answer is for waits in
//! [`PendingLive`], and an answer that comes after its connection closed or its session ended
//! undoes what it would leave behind.

use assist_policy::DenyReason;

use super::session::{Seat, Stage};
use super::*;
use crate::code::{code_from_bytes, normalize_code, CODE_LEN};
use crate::live::{LiveAnswer, LiveOp, LiveQuery};
use crate::output::AuditEvent;
use crate::output::AuditKind;

/// A live-state query out, and what its answer is for.
#[derive(Debug)]
pub(super) enum PendingLive {
    /// `requestCode`: the code's digest is being inserted for session `session_id`.
    Issue {
        conn: ConnId,
        request: RequestId,
        session_id: SessionId,
        code: String,
        digest: CodeDigest,
        /// Codes drawn so far (1 for the first).
        attempt: usize,
    },
    /// `redeemCode`: the typed code's digest is being looked up.
    Lookup {
        conn: ConnId,
        request: RequestId,
        user: UserRef,
        digest: CodeDigest,
    },
    /// `redeemCode`: the code of `session_id` is being taken.
    Take {
        conn: ConnId,
        request: RequestId,
        user: UserRef,
        digest: CodeDigest,
        session_id: SessionId,
    },
}

impl PendingLive {
    fn conn(&self) -> ConnId {
        match self {
            PendingLive::Issue { conn, .. }
            | PendingLive::Lookup { conn, .. }
            | PendingLive::Take { conn, .. } => *conn,
        }
    }
}

fn matches(query: &PendingLive, answer: &LiveAnswer) -> bool {
    matches!(
        (query, answer),
        (_, LiveAnswer::Failed)
            | (PendingLive::Issue { .. }, LiveAnswer::Inserted(_))
            | (PendingLive::Lookup { .. }, LiveAnswer::Code(_))
            | (PendingLive::Take { .. }, LiveAnswer::Taken(_))
    )
}

impl Broker {
    /// Sends `query` to the live state on behalf of `conn`, which waits for the answer.
    fn ask(&mut self, pending: PendingLive, query: LiveQuery) {
        self.next_token = self.next_token.wrapping_add(1);
        let token = LiveToken(self.next_token);
        if let Some(c) = self.conns.get_mut(&pending.conn()) {
            c.busy = Some(token);
        }
        self.pending.insert(token, pending);
        self.outputs.push_back(Output::LiveQuery { token, query });
    }

    /// Whether `conn` is still open and waiting for `token`; it stops waiting.
    fn still_waiting(&mut self, conn: ConnId, token: LiveToken) -> bool {
        match self.conns.get_mut(&conn) {
            Some(c) if c.busy == Some(token) => {
                c.busy = None;
                true
            }
            _ => false,
        }
    }

    fn router_audit(
        &mut self,
        now: Timestamp,
        session_id: Option<&SessionId>,
        user: UserRef,
        kind: AuditKind,
    ) {
        let actor_name = self
            .user_connections(&user)
            .find_map(|c| self.conns.get(&c))
            .and_then(|c| c.party.user_principal_name.clone());
        self.outputs.push_back(Output::Audit(AuditEvent {
            at: now,
            tenant_id: user.tenant_id.clone(),
            session_id: session_id.cloned(),
            actor: Some(user),
            actor_name,
            kind,
        }));
    }

    // ----------------------------------------------------------------- issuing

    pub(super) fn request_code(&mut self, conn: ConnId, id: &RequestId, _now: Timestamp) -> Reply {
        self.idle_user(conn)?;
        let Some(session_id) = self.fresh_session_id() else {
            return refuse(
                ErrorCode::Unavailable,
                "no fresh session id available; retry",
            );
        };
        self.draw_code(conn, id.clone(), session_id, 1);
        Ok(())
    }

    /// Draws code number `attempt` for `session_id` and asks to insert it.
    fn draw_code(
        &mut self,
        conn: ConnId,
        request: RequestId,
        session_id: SessionId,
        attempt: usize,
    ) {
        let mut bytes = [0u8; CODE_LEN];
        self.crypto.fill_random(&mut bytes);
        let code = code_from_bytes(bytes);
        let digest = self.crypto.code_digest(&code);
        let query = LiveQuery::InsertCode {
            digest: digest.clone(),
            code: LiveCode::Pending(session_id.clone()),
        };
        self.ask(
            PendingLive::Issue {
                conn,
                request,
                session_id,
                code,
                digest,
                attempt,
            },
            query,
        );
    }

    /// The live state answered an [`Output::LiveQuery`]. An answer for a connection that has
    /// closed meanwhile (or a session that has ended) undoes what it would leave behind.
    pub fn handle_live_answer(
        &mut self,
        token: LiveToken,
        answer: LiveAnswer,
        now: Timestamp,
    ) -> Result<(), InputError> {
        self.advance(now);
        let pending = self
            .pending
            .remove(&token)
            .ok_or(InputError::UnknownLiveQuery(token))?;
        let (answer, mismatched) = if matches(&pending, &answer) {
            (answer, false)
        } else {
            (LiveAnswer::Failed, true)
        };
        let waiting = self.still_waiting(pending.conn(), token);
        match (pending, answer) {
            (
                PendingLive::Issue {
                    conn,
                    request,
                    session_id,
                    code,
                    digest,
                    attempt,
                },
                LiveAnswer::Inserted(inserted),
            ) => match (inserted, waiting) {
                (true, true) => self.code_issued(conn, request, session_id, code, digest, now),
                (true, false) => self.live(LiveOp::RemoveCodeIf {
                    digest,
                    expected: LiveCode::Pending(session_id),
                }),
                (false, true) if attempt < FRESH_ATTEMPTS => {
                    self.draw_code(conn, request, session_id, attempt + 1)
                }
                (false, true) => self.send_error(
                    conn,
                    Some(request),
                    ErrorCode::Unavailable,
                    "no fresh code available; retry".into(),
                    None,
                ),
                (false, false) => {}
            },
            (
                PendingLive::Lookup {
                    conn,
                    request,
                    user,
                    digest,
                },
                LiveAnswer::Code(found),
            ) if waiting => self.code_found(conn, request, user, digest, found, now),
            (
                PendingLive::Take {
                    conn,
                    request,
                    user,
                    digest,
                    session_id,
                },
                LiveAnswer::Taken(taken),
            ) => self.code_taken(conn, request, user, digest, session_id, taken, waiting, now),
            (PendingLive::Lookup { .. }, _) if !waiting => {}
            (pending, _) => {
                // Failed (or answered with the wrong kind): nothing was changed that the
                // machine knows of; the request is answered `unavailable`.
                if waiting {
                    self.send_error(
                        pending.conn(),
                        Some(match pending {
                            PendingLive::Issue { request, .. }
                            | PendingLive::Lookup { request, .. }
                            | PendingLive::Take { request, .. } => request,
                        }),
                        ErrorCode::Unavailable,
                        "the live state could not be reached; retry".into(),
                        None,
                    );
                }
            }
        }
        if mismatched {
            return Err(InputError::MismatchedLiveAnswer(token));
        }
        Ok(())
    }

    fn code_issued(
        &mut self,
        conn: ConnId,
        request: RequestId,
        session_id: SessionId,
        code: String,
        digest: CodeDigest,
        now: Timestamp,
    ) {
        let Some(party) = self.conns.get(&conn).map(|c| c.party.clone()) else {
            return;
        };
        let user = party.user_ref();
        let expires_at = now.saturating_add(self.config.code_ttl);
        self.insert_session(
            &session_id,
            Seat {
                conn: Some(conn),
                party,
            },
            Stage::AwaitingRedemption { digest },
            expires_at,
            now,
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.send(
            conn,
            ServerEvent::CodeIssued {
                id: request,
                session_id: session_id.clone(),
                code,
                expires_at,
            },
        );
        if let Some(user) = user {
            self.router_audit(now, Some(&session_id), user, AuditKind::CodeIssued);
        }
    }

    // ----------------------------------------------------------------- redeeming

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
            self.router_audit(
                now,
                None,
                user,
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
        // A wrong code, a used one and a malformed one all give `invalidCode`.
        let Some(code) = normalize_code(typed) else {
            return self.redemption_failed(user, ErrorCode::InvalidCode, now);
        };
        let digest = self.crypto.code_digest(&code);
        let query = LiveQuery::GetCode {
            digest: digest.clone(),
        };
        self.ask(
            PendingLive::Lookup {
                conn,
                request: id.clone(),
                user,
                digest,
            },
            query,
        );
        Ok(())
    }

    /// The lookup of a typed code answered; `conn` is still waiting.
    fn code_found(
        &mut self,
        conn: ConnId,
        request: RequestId,
        user: UserRef,
        digest: CodeDigest,
        found: Option<(CodeDigest, LiveCode)>,
        now: Timestamp,
    ) {
        let result = self.check_found(conn, &request, user, digest, found, now);
        if let Err((code, message)) = result {
            self.send_error(conn, Some(request), code, message, None);
        }
    }

    fn check_found(
        &mut self,
        conn: ConnId,
        request: &RequestId,
        user: UserRef,
        digest: CodeDigest,
        found: Option<(CodeDigest, LiveCode)>,
        now: Timestamp,
    ) -> Reply {
        // The map lookup compares digests of the guess, which reveals nothing about stored
        // codes; the constant-time comparison is the check that decides.
        let session_id = match found {
            Some((stored, _)) if !self.crypto.digests_equal(&stored, &digest) => {
                return self.redemption_failed(user, ErrorCode::InvalidCode, now)
            }
            Some((_, LiveCode::Pending(session_id))) => session_id,
            Some((_, LiveCode::Expired { .. })) => {
                return self.redemption_failed(user, ErrorCode::CodeExpired, now)
            }
            None => return self.redemption_failed(user, ErrorCode::InvalidCode, now),
        };
        let (tenant, own) = match self.sessions.get(&session_id) {
            // Its session ended while the lookup was out.
            None => return self.redemption_failed(user, ErrorCode::InvalidCode, now),
            Some(s) => (
                s.tenant_id().to_owned(),
                s.helper_user().as_ref() == Some(&user),
            ),
        };
        if tenant != user.tenant_id {
            return self.redemption_failed(user, ErrorCode::Policy(DenyReason::CrossTenant), now);
        }
        if own {
            // Not a guess: the code stays valid for its real sharer and is not counted as a
            // failed redemption.
            self.router_audit(
                now,
                Some(&session_id),
                user,
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
        let query = LiveQuery::TakeCodeIf {
            digest: digest.clone(),
            expected: LiveCode::Pending(session_id.clone()),
        };
        self.ask(
            PendingLive::Take {
                conn,
                request: request.clone(),
                user,
                digest,
                session_id,
            },
            query,
        );
        Ok(())
    }

    /// The take of a code answered; `waiting` says whether its connection still waits.
    #[allow(clippy::too_many_arguments)] // what the pending take kept
    fn code_taken(
        &mut self,
        conn: ConnId,
        request: RequestId,
        user: UserRef,
        digest: CodeDigest,
        session_id: SessionId,
        taken: Option<LiveCode>,
        waiting: bool,
        now: Timestamp,
    ) {
        let session_waits = self.sessions.get(&session_id).is_some_and(
            |s| matches!(s.stage(), Stage::AwaitingRedemption { digest: d } if *d == digest),
        );
        match (taken.is_some(), waiting, session_waits) {
            (true, true, true) => {
                let Some(party) = self.conns.get(&conn).map(|c| c.party.clone()) else {
                    return;
                };
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = Some(session_id.clone());
                }
                self.with_session(&session_id, now, |s, fx| {
                    s.join(conn, party, Some(request), fx)
                });
            }
            // The redeemer left after taking the code: put it back for the real sharer.
            (true, false, true) => self.live(LiveOp::ReplaceCode {
                digest,
                code: LiveCode::Pending(session_id),
            }),
            (_, false, _) => {}
            // Lost the race to another redemption, or the session ended meanwhile.
            (_, true, _) => {
                if let Err((code, message)) =
                    self.redemption_failed(user, ErrorCode::InvalidCode, now)
                {
                    self.send_error(conn, Some(request), code, message, None);
                }
            }
        }
    }

    /// Another broker of the cluster saw `user` fail a redemption
    /// ([`Output::RedemptionFailed`]): it counts here as if it had happened here, at `now`
    /// (the user's and the tenant's limits), so a lock starts after five failures anywhere.
    /// Nothing is audited (the broker that saw it did) and nothing is sent.
    pub fn handle_peer_redemption_failure(&mut self, user: &UserRef, now: Timestamp) {
        self.advance(now);
        self.user_failures.fail(user, now);
        self.tenant_failures.fail(&user.tenant_id, now);
    }

    fn redemption_failed(&mut self, user: UserRef, code: ErrorCode, now: Timestamp) -> Reply {
        let tenant = user.tenant_id.clone();
        let user_locked = self.user_failures.fail(&user, now);
        let tenant_locked = self.tenant_failures.fail(&tenant, now);
        self.outputs
            .push_back(Output::RedemptionFailed { user: user.clone() });
        self.router_audit(
            now,
            None,
            user,
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
}
