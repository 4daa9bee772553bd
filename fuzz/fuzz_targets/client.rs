//! `cargo fuzz run client`: see the table in `src/lib.rs` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmmap_fuzz::client::run(data));
