//! `cargo fuzz run server`: see the table in `src/lib.rs` and README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rmmap_fuzz::server::run(data));
