//! The session lifecycle on virtual time: every flow of the issue, driven through the
//! machine with a fake clock and no IO.

mod common;

use assist_policy::{DenyReason, Mode, Warning};
use assist_session::message::{CloseCode, ConsentKind, WithdrawReason};
use assist_session::{
    AuditKind, BrokerConfig, ClientRequest, EndReason, EndedBy, ErrorCode, FailureLimit, Output,
    RecordEvent, Role, ServerEvent, SessionState, Timestamp,
};
use common::*;

#[test]
fn full_session_code_profiles_mode_consent_tickets_end_record() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let sharer = w.connect(device_user("t1", "sam", "dev-1", true));
    let issued_at = w.now;
    let id = w.send(helper, ClientRequest::RequestCode);
    let ServerEvent::CodeIssued {
        id: answered,
        session_id: sid,
        code,
        expires_at,
    } = w.expect(helper)
    else {
        panic!("expected codeIssued")
    };
    assert_eq!(answered, id);
    assert_eq!(code.len(), 8);
    assert_eq!(expires_at, issued_at.saturating_add(secs(600)));
    assert_eq!(
        w.broker.session(&sid).unwrap().state,
        SessionState::AwaitingRedemption
    );
    let counts = w.broker.session_counts();
    assert_eq!((counts.pending, counts.joined, counts.total()), (1, 0, 1));

    // The sharer types it in lower case with a dash; both see the other's profile.
    w.advance(secs(5));
    let joined_at = w.now;
    let typed = format!("{}-{}", &code[..4], &code[4..]).to_lowercase();
    let id = w.send(sharer, ClientRequest::RedeemCode { code: typed });
    assert_eq!(
        w.expect(sharer),
        ServerEvent::SessionJoined {
            id: Some(id),
            session_id: sid.clone(),
            role: Role::Sharer,
            peer_profile: profile("helen"),
        }
    );
    assert_eq!(
        w.expect(helper),
        ServerEvent::SessionJoined {
            id: None,
            session_id: sid.clone(),
            role: Role::Helper,
            peer_profile: profile("sam"),
        }
    );
    let p = Pair {
        helper,
        sharer,
        session: sid.clone(),
    };
    let counts = w.broker.session_counts();
    assert_eq!((counts.pending, counts.joined, counts.total()), (0, 1, 1));

    // The helper asks for full control; the IO layer is asked to evaluate.
    let id = w.request_mode(&p, Mode::FullControl, &[]);
    let eval = w.decide(allow(Mode::FullControl));
    assert_eq!(eval.helper.user_id, "helen-id");
    assert_eq!(eval.helper.tenant_id, "t1");
    assert_eq!(eval.sharer.as_ref().unwrap().user_id, "sam-id");
    assert_eq!(eval.device_id.as_deref(), Some("dev-1"));
    assert_eq!(eval.mode, Mode::FullControl);
    let consent_deadline = w.now.saturating_add(secs(300));
    assert_eq!(
        w.expect(helper),
        ServerEvent::ModeRequested {
            id: Some(id),
            session_id: sid.clone(),
            mode: Mode::FullControl,
            consent: ConsentKind::Required,
            expires_at: Some(consent_deadline),
        }
    );
    assert_eq!(
        w.expect(sharer),
        ServerEvent::ConsentRequested {
            session_id: sid.clone(),
            mode: Mode::FullControl,
            helper_profile: profile("helen"),
            expires_at: consent_deadline,
        }
    );
    assert!(w.ticket_requests.is_empty(), "no tickets before consent");

    w.advance(secs(20));
    w.consent(&p, true);
    assert_eq!(
        w.ticket_requests.front(),
        Some(&(sid.clone(), Mode::FullControl, true))
    );
    assert!(w.records.is_empty(), "recorded only once active");
    w.issue_tickets();
    for (conn, role) in [(helper, "helper"), (sharer, "sharer")] {
        assert_eq!(
            w.expect(conn),
            ServerEvent::SessionActive {
                session_id: sid.clone(),
                mode: Mode::FullControl,
                chat: true,
                relay: access(role, &sid),
            }
        );
    }
    let started_at = w.now;
    let counts = w.broker.session_counts();
    assert_eq!(
        (counts.active_in(Mode::FullControl), counts.total()),
        (1, 1)
    );
    let RecordEvent::Started {
        helper: h,
        sharer: s,
        device,
        mode,
        started_at: at,
        requested_at,
        joined_at: joined,
        ..
    } = &w.records[0]
    else {
        panic!("expected a start record")
    };
    assert_eq!(
        (h.user_principal_name.as_deref(), s.family_name.as_deref()),
        (Some("helen@contoso.com"), Some("Doe"))
    );
    assert_eq!(device.as_ref().map(|d| d.id.as_str()), Some("dev-1"));
    assert_eq!((*mode, *at), (Mode::FullControl, started_at));
    // Pairing latency (the IO layer's histograms): from the code to active, from the join.
    assert_eq!((*requested_at, *joined), (issued_at, joined_at));
    assert!(issued_at < joined_at && joined_at < started_at);

    // Chat both ways.
    let id = w.send(
        helper,
        ClientRequest::Chat {
            session_id: sid.clone(),
            text: "hello".into(),
        },
    );
    assert_eq!(w.expect(helper), ServerEvent::Ack { id });
    assert_eq!(
        w.expect(sharer),
        ServerEvent::Chat {
            session_id: sid.clone(),
            from: Role::Helper,
            text: "hello".into(),
            at: w.now,
        }
    );

    // The sharer ends it.
    w.advance(secs(60));
    let id = w.send(
        sharer,
        ClientRequest::EndSession {
            session_id: sid.clone(),
        },
    );
    assert_eq!(w.expect(sharer), ServerEvent::Ack { id });
    let ended = ServerEvent::SessionEnded {
        session_id: sid.clone(),
        reason: EndReason::Ended,
        by: EndedBy::Sharer,
    };
    assert_eq!(w.expect(sharer), ended);
    assert_eq!(w.expect(helper), ended);
    assert!(w.relay.contains(&Output::RelayEnd {
        session_id: sid.clone(),
        reason: EndReason::Ended
    }));
    assert_eq!(
        w.records.last(),
        Some(&RecordEvent::Ended {
            session_id: sid.clone(),
            tenant_id: "t1".into(),
            ended_at: w.now,
            highest_mode: Mode::FullControl,
            reason: EndReason::Ended,
            by: EndedBy::Sharer,
        })
    );
    assert_eq!(w.record_ends(&sid), 1);
    assert!(w.broker.session(&sid).is_none());
    assert_eq!(w.broker.session_counts().total(), 0);
    let kinds = w.audit_kinds();
    for expected in [
        AuditKind::CodeIssued,
        AuditKind::Joined,
        AuditKind::Requested {
            mode: Mode::FullControl,
        },
        AuditKind::Started {
            mode: Mode::FullControl,
        },
        AuditKind::Ended {
            reason: EndReason::Ended,
            by: EndedBy::Sharer,
        },
    ] {
        assert!(kinds.contains(&expected), "missing audit {expected:?}");
    }
    // Nothing in the audit trail carries the code.
    let audit_text = format!("{:?}", w.audits);
    assert!(!audit_text.contains(&code));
}

