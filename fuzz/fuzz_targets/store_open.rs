//! `confab::fuzzing::store_open` under libFuzzer; the function's documentation says what an input
//! means and which invariants a crash breaks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| confab::fuzzing::store_open(data));
