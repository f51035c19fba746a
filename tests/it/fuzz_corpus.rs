//! Every input the fuzzers kept (`fuzz/corpus/TARGET/`) and every crash they found
//! (`fuzz/regressions/TARGET/`), replayed through the same entry points on stable Rust, so CI
//! checks them without a nightly toolchain or sanitizers. `docs/fuzzing.md` says how to run the
//! fuzzers themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use confab::fuzzing::{TARGETS, store_open, store_seed};

/// Panics anywhere in the process, spawned tasks of the peer listener included (tokio would
/// otherwise swallow them).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// Replays `target`'s corpus and regressions; returns how many inputs ran.
fn replay(target: &str) -> usize {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let corpus = inputs(&root.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target} is empty: commit the minimized corpus"
    );
    let regressions = inputs(&root.join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let data = std::fs::read(path).unwrap();
        let before = PANICS.load(Ordering::SeqCst);
        let outcome = std::panic::catch_unwind(|| run(&data));
        if outcome.is_err() || PANICS.load(Ordering::SeqCst) != before {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
    corpus.len() + regressions.len()
}

#[test]
fn peer_listener_corpus_replays() {
    count_panics();
    replay("peer_listener");
}

#[test]
fn request_corpus_replays() {
    count_panics();
    replay("request");
}

#[test]
fn chat_command_corpus_replays() {
    count_panics();
    replay("chat_command");
}

#[test]
fn store_open_corpus_replays() {
    count_panics();
    replay("store_open");
}

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["peer_listener", "request", "chat_command", "store_open"]
    );
}

/// The store seeds open as stored, and a store cut short or overwritten by noise is refused or
/// read whole (never a panic, never half served): the target's promise on inputs made here.
#[test]
fn store_seeds_open_and_damaged_copies_are_refused_or_served_whole() {
    count_panics();
    for seed in store_seed() {
        store_open(&seed);
        for cut in [seed.len() / 2, seed.len() - 100, 9] {
            store_open(&seed[..cut]);
        }
        let mut noisy = seed.clone();
        for (i, byte) in noisy.iter_mut().enumerate().skip(8) {
            if i % 97 == 0 {
                *byte ^= 0x5a;
            }
        }
        store_open(&noisy);
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
}

/// Writes the store seeds into `fuzz/corpus/store_open/` (run by hand after a schema change:
/// `cargo nextest run --run-ignored only -E 'test(write_store_seeds)'`).
#[test]
#[ignore = "writes into the source tree; run by hand"]
fn write_store_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/store_open");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in store_seed().into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
    }
}