#[test]
fn each_denial_reason_is_answered_at_request_time() {
    for reason in DenyReason::ALL {
        let mut w = World::new();
        let p = w.pair();
        let id = w.request_mode(&p, Mode::ViewOnly, &[]);
        w.decide(deny(reason));
        let event = w.expect(p.helper);
        assert_eq!(
            event,
            ServerEvent::Error {
                id: Some(id),
                code: ErrorCode::Policy(reason),
                message: format!("denied by policy: {reason}"),
                session_id: Some(p.session.clone()),
            }
        );
        assert!(event
            .to_json()
            .contains(&format!("\"code\":\"{}\"", reason.as_str())));
        w.assert_silent(p.sharer);
        assert!(w.ticket_requests.is_empty());
        assert_eq!(
            w.broker.session(&p.session).unwrap().state,
            SessionState::Joined
        );
        assert!(w.audit_kinds().contains(&AuditKind::Denied {
            mode: Mode::ViewOnly,
            reason
        }));
        // The helper may ask again (for example a lower mode).
        w.request_mode(&p, Mode::ViewOnly, &[]);
        assert_eq!(w.evaluations.len(), 1);
    }
}

#[test]
fn an_allow_that_does_not_grant_the_mode_is_permission_missing() {
    let mut w = World::new();
    let p = w.pair();
    w.request_mode(&p, Mode::Elevation, &[]);
    w.decide(allow(Mode::FullControl));
    assert_eq!(error_code(&w.expect(p.helper)), Some("permissionMissing"));
    w.assert_silent(p.sharer);
}

#[test]
fn warnings_must_be_acknowledged_before_consent_is_asked() {
    let mut w = World::new();
    let p = w.pair();
    let warn = [Warning::DeviceNotCompliant];
    let id = w.request_mode(&p, Mode::ViewOnly, &[]);
    w.decide(allow_with(Mode::ViewOnly, &warn, true));
    assert_eq!(
        w.expect(p.helper),
        ServerEvent::Warnings {
            session_id: p.session.clone(),
            mode: Mode::ViewOnly,
            warnings: warn.to_vec(),
        }
    );
    let e = w.expect(p.helper);
    assert_eq!(error_code(&e), Some("warningNotAcknowledged"));
    assert_eq!(e.answer_id(), Some(&id));
    w.assert_silent(p.sharer);

    // Acknowledging a different warning is not enough.
    w.request_mode(&p, Mode::ViewOnly, &[Warning::DeviceUnenrolled]);
    w.decide(allow_with(Mode::ViewOnly, &warn, true));
    assert!(matches!(w.expect(p.helper), ServerEvent::Warnings { .. }));
    assert_eq!(
        error_code(&w.expect(p.helper)),
        Some("warningNotAcknowledged")
    );
    w.assert_silent(p.sharer);

    // Acknowledged: the request goes on to consent.
    w.request_mode(&p, Mode::ViewOnly, &warn);
    w.decide(allow_with(Mode::ViewOnly, &warn, true));
    assert!(matches!(
        w.expect(p.helper),
        ServerEvent::ModeRequested {
            consent: ConsentKind::Required,
            ..
        }
    ));
    assert!(matches!(
        w.expect(p.sharer),
        ServerEvent::ConsentRequested { .. }
    ));
}

#[test]
fn declined_consent_ends_the_session_without_a_record() {
    let mut w = World::new();
    let p = w.pair();
    w.request_mode(&p, Mode::ViewOnly, &[]);
    w.decide(allow(Mode::ViewOnly));
    w.drain(p.helper);
    w.drain(p.sharer);
    w.consent(&p, false);
    let ended = ServerEvent::SessionEnded {
        session_id: p.session.clone(),
        reason: EndReason::Declined,
        by: EndedBy::Sharer,
    };
    assert_eq!(w.expect(p.helper), ended);
    assert_eq!(w.expect(p.sharer), ended);
    assert!(w.ticket_requests.is_empty());
    assert!(w.records.is_empty());
    assert!(w.relay.is_empty(), "the relay never knew the session");
    assert!(w.audit_kinds().contains(&AuditKind::ConsentRefused {
        mode: Mode::ViewOnly,
        timed_out: false
    }));
}

#[test]
fn consent_times_out_after_five_minutes() {
    let mut w = World::new();
    let p = w.pair();
    w.request_mode(&p, Mode::ViewOnly, &[]);
    w.decide(allow(Mode::ViewOnly));
    w.drain(p.helper);
    w.drain(p.sharer);
    w.advance(secs(300) - millis(1));
    w.assert_silent(p.helper);
    assert_eq!(
        w.broker.session(&p.session).unwrap().state,
        SessionState::AwaitingConsent
    );
    w.advance(millis(1));
    let timed_out = ServerEvent::ConsentTimedOut {
        session_id: p.session.clone(),
        mode: Mode::ViewOnly,
    };
    let ended = ServerEvent::SessionEnded {
        session_id: p.session.clone(),
        reason: EndReason::ConsentTimedOut,
        by: EndedBy::Broker,
    };
    assert_eq!(w.drain(p.helper), vec![timed_out.clone(), ended.clone()]);
    assert_eq!(w.drain(p.sharer), vec![timed_out, ended]);
    // A late allow finds nothing.
    let id = w.send(
        p.sharer,
        ClientRequest::Consent {
            session_id: p.session.clone(),
            allow: true,
        },
    );
    let e = w.expect(p.sharer);
    assert_eq!(
        (error_code(&e), e.answer_id()),
        (Some("notFound"), Some(&id))
    );
    assert!(w.ticket_requests.is_empty());
}

#[test]
fn a_late_consent_at_the_deadline_is_too_late_even_before_the_timer_fires() {
    let mut w = World::new();
    let p = w.pair();
    w.request_mode(&p, Mode::ViewOnly, &[]);
    w.decide(allow(Mode::ViewOnly));
    // Move the clock without calling handle_timeout: the consent itself fires the deadline.
    w.now = w.now.saturating_add(secs(300));
    w.send(
        p.sharer,
        ClientRequest::Consent {
            session_id: p.session.clone(),
            allow: true,
        },
    );
    assert!(w.ticket_requests.is_empty());
    assert!(w.broker.session(&p.session).is_none());
}

#[test]
fn an_expired_code_says_so_then_is_forgotten() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let sharer = w.connect(user("t1", "sam"));
    let (sid, code) = w.request_code(helper);
    w.advance(secs(600) - millis(1));
    w.assert_silent(helper);
    w.advance(millis(1));
    assert_eq!(
        w.expect(helper),
        ServerEvent::SessionEnded {
            session_id: sid.clone(),
            reason: EndReason::CodeExpired,
            by: EndedBy::Broker,
        }
    );
    assert_eq!(error_code(&w.redeem(sharer, &code)), Some("codeExpired"));
    w.advance(secs(600));
    assert_eq!(error_code(&w.redeem(sharer, &code)), Some("invalidCode"));
    assert_eq!(w.live.code_count(), 0);
    // The helper's connection is free for a new code.
    w.request_code(helper);
}

