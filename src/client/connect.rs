//! Reaching a server, in words a person can act on: the server URL as people type it (a bare
//! `127.0.0.1:4119` is understood on loopback), and a failed connection said in one sentence —
//! nothing listening, a certificate the client will not trust (and what to do about it), plain
//! `http://` against a server that speaks TLS — instead of a transport error's chain, whose
//! layers repeat each other (`tcp connect error: tcp connect error: …`).

use std::{error::Error as StdError, path::Path};

use crate::types::DEFAULT_PORT;

/// The server URL to connect to, from what was typed: `http://` or `https://` URLs as they are;
/// a bare `host[:port]` on loopback becomes `http://host:port` (nothing crosses a network, and
/// that is where `confab serve` listens by default); elsewhere the scheme must be written,
/// because guessing it wrong either sends the password in clear or fails obscurely.
///
/// # Errors
/// Another scheme, a bare address off loopback (a sentence saying what to write), or a list of
/// servers where one is wanted.
pub fn server_url(typed: &str) -> Result<String, String> {
    let typed = typed.trim();
    if typed.contains(',') {
        return Err(format!(
            "{typed:?} names several servers; give one here (a list of nodes is for confab \
             chat and confab register)"
        ));
    }
    if let Some((scheme, rest)) = typed.split_once("://") {
        return match scheme {
            "http" | "https" if !rest.is_empty() => Ok(typed.to_owned()),
            "http" | "https" => Err(format!("{typed:?} names no host")),
            _ => Err(format!(
                "{typed:?}: confab speaks gRPC over http:// or https://, not {scheme}://"
            )),
        };
    }
    if typed.is_empty() {
        return Err("no server given; write it like http://127.0.0.1:4119".into());
    }
    let (host, port) = split_host_port(typed)
        .ok_or_else(|| format!("{typed:?} is not a server address like 127.0.0.1:4119"))?;
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if is_loopback(host) {
        Ok(format!("http://{shown}"))
    } else {
        Err(format!(
            "write the scheme with the server: https://{shown} for a server with TLS (add --ca \
             FILE if its certificate is your own), or http://{shown} if it really has none"
        ))
    }
}

