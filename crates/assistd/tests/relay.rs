//! The relay over real WSS and QUIC connections on loopback: pairing, cross-transport pairing,
//! ticket refusals, timeouts, mode enforcement, backpressure, limits and broker control.

mod common;

use assist_client::relay::{
    connect_quic, connect_wss, quic_endpoint, ClientError, ClientEvent, ClientReceiver,
    ClientSender,
};
use assist_policy::Mode;
use assist_relay::Role;
use assist_relay_proto::control::RelayControl;
use assist_relay_proto::frame::{Channel, Frame, FLAG_FROM_RELAY, FLAG_KEYFRAME};
use assistd::Settings;
use common::*;
use std::sync::Arc;
use std::time::Duration;

type Leg = (ClientSender, ClientReceiver);

struct Relayd {
    s: TestServer,
    tls: Arc<rustls::ClientConfig>,
    quic: quinn::Endpoint,
}

fn client_tls(cert: &std::path::Path) -> rustls::ClientConfig {
    (*assist_client::tls::client_config(cert).unwrap()).clone()
}

async fn relayd(tune: impl FnOnce(&mut Settings)) -> (Relayd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::ephemeral(dir.path());
    tune(&mut settings);
    let s = TestServer::start_with(settings).await;
    let tls = Arc::new(client_tls(&s.server.cert_path));
    let quic = quic_endpoint(client_tls(&s.server.cert_path)).unwrap();
    (Relayd { s, tls, quic }, dir)
}

impl Relayd {
    fn ticket(&self, sid: &str, role: Role, mode: Mode, chat: bool) -> String {
        self.s.server.tickets.mint(
            sid,
            role,
            mode,
            chat,
            self.s.server.relay.as_ref().expect("a relay").identity(),
        )
    }
    async fn wss(&self, ticket: &str) -> Result<Leg, ClientError> {
        connect_wss(
            self.s.server.https_addr,
            "localhost",
            self.tls.clone(),
            ticket,
        )
        .await
    }
    async fn quic(&self, ticket: &str) -> Result<Leg, ClientError> {
        connect_quic(
            &self.quic,
            self.s.server.quic_addr.expect("a QUIC socket"),
            "localhost",
            ticket,
        )
        .await
    }
    async fn pair(
        &self,
        sid: &str,
        mode: Mode,
        chat: bool,
        helper_quic: bool,
        sharer_quic: bool,
    ) -> (Leg, Leg) {
        let ht = self.ticket(sid, Role::Helper, mode, chat);
        let st = self.ticket(sid, Role::Sharer, mode, chat);
        let mut h = if helper_quic {
            self.quic(&ht).await.unwrap()
        } else {
            self.wss(&ht).await.unwrap()
        };
        expect_control(&mut h.1, "joined").await;
        let mut s = if sharer_quic {
            self.quic(&st).await.unwrap()
        } else {
            self.wss(&st).await.unwrap()
        };
        expect_control(&mut s.1, "joined").await;
        expect_control(&mut h.1, "paired").await;
        expect_control(&mut s.1, "paired").await;
        (h, s)
    }
}

async fn next(rx: &mut ClientReceiver) -> ClientEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("no client error")
}

fn control_of(f: &Frame) -> Option<RelayControl> {
    (f.header.channel == Channel::Control && f.header.flags & FLAG_FROM_RELAY != 0)
        .then(|| serde_json::from_slice(&f.payload()).expect("relay control is JSON"))
}

/// Waits for a relay control message of `kind`, skipping peer frames.
async fn expect_control(rx: &mut ClientReceiver, kind: &str) -> RelayControl {
    loop {
        match next(rx).await {
            ClientEvent::Frame(f) => {
                if let Some(c) = control_of(&f) {
                    let v = serde_json::to_value(&c).unwrap();
                    if v["type"] == kind {
                        return c;
                    }
                }
            }
            ClientEvent::Closed(code) => panic!("closed ({code:?}) while waiting for {kind}"),
        }
    }
}

