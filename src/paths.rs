//! Where everything lives: the runtime root and the folders under it (DESIGN §1).
//!
//! Resolution order for each folder: command-line flag, then its environment variable, then the default
//! under the runtime root. This module only computes paths; it creates nothing except through
//! [`Paths::ensure`], and it never reads file contents.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Flag values that override the environment (all optional).
#[derive(Debug, Clone, Default)]
pub struct PathOverrides {
    pub root: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub assets_root: Option<PathBuf>,
}

/// The resolved runtime layout. All paths are absolute.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub log_dir: PathBuf,
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub assets_root: PathBuf,
}

impl Paths {
    /// Resolve from flags and the process environment.
    pub fn resolve(flags: &PathOverrides) -> Result<Paths> {
        Self::resolve_with(flags, |k| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from))
    }

    /// Resolve with an explicit environment lookup (tests pass a map).
    pub fn resolve_with(flags: &PathOverrides, env: impl Fn(&str) -> Option<PathBuf>) -> Result<Paths> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let abs = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
        let root = abs(flags.root.clone().or_else(|| env("COMFYVN_RUNTIME_ROOT")).unwrap_or_else(|| cwd.clone()));
        if root.is_file() {
            bail!("runtime root {} is a regular file, not a directory", root.display());
        }
        let pick = |flag: &Option<PathBuf>, var: &str, default: &str| {
            abs(flag.clone().or_else(|| env(var)).unwrap_or_else(|| root.join(default)))
        };
        Ok(Paths {
            log_dir: pick(&flags.log_dir, "COMFYVN_LOG_DIR", "logs"),
            config_dir: pick(&flags.config_dir, "COMFYVN_CONFIG_DIR", "config"),
            data_dir: pick(&flags.data_dir, "COMFYVN_DATA_DIR", "data"),
            cache_dir: pick(&flags.cache_dir, "COMFYVN_CACHE_DIR", "cache"),
            assets_root: pick(&flags.assets_root, "COMFYVN_ASSETS_ROOT", "assets"),
            root,
        })
    }

    /// A layout rooted at `root` with every folder at its default place (tests, doctor's scratch root).
    pub fn under(root: &Path) -> Paths {
        Paths {
            root: root.to_path_buf(),
            log_dir: root.join("logs"),
            config_dir: root.join("config"),
            data_dir: root.join("data"),
            cache_dir: root.join("cache"),
            assets_root: root.join("assets"),
        }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("comfyvn.json")
    }
    pub fn anonymizer_file(&self) -> PathBuf {
        self.config_dir.join("telemetry").join("anonymizer.json")
    }
    pub fn providers_file(&self) -> PathBuf {
        self.config_dir.join("settings").join("providers.json")
    }
    pub fn crash_dir(&self) -> PathBuf {
        self.log_dir.join("crash")
    }
    pub fn telemetry_file(&self) -> PathBuf {
        self.log_dir.join("telemetry").join("usage.json")
    }
    pub fn diagnostics_dir(&self) -> PathBuf {
        self.log_dir.join("diagnostics")
    }
    pub fn hooks_dir(&self) -> PathBuf {
        self.log_dir.join("hooks")
    }
    pub fn history_file(&self) -> PathBuf {
        self.hooks_dir().join("history.jsonl")
    }
    /// The history's `seq` high-water mark (kept outside `logs/`, so deleting the logs does not start
    /// `seq` again at 1).
    pub fn history_mark(&self) -> PathBuf {
        self.data_dir.join("hooks").join("seq.json")
    }
    pub fn audit_latest(&self) -> PathBuf {
        self.log_dir.join("audit").join("latest.json")
    }
    pub fn trash_dir(&self) -> PathBuf {
        self.log_dir.join("trash")
    }
    pub fn audit_cache(&self) -> PathBuf {
        self.cache_dir.join("audit-state.json")
    }
    pub fn webhooks_file(&self) -> PathBuf {
        self.data_dir.join("webhooks.json")
    }
    pub fn webhooks_dir(&self) -> PathBuf {
        self.data_dir.join("webhooks")
    }
    /// The crash uploader's outbox, upload log and dry-run envelopes.
    pub fn crash_upload_dir(&self) -> PathBuf {
        self.data_dir.join("crash-upload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_overrides_and_flags_win_over_env() {
        let dir = tempfile::tempdir().unwrap();
        let env: HashMap<&str, PathBuf> = [
            ("COMFYVN_RUNTIME_ROOT", dir.path().to_path_buf()),
            ("COMFYVN_LOG_DIR", dir.path().join("elsewhere-logs")),
        ]
        .into_iter()
        .collect();
        let flags = PathOverrides { data_dir: Some(dir.path().join("flag-data")), ..Default::default() };
        let p = Paths::resolve_with(&flags, |k| env.get(k).cloned()).unwrap();
        assert_eq!(p.root, dir.path());
        assert_eq!(p.log_dir, dir.path().join("elsewhere-logs"));
        assert_eq!(p.data_dir, dir.path().join("flag-data"));
        assert_eq!(p.config_dir, dir.path().join("config"));
        assert_eq!(p.assets_root, dir.path().join("assets"));
    }

    #[test]
    fn root_that_is_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root");
        std::fs::write(&file, b"x").unwrap();
        let flags = PathOverrides { root: Some(file), ..Default::default() };
        let err = Paths::resolve_with(&flags, |_| None).unwrap_err().to_string();
        assert!(err.contains("is a regular file"), "{err}");
    }
}
