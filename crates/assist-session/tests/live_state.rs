//! The broker's live state (codes, session directory, presence) is a port: it emits ops and
//! queries and takes answers back. What a store applying them holds follows the session's
//! lifecycle, and answers that come late (after a close, after an end), collide or lose a
//! race leave the store consistent.

mod common;

use assist_policy::Mode;
use assist_session::message::ClientRequest;
use assist_session::{
    Crypto, DangerDeterministicCrypto, LiveAnswer, LiveCode, LiveQuery, LiveStage, ServerEvent,
    SessionId, SessionState, UserRef,
};
use common::*;

fn helen() -> UserRef {
    UserRef {
        tenant_id: "t1".into(),
        user_id: "helen-id".into(),
    }
}

#[test]
fn the_directory_follows_a_code_session_from_issue_to_end() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let sharer = w.connect(device_user("t1", "sam", "dev-1", true));
    assert_eq!(w.live.user_connections(&helen()), vec![helper]);
    assert_eq!(w.live.device_connections("t1", "dev-1"), vec![sharer]);
    assert!(
        w.live.device_connections("t2", "dev-1").is_empty(),
        "per tenant"
    );

    let (sid, code) = w.request_code(helper);
    assert_eq!(w.live.code_count(), 1);
    let entry = w.live.session(&sid).expect("listed once issued");
    assert_eq!(entry.stage, LiveStage::Pending);
    assert_eq!(entry.helper_conn, Some(helper));
    assert_eq!(entry.sharer_conn, None);

    w.redeem(sharer, &code);
    w.expect(helper);
    assert_eq!(w.live.code_count(), 0, "a redeemed code is gone");
    let entry = w.live.session(&sid).expect("listed while joined");
    assert_eq!(entry.stage, LiveStage::Joined);
    assert_eq!(entry.sharer_conn, Some(sharer));
    assert_eq!(entry.device_id.as_deref(), Some("dev-1"));

    let p = Pair {
        helper,
        sharer,
        session: sid.clone(),
    };
    w.activate(&p, Mode::ViewOnly);
    let entry = w.live.session(&sid).expect("listed while active");
    assert_eq!(
        (entry.stage, entry.mode, entry.chat),
        (LiveStage::Active, Some(Mode::ViewOnly), true)
    );

    w.activate_upgrade(&p, Mode::FullControl);
    assert_eq!(
        w.live.session(&sid).and_then(|s| s.mode),
        Some(Mode::FullControl)
    );

    w.broker.handle_settings_changed("t1", true, true, w.now);
    w.pump();
    assert_eq!(
        w.live.session(&sid).map(|s| s.chat),
        Some(false),
        "blockChat"
    );
    assert_eq!(w.live.tenant_sessions("t1").len(), 1);
    assert!(w.live.tenant_sessions("t2").is_empty());

    w.disconnect(sharer);
    assert_eq!(
        w.live.session(&sid),
        None,
        "an ended session leaves the directory"
    );
    assert!(w.live.device_connections("t1", "dev-1").is_empty());
    assert_eq!(w.live.user_connections(&helen()), vec![helper]);
}

#[test]
fn an_expired_code_is_remembered_then_forgotten_in_the_live_state() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let (sid, _code) = w.request_code(helper);
    w.advance(secs(600));
    assert_eq!(w.live.session(&sid), None);
    assert_eq!(w.live.code_count(), 1, "kept to answer codeExpired");
    assert!(matches!(
        w.live.codes.values().next(),
        Some(LiveCode::Expired { .. })
    ));
    w.advance(secs(600));
    assert_eq!(w.live.code_count(), 0, "then forgotten");
}

/// The first code a broker with this seed draws.
fn first_code() -> String {
    let mut alone = World::new();
    let h = alone.connect(user("t1", "helen"));
    alone.request_code(h).1
}