#[test]
fn a_code_works_once() {
    let mut w = World::new();
    let p = w.pair();
    let other = w.connect(user("t1", "olga"));
    // Find the code again from the helper's codeIssued: pair() consumed it, so ask anew.
    let helper2 = w.connect(user("t1", "hank"));
    let (_, code) = w.request_code(helper2);
    assert!(matches!(
        w.redeem(other, &code),
        ServerEvent::SessionJoined { .. }
    ));
    let third = w.connect(user("t1", "tess"));
    let e = w.redeem(third, &code);
    assert_eq!(error_code(&e), Some("invalidCode"));
    assert_eq!(
        w.broker.session(&p.session).unwrap().state,
        SessionState::Joined
    );
}

#[test]
fn a_wrong_code_reveals_nothing() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let (_, code) = w.request_code(helper);
    let sharer = w.connect(user("t1", "sam"));
    let used_helper = w.connect(user("t1", "hank"));
    let (_, used) = w.request_code(used_helper);
    let taker = w.connect(user("t1", "tom"));
    w.redeem(taker, &used);
    let mut wrong = code.clone().into_bytes();
    wrong[7] = if wrong[7] == b'2' { b'3' } else { b'2' };
    let wrong = String::from_utf8(wrong).unwrap();
    let answers: Vec<ServerEvent> = [wrong.as_str(), "not a code", used.as_str()]
        .into_iter()
        .map(|c| match w.redeem(sharer, c) {
            ServerEvent::Error { code, message, .. } => ServerEvent::Error {
                id: None,
                code,
                message,
                session_id: None,
            },
            other => other,
        })
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(error_code(&answers[0]), Some("invalidCode"));
}

#[test]
fn brute_force_locks_the_user_for_five_minutes() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let (_, code) = w.request_code(helper);
    let mallory = w.connect(user("t1", "mallory"));
    for _ in 0..5 {
        assert_eq!(
            error_code(&w.redeem(mallory, "AAAAAAAA")),
            Some("invalidCode")
        );
    }
    assert!(w
        .audits
        .iter()
        .any(|a| matches!(&a.kind, AuditKind::RedemptionFailed { locked: true, .. })));
    // Locked: even the right code is refused, without looking at it.
    assert_eq!(error_code(&w.redeem(mallory, &code)), Some("rateLimited"));
    // The same user on another connection is locked too.
    let mallory2 = w.connect(user("t1", "mallory"));
    assert_eq!(error_code(&w.redeem(mallory2, &code)), Some("rateLimited"));
    // Other users are not.
    let sam = w.connect(user("t1", "sam"));
    assert_eq!(error_code(&w.redeem(sam, "BBBBBBBB")), Some("invalidCode"));
    w.advance(secs(300) - millis(1));
    assert_eq!(error_code(&w.redeem(mallory, &code)), Some("rateLimited"));
    w.advance(millis(1));
    assert!(matches!(
        w.redeem(mallory, &code),
        ServerEvent::SessionJoined { .. }
    ));
}

#[test]
fn failures_heard_from_peer_brokers_count_towards_the_lock() {
    // Two brokers of a cluster: mallory guesses on both; each tells the other.
    let (mut a, mut b) = (World::new(), World::new());
    let helper = a.connect(user("t1", "helen"));
    let (_, code) = a.request_code(helper);
    let on_a = a.connect(user("t1", "mallory"));
    let on_b = b.connect(user("t1", "mallory"));
    for _ in 0..2 {
        assert_eq!(error_code(&a.redeem(on_a, "AAAAAAAA")), Some("invalidCode"));
    }
    for _ in 0..2 {
        assert_eq!(error_code(&b.redeem(on_b, "AAAAAAAA")), Some("invalidCode"));
    }
    // Every failure is announced once, naming the user.
    assert_eq!(a.failed_redemptions.len(), 2);
    assert_eq!(b.failed_redemptions.len(), 2);
    assert!(b
        .failed_redemptions
        .iter()
        .all(|u| u.user_id == "mallory-id"));
    for u in std::mem::take(&mut a.failed_redemptions) {
        b.broker.handle_peer_redemption_failure(&u, b.now);
    }
    for u in std::mem::take(&mut b.failed_redemptions) {
        a.broker.handle_peer_redemption_failure(&u, a.now);
    }
    // Four in all: the fifth, on either broker, locks mallory on that one...
    assert_eq!(error_code(&a.redeem(on_a, "AAAAAAAA")), Some("invalidCode"));
    assert!(a
        .audits
        .iter()
        .any(|e| matches!(&e.kind, AuditKind::RedemptionFailed { locked: true, .. })));
    assert_eq!(error_code(&a.redeem(on_a, &code)), Some("rateLimited"));
    // ...and, once it is heard, on the other too. Hearing is not failing: no audit, no echo.
    let audits_before = b.audits.len();
    for u in std::mem::take(&mut a.failed_redemptions) {
        b.broker.handle_peer_redemption_failure(&u, b.now);
    }
    b.pump();
    assert_eq!(b.audits.len(), audits_before);
    assert!(b.failed_redemptions.is_empty());
    assert_eq!(error_code(&b.redeem(on_b, "AAAAAAAA")), Some("rateLimited"));
    // Other users are untouched.
    let sam = b.connect(user("t1", "sam"));
    assert_eq!(error_code(&b.redeem(sam, "BBBBBBBB")), Some("invalidCode"));
}

#[test]
fn failures_slide_out_of_the_window() {
    let mut w = World::new();
    let mallory = w.connect(user("t1", "mallory"));
    for _ in 0..4 {
        w.redeem(mallory, "AAAAAAAA");
    }
    w.advance(secs(60));
    for _ in 0..4 {
        assert_eq!(
            error_code(&w.redeem(mallory, "AAAAAAAA")),
            Some("invalidCode")
        );
    }
}

#[test]
fn the_tenant_limit_locks_every_user_of_the_tenant() {
    let config = BrokerConfig {
        tenant_redeem_limit: FailureLimit {
            max_failures: 6,
            window: secs(60),
            lock: secs(60),
        },
        ..BrokerConfig::default()
    };
    let mut w = World::with_config(config);
    let helper = w.connect(user("t1", "helen"));
    let (_, code) = w.request_code(helper);
    let users: Vec<_> = (0..3)
        .map(|i| w.connect(user("t1", &format!("u{i}"))))
        .collect();
    for conn in &users {
        for _ in 0..2 {
            assert_eq!(
                error_code(&w.redeem(*conn, "AAAAAAAA")),
                Some("invalidCode")
            );
        }
    }
    let sam = w.connect(user("t1", "sam"));
    assert_eq!(error_code(&w.redeem(sam, &code)), Some("rateLimited"));
    let other_tenant = w.connect(user("t2", "zed"));
    assert_eq!(
        error_code(&w.redeem(other_tenant, "AAAAAAAA")),
        Some("invalidCode")
    );
    w.advance(secs(60));
    assert!(matches!(
        w.redeem(sam, &code),
        ServerEvent::SessionJoined { .. }
    ));
}

