//! Which paths the watcher cares about, and why: the one place that decides whether a path under a
//! watched folder is an asset, a sidecar, or ignored (and by which rule), so `watch --explain` and the
//! event pipeline can never disagree.
//!
//! Rules, first match wins: outside every watched folder; inside one of the tool's own folders (logs,
//! data, cache, config: history appends and trash moves must never feed back); a hidden component
//! (this also covers the tool's own atomic-write temp files `.<name>.tmp<pid>-<n>`); a sidecar (judged
//! by its asset); an `obs.assets.ignore` glob (matched by the registry's own `IgnoreRules`, one
//! pattern at a time, so the watcher and the registry always agree and `--explain` can name the
//! pattern); otherwise an asset. This module reads no files.

use std::path::{Component, Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::registry::IgnoreRules;

/// File-name suffix of a sidecar: `hero.png` → `hero.png.asset.json`.
pub const SIDECAR_SUFFIX: &str = crate::registry::SUFFIX;

/// What a path is to the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Asset,
    /// A folder inside a watched folder that no rule ignores (files inside it may be assets).
    Folder,
    /// A sidecar of the asset at `asset` (which itself classifies as an asset).
    Sidecar {
        asset: PathBuf,
    },
    Ignored,
}

/// The rule that decided, with the detail `--explain` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `asset`, `folder`, `sidecar` or `ignored`.
    pub class: &'static str,
    pub watched: bool,
    /// Stable rule id: `outside-roots`, `own-folder`, `not-utf8`, `hidden`, `sidecar`, `ignore-glob`,
    /// `asset`.
    pub rule: &'static str,
    pub detail: String,
}

/// One `obs.assets.ignore` pattern, compiled alone with the registry's own matcher so the decision
/// is the registry's and `--explain` can still name the pattern that decided.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    rules: IgnoreRules,
}

/// The compiled rules for one watch session.
#[derive(Debug, Clone)]
pub struct Rules {
    assets_root: PathBuf,
    roots: Vec<PathBuf>,
    own_dirs: Vec<(PathBuf, &'static str)>,
    patterns: Vec<Pattern>,
}

impl Rules {
    /// `roots` are the watched folders (absolute, inside `assets_root`); `own_dirs` the tool's folders
    /// with a name for messages; `ignore` the `obs.assets.ignore` globs.
    pub fn new(
        assets_root: &Path,
        roots: &[PathBuf],
        own_dirs: &[(PathBuf, &'static str)],
        ignore: &[String],
    ) -> Result<Rules> {
        let mut patterns = Vec::with_capacity(ignore.len());
        for text in ignore {
            patterns.push(Pattern { text: text.clone(), rules: IgnoreRules::new(std::slice::from_ref(text))? });
        }
        Ok(Rules {
            assets_root: assets_root.to_path_buf(),
            roots: roots.to_vec(),
            own_dirs: own_dirs.to_vec(),
            patterns,
        })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    pub fn assets_root(&self) -> &Path {
        &self.assets_root
    }

    /// The class of `path`; `is_dir` says whether the path itself is a folder (folder-only globs then
    /// apply to its last component too).
    pub fn classify(&self, path: &Path, is_dir: bool) -> Class {
        let v = self.explain(path, is_dir);
        match v.class {
            "asset" => Class::Asset,
            "folder" => Class::Folder,
            "sidecar" => Class::Sidecar { asset: asset_of_sidecar(path).expect("checked by explain") },
            _ => Class::Ignored,
        }
    }

    /// True when `path` is an asset.
    pub fn is_asset(&self, path: &Path) -> bool {
        self.classify(path, false) == Class::Asset
    }

    /// True when events under the folder `dir` can matter (it is not itself ignored).
    pub fn is_watched_dir(&self, dir: &Path) -> bool {
        self.explain(dir, true).watched
    }

    /// Decide for `path` and say which rule decided.
    pub fn explain(&self, path: &Path, is_dir: bool) -> Verdict {
        let ignored = |rule, detail: String| Verdict { class: "ignored", watched: false, rule, detail };
        let Some(root) = self.roots.iter().find(|r| path.starts_with(r)) else {
            let list: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            return ignored("outside-roots", format!("not inside a watched folder ({})", list.join(", ")));
        };
        if let Some((dir, name)) = self.own_dirs.iter().find(|(d, _)| path.starts_with(d)) {
            return ignored(
                "own-folder",
                format!("inside the tool's own {name} folder {} (its writes never become events)", dir.display()),
            );
        }
        let rel = path.strip_prefix(&self.assets_root).unwrap_or_else(|_| path.strip_prefix(root).unwrap_or(path));
        let mut names: Vec<&str> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(os) => match os.to_str() {
                    Some(n) => names.push(n),
                    None => {
                        return ignored(
                            "not-utf8",
                            format!("{:?} is not UTF-8, so it cannot be recorded in a sidecar", os),
                        )
                    }
                },
                _ => return ignored("outside-roots", "the path is not a plain path below the assets root".into()),
            }
        }
        if let Some(hidden) = names.iter().find(|n| n.starts_with('.')) {
            return ignored("hidden", format!("{hidden:?} is hidden (starts with '.')"));
        }
        if !is_dir {
            if let Some(asset) = asset_of_sidecar(path) {
                let inner = self.explain(&asset, false);
                return if inner.watched {
                    Verdict {
                        class: "sidecar",
                        watched: true,
                        rule: "sidecar",
                        detail: format!(
                            "sidecar of {}: edits are validated and published, the tool's own writes are not",
                            asset.display()
                        ),
                    }
                } else {
                    ignored(
                        "sidecar",
                        format!("sidecar of {}, which is not watched: {}", asset.display(), inner.detail),
                    )
                };
            }
        }
        if !names.is_empty() {
            let rel_text = names.join("/");
            // Folders are every name but the last, plus the last when the path is a folder.
            let dir_count = if is_dir { names.len() } else { names.len() - 1 };
            for p in &self.patterns {
                let dir_hit = (1..=dir_count).any(|n| p.rules.ignores_dir(&names[..n].join("/")));
                if dir_hit || (!is_dir && p.rules.ignores_file(&rel_text)) {
                    return ignored("ignore-glob", format!("matches obs.assets.ignore pattern {:?}", p.text));
                }
            }
        }
        if is_dir {
            return Verdict {
                class: "folder",
                watched: true,
                rule: "asset",
                detail: "a watched folder: files inside it are assets unless a rule says otherwise".into(),
            };
        }
        Verdict {
            class: "asset",
            watched: true,
            rule: "asset",
            detail: "inside a watched folder, not hidden, not a sidecar, and no ignore pattern matches".into(),
        }
    }
}

/// `hero.png.asset.json` → `hero.png`; `None` for anything that is not a sidecar name.
pub fn asset_of_sidecar(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(SIDECAR_SUFFIX)?;
    (!stem.is_empty()).then(|| path.with_file_name(stem))
}

/// `hero.png` → `hero.png.asset.json`.
pub fn sidecar_of(asset: &Path) -> PathBuf {
    let mut s = asset.as_os_str().to_os_string();
    s.push(SIDECAR_SUFFIX);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let defaults = crate::config::Config::defaults();
        Rules::new(
            Path::new("/r/assets"),
            &[PathBuf::from("/r/assets")],
            &[(PathBuf::from("/r/assets/logs"), "log")],
            &defaults.obs.assets.ignore,
        )
        .unwrap()
    }

