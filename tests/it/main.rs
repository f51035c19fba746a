//! Integration tests, one binary (linked once): a real confab server on 127.0.0.1:0 with a
//! temporary data dir, driven over gRPC; the real `confab` binary in `process` (serve), `chat`
//! (chat, and a terminal through tmux) and `bench`; the peer path over loopback in `peer`.

#![allow(unreachable_pub)] // test helpers are shared between modules with `pub`

mod accounts;
mod admin;
mod admin_cli;
mod auth;
mod bench;
mod blocks;
mod chat;
mod chat_connect;
mod chat_consent;
mod chat_script;
mod chat_terminal;
mod cluster;
mod common;
mod completions;
mod consent;
mod contrib;
mod decoding;
mod files;
mod fuzz_corpus;
mod limits;
mod messages;
mod netns;
mod operate;
mod peer;
mod pg_outage;
mod presence;
mod process;
mod rawh2;
mod reflection;
mod storage;
mod store;
mod tickets;
mod tls;
mod tls_pin;