/// The next non-relay frame.
async fn expect_peer_frame(rx: &mut ClientReceiver) -> Frame {
    loop {
        match next(rx).await {
            ClientEvent::Frame(f) if control_of(&f).is_none() => return f,
            ClientEvent::Frame(_) => continue,
            ClientEvent::Closed(code) => panic!("closed ({code:?}) while waiting for a frame"),
        }
    }
}

/// Reads until the close; returns its code.
async fn expect_close(rx: &mut ClientReceiver) -> Option<u16> {
    loop {
        if let ClientEvent::Closed(code) = next(rx).await {
            return code;
        }
    }
}

/// Polls `/metrics` until a line equals `line` (the relay counts asynchronously).
async fn wait_metric(r: &Relayd, line: &str) {
    let url = format!("http://{}/metrics", r.s.server.metrics_addr);
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metric line '{line}' never appeared:\n{text}");
}

/// The relay's identity (the name and instance its tickets must carry).
fn identity(r: &Relayd) -> assist_relay::RelayIdentity {
    r.s.server
        .relay
        .as_ref()
        .expect("a relay")
        .identity()
        .clone()
}

async fn forwarding_works(h: &mut Leg, s: &mut Leg) {
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, &vec![7u8; 70_000]);
    s.0.send(&screen).await.unwrap();
    let got = expect_peer_frame(&mut h.1).await;
    assert_eq!(
        got.bytes, screen.bytes,
        "screen frame arrives byte for byte"
    );
    let input = Frame::new(Channel::Input, 0, b"{\"x\":1}");
    h.0.send(&input).await.unwrap();
    assert_eq!(expect_peer_frame(&mut s.1).await.bytes, input.bytes);
    let chat = Frame::new(Channel::Chat, 0, "hello ✓".as_bytes());
    s.0.send(&chat).await.unwrap();
    assert_eq!(expect_peer_frame(&mut h.1).await.bytes, chat.bytes);
}

#[tokio::test]
async fn wss_pair_forwards_every_channel() {
    let (r, _d) = relayd(|_| {}).await;
    let (mut h, mut s) = r.pair("s1", Mode::FullControl, true, false, false).await;
    forwarding_works(&mut h, &mut s).await;
    // Both legs (TLS 1.3) run on the relay's own record layer after the upgrade.
    wait_metric(&r, "assist_relay_wss_tls_layers_total{layer=\"relay\"} 2").await;
    h.0.close().await;
    assert_eq!(expect_close(&mut s.1).await, Some(4004), "peer left");
    r.s.server.shutdown().await;
}

