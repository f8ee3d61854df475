//! `comfyvn-obs webhooks add|remove|list|deliveries|replay|run`.

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::Ctx;
use crate::cli::webhooks::{AddArgs, DeliveriesArgs, JsonArgs, RemoveArgs, ReplayArgs, WebhooksCommand};
use crate::exit_code::{hinted, ExitCode};
use crate::hooks::delivery;
use crate::hooks::webhook::{generate_secret, NewWebhook, WebhookError, WebhookStore};
use crate::hooks::Bus;
use crate::output;

pub fn run(ctx: &Ctx, cmd: WebhooksCommand) -> Result<ExitCode> {
    match cmd {
        WebhooksCommand::Add(args) => add(ctx, args),
        WebhooksCommand::Remove(args) => remove(ctx, args),
        WebhooksCommand::List(args) => list(ctx, args),
        WebhooksCommand::Deliveries(args) => deliveries(ctx, args),
        WebhooksCommand::Replay(args) => replay(ctx, args),
        WebhooksCommand::Run => run_worker(ctx),
    }
}

/// Longest secret `--secret-file` accepts.
const SECRET_MAX: u64 = 4096;

/// The secret in `path` (`-`: standard input, not a terminal), without one trailing line end (`\n` or
/// `\r\n`). Empty, whitespace-only, over 4 KiB, or holding control characters is an error: a
/// receiver could not reproduce signatures made with such a key.
fn read_secret(path: &std::path::Path) -> Result<String> {
    use std::io::{IsTerminal, Read};
    let mut raw = Vec::new();
    let read = if path.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            bail!(hinted(
                "--secret-file - reads the secret from standard input, which is a terminal",
                "pipe or redirect it: `--secret-file - <secret.txt`",
            ));
        }
        std::io::stdin().take(SECRET_MAX + 3).read_to_end(&mut raw)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(SECRET_MAX + 3).read_to_end(&mut raw))
    };
    read.with_context(|| format!("cannot read the secret from {}", path.display()))?;
    let text = String::from_utf8(raw).map_err(|_| anyhow::anyhow!("{}: the secret is not UTF-8", path.display()))?;
    let secret = text.strip_suffix("\r\n").or_else(|| text.strip_suffix('\n')).unwrap_or(&text);
    if secret.len() as u64 > SECRET_MAX {
        bail!("{}: the secret is longer than {SECRET_MAX} bytes", path.display());
    }
    if secret.trim().is_empty() {
        bail!("{}: the secret is empty", path.display());
    }
    if secret.chars().any(char::is_control) {
        bail!("{}: the secret holds control characters (more than one line?)", path.display());
    }
    Ok(secret.to_string())
}

fn add(ctx: &Ctx, args: AddArgs) -> Result<ExitCode> {
    let bus = Bus::open(&ctx.paths, &ctx.config)?;
    let given = match (&args.secret, &args.secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(path)) => Some(read_secret(path)?),
        (None, None) => None,
    };
    let generated = given.is_none();
    let new = NewWebhook { event: args.event, url: args.url, secret: Some(given.unwrap_or_else(generate_secret)) };
    new.validate(&bus).map_err(|e| match e {
        WebhookError::UnsupportedEvent(ev) => hinted(
            format!("unsupported event {ev:?}: not in the hook catalogue"),
            "see `comfyvn-obs hooks list`; `*` or a glob such as `on_asset_*` selects several events",
        ),
        other => anyhow::Error::new(other),
    })?;
    let done = WebhookStore::new(&ctx.paths).upsert(&new, bus.history.last_seq()?)?;
    let verb = if done.created {
        "added"
    } else if done.reenabled {
        "enabled again"
    } else {
        "updated"
    };
    let secret = new.secret.as_deref().filter(|_| generated);
    let kept = if done.reenabled {
        delivery::pending_counts(&ctx.paths)?.get(&done.registration.key()).map_or(0, |w| w.parked)
    } else {
        0
    };
    if args.json {
        let mut v = json!({"ok": true, "created": done.created, "webhook": done.registration.listing()});
        if done.reenabled {
            v["reenabled"] = json!({"kept": kept, "disabled_seq": done.disabled_seq});
        }
        if let Some(s) = secret {
            v["secret"] = json!(s);
        }
        output::json(&v)?;
    } else {
        output::println(&format!("{verb} webhook {} -> {}", new.event, new.url))?;
        if done.reenabled {
            reenabled_note(&new.url, kept, done.disabled_seq);
        }
        if let Some(s) = secret {
            output::println(&format!("secret: {s}"))?;
            eprintln!("note: the secret is shown only this once; receivers verify signatures with it");
        }
    }
    Ok(ExitCode::Success)
}

/// What enabling a disabled registration again does: its kept deliveries go first; the events
/// emitted while it was disabled need a replay.
fn reenabled_note(url: &str, kept: usize, disabled_seq: Option<u64>) {
    eprintln!("the delivery worker sends the {kept} deliveries it kept while the webhook was disabled, oldest first");
    if let Some(seq) = disabled_seq {
        eprintln!(
            "events after seq {seq} were not queued while it was disabled; `comfyvn-obs webhooks replay --since {seq} \
             --url {}` sends them",
            shell_word(url)
        );
    }
}

