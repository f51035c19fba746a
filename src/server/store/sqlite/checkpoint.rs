//! The checkpointer thread: copies the WAL back into the database off the writer's path, and
//! keeps the log short.

use std::time::Duration;

use rusqlite::Connection;

/// How often the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// WAL pages (of 4 KiB, the store's page size) above which the checkpointer also waits for a gap between the
/// writer's commits to finish the checkpoint and truncate the log (16 MiB), so a busy server's
/// WAL cannot grow without bound.
const WAL_TRUNCATE_PAGES: i64 = 4096;
/// Checkpoints every [`CHECKPOINT_EVERY`] until the store is dropped, and once more then.
pub(super) fn checkpointer(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(RecvTimeoutError::Disconnected)
        );
        // PASSIVE never blocks the writer; TRUNCATE (only for a long log, after PASSIVE copied
        // most of it) waits for a gap between its commits so the log can start over, empty.
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match passive {
            Ok((log, _)) if log > WAL_TRUNCATE_PAGES || last => {
                if let Err(e) = truncate_wal(conn) {
                    tracing::warn!("WAL truncating checkpoint failed: {e:#}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("WAL checkpoint failed: {e}"),
        }
        if last {
            return;
        }
    }
}

/// Copies the whole WAL into the database and truncates it to nothing.
pub(super) fn truncate_wal(conn: &Connection) -> anyhow::Result<()> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        anyhow::bail!("the WAL was busy; it is truncated at a later checkpoint");
    }
    Ok(())
}