#[test]
fn cross_tenant_redemption_is_refused_and_the_code_stays_for_its_tenant() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let (sid, code) = w.request_code(helper);
    let outsider = w.connect(user("t2", "otto"));
    let e = w.redeem(outsider, &code);
    assert_eq!(error_code(&e), Some("crossTenant"));
    w.assert_silent(helper);
    assert_eq!(
        w.broker.session(&sid).unwrap().state,
        SessionState::AwaitingRedemption
    );
    let sam = w.connect(user("t1", "sam"));
    assert!(matches!(
        w.redeem(sam, &code),
        ServerEvent::SessionJoined { .. }
    ));
}

#[test]
fn redeeming_your_own_code_is_refused_and_the_code_stays_for_its_sharer() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let (sid, code) = w.request_code(helper);
    // The same user, on a second connection (another app, another device).
    let again = w.connect(device_user("t1", "helen", "dev-1", true));
    for _ in 0..6 {
        // Not counted as a failed guess: six tries lock nobody out.
        assert_eq!(error_code(&w.redeem(again, &code)), Some("ownSession"));
    }
    w.assert_silent(helper);
    assert_eq!(
        w.broker.session(&sid).unwrap().state,
        SessionState::AwaitingRedemption
    );
    let sam = w.connect(user("t1", "sam"));
    assert!(matches!(
        w.redeem(sam, &code),
        ServerEvent::SessionJoined { .. }
    ));
}

#[test]
fn accepting_your_own_launch_is_refused() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let own = w.connect(device_user("t1", "helen", "dev-9", true));
    w.send(
        helper,
        ClientRequest::RequestSession {
            device_id: "dev-9".into(),
            mode: None,
            acknowledge_warnings: vec![],
        },
    );
    let ServerEvent::LaunchPending {
        session_id: sid, ..
    } = w.expect(helper)
    else {
        panic!("expected launchPending")
    };
    assert!(matches!(w.expect(own), ServerEvent::LaunchRequested { .. }));
    w.send(
        own,
        ClientRequest::AnswerLaunch {
            session_id: sid.clone(),
            accept: true,
        },
    );
    assert_eq!(error_code(&w.expect(own)), Some("ownSession"));
    assert_eq!(
        w.broker.session(&sid).unwrap().state,
        SessionState::AwaitingSharer
    );
}

#[test]
fn a_relay_leg_that_drops_ends_the_session_for_both_sides() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::FullControl);
    w.broker
        .handle_relay_leg_left(&p.session, Role::Sharer, w.now);
    w.pump();
    for conn in [p.helper, p.sharer] {
        assert_eq!(
            w.expect(conn),
            ServerEvent::SessionEnded {
                session_id: p.session.clone(),
                reason: EndReason::Disconnected,
                by: EndedBy::Sharer,
            }
        );
    }
    assert!(w.broker.session(&p.session).is_none());
    assert_eq!(w.record_ends(&p.session), 1);
    // Chat in the ended session is refused; the helper may start again at once.
    w.send(
        p.helper,
        ClientRequest::Chat {
            session_id: p.session.clone(),
            text: "still there?".into(),
        },
    );
    assert_eq!(error_code(&w.expect(p.helper)), Some("notFound"));
    w.request_code(p.helper);
    // A late report for a session that is gone, or one that is not active, changes nothing.
    w.broker
        .handle_relay_leg_left(&p.session, Role::Helper, w.now);
    w.pump();
    w.assert_silent(p.helper);
    let q = w.pair();
    w.broker
        .handle_relay_leg_left(&q.session, Role::Helper, w.now);
    w.pump();
    w.assert_silent(q.helper);
    assert_eq!(
        w.broker.session(&q.session).unwrap().state,
        SessionState::Joined
    );
}

#[test]
fn an_active_session_is_marked_seen_every_interval_until_it_ends() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::ViewOnly);
    let started = w.now;
    let seen = |w: &World| -> Vec<(String, Timestamp)> {
        w.records
            .iter()
            .filter_map(|r| match r {
                RecordEvent::Seen {
                    session_id,
                    tenant_id,
                    at,
                } if *session_id == p.session => Some((tenant_id.clone(), *at)),
                _ => None,
            })
            .collect()
    };
    w.advance(secs(59));
    assert!(seen(&w).is_empty());
    w.advance(secs(1));
    w.advance(secs(60));
    assert_eq!(
        seen(&w),
        vec![
            ("t1".to_owned(), started.saturating_add(secs(60))),
            ("t1".to_owned(), started.saturating_add(secs(120))),
        ]
    );
    w.disconnect(p.sharer);
    w.advance(secs(600));
    assert_eq!(seen(&w).len(), 2, "nothing after the end");
}

#[test]
fn chat_is_blocked_mid_session_by_a_settings_change() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::ViewOnly);
    let chat = |w: &mut World, conn| {
        w.send(
            conn,
            ClientRequest::Chat {
                session_id: p.session.clone(),
                text: "hi".into(),
            },
        );
        w.expect(conn)
    };
    assert!(matches!(chat(&mut w, p.sharer), ServerEvent::Ack { .. }));
    w.drain(p.helper);

    w.broker.handle_settings_changed("t1", true, true, w.now);
    w.pump();
    let changed = ServerEvent::ModeChanged {
        session_id: p.session.clone(),
        mode: Mode::ViewOnly,
        chat: false,
    };
    assert_eq!(w.expect(p.helper), changed);
    assert_eq!(w.expect(p.sharer), changed);
    assert!(w.relay.contains(&Output::RelaySetMode {
        session_id: p.session.clone(),
        mode: Mode::ViewOnly,
        chat: false
    }));
    assert_eq!(error_code(&chat(&mut w, p.helper)), Some("chatBlocked"));
    w.assert_silent(p.sharer);
    assert!(w.audit_kinds().contains(&AuditKind::ChatBlocked));

    // Unblocked again: chat works at once.
    w.broker.handle_settings_changed("t1", false, true, w.now);
    w.pump();
    w.drain(p.helper);
    w.drain(p.sharer);
    assert!(matches!(chat(&mut w, p.helper), ServerEvent::Ack { .. }));
    assert!(matches!(w.expect(p.sharer), ServerEvent::Chat { .. }));
}

#[test]
fn a_decision_that_forbids_chat_blocks_it_and_a_block_heard_before_the_decision_wins() {
    let mut w = World::new();
    let p = w.pair();
    w.request_mode(&p, Mode::ViewOnly, &[]);
    // PATCH blockChat lands while the (stale) evaluation is in flight.
    w.broker.handle_settings_changed("t1", true, true, w.now);
    w.decide(allow_with(Mode::ViewOnly, &[], true));
    w.drain(p.helper);
    w.drain(p.sharer);
    w.consent(&p, true);
    assert_eq!(w.ticket_requests.front().map(|t| t.2), Some(false));
}

