//! Draining on virtual time: a draining broker refuses new sessions while the running ones
//! carry on, and ends what is left with `shuttingDown` when told the grace is over.

mod common;

use assist_policy::Mode;
use assist_session::{
    ClientRequest, EndReason, EndedBy, LaunchError, Output, RecordEvent, ServerEvent,
    DRAINING_MESSAGE,
};
use common::*;

fn unavailable_draining(event: &ServerEvent) -> bool {
    matches!(
        event,
        ServerEvent::Error { code, message, .. }
            if code.as_str() == "unavailable" && message == DRAINING_MESSAGE
    )
}

#[test]
fn a_draining_broker_refuses_new_sessions_and_keeps_the_running_ones() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::FullControl);
    let pending_helper = w.connect(user("t1", "hank"));
    let (pending, code) = w.request_code(pending_helper);
    assert!(!w.broker.is_draining());

    w.broker.handle_draining(w.now);
    w.pump();
    assert!(w.broker.is_draining());
    // Nothing is said to anyone, nothing ends.
    w.assert_silent(p.helper);
    w.assert_silent(p.sharer);
    w.assert_silent(pending_helper);
    assert_eq!(w.broker.session_count(), 2);

    // New sessions: a code, a redemption (even of a code issued before), a launch.
    let helper = w.connect(user("t1", "helga"));
    w.send(helper, ClientRequest::RequestCode);
    assert!(unavailable_draining(&w.expect(helper)));
    let sharer = w.connect(device_user("t1", "sid", "dev-2", true));
    assert!(unavailable_draining(&w.redeem(sharer, &code)));
    w.send(
        helper,
        ClientRequest::RequestSession {
            device_id: "dev-2".into(),
            mode: None,
            acknowledge_warnings: vec![],
        },
    );
    assert!(unavailable_draining(&w.expect(helper)));
    w.assert_silent(sharer);
    assert_eq!(
        w.broker
            .handle_admin_launch(user("t1", "helga"), "dev-2", w.now),
        Err(LaunchError::Unavailable)
    );
    assert_eq!(w.broker.session_count(), 2, "no session was started");

    // The running session carries on: chat, mode changes, its own end.
    let id = w.send(
        p.helper,
        ClientRequest::Chat {
            session_id: p.session.clone(),
            text: "still here".into(),
        },
    );
    assert_eq!(w.expect(p.helper), ServerEvent::Ack { id });
    assert!(matches!(w.expect(p.sharer), ServerEvent::Chat { .. }));
    w.request_mode(&p, Mode::ViewOnly, &[]);
    assert!(
        w.drain(p.sharer)
            .iter()
            .any(|e| matches!(e, ServerEvent::ModeChanged { .. })),
        "a downgrade applies during the drain"
    );
    w.send(
        p.sharer,
        ClientRequest::EndSession {
            session_id: p.session.clone(),
        },
    );
    w.drain(p.helper);
    w.drain(p.sharer);
    assert_eq!(w.record_ends(&p.session), 1);
    // The pending code is still a session until it expires or the grace ends.
    assert!(w.broker.session(&pending).is_some());
}

#[test]
fn shutting_down_ends_every_session_with_shutting_down() {
    let mut w = World::new();
    let p = w.pair();
    w.activate(&p, Mode::FullControl);
    let pending_helper = w.connect(user("t1", "hank"));
    let (pending, _) = w.request_code(pending_helper);
    let other_helper = w.connect(user("t2", "hugo"));
    let other_device = w.connect(device_user("t2", "sue", "dev-7", true));
    w.send(
        other_helper,
        ClientRequest::RequestSession {
            device_id: "dev-7".into(),
            mode: None,
            acknowledge_warnings: vec![],
        },
    );
    let ServerEvent::LaunchPending {
        session_id: launch, ..
    } = w.expect(other_helper)
    else {
        panic!("expected launchPending")
    };
    w.drain(other_device);
    w.broker.handle_draining(w.now);
    let relay_before = w.relay.len();

    w.broker.handle_shutting_down(w.now);
    w.pump();
    assert_eq!(w.broker.session_count(), 0);
    let ended = |sid: &assist_session::SessionId| ServerEvent::SessionEnded {
        session_id: sid.clone(),
        reason: EndReason::ShuttingDown,
        by: EndedBy::Broker,
    };
    assert_eq!(w.expect(p.helper), ended(&p.session));
    assert_eq!(w.expect(p.sharer), ended(&p.session));
    assert_eq!(w.expect(pending_helper), ended(&pending));
    assert_eq!(w.expect(other_helper), ended(&launch));
    // The relay is told to end the active session with the same reason.
    assert_eq!(
        w.relay[relay_before..],
        [Output::RelayEnd {
            session_id: p.session.clone(),
            reason: EndReason::ShuttingDown,
        }]
    );
    assert_eq!(w.record_ends(&p.session), 1);
    assert!(w.records.iter().any(|r| matches!(
        r,
        RecordEvent::Ended { session_id, reason: EndReason::ShuttingDown, .. } if *session_id == p.session
    )));
    // It stays shut: no new session, and a second call changes nothing.
    w.send(p.helper, ClientRequest::RequestCode);
    assert!(unavailable_draining(&w.expect(p.helper)));
    w.broker.handle_shutting_down(w.now);
    w.pump();
    w.assert_silent(p.helper);
    assert_eq!(EndReason::ShuttingDown.as_str(), "shuttingDown");
}
