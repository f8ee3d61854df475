//! The process exit codes, one small enum (README "Exit codes").

/// What the process tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The command did what was asked; for `audit`, nothing at or above `--fail-on`.
    Success = 0,
    /// The command ran but the answer is "no": findings at or above `--fail-on`, a failed doctor check,
    /// a refused action (diagnostics without consent), a missing item.
    Failure = 1,
    /// The tool itself failed: bad config, bad arguments, unreadable root, I/O errors.
    Error = 2,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        std::process::ExitCode::from(c as u8)
    }
}

/// An error with a separate `hint:` line telling the user how to fix it.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Build an `anyhow::Error` carrying a hint.
pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted { message: message.into(), hint: hint.into() })
}