#[test]
fn disabling_remote_help_ends_the_tenants_sessions_only() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::ViewOnly);
    let pending_helper = w.connect(user("t1", "hank"));
    let (pending, code) = w.request_code(pending_helper);
    let other_helper = w.connect(user("t2", "hugo"));
    let (other, _) = w.request_code(other_helper);

    w.broker.handle_settings_changed("t1", false, false, w.now);
    w.pump();
    let ended = |sid| ServerEvent::SessionEnded {
        session_id: sid,
        reason: EndReason::RemoteHelpDisabled,
        by: EndedBy::Admin,
    };
    assert_eq!(w.expect(p.helper), ended(p.session.clone()));
    assert_eq!(w.expect(p.sharer), ended(p.session.clone()));
    assert_eq!(w.expect(pending_helper), ended(pending.clone()));
    assert!(w.broker.session(&other).is_some());
    assert_eq!(w.record_ends(&p.session), 1);
    let late = w.connect(user("t1", "lara"));
    assert_eq!(error_code(&w.redeem(late, &code)), Some("invalidCode"));
}

#[test]
fn an_upgrade_needs_the_policy_and_consent() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::ViewOnly);
    let relay_before = w.relay.len();
    let id = w.request_mode(&p, Mode::FullControl, &[]);
    assert_eq!(w.evaluations.len(), 1, "upgrades are evaluated");
    w.decide(allow(Mode::FullControl));
    assert!(matches!(
        w.expect(p.helper),
        ServerEvent::ModeRequested { id: Some(ref i), consent: ConsentKind::Required, .. } if *i == id
    ));
    assert!(matches!(
        w.expect(p.sharer),
        ServerEvent::ConsentRequested {
            mode: Mode::FullControl,
            ..
        }
    ));
    assert_eq!(
        w.relay.len(),
        relay_before,
        "nothing changes before consent"
    );
    w.consent(&p, true);
    let changed = ServerEvent::ModeChanged {
        session_id: p.session.clone(),
        mode: Mode::FullControl,
        chat: true,
    };
    assert_eq!(w.expect(p.helper), changed);
    assert_eq!(w.expect(p.sharer), changed);
    assert!(
        w.ticket_requests.is_empty(),
        "no new tickets for an upgrade"
    );
    assert_eq!(
        w.relay.last(),
        Some(&Output::RelaySetMode {
            session_id: p.session.clone(),
            mode: Mode::FullControl,
            chat: true
        })
    );
    assert!(w.records.iter().any(|r| matches!(
        r,
        RecordEvent::ModeRaised {
            mode: Mode::FullControl,
            ..
        }
    )));
    assert_eq!(
        w.broker.session(&p.session).unwrap().mode,
        Some(Mode::FullControl)
    );
}

#[test]
fn a_declined_upgrade_keeps_the_session_in_its_mode() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::ViewOnly);
    w.request_mode(&p, Mode::Elevation, &[]);
    w.decide(allow(Mode::Elevation));
    w.drain(p.helper);
    w.drain(p.sharer);
    let relay_before = w.relay.len();
    w.consent(&p, false);
    let declined = ServerEvent::ConsentDeclined {
        session_id: p.session.clone(),
        mode: Mode::Elevation,
    };
    assert_eq!(w.expect(p.helper), declined);
    assert_eq!(w.expect(p.sharer), declined);
    assert_eq!(w.relay.len(), relay_before);
    let info = w.broker.session(&p.session).unwrap();
    assert_eq!(
        (info.state, info.mode),
        (SessionState::Active, Some(Mode::ViewOnly))
    );
    // An unanswered upgrade times out and the session goes on.
    w.request_mode(&p, Mode::FullControl, &[]);
    w.decide(allow(Mode::FullControl));
    w.drain(p.helper);
    w.drain(p.sharer);
    w.advance(secs(300));
    assert!(matches!(
        w.expect(p.helper),
        ServerEvent::ConsentTimedOut { .. }
    ));
    w.assert_silent(p.helper);
    assert_eq!(
        w.broker.session(&p.session).unwrap().state,
        SessionState::Active
    );
}

#[test]
fn a_denied_upgrade_keeps_the_session_active() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::ViewOnly);
    w.request_mode(&p, Mode::Elevation, &[]);
    w.decide(deny(DenyReason::PermissionMissing));
    assert_eq!(error_code(&w.expect(p.helper)), Some("permissionMissing"));
    assert_eq!(
        w.broker.session(&p.session).unwrap().state,
        SessionState::Active
    );
}

#[test]
fn a_downgrade_needs_neither_policy_nor_consent() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::Elevation);
    let id = w.request_mode(&p, Mode::ViewOnly, &[]);
    assert!(w.evaluations.is_empty());
    assert_eq!(
        w.expect(p.helper),
        ServerEvent::ModeRequested {
            id: Some(id),
            session_id: p.session.clone(),
            mode: Mode::ViewOnly,
            consent: ConsentKind::None,
            expires_at: None,
        }
    );
    let changed = ServerEvent::ModeChanged {
        session_id: p.session.clone(),
        mode: Mode::ViewOnly,
        chat: true,
    };
    assert_eq!(w.expect(p.helper), changed);
    assert_eq!(w.expect(p.sharer), changed);
    w.assert_silent(p.sharer);
    // Asking for the same mode again is refused.
    w.request_mode(&p, Mode::ViewOnly, &[]);
    assert_eq!(error_code(&w.expect(p.helper)), Some("notAllowed"));
    w.disconnect(p.helper);
    assert!(w.records.iter().any(|r| matches!(
        r,
        RecordEvent::Ended {
            highest_mode: Mode::Elevation,
            ..
        }
    )));
}

#[test]
fn launch_to_two_device_connections_first_answer_wins() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let first = w.connect(device_user("t1", "sam", "dev-9", true));
    let second = w.connect(device_user("t1", "sue", "dev-9", true));
    let id = w.send(
        helper,
        ClientRequest::RequestSession {
            device_id: "dev-9".into(),
            mode: None,
            acknowledge_warnings: vec![],
        },
    );
    let ServerEvent::LaunchPending {
        id: answered,
        session_id: sid,
        device_id,
        expires_at,
    } = w.expect(helper)
    else {
        panic!("expected launchPending")
    };
    assert_eq!((answered, device_id.as_str()), (Some(id), "dev-9"));
    for conn in [first, second] {
        assert_eq!(
            w.expect(conn),
            ServerEvent::LaunchRequested {
                session_id: sid.clone(),
                helper_profile: profile("helen"),
                mode: None,
                expires_at,
            }
        );
    }
    let accept = |w: &mut World, conn| {
        w.send(
            conn,
            ClientRequest::AnswerLaunch {
                session_id: sid.clone(),
                accept: true,
            },
        );
        w.expect(conn)
    };
    assert!(matches!(
        accept(&mut w, second),
        ServerEvent::SessionJoined {
            role: Role::Sharer,
            ..
        }
    ));
    assert_eq!(
        w.expect(first),
        ServerEvent::LaunchWithdrawn {
            session_id: sid.clone(),
            reason: WithdrawReason::AnsweredElsewhere,
        }
    );
    assert_eq!(
        w.expect(helper),
        ServerEvent::SessionJoined {
            id: None,
            session_id: sid.clone(),
            role: Role::Helper,
            peer_profile: profile("sue"),
        }
    );
    assert_eq!(error_code(&accept(&mut w, first)), Some("notFound"));
    // The rest is the usual flow.
    let p = Pair {
        helper,
        sharer: second,
        session: sid,
    };
    w.activate(&p, Mode::FullControl);
}

