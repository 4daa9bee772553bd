//! Writes the seed corpus: `cargo run --example make_corpus` in fuzz/.
//!
//! Every seed comes from `rmmap_fuzz::seeds`, which builds real frames and
//! structure-aware inputs from values, so the corpus is regenerated rather
//! than edited. Files are named after what they contain; inputs libFuzzer
//! finds later go elsewhere (see README.md), and files no seed produces are
//! left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in rmmap_fuzz::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in rmmap_fuzz::seeds::seeds(target) {
            std::fs::write(dir.join(&name), &bytes)?;
            println!("{target}/{name}: {} bytes", bytes.len());
        }
    }
    Ok(())
}
