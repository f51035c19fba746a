//! The client's side of TLS: which server certificates `--ca FILE` makes trusted, and the
//! connector that dials TCP and does the handshake for tonic (whose `ClientTlsConfig` cannot
//! take a verifier of our own).
//!
//! A certificate the server presents that is byte for byte one of FILE's is trusted as it is
//! (pinning, as SSH's `known_hosts`: whoever wrote FILE said "this is the server's
//! certificate"), whatever its names, dates or CA flag, so the certificate of the usual
//! `openssl req -x509` one-liner works. Any other certificate is verified by webpki with FILE's
//! certificates as the authorities, as any TLS client would. The handshake's signatures are
//! verified in both cases, so only a server holding the certificate's private key gets through.
//! Without FILE nothing is trusted: the system's roots are not used.

use std::{
    future::Future,
    net::IpAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use anyhow::{Context as _, bail};
use http::Uri;
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
        SignatureScheme,
        client::{
            WebPkiServerVerifier,
            danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        },
        crypto::{self, CryptoProvider},
    },
};

/// The ALPN name of HTTP/2, which gRPC needs.
const ALPN_H2: &[u8] = b"h2";

/// Which server certificates are trusted: the pinned ones as they are, others through webpki.
#[derive(Debug)]
struct Trust {
    /// FILE's certificates, compared byte for byte with the one the server presents.
    pins: Vec<CertificateDer<'static>>,
    /// FILE's certificates as authorities; `None` when there is no FILE (nothing is trusted
    /// beyond the pins) or none of them can be an authority.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The signature algorithms handshakes are checked with.
    provider: Arc<CryptoProvider>,
}

impl Trust {
    /// The trust `ca` (a PEM file of certificates) gives; nothing at all for `None`.
    fn new(ca: Option<&Path>, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let Some(ca) = ca else {
            return Ok(Trust {
                pins: Vec::new(),
                webpki: None,
                provider,
            });
        };
        let pem = std::fs::read(ca)
            .with_context(|| format!("cannot read the --ca file {}", ca.display()))?;
        let pins = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("the --ca file {} is not a PEM file", ca.display()))?;
        if pins.is_empty() {
            bail!(
                "the --ca file {} holds no certificate (a PEM file with a BEGIN CERTIFICATE \
                 block)",
                ca.display()
            );
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(pins.iter().cloned());
        // A file of certificates none of which can anchor a chain still pins them.
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .ok();
        Ok(Trust {
            pins,
            webpki,
            provider,
        })
    }
}

impl Trust {
    /// The error for a handshake signature that did not verify: [`PinnedKeyNotHeld`] when the
    /// certificate was a pinned one, so the user is told what that means.
    fn key_not_held(&self, cert: &CertificateDer<'_>, error: rustls::Error) -> rustls::Error {
        if self.pins.iter().any(|pin| pin.as_ref() == cert.as_ref()) {
            CertificateError::Other(rustls::OtherError(Arc::new(PinnedKeyNotHeld))).into()
        } else {
            error
        }
    }
}

/// A server presented a pinned certificate but could not sign with its private key: whoever
/// answers copied the certificate. Its name is what `connect::explain` finds in the error.
#[derive(Debug)]
pub(crate) struct PinnedKeyNotHeld;

impl std::fmt::Display for PinnedKeyNotHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the server does not hold the private key of its pinned certificate")
    }
}

impl std::error::Error for PinnedKeyNotHeld {}

impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pins
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(CertificateError::UnknownIssuer.into()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        crypto::verify_tls12_signature(message, cert, dss, algorithms)
            .map_err(|e| self.key_not_held(cert, e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        crypto::verify_tls13_signature(message, cert, dss, algorithms)
            .map_err(|e| self.key_not_held(cert, e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls configuration for trusting `ca` (see the module's documentation), offering
/// HTTP/2 only.
fn client_config(ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    // ring, the provider the server's TLS (through tonic) and the NATS client already use.
    let provider = Arc::new(crypto::ring::default_provider());
    let trust = Trust::new(ca, provider.clone())?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(trust))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Dials a TLS server for tonic: TCP as tonic's own connector would (no delay, connect
/// timeout, local address), then the handshake with [`client_config`]'s trust.
#[derive(Clone)]
pub(crate) struct Connector {
    tcp: HttpConnector,
    config: Arc<ClientConfig>,
    /// The name the certificate is checked against (and sent as SNI when it is a DNS name).
    name: ServerName<'static>,
}

impl Connector {
    /// A connector to `host` (as in the URL, an IPv6 address in brackets) trusting `ca`.
    ///
    /// # Errors
    /// `host` is no DNS name or IP address, or `ca` cannot be read or holds no certificate.
    pub(crate) fn new(
        host: &str,
        ca: Option<&Path>,
        connect_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .with_context(|| format!("{host:?} is not a host name or address"))?;
        let mut tcp = HttpConnector::new();
        // The URI tonic hands over says http://; the TLS is ours.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        Ok(Connector {
            tcp,
            config: client_config(ca)?,
            name,
        })
    }

    /// Connects from `local` (any address if `None`).
    pub(crate) fn set_local_address(&mut self, local: Option<IpAddr>) {
        self.tcp.set_local_address(local);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.tcp.call(uri);
        let tls = TlsConnector::from(self.config.clone());
        let name = self.name.clone();
        Box::pin(async move {
            let tcp = tcp.await?.into_inner();
            let stream = tls.connect(name, tcp).await?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
                return Err(
                    "the server does not offer HTTP/2 over TLS (ALPN h2), which gRPC \
                            needs: is it a confab server?"
                        .into(),
                );
            }
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, marked as a CA when `ca` (as openssl's one-liner
    /// makes it).
    fn self_signed(names: &[&str], ca: bool) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        params.self_signed(&key).unwrap()
    }

    /// The trust of a --ca file holding `pem`.
    fn trust_of(pem: &str) -> anyhow::Result<Trust> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
        let provider = Arc::new(crypto::ring::default_provider());
        Trust::new(Some(&dir.path().join("ca.pem")), provider)
    }

    fn verify(trust: &Trust, cert: &rcgen::Certificate, host: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        trust
            .verify_server_cert(cert.der(), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_pinned_certificate_is_trusted_whatever_its_name_and_ca_flag() {
        let pinned = self_signed(&["localhost"], true);
        let other = self_signed(&["chat.example.org"], false);
        let trust = trust_of(&(other.pem() + &pinned.pem())).unwrap();
        assert_eq!(verify(&trust, &pinned, "localhost"), Ok(()));
        assert_eq!(verify(&trust, &pinned, "127.0.0.1"), Ok(()));
        assert_eq!(verify(&trust, &other, "10.1.2.3"), Ok(()));
    }

    #[test]
    fn a_certificate_not_in_the_file_goes_through_webpki() {
        let pinned = self_signed(&["localhost"], true);
        let trust = trust_of(&pinned.pem()).unwrap();
        // Another one-liner certificate for the same name: a CA certificate webpki will not
        // take as a server's.
        let stranger = self_signed(&["localhost"], true);
        assert!(verify(&trust, &stranger, "localhost").is_err());
        // Same name as the pinned one (rcgen's, like openssl's, puts it in the subject too):
        // webpki takes the pinned certificate for its issuer, whose signature does not verify.
        let stranger = self_signed(&["localhost"], false);
        assert_eq!(
            verify(&trust, &stranger, "localhost"),
            Err(CertificateError::BadSignature.into())
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "somebody else");
        let stranger = params.self_signed(&key).unwrap();
        assert_eq!(
            verify(&trust, &stranger, "localhost"),
            Err(CertificateError::UnknownIssuer.into())
        );
    }

    #[test]
    fn a_ca_file_still_vouches_for_the_leaves_it_signed_for_their_names_only() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&rcgen::KeyPair::generate().unwrap(), &ca, &ca_key)
            .unwrap();
        let trust = trust_of(&ca.pem()).unwrap();
        assert_eq!(verify(&trust, &leaf, "localhost"), Ok(()));
        let wrong_name = verify(&trust, &leaf, "chat.example.org");
        assert!(
            matches!(
                wrong_name,
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{wrong_name:?}"
        );
        // The CA's certificate is in the file, so a server presenting it is pinned; the leaf
        // is not, so a leaf the CA did not sign is refused.
        let stranger = self_signed(&["localhost"], false);
        assert!(verify(&trust, &stranger, "localhost").is_err());
    }

    #[test]
    fn without_a_file_nothing_is_trusted() {
        let provider = Arc::new(crypto::ring::default_provider());
        let trust = Trust::new(None, provider).unwrap();
        let cert = self_signed(&["localhost"], false);
        assert_eq!(
            verify(&trust, &cert, "localhost"),
            Err(CertificateError::UnknownIssuer.into())
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused_with_a_sentence() {
        let why = trust_of("not a certificate\n").unwrap_err().to_string();
        assert!(
            why.ends_with("holds no certificate (a PEM file with a BEGIN CERTIFICATE block)"),
            "{why}"
        );
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(trust_of(&key).is_err());
        let provider = Arc::new(crypto::ring::default_provider());
        let why = Trust::new(Some(Path::new("/missing/ca.pem")), provider).unwrap_err();
        assert!(
            format!("{why:#}").starts_with("cannot read the --ca file /missing/ca.pem"),
            "{why:#}"
        );
    }
}
