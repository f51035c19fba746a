//! The servers `--server` names: one URL, or several nodes of one cluster written as a
//! comma-separated list (`http://10.0.0.1:4119,http://10.0.0.2:4119`, SPEC §12).
//!
//! Owns the list's rules (each item is a URL as [`connect::server_url`] reads it; no empty
//! items, no server twice), the order servers are tried in, and connecting to the first that
//! answers. It does not decide *when* to move to another server: the event pump does
//! (`events.rs`), and asks [`Servers::after`] where to go next.
//!
//! The order is the order written, wrapping around: the person (or the operator who wrote the
//! config file) knows which node is nearest, and a fixed order makes a failure easy to follow.
//! Users are spread over the nodes by giving them lists that start at different nodes.

use std::path::Path;

use anyhow::anyhow;
use tonic::transport::Channel;

use super::{api, connect};

/// The servers to use, in the order to try them; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Servers(Vec<String>);

impl Servers {
    /// The list as typed: URLs separated by commas, spaces around them ignored.
    ///
    /// # Errors
    /// An item that is not a server URL (the sentence names it), an empty item, or a server
    /// named twice.
    pub(crate) fn parse(typed: &str) -> Result<Servers, String> {
        if !typed.contains(',') {
            return connect::server_url(typed).map(|url| Servers(vec![url]));
        }
        let mut urls: Vec<String> = Vec::new();
        for (i, item) in typed.split(',').enumerate() {
            let n = i + 1;
            if item.trim().is_empty() {
                return Err(format!(
                    "server {n} of the list {typed:?} is empty: separate the URLs with single \
                     commas"
                ));
            }
            let url = connect::server_url(item).map_err(|why| format!("server {n}: {why}"))?;
            if urls.contains(&url) {
                return Err(format!("{url} is in the list {typed:?} twice"));
            }
            urls.push(url);
        }
        Ok(Servers(urls))
    }

    /// The URL of server `at`.
    pub(crate) fn url(&self, at: usize) -> &str {
        &self.0[at % self.0.len()]
    }

    /// Every URL, in order.
    pub(crate) fn urls(&self) -> &[String] {
        &self.0
    }

    /// More than one: a lost connection moves to the next one instead of waiting for this one.
    pub(crate) fn several(&self) -> bool {
        self.0.len() > 1
    }

    /// The server after `at`, wrapping around.
    pub(crate) fn after(&self, at: usize) -> usize {
        (at + 1) % self.0.len()
    }

    /// Connects to the first server that answers after `at`, in order, up to (not including)
    /// `first`, where the round began; its place in the list and the channel.
    pub(crate) async fn connect_next(
        &self,
        at: usize,
        first: usize,
        ca: Option<&Path>,
    ) -> Option<(usize, Channel)> {
        let mut next = self.after(at);
        while next != first {
            if let Ok(endpoint) = api::endpoint(self.url(next), ca)
                && let Ok(channel) = endpoint.connect().await
            {
                return Some((next, channel));
            }
            next = self.after(next);
        }
        None
    }

