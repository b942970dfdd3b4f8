//! The broker keeps its live state (codes, session directory, presence) behind `LiveState`:
//! what another task or node reads there follows the session's lifecycle.

mod common;

use std::sync::Arc;

use assist_policy::Mode;
use assist_session::{
    Broker, BrokerConfig, Crypto, DangerDeterministicCrypto, InProcessLiveState, LiveCode,
    LiveStage, LiveState, ServerEvent, SessionId, UserRef,
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
    let live = w.broker.live_state().clone();
    let helper = w.connect(user("t1", "helen"));
    let sharer = w.connect(device_user("t1", "sam", "dev-1", true));
    assert_eq!(live.user_connections(&helen()), vec![helper]);
    assert_eq!(live.device_connections("t1", "dev-1"), vec![sharer]);
    assert!(
        live.device_connections("t2", "dev-1").is_empty(),
        "per tenant"
    );

    let (sid, code) = w.request_code(helper);
    assert_eq!(live.code_count(), 1);
    let entry = live.session(&sid).expect("listed once issued");
    assert_eq!(entry.stage, LiveStage::Pending);
    assert_eq!(entry.helper_conn, Some(helper));
    assert_eq!(entry.sharer_conn, None);

    w.redeem(sharer, &code);
    w.expect(helper);
    assert_eq!(live.code_count(), 0, "a redeemed code is gone");
    let entry = live.session(&sid).expect("listed while joined");
    assert_eq!(entry.stage, LiveStage::Joined);
    assert_eq!(entry.sharer_conn, Some(sharer));
    assert_eq!(entry.device_id.as_deref(), Some("dev-1"));

    let p = Pair {
        helper,
        sharer,
        session: sid.clone(),
    };
    w.activate(&p, Mode::ViewOnly);
    let entry = live.session(&sid).expect("listed while active");
    assert_eq!(
        (entry.stage, entry.mode, entry.chat),
        (LiveStage::Active, Some(Mode::ViewOnly), true)
    );

    // A downgrade needs no consent; an upgrade is visible once granted.
    w.activate_upgrade(&p, Mode::FullControl);
    assert_eq!(
        live.session(&sid).and_then(|s| s.mode),
        Some(Mode::FullControl)
    );

    w.broker.handle_settings_changed("t1", true, true, w.now);
    w.pump();
    assert_eq!(live.session(&sid).map(|s| s.chat), Some(false), "blockChat");
    assert_eq!(live.tenant_sessions("t1").len(), 1);
    assert!(live.tenant_sessions("t2").is_empty());

    w.disconnect(sharer);
    assert_eq!(
        live.session(&sid),
        None,
        "an ended session leaves the directory"
    );
    assert!(live.device_connections("t1", "dev-1").is_empty());
    assert_eq!(live.user_connections(&helen()), vec![helper]);
}

#[test]
fn an_expired_code_is_remembered_then_forgotten_in_the_live_state() {
    let mut w = World::new();
    let live = w.broker.live_state().clone();
    let helper = w.connect(user("t1", "helen"));
    let (sid, _code) = w.request_code(helper);
    w.advance(secs(600));
    assert_eq!(live.session(&sid), None);
    assert_eq!(live.code_count(), 1, "kept to answer codeExpired");
    w.advance(secs(600));
    assert_eq!(live.code_count(), 0, "then forgotten");
}

/// The broker uses the state it is given: a code another node already holds in the shared
/// state is not handed out again, and presence the broker writes is visible to the state's
/// owner.
#[test]
fn a_broker_works_on_the_live_state_it_is_given() {
    // What a broker with this seed draws first, on a state of its own.
    let mut alone = World::new();
    let h = alone.connect(user("t1", "helen"));
    let (_, first_code) = alone.request_code(h);

    // Another node holds that code in the shared state.
    let live: Arc<dyn LiveState> = Arc::new(InProcessLiveState::new());
    let crypto = DangerDeterministicCrypto::new(7);
    let other = SessionId("f".repeat(32));
    assert!(live.insert_code(
        &crypto.code_digest(&first_code),
        LiveCode::Pending(other.clone())
    ));

    let broker = Broker::with_live_state(BrokerConfig::default(), Box::new(crypto), live.clone())
        .expect("valid config");
    let mut w = World::with_broker(broker);
    let helper = w.connect(user("t1", "helen"));
    assert_eq!(live.user_connections(&helen()), vec![helper]);
    let (sid, code) = w.request_code(helper);
    assert_ne!(code, first_code, "a code held elsewhere is not reused");
    assert_eq!(live.code_count(), 2);
    assert!(live.session(&sid).is_some());
    let sharer = w.connect(user("t1", "sam"));
    assert!(matches!(
        w.redeem(sharer, &code),
        ServerEvent::SessionJoined { .. }
    ));
    assert_eq!(
        live.code(&DangerDeterministicCrypto::new(7).code_digest(&first_code))
            .map(|(_, c)| c),
        Some(LiveCode::Pending(other)),
        "the other node's code is untouched"
    );
}
