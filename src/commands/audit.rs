//! `comfyvn-obs audit`: scan, fix (in chunks, one hook batch per chunk), judge, report.
//!
//! Orchestration only: the scan, the rules and the plan live in `crate::audit`, sidecar writes in
//! `crate::registry`. `--dry-run` writes nothing at all: no sidecars, no hooks, no stat cache and no
//! `logs/audit/latest.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::audit::baseline::Baseline;
use crate::audit::format::{self, Format};
use crate::audit::report::{ChangeLine, ChangeStatus, Context as ReportContext, Mode, TreeEntry};
use crate::audit::shard::Shard;
use crate::audit::{self, FailOn, FileState, Planned, Report, Scan, ScanOptions, SidecarState, StatCache};
use crate::cli::audit::{AuditArgs, AuditCommand, FailOnArg, FormatArg, MergeArgs};
use crate::exit_code::{hinted, ExitCode};
use crate::hooks::Bus;
use crate::output;
use crate::registry::{self, Policy, Registry, RelPath};

/// Sidecars written per durability barrier and per hook batch.
pub const CHUNK: usize = 4096;

/// The audit command line as plain settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub scope: Option<RelPath>,
    pub format: Format,
    pub fail_on: FailOn,
    pub mode: Mode,
    pub fill_metadata: bool,
    pub full: bool,
    /// 0 = one thread per core.
    pub jobs: usize,
    pub shard: Option<Shard>,
    pub release: bool,
    pub baseline: Option<PathBuf>,
    pub write_baseline: Option<PathBuf>,
}

fn format_of(arg: FormatArg) -> Format {
    match arg {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Sarif => Format::Sarif,
        FormatArg::Junit => Format::Junit,
        FormatArg::Github => Format::Github,
    }
}

impl Settings {
    fn from_args(ctx: &Ctx, args: &AuditArgs) -> Result<Settings> {
        let fail_on = match args.fail_on {
            Some(FailOnArg::Error) => FailOn::Error,
            Some(FailOnArg::Warning) => FailOn::Warning,
            Some(FailOnArg::Never) => FailOn::Never,
            None => FailOn::parse(&ctx.config.obs.audit.fail_on).unwrap_or(FailOn::Error),
        };
        let format = format_of(args.format);
        let mode = if args.dry_run {
            Mode::DryRun
        } else if args.fix || args.fill_metadata {
            Mode::Fix
        } else {
            Mode::Check
        };
        let scope = match &args.path {
            Some(p) => scope_of(&ctx.paths.assets_root, p)?,
            None => None,
        };
        let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
        if shard.is_some() {
            if mode != Mode::Check {
                bail!(hinted(
                    "--shard audits only: it cannot be combined with --fix, --fill-metadata or --dry-run",
                    "run the fix once over the whole tree, then shard the checks",
                ));
            }
            if args.baseline.is_some() || args.write_baseline.is_some() {
                bail!(hinted(
                    "a shard's report cannot be compared with a baseline: the checks across folders run in `audit merge`",
                    "pass --baseline / --write-baseline to `comfyvn-obs audit merge` instead",
                ));
            }
        }
        Ok(Settings {
            scope,
            format,
            fail_on,
            mode,
            fill_metadata: args.fill_metadata,
            full: args.full,
            jobs: args.jobs.unwrap_or(ctx.config.obs.audit.jobs),
            shard,
            release: args.release,
            baseline: args.baseline.clone(),
            write_baseline: args.write_baseline.clone(),
        })
    }
}

/// PATH (relative to the current directory, or else to the assets root) as a scope below the root;
/// `None` for the root itself.
pub fn scope_of(root: &Path, path: &Path) -> Result<Option<RelPath>> {
    let candidate = if path.exists() || path.is_absolute() { path.to_path_buf() } else { root.join(path) };
    let canon_root = root.canonicalize().with_context(|| format!("cannot read the assets root {}", root.display()))?;
    let canon = candidate.canonicalize().with_context(|| format!("cannot audit {}", path.display()))?;
    if canon == canon_root {
        return Ok(None);
    }
    match RelPath::from_fs(&canon_root, &canon) {
        Ok(rel) => Ok(Some(rel)),
        Err(e) => Err(hinted(
            format!("cannot audit {}: {e}", path.display()),
            "pass a folder inside the assets root, or choose the tree with --assets-root DIR",
        )),
    }
}

