//! SPEC §9: TLS with rustls; the client trusts the server through `--ca`.

use confab::{
    client::api,
    pb,
    server::{self, Config, config::TlsFiles},
};

use crate::common::*;

#[tokio::test]
async fn a_tls_server_is_reached_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let paths = localhost_certificate(dir.path());

    let mut config = Config::for_tests(dir.path().join("data"));
    config.tls = Some(TlsFiles {
        cert: paths.1.clone(),
        key: paths.2.clone(),
    });
    let handle = server::start(config).await.unwrap();
    let url = format!("https://localhost:{}", handle.addr.port());

    let channel = api::connect(&url, Some(&paths.0)).await.unwrap();
    api::auth(channel)
        .register(pb::RegisterRequest {
            username: "alice".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap();
    // Without the CA the server's certificate is not trusted.
    let untrusted = match api::endpoint(&url, None).unwrap().connect().await {
        Err(_) => true,
        Ok(channel) => api::auth(channel)
            .register(pb::RegisterRequest {
                username: "bob".into(),
                password: PASSWORD.into(),
            })
            .await
            .is_err(),
    };
    assert!(untrusted, "a TLS connection without the CA must fail");
    // Plaintext to a TLS port fails too.
    let plain = format!("http://127.0.0.1:{}", handle.addr.port());
    let r = match api::connect(&plain, None).await {
        Err(_) => true,
        Ok(ch) => api::auth(ch)
            .register(pb::RegisterRequest {
                username: "carol".into(),
                password: PASSWORD.into(),
            })
            .await
            .is_err(),
    };
    assert!(r);
    handle.shutdown.cancel();
}

/// A listener that presents `cert` in TLS handshakes but signs them with `key`, which is not
/// the certificate's: what someone who copied a server's certificate (not its key) can do.
async fn copied_certificate_server(
    cert: &rcgen::Certificate,
    key: &rcgen::KeyPair,
    version: &'static tokio_rustls::rustls::SupportedProtocolVersion,
) -> std::net::SocketAddr {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, crypto::ring, pki_types::PrivateKeyDer, sign};

    let provider = Arc::new(ring::default_provider());
    let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let signer = provider.key_provider.load_private_key(der).unwrap();
    let certified = sign::CertifiedKey::new(vec![cert.der().clone()], signer);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Held open, read and ignored, until the client leaves: enough for a channel
                // to count as connected when the handshake succeeds.
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::copy(&mut tls, &mut tokio::io::sink()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_pinned_certificate_is_not_enough_without_its_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let pin = dir.path().join("cert.pem");
    std::fs::write(&pin, pinned.pem()).unwrap();
    let not_its_key = rcgen::KeyPair::generate().unwrap();
    for version in [
        &tokio_rustls::rustls::version::TLS12,
        &tokio_rustls::rustls::version::TLS13,
    ] {
        let addr = copied_certificate_server(&pinned, &not_its_key, version).await;
        let url = format!("https://localhost:{}", addr.port());
        let why = api::connect(&url, Some(&pin))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            why,
            format!(
                "the server at {url} presents the certificate in {} but cannot prove it is its \
                 own (it does not hold its private key): something else is answering at that \
                 address",
                pin.display()
            ),
            "{version:?}"
        );
    }
    // The same listener with the certificate's own key is trusted: the refusal above was the
    // signature's.
    let own_key = rcgen::KeyPair::generate().unwrap();
    let pinned = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&own_key)
        .unwrap();
    std::fs::write(&pin, pinned.pem()).unwrap();
    let addr =
        copied_certificate_server(&pinned, &own_key, &tokio_rustls::rustls::version::TLS13).await;
    let url = format!("https://localhost:{}", addr.port());
    api::connect(&url, Some(&pin))
        .await
        .expect("the handshake succeeds with the certificate's own key");
}
