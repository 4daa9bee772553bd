//! Paths as clients name them: relative, `/`-separated, confined by syntax.
//!
//! This is the first of two fences. [`ExportPath::parse`] normalises a
//! relative path lexically, as a URL's path is (`.` is dropped, `a/..`
//! cancels out: `sub/../f` is `f`), then confines it: a `..` that would
//! climb above the root, absolute paths, empty components, NUL bytes,
//! non-UTF-8 and over-long names are refused. The lexical rule gives every
//! file one name whatever the symlinks on the way (`link/../f` is `f` even
//! when `link` points elsewhere). The second fence is the store, which must
//! resolve the path beneath the export root without following symlinks out
//! of it (`rmmap-store` uses cap-std).

use std::fmt;

use crate::protocol::MAX_PATH_LEN;

/// A validated path relative to the export root.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExportPath(String);

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The empty string.
    #[error("the path is empty")]
    Empty,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("the path is {0} bytes long; at most {max} are allowed", max = MAX_PATH_LEN)]
    TooLong(usize),
    /// Not UTF-8.
    #[error("the path is not valid UTF-8")]
    NotUtf8,
    /// Contains a NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// Starts with `/`.
    #[error("the path is absolute; paths are relative to the export root")]
    Absolute,
    /// A `..` component that climbs above the root (`../x`, `a/../../x`).
    #[error("the path contains `..`; paths may not leave the export root")]
    ParentComponent,
    /// An empty component (`a//b`, a trailing `/`).
    #[error("the path has an empty component; write it in plain form (a/b/c)")]
    NotNormal,
    /// Names the export root itself once normalised (`.`, `a/..`).
    #[error("the path names the export root itself, not a file")]
    Root,
}

impl ExportPath {
    /// Validates raw bytes from the wire.
    pub fn parse(raw: &[u8]) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(raw.len()));
        }
        if raw.contains(&0) {
            return Err(PathError::Nul);
        }
        let s = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
        if s.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut kept: Vec<&str> = Vec::new();
        for c in s.split('/') {
            match c {
                ".." => {
                    kept.pop().ok_or(PathError::ParentComponent)?;
                }
                "." => {}
                "" => return Err(PathError::NotNormal),
                _ => kept.push(c),
            }
        }
        if kept.is_empty() {
            return Err(PathError::Root);
        }
        Ok(ExportPath(kept.join("/")))
    }

    /// `scope/self`: a path under a client's sub-directory of the root.
    pub fn within(&self, scope: &ExportPath) -> ExportPath {
        ExportPath(format!("{}/{}", scope.0, self.0))
    }

    /// The path as a string (never starts with `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Debug for ExportPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ExportPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_are_accepted() {
        assert_eq!(ExportPath::parse(b"a").unwrap().as_str(), "a");
        assert_eq!(
            ExportPath::parse(b"dir/file.bin").unwrap().as_str(),
            "dir/file.bin"
        );
        assert_eq!(ExportPath::parse(b"..a/b..").unwrap().as_str(), "..a/b..");
    }

    #[test]
    fn dot_and_dot_dot_inside_the_root_are_normalised() {
        let name = |raw: &[u8]| ExportPath::parse(raw).unwrap().as_str().to_owned();
        assert_eq!(name(b"sub/../f"), "f");
        assert_eq!(name(b"a/./b"), "a/b");
        assert_eq!(name(b"./a"), "a");
        assert_eq!(name(b"a/b/../../c/d/.."), "c");
        assert_eq!(ExportPath::parse(b"a/.."), Err(PathError::Root));
        assert_eq!(ExportPath::parse(b"."), Err(PathError::Root));
    }

    #[test]
    fn escapes_and_odd_forms_are_refused_with_a_reason() {
        assert_eq!(ExportPath::parse(b""), Err(PathError::Empty));
        assert_eq!(ExportPath::parse(b"../x"), Err(PathError::ParentComponent));
        assert_eq!(
            ExportPath::parse(b"a/../../x"),
            Err(PathError::ParentComponent)
        );
        assert_eq!(ExportPath::parse(b"/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(ExportPath::parse(b"a\0b"), Err(PathError::Nul));
        assert_eq!(ExportPath::parse(b"a//b"), Err(PathError::NotNormal));
        assert_eq!(
            ExportPath::parse(b"a/b/../../.."),
            Err(PathError::ParentComponent)
        );
        assert_eq!(ExportPath::parse(b"a/"), Err(PathError::NotNormal));
        assert_eq!(ExportPath::parse(&[0xff, 0xfe]), Err(PathError::NotUtf8));
        assert_eq!(
            ExportPath::parse(&vec![b'a'; 10_000]),
            Err(PathError::TooLong(10_000))
        );
    }
}