pub fn run(ctx: &Ctx, args: AuditArgs) -> Result<ExitCode> {
    if let Some(AuditCommand::Merge(m)) = args.command {
        return merge(&m);
    }
    let settings = Settings::from_args(ctx, &args)?;
    // Read before the scan: a bad baseline is a usage error, not something to find out at the end.
    let baseline = settings.baseline.as_deref().map(Baseline::load).transpose()?;
    let registry = Registry::open(&ctx.paths, &ctx.config)?;
    if !ctx.paths.assets_root.is_dir() {
        bail!(hinted(
            format!("the assets root {} does not exist", ctx.paths.assets_root.display()),
            "run from the project's runtime root, or pass --assets-root DIR (or set COMFYVN_ASSETS_ROOT)",
        ));
    }
    if settings.mode == Mode::Fix {
        super::sweep_litter(&ctx.paths, &[]);
    }
    let cache_path = ctx.paths.audit_cache();
    // A full audit of the whole tree rebuilds the cache from scratch: no need to read it.
    let started = std::time::Instant::now();
    let phase = |name: &str| tracing::debug!(phase = name, elapsed_ms = started.elapsed().as_millis() as u64, "audit");
    let mut cache =
        if settings.full && settings.scope.is_none() { StatCache::default() } else { StatCache::load(&cache_path) };
    phase("cache loaded");
    let progress = super::progress::Line::start_if_terminal("audit");
    let scan_opts = ScanOptions {
        scope: settings.scope.clone(),
        full: settings.full,
        jobs: settings.jobs,
        shard: settings.shard,
        progress: progress.as_ref().map(|p| p.counters()),
    };
    let mut scan = audit::scan(&registry, &cache, &scan_opts)?;
    phase("tree scanned");
    let changes = match settings.mode {
        Mode::Check => Vec::new(),
        Mode::DryRun => {
            let plan = audit::plan_fixes(
                &registry,
                &scan,
                settings.fill_metadata,
                &cache.uids_outside(settings.scope.as_ref()),
            );
            plan.iter().map(ChangeLine::planned).collect()
        }
        Mode::Fix => {
            let plan = audit::plan_fixes(
                &registry,
                &scan,
                settings.fill_metadata,
                &cache.uids_outside(settings.scope.as_ref()),
            );
            apply(ctx, &registry, &mut scan, &plan)?
        }
    };
    drop(progress);
    let audit_cfg = &ctx.config.obs.audit;
    let dry_run = settings.mode == Mode::DryRun;
    let evaluate =
        || audit::evaluate(&scan, &Policy::new(&audit_cfg.licenses), audit_cfg.require_provenance, settings.release);
    let current = dry_run || cache.is_current(&scan);
    phase("cache compared");
    let findings = if current {
        // Nothing to save (the common re-audit): the cache's memory (about 400 bytes an asset) is
        // handed back before the findings and the report peak.
        drop(cache);
        crate::memory::release_free();
        evaluate()
    } else {
        // The stat cache is written while the rules run: both only read the scan.
        std::thread::scope(|s| {
            s.spawn(|| {
                save_cache(&mut cache, &cache_path, &scan);
                drop(cache);
            });
            evaluate()
        })
    };
    phase("rules evaluated");
    let report_ctx = ReportContext {
        assets_root: display_root(&ctx.paths.assets_root),
        scope: settings.scope.as_ref().map(ToString::to_string),
        mode: settings.mode,
        fail_on: settings.fail_on,
        release: settings.release,
        shard: settings.shard,
        assets: scan.assets.len(),
        sidecars: scan.sidecar_count(),
    };
    let mut report = Report::new(report_ctx, findings, changes, scan.skipped.clone());
    if settings.shard.is_some() {
        report.tree = Some(tree_of(&scan));
    }
    let exit_override = compare(&mut report, settings.write_baseline.as_deref(), baseline.as_ref(), &|p| {
        scan.covers(p.strip_suffix(registry::SUFFIX).unwrap_or(p))
    })?;
    // `latest.json` is written while the report is printed: both only read it. The report is
    // printed even when `latest.json` cannot be written; that failure then makes the exit code 2,
    // after the report.
    let (saved, printed) = std::thread::scope(|s| {
        let saving = (!dry_run).then(|| s.spawn(|| save_latest(ctx, &scan, &report)));
        let printed = print_report(&report, settings.format);
        let saved = saving.map_or(Ok(()), |h| {
            h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("writing logs/audit/latest.json panicked")))
        });
        (saved, printed)
    });
    phase("report printed and saved");
    // The process exits right after this command: freeing the scan (about 100,000 small
    // allocations for a 20,000-file tree) one by one would only delay the exit.
    std::mem::forget(scan);
    printed?;
    if let Err(e) = saved {
        return Err(e.context("the report above could not be saved"));
    }
    Ok(exit_override.unwrap_or_else(|| report.exit_code()))
}

