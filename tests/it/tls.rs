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
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();

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
