//! `comfyvn-obs rebuild [--enforce-sidecars]`: the original toolkit's `rebuild.py`, here a full
//! re-read of the registry from disk (every file hashed, every sidecar read, the stat cache
//! refreshed) that reports what keeps files out of the registry. With `--enforce-sidecars`, assets
//! without a sidecar get one (and their registration hooks), as `audit --fix` would write them.
//!
//! Exit 1 when structural problems remain (missing, orphan, invalid or unreadable sidecars, stale
//! hashes or sizes); license and metadata warnings are the audit's business.

use anyhow::{bail, Result};
use serde_json::json;

use super::audit::apply;
use super::Ctx;
use crate::audit::{self, Action, Finding, ScanOptions, StatCache};
use crate::cli::audit::RebuildArgs;
use crate::exit_code::{hinted, ExitCode};
use crate::output;
use crate::registry::{Policy, Registry};

/// The rules whose findings mean the registry does not match the disk.
const STRUCTURAL: &[&str] =
    &["invalid-sidecar", "missing-sidecar", "orphan-sidecar", "size-mismatch", "stale-hash", "unreadable"];

pub fn run(ctx: &Ctx, args: RebuildArgs) -> Result<ExitCode> {
    if !ctx.paths.assets_root.is_dir() {
        bail!(hinted(
            format!("the assets root {} does not exist", ctx.paths.assets_root.display()),
            "pass --assets-root DIR (or set COMFYVN_ASSETS_ROOT)",
        ));
    }
    let registry = Registry::open(&ctx.paths, &ctx.config)?;
    let cache_path = ctx.paths.audit_cache();
    let mut cache = StatCache::load(&cache_path);
    let jobs = ctx.config.obs.audit.jobs;
    let mut scan =
        audit::scan(&registry, &cache, &ScanOptions { scope: None, full: true, jobs, ..Default::default() })?;
    let mut written = 0;
    let mut failed = 0;
    if args.enforce_sidecars {
        let plan: Vec<_> = audit::plan_fixes(&registry, &scan, false, &[])
            .into_iter()
            .filter(|p| p.action == Action::Register)
            .collect();
        for line in apply(ctx, &registry, &mut scan, &plan)? {
            if line.error.is_some() {
                failed += 1;
            } else {
                written += 1;
            }
        }
    }
    if cache.update(&scan) {
        if let Err(e) = cache.save(&cache_path) {
            tracing::warn!(error = %format!("{e:#}"), "cannot write the audit cache");
        }
    }
    let findings = audit::evaluate(&scan, &Policy::default(), false, false);
    let problems: Vec<&Finding> = findings.iter().filter(|f| STRUCTURAL.contains(&f.rule)).collect();
    let registered = scan.assets.iter().filter(|a| matches!(a.sidecar, audit::SidecarState::Valid(_))).count();
    if args.json {
        output::json(&json!({
            "assets": scan.assets.len(),
            "registered": registered,
            "sidecars_written": written,
            "failed_writes": failed,
            "problems": problems,
        }))?;
    } else {
        let root = super::audit::display_root(&ctx.paths.assets_root);
        let mut text = String::new();
        for f in &problems {
            text.push_str(&format!("{root}/{}: {}[{}]: {}\n", f.path, f.severity.as_str(), f.rule, f.message));
        }
        text.push_str(&format!(
            "rebuild: {} assets, {registered} registered, {written} sidecars written, {} problems\n",
            scan.assets.len(),
            problems.len() + failed
        ));
        output::print(&text)?;
    }
    Ok(if problems.is_empty() && failed == 0 { ExitCode::Success } else { ExitCode::Failure })
}
