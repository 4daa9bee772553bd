//! No Rust panic may unwind into C: every exported function's body is one
//! call of `guard`, `status` or `posix` (src/boundary.rs), which catch it (and a
//! callback handed to C catches for itself). This reads the source and
//! fails for a function that forgets.

use std::path::Path;

#[test]
fn every_exported_function_runs_inside_the_panic_boundary() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut exported = 0;
    let mut no_mangle = 0;
    let mut unguarded = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        no_mangle += text.matches("#[unsafe(no_mangle)]").count();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("extern \"C\" fn ") {
            let after = &rest[at + "extern \"C\" fn ".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // The body starts after the signature's `{`; its first
            // statement, comments aside, must enter the boundary.
            let body = &after[after.find('{').expect("a body") + 1..];
            let first = body
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("//"))
                .unwrap_or_default();
            let enters = [
                "guard(",
                "status(",
                "posix(",
                "crate::boundary::guard(",
                // A callback the library registers (atexit) catches for itself.
                "let _ = std::panic::catch_unwind(",
            ]
            .iter()
            .any(|g| first.starts_with(g));
            if !enters {
                unguarded.push(format!("{}: {name} starts with `{first}`", path.display()));
            }
            exported += 1;
            rest = body;
        }
    }
    assert!(exported > 0);
    assert!(
        exported >= no_mangle,
        "every #[no_mangle] item is an extern \"C\" fn this test read"
    );
    assert!(
        unguarded.is_empty(),
        "outside the panic boundary: {unguarded:#?}"
    );
}
