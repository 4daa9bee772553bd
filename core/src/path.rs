//! Paths as clients name them: relative, `/`-separated, confined by syntax.
//!
//! This is the first of two fences. [`ExportPath::parse`] refuses anything
//! that is not a plain relative path (absolute paths, `..`, `.`, empty
//! components, NUL bytes, non-UTF-8, over-long names). The second fence is
//! the store, which must resolve the path beneath the export root without
//! following symlinks out of it (`rmmap-store` uses cap-std).

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
    /// A `..` component.
    #[error("the path contains `..`; paths may not leave the export root")]
    ParentComponent,
    /// An empty or `.` component (`a//b`, `a/./b`, a trailing `/`).
    #[error("the path has an empty or `.` component; write it in plain form (a/b/c)")]
    NotNormal,
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
        for c in s.split('/') {
            match c {
                ".." => return Err(PathError::ParentComponent),
                "" | "." => return Err(PathError::NotNormal),
                _ => {}
            }
        }
        Ok(ExportPath(s.to_owned()))
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
        assert_eq!(ExportPath::parse(b"a/./b"), Err(PathError::NotNormal));
        assert_eq!(ExportPath::parse(b"a/"), Err(PathError::NotNormal));
        assert_eq!(ExportPath::parse(&[0xff, 0xfe]), Err(PathError::NotUtf8));
        assert_eq!(
            ExportPath::parse(&vec![b'a'; 10_000]),
            Err(PathError::TooLong(10_000))
        );
    }
}
