//! The fuzz corpus and every input that ever crashed a fuzz target, replayed
//! by plain `cargo test` on stable through the codec checks of the
//! `decode_frame` and `roundtrip` targets (the same code: `fuzz/src/codec.rs`
//! is included below). Each file, of every target, is taken as a byte stream
//! and as a frame body: decoding never panics and whatever decodes encodes
//! back to exactly the same bytes.
//!
//! The structure-aware halves of the targets (arbitrary messages, the server
//! and client drives) need the `arbitrary` crate and `--cfg fuzzing`; `cargo
//! test` inside `fuzz/` replays the same files through those on stable.

use std::path::{Path, PathBuf};

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/codec.rs"]
mod codec;

const TARGETS: &[&str] = &["decode_frame", "roundtrip", "server", "client"];

/// Every input file under `fuzz/<kind>/<target>/`, skipping dot files.
fn inputs(kind: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut files = Vec::new();
    for target in TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("readable directory entry").path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if path.is_file() && !hidden {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(files: &[PathBuf]) {
    for path in files {
        let data = std::fs::read(path).expect("readable input");
        // A panic names the file: the test harness prints this line with it.
        println!("replaying {}", path.display());
        codec::decode_frame_checks(&data);
    }
}

#[test]
fn inputs_that_once_crashed_a_fuzz_target_decode_and_reencode_exactly() {
    replay(&inputs("regressions"));
}

#[test]
fn the_seed_corpus_decodes_and_reencodes_exactly() {
    let files = inputs("corpus");
    assert!(
        files.len() >= TARGETS.len(),
        "fuzz/corpus is missing (found {} files)",
        files.len()
    );
    replay(&files);
}