/// `--write-baseline` (every finding of `report`, before any baseline is applied) and `--baseline`.
/// Writing a baseline without comparing with one makes the exit code 0 (unless a `--fix` write
/// failed): measured against the file just written, nothing is new.
fn compare(
    report: &mut Report,
    write: Option<&Path>,
    baseline: Option<&Baseline>,
    covers: &dyn Fn(&str) -> bool,
) -> Result<Option<ExitCode>> {
    let mut exit = None;
    if let Some(path) = write {
        let bytes = Baseline::of(&report.findings).to_bytes();
        crate::fs::write_atomic(path, &bytes).context("cannot write the baseline")?;
        if baseline.is_none() {
            exit = Some(if report.summary.failed_changes > 0 { ExitCode::Error } else { ExitCode::Success });
        }
    }
    if let Some(b) = baseline {
        report.apply_baseline(b, covers);
    }
    Ok(exit)
}

/// What the checks across folders need, for a shard's report (see `audit merge`).
fn tree_of(scan: &Scan) -> Vec<TreeEntry> {
    scan.assets
        .iter()
        .map(|a| {
            let (uid, own) = match &a.sidecar {
                SidecarState::Valid(f) if !f.uid.is_empty() => (Some(f.uid.clone()), f.recorded_path == a.rel.as_str()),
                _ => (None, false),
            };
            let hash = match &a.file {
                FileState::Hashed { hash, .. } => Some(hash.clone()),
                FileState::Unreadable(_) => None,
            };
            TreeEntry { path: a.rel.to_string(), hash, uid, own }
        })
        .collect()
}

/// `audit merge REPORT.json…`: the shards' reports as one, printed in any format, with the exit
/// code one audit of the whole tree would have given. Writes no runtime files.
fn merge(args: &MergeArgs) -> Result<ExitCode> {
    let baseline = args.baseline.as_deref().map(Baseline::load).transpose()?;
    let mut docs = Vec::with_capacity(args.reports.len());
    for path in &args.reports {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the shard report {}", path.display()))?;
        docs.push((path.display().to_string(), bytes));
    }
    let mut report = audit::merge::merge(&docs)?;
    let scope = report.scope.clone();
    let exit_override = compare(&mut report, args.write_baseline.as_deref(), baseline.as_ref(), &|p| {
        report_covers(scope.as_deref(), p)
    })?;
    print_report(&report, format_of(args.format))?;
    Ok(exit_override.unwrap_or_else(|| report.exit_code()))
}

/// True when `path` (a finding's path) is inside the audited scope.
fn report_covers(scope: Option<&str>, path: &str) -> bool {
    let path = path.strip_suffix(registry::SUFFIX).unwrap_or(path);
    match scope {
        None => true,
        Some(s) => path == s || path.strip_prefix(s).is_some_and(|r| r.starts_with('/')),
    }
}

/// Write the plan chunk by chunk: one durability barrier and one hook batch per chunk, hooks in the
/// order of the writes. A failed write is reported on its line and leaves its finding in place. The
/// returned lines are sorted by path.
///
/// A chunk's hook events are built and appended on a second thread while the next chunk is staged
/// and synced; that chunk's renames wait for them. So the history still lists the writes in order,
/// and when appending fails nothing more is written: the error names what was written without its
/// events.
pub fn apply(ctx: &Ctx, registry: &Registry, scan: &mut Scan, plan: &[Planned]) -> Result<Vec<ChangeLine>> {
    let mut lines = Vec::with_capacity(plan.len());
    if plan.is_empty() {
        return Ok(lines);
    }
    let bus = Bus::open(&ctx.paths, &ctx.config)?;
    let order = write_order(plan);
    let hooks_failed = || anyhow::anyhow!("sidecars were written but their hook events could not be appended");
    std::thread::scope(|s| {
        let (to_hooks, chunks) = std::sync::mpsc::sync_channel::<Vec<registry::RegistryEvent>>(1);
        let (appended, results) = std::sync::mpsc::channel::<Result<()>>();
        let bus = &bus;
        s.spawn(move || {
            for events in chunks {
                let r = bus.emit_batch(registry::to_hooks(&events)).map(drop);
                if appended.send(r).is_err() {
                    break;
                }
            }
        });
        // Chunks whose hook events are on their way; at most one.
        let mut in_flight = 0usize;
        let wait = |in_flight: &mut usize| -> Result<()> {
            while *in_flight > 0 {
                *in_flight -= 1;
                results.recv().map_err(|_| anyhow::anyhow!("the hook writer stopped"))??;
            }
            Ok(())
        };
        let mut hook_error = None;
        for chunk in order.chunks(CHUNK) {
            let changes: Vec<registry::Change> = chunk.iter().map(|p| p.change.clone()).collect();
            let written = registry.write_batch_gated(&changes, || {
                wait(&mut in_flight).map_err(|e| {
                    let msg = format!("{e:#}");
                    hook_error = Some(e);
                    anyhow::anyhow!(
                        "not written: the hook events of the sidecars before it could not be appended: {msg}"
                    )
                })
            });
            if let Some(e) = hook_error.take() {
                return Err(e.context(hooks_failed()));
            }
            let mut events = Vec::with_capacity(chunk.len() * 2);
            for (planned, result) in chunk.iter().zip(written) {
                let mut line = ChangeLine::planned(planned);
                match result {
                    Ok(written) => {
                        audit::record_written(scan, planned);
                        events.extend(written);
                        line.status = ChangeStatus::Applied;
                    }
                    Err(e) => match written_meanwhile(registry, planned, &e) {
                        Some(sidecar) => {
                            audit::record_found(scan, &planned.change.rel, &sidecar);
                            line.status = ChangeStatus::Concurrent;
                        }
                        None => {
                            line.status = ChangeStatus::Failed;
                            line.error = Some(format!("{e:#}"));
                        }
                    },
                }
                lines.push(line);
            }
            if to_hooks.send(events).is_err() {
                // The writer is gone: its last answer says why.
                wait(&mut in_flight).map_err(|e| e.context(hooks_failed()))?;
                return Err(hooks_failed());
            }
            in_flight += 1;
        }
        drop(to_hooks);
        wait(&mut in_flight).map_err(|e| e.context(hooks_failed()))
    })?;
    lines.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(lines)
}