#[test]
fn a_code_held_elsewhere_is_not_reused_a_fresh_one_is_drawn() {
    let first = first_code();
    let crypto = DangerDeterministicCrypto::new(7);
    let other = SessionId("f".repeat(32));
    let mut w = World::new();
    // Another node holds that code in the shared state.
    w.live
        .codes
        .insert(crypto.code_digest(&first), LiveCode::Pending(other.clone()));
    let helper = w.connect(user("t1", "helen"));
    let (sid, code) = w.request_code(helper);
    assert_ne!(code, first, "a code held elsewhere is not reused");
    assert_eq!(w.live.code_count(), 2);
    assert!(w.live.session(&sid).is_some());
    let sharer = w.connect(user("t1", "sam"));
    assert!(matches!(
        w.redeem(sharer, &code),
        ServerEvent::SessionJoined { .. }
    ));
    assert_eq!(
        w.live.codes.get(&crypto.code_digest(&first)),
        Some(&LiveCode::Pending(other)),
        "the other node's code is untouched"
    );
}

#[test]
fn every_insert_colliding_answers_unavailable_after_the_last_attempt() {
    let mut w = World::new();
    w.hold_live = true;
    let helper = w.connect(user("t1", "helen"));
    let id = w.send(helper, ClientRequest::RequestCode);
    let mut attempts = 0;
    while let Some((token, query)) = w.held.pop_front() {
        assert!(matches!(query, LiveQuery::InsertCode { .. }), "{query:?}");
        attempts += 1;
        w.broker
            .handle_live_answer(token, LiveAnswer::Inserted(false), w.now)
            .expect("a query out");
        w.pump();
    }
    assert_eq!(attempts, 8, "a fresh code per attempt");
    match w.expect(helper) {
        ServerEvent::Error {
            id: answered, code, ..
        } => {
            assert_eq!(answered, Some(id));
            assert_eq!(code.as_str(), "unavailable");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(w.broker.session_count(), 0);
    assert_eq!(w.broker.live_queries_out(), 0);
    // The connection is free again.
    w.hold_live = false;
    w.request_code(helper);
}

#[test]
fn a_code_inserted_after_its_connection_closed_is_removed_again() {
    let mut w = World::new();
    w.hold_live = true;
    let helper = w.connect(user("t1", "helen"));
    w.send(helper, ClientRequest::RequestCode);
    assert_eq!(w.held.len(), 1);
    w.disconnect(helper);
    w.answer_held(0);
    assert_eq!(w.live.code_count(), 0, "the late insert is undone");
    assert_eq!(w.broker.session_count(), 0);
    assert!(w.live.sessions.is_empty());
}

#[test]
fn a_second_request_while_a_query_is_out_is_refused_busy() {
    let mut w = World::new();
    w.hold_live = true;
    let helper = w.connect(user("t1", "helen"));
    w.send(helper, ClientRequest::RequestCode);
    let second = w.send(
        helper,
        ClientRequest::RedeemCode {
            code: "ABCD2345".into(),
        },
    );
    match w.expect(helper) {
        ServerEvent::Error { id, code, .. } => {
            assert_eq!(id, Some(second));
            assert_eq!(code.as_str(), "notAllowed");
        }
        other => panic!("expected notAllowed, got {other:?}"),
    }
    assert_eq!(w.held.len(), 1, "the refused request asked nothing");
    w.answer_held(0);
    assert!(matches!(w.expect(helper), ServerEvent::CodeIssued { .. }));
}

/// A helper with a code, and a sharer whose redemption of it is held at the lookup.
fn redemption_held() -> (World, Pair, String) {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let sharer = w.connect(user("t1", "sam"));
    let (session, code) = w.request_code(helper);
    w.hold_live = true;
    w.send(sharer, ClientRequest::RedeemCode { code: code.clone() });
    assert!(matches!(w.held[0].1, LiveQuery::GetCode { .. }));
    (
        w,
        Pair {
            helper,
            sharer,
            session,
        },
        code,
    )
}

#[test]
fn a_take_answered_after_the_sharer_left_puts_the_code_back() {
    let (mut w, p, code) = redemption_held();
    w.answer_held(0); // lookup → take asked
    assert!(matches!(w.held[0].1, LiveQuery::TakeCodeIf { .. }));
    w.disconnect(p.sharer);
    w.answer_held(0); // taken, but nobody to join
    assert_eq!(
        w.live.code_count(),
        1,
        "the code is back for its real sharer"
    );
    assert_eq!(
        w.broker.session(&p.session).map(|s| s.state),
        Some(SessionState::AwaitingRedemption)
    );
    w.hold_live = false;
    let other = w.connect(user("t1", "sue"));
    assert!(matches!(
        w.redeem(other, &code),
        ServerEvent::SessionJoined { .. }
    ));
}

#[test]
fn a_take_answered_after_the_session_ended_joins_nothing() {
    let (mut w, p, _code) = redemption_held();
    w.answer_held(0); // lookup → take asked
    w.send(
        p.helper,
        ClientRequest::EndSession {
            session_id: p.session.clone(),
        },
    );
    w.answer_held(0); // the take ran before the end's removal: it took the code
    assert_eq!(error_code(&w.expect(p.sharer)), Some("invalidCode"));
    assert_eq!(w.live.code_count(), 0);
    assert!(w.live.sessions.is_empty());
    assert_eq!(w.broker.session_count(), 0);
}

#[test]
fn a_lookup_answered_after_the_session_ended_is_an_invalid_code() {
    let (mut w, p, _code) = redemption_held();
    w.disconnect(p.helper);
    w.answer_held(0); // the lookup ran before the end's removal
    assert_eq!(error_code(&w.expect(p.sharer)), Some("invalidCode"));
    assert!(w.held.is_empty(), "no take is asked for an ended session");
    assert_eq!(w.live.code_count(), 0);
}

#[test]
fn a_take_that_loses_the_race_is_an_invalid_code() {
    let (mut w, p, _code) = redemption_held();
    w.answer_held(0); // lookup → take asked
    let (token, _) = w.held.pop_front().expect("take");
    // Another node's redemption won: the store answers that nothing matched.
    w.broker
        .handle_live_answer(token, LiveAnswer::Taken(None), w.now)
        .expect("a query out");
    w.pump();
    assert_eq!(error_code(&w.expect(p.sharer)), Some("invalidCode"));
    w.assert_silent(p.helper);
}

#[test]
fn a_store_that_cannot_answer_gets_unavailable_and_frees_the_connection() {
    let mut w = World::new();
    w.hold_live = true;
    let helper = w.connect(user("t1", "helen"));
    w.send(helper, ClientRequest::RequestCode);
    let (token, _) = w.held.pop_front().expect("insert");
    w.broker
        .handle_live_answer(token, LiveAnswer::Failed, w.now)
        .expect("a query out");
    w.pump();
    assert_eq!(error_code(&w.expect(helper)), Some("unavailable"));
    assert!(
        w.broker
            .handle_live_answer(token, LiveAnswer::Failed, w.now)
            .is_err(),
        "answered once"
    );
    w.hold_live = false;
    w.request_code(helper);
}

#[test]
fn the_live_snapshot_rebuilds_what_an_emptied_store_lost() {
    let mut w = World::new();
    let helper = w.connect(user("t1", "helen"));
    let sharer = w.connect(device_user("t1", "sam", "dev-1", true));
    let other = w.connect(user("t1", "olga"));
    let p = w.pair_conns(helper, sharer);
    w.activate(&p, Mode::ViewOnly);
    // A second session still waiting for its code to be redeemed.
    let (pending, _code) = w.request_code(other);
    let idle = w.connect(user("t1", "ivan"));

    assert!(w.broker.is_idle(idle));
    assert!(!w.broker.is_idle(helper), "in a session");
    assert!(!w.broker.is_idle(other), "its code is out");
    assert!(!w.broker.is_idle(assist_session::ConnId(999)), "not open");

    // Redis restarted: the store came back empty; the snapshot puts back what the broker holds.
    let mut fresh = common::LiveModel::default();
    for op in w.broker.live_snapshot() {
        fresh.apply(op);
    }
    assert_eq!(fresh, w.live);
    assert_eq!(fresh.code_count(), 1);
    assert!(fresh.session(&p.session).is_some() && fresh.session(&pending).is_some());
    assert_eq!(fresh.user_connections(&helen()), vec![helper]);

    // Once the sessions end, the snapshot holds presence only.
    w.disconnect(helper);
    w.disconnect(other);
    let ops = w.broker.live_snapshot();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(ops
        .iter()
        .all(|op| matches!(op, assist_session::LiveOp::AddConnection { .. })));
}
