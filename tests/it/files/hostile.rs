//! Offers and transfers a well-behaved client never makes: hostile names, lies about the size or
//! the checksum, stalls and garbage. Each checks what the receiver said or did, and that nothing
//! was written outside the download directory nor under a final name that was not earned.

use confab::pb::FileDecision;
use confab::peer::file::FileLimits;
use sha2::{Digest as _, Sha256};

use super::*;

/// Sends `content` whole and the right checksum as a raw sender offering `name`; returns where
/// the receiver saved it.
async fn deliver(bob: &mut Recipient, name: &str, content: &[u8], id: &str) -> PathBuf {
    let mut raw = bob
        .raw_accepted(&offer(name, content.len() as u64, id))
        .await;
    for piece in content.chunks(65_515) {
        raw.send(&chunk(piece)).await;
    }
    raw.send(&checksum(&Sha256::digest(content))).await;
    bob.finished().await.expect("saved").path
}

#[tokio::test]
async fn hostile_names_are_saved_as_plain_names_inside_the_download_directory() {
    let mut bob = Recipient::start(FileLimits::default()).await;
    let long = "x".repeat(1000);
    let cases: [(&str, &str); 9] = [
        ("../../escaped", "escaped"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows.ini", "windows.ini"),
        ("..", "download"),
        ("nul\0in/../middle\0.txt", "middle.txt"),
        ("bell\x07and\x1b[31mred", "belland[31mred"),
        (".hidden", "hidden"),
        ("/", "download (1)"),
        (&long, &long[..200]),
    ];
    for (i, (offered, plain)) in cases.iter().enumerate() {
        let content = format!("content {i}");
        let saved = deliver(&mut bob, offered, content.as_bytes(), &format!("t{i}")).await;
        assert_eq!(saved, bob.dir().join(plain), "offered {offered:?}");
        assert_eq!(std::fs::read(&saved).unwrap(), content.as_bytes());
    }
    // Only the download directory at the top, and only plain files inside it.
    let written = bob.written();
    assert_eq!(written.len(), cases.len() + 1, "{written:?}");
    assert!(
        written
            .iter()
            .all(|p| p == "downloads" || p.starts_with("downloads/"))
    );
    assert!(
        written.iter().all(|p| p.matches('/').count() <= 1),
        "{written:?}"
    );
}

#[tokio::test]
async fn an_existing_file_is_never_overwritten() {
    let mut bob = Recipient::start(FileLimits::default()).await;
    std::fs::write(bob.dir().join("notes.txt"), b"mine").unwrap();
    let first = deliver(&mut bob, "notes.txt", b"theirs", "t1").await;
    let second = deliver(&mut bob, "../notes.txt", b"again", "t2").await;
    assert_eq!(first, bob.dir().join("notes (1).txt"));
    assert_eq!(second, bob.dir().join("notes (2).txt"));
    assert_eq!(std::fs::read(bob.dir().join("notes.txt")).unwrap(), b"mine");
}

#[tokio::test]
async fn a_sender_sending_more_than_it_offered_is_cut_off_and_discarded() {
    let mut bob = Recipient::start(quick_limits()).await;
    let mut raw = bob.raw_accepted(&offer("lie.bin", 10, "t1")).await;
    raw.send(&chunk(b"0123456789")).await;
    raw.send(&chunk(b"and more")).await;
    let err = bob.finished().await.expect_err("cut off");
    assert!(err.contains("more than the 10 bytes it offered"), "{err}");
    assert!(raw.closed_without_reply().await, "no ack");
    assert_eq!(bob.written(), ["downloads"], "no file, no .part");
}

#[tokio::test]
async fn a_sender_ending_before_the_offered_size_is_cut_off_and_discarded() {
    let mut bob = Recipient::start(quick_limits()).await;
    let mut raw = bob.raw_accepted(&offer("short.bin", 100, "t1")).await;
    raw.send(&chunk(b"only ten b")).await;
    raw.send(&checksum(&Sha256::digest(b"only ten b"))).await;
    let err = bob.finished().await.expect_err("cut off");
    assert!(err.contains("ended after 10 of the 100 bytes"), "{err}");
    assert!(raw.closed_without_reply().await, "no ack");
    assert_eq!(bob.written(), ["downloads"]);
}

#[tokio::test]
async fn a_wrong_checksum_leaves_no_file_and_nothing_to_resume() {
    let mut bob = Recipient::start(quick_limits()).await;
    let mut raw = bob.raw_accepted(&offer("sum.bin", 5, "t1")).await;
    raw.send(&chunk(b"hello")).await;
    raw.send(&checksum(&Sha256::digest(b"HELLO"))).await;
    let err = bob.finished().await.expect_err("refused");
    assert!(err.contains("checksum does not match"), "{err}");
    assert!(raw.closed_without_reply().await, "no ack");
    assert_eq!(bob.written(), ["downloads"]);
}

#[tokio::test]
async fn a_stalled_sender_is_cut_off_and_its_bytes_kept_for_a_resume() {
    let mut bob = Recipient::start(quick_limits()).await;
    let mut raw = bob.raw_accepted(&offer("slow.bin", 100, "t1")).await;
    raw.send(&chunk(b"first part")).await;
    // …and then nothing: the receiver's stall limit (500 ms here) ends it.
    let err = bob.finished().await.expect_err("cut off");
    assert!(err.contains("sent nothing"), "{err}");
    assert!(raw.closed_without_reply().await);
    let written = bob.written();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written[1].starts_with("downloads/slow.bin.") && written[1].ends_with(".part"));
    assert_eq!(
        std::fs::read(bob.dir().join(&written[1][10..])).unwrap(),
        b"first part"
    );
}

