use super::*;
use proptest::prelude::*;
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn keys(seq: u64) -> Keys {
    let secrets = ConnectionTrafficSecrets::Aes256Gcm {
        key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
        iv: rustls::crypto::cipher::Iv::new([9u8; 12]),
    };
    Keys::new(secrets, seq).expect("keys")
}

/// Seals `inner` (content, type, padding as the caller wrote them) the way a peer would.
fn sealed(k: &mut Keys, inner: &[u8]) -> Vec<u8> {
    let (last, body) = inner.split_last().expect("inner plaintext");
    let mut out = vec![0u8; inner.len() + OVERHEAD];
    out[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    let n = seal_record(k, *last, &mut out, body.len()).expect("seal");
    out.truncate(n);
    out
}

#[test]
fn a_sealed_record_opens_to_its_content() {
    let (mut tx, mut rx) = (keys(5), keys(5));
    for content in [&b"x"[..], &[0u8; 100][..], &vec![3u8; MAX_FRAGMENT][..]] {
        let mut inner = content.to_vec();
        inner.push(CONTENT_APPLICATION_DATA);
        let mut rec = sealed(&mut tx, &inner);
        assert_eq!(record_len(&rec), Ok(Some(rec.len())));
        let Opened::Data(range) = open_record(&mut rx, &mut rec).expect("open") else {
            panic!("not data");
        };
        assert_eq!(&rec[range], content);
    }
    assert_eq!((tx.seq(), rx.seq()), (8, 8));
}

#[test]
fn padding_is_stripped_and_all_padding_is_refused() {
    let (mut tx, mut rx) = (keys(0), keys(0));
    let mut rec = sealed(&mut tx, &[b'h', b'i', CONTENT_APPLICATION_DATA, 0, 0, 0]);
    let Opened::Data(range) = open_record(&mut rx, &mut rec).expect("open") else {
        panic!("not data");
    };
    assert_eq!(&rec[range], b"hi");
    let mut rec = sealed(&mut tx, &[0, 0, 0, 0]);
    assert_eq!(
        open_record(&mut rx, &mut rec),
        Err(RecordError::UnexpectedContent)
    );
}

#[test]
fn a_tampered_record_a_replayed_one_and_a_wrong_header_are_refused() {
    let (mut tx, mut rx) = (keys(0), keys(0));
    let good = sealed(&mut tx, &[1, 2, 3, CONTENT_APPLICATION_DATA]);
    let mut bad = good.clone();
    bad[HEADER_LEN + 1] ^= 1;
    assert_eq!(open_record(&mut rx, &mut bad), Err(RecordError::BadRecord));
    // The failed record used up sequence number 0: the good one (sealed with 0) no longer opens.
    let mut again = good.clone();
    assert_eq!(
        open_record(&mut rx, &mut again),
        Err(RecordError::BadRecord)
    );
    let mut head = good.clone();
    head[0] = CONTENT_HANDSHAKE;
    assert_eq!(record_len(&head), Err(RecordError::BadHeader));
    assert_eq!(record_len(&[23, 3, 1, 0, 40]), Err(RecordError::BadHeader));
    assert_eq!(record_len(&[23, 3, 3, 0, 16]), Err(RecordError::BadHeader));
    assert_eq!(
        record_len(&[23, 3, 3, 0x41, 1]),
        Err(RecordError::BadHeader)
    );
    assert_eq!(
        record_len(&[23, 3, 3, 0x41, 0]),
        Ok(Some(HEADER_LEN + MAX_CIPHERTEXT))
    );
    assert_eq!(record_len(&[23, 3, 3]), Ok(None));
}

#[test]
fn alerts_and_handshake_messages() {
    let (mut tx, mut rx) = (keys(0), keys(0));
    let mut rec = sealed(&mut tx, &[1, 0, CONTENT_ALERT]);
    assert_eq!(open_record(&mut rx, &mut rec), Ok(Opened::CloseNotify));
    let mut rec = sealed(&mut tx, &[2, 40, CONTENT_ALERT]);
    assert_eq!(open_record(&mut rx, &mut rec), Err(RecordError::Alert(40)));
    // KeyUpdate (type 24, length 1, update_requested).
    let mut rec = sealed(&mut tx, &[24, 0, 0, 1, 1, CONTENT_HANDSHAKE]);
    assert_eq!(
        open_record(&mut rx, &mut rec),
        Err(RecordError::HandshakeMessage)
    );
    let mut rec = sealed(&mut tx, &[1, 20]);
    assert_eq!(
        open_record(&mut rx, &mut rec),
        Err(RecordError::UnexpectedContent)
    );
}

#[test]
fn sealing_stops_at_the_confidentiality_limit() {
    let mut k = keys((1 << 24) - 1);
    let mut out = [0u8; 1 + OVERHEAD];
    assert!(seal_record(&mut k, CONTENT_APPLICATION_DATA, &mut out, 1).is_ok());
    assert_eq!(
        seal_record(&mut k, CONTENT_APPLICATION_DATA, &mut out, 1),
        Err(RecordError::KeyLimit)
    );
}

proptest! {
    /// However a stream of records is cut into reads, the tracker is at a boundary exactly after
    /// whole records.
    #[test]
    fn the_tracker_knows_record_boundaries(
        lens in proptest::collection::vec(0usize..3000, 1..8),
        cuts in proptest::collection::vec(1usize..700, 1..40),
    ) {
        let mut wire = Vec::new();
        let mut ends = std::collections::BTreeSet::new();
        for len in &lens {
            wire.extend_from_slice(&[23, 3, 3]);
            wire.extend_from_slice(&u16::try_from(*len).unwrap().to_be_bytes());
            wire.extend(std::iter::repeat_n(0xaa, *len));
            ends.insert(wire.len());
        }
        let mut t = Tracked::new(());
        let (mut pos, mut i) = (0, 0);
        while pos < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - pos);
            t.scan(&wire[pos..pos + n]);
            pos += n;
            i += 1;
            prop_assert_eq!(t.at_record_boundary(), ends.contains(&pos), "at {}", pos);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever bytes a peer sends after the handshake (whole sealed records, garbage, records cut
    /// anywhere), reading ends in data, an error or the end of the stream, never a panic, and every
    /// byte handed on is a byte some sealed record carried.
    #[test]
    fn any_bytes_from_the_peer_read_without_panic(
        pieces in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(|c| (true, c)),
                proptest::collection::vec(any::<u8>(), 0..300).prop_map(|g| (false, g)),
            ],
            0..12,
        ),
        cut in 1usize..5000,
    ) {
        let mut tx = keys(0);
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (sealed_piece, bytes) in &pieces {
            if *sealed_piece {
                let mut inner = bytes.clone();
                inner.push(CONTENT_APPLICATION_DATA);
                wire.extend(sealed(&mut tx, &inner));
                sent.extend_from_slice(bytes);
            } else {
                wire.extend_from_slice(bytes);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let got = rt.block_on(async {
            let (s, mut c) = tokio::io::duplex(1 << 16);
            let mut rs = RecordStream::new(s, keys(0), keys(0));
            let feed = async move {
                for chunk in wire.chunks(cut) {
                    if c.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            };
            let read = async {
                let mut out = Vec::new();
                let _ = rs.read_to_end(&mut out).await;
                out
            };
            tokio::join!(feed, read).1
        });
        prop_assert!(sent.starts_with(&got), "read bytes no record carried");
    }
}

fn configs(
    suite: rustls::SupportedCipherSuite,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["relay.test".to_owned()]).expect("cert");
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut p = provider::default_provider();
    p.cipher_suites = vec![suite];
    let p = Arc::new(p);
    let mut server = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    server.enable_secret_extraction = true;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

type Client = tokio_rustls::client::TlsStream<DuplexStream>;

async fn pair(suite: rustls::SupportedCipherSuite) -> (RecordStream<DuplexStream>, Client) {
    let (server_cfg, client_cfg) = configs(suite);
    let (s, c) = tokio::io::duplex(256 * 1024);
    let accept = tokio_rustls::TlsAcceptor::from(server_cfg).accept(Tracked::new(s));
    let connect = tokio_rustls::TlsConnector::from(client_cfg)
        .connect(ServerName::try_from("relay.test").expect("name"), c);
    let (server, client) = tokio::join!(accept, connect);
    let (mut server, mut client) = (server.expect("accept"), client.expect("connect"));
    // A request and its answer through rustls first, as the HTTP upgrade goes.
    client.write_all(b"GET /v1/relay").await.expect("request");
    let mut req = [0u8; 13];
    server.read_exact(&mut req).await.expect("read request");
    server.write_all(b"101").await.expect("answer");
    server.flush().await.expect("flush");
    let mut ans = [0u8; 3];
    client.read_exact(&mut ans).await.expect("read answer");
    match take_over(server).expect("take over") {
        TakeOver::Records(rs) => (rs, client),
        TakeOver::Kept(_, why) => panic!("kept: {why:?}"),
    }
}

fn suites() -> [rustls::SupportedCipherSuite; 3] {
    [
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
        provider::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ]
}

#[tokio::test]
async fn a_rustls_peer_and_the_record_layer_exchange_data_both_ways_and_close_cleanly() {
    for suite in suites() {
        let (mut server, mut client) = pair(suite).await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let up = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in up.chunks(3001) {
                client.write_all(chunk).await.expect("client write");
            }
            client.flush().await.expect("client flush");
            client
        });
        let mut got = vec![0u8; data.len()];
        server.read_exact(&mut got).await.expect("server read");
        assert!(got == data, "{suite:?}: upstream bytes differ");
        let mut client = writer.await.expect("writer");
        // Down: vectored writes of header + body pieces.
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 200_000];
            client.read_exact(&mut got).await.expect("client read");
            (client, got)
        });
        for chunk in data.chunks(40_000) {
            let (a, b) = chunk.split_at(10);
            let mut parts = [IoSlice::new(a), IoSlice::new(b)];
            let mut parts = &mut parts[..];
            while !parts.is_empty() {
                let n = server.write_vectored(parts).await.expect("server write");
                IoSlice::advance_slices(&mut parts, n);
            }
        }
        server.flush().await.expect("server flush");
        let (mut client, down) = reader.await.expect("reader");
        assert!(down == data, "{suite:?}: downstream bytes differ");
        // The client's close_notify ends the server's reads; the server's ends the client's.
        client.shutdown().await.expect("client shutdown");
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.expect("server eof"), 0);
        server.shutdown().await.expect("server shutdown");
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.expect("client eof"), 0);
        assert_eq!(server.buffered(), 0, "{suite:?}");
    }
}