#[test]
fn launch_to_an_offline_or_busy_device_is_a_clear_error() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let request = |w: &mut World, device: &str| {
        w.send(
            helper,
            ClientRequest::RequestSession {
                device_id: device.into(),
                mode: None,
                acknowledge_warnings: vec![],
            },
        );
        w.expect(helper)
    };
    assert_eq!(
        error_code(&request(&mut w, "dev-none")),
        Some("deviceOffline")
    );
    // A device of another tenant looks offline.
    w.connect(device_user("t2", "zed", "dev-t2", true));
    assert_eq!(
        error_code(&request(&mut w, "dev-t2")),
        Some("deviceOffline")
    );
    // A device whose only connection is in a session is busy.
    let p = w.pair();
    assert_eq!(error_code(&request(&mut w, "dev-1")), Some("deviceBusy"));
    // An admin launch says the same.
    let err = w
        .broker
        .handle_admin_launch(user("t1", "admin"), "dev-none", w.now)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeviceOffline);
    let _ = p;
}

#[test]
fn a_launch_ends_when_every_device_connection_declines_or_leaves_or_time_runs_out() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let a = w.connect(device_user("t1", "sam", "dev-9", true));
    let b = w.connect(device_user("t1", "sue", "dev-9", true));
    let launch = |w: &mut World| {
        w.send(
            helper,
            ClientRequest::RequestSession {
                device_id: "dev-9".into(),
                mode: None,
                acknowledge_warnings: vec![],
            },
        );
        match w.expect(helper) {
            ServerEvent::LaunchPending { session_id, .. } => session_id,
            other => panic!("{other:?}"),
        }
    };
    let sid = launch(&mut w);
    w.drain(a);
    w.drain(b);
    w.send(
        a,
        ClientRequest::AnswerLaunch {
            session_id: sid.clone(),
            accept: false,
        },
    );
    assert!(matches!(w.expect(a), ServerEvent::Ack { .. }));
    w.assert_silent(helper);
    w.disconnect(b);
    assert_eq!(
        w.expect(helper),
        ServerEvent::SessionEnded {
            session_id: sid,
            reason: EndReason::LaunchDeclined,
            by: EndedBy::Sharer,
        }
    );
    let sid = launch(&mut w);
    w.drain(a);
    w.advance(secs(300));
    assert_eq!(
        w.expect(a),
        ServerEvent::LaunchWithdrawn {
            session_id: sid.clone(),
            reason: WithdrawReason::Cancelled,
        }
    );
    assert!(matches!(
        w.expect(helper),
        ServerEvent::SessionEnded {
            reason: EndReason::LaunchTimedOut,
            ..
        }
    ));
}

#[test]
fn an_admin_launch_reaches_the_device_and_the_helper_even_if_the_helper_connects_later() {
    let mut w = World::new();
    let device_conn = w.connect(device_user("t1", "sam", "dev-9", true));
    let sid = w
        .broker
        .handle_admin_launch(user("t1", "helen"), "dev-9", w.now)
        .expect("device online");
    w.pump();
    assert!(matches!(
        w.expect(device_conn),
        ServerEvent::LaunchRequested { .. }
    ));
    assert!(w.audit_kinds().contains(&AuditKind::LaunchRequested {
        device_id: "dev-9".into(),
        notified: 1
    }));
    w.send(
        device_conn,
        ClientRequest::AnswerLaunch {
            session_id: sid.clone(),
            accept: true,
        },
    );
    assert!(matches!(
        w.expect(device_conn),
        ServerEvent::SessionJoined { .. }
    ));
    // The helper opens the app now and picks the session up.
    let helper = w.connect(user("t1", "helen"));
    assert_eq!(
        w.expect(helper),
        ServerEvent::SessionJoined {
            id: None,
            session_id: sid.clone(),
            role: Role::Helper,
            peer_profile: profile("sam"),
        }
    );
    let p = Pair {
        helper,
        sharer: device_conn,
        session: sid,
    };
    w.activate(&p, Mode::ViewOnly);

    // With the helper already connected, it is told at once.
    let helper2 = w.connect(user("t1", "hank"));
    let device2 = w.connect(device_user("t1", "sue", "dev-8", true));
    let sid2 = w
        .broker
        .handle_admin_launch(user("t1", "hank"), "dev-8", w.now)
        .unwrap();
    w.pump();
    assert!(matches!(
        w.expect(helper2),
        ServerEvent::LaunchPending { id: None, ref session_id, .. } if *session_id == sid2
    ));
    assert!(matches!(
        w.expect(device2),
        ServerEvent::LaunchRequested { .. }
    ));
}

#[test]
fn unattended_without_a_present_sharer_starts_without_consent() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let agent = w.connect(device_token("t1", "kiosk-1"));
    w.send(
        helper,
        ClientRequest::RequestSession {
            device_id: "kiosk-1".into(),
            mode: Some(Mode::Unattended),
            acknowledge_warnings: vec![],
        },
    );
    let ServerEvent::LaunchPending {
        session_id: sid, ..
    } = w.expect(helper)
    else {
        panic!()
    };
    assert!(matches!(
        w.expect(agent),
        ServerEvent::LaunchRequested {
            mode: Some(Mode::Unattended),
            ..
        }
    ));
    // The device agent accepts; the announced mode is evaluated at once.
    w.send(
        agent,
        ClientRequest::AnswerLaunch {
            session_id: sid.clone(),
            accept: true,
        },
    );
    let eval = w.decide(allow(Mode::Unattended));
    assert_eq!(eval.sharer, None);
    assert_eq!(eval.device_id.as_deref(), Some("kiosk-1"));
    assert!(matches!(
        w.expect(helper),
        ServerEvent::SessionJoined { .. }
    ));
    assert!(matches!(
        w.expect(helper),
        ServerEvent::ModeRequested {
            id: None,
            consent: ConsentKind::None,
            ..
        }
    ));
    assert_eq!(w.ticket_requests.len(), 1, "no consent, no window");
    w.issue_tickets();
    assert_eq!(w.broker.session(&sid).unwrap().mode, Some(Mode::Unattended));
}