#[tokio::test]
async fn garbage_after_the_answer_cuts_the_transfer_off() {
    let mut bob = Recipient::start(quick_limits()).await;
    let mut raw = bob.raw_accepted(&offer("g.bin", 100, "t1")).await;
    raw.send_garbage(&[0xAB; 100]).await;
    let err = bob.finished().await.expect_err("cut off");
    assert!(err.contains("did not decrypt"), "{err}");
    assert!(raw.closed_without_reply().await);
}

#[tokio::test]
async fn offers_breaking_the_rules_are_refused_as_invalid() {
    let mut bob = Recipient::start(FileLimits::default()).await;
    let mut wrong_from = offer("f", 1, "t1");
    wrong_from.from = "mallory".into();
    let no_name = offer("", 1, "t2");
    let long_name = offer(&"n".repeat(1025), 1, "t3");
    let long_id = offer("f", 1, &"i".repeat(65));
    for bad in [wrong_from, no_name, long_name, long_id] {
        let mut raw = bob.raw_offer(&bad).await;
        let answer = raw.answer().await;
        assert_eq!(answer.decision(), FileDecision::Invalid, "{bad:?}");
    }
    assert_eq!(bob.written(), ["downloads"]);
    // Nobody was asked: the next event is the offer that follows.
    let _raw = bob.raw_offer(&offer("fine", 1, "t4")).await;
    assert_eq!(bob.offered().await.name, "fine");
}

#[tokio::test]
async fn an_unknown_exchange_in_the_hello_is_closed_without_a_reply() {
    let bob = Recipient::start(FileLimits::default()).await;
    let private = bob.allow_raw("alice");
    let mut stream = TcpStream::connect(("127.0.0.1", bob.port())).await.unwrap();
    let mut hs = snow::Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().unwrap())
        .local_private_key(&private)
        .unwrap()
        .remote_public_key(bob.keys.public())
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = hs.write_message(&[8, 7], &mut buf).unwrap();
    write_frame(&mut stream, &buf[..n]).await;
    assert!(read_frame(&mut stream).await.is_none(), "closed, no reply");
}