    fn rule(path: &str) -> &'static str {
        rules().explain(Path::new(path), false).rule
    }

    #[test]
    fn each_rule_decides_its_cases() {
        assert_eq!(rule("/elsewhere/a.png"), "outside-roots");
        assert_eq!(rule("/r/assets/logs/hooks/history.jsonl"), "own-folder");
        assert_eq!(rule("/r/assets/chars/.hero.png.swp"), "hidden");
        assert_eq!(rule("/r/assets/.git/config"), "hidden");
        // The tool's own atomic-write temp files are hidden whatever the config says.
        assert_eq!(rule("/r/assets/chars/.hero.png.asset.json.tmp123-4"), "hidden");
        assert_eq!(rule("/r/assets/dl/pack.zip.part"), "ignore-glob");
        assert_eq!(rule("/r/assets/dl/pack.zip.crdownload"), "ignore-glob");
        assert_eq!(rule("/r/assets/chars/hero.png~"), "ignore-glob");
        assert_eq!(rule("/r/assets/chars/_meta/notes.txt"), "ignore-glob");
        assert_eq!(rule("/r/assets/chars/hero.png"), "asset");
        assert_eq!(rule("/r/assets/chars/hero.png.asset.json"), "sidecar");
        assert_eq!(rules().explain(Path::new("/r/assets/chars/hero.png.asset.json"), false).class, "sidecar");
        // A sidecar of an ignored file is not watched.
        let v = rules().explain(Path::new("/r/assets/dl/x.part.asset.json"), false);
        assert!(!v.watched && v.detail.contains("*.part"), "{v:?}");
    }

    #[test]
    fn folder_patterns_only_match_folders() {
        let r =
            Rules::new(Path::new("/a"), &[PathBuf::from("/a")], &[], &["_meta/".into(), "raw/*.psd".into()]).unwrap();
        assert_eq!(r.classify(Path::new("/a/_meta"), false), Class::Asset, "a file named _meta is an asset");
        assert_eq!(r.classify(Path::new("/a/_meta"), true), Class::Ignored);
        assert_eq!(r.classify(Path::new("/a/x/_meta/y.png"), false), Class::Ignored);
        assert_eq!(r.classify(Path::new("/a/raw/a.psd"), false), Class::Ignored);
        assert_eq!(r.classify(Path::new("/a/raw/sub/a.psd"), false), Class::Asset, "* does not cross '/'");
        assert_eq!(r.classify(Path::new("/a/b/raw/a.psd"), false), Class::Asset, "anchored at the assets root");
        assert_eq!(
            r.classify(Path::new("/a/hero.png.asset.json"), false),
            Class::Sidecar { asset: PathBuf::from("/a/hero.png") }
        );
    }

    #[test]
    fn bad_glob_names_the_pattern() {
        let err = Rules::new(Path::new("/a"), &[], &[], &["[".into()]).unwrap_err().to_string();
        assert!(err.contains("obs.assets.ignore") && err.contains("\"[\""), "{err}");
    }

    #[test]
    fn sidecar_names_round_trip() {
        assert_eq!(sidecar_of(Path::new("/a/hero.png")), PathBuf::from("/a/hero.png.asset.json"));
        assert_eq!(asset_of_sidecar(Path::new("/a/hero.png.asset.json")), Some(PathBuf::from("/a/hero.png")));
        assert_eq!(asset_of_sidecar(Path::new("/a/.asset.json")), None);
        assert_eq!(asset_of_sidecar(Path::new("/a/hero.png")), None);
    }
}