/// `host[:port]` or `[v6]:port`; the default port when none is given.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, port.parse().ok()?)),
            None if after.is_empty() => Some((host, DEFAULT_PORT)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((s, DEFAULT_PORT)),
        Some((host, port)) if !host.is_empty() => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None => Some((s, DEFAULT_PORT)),
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why connecting to `server` failed, in one sentence (no repeated layers).
pub fn explain(server: &str, ca: Option<&Path>, error: &(dyn StdError + 'static)) -> String {
    let chain = messages(error);
    let all = chain.join(": ");
    let certificate = |what: &str| format!("the server at {server} {what}");
    if all.contains("PinnedKeyNotHeld") {
        return certificate(&format!(
            "presents the certificate in {} but cannot prove it is its own (it does not hold \
             its private key): something else is answering at that address",
            ca.map_or_else(|| "--ca".into(), |ca| ca.display().to_string())
        ));
    }
    // With --ca FILE, a certificate in FILE is trusted as it is (client/tls.rs), so anything
    // refused for its issuer, its CA flag or a signature is neither FILE's nor signed by FILE's
    // authorities.
    if ["UnknownIssuer", "CaUsedAsEndEntity", "BadSignature"]
        .iter()
        .any(|word| all.contains(word))
    {
        return certificate(&match ca {
            None => "has a certificate this client was not told to trust: give the server's \
                     certificate (self-signed is fine) or the authority that signed it with \
                     --ca FILE"
                .to_owned(),
            Some(ca) => format!(
                "has a certificate that is neither in {ca} nor signed by an authority in it: \
                 if the server's certificate was replaced, put the new one in {ca}; if not, \
                 something else is answering at that address",
                ca = ca.display()
            ),
        });
    }
    if all.contains("NotValidForName") || all.contains("not valid for name") {
        return certificate(
            "has a certificate issued for another name: connect with a name the certificate \
             lists (its subjectAltName), e.g. https://localhost:PORT for a local test, or give \
             the server's certificate itself with --ca",
        );
    }
    if [
        "Expired",
        "NotValidYet",
        "certificate expired",
        "not valid yet",
    ]
    .iter()
    .any(|word| all.contains(word))
    {
        return certificate("has a certificate that is expired or not yet valid");
    }
    if all.contains("InvalidContentType") || all.contains("CorruptMessage") {
        return format!(
            "the server at {server} does not speak TLS: use http:// instead of https://"
        );
    }
    if all.contains("Connection refused") {
        return format!("nothing is listening at {server}: is `confab serve` running there?");
    }
    let last = chain.last().map_or("unknown error", String::as_str);
    format!("cannot reach the confab server at {server}: {last}")
}

/// True when connecting failed because nothing listens at the address (refused).
pub(crate) fn nobody_listening(error: &(dyn StdError + 'static)) -> bool {
    messages(error).join(": ").contains("Connection refused")
}

/// Each layer's message once: a layer that only repeats what the next one says is dropped.
fn messages(error: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !out.iter().any(|seen| seen.contains(&text)) {
            out.push(text);
        }
        next = e.source();
    }
    // Keep the most specific words: drop a layer whose message contains a deeper one's.
    let deepest = out.clone();
    out.retain(|m| !deepest.iter().any(|d| d != m && m.contains(d.as_str())));
    out
}

/// True when the server at `server` (an `http://` URL that just failed) answers TLS instead: a
/// TLS handshake to it gets as far as a certificate.
pub async fn speaks_tls(server: &str) -> bool {
    let Some(rest) = server.strip_prefix("http://") else {
        return false;
    };
    let Ok(endpoint) = super::api::endpoint(&format!("https://{rest}"), None) else {
        return false;
    };
    match endpoint.connect().await {
        Ok(_) => true,
        Err(e) => {
            let all = messages(&e).join(": ");
            all.contains("certificate") || all.contains("CaUsedAsEndEntity")
        }
    }
}

/// Why the first call to `server` (a login, a registration) failed, in one sentence: the
/// server's own words when it answered; otherwise what went wrong with the connection, asking
/// the port whether it speaks TLS, because plain HTTP/2 to a TLS port fails in ways that say
/// nothing (a cancelled call, a protocol error).
pub async fn first_call_failed(server: &str, ca: Option<&Path>, status: &tonic::Status) -> String {
    use tonic::Code;
    let said_by_the_server = matches!(
        status.code(),
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::NotFound
    );
    if said_by_the_server {
        return super::api::sentence(status);
    }
    if speaks_tls(server).await {
        return tls_needed(server);
    }
    if super::call::is_connection_failure(status) {
        return explain(server, ca, status);
    }
    super::api::sentence(status)
}

/// What to say when a call over `http://` failed against a server that speaks TLS.
pub fn tls_needed(server: &str) -> String {
    let https = server.replacen("http://", "https://", 1);
    format!(
        "the server at {server} speaks TLS, not plain http: connect to {https} (with --ca FILE \
         if its certificate is your own)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_loopback_address_means_plain_http() {
        assert_eq!(
            server_url("127.0.0.1:4119").unwrap(),
            "http://127.0.0.1:4119"
        );
        assert_eq!(server_url("localhost").unwrap(), "http://localhost:4119");
        assert_eq!(server_url("[::1]:5000").unwrap(), "http://[::1]:5000");
        assert_eq!(server_url("::1").unwrap(), "http://[::1]:4119");
        assert_eq!(server_url(" 127.0.0.2 ").unwrap(), "http://127.0.0.2:4119");
    }

    #[test]
    fn urls_with_a_scheme_are_kept_as_typed() {
        for url in ["http://10.0.0.1:4119", "https://chat.example.org:4119"] {
            assert_eq!(server_url(url).unwrap(), url);
        }
    }

    #[test]
    fn elsewhere_the_scheme_must_be_written_and_the_sentence_says_which() {
        let why = server_url("chat.example.org:4119").unwrap_err();
        assert!(why.contains("https://chat.example.org:4119"), "{why}");
        assert!(why.contains("http://chat.example.org:4119"), "{why}");
        let why = server_url("ftp://host").unwrap_err();
        assert!(why.contains("not ftp://"), "{why}");
        assert!(server_url("http://").is_err());
        assert!(server_url("").is_err());
        assert!(server_url("127.0.0.1:notaport").is_err());
        assert!(server_url(":4119").is_err());
        let why = server_url("http://a:1,http://b:2").unwrap_err();
        assert!(why.contains("names several servers"), "{why}");
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Layer {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    fn chain(layers: &[&'static str]) -> Layer {
        layers
            .iter()
            .rev()
            .fold(None, |inner, m| Some(Layer(m, inner.map(Box::new))))
            .unwrap()
    }

    #[test]
    fn a_refused_connection_is_one_sentence_without_repeats() {
        let e = chain(&[
            "transport error",
            "tcp connect error",
            "tcp connect error",
            "Connection refused (os error 111)",
        ]);
        let text = explain("http://127.0.0.1:1", None, &e);
        assert_eq!(
            text,
            "nothing is listening at http://127.0.0.1:1: is `confab serve` running there?"
        );
        let e = chain(&["transport error", "dns error", "dns error", "no such host"]);
        let text = explain("http://nowhere:1", None, &e);
        assert_eq!(
            text,
            "cannot reach the confab server at http://nowhere:1: no such host"
        );
    }

    #[test]
    fn certificate_refusals_say_what_to_do() {
        let ca_as_server = chain(&[
            "transport error",
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
        ]);
        let text = explain(
            "https://localhost:1",
            Some(Path::new("ca.pem")),
            &ca_as_server,
        );
        assert_eq!(
            text,
            "the server at https://localhost:1 has a certificate that is neither in ca.pem nor \
             signed by an authority in it: if the server's certificate was replaced, put the new \
             one in ca.pem; if not, something else is answering at that address"
        );
        let unknown = chain(&["transport error", "invalid peer certificate: UnknownIssuer"]);
        assert!(explain("https://h:1", None, &unknown).contains("--ca FILE"));
        let copied = chain(&[
            "transport error",
            "invalid peer certificate: Other(OtherError(PinnedKeyNotHeld))",
        ]);
        let text = explain("https://h:1", Some(Path::new("ca.pem")), &copied);
        assert!(
            text.contains("presents the certificate in ca.pem but"),
            "{text}"
        );
        let name = chain(&[
            "transport error",
            "invalid peer certificate: certificate not valid for name \"h\"; certificate is \
             only valid for localhost",
        ]);
        assert!(explain("https://h:1", None, &name).contains("issued for another name"));
        let expired = chain(&[
            "transport error",
            "invalid peer certificate: certificate expired: verification time 2 (UNIX), but \
             certificate is not valid after 1 (1 seconds ago)",
        ]);
        assert!(explain("https://h:1", None, &expired).contains("expired or not yet valid"));
        let plain = chain(&[
            "transport error",
            "received corrupt message of type InvalidContentType",
        ]);
        assert!(explain("https://h:1", None, &plain).contains("use http://"));
    }
}