#[tokio::test]
async fn a_key_update_from_the_peer_ends_the_leg_with_a_clear_error() {
    let (mut server, mut client) = pair(provider::cipher_suite::TLS13_AES_128_GCM_SHA256).await;
    client
        .get_mut()
        .1
        .refresh_traffic_keys()
        .expect("key update");
    client.write_all(b"after").await.expect("write");
    client.flush().await.expect("flush");
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("KeyUpdate"), "{err}");
}

#[tokio::test]
async fn take_over_keeps_a_connection_whose_record_is_half_read() {
    let (server_cfg, client_cfg) = configs(provider::cipher_suite::TLS13_AES_128_GCM_SHA256);
    let (s, c) = tokio::io::duplex(256 * 1024);
    let accept = tokio_rustls::TlsAcceptor::from(server_cfg).accept(Tracked::new(s));
    let connect = tokio_rustls::TlsConnector::from(client_cfg)
        .connect(ServerName::try_from("relay.test").expect("name"), c);
    let (server, client) = tokio::join!(accept, connect);
    let (mut server, client) = (server.expect("accept"), client.expect("connect"));
    // The client's record (a whole request, then half of the next record) reaches the socket raw.
    let (mut raw, mut conn) = client.into_inner();
    std::io::Write::write_all(&mut conn.writer(), b"GET /v1/relay").expect("plaintext");
    let mut first = Vec::new();
    conn.write_tls(&mut first).expect("tls");
    std::io::Write::write_all(&mut conn.writer(), &[5u8; 100]).expect("plaintext");
    let mut second = Vec::new();
    conn.write_tls(&mut second).expect("tls");
    raw.write_all(&first).await.expect("raw");
    raw.write_all(&second[..40]).await.expect("raw");
    let mut req = [0u8; 13];
    server.read_exact(&mut req).await.expect("request");
    // rustls has read the first 40 bytes of the second record: handing over now would lose them.
    tokio::task::yield_now().await;
    let mut probe = [0u8; 1];
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        server.read(&mut probe),
    )
    .await;
    match take_over(server).expect("no error") {
        TakeOver::Kept(_, Kept::Buffered) => {}
        TakeOver::Kept(_, why) => panic!("kept for {why:?}"),
        TakeOver::Records(_) => panic!("taken over with a partial record in rustls"),
    }
}
