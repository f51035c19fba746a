//! The server's TLS identity, read and checked before anything listens: a missing or unreadable
//! file, or one without a certificate or a private key, is a sentence at start, not a failure
//! after "listening" was printed.

use std::path::Path;

use anyhow::{Context as _, bail};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tonic::transport::Identity;

use super::config::TlsFiles;

/// Reads `--tls-cert` and `--tls-key` and checks each holds what it should.
///
/// # Errors
/// A file cannot be read, or holds no PEM certificate / private key.
pub(crate) fn load(files: &TlsFiles) -> anyhow::Result<Identity> {
    let cert = read(&files.cert, "--tls-cert")?;
    let key = read(&files.key, "--tls-key")?;
    let certs = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM file", files.cert.display()))?;
    if certs.is_empty() {
        bail!(
            "--tls-cert {} holds no certificate (a PEM file with a BEGIN CERTIFICATE block)",
            files.cert.display()
        );
    }
    if PrivateKeyDer::from_pem_slice(&key).is_err() {
        bail!(
            "--tls-key {} holds no private key (a PEM file with a BEGIN PRIVATE KEY block)",
            files.key.display()
        );
    }
    Ok(Identity::from_pem(cert, key))
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("{flag} {}: there is no such file", path.display())
        }
        _ => anyhow::anyhow!("{flag} {}: cannot read it ({e})", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    fn error(files: &TlsFiles) -> String {
        match load(files) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn each_bad_file_is_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("key.pem"),
        };
        let why = error(&missing);
        assert!(why.starts_with("--tls-cert "), "{why}");
        assert!(why.ends_with("missing.pem: there is no such file"), "{why}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let why = error(&files(dir.path(), "hello", &key.serialize_pem()));
        assert!(why.contains("holds no certificate"), "{why}");
        let why = error(&files(dir.path(), &cert.pem(), &cert.pem()));
        assert!(why.starts_with("--tls-key"), "{why}");
        assert!(why.contains("holds no private key"), "{why}");
        assert!(load(&files(dir.path(), &cert.pem(), &key.serialize_pem())).is_ok());
    }
}
