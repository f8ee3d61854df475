//! `comfyvn-obs assets list|show|register|tag|untag|set-license|remove|credits`.
//!
//! Orchestration only: build the index, call the registry, append the bridged hook events, print.
//! A uid or path that names no asset is exit 1 (a missing item); bad input is exit 2.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Map, Value};

use super::Ctx;
use crate::cli::assets::{
    AssetsCommand, CreditsArgs, CreditsFormat, CreditsGroup, ListArgs, RegisterArgs, SetLicenseArgs, ShowArgs, TagArgs,
};
use crate::exit_code::{hinted, ExitCode};
use crate::hooks::Bus;
use crate::output;
use crate::registry::{self, Index, MetaPatch, Outcome, Query, RegisterOptions, Registry, RelPath};

pub fn run(ctx: &Ctx, cmd: AssetsCommand) -> Result<ExitCode> {
    let registry = Registry::open(&ctx.paths, &ctx.config)?;
    match cmd {
        AssetsCommand::List(args) => list(&registry, args),
        AssetsCommand::Show(args) => show(&registry, args),
        AssetsCommand::Register(args) => register(ctx, &registry, args),
        AssetsCommand::Tag(args) => {
            let patch = MetaPatch { add_tags: args.tags.clone(), ..Default::default() };
            edit(ctx, &registry, &args.asset, &patch)
        }
        AssetsCommand::Untag(TagArgs { asset, tags }) => {
            let patch = MetaPatch { remove_tags: tags, ..Default::default() };
            edit(ctx, &registry, &asset, &patch)
        }
        AssetsCommand::SetLicense(SetLicenseArgs { asset, license }) => {
            let license = license.trim().to_string();
            if !license.is_empty() {
                check_spdx(&license)?;
            }
            let patch = MetaPatch { license: Some(Some(license).filter(|l| !l.is_empty())), ..Default::default() };
            edit(ctx, &registry, &asset, &patch)
        }
        AssetsCommand::Remove(args) => remove(ctx, &registry, &args.asset),
        AssetsCommand::Credits(args) => credits(&registry, &args),
    }
}

/// The index of the assets root; an absent root is an empty registry.
fn index(registry: &Registry) -> Result<Index> {
    if !registry.root().exists() {
        return Ok(Index::default());
    }
    let (index, problems) = Index::build(registry)?;
    if !problems.is_empty() {
        tracing::warn!(count = problems.len(), "sidecar problems; run `comfyvn-obs audit` for details");
    }
    Ok(index)
}

/// Find an asset by uid, by path relative to the assets root, or by a path to its file.
fn resolve(registry: &Registry, index: &Index, arg: &str) -> Result<Option<RelPath>> {
    if let Some(a) = index.get(arg) {
        return Ok(Some(RelPath::parse(&a.path)?));
    }
    if let Ok(rel) = RelPath::parse(arg) {
        if index.get_by_path(rel.as_str()).is_some() {
            return Ok(Some(rel));
        }
    }
    let p = Path::new(arg);
    if p.exists() {
        if let Ok(rel) = registry.locate(p) {
            if index.get_by_path(rel.as_str()).is_some() {
                return Ok(Some(rel));
            }
        }
    }
    Ok(None)
}

fn not_found(arg: &str) -> ExitCode {
    super::report_error(&hinted(
        format!("no registered asset with uid or path {arg:?}"),
        "`comfyvn-obs assets list` shows what is registered; `comfyvn-obs audit` shows files without sidecars",
    ));
    ExitCode::Failure
}

/// The credits of every registered asset. Sidecars that cannot be read are left out with a warning
/// on stderr (the audit names them).
fn credits(registry: &Registry, args: &CreditsArgs) -> Result<ExitCode> {
    use registry::credits::{self, Format, GroupBy};
    let index = index(registry)?;
    let group_by = match args.group_by {
        CreditsGroup::License => GroupBy::License,
        CreditsGroup::Type => GroupBy::Type,
        CreditsGroup::Author => GroupBy::Author,
    };
    let format = match args.format {
        CreditsFormat::Md => Format::Markdown,
        CreditsFormat::Txt => Format::Text,
        CreditsFormat::Json => Format::Json,
    };
    output::print(&credits::render(&credits::build(&index.iter().collect::<Vec<_>>(), group_by), format))?;
    Ok(ExitCode::Success)
}

fn list(registry: &Registry, args: ListArgs) -> Result<ExitCode> {
    let index = index(registry)?;
    let query = Query {
        asset_type: args.asset_type,
        tags: args.tags,
        licenses: args.licenses,
        q: args.search,
        ..Default::default()
    };
    let page = index.query(&query);
    if args.json {
        let items: Vec<Value> = page.items.iter().map(registry::record).collect();
        output::json(&json!({"items": items, "total": page.total}))?;
        return Ok(ExitCode::Success);
    }
    let mut text = String::new();
    for a in &page.items {
        text.push_str(&format!(
            "{:<16}  {:<12} {:>10}  {:<14} {:<24} {}\n",
            a.uid,
            a.asset_type,
            a.bytes,
            a.license.as_deref().unwrap_or("-"),
            if a.tags.is_empty() { "-".to_string() } else { a.tags.join(",") },
            a.path
        ));
    }
    output::print(&text)?;
    Ok(ExitCode::Success)
}

