//! The self-probe behind `/healthz` and `/readyz`: a request to the server's own HTTPS listener.
//!
//! The metrics listener is a different socket and task from the HTTPS one, so "the metrics
//! listener answers" says nothing about whether the admin API, signalling and relay are served.
//! The probe goes the way a client does: TCP connect to the HTTPS listener, TLS handshake (done
//! by a connection task the accept loop spawned), one HTTP/1.1 request through the router, and a
//! status line back, all within a deadline. It trusts exactly the server's own certificate,
//! whatever names it carries, so it works for a self-signed localhost certificate and an
//! operator's certificate alike.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the HTTPS listener did not answer the probe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// No complete answer within the deadline: the serving path is stuck.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, the handshake, or the exchange failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP.
    #[error("the answer is not an HTTP response")]
    NotHttp,
}

/// Probes the server's own HTTPS listener.
#[derive(Clone)]
pub struct HttpsProbe {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
}

impl HttpsProbe {
    /// A probe for the listener bound at `addr` serving the end-entity certificate `cert`.
    /// An unspecified bind address (`0.0.0.0`, `::`) is probed on loopback.
    pub fn new(
        addr: SocketAddr,
        cert: CertificateDer<'static>,
    ) -> Result<HttpsProbe, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(OwnCertificate {
            cert,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Ok(HttpsProbe {
            addr: SocketAddr::new(ip, addr.port()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// One probe: `Ok` once a status line came back within `deadline`.
    pub async fn check(&self, deadline: Duration) -> Result<(), ProbeError> {
        tokio::time::timeout(deadline, self.exchange())
            .await
            .map_err(|_| ProbeError::Timeout(deadline))?
    }

    async fn exchange(&self) -> Result<(), ProbeError> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let mut tls = self.tls.connect(name, tcp).await?;
        tls.write_all(
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: assistd-self-probe\r\nConnection: close\r\n\r\n",
        )
        .await?;
        let mut head = [0u8; 12];
        tls.read_exact(&mut head).await?;
        if head.starts_with(b"HTTP/1.1 ") {
            Ok(())
        } else {
            Err(ProbeError::NotHttp)
        }
    }
}

/// Accepts exactly one certificate, the server's own; signatures are still checked, so the
/// peer must hold its private key.
#[derive(Debug)]
struct OwnCertificate {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not this server's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
