//! Test environment: a temp runtime root and a way to run the real binary inside it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// The result of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "exit code {}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        self
    }
    #[track_caller]
    pub fn code(self, expected: i32) -> Self {
        assert_eq!(self.code, expected, "exit code {}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_comfyvn-obs"))
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write a file (creating parents).
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Every entry of the hook history, oldest first (none when there is no history yet); a line that
    /// does not parse fails the test.
    pub fn history(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path("logs/hooks/history.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The event names of [`TestEnv::history`], in order.
    pub fn events(&self) -> Vec<String> {
        self.history().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
    }

    /// A command for the binary with a clean environment pointed at this root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).current_dir(self.root());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("COMFYVN_") {
                c.env_remove(k);
            }
        }
        c.env("COMFYVN_RUNTIME_ROOT", self.root()).env("RUST_BACKTRACE", "0").stdin(Stdio::null());
        c
    }

    /// Run to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run binary").into()
    }

    /// Run with bytes on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap().into()
    }
}

/// Temp files as a process killed mid-write leaves them (`.<name>.tmp<pid>-<n>`): three of a process
/// that is gone, in the assets, config and data folders, and one of this test process, still running.
pub struct Litter {
    pub stale: Vec<PathBuf>,
    pub live: PathBuf,
}

impl Litter {
    pub fn plant(env: &TestEnv) -> Litter {
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let stale = vec![
            env.write(&format!("assets/chars/.hero.png.asset.json.tmp{dead}-419"), "{\"trunc"),
            env.write(&format!("config/.comfyvn.json.tmp{dead}-2"), "{"),
            env.write(&format!("data/.webhooks.json.tmp{dead}-0"), "{"),
        ];
        let live = env.write(&format!("assets/chars/.hero.png.asset.json.tmp{me}-7"), "{");
        Litter { stale, live }
    }

    /// The stale files are gone and the live one is still there.
    pub fn assert_swept(&self) {
        for p in &self.stale {
            assert!(!p.exists(), "{} was left", p.display());
        }
        assert!(self.live.exists(), "the temp file of a running process was removed");
    }
}

/// Every file under `dir`, recursively (a missing or unreadable folder has none).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
