//! Replays every committed input through its target, on stable:
//! `cargo test` in fuzz/. Inputs that once crashed stay in
//! `regressions/<target>/` forever; `corpus/<target>/` holds the seeds.

use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut n = 0;
    for target in rmmap_fuzz::TARGETS {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).expect("readable input");
            eprintln!("{target}: {}", path.display());
            assert!(rmmap_fuzz::run_target(target, &data));
            n += 1;
        }
    }
    n
}

#[test]
fn every_regression_input_passes_its_target() {
    replay("regressions");
}

#[test]
fn every_seed_passes_its_target() {
    assert!(replay("corpus") > 0, "the seed corpus is missing");
}

#[test]
fn the_committed_seeds_are_what_make_corpus_writes() {
    for target in rmmap_fuzz::TARGETS {
        let seeds = rmmap_fuzz::seeds::seeds(target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for (name, bytes) in seeds {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target)
                .join(&name);
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} is stale: run `cargo run --example make_corpus` in fuzz/",
                path.display()
            );
        }
    }
}
