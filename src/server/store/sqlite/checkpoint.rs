//! The checkpointer thread: copies the WAL back into the database off the writer's path, and
//! keeps the log short.
//!
//! A checkpoint that truncates or restarts the log has to hold the writer back, and a thread
//! that waits for a gap between the writer's commits rarely finds one while the server is busy:
//! the log grew to 200 MB at saturation, and each truncation that got in stalled the writer for
//! 5–30 ms plus the steps of SQLite's busy wait. So this thread looks at the WAL file every
//! 100 ms, copies the log whenever it is past 16 MiB (and every second anyway), and then asks the
//! writer to finish: between two batches the writer copies the few frames committed since
//! ([`finish_checkpoint`]), and its next commit writes from the start of the log again. At
//! saturation the log now stays under 40 MB, and the stream path's p99 at 10 000 msg/s fell from
//! 76 to 29 ms (BENCHMARKS "The writer starts the log over").

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use rusqlite::Connection;

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often it looks at the WAL file's size: at saturation the writer adds 60–140 MB of log a
/// second, so a log left alone for a second grows that far.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// WAL pages (of 4 KiB, the store's page size) above which the writer is asked to start the log
/// over (16 MiB).
const LONG_LOG_PAGES: i64 = 4096;
/// The same in bytes of the WAL file, which SQLite trims to 4 MiB when the log starts over
/// (`journal_size_limit`) and which otherwise grows with the log.
const LONG_LOG_BYTES: u64 = (LONG_LOG_PAGES * super::PAGE_SIZE) as u64;

/// Checkpoints every [`CHECKPOINT_EVERY`], or sooner once the WAL file at `wal` is long, until
/// the store is closed or dropped, and once more then, truncating the log to nothing: that last
/// truncation's result is the thread's. Sets `long_log` when the log should start over.
pub(super) fn checkpointer(
    conn: &Connection,
    wal: &Path,
    stop: &std::sync::mpsc::Receiver<()>,
    long_log: &AtomicBool,
) -> anyhow::Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut last_pass = Instant::now();
    loop {
        let last = matches!(
            stop.recv_timeout(LOOK_EVERY),
            Err(RecvTimeoutError::Disconnected)
        );
        if last {
            return truncate_wal(conn);
        }
        let long_file = std::fs::metadata(wal).is_ok_and(|m| m.len() > LONG_LOG_BYTES);
        if !long_file && last_pass.elapsed() < CHECKPOINT_EVERY {
            continue;
        }
        last_pass = Instant::now();
        // PASSIVE never blocks the writer.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(log) => long_log.store(log > LONG_LOG_PAGES, Ordering::Relaxed),
            Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
        }
    }
}

/// Run by the writer between two batches when `long_log` is set: copies what is left of the
/// log so that its next commit starts the log over. Never waits: if the checkpointer thread is
/// copying, or a reader still needs the log, it is tried again after the thread's next pass.
pub(super) fn finish_checkpoint(conn: &Connection, long_log: &AtomicBool) {
    if !long_log.swap(false, Ordering::Relaxed) {
        return;
    }
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        // SQLITE_BUSY: the checkpointer thread holds the checkpoint lock; it copies, and asks
        // again within a second if the log is still long.
        tracing::debug!("the writer's checkpoint was skipped: {e}");
    }
}

/// Copies the whole WAL into the database and truncates it to nothing.
fn truncate_wal(conn: &Connection) -> anyhow::Result<()> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        anyhow::bail!(
            "the WAL was busy; it is copied into the database when the store is next opened"
        );
    }
    Ok(())
}