    /// Connects to the first server that answers, in order; its place in the list and the
    /// channel.
    ///
    /// # Errors
    /// None answers: one sentence saying why for each (for a single server, exactly what
    /// [`api::connect`] says).
    pub(crate) async fn connect_first(
        &self,
        ca: Option<&Path>,
    ) -> anyhow::Result<(usize, Channel)> {
        let mut reasons = Vec::new();
        let mut refused = 0;
        for (at, url) in self.0.iter().enumerate() {
            let endpoint = api::endpoint(url, ca)?;
            match endpoint.connect().await {
                Ok(channel) => return Ok((at, channel)),
                Err(e) => {
                    if connect::nobody_listening(&e) {
                        refused += 1;
                    }
                    reasons.push(connect::explain(url, ca, &e));
                }
            }
        }
        if !self.several() {
            return Err(anyhow!(reasons.swap_remove(0)));
        }
        if refused == self.0.len() {
            return Err(anyhow!(
                "nothing is listening at any of {}: is `confab serve` running there?",
                self.0.join(", ")
            ));
        }
        Err(anyhow!(
            "none of the {} servers answers ({})",
            self.0.len(),
            reasons.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(typed: &str) -> Vec<String> {
        Servers::parse(typed).unwrap().urls().to_vec()
    }

    #[test]
    fn one_server_is_read_as_before() {
        assert_eq!(urls("127.0.0.1:4119"), ["http://127.0.0.1:4119"]);
        assert_eq!(urls("https://h:1"), ["https://h:1"]);
        assert!(!Servers::parse("https://h:1").unwrap().several());
        let why = Servers::parse("").unwrap_err();
        assert!(why.starts_with("no server given"), "{why}");
    }

    #[test]
    fn a_list_keeps_its_order_and_ignores_spaces_around_items() {
        let servers =
            Servers::parse(" http://10.0.0.2:4119 , 127.0.0.1:4120,https://h:1 ").unwrap();
        assert_eq!(
            servers.urls(),
            [
                "http://10.0.0.2:4119",
                "http://127.0.0.1:4120",
                "https://h:1"
            ]
        );
        assert!(servers.several());
        assert_eq!(servers.after(0), 1);
        assert_eq!(servers.after(2), 0, "wraps around");
        assert_eq!(servers.url(4), "http://127.0.0.1:4120");
    }

    #[test]
    fn empty_items_are_refused_with_their_place() {
        for typed in [
            "127.0.0.1:1,",
            ",127.0.0.1:1",
            "127.0.0.1:1, ,127.0.0.1:2",
            ",",
        ] {
            let why = Servers::parse(typed).unwrap_err();
            assert!(why.contains("is empty"), "{typed}: {why}");
        }
        let why = Servers::parse("127.0.0.1:1,,127.0.0.1:2").unwrap_err();
        assert!(why.starts_with("server 2 of the list"), "{why}");
    }

    #[test]
    fn a_server_named_twice_is_refused_even_when_written_differently() {
        let why = Servers::parse("127.0.0.1:4119,http://127.0.0.1:4119").unwrap_err();
        assert_eq!(
            why,
            "http://127.0.0.1:4119 is in the list \"127.0.0.1:4119,http://127.0.0.1:4119\" twice"
        );
    }

    #[test]
    fn a_bad_item_is_refused_with_its_place_and_why() {
        let why = Servers::parse("http://127.0.0.1:1,ftp://h:2").unwrap_err();
        assert!(why.starts_with("server 2: "), "{why}");
        assert!(why.contains("not ftp://"), "{why}");
        let why = Servers::parse("chat.example.org:4119,http://127.0.0.1:1").unwrap_err();
        assert!(why.starts_with("server 1: write the scheme"), "{why}");
        let why = Servers::parse("http://127.0.0.1:1,http://").unwrap_err();
        assert!(why.contains("names no host"), "{why}");
    }

    #[tokio::test]
    async fn the_first_server_that_answers_is_used_and_none_answering_is_one_sentence() {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (dead1, dead2) = (free(), free());
        let alive = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive_addr = alive.local_addr().unwrap();
        // Any gRPC server answers a connection: the health service alone is enough.
        let (_, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(alive)),
        );
        let servers = Servers::parse(&format!("{dead1},{alive_addr},{dead2}")).unwrap();
        let (at, _) = servers.connect_first(None).await.unwrap();
        assert_eq!(at, 1);

        let servers = Servers::parse(&format!("{dead1},{dead2}")).unwrap();
        let why = servers.connect_first(None).await.unwrap_err().to_string();
        assert_eq!(
            why,
            format!(
                "nothing is listening at any of http://{dead1}, http://{dead2}: is `confab \
                 serve` running there?"
            )
        );
        let one = Servers::parse(&dead1.to_string()).unwrap();
        let why = one.connect_first(None).await.unwrap_err().to_string();
        assert_eq!(
            why,
            format!("nothing is listening at http://{dead1}: is `confab serve` running there?")
        );
    }
}
