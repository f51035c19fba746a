//! `confab::fuzzing::peer_listener` under libFuzzer; the function's documentation says what an input
//! means and which invariants a crash breaks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab::fuzzing::peer_listener(data));
