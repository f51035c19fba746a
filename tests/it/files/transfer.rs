//! Well-behaved transfers: whole files, resumes, refusals a sender is told about, and a busy
//! receiver that still takes private messages.

use confab::pb::{FileDecision, PeerMessage};
use confab::peer::file::{FileError, FileLimits, FileToSend, send_file};
use confab::peer::send;
use sha2::{Digest as _, Sha256};

use super::*;

#[tokio::test]
async fn an_accepted_file_arrives_whole_under_its_name_with_its_checksum() {
    let mut bob = Recipient::start(FileLimits::default()).await;
    let alice = bob.allow("alice");
    let src = tempfile::tempdir().unwrap();
    // Several chunks and a short last one.
    let path = source(&src, "report.pdf", 3 * 65_515 + 17);
    let file = FileToSend::open(&path).unwrap();
    let sent_progress = progress();
    let sending = bob.send_from_alice(&alice, &file, sent_progress.clone());
    let offer = bob.offered().await;
    assert_eq!(
        (offer.from.as_str(), offer.name.as_str()),
        ("alice", "report.pdf")
    );
    assert_eq!((offer.size, offer.offset), (file.size, 0));
    assert_eq!(offer.from_key, alice.public());
    let received_progress = offer.progress.clone();
    assert!(offer.answer(true));

    let saved = bob.finished().await.expect("saved");
    let sent = sending.await.unwrap().expect("confirmed");
    let content = std::fs::read(&path).unwrap();
    let digest: [u8; 32] = Sha256::digest(&content).into();
    assert_eq!(saved.path, bob.dir().join("report.pdf"));
    assert_eq!(std::fs::read(&saved.path).unwrap(), content);
    assert_eq!((saved.sha256, sent.sha256), (digest, digest));
    assert_eq!((sent.offset, sent.size), (0, file.size));
    assert_eq!(sent_progress.done(), file.size);
    assert_eq!(received_progress.done(), file.size);
    assert_eq!(bob.written(), ["downloads", "downloads/report.pdf"]);
}

#[tokio::test]
async fn an_empty_file_is_a_file_too() {
    let mut bob = Recipient::start(FileLimits::default()).await;
    let alice = bob.allow("alice");
    let src = tempfile::tempdir().unwrap();
    let file = FileToSend::open(&source(&src, "empty", 0)).unwrap();
    let sending = bob.send_from_alice(&alice, &file, progress());
    assert!(bob.offered().await.answer(true));
    let saved = bob.finished().await.expect("saved");
    sending.await.unwrap().expect("confirmed");
    assert_eq!(std::fs::read(saved.path).unwrap(), b"");
}

#[tokio::test]
async fn a_cut_off_transfer_resumes_from_what_the_receiver_holds() {
    let mut bob = Recipient::start(quick_limits()).await;
    let src = tempfile::tempdir().unwrap();
    let path = source(&src, "big.bin", 200_000);
    let content = std::fs::read(&path).unwrap();
    let file = FileToSend::open(&path).unwrap();

    // First attempt: a sender that dies after 100 000 bytes.
    let mut offer = offer("big.bin", file.size, &file.transfer_id);
    offer.from = "alice".into();
    let mut raw = bob.raw_accepted(&offer).await;
    raw.send(&chunk(&content[..60_000])).await;
    raw.send(&chunk(&content[60_000..100_000])).await;
    drop(raw);
    let cut = bob.finished().await.expect_err("cut off");
    assert!(cut.contains("after 100000 of 200000 bytes"), "{cut}");
    assert!(
        !bob.dir().join("big.bin").exists(),
        "nothing under the final name"
    );

    // Second attempt, a real sender with a new key (a new login): it resumes.
    let alice = bob.allow("alice");
    let sent_progress = progress();
    let sending = bob.send_from_alice(&alice, &file, sent_progress.clone());
    let again = bob.offered().await;
    assert_eq!(
        again.offset, 100_000,
        "resumes where the first attempt stopped"
    );
    assert!(again.answer(true));
    let saved = bob.finished().await.expect("saved");
    let sent = sending.await.unwrap().expect("confirmed");
    assert_eq!(sent.offset, 100_000);
    assert_eq!(sent_progress.offset(), 100_000);
    assert_eq!(std::fs::read(saved.path).unwrap(), content);
    assert_eq!(
        bob.written(),
        ["downloads", "downloads/big.bin"],
        "no .part left"
    );
}

