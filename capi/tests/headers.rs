//! The committed headers are exactly what cbindgen makes of the source, so
//! a change to the C API that forgets them fails here (and so in CI).
//! `RMMAP_BLESS=1 cargo test -p rmmap-c --test headers` rewrites them.

use std::path::Path;

fn generate(config: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join(config)).expect("cbindgen config");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut out);
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn committed_headers_match_what_cbindgen_generates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var_os("RMMAP_BLESS").is_some();
    let mut stale = Vec::new();
    for (config, header) in [
        ("cbindgen-fmmap.toml", "include/fmmap.h"),
        ("cbindgen-rmmap.toml", "include/rmmap.h"),
    ] {
        let want = generate(config);
        let path = dir.join(header);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if bless {
                std::fs::write(&path, &want).unwrap();
            } else {
                stale.push(header);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} are stale: the C API changed without them. \
         Regenerate with `RMMAP_BLESS=1 cargo test -p rmmap-c --test headers` and commit them."
    );
}
