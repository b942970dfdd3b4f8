//! `--role` at the library level (`assistd::start` with `Settings::role` set; the command line
//! refuses roles other than `all` outside cluster mode): a relay-only node serves whole relay
//! sessions with tickets minted from the same `[keys]` file and opens no database; a
//! broker-only node binds no UDP socket, answers 404 on `/v1/relay`, and issues no tickets for a
//! relay it does not have. Real sockets on loopback, real TLS.

mod common;

use assist_client::relay::{connect_quic, connect_wss, quic_endpoint};
use assist_policy::Mode;
use assist_relay::{RelayIdentity, Role, TicketAuthority};
use assist_relay_proto::frame::{Channel, Frame, FLAG_KEYFRAME};
use assistd::config::Role as NodeRole;
use assistd::Settings;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_node_relays_with_the_shared_key_and_has_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    // The cluster's ticket key, made once and given to the node as a file.
    let shared = TicketAuthority::load_or_create(keys.path(), Duration::from_secs(60)).unwrap();
    let key_file = keys.path().join(assist_relay::ticket::KEY_FILE);
    let mut settings = Settings::ephemeral(dir.path());
    settings.role = NodeRole::Relay;
    // It stops with the session open: drain for a second, not the default 10.
    settings.shutdown_grace = Duration::from_secs(1);
    settings.keys.relay_ticket = Some(key_file.clone());
    let server = assistd::start(settings).await.expect("a relay node starts");
    assert!(server.relay.is_some());
    assert_eq!(server.tickets.key_id(), shared.key_id());
    assert!(
        server.keys_fingerprint.is_none(),
        "a relay loads no code key"
    );

    // Tickets minted elsewhere with the same key file join, over WSS and QUIC.
    let minter = TicketAuthority::load(&key_file, Duration::from_secs(60)).unwrap();
    let me = RelayIdentity::read_published(dir.path()).unwrap();
    let tls = assist_client::tls::client_config(&server.cert_path).unwrap();
    let ht = minter.mint("r1", Role::Helper, Mode::FullControl, true, &me);
    let st = minter.mint("r1", Role::Sharer, Mode::FullControl, true, &me);
    let (_htx, mut hrx) = connect_wss(server.https_addr, "localhost", tls.clone(), &ht)
        .await
        .unwrap();
    let quic = quic_endpoint((*tls).clone()).unwrap();
    let (mut stx, _srx) = connect_quic(
        &quic,
        server.quic_addr.expect("a QUIC socket"),
        "localhost",
        &st,
    )
    .await
    .unwrap();
    let screen = Frame::new(Channel::Screen, FLAG_KEYFRAME, &[9u8; 5000]);
    stx.send(&screen).await.unwrap();
    assert_eq!(next_screen(&mut hrx).await.bytes, screen.bytes);

    // Nothing but the relay: Graph-shaped 404s for the admin API, signalling, pages.
    let client = client_trusting(&server.cert_path);
    let base = format!("https://127.0.0.1:{}", server.https_addr.port());
    for path in [SETTINGS, "/v1/signal", "/", "/beta/users"] {
        let (status, body) = send(client.get(format!("{base}{path}"))).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_graph_error(&body, "ResourceNotFound");
    }
    let ops = format!("http://{}", server.metrics_addr);
    let ready = reqwest::get(format!("{ops}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let text = reqwest::get(format!("{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("assist_relay_sessions_active 1"), "{text}");
    assert!(!text.contains("assist_signal_"), "no signalling here");
    // No database, no signalling or dev issuer keys in the data directory; no ticket key
    // either (it came from [keys]).
    for file in [
        assistd::server::DATABASE_FILE,
        assistd::signal::CODE_KEY_FILE,
        assist_identity::dev_issuer::KEY_FILE,
        assist_relay::ticket::KEY_FILE,
    ] {
        assert!(!dir.path().join(file).exists(), "{file} in the data dir");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_binds_no_udp_and_has_no_relay() {
    let dir = tempfile::tempdir().unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let quic_listen = udp.local_addr().unwrap();
    drop(udp);
    let mut settings = Settings::ephemeral(dir.path());
    settings.role = NodeRole::Broker;
    settings.quic_listen = quic_listen;
    let s = TestServer::start_with(settings).await;
    assert!(s.server.relay.is_none());
    assert!(s.server.quic_addr.is_none());
    assert!(s.server.keys_fingerprint.is_some());
    // The QUIC address is still free: nothing bound it.
    let again = std::net::UdpSocket::bind(quic_listen).expect("the UDP port is free");
    drop(again);
    // /v1/relay answers a Graph-shaped 404 saying there is no relay here.
    let resp = s.client.get(s.url("/v1/relay")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.headers()
            .get("x-assist-relay-error")
            .and_then(|v| v.to_str().ok()),
        Some("RelayDisabled")
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_graph_error(&body, "ResourceNotFound");
    // The admin API is served.
    let (status, _) = s.get(SETTINGS, Some(&s.token("contoso", &[READ]))).await;
    assert_eq!(status, 200);
    // A granted session gets no tickets for a local relay: it ends relayUnavailable (cluster
    // mode places it on a relay node).
    help_desk_tenant(&s).await;
    let (mut h, _sh, _sid) = granted_session(&s).await;
    let ended = expect_signal(&mut h, "sessionEnded").await;
    assert_eq!(ended["reason"], "relayUnavailable", "{ended}");
    let text = metrics_text(&s).await;
    assert!(
        !text.contains("assist_relay_sessions_active"),
        "no relay here"
    );
    s.server.shutdown().await;
}
