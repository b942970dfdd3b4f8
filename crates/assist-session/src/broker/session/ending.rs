//! Chat, deadlines, tenant settings, and the end of a session.

use std::collections::BTreeSet;

use super::{refuse, Fx, Reply, SessionMachine, Stage};
use crate::code::CodeDigest;
use crate::live::{LiveCode, LiveOp};
use crate::message::{
    EndReason, EndedBy, ErrorCode, RequestId, Role, ServerEvent, WithdrawReason, MAX_CHAT_CHARS,
};
use crate::output::{AuditKind, ConnId, EvalId, Output, RecordEvent};
use crate::party::Party;
use crate::time::Timestamp;

/// What the router must tidy up after a session ended.
#[derive(Debug)]
pub(in crate::broker) struct Ended {
    /// The seats' connections (told `sessionEnded`).
    pub(in crate::broker) participants: [Option<ConnId>; 2],
    /// The connections a launch was still offered to (told `launchWithdrawn`).
    pub(in crate::broker) offered: BTreeSet<ConnId>,
    /// The evaluation it was waiting for.
    pub(in crate::broker) eval: Option<EvalId>,
    /// An expired code to forget at this time.
    pub(in crate::broker) forget: Option<(Timestamp, CodeDigest)>,
}

impl SessionMachine {
    /// `role` sends a chat line (request `id`).
    pub(in crate::broker) fn chat(
        &mut self,
        role: Role,
        id: &RequestId,
        text: String,
        fx: &mut Fx<'_>,
    ) -> Reply {
        if self.mode.is_none() {
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
        let (me, peer) = match role {
            Role::Helper => (Role::Helper, Role::Sharer),
            Role::Sharer => (Role::Sharer, Role::Helper),
        };
        if !self.chat {
            let actor = match me {
                Role::Helper => self.helper.party.user_ref(),
                Role::Sharer => self.sharer.as_ref().and_then(|s| s.party.user_ref()),
            };
            self.audit(actor, AuditKind::ChatBlocked, fx);
            return refuse(
                ErrorCode::ChatBlocked,
                "chat is disabled by your organisation",
            );
        }
        fx.send(
            self.conn_of(peer),
            ServerEvent::Chat {
                session_id: self.id.clone(),
                from: role,
                text,
                at: fx.now,
            },
        );
        fx.send(self.conn_of(me), ServerEvent::Ack { id: id.clone() });
        Ok(())
    }

    /// An active session is still running: say so to its record and look again later.
    pub(in crate::broker) fn on_seen(&mut self, fx: &mut Fx<'_>) {
        if self.mode.is_none() {
            return;
        }
        fx.push(Output::Record(RecordEvent::Seen {
            session_id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            at: fx.now,
        }));
        fx.seen_in(fx.config.seen_interval);
    }

    /// A deadline set for `at` fired.
    pub(in crate::broker) fn on_deadline(&mut self, at: Timestamp, fx: &mut Fx<'_>) {
        if self.deadline != Some(at) {
            return; // superseded
        }
        self.deadline = None;
        let upgrade = self.mode.is_some();
        match &mut self.stage {
            Stage::AwaitingRedemption { .. } => fx.end(EndReason::CodeExpired, EndedBy::Broker),
            Stage::AwaitingSharer { .. } => fx.end(EndReason::LaunchTimedOut, EndedBy::Broker),
            Stage::Joined => fx.end(EndReason::JoinTimedOut, EndedBy::Broker),
            Stage::AwaitingDecision { eval, request, .. } => {
                let (eval, request) = (*eval, request.take());
                fx.drop_eval(eval);
                self.settle(fx);
                fx.send(
                    self.helper.conn,
                    ServerEvent::Error {
                        id: request,
                        code: ErrorCode::Unavailable,
                        message: "the policy could not be evaluated in time; retry".into(),
                        session_id: Some(self.id.clone()),
                    },
                );
            }
            Stage::AwaitingConsent { mode, .. } => {
                let mode = *mode;
                let event = ServerEvent::ConsentTimedOut {
                    session_id: self.id.clone(),
                    mode,
                };
                self.broadcast(&event, fx);
                self.audit(
                    None,
                    AuditKind::ConsentRefused {
                        mode,
                        timed_out: true,
                    },
                    fx,
                );
                if upgrade {
                    self.settle(fx);
                } else {
                    fx.end(EndReason::ConsentTimedOut, EndedBy::Broker);
                }
            }
            Stage::AwaitingDeclineWindow { mode, chat } => {
                let (mode, chat) = (*mode, *chat);
                self.grant(mode, chat, fx);
            }
            Stage::AwaitingTickets { .. } => fx.end(EndReason::RelayUnavailable, EndedBy::Broker),
            Stage::Active => {}
        }
    }

    /// The tenant's `blockChat` is now `block_chat` (Remote Help still enabled).
    pub(in crate::broker) fn settings_changed(&mut self, block_chat: bool, fx: &mut Fx<'_>) {
        let allowed = !block_chat;
        if let Stage::AwaitingConsent { chat, .. }
        | Stage::AwaitingDeclineWindow { chat, .. }
        | Stage::AwaitingTickets { chat, .. } = &mut self.stage
        {
            *chat = *chat && allowed;
        }
        match self.mode {
            Some(mode) if self.chat != allowed => self.apply_mode(mode, allowed, fx),
            Some(_) => {}
            None => {
                self.chat = allowed;
                fx.publish();
            }
        }
    }

    /// Ends the session: withdraws its code or launch, tells both sides, the relay, the
    /// report and the audit log. The router has already removed it from its map.
    pub(in crate::broker) fn end(self, reason: EndReason, by: EndedBy, fx: &mut Fx<'_>) -> Ended {
        let relay_knows =
            self.mode.is_some() || matches!(self.stage, Stage::AwaitingTickets { .. });
        let participants = [self.conn_of(Role::Helper), self.conn_of(Role::Sharer)];
        let mut ended = Ended {
            participants,
            offered: BTreeSet::new(),
            eval: None,
            forget: None,
        };
        match &self.stage {
            Stage::AwaitingRedemption { digest } => {
                if reason == EndReason::CodeExpired {
                    let forget_at = fx.now.saturating_add(fx.config.expired_code_memory);
                    fx.push(Output::Live(LiveOp::ReplaceCode {
                        digest: digest.clone(),
                        code: LiveCode::Expired { forget_at },
                    }));
                    ended.forget = Some((forget_at, digest.clone()));
                } else {
                    fx.push(Output::Live(LiveOp::RemoveCodeIf {
                        digest: digest.clone(),
                        expected: LiveCode::Pending(self.id.clone()),
                    }));
                }
            }
            Stage::AwaitingSharer { offered, .. } => {
                for conn in offered {
                    fx.send(
                        Some(*conn),
                        ServerEvent::LaunchWithdrawn {
                            session_id: self.id.clone(),
                            reason: WithdrawReason::Cancelled,
                        },
                    );
                }
                ended.offered = offered.clone();
            }
            Stage::AwaitingDecision { eval, .. } => ended.eval = Some(*eval),
            _ => {}
        }
        let event = ServerEvent::SessionEnded {
            session_id: self.id.clone(),
            reason,
            by,
        };
        for conn in participants {
            fx.send(conn, event.clone());
        }
        if relay_knows {
            fx.push(Output::RelayEnd {
                session_id: self.id.clone(),
                reason,
            });
        }
        if let Some(highest_mode) = self.highest {
            fx.push(Output::Record(RecordEvent::Ended {
                session_id: self.id.clone(),
                tenant_id: self.tenant_id.clone(),
                ended_at: fx.now,
                highest_mode,
                reason,
                by,
            }));
        }
        let actor = match by {
            EndedBy::Helper => Some(&self.helper.party),
            EndedBy::Sharer => self.sharer.as_ref().map(|s| &s.party),
            EndedBy::Broker | EndedBy::Admin => None,
        };
        self.audit(
            actor.and_then(Party::user_ref),
            AuditKind::Ended { reason, by },
            fx,
        );
        ended
    }
}