fn remove(ctx: &Ctx, args: RemoveArgs) -> Result<ExitCode> {
    if WebhookStore::new(&ctx.paths).remove(&args.event, &args.url)? {
        eprintln!("removed webhook {} -> {}", args.event, args.url);
        Ok(ExitCode::Success)
    } else {
        eprintln!("error: {}", WebhookError::NotFound { event: args.event, url: args.url });
        Ok(ExitCode::Failure)
    }
}

fn list(ctx: &Ctx, args: JsonArgs) -> Result<ExitCode> {
    let regs = WebhookStore::new(&ctx.paths).load()?;
    let items = delivery::status_listing(&ctx.paths, &regs)?;
    if args.json {
        return output::json(&items).map(|_| ExitCode::Success);
    }
    if items.is_empty() {
        eprintln!("no webhooks registered (add one with `comfyvn-obs webhooks add --event E --url U`)");
        return Ok(ExitCode::Success);
    }
    let mut text =
        format!("{:<28} {:<8} {:>8} {:>7}  {:<44} {}\n", "EVENT", "ENABLED", "FAILURES", "PENDING", "URL", "SECRET");
    for (r, v) in regs.iter().zip(&items) {
        let secret = v["secret"].as_str().map(|s| if s.len() > 12 { format!("{}…", &s[..12]) } else { s.to_string() });
        text.push_str(&format!(
            "{:<28} {:<8} {:>8} {:>7}  {:<44} {}\n",
            r.event,
            r.enabled,
            r.consecutive_failures,
            v["pending"].as_u64().unwrap_or(0),
            r.url,
            secret.unwrap_or_else(|| "-".into())
        ));
    }
    output::print(&text)?;
    for (r, v) in regs.iter().zip(&items) {
        let kept = v["parked"].as_u64().unwrap_or(0);
        if !r.enabled && kept > 0 {
            eprintln!(
                "note: {} -> {} is disabled and keeps {kept} deliveries; `comfyvn-obs webhooks add --event {} \
                 --url {}` enables it and sends them",
                r.event,
                r.url,
                shell_word(&r.event),
                shell_word(&r.url)
            );
        }
    }
    Ok(ExitCode::Success)
}

/// `s` quoted for a POSIX shell when it needs it (for commands printed as hints).
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn deliveries(ctx: &Ctx, args: DeliveriesArgs) -> Result<ExitCode> {
    let entries = delivery::recent_deliveries(&ctx.paths, args.lines)?;
    for e in &entries {
        if args.json {
            output::json_line(e)?;
            continue;
        }
        let s = |k: &str| e.get(k).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        output::println(&format!(
            "{}  {:<9} {:>3} {:>4} {:>6}  {:>8} {:<28} {} {}",
            s("ts").unwrap_or_default(),
            s("outcome").unwrap_or_default(),
            s("attempt").unwrap_or_else(|| "-".into()),
            s("status_code").unwrap_or_else(|| "-".into()),
            s("latency_ms").map(|l| format!("{l}ms")).unwrap_or_else(|| "-".into()),
            s("seq").unwrap_or_default(),
            s("event").unwrap_or_default(),
            s("url").unwrap_or_default(),
            s("error").or_else(|| s("reason")).unwrap_or_default(),
        ))?;
    }
    Ok(ExitCode::Success)
}

fn replay(ctx: &Ctx, args: ReplayArgs) -> Result<ExitCode> {
    let plan = delivery::request_replay(&ctx.paths, &ctx.config, args.since, args.url.as_deref())?;
    if args.json {
        output::json(&plan)?;
    } else {
        output::println(&format!(
            "queued replay of {} events ({} deliveries) with seq {}..={}",
            plan.events,
            plan.deliveries,
            plan.since + 1,
            plan.until
        ))?;
        for r in &plan.reenabled {
            let (event, url) = (r["event"].as_str().unwrap_or(""), r["url"].as_str().unwrap_or(""));
            let kept = delivery::pending_counts(&ctx.paths)?
                .get(&crate::hooks::webhook::registration_key(event, url))
                .map_or(0, |w| w.parked);
            output::println(&format!("enabled webhook {event} -> {url} again"))?;
            reenabled_note(url, kept, r["disabled_seq"].as_u64());
        }
        for r in &plan.skipped_disabled {
            eprintln!(
                "note: skipped the disabled webhook {} -> {}; `--url {}` enables it again and includes it",
                r["event"].as_str().unwrap_or(""),
                r["url"].as_str().unwrap_or(""),
                shell_word(r["url"].as_str().unwrap_or(""))
            );
        }
        eprintln!("the delivery worker sends them (`comfyvn-obs webhooks run`, or inside `serve`)");
    }
    Ok(ExitCode::Success)
}

fn run_worker(ctx: &Ctx) -> Result<ExitCode> {
    let stop = crate::signals::install_stop_flag()?;
    if delivery::worker_active(&ctx.paths)? {
        eprintln!("another delivery worker is running for {}; waiting for it to stop", ctx.paths.root.display());
    }
    // A worker killed mid-write (its cursor, checkpoint or outbox) leaves a temp file behind.
    super::sweep_litter(&ctx.paths, &[]);
    eprintln!("delivering webhooks for {} (Ctrl-C to stop)", ctx.paths.root.display());
    delivery::run_worker(&ctx.paths, &ctx.config, &stop)?;
    Ok(ExitCode::Success)
}
