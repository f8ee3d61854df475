//! Asset paths relative to the assets root, and the checks that keep every asset inside it.
//!
//! A [`RelPath`] is UTF-8, uses `/` separators, and has no empty, `.` or `..` components, no leading
//! `/` and no backslash, so joining it to the root can never leave the root lexically. Symbolic links
//! are handled by the callers (discovery skips them, registration refuses them). This module touches
//! no files except [`check_inside`], which only reads metadata.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use super::sidecar::SUFFIX;

/// Why a path cannot name an asset. Callers map these to exit code 2 / HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty asset path")]
    Empty,
    #[error("asset path {0:?} must be relative to the assets root")]
    Absolute(String),
    #[error("asset path {0:?} must not contain '..', '.' or empty components")]
    Traversal(String),
    #[error("asset path {0:?} must use '/' separators, not '\\\\'")]
    Backslash(String),
    #[error("asset path {0:?} is not valid UTF-8")]
    NotUtf8(String),
    #[error("{0} is outside the assets root {1}")]
    OutsideRoot(PathBuf, PathBuf),
    #[error("{0} is a symbolic link; links are not followed, register the file it points to")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file")]
    NotAFile(PathBuf),
    #[error("{0:?} is a sidecar, not an asset")]
    IsSidecar(String),
}

/// A validated path relative to the assets root (`characters/hero.png`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

impl RelPath {
    /// Validate a `/`-separated relative path (user or HTTP input, sidecar `path` fields).
    pub fn parse(s: &str) -> Result<RelPath, PathError> {
        RelPath::check(s)?;
        Ok(RelPath(s.to_string()))
    }

    /// As [`RelPath::parse`], keeping `s` (no copy; the walk makes one for every file), or giving
    /// it back with the reason it is not a valid path.
    pub fn parse_owned(s: String) -> Result<RelPath, (String, PathError)> {
        match RelPath::check(&s) {
            Ok(()) => Ok(RelPath(s)),
            Err(e) => Err((s, e)),
        }
    }

    fn check(s: &str) -> Result<(), PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_string()));
        }
        if s.contains('\\') {
            return Err(PathError::Backslash(s.to_string()));
        }
        if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(PathError::Traversal(s.to_string()));
        }
        Ok(())
    }

    /// The path of `path` below `root`, both already free of symlink surprises (walked or canonical).
    pub fn from_fs(root: &Path, path: &Path) -> Result<RelPath, PathError> {
        let rest =
            path.strip_prefix(root).map_err(|_| PathError::OutsideRoot(path.to_path_buf(), root.to_path_buf()))?;
        let mut parts = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(os) => match os.to_str() {
                    Some(s) => parts.push(s),
                    None => return Err(PathError::NotUtf8(lossy(rest))),
                },
                _ => return Err(PathError::Traversal(lossy(rest))),
            }
        }
        RelPath::parse(&parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sidecar beside this asset: `hero.png` → `hero.png.asset.json`.
    pub fn sidecar(&self) -> RelPath {
        RelPath(format!("{}{SUFFIX}", self.0))
    }

    /// For a sidecar path, the asset it describes; `None` for anything else.
    pub fn asset_of_sidecar(&self) -> Option<RelPath> {
        self.0.strip_suffix(SUFFIX).filter(|s| !s.is_empty() && !s.ends_with('/')).map(|s| RelPath(s.to_string()))
    }

    pub fn is_sidecar(&self) -> bool {
        self.0.ends_with(SUFFIX)
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The folders above the file, outermost first.
    pub fn dirs(&self) -> impl Iterator<Item = &str> {
        self.0.rsplit_once('/').map(|(dirs, _)| dirs).into_iter().flat_map(|dirs| dirs.split('/'))
    }

    /// The absolute path under `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path for messages: UTF-8 where possible, lossy otherwise (never a panic).
pub fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Check that `path` (a real file) is a regular file inside `root` without passing through a symbolic
/// link on the way: canonicalising must not change where it points relative to the root. Returns the
/// validated relative path.
pub fn check_inside(root: &Path, path: &Path) -> Result<RelPath, PathError> {
    let meta = std::fs::symlink_metadata(path).map_err(|_| PathError::NotAFile(path.to_path_buf()))?;
    if meta.file_type().is_symlink() {
        return Err(PathError::Symlink(path.to_path_buf()));
    }
    if !meta.is_file() {
        return Err(PathError::NotAFile(path.to_path_buf()));
    }
    let canon_root = root.canonicalize().map_err(|_| PathError::OutsideRoot(path.to_path_buf(), root.to_path_buf()))?;
    let canon = path.canonicalize().map_err(|_| PathError::NotAFile(path.to_path_buf()))?;
    let rel = RelPath::from_fs(&canon_root, &canon)?;
    // A symlinked folder on the way would make the canonical path differ from the lexical one.
    let abs =
        if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(path) };
    let lexical = normalise(&abs);
    if lexical != canon && lexical != root.join(rel.as_str()) {
        return Err(PathError::Symlink(path.to_path_buf()));
    }
    if rel.is_sidecar() {
        return Err(PathError::IsSidecar(rel.0));
    }
    Ok(rel)
}

/// Remove `.` and resolve `..` lexically.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_escapes() {
        assert!(RelPath::parse("characters/hero.png").is_ok());
        assert_eq!(RelPath::parse(""), Err(PathError::Empty));
        assert!(matches!(RelPath::parse("/etc/passwd"), Err(PathError::Absolute(_))));
        assert!(matches!(RelPath::parse("a/../../x"), Err(PathError::Traversal(_))));
        assert!(matches!(RelPath::parse("a//b"), Err(PathError::Traversal(_))));
        assert!(matches!(RelPath::parse("./a"), Err(PathError::Traversal(_))));
        assert!(matches!(RelPath::parse("a\\..\\b"), Err(PathError::Backslash(_))));
    }

    #[test]
    fn sidecar_names() {
        let r = RelPath::parse("bg/sky.png").unwrap();
        assert_eq!(r.sidecar().as_str(), "bg/sky.png.asset.json");
        assert_eq!(r.sidecar().asset_of_sidecar(), Some(r.clone()));
        assert_eq!(r.file_name(), "sky.png");
        assert_eq!(r.dirs().collect::<Vec<_>>(), ["bg"]);
    }

    #[test]
    fn check_inside_refuses_outside_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("assets");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/x.png"), b"x").unwrap();
        std::fs::write(dir.path().join("outside.png"), b"o").unwrap();
        assert_eq!(check_inside(&root, &root.join("a/x.png")).unwrap().as_str(), "a/x.png");
        assert!(matches!(check_inside(&root, &dir.path().join("outside.png")), Err(PathError::OutsideRoot(..))));
        std::os::unix::fs::symlink(dir.path().join("outside.png"), root.join("link.png")).unwrap();
        assert!(matches!(check_inside(&root, &root.join("link.png")), Err(PathError::Symlink(_))));
        std::os::unix::fs::symlink(root.join("a"), root.join("b")).unwrap();
        assert!(matches!(check_inside(&root, &root.join("b/x.png")), Err(PathError::Symlink(_))));
        assert!(matches!(check_inside(&root, &root.join("a")), Err(PathError::NotAFile(_))));
    }
}