/// A write refused because the sidecar changed or appeared since the plan (another `audit --fix`,
/// a watcher): the sidecar now on disk, when it is valid and describes the same content, so the
/// race is not a failure and the file is not reported as missing its sidecar.
fn written_meanwhile(registry: &Registry, planned: &Planned, err: &anyhow::Error) -> Option<registry::Sidecar> {
    let raced = matches!(
        err.downcast_ref::<registry::RegistryError>(),
        Some(
            registry::RegistryError::Exists(_)
                | registry::RegistryError::Changed(_)
                | registry::RegistryError::Appeared(_)
        )
    );
    if !raced {
        return None;
    }
    let parsed = registry.read_sidecar(&planned.change.rel).ok().flatten()?;
    let want = &planned.change.asset;
    (parsed.sidecar.hash == want.hash && parsed.sidecar.bytes == want.bytes).then_some(parsed.sidecar)
}

/// The plan in write order: round-robin over folders (path order within each), so every chunk spans
/// several folders and `write_batch` can work on them in parallel. Deterministic.
fn write_order(plan: &[Planned]) -> Vec<&Planned> {
    let mut groups: std::collections::BTreeMap<&str, std::collections::VecDeque<&Planned>> = Default::default();
    for p in plan {
        let dir = p.change.rel.as_str().rsplit_once('/').map_or("", |(d, _)| d);
        groups.entry(dir).or_default().push_back(p);
    }
    let mut queues: Vec<_> = groups.into_values().collect();
    let mut out = Vec::with_capacity(plan.len());
    while !queues.is_empty() {
        for q in &mut queues {
            if let Some(p) = q.pop_front() {
                out.push(p);
            }
        }
        queues.retain(|q| !q.is_empty());
    }
    out
}

/// Update the stat cache and write it when it changed. The cache only saves time: failing to write
/// it must not fail the audit.
fn save_cache(cache: &mut StatCache, cache_path: &Path, scan: &Scan) {
    if cache.update(scan) {
        if let Err(e) = cache.save(cache_path) {
            tracing::warn!(error = %format!("{e:#}"), "cannot write the audit cache");
        }
    }
}

/// The report on stdout; text, the default and the largest for many findings, is streamed.
fn print_report(report: &Report, f: format::Format) -> Result<()> {
    match f {
        format::Format::Text => output::print_with(|w| format::text::write(report, w)),
        other => output::print(&format::render(report, other)),
    }
}

/// Write `logs/audit/latest.json`: the report plus `generated_at` and the scan statistics.
fn save_latest(ctx: &Ctx, scan: &Scan, report: &Report) -> Result<()> {
    /// The report with the two fields only this document has, after the report's own: no copy of
    /// a report of 300,000 findings is made.
    #[derive(serde::Serialize)]
    struct Latest<'a> {
        #[serde(flatten)]
        report: &'a Report,
        generated_at: String,
        stats: audit::ScanStats,
    }
    let latest = Latest { report, generated_at: crate::time::iso_now(), stats: scan.stats };
    // A derived document (the audit recreates it), so atomic without fsync, like the cache: an fsync
    // here costs more than a whole stat-only re-audit on a busy disk. Streamed to the file: its
    // bytes whole in memory were a quarter of the peak at 300,000 findings.
    crate::fs::write_json_streamed_nosync(&ctx.paths.audit_latest(), &latest)
}

/// The assets root for people and CI annotations: relative to the current directory when inside it.
pub fn display_root(root: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let shown = match root.strip_prefix(&cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => root.to_string_lossy().into_owned(),
    };
    shown.trim_end_matches('/').to_string()
}