#[tokio::test]
async fn a_declined_or_oversize_file_is_refused_with_a_reason() {
    let limits = FileLimits {
        max_bytes: 1000,
        ..FileLimits::default()
    };
    let mut bob = Recipient::start(limits).await;
    let alice = bob.allow("alice");
    let src = tempfile::tempdir().unwrap();
    let big = FileToSend::open(&source(&src, "big", 1001)).unwrap();
    let err = bob
        .send_from_alice(&alice, &big, progress())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, FileError::Declined { decision: FileDecision::TooLarge, reason } if reason.contains("at most 1000 bytes")),
        "{err:?}"
    );

    let small = FileToSend::open(&source(&src, "small", 1000)).unwrap();
    let sending = bob.send_from_alice(&alice, &small, progress());
    assert!(bob.offered().await.answer(false));
    let err = sending.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, FileError::Declined { decision: FileDecision::Denied, reason } if reason == "bob declined the file"),
        "{err:?}"
    );
    assert_eq!(bob.written(), ["downloads"], "nothing kept of either");
}

#[tokio::test]
async fn an_unanswered_offer_expires_as_a_denial() {
    let limits = FileLimits {
        answer_wait: std::time::Duration::from_millis(300),
        ..FileLimits::default()
    };
    let mut bob = Recipient::start(limits).await;
    let mut raw = bob.raw_offer(&offer("x", 10, "t1")).await;
    let offered = bob.offered().await;
    let answer = raw.answer().await;
    assert_eq!(answer.decision(), FileDecision::Denied);
    assert!(answer.reason.contains("did not answer"), "{answer:?}");
    assert!(
        !offered.answer(true),
        "too late: the user is told it expired"
    );
}

#[tokio::test]
async fn a_receiver_busy_with_transfers_says_busy_and_still_takes_private_messages() {
    let limits = FileLimits {
        max_transfers: 1,
        ..FileLimits::default()
    };
    let mut bob = Recipient::start(limits).await;
    // The one transfer slot is taken by an offer waiting for its answer.
    let mut first = bob.raw_offer(&offer("one", 10, "t1")).await;
    let waiting = bob.offered().await;

    let mut second = bob.raw_offer(&offer("two", 10, "t2")).await;
    let answer = second.answer().await;
    assert_eq!(answer.decision(), FileDecision::Busy, "{answer:?}");

    // A private message gets through at once meanwhile.
    let carol = bob.allow("carol");
    let message = PeerMessage {
        message_id: "m1".into(),
        from: "carol".into(),
        to: "bob".into(),
        body: "still there?".into(),
        sent_at_ms: 1,
    };
    send(
        "127.0.0.1",
        bob.port(),
        bob.keys.public(),
        &carol,
        &message,
        PATIENCE,
    )
    .await
    .expect("a private message while a transfer waits");
    let got = timeout(PATIENCE, bob.inbound.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message.body, "still there?");

    assert!(waiting.answer(false));
    assert_eq!(first.answer().await.decision(), FileDecision::Denied);
}

#[tokio::test]
async fn the_same_transfer_twice_at_once_is_busy() {
    let mut bob = Recipient::start(FileLimits::default()).await;
    let _first = bob.raw_offer(&offer("one", 10, "same")).await;
    let _waiting = bob.offered().await;
    let mut again = bob.raw_offer(&offer("one", 10, "same")).await;
    assert_eq!(again.answer().await.decision(), FileDecision::Busy);
}

#[tokio::test]
async fn a_listener_that_takes_no_files_closes_file_connections() {
    let keys = PeerKeys::generate();
    let (listener, _inbound) = PeerListener::bind("127.0.0.1:0".parse().unwrap(), keys.clone())
        .await
        .unwrap();
    let alice = PeerKeys::generate();
    listener.allow("alice", alice.public().to_vec());
    let src = tempfile::tempdir().unwrap();
    let file = FileToSend::open(&source(&src, "f", 10)).unwrap();
    let port = listener.local_addr().port();
    let err = send_file(
        "127.0.0.1",
        port,
        keys.public(),
        &alice,
        "alice",
        "bob",
        &file,
        progress(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FileError::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn a_sender_whose_key_is_not_allowed_is_refused_at_the_handshake() {
    let bob = Recipient::start(FileLimits::default()).await;
    let src = tempfile::tempdir().unwrap();
    let file = FileToSend::open(&source(&src, "f", 10)).unwrap();
    let stranger = PeerKeys::generate();
    let err = bob
        .send_from_alice(&stranger, &file, progress())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, FileError::Refused), "{err:?}");
    assert_eq!(bob.written(), ["downloads"]);
}