#[test]
fn unattended_with_a_present_sharer_starts_after_the_window_unless_declined() {
    for decline in [false, true] {
        let mut w = World::new();
        let p = w.pair();
        w.request_mode(&p, Mode::Unattended, &[]);
        w.decide(allow(Mode::Unattended));
        let starts_at = w.now.saturating_add(secs(30));
        assert!(matches!(
            w.expect(p.helper),
            ServerEvent::ModeRequested {
                consent: ConsentKind::DeclineWindow,
                expires_at: Some(t),
                ..
            } if t == starts_at
        ));
        assert_eq!(
            w.expect(p.sharer),
            ServerEvent::UnattendedStarting {
                session_id: p.session.clone(),
                helper_profile: profile("helen"),
                starts_at,
            }
        );
        w.advance(secs(10));
        assert!(w.ticket_requests.is_empty());
        if decline {
            w.consent(&p, false);
            assert!(matches!(
                w.expect(p.helper),
                ServerEvent::SessionEnded {
                    reason: EndReason::Declined,
                    by: EndedBy::Sharer,
                    ..
                }
            ));
            w.advance(secs(30));
            assert!(w.ticket_requests.is_empty());
        } else {
            w.advance(secs(20) - millis(1));
            assert!(w.ticket_requests.is_empty());
            w.advance(millis(1));
            assert_eq!(w.ticket_requests.len(), 1);
            w.issue_tickets();
            assert!(matches!(
                w.expect(p.sharer),
                ServerEvent::SessionActive {
                    mode: Mode::Unattended,
                    ..
                }
            ));
        }
    }
}

#[test]
fn disconnecting_mid_session_ends_it_with_the_right_reason() {
    for leaver in [Role::Helper, Role::Sharer] {
        let mut w = World::new();
        let p = w.pair();
        w.activate(&p, Mode::FullControl);
        let (gone, stays) = match leaver {
            Role::Helper => (p.helper, p.sharer),
            Role::Sharer => (p.sharer, p.helper),
        };
        w.disconnect(gone);
        assert_eq!(
            w.expect(stays),
            ServerEvent::SessionEnded {
                session_id: p.session.clone(),
                reason: EndReason::Disconnected,
                by: leaver.into(),
            }
        );
        assert!(w.relay.contains(&Output::RelayEnd {
            session_id: p.session.clone(),
            reason: EndReason::Disconnected
        }));
        assert_eq!(w.record_ends(&p.session), 1);
        assert!(matches!(
            w.records.last(),
            Some(RecordEvent::Ended { by, .. }) if *by == EndedBy::from(leaver)
        ));
        // The connection that stayed is free again.
        w.request_code(stays);
    }
}

#[test]
fn a_helper_leaving_invalidates_its_code() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let (_, code) = w.request_code(helper);
    w.disconnect(helper);
    let sam = w.connect(user("t1", "sam"));
    assert_eq!(error_code(&w.redeem(sam, &code)), Some("invalidCode"));
    assert_eq!(w.live.code_count(), 0);
}

#[test]
fn roles_and_states_are_enforced() {
    let mut w = World::new();
    let p = w.pair();
    let stranger = w.connect(user("t1", "eve"));
    // The sharer cannot ask for a mode; the helper cannot consent; a stranger sees nothing.
    w.send(
        p.sharer,
        ClientRequest::RequestMode {
            session_id: p.session.clone(),
            mode: Mode::ViewOnly,
            acknowledge_warnings: vec![],
        },
    );
    assert_eq!(error_code(&w.expect(p.sharer)), Some("notAllowed"));
    w.send(
        p.helper,
        ClientRequest::Consent {
            session_id: p.session.clone(),
            allow: true,
        },
    );
    assert_eq!(error_code(&w.expect(p.helper)), Some("notAllowed"));
    w.send(
        p.sharer,
        ClientRequest::Consent {
            session_id: p.session.clone(),
            allow: true,
        },
    );
    assert_eq!(
        error_code(&w.expect(p.sharer)),
        Some("notAllowed"),
        "nothing to consent to"
    );
    for request in [
        ClientRequest::EndSession {
            session_id: p.session.clone(),
        },
        ClientRequest::Chat {
            session_id: p.session.clone(),
            text: "x".into(),
        },
    ] {
        w.send(stranger, request);
        assert_eq!(error_code(&w.expect(stranger)), Some("notFound"));
    }
    // Chat waits for the session to be active; a busy connection gets no second session.
    w.send(
        p.helper,
        ClientRequest::Chat {
            session_id: p.session.clone(),
            text: "x".into(),
        },
    );
    assert_eq!(error_code(&w.expect(p.helper)), Some("notAllowed"));
    w.send(p.helper, ClientRequest::RequestCode);
    assert_eq!(error_code(&w.expect(p.helper)), Some("notAllowed"));
    w.send(
        p.sharer,
        ClientRequest::RedeemCode {
            code: "ABCDEFGH".into(),
        },
    );
    assert_eq!(error_code(&w.expect(p.sharer)), Some("notAllowed"));
    // A device token (no user) cannot be a helper.
    let agent = w.connect(device_token("t1", "kiosk"));
    w.send(agent, ClientRequest::RequestCode);
    assert_eq!(error_code(&w.expect(agent)), Some("notAllowed"));
    // Too much chat text.
    w.activate(&p, Mode::ViewOnly);
    w.send(
        p.helper,
        ClientRequest::Chat {
            session_id: p.session.clone(),
            text: "x".repeat(4001),
        },
    );
    assert_eq!(error_code(&w.expect(p.helper)), Some("tooLarge"));
}

#[test]
fn a_mode_request_while_one_is_in_flight_is_refused() {
    let mut w = World::new();
    let p = w.pair();
    w.request_mode(&p, Mode::ViewOnly, &[]);
    w.request_mode(&p, Mode::FullControl, &[]);
    assert_eq!(error_code(&w.expect(p.helper)), Some("notAllowed"));
    assert_eq!(w.evaluations.len(), 1);
}

#[test]
fn an_unanswered_evaluation_gives_unavailable_and_a_late_decision_is_ignored() {
    let mut w = World::new();
    let p = w.pair();
    let id = w.request_mode(&p, Mode::ViewOnly, &[]);
    let eval = w.evaluations.pop_front().unwrap();
    w.advance(secs(10));
    let e = w.expect(p.helper);
    assert_eq!(
        (error_code(&e), e.answer_id()),
        (Some("unavailable"), Some(&id))
    );
    assert!(w
        .broker
        .handle_decision(eval.eval, allow(Mode::ViewOnly), w.now)
        .is_err());
    w.pump();
    w.assert_silent(p.sharer);
    assert_eq!(
        w.broker.session(&p.session).unwrap().state,
        SessionState::Joined
    );
}