/// A TLS 1.2 leg stays on rustls' record layer and pairs with a TLS 1.3 leg on the relay's own.
#[tokio::test]
async fn a_tls12_leg_pairs_with_a_tls13_leg() {
    use rustls::pki_types::pem::PemObject;
    let (r, _d) = relayd(|_| {}).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&r.s.server.cert_path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls12 = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let ht = r.ticket("t12", Role::Helper, Mode::FullControl, true);
    let st = r.ticket("t12", Role::Sharer, Mode::FullControl, true);
    let mut h = connect_wss(r.s.server.https_addr, "localhost", tls12, &ht)
        .await
        .unwrap();
    expect_control(&mut h.1, "joined").await;
    let mut s = r.wss(&st).await.unwrap();
    expect_control(&mut s.1, "joined").await;
    expect_control(&mut h.1, "paired").await;
    expect_control(&mut s.1, "paired").await;
    forwarding_works(&mut h, &mut s).await;
    wait_metric(
        &r,
        "assist_relay_wss_tls_layers_total{layer=\"rustls_tls12\"} 1",
    )
    .await;
    wait_metric(&r, "assist_relay_wss_tls_layers_total{layer=\"relay\"} 1").await;
    s.0.close().await;
    assert_eq!(expect_close(&mut h.1).await, Some(4004), "peer left");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn quic_and_cross_transport_pairs_forward() {
    let (r, _d) = relayd(|_| {}).await;
    let (mut h, mut s) = r.pair("q1", Mode::FullControl, true, true, true).await;
    forwarding_works(&mut h, &mut s).await;
    let (mut h2, mut s2) = r.pair("x1", Mode::FullControl, true, true, false).await;
    forwarding_works(&mut h2, &mut s2).await;
    let (mut h3, mut s3) = r.pair("x2", Mode::FullControl, true, false, true).await;
    forwarding_works(&mut h3, &mut s3).await;
    r.s.server.shutdown().await;
}

/// QUIC legs carry screen frames in datagrams larger than Ethernet's: on loopback (which carries
/// 65,535-byte packets) each side's MTU discovery climbs past 1,452 bytes up to the bound both
/// endpoints advertise (`MAX_UDP_PAYLOAD`), with no black hole, in both directions: the sharer's
/// own path and the datagrams the helper receives from the relay.
#[tokio::test]
async fn quic_legs_discover_datagrams_up_to_the_bound() {
    use assist_relay_proto::quic::MAX_UDP_PAYLOAD;
    let (r, _d) = relayd(|_| {}).await;
    let (mut h, mut s) = r.pair("mtu", Mode::FullControl, true, true, true).await;
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, &vec![9u8; 60_000]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (mut sharer_mtu, mut helper_rx_avg) = (0u16, 0u64);
    while tokio::time::Instant::now() < deadline {
        let before = h.0.quic_stats().expect("a QUIC leg").udp_rx;
        for _ in 0..4 {
            s.0.send(&screen).await.unwrap();
            assert_eq!(expect_peer_frame(&mut h.1).await.bytes, screen.bytes);
        }
        let after = h.0.quic_stats().expect("a QUIC leg").udp_rx;
        helper_rx_avg = (after.bytes - before.bytes) / (after.datagrams - before.datagrams).max(1);
        sharer_mtu = s.0.quic_stats().expect("a QUIC leg").path.current_mtu;
        if sharer_mtu > 1452 && helper_rx_avg > 1452 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sharer_mtu > 1452 && sharer_mtu <= MAX_UDP_PAYLOAD,
        "the sharer's path MTU {sharer_mtu} went past 1452 and no further than {MAX_UDP_PAYLOAD}"
    );
    assert!(
        helper_rx_avg > 1452,
        "the relay sends the helper datagrams larger than 1452 bytes (average {helper_rx_avg})"
    );
    for (who, leg) in [("helper", &h.0), ("sharer", &s.0)] {
        let path = leg.quic_stats().expect("a QUIC leg").path;
        assert_eq!(path.black_holes_detected, 0, "{who}: no MTU black hole");
        assert!(
            path.current_mtu <= MAX_UDP_PAYLOAD,
            "{who}: MTU within the bound"
        );
    }
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn bad_expired_and_replayed_tickets_are_refused() {
    let (r, _d) = relayd(|_| {}).await;
    // A ticket signed by another broker.
    let other = tempfile::tempdir().unwrap();
    let stranger =
        assist_relay::TicketAuthority::load_or_create(other.path(), Duration::from_secs(60))
            .unwrap();
    let forged = stranger.mint(
        "t1",
        Role::Helper,
        Mode::FullControl,
        true,
        r.s.server.relay.as_ref().expect("a relay").identity(),
    );
    match r.wss(&forged).await {
        Err(ClientError::Rejected { status, body }) => {
            assert_eq!(status, 401);
            assert!(
                body.contains("InvalidAuthenticationToken") || body.contains("invalid"),
                "{body}"
            );
        }
        other => panic!("forged ticket: {:?}", other.err()),
    }
    // Expired.
    let mut claims =
        r.s.server
            .tickets
            .verify(
                &r.ticket("t1", Role::Helper, Mode::ViewOnly, true),
                r.s.server.relay.as_ref().expect("a relay").identity(),
            )
            .unwrap();
    claims.exp = claims.iat - 120;
    let expired = r.s.server.tickets.sign(&claims);
    assert!(matches!(
        r.wss(&expired).await,
        Err(ClientError::Rejected { status: 401, .. })
    ));
    // Replay: the same ticket twice, and a second helper for one session.
    let t = r.ticket("t1", Role::Helper, Mode::ViewOnly, true);
    let mut first = r.wss(&t).await.unwrap();
    expect_control(&mut first.1, "joined").await;
    assert!(matches!(
        r.wss(&t).await,
        Err(ClientError::Rejected { status: 409, .. })
    ));
    let t2 = r.ticket("t1", Role::Helper, Mode::ViewOnly, true);
    assert!(matches!(
        r.wss(&t2).await,
        Err(ClientError::Rejected { status: 409, .. })
    ));
    // Over QUIC a refused ticket closes the connection with the documented code.
    let (_tx, mut rx) = r.quic(&forged).await.unwrap();
    assert_eq!(expect_close(&mut rx).await, Some(4001));
    let (_tx, mut rx) = r.quic(&t).await.unwrap();
    assert_eq!(expect_close(&mut rx).await, Some(4002));
    // Not a WebSocket upgrade at all.
    let (status, body) = send(r.s.client.get(r.s.url("/v1/relay"))).await;
    assert_eq!(status, 400, "{body}");
    r.s.server.shutdown().await;
}

/// A ticket names the relay it is for: the relay's public address when configured, else its
/// HTTPS listen address as advertised (`localhost:PORT` on loopback), and this run's instance.
#[tokio::test]
async fn a_ticket_must_name_this_relay() {
    let (r, _d) = relayd(|_| {}).await;
    let me = identity(&r);
    assert_eq!(
        me.name,
        format!("localhost:{}", r.s.server.https_addr.port()),
        "no public address: the advertised listen address"
    );
    let mint = |relay: &assist_relay::RelayIdentity| {
        r.s.server
            .tickets
            .mint("n1", Role::Helper, Mode::ViewOnly, true, relay)
    };
    for other in [
        assist_relay::RelayIdentity {
            name: "relay.elsewhere:443".into(),
            instance: me.instance.clone(),
        },
        assist_relay::RelayIdentity {
            name: format!("127.0.0.1:{}", r.s.server.https_addr.port()),
            instance: me.instance.clone(),
        },
        assist_relay::RelayIdentity::new(me.name.clone()),
    ] {
        match r.wss(&mint(&other)).await {
            Err(ClientError::Rejected { status, .. }) => assert_eq!(status, 401, "{other:?}"),
            x => panic!("{other:?}: {:?}", x.err()),
        }
        let (_tx, mut rx) = r.quic(&mint(&other)).await.unwrap();
        assert_eq!(expect_close(&mut rx).await, Some(4001), "{other:?}");
    }
    let (_tx, mut rx) = r.wss(&mint(&me)).await.unwrap();
    expect_control(&mut rx, "joined").await;
    r.s.server.shutdown().await;

    // With a public address configured, that is the name, and the listen address is refused.
    let (r, _d) = relayd(|s| s.relay.public_addr = Some("relay.example.com:443".into())).await;
    let me = identity(&r);
    assert_eq!(me.name, "relay.example.com:443");
    let listen = assist_relay::RelayIdentity {
        name: format!("localhost:{}", r.s.server.https_addr.port()),
        instance: me.instance.clone(),
    };
    let t =
        r.s.server
            .tickets
            .mint("n2", Role::Helper, Mode::ViewOnly, true, &listen);
    assert!(matches!(
        r.wss(&t).await,
        Err(ClientError::Rejected { status: 401, .. })
    ));
    let t =
        r.s.server
            .tickets
            .mint("n2", Role::Helper, Mode::ViewOnly, true, &me);
    let (_tx, mut rx) = r.wss(&t).await.unwrap();
    expect_control(&mut rx, "joined").await;
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn a_lonely_leg_times_out_and_its_ticket_cannot_come_back() {
    let (r, _d) = relayd(|s| s.relay.pair_timeout = Duration::from_millis(500)).await;
    let t = r.ticket("lonely", Role::Helper, Mode::ViewOnly, true);
    let (_tx, mut rx) = r.wss(&t).await.unwrap();
    expect_control(&mut rx, "joined").await;
    let ended = expect_control(&mut rx, "ended").await;
    assert_eq!(
        ended,
        RelayControl::Ended {
            reason: "peerTimeout".into()
        }
    );
    assert_eq!(expect_close(&mut rx).await, Some(4003));
    // The session is over: a fresh sharer ticket for it is refused.
    let late = r.ticket("lonely", Role::Sharer, Mode::ViewOnly, true);
    assert!(matches!(
        r.wss(&late).await,
        Err(ClientError::Rejected { status: 409, .. })
    ));
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn view_only_drops_helper_input_and_blocked_chat_drops_chat() {
    let (r, _d) = relayd(|_| {}).await;
    let (mut h, mut s) = r.pair("v1", Mode::ViewOnly, false, false, false).await;
    h.0.send(&Frame::new(Channel::Input, 0, b"click"))
        .await
        .unwrap();
    h.0.send(&Frame::new(Channel::Control, 0, b"{\"elevate\":true}"))
        .await
        .unwrap();
    h.0.send(&Frame::new(Channel::Chat, 0, b"hi"))
        .await
        .unwrap();
    s.0.send(&Frame::new(Channel::Chat, 0, b"hi back"))
        .await
        .unwrap();
    // The screen still flows; the first thing each side sees of the other proves the drops.
    s.0.send(&Frame::new(Channel::Screen, FLAG_KEYFRAME, b"pixels"))
        .await
        .unwrap();
    let f = expect_peer_frame(&mut h.1).await;
    assert_eq!(f.header.channel, Channel::Screen);
    h.0.send(&Frame::new(Channel::Screen, 0, b"wrong way"))
        .await
        .unwrap();
    wait_metric(&r, r#"assist_relay_frames_dropped_total{reason="mode"} 2"#).await;
    wait_metric(
        &r,
        r#"assist_relay_frames_dropped_total{reason="chatBlocked"} 2"#,
    )
    .await;
    wait_metric(
        &r,
        r#"assist_relay_frames_dropped_total{reason="direction"} 1"#,
    )
    .await;
    // Nothing of the helper's reached the sharer: it sees only relay control, then the end.
    r.s.server
        .relay
        .as_ref()
        .expect("a relay")
        .end_session("v1", "done");
    loop {
        match next(&mut s.1).await {
            ClientEvent::Frame(f) => assert!(
                control_of(&f).is_some(),
                "the sharer received a helper frame: {:?}",
                f.header
            ),
            ClientEvent::Closed(code) => {
                assert_eq!(code, Some(4000));
                break;
            }
        }
    }
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn a_mode_upgrade_applies_mid_stream() {
    let (r, _d) = relayd(|_| {}).await;
    let (mut h, mut s) = r.pair("m1", Mode::ViewOnly, true, false, true).await;
    h.0.send(&Frame::new(Channel::Input, 0, b"dropped"))
        .await
        .unwrap();
    // Chat on the same ordered stream proves the relay has handled the input before the upgrade.
    h.0.send(&Frame::new(Channel::Chat, 0, b"sync"))
        .await
        .unwrap();
    assert_eq!(
        expect_peer_frame(&mut s.1).await.header.channel,
        Channel::Chat
    );
    assert!(r
        .s
        .server
        .relay
        .as_ref()
        .expect("a relay")
        .set_mode("m1", Mode::FullControl, true));
    let c = expect_control(&mut h.1, "modeChanged").await;
    assert_eq!(
        c,
        RelayControl::ModeChanged {
            mode: "fullControl".into(),
            chat: true
        }
    );
    expect_control(&mut s.1, "modeChanged").await;
    h.0.send(&Frame::new(Channel::Input, 0, b"delivered"))
        .await
        .unwrap();
    let f = expect_peer_frame(&mut s.1).await;
    assert_eq!(
        &f.payload()[..],
        b"delivered",
        "the input sent before the upgrade was dropped"
    );
    // And back down: input is dropped again.
    assert!(r
        .s
        .server
        .relay
        .as_ref()
        .expect("a relay")
        .set_mode("m1", Mode::ViewOnly, false));
    expect_control(&mut h.1, "modeChanged").await;
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn the_broker_ends_a_session() {
    let (r, _d) = relayd(|_| {}).await;
    let (mut h, mut s) = r.pair("e1", Mode::FullControl, true, true, false).await;
    assert!(r
        .s
        .server
        .relay
        .as_ref()
        .expect("a relay")
        .end_session("e1", "helper ended the session"));
    let c = expect_control(&mut s.1, "ended").await;
    assert_eq!(
        c,
        RelayControl::Ended {
            reason: "helper ended the session".into()
        }
    );
    assert_eq!(expect_close(&mut s.1).await, Some(4000));
    // The helper is on QUIC: its `ended` arrives before the connection closes.
    assert_eq!(
        expect_control(&mut h.1, "ended").await,
        RelayControl::Ended {
            reason: "helper ended the session".into()
        }
    );
    assert_eq!(expect_close(&mut h.1).await, Some(4000));
    assert!(!r
        .s
        .server
        .relay
        .as_ref()
        .expect("a relay")
        .end_session("e1", "again"));
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_frames_close_with_documented_codes() {
    let (r, _d) = relayd(|s| s.relay.max_frame_bytes = 64 * 1024).await;
    let (mut h, mut s) = r.pair("big", Mode::FullControl, true, false, false).await;
    s.0.send(&Frame::new(Channel::Screen, 0, &vec![1u8; 100 * 1024]))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut s.1).await, Some(4005));
    assert_eq!(expect_close(&mut h.1).await, Some(4004));

    let (mut h, mut s) = r.pair("text", Mode::FullControl, true, false, false).await;
    h.0.send_text("hello").await.unwrap();
    assert_eq!(expect_close(&mut h.1).await, Some(4006));
    assert_eq!(expect_close(&mut s.1).await, Some(4004));
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn a_slow_helper_loses_stale_screen_frames_but_no_input() {
    let (r, _d) = relayd(|s| {
        s.relay.queue.max_frames = 8;
        s.relay.queue.max_bytes = 512 * 1024;
    })
    .await;
    let (h, mut s) = r.pair("slow", Mode::FullControl, true, false, false).await;
    let (mut h_tx, mut h_rx) = h;
    // The helper stops reading; the sharer floods 64 KiB screen frames while the helper sends
    // numbered inputs.
    let flood = tokio::spawn(async move {
        let frame = Frame::new(Channel::Screen, 0, &vec![9u8; 64 * 1024]);
        for _ in 0..600 {
            if s.0.send(&frame).await.is_err() {
                break;
            }
        }
        s
    });
    for i in 0..50u32 {
        h_tx.send(&Frame::new(Channel::Input, 0, &i.to_be_bytes()))
            .await
            .unwrap();
    }
    let mut s = flood.await.unwrap();
    // The sharer gets every input, in order, and at least one keyframe request.
    let mut inputs = Vec::new();
    let mut keyframe_requests = 0;
    while inputs.len() < 50 {
        match next(&mut s.1).await {
            ClientEvent::Frame(f) => match control_of(&f) {
                Some(RelayControl::KeyframeRequest { .. }) => keyframe_requests += 1,
                Some(_) => {}
                None => {
                    assert_eq!(f.header.channel, Channel::Input);
                    inputs.push(u32::from_be_bytes(f.payload()[..4].try_into().unwrap()));
                }
            },
            ClientEvent::Closed(c) => panic!("sharer closed: {c:?}"),
        }
    }
    assert_eq!(inputs, (0..50).collect::<Vec<_>>());
    if keyframe_requests == 0 {
        // The inputs may all have passed before the congestion began; the request follows.
        expect_control(&mut s.1, "keyframeRequest").await;
    }
    // Now the helper reads: it gets fewer screen frames than were sent.
    let text = metrics_text(&r.s).await;
    let dropped = metric_value(
        &text,
        r#"assist_relay_frames_dropped_total{reason="congestion"}"#,
    ) as u64;
    assert!(
        dropped > 0,
        "screen frames were dropped under congestion: {text}"
    );
    let mut screens = 0u64;
    r.s.server
        .relay
        .as_ref()
        .expect("a relay")
        .end_session("slow", "done");
    loop {
        match next(&mut h_rx).await {
            ClientEvent::Frame(f) if f.header.channel == Channel::Screen => screens += 1,
            ClientEvent::Frame(_) => {}
            ClientEvent::Closed(_) => break,
        }
    }
    assert!(
        screens + dropped <= 600 && screens < 600,
        "screens {screens}, dropped {dropped}"
    );
    r.s.server.shutdown().await;
}

/// A QUIC helper that never reads its screen streams: small receive windows, no `accept_uni`.
/// The relay must treat its full path like a full WSS socket: drop stale screen frames, ask the
/// sharer for a keyframe, keep every input, and hold a bounded amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_quic_helper_loses_stale_screen_frames_but_no_input() {
    let (r, _d) = relayd(|s| {
        s.relay.queue.max_frames = 8;
        s.relay.queue.max_bytes = 512 * 1024;
    })
    .await;
    let mut tls = client_tls(&r.s.server.cert_path);
    tls.alpn_protocols = vec![assist_relay_proto::quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = assist_relay::quic::transport_config();
    transport.receive_window(quinn::VarInt::from_u32(256 * 1024));
    transport.stream_receive_window(quinn::VarInt::from_u32(128 * 1024));
    cfg.transport_config(Arc::new(transport));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    let conn = ep
        .connect(r.s.server.quic_addr.expect("a QUIC socket"), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut h_send, mut h_recv) = conn.open_bi().await.unwrap();
    let ht = r.ticket("slowq", Role::Helper, Mode::FullControl, true);
    h_send
        .write_chunk(assist_relay_proto::quic::encode_ticket_prelude(&ht))
        .await
        .unwrap();
    // Read the helper's control stream until `paired` (joined, then paired once the sharer is in).
    let st = r.ticket("slowq", Role::Sharer, Mode::FullControl, true);
    let mut s = r.wss(&st).await.unwrap();
    expect_control(&mut s.1, "paired").await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"paired\"") {
        let c = tokio::time::timeout(Duration::from_secs(10), h_recv.read_chunk(4096, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&c.bytes);
    }
    let flood = tokio::spawn(async move {
        let frame = Frame::new(Channel::Screen, 0, &vec![9u8; 64 * 1024]);
        for _ in 0..600 {
            if s.0.send(&frame).await.is_err() {
                break;
            }
        }
        s
    });
    for i in 0..50u32 {
        h_send
            .write_chunk(Frame::new(Channel::Input, 0, &i.to_be_bytes()).bytes)
            .await
            .unwrap();
    }
    let mut s = flood.await.unwrap();
    let mut inputs = Vec::new();
    let mut keyframe_requests = 0;
    while inputs.len() < 50 {
        match next(&mut s.1).await {
            ClientEvent::Frame(f) => match control_of(&f) {
                Some(RelayControl::KeyframeRequest { .. }) => keyframe_requests += 1,
                Some(_) => {}
                None => {
                    assert_eq!(f.header.channel, Channel::Input);
                    inputs.push(u32::from_be_bytes(f.payload()[..4].try_into().unwrap()));
                }
            },
            ClientEvent::Closed(c) => panic!("sharer closed: {c:?}"),
        }
    }
    assert_eq!(inputs, (0..50).collect::<Vec<_>>());
    if keyframe_requests == 0 {
        expect_control(&mut s.1, "keyframeRequest").await;
    }
    let text = metrics_text(&r.s).await;
    let metric = |name: &str| metric_value(&text, name);
    let dropped = metric(r#"assist_relay_frames_dropped_total{reason="congestion"}"#);
    let forwarded =
        metric(r#"assist_relay_frames_total{channel="screen",direction="sharerToHelper"}"#);
    assert!(
        dropped > 0.0,
        "stale screen frames dropped on the full QUIC path: {text}"
    );
    // Bounded: what the helper's windows took plus the in-flight permits and the queue, not 600.
    assert!(
        forwarded < 100.0,
        "{forwarded} screen frames handed to the QUIC leg"
    );
    conn.close(0u32.into(), b"");
    r.s.server.shutdown().await;
}

/// The client library (the CLI's and the agent's) answers the relay's pings by itself, on a
/// leg that only receives as well as on one that sends: both legs' round trips are measured.
#[tokio::test]
async fn the_client_library_answers_pings_on_both_legs() {
    let (r, _d) = relayd(|s| s.relay.ping_interval = Duration::from_millis(100)).await;
    let ht = r.ticket("rtt-client", Role::Helper, Mode::FullControl, true);
    let st = r.ticket("rtt-client", Role::Sharer, Mode::FullControl, true);
    let (mut h_tx, mut h_rx) = r.wss(&ht).await.unwrap();
    let (_s_tx, mut s_rx) = r.wss(&st).await.unwrap();
    // The helper sends input now and then while the sharer only receives.
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    let mut input = 0u32;
    while tokio::time::Instant::now() < until {
        input += 1;
        let frame = Frame::new(Channel::Input, 0, &input.to_be_bytes());
        h_tx.send(&frame).await.unwrap();
        for rx in [&mut h_rx, &mut s_rx] {
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
        }
    }
    let text = metrics_text(&r.s).await;
    let samples = metric_value(
        &text,
        r#"assist_relay_leg_rtt_seconds_count{transport="wss"}"#,
    );
    // Two legs, pinged every 100 ms for 2.5 s, sampled by the once-a-second watchdog: at least
    // one sample per leg.
    assert!(
        samples >= 2.0,
        "round trips measured from both legs: {text}"
    );
    r.s.server.shutdown().await;
}

/// The relay pings WSS legs every `ping_interval`; a leg that answers gives round-trip samples
/// (the session record's `relayHelperRttMs` / `relaySharerRttMs`, and the RTT histogram).
#[tokio::test]
async fn wss_pings_measure_round_trips() {
    use assist_ws::{encode_client_frame, ClientDecoder, Opcode, WsEvent};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (r, _d) = relayd(|s| s.relay.ping_interval = Duration::from_millis(100)).await;
    let ht = r.ticket("rtt", Role::Helper, Mode::FullControl, true);
    let st = r.ticket("rtt", Role::Sharer, Mode::FullControl, true);
    let (mut io, mut buf) = assist_client::wss::websocket_handshake(
        r.s.server.https_addr,
        "localhost",
        r.tls.clone(),
        "/v1/relay",
        Some(&ht),
    )
    .await
    .unwrap();
    let _sharer = r.wss(&st).await.unwrap();
    // Answer every ping for a while (the watchdog ticks once a second).
    let mut decoder = ClientDecoder::new(1 << 20);
    let mut pongs = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        while let Some(ev) = decoder.decode(&mut buf).unwrap() {
            if let WsEvent::Ping(p) = ev {
                let mut out = bytes::BytesMut::new();
                encode_client_frame(Opcode::Pong, &p, [1, 2, 3, 4], &mut out);
                io.write_all(&out).await.unwrap();
                io.flush().await.unwrap();
                pongs += 1;
            }
        }
        buf.reserve(4096);
        let _ = tokio::time::timeout(Duration::from_millis(100), io.read_buf(&mut buf)).await;
    }
    assert!(pongs > 0, "the relay pinged the helper");
    let text = metrics_text(&r.s).await;
    let samples = metric_value(
        &text,
        r#"assist_relay_leg_rtt_seconds_count{transport="wss"}"#,
    );
    assert!(samples > 0.0, "round trips measured from pongs: {text}");
    r.s.server.shutdown().await;
}
