//! Nothing acknowledged is lost: not to SIGKILL under load, not to a full disk.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use confab::server::{self, Config};
use tonic::Code;
use tonic_types::StatusExt;

use super::*;

/// Streams messages `from..` to bob until the stream breaks, recording every acknowledged one.
async fn send_until_broken(mut alice: Session, from: u64, acked: Arc<Mutex<Vec<u64>>>) {
    let requests = (from..).map(|i| pb::SendStreamRequest {
        message: Some(numbered("bob", i)),
    });
    let Ok(responses) = alice.chat.send_stream(tokio_stream::iter(requests)).await else {
        return;
    };
    let mut responses = responses.into_inner();
    while let Ok(Some(r)) = responses.message().await {
        assert_eq!(r.code, 0, "{}", r.error);
        let i = r.message_id.strip_prefix("m-").unwrap().parse().unwrap();
        acked.lock().unwrap().push(i);
    }
}

#[tokio::test]
async fn sigkill_under_load_loses_nothing_acknowledged_and_restarts_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut next = 0;
    for round in 0..4u64 {
        let server = start(&data, &[]).await;
        let remote = Remote::new(&server);
        if round == 0 {
            remote.register("alice").await;
            remote.register("bob").await;
        }
        let alice = remote.login("alice").await;
        let before = acked.lock().unwrap().len();
        let sender = tokio::spawn(send_until_broken(alice, next, acked.clone()));
        // Killed while sends are in flight, after a different number of them each round.
        let target = before + 300 + 150 * round as usize;
        within("acknowledged sends", async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
            while acked.lock().unwrap().len() < target {
                assert!(!sender.is_finished(), "the stream ended before the kill");
                tick.tick().await;
            }
        })
        .await;
        drop(server); // SIGKILL, mid-stream
        sender.await.unwrap();
        next += 100_000;
    }
    let server = start(&data, &[]).await;
    let stored: BTreeSet<u64> = backlog_numbers(&Remote::new(&server), "bob")
        .await
        .into_iter()
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.iter().filter(|i| !stored.contains(i)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {lost:?}",
        lost.len()
    );
    println!(
        "{} acknowledged, {} stored (the rest were committed but their answer never arrived)",
        acked.len(),
        stored.len()
    );
}

/// A tmpfs of `size` mounted on a new directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            Ok(out) => {
                println!(
                    "skipped: cannot mount a small tmpfs here ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the in-process server's files may still be open.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system of `path` with a file there; returns its path.
fn fill(path: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let ballast = path.join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0xab; 16 * 1024];
    while file
        .write_all(&chunk)
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
    // Smaller pieces take the last blocks.
    while file
        .write_all(&chunk[..512])
        .and_then(|()| file.sync_data())
        .is_ok()
    {}
    ballast
}

#[tokio::test]
async fn a_full_disk_is_resource_exhausted_with_retry_info_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let data = disk.dir.path().join("data");
    let config = Config::for_tests(data.clone());
    let handle = server::start(config.clone()).await.unwrap();
    let url = format!("http://{}", handle.addr);
    let remote = Remote { url: url.clone() };
    remote.register("alice").await;
    remote.register("bob").await;
    let mut alice = remote.login("alice").await;
    let mut acked = BTreeSet::new();
    for i in 0..20 {
        alice.chat.send_message(numbered("bob", i)).await.unwrap();
        acked.insert(i);
    }
    let ballast = fill(disk.dir.path());
    // The log may still have room in blocks it already holds; sends fail once it has none.
    let mut refused = None;
    for i in 20..5000 {
        match alice.chat.send_message(numbered("bob", i)).await {
            Ok(_) => {
                acked.insert(i);
            }
            Err(status) => {
                refused = Some((i, status));
                break;
            }
        }
    }
    let (failed, status) = refused.expect("a send is refused on a full disk");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("the server is out of disk space"),
        "{status:?}"
    );
    let retry = status.get_error_details().retry_info().cloned();
    assert!(
        retry.and_then(|r| r.retry_delay).is_some(),
        "RetryInfo tells when to try again"
    );
    // SendStream answers the same way.
    let mut answers = alice
        .chat
        .send_stream(tokio_stream::iter([pb::SendStreamRequest {
            message: Some(numbered("bob", 9_000)),
        }]))
        .await
        .unwrap()
        .into_inner();
    let answer = within("the SendStream answer", answers.message())
        .await
        .unwrap()
        .expect("one answer");
    assert_eq!(answer.code, Code::ResourceExhausted as i32, "{answer:?}");
    assert!(answer.error.contains("the server is out of disk space"));
    assert!(answer.retry_after_ms > 0);

    // Space comes back: the next send works, without a restart.
    std::fs::remove_file(ballast).unwrap();
    alice
        .chat
        .send_message(numbered("bob", failed))
        .await
        .unwrap();
    acked.insert(failed);
    handle.shutdown.cancel();
    within("the server to stop", handle.task)
        .await
        .unwrap()
        .unwrap();

    // Everything acknowledged is there after a restart; nothing refused is.
    let handle = server::start(config).await.unwrap();
    let remote = Remote {
        url: format!("http://{}", handle.addr),
    };
    let stored: BTreeSet<u64> = backlog_numbers(&remote, "bob").await.into_iter().collect();
    assert_eq!(stored, acked);
    handle.shutdown.cancel();
    within("the server to stop", handle.task)
        .await
        .unwrap()
        .unwrap();
}