#[test]
fn failing_or_missing_tickets_end_the_session_as_relay_unavailable() {
    for fail_explicitly in [true, false] {
        let mut w = World::new();
        let p = w.pair();
        w.request_mode(&p, Mode::ViewOnly, &[]);
        w.decide(allow(Mode::ViewOnly));
        w.drain(p.sharer);
        w.consent(&p, true);
        let (sid, _, _) = w.ticket_requests.pop_front().unwrap();
        if fail_explicitly {
            w.broker.handle_tickets_failed(&sid, w.now).unwrap();
            w.pump();
        } else {
            w.advance(secs(10));
        }
        w.drain(p.sharer);
        assert!(matches!(
            w.drain(p.helper).last(),
            Some(ServerEvent::SessionEnded {
                reason: EndReason::RelayUnavailable,
                by: EndedBy::Broker,
                ..
            })
        ));
        assert!(w.records.is_empty());
        assert!(w.relay.contains(&Output::RelayEnd {
            session_id: sid.clone(),
            reason: EndReason::RelayUnavailable
        }));
        assert!(w
            .broker
            .handle_tickets(&sid, access("helper", &sid), access("sharer", &sid), w.now)
            .is_err());
    }
}

#[test]
fn a_joined_session_without_a_mode_times_out() {
    let mut w = World::new();
    let p = w.pair();
    w.advance(secs(15 * 60));
    assert!(matches!(
        w.expect(p.helper),
        ServerEvent::SessionEnded {
            reason: EndReason::JoinTimedOut,
            ..
        }
    ));
}

#[test]
fn malformed_and_unknown_messages_get_documented_errors() {
    let mut w = World::new();
    let c = w.connect(user("t1", "eve"));
    let cases = [
        ("not json", "badRequest", None),
        ("[1,2]", "badRequest", None),
        (r#"{"type":"ping"}"#, "badRequest", None),
        (r#"{"id":"a","type":"fly"}"#, "unknownType", Some("a")),
        (r#"{"id":"b","type":"redeemCode"}"#, "badRequest", Some("b")),
        (
            r#"{"id":"c","type":"requestMode","sessionId":"s","mode":"godMode"}"#,
            "badRequest",
            Some("c"),
        ),
    ];
    for (text, code, id) in cases {
        w.send_text(c, text);
        let e = w.expect(c);
        assert_eq!(error_code(&e), Some(code), "{text}");
        let echoed = match e.answer_id() {
            Some(assist_session::RequestId::Text(s)) => Some(s.as_str()),
            _ => None,
        };
        assert_eq!(echoed, id, "{text}");
    }
    w.send_text(c, &"x".repeat(20_000));
    assert_eq!(error_code(&w.expect(c)), Some("tooLarge"));
    w.send_text(c, r#"{"id":7,"type":"ping","extra":true}"#);
    assert_eq!(
        w.expect(c),
        ServerEvent::Pong {
            id: assist_session::RequestId::Number(7)
        }
    );
}

#[test]
fn floods_are_rate_limited_and_repeated_abuse_closes_the_connection() {
    let mut w = World::new();
    let p = w.pair();
    for _ in 0..18 {
        w.send(p.sharer, ClientRequest::Ping);
    }
    assert!(w
        .drain(p.sharer)
        .iter()
        .all(|e| matches!(e, ServerEvent::Pong { .. })));
    // pair() used 1 request of the sharer; 18 pings → 19; one more fits, then limited.
    w.send(p.sharer, ClientRequest::Ping);
    assert!(matches!(w.expect(p.sharer), ServerEvent::Pong { .. }));
    w.send(p.sharer, ClientRequest::Ping);
    assert_eq!(error_code(&w.expect(p.sharer)), Some("rateLimited"));
    // Refills at 10/s.
    w.advance(millis(100));
    w.send(p.sharer, ClientRequest::Ping);
    assert!(matches!(w.expect(p.sharer), ServerEvent::Pong { .. }));
    // Nine more strikes (rate-limited or malformed) close it with 4429.
    for _ in 0..8 {
        w.send(p.sharer, ClientRequest::Ping);
    }
    assert!(w.closed.is_empty());
    w.send_text(p.sharer, "garbage");
    assert_eq!(w.closed, vec![(p.sharer, CloseCode::Abuse)]);
    assert_eq!(CloseCode::Abuse.code(), 4429);
    assert!(matches!(
        w.drain(p.helper).last(),
        Some(ServerEvent::SessionEnded {
            reason: EndReason::Disconnected,
            by: EndedBy::Sharer,
            ..
        })
    ));
    assert_eq!(w.broker.connection_count(), 1);
    // The IO layer's own disconnect afterwards is harmless.
    w.disconnect(p.sharer);
}

#[test]
fn poll_timeout_names_the_next_deadline() {
    let mut w = World::new();
    assert_eq!(w.broker.poll_timeout(), None);
    let helper = w.connect(user("t1", "helen"));
    let start = w.now;
    w.request_code(helper);
    assert_eq!(
        w.broker.poll_timeout(),
        Some(start.saturating_add(secs(600)))
    );
}

#[test]
fn the_config_is_validated() {
    let bad = BrokerConfig {
        code_ttl: secs(0),
        ..BrokerConfig::default()
    };
    assert!(assist_session::Broker::new(
        bad,
        Box::new(assist_session::DangerDeterministicCrypto::new(1))
    )
    .is_err());
    let bad = BrokerConfig {
        abuse_strikes: 0,
        ..BrokerConfig::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn io_layer_mistakes_are_errors_not_panics() {
    let mut w = World::new();
    let c = w.connect(user("t1", "helen"));
    let party = user("t1", "helen");
    assert!(w.broker.handle_connect(c, party, w.now).is_err());
    let ghost = assist_session::ConnId(999);
    assert!(w
        .broker
        .handle_text(ghost, r#"{"id":1,"type":"ping"}"#, w.now)
        .is_err());
    assert!(w
        .broker
        .handle_decision(assist_session::EvalId(42), allow(Mode::ViewOnly), w.now)
        .is_err());
    let nobody = device_token("t1", "dev-x");
    assert_eq!(
        w.broker
            .handle_admin_launch(nobody, "dev-x", w.now)
            .unwrap_err(),
        assist_session::LaunchError::NotAUser
    );
    w.broker.handle_disconnect(ghost, w.now);
    w.pump();
    assert!(w.closed.is_empty());
}

// A pairing's deadlines reach 15 minutes ahead (the code's, the join's): an ended session's
// must go with it, or a busy broker holds the timers of every session of the last quarter hour.
#[test]
fn an_ended_session_leaves_no_timers_behind() {
    let mut w = World::new();
    for round in 0..3 {
        let p = w.pair();
        w.activate(&p, Mode::FullControl);
        // One deadline at most and one `Seen` write per open session.
        assert!(
            w.broker.pending_timers() <= 2,
            "round {round}: {}",
            w.broker.pending_timers()
        );
        w.advance(secs(61));
        let id = w.send(
            p.sharer,
            ClientRequest::EndSession {
                session_id: p.session.clone(),
            },
        );
        assert_eq!(w.expect(p.sharer), ServerEvent::Ack { id });
        assert_eq!(w.broker.session_count(), 0);
        assert_eq!(w.broker.pending_timers(), 0, "round {round}");
        w.disconnect(p.helper);
        w.disconnect(p.sharer);
    }
}
