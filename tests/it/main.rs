//! Integration tests: a real confab server on 127.0.0.1:0 with a temporary data dir, driven over
//! gRPC (and, in `process`, the real `confab` binary).

#![allow(unreachable_pub)] // test helpers are shared between modules with `pub`

mod accounts;
mod admin;
mod admin_cli;
mod auth;
mod blocks;
mod common;
mod completions;
mod consent;
mod contrib;
mod decoding;
mod limits;
mod messages;
mod netns;
mod operate;
mod presence;
mod process;
mod rawh2;
mod reflection;
mod storage;
mod tls;
