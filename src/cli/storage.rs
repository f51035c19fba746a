//! `confab admin check` and `confab admin repair`: the store of a stopped server, offline.

use std::path::Path;

use crate::server::storage;

/// Prints what the checks found; fails (non-zero exit) if the store cannot be trusted.
pub(crate) fn check(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let health = storage::check(data_dir)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": health.problems.is_empty(),
                "problems": health.problems,
                "wal_bytes": health.wal.bytes,
                "wal_committed_frames": health.wal.committed_frames,
                "schema_version": health.schema_version,
                "users": health.users,
                "messages": health.messages,
            })
        );
    } else {
        println!("data directory  {}", data_dir.display());
        println!(
            "write-ahead log {} bytes, {} committed frames",
            health.wal.bytes, health.wal.committed_frames
        );
        let known = |n: Option<i64>| n.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        println!("schema version  {}", known(health.schema_version));
        println!("accounts        {}", known(health.users.map(|n| n as i64)));
        println!(
            "stored messages {}",
            known(health.messages.map(|n| n as i64))
        );
        if health.problems.is_empty() {
            println!("ok: the store can be trusted");
        }
        for problem in &health.problems {
            println!("problem: {problem}");
        }
    }
    if !health.problems.is_empty() {
        anyhow::bail!(
            "the store in {} cannot be trusted; `confab admin repair --data-dir {0}` (or `confab \
             serve --repair`) recovers what is readable into a fresh database",
            data_dir.display()
        );
    }
    Ok(())
}

/// Repairs the store if it fails its checks, and prints what came back.
pub(crate) fn repair(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let salvaged = storage::repair(data_dir)?;
    match (salvaged, json) {
        (None, false) => println!("the store passed its checks; nothing to repair"),
        (None, true) => println!("{}", serde_json::json!({"repaired": false})),
        (Some(s), false) => {
            println!(
                "recovered {} accounts, {} blocks and {} stored messages into a fresh database",
                s.users, s.blocks, s.messages
            );
            if s.skipped_ranges > 0 || s.orphaned > 0 {
                println!(
                    "skipped {} unreadable ranges; dropped {} messages whose account was lost",
                    s.skipped_ranges, s.orphaned
                );
            }
            println!("the damaged files are in {}", s.aside.display());
        }
        (Some(s), true) => println!(
            "{}",
            serde_json::json!({
                "repaired": true, "users": s.users, "blocks": s.blocks, "messages": s.messages,
                "orphaned": s.orphaned, "skipped_ranges": s.skipped_ranges,
                "aside": s.aside.display().to_string(),
            })
        ),
    }
    Ok(())
}