fn show(registry: &Registry, args: ShowArgs) -> Result<ExitCode> {
    let index = index(registry)?;
    let Some(rel) = resolve(registry, &index, &args.asset)? else { return Ok(not_found(&args.asset)) };
    let asset = index.get_by_path(rel.as_str()).ok_or_else(|| anyhow!("{rel} left the index"))?;
    output::json(&json!({"asset": registry::record(&asset), "sidecar": asset}))?;
    Ok(ExitCode::Success)
}

fn publish(ctx: &Ctx, outcome: &Outcome) -> Result<()> {
    if outcome.events.is_empty() {
        return Ok(());
    }
    let bus = Bus::open(&ctx.paths, &ctx.config)?;
    bus.emit_batch(registry::to_hooks(&outcome.events))
        .context("the sidecar was written but its hook events could not be appended")?;
    Ok(())
}

fn check_spdx(license: &str) -> Result<()> {
    registry::license::parse(license).map(|_| ()).map_err(|e| {
        hinted(format!("license {license:?} is not an SPDX expression: {e}"), "use an SPDX id such as CC-BY-4.0 or MIT")
    })
}

fn register(ctx: &Ctx, registry: &Registry, args: RegisterArgs) -> Result<ExitCode> {
    let meta = match &args.meta {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(anyhow!("--meta must be a JSON object, found {}", crate::config::kind(&other)));
            }
            Err(e) => return Err(anyhow!("--meta is not valid JSON: {e}")),
        },
    };
    if let Some(l) = &args.license {
        check_spdx(l)?;
    }
    if !args.path.is_file() {
        return Err(hinted(format!("{} is not a file", args.path.display()), "give the path of the file to register"));
    }
    std::fs::create_dir_all(registry.root())
        .with_context(|| format!("cannot create the assets root {}", registry.root().display()))?;
    let index = index(registry)?;
    let taken = |u: &str| index.contains_uid(u);
    // Lexically: a symbolic link inside the root must reach `locate`, which refuses it by name.
    let inside = absolute(&args.path).starts_with(absolute(registry.root()));
    let outcome = if inside && !args.copy {
        let rel = registry.locate(&args.path)?;
        let opts = options(&args, meta, "register")?;
        registry.register(&rel, &opts, &taken)?
    } else if args.copy {
        let name = args.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dest = match &args.dest {
            Some(d) => RelPath::parse(d)?,
            None => registry::copy_destination(args.asset_type.as_deref(), &name)
                .map_err(|why| hinted(why, "give --dest REL"))?,
        };
        let opts = options(&args, meta, "copy")?;
        registry.import(&args.path, &dest, &opts, &taken)?
    } else {
        return Err(hinted(
            format!("{} is outside the assets root {}", args.path.display(), registry.root().display()),
            "add --copy to copy it in (to TYPE/FILENAME, or --dest REL), or move it under the assets root",
        ));
    };
    publish(ctx, &outcome)?;
    output::json(&json!({"asset": registry::record(&outcome.asset)}))?;
    Ok(ExitCode::Success)
}

/// `p` made absolute against the current directory, with `.` and `..` resolved lexically.
fn absolute(p: &Path) -> std::path::PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
    let mut out = std::path::PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `--meta` read as the API reads `metadata` (the registry's rule), then the flags on top: `--tag`s
/// are added, `--license` and `--provenance-source` win.
fn options(args: &RegisterArgs, meta: Map<String, Value>, origin: &str) -> Result<RegisterOptions> {
    let mut opts = RegisterOptions::from_metadata(meta, args.asset_type.clone(), origin)
        .map_err(|(field, why)| anyhow!("--meta: {}: {why}", field.trim_start_matches("metadata.")))?;
    opts.tags.extend(args.tags.iter().cloned());
    if let Some(l) = &args.license {
        opts.license = Some(l.clone());
    }
    if let Some(l) = &opts.license {
        check_spdx(l)?;
    }
    if let Some(src) = &args.provenance_source {
        opts.provenance.insert("source".into(), Value::String(src.clone()));
    }
    Ok(opts)
}

fn edit(ctx: &Ctx, registry: &Registry, arg: &str, patch: &MetaPatch) -> Result<ExitCode> {
    let index = index(registry)?;
    let Some(rel) = resolve(registry, &index, arg)? else { return Ok(not_found(arg)) };
    let outcome = registry.update_meta(&rel, patch, &|u| index.contains_uid(u))?;
    publish(ctx, &outcome)?;
    output::json(&json!({"asset": registry::record(&outcome.asset)}))?;
    Ok(ExitCode::Success)
}

fn remove(ctx: &Ctx, registry: &Registry, arg: &str) -> Result<ExitCode> {
    let index = index(registry)?;
    let Some(rel) = resolve(registry, &index, arg)? else { return Ok(not_found(arg)) };
    let outcome = registry.remove(&rel)?;
    publish(ctx, &outcome)?;
    let trashed = outcome.events.iter().find_map(|e| match e {
        registry::RegistryEvent::AssetRemoved { trashed_to, .. } => Some(trashed_to.to_string_lossy().into_owned()),
        _ => None,
    });
    output::json(&json!({"removed": outcome.asset.uid, "path": outcome.asset.path, "trashed_to": trashed}))?;
    Ok(ExitCode::Success)
}
