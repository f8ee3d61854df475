//! `comfyvn-obs providers list|health|quota`.

use anyhow::Result;
use serde_json::Value;

use super::Ctx;
use crate::cli::providers::{HealthArgs, ListArgs, ProvidersCommand, QuotaArgs};
use crate::exit_code::ExitCode;
use crate::output;
use crate::providers::{self, ProviderError, Registry, Status};

pub fn run(ctx: &Ctx, cmd: ProvidersCommand) -> Result<ExitCode> {
    match cmd {
        ProvidersCommand::List(args) => list(ctx, args),
        ProvidersCommand::Health(args) => health(ctx, args),
        ProvidersCommand::Quota(args) => quota(ctx, args),
    }
}

fn list(ctx: &Ctx, args: ListArgs) -> Result<ExitCode> {
    let registry = Registry::load(&ctx.paths)?;
    let last = providers::last_health(&ctx.paths)?;
    if args.json {
        let items: Vec<Value> = registry
            .providers
            .iter()
            .map(|p| {
                let mut v = p.masked();
                v["last_health"] = last.get(&p.id).cloned().unwrap_or(Value::Null);
                v
            })
            .collect();
        return output::json(&items).map(|_| ExitCode::Success);
    }
    if registry.source.is_none() {
        eprintln!("no {} yet: showing the built-in local entry", ctx.paths.providers_file().display());
    }
    let mut text = format!("{:<16} {:<24} {:<10} {:<7} {:<6} {}\n", "ID", "NAME", "KIND", "ACTIVE", "LAST", "URL");
    for p in &registry.providers {
        let status = last.get(&p.id).and_then(|h| h["status"].as_str()).unwrap_or("-");
        let masked = p.masked();
        text.push_str(&format!(
            "{:<16} {:<24} {:<10} {:<7} {:<6} {}\n",
            p.id,
            p.display_name(),
            p.kind,
            p.active,
            status,
            masked["base_url"].as_str().unwrap_or_default()
        ));
    }
    output::print(&text)?;
    Ok(ExitCode::Success)
}

fn not_found(id: &str) -> ExitCode {
    eprintln!("error: provider not found: {id:?}");
    eprintln!("hint: `comfyvn-obs providers list` shows the registered ids");
    ExitCode::Failure
}

fn health(ctx: &Ctx, args: HealthArgs) -> Result<ExitCode> {
    let results = match providers::check_health(&ctx.paths, &ctx.config.obs.providers, args.id.as_deref()) {
        Ok(r) => r,
        Err(ProviderError::NotFound(id)) => return Ok(not_found(&id)),
        Err(ProviderError::Other(e)) => return Err(e),
    };
    if args.json {
        let v = match &args.id {
            Some(_) => serde_json::json!({"ok": results[0].ok, "status": results[0]}),
            None => serde_json::json!({"ok": results.iter().any(|h| h.ok), "results": results}),
        };
        output::json(&v)?;
    } else {
        let mut text = String::new();
        for h in &results {
            let detail = h.error.clone().unwrap_or_else(|| format!("http {}", h.status_code.unwrap_or(0)));
            text.push_str(&format!(
                "{:<16} {:<5} {:>6}ms  {:<40} {}\n",
                h.provider_id,
                h.status.as_str(),
                h.latency_ms,
                h.endpoint,
                detail
            ));
        }
        if results.is_empty() {
            eprintln!("no active providers");
        }
        output::print(&text)?;
    }
    let any_down = results.iter().any(|h| h.status == Status::Down);
    Ok(if any_down { ExitCode::Failure } else { ExitCode::Success })
}

fn quota(ctx: &Ctx, args: QuotaArgs) -> Result<ExitCode> {
    let v = match providers::quota(&ctx.paths, &ctx.config.obs.providers, &args.id) {
        Ok(v) => v,
        Err(ProviderError::NotFound(id)) => return Ok(not_found(&id)),
        Err(ProviderError::Other(e)) => return Err(e),
    };
    let ok = v["ok"].as_bool().unwrap_or(false);
    if args.json {
        output::json(&v)?;
    } else if ok {
        output::println(&format!(
            "{} ({} ms from {})",
            v["quota"],
            v["latency_ms"],
            v["endpoint"].as_str().unwrap_or("")
        ))?;
    } else {
        eprintln!("{}: {}", args.id, v["error"].as_str().unwrap_or("quota unavailable"));
    }
    Ok(if ok { ExitCode::Success } else { ExitCode::Failure })
}
