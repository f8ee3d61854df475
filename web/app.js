// comfyvn-obs dashboard. Plain JavaScript, no dependencies, no build step.
//
// Rules this file keeps:
// - every value from the server is put into the page as text (textContent, attributes), never parsed
//   as HTML; the Content-Security-Policy forbids inline code as a second line of defence;
// - the API token is only ever sent in an Authorization header (on every call once given, since some
//   GET routes, such as the diagnostics download, count as changes), never in a URL;
// - the live stream is read with fetch from the SSE route and resumed with `since=<last seq seen>`,
//   so a reconnect has neither a gap nor a duplicate; `resync_required` is shown, and the gap is
//   fetched from the history when it is small enough;
// - a burst of events is rendered once per animation frame, into a bounded table.
"use strict";

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "comfyvn-obs.token";
const MAX_EVENTS = 5000; // kept in memory
const MAX_ROWS = 500; // shown
const POLL_MS = 15000;
const REFRESH_MS = 5000;

// ---------------------------------------------------------------- DOM helpers

/** An element; string and number children become text nodes, null/undefined are skipped. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fill(parent, ...children) {
  parent.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null));
}

const pad = (n) => String(n).padStart(2, "0");

/** A <time> showing local time, with UTC on hover. `t` is an ISO string or epoch seconds. */
function when(t) {
  if (t === undefined || t === null || t === "") return el("span", { class: "muted" }, "–");
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return el("span", {}, String(t));
  const local = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return el("time", { datetime: d.toISOString(), title: `${d.toISOString().replace("T", " ").replace("Z", " UTC")}` }, local);
}

function badge(status, text) {
  return el("span", { class: `badge ${status}` }, text);
}

function jsonText(v) {
  return JSON.stringify(v, null, 2);
}

function bytes(n) {
  if (typeof n !== "number") return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

function notice(text, isError) {
  const n = $("#notice");
  if (!text) { n.hidden = true; return; }
  n.textContent = text;
  n.classList.toggle("error", !!isError);
  n.hidden = false;
}

// ---------------------------------------------------------------- API and the token

let tokenWaiters = [];

function askToken(message) {
  const dlg = $("#token-dialog");
  const err = $("#token-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("#token-input").value = "";
  if (!dlg.open) dlg.showModal();
  $("#token-input").focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function settleToken(token) {
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((w) => w(token));
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** Call the API. Writes carry the token; a 401/403 about the token asks for it once and retries. */
async function api(path, opts = {}) {
  const method = opts.method || "GET";
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json" };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`; // same origin only (credentials: "omit" keeps cookies out)
    const res = await fetch(path, {
      method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store", credentials: "omit",
    });
    let body = null;
    const text = await res.text();
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = { message: text }; }
    const tokenProblem = res.status === 401 || (res.status === 403 && /bearer token/.test((body && body.message) || ""));
    if (tokenProblem && attempt < 3) {
      if (res.status === 403) localStorage.removeItem(TOKEN_KEY);
      const given = await askToken(res.status === 403 ? "That token was refused; try again." : null);
      if (!given) throw new ApiError(res.status, body);
      continue;
    }
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }
}

function setupToken() {
  const dlg = $("#token-dialog");
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("#token-input").value.trim();
    if (!t) return;
    localStorage.setItem(TOKEN_KEY, t);
    dlg.close();
    settleToken(t);
  });
  $("#token-cancel").addEventListener("click", () => { dlg.close(); settleToken(null); });
  $("#token-forget").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    dlg.close();
    settleToken(null);
    notice("The API token was removed from this browser.");
  });
  dlg.addEventListener("cancel", () => settleToken(null));
  $("#token-button").addEventListener("click", () => askToken(null));
}

// ---------------------------------------------------------------- views and navigation

const views = {};
let current = null;

function show(name) {
  if (!views[name]) name = "providers";
  for (const key of Object.keys(views)) {
    $(`#view-${key}`).hidden = key !== name;
    const tab = $(`#tab-${key}`);
    tab.setAttribute("aria-selected", String(key === name));
    tab.tabIndex = key === name ? 0 : -1;
  }
  current = name;
  notice(null);
  views[name].open();
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => tab.addEventListener("keydown", (e) => {
    const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    e.preventDefault();
    const next = tabs[(i + step + tabs.length) % tabs.length];
    next.focus();
    location.hash = next.getAttribute("href");
  }));
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
}

/** Run `fn` every `ms` while its view is shown and the page is visible. */
function every(view, ms, fn) {
  setInterval(() => { if (current === view && !document.hidden) fn(); }, ms);
}

function failed(where, e) {
  notice(`${where}: ${e.message}`, true);
}

// ---------------------------------------------------------------- providers

const providers = { polling: true, timer: null };

async function loadProviders() {
  try {
    const [config, health] = await Promise.all([api("/api/providers"), api("/api/providers/health")]);
    const list = config.providers || [];
    fill($("#providers-config"), jsonText(list));
    const results = health.results || [];
    const quotas = await Promise.all(results.map((r) =>
      api(`/api/providers/quota?id=${encodeURIComponent(r.provider_id)}`).catch((e) => ({ ok: false, error: e.message }))));
    const rows = results.map((r, i) => {
      const status = r.status || (r.ok ? "ok" : "down");
      const label = { ok: "OK", slow: "SLOW", down: "DOWN" }[status] || status.toUpperCase();
      const q = quotas[i] || {};
      const quota = q.ok ? el("code", {}, JSON.stringify(q.quota)) : el("span", { class: "muted" }, q.error || "–");
      return el("tr", { class: status, "data-provider": r.provider_id },
        el("td", {}, el("strong", {}, r.provider_name || r.provider_id), el("br"), el("span", { class: "muted mono" }, r.provider_id)),
        el("td", {}, badge(status, label), r.status_code ? el("span", { class: "muted" }, ` HTTP ${r.status_code}`) : null),
        el("td", {}, typeof r.latency_ms === "number" ? `${r.latency_ms} ms` : "–"),
        el("td", { class: "mono" }, r.endpoint || ""),
        el("td", {}, status === "down" ? [el("span", { class: "error-text" }, r.error || "no answer"), " · ", when(r.checked_at)] : ""),
        el("td", {}, quota));
    });
    fill($("#providers-table tbody"), rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No active providers.")));
    fill($("#providers-checked"), "checked ", when(new Date().toISOString()));
  } catch (e) {
    failed("providers", e);
  }
}

function scheduleProviders() {
  clearInterval(providers.timer);
  providers.timer = providers.polling ? setInterval(() => { if (!document.hidden) loadProviders(); }, POLL_MS) : null;
}

views.providers = {
  open: loadProviders,
  setup() {
    $("#providers-refresh").addEventListener("click", loadProviders);
    $("#providers-poll").addEventListener("change", (e) => { providers.polling = e.target.checked; scheduleProviders(); });
    scheduleProviders();
  },
};

// ---------------------------------------------------------------- hooks, live

const hooks = {
  events: [], // oldest → newest, at most MAX_EVENTS
  lastSeq: 0,
  queue: [], // received, not yet rendered
  paused: false,
  unseen: 0,
  filter: null,
  frame: 0,
};

/** `on_asset_*` → a RegExp; a plain name matches itself or as a substring. */
function compileFilter(text) {
  const t = text.trim();
  if (!t) return null;
  if (/[*?]/.test(t)) {
    const re = t.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
    return new RegExp(`^${re}$`, "i");
  }
  const lower = t.toLowerCase();
  return { test: (name) => name.toLowerCase().includes(lower) };
}

function eventRow(env) {
  const data = JSON.stringify(env.data);
  return el("tr", { "data-seq": env.seq },
    el("td", { class: "mono" }, env.seq),
    el("td", {}, when(env.ts)),
    el("td", { class: "mono" }, env.event),
    el("td", { class: "data", title: data }, data));
}

function matches(env) {
  return !hooks.filter || hooks.filter.test(env.event);
}

function accept(env) {
  if (typeof env.seq !== "number" || env.seq <= hooks.lastSeq) return; // a repeat after a reconnect
  hooks.lastSeq = env.seq;
  hooks.events.push(env);
  if (hooks.events.length > MAX_EVENTS) hooks.events.splice(0, hooks.events.length - MAX_EVENTS);
  if (hooks.paused) { hooks.unseen++; countHooks(); return; }
  hooks.queue.push(env);
  if (!hooks.frame) hooks.frame = requestAnimationFrame(flushHooks);
}

function flushHooks() {
  hooks.frame = 0;
  const batch = hooks.queue.filter(matches).slice(-MAX_ROWS);
  hooks.queue = [];
  if (!batch.length) return;
  const body = $("#hooks-table tbody");
  const frag = document.createDocumentFragment();
  for (let i = batch.length - 1; i >= 0; i--) frag.append(eventRow(batch[i]));
  body.prepend(frag);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  countHooks();
}

function renderAllHooks() {
  hooks.queue = [];
  const shown = hooks.events.filter(matches).slice(-MAX_ROWS).reverse();
  fill($("#hooks-table tbody"), shown.map(eventRow));
  countHooks();
}

function countHooks() {
  const n = $("#hooks-table tbody").rows.length;
  const parts = [`${n} shown`, `${hooks.events.length} received`, `last seq ${hooks.lastSeq || "–"}`];
  if (hooks.paused) parts.unshift(`paused, ${hooks.unseen} new`);
  $("#hooks-count").textContent = parts.join(" · ");
}

function streamState(text, status) {
  const b = $("#stream-state");
  b.textContent = `stream: ${text}`;
  b.className = `badge ${status || ""}`;
}

/** The stream said events were dropped for us: say so, and fetch them from the history if we can. */
async function resync(nextSeq) {
  const from = hooks.lastSeq + 1;
  const to = nextSeq - 1;
  const note = $("#hooks-resync");
  note.hidden = false;
  if (to < from) { hooks.lastSeq = Math.max(hooks.lastSeq, to); return; }
  note.textContent = `resync required: the server dropped events ${from}–${to} for this page; fetching them from the history…`;
  let got = 0;
  try {
    const h = await api(`/api/modder/hooks/history?limit=1000`);
    for (const env of h.items || []) if (env.seq >= from && env.seq <= to) { accept(env); got++; }
  } catch (_) { /* reported below */ }
  hooks.lastSeq = Math.max(hooks.lastSeq, to);
  const missing = to - from + 1 - got;
  note.textContent = missing > 0
    ? `resync required: events ${from}–${to} were dropped for this page; ${got} were fetched from the history, ` +
      `${missing} are older than it reaches (see logs/hooks/history.jsonl).`
    : `resync required: events ${from}–${to} were dropped for this page and fetched again from the history.`;
}

async function readStream() {
  let backoff = 500;
  for (;;) {
    try {
      const res = await fetch(`/api/modder/hooks/stream?since=${hooks.lastSeq}`, {
        headers: { Accept: "text/event-stream" }, cache: "no-store", credentials: "omit",
      });
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      streamState("live", "ok");
      backoff = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          await onBlock(block);
        }
      }
      streamState("reconnecting", "slow");
    } catch (e) {
      streamState(`down (${e.message}), retrying`, "down");
    }
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

async function onBlock(block) {
  let event = "message";
  const data = [];
  for (const raw of block.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  let parsed;
  try { parsed = JSON.parse(data.join("\n")); } catch (_) { return; }
  if (event === "resync_required" || parsed.resync_required) await resync(parsed.next_seq);
  else accept(parsed);
}

async function startHooks() {
  try {
    const h = await api("/api/modder/hooks/history?limit=200");
    for (const env of h.items || []) accept(env);
  } catch (e) {
    failed("hook history", e);
  }
  readStream();
}

views.hooks = {
  open: countHooks,
  setup() {
    $("#hooks-filter").addEventListener("input", (e) => { hooks.filter = compileFilter(e.target.value); renderAllHooks(); });
    $("#hooks-pause").addEventListener("click", (e) => {
      hooks.paused = !hooks.paused;
      e.target.setAttribute("aria-pressed", String(hooks.paused));
      e.target.textContent = hooks.paused ? "Resume" : "Pause";
      if (!hooks.paused) { hooks.unseen = 0; renderAllHooks(); }
      countHooks();
    });
    $("#hooks-clear").addEventListener("click", () => { hooks.events = []; hooks.unseen = 0; renderAllHooks(); });
    startHooks();
  },
};

// ---------------------------------------------------------------- crashes

let openCrash = null;
let crashesShown = null; // what the table shows, so an unchanged refresh leaves it (and the focus) alone

async function loadCrashes() {
  try {
    const g = await api("/api/crashes/groups");
    const key = JSON.stringify([g, openCrash]);
    if (key === crashesShown) return;
    crashesShown = key;
    $("#crashes-total").textContent = `${g.total} dumps in ${g.groups.length} groups` +
      (g.skipped.length ? ` · ${g.skipped.length} unreadable files skipped` : "");
    const rows = g.groups.map((grp) => el("tr", { class: openCrash === grp.latest_event_id ? "selected" : null },
      el("td", {}, el("button", { type: "button", class: "link", onclick: () => showCrash(grp) },
        `${grp.exc_type}: ${grp.message}`), el("br"), el("span", { class: "muted mono" }, grp.fingerprint)),
      el("td", {}, grp.count),
      el("td", {}, when(grp.first_seen)),
      el("td", {}, when(grp.last_seen))));
    fill($("#crashes-table tbody"), rows.length ? rows : el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No crash dumps.")));
  } catch (e) {
    failed("crashes", e);
  }
}

function copyable(text) {
  const input = el("input", { type: "text", readonly: true, value: text, "aria-label": "dump path" });
  const btn = el("button", { type: "button", class: "quiet", onclick: async () => {
    try { await navigator.clipboard.writeText(text); btn.textContent = "Copied"; } catch (_) { input.select(); btn.textContent = "Press Ctrl+C"; }
  } }, "Copy path");
  return el("div", { class: "pathline" }, input, btn);
}

async function showCrash(group) {
  openCrash = group.latest_event_id;
  const box = $("#crash-detail");
  try {
    const { crash } = await api(`/api/crashes/${encodeURIComponent(group.latest_event_id)}`);
    const listing = (await api("/api/crashes?limit=1000")).crashes.find((c) => c.event_id === crash.event_id);
    const tail = (crash.log_tail || []).map((l) => typeof l === "string" ? l : JSON.stringify(l)).join("\n");
    fill(box,
      el("h3", {}, `${crash.exc_type}: ${crash.message}`),
      el("dl", {},
        el("dt", {}, "event id"), el("dd", { class: "mono" }, crash.event_id),
        el("dt", {}, "time"), el("dd", {}, when(crash.timestamp)),
        el("dt", {}, "repeats"), el("dd", {}, `${group.count} (${group.event_ids.join(", ")})`),
        el("dt", {}, "location"), el("dd", { class: "mono" }, crash.location || "–"),
        el("dt", {}, "process"), el("dd", { class: "mono" }, `pid ${crash.pid} · ${(crash.args || []).join(" ")}`)),
      el("h3", {}, "Dump file"), copyable(listing ? listing.path : `logs/crash/ (${crash.event_id})`),
      el("h3", {}, "Traceback"), el("pre", { class: "traceback" }, crash.traceback || "(none)"),
      el("h3", {}, "Context"), el("pre", { class: "json" }, jsonText(crash.context || {})),
      el("h3", {}, "Log tail"), el("pre", {}, tail || "(empty)"));
    loadCrashes();
  } catch (e) {
    failed("crash dump", e);
  }
}

views.crashes = {
  open: loadCrashes,
  setup() {
    $("#crashes-refresh").addEventListener("click", loadCrashes);
    every("crashes", REFRESH_MS, loadCrashes);
  },
};

// ---------------------------------------------------------------- assets and audit

const assets = { offset: 0, limit: 50, total: 0 };

async function loadAssets() {
  const form = new FormData($("#assets-form"));
  const q = new URLSearchParams();
  for (const key of ["q", "type", "tag", "license"]) {
    const v = String(form.get(key) || "").trim();
    if (v) q.set(key, v);
  }
  q.set("limit", assets.limit);
  q.set("offset", assets.offset);
  try {
    const a = await api(`/assets?${q}`);
    assets.total = a.total;
    const end = Math.min(assets.offset + a.items.length, a.total);
    $("#assets-total").textContent = a.total ? `${assets.offset + 1}–${end} of ${a.total}` : "no matches";
    $("#assets-prev").disabled = assets.offset === 0;
    $("#assets-next").disabled = end >= a.total;
    const rows = a.items.map((r) => el("tr", {},
      el("td", {}, el("button", { type: "button", class: "link mono", onclick: () => showAsset(r) }, r.path)),
      el("td", {}, r.type),
      el("td", {}, ((r.meta && r.meta.tags) || []).join(", ")),
      el("td", {}, (r.meta && r.meta.license) || el("span", { class: "muted" }, "none")),
      el("td", {}, bytes(r.bytes))));
    fill($("#assets-table tbody"), rows.length ? rows : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No assets match.")));
  } catch (e) {
    failed("assets", e);
  }
}

async function showAsset(record) {
  const box = $("#asset-detail");
  try {
    const s = await api(`/assets/${encodeURIComponent(record.uid)}/sidecar`);
    fill(box,
      el("h3", { class: "mono" }, record.path),
      el("p", {}, el("a", { href: `/assets/${encodeURIComponent(record.uid)}/download`, download: "" }, "Download"),
        el("span", { class: "muted" }, ` · ${bytes(record.bytes)} · uid ${record.uid}`)),
      el("h3", {}, "Record"), el("pre", { class: "json" }, jsonText(record)),
      el("h3", {}, `Sidecar (${s.path})`), el("pre", { class: "json" }, jsonText(s.sidecar)));
  } catch (e) {
    failed("asset", e);
  }
}

async function loadAudit() {
  const out = $("#audit-summary");
  try {
    const r = await api("/api/audit/latest");
    const s = r.summary || {};
    fill($("#audit-verdict"), s.passed ? badge("ok", "PASSED") : badge("down", "FAILED"), " ",
      el("span", { class: "muted" }, `${r.mode} · fail on ${r.fail_on} · `), when(r.generated_at));
    const byRule = new Map();
    for (const f of r.findings || []) {
      const key = `${f.rule}\u0000${f.severity}`;
      byRule.set(key, (byRule.get(key) || 0) + 1);
    }
    const ruleRows = [...byRule.entries()].sort((a, b) => b[1] - a[1]).map(([key, n]) => {
      const [rule, severity] = key.split("\u0000");
      return el("tr", {}, el("td", { class: "mono" }, rule),
        el("td", {}, badge(severity === "error" ? "down" : severity === "warning" ? "slow" : "", severity)), el("td", {}, n));
    });
    const sample = (r.findings || []).slice(0, 200).map((f) => el("tr", {},
      el("td", { class: "mono" }, f.path), el("td", { class: "mono" }, f.rule), el("td", {}, f.severity), el("td", {}, f.message)));
    fill(out,
      el("p", {}, `${s.assets} assets · ${s.sidecars} sidecars · ${s.errors} errors · ${s.warnings} warnings · ${s.fixable} fixable`),
      el("div", { class: "scroll" }, el("table", { id: "audit-rules" },
        el("thead", {}, el("tr", {}, el("th", {}, "rule"), el("th", {}, "severity"), el("th", {}, "findings"))),
        el("tbody", {}, ruleRows.length ? ruleRows : el("tr", {}, el("td", { colspan: 3, class: "muted" }, "No findings."))))),
      sample.length ? el("h3", {}, `Findings${r.findings.length > 200 ? " (first 200)" : ""}`) : null,
      sample.length ? el("div", { class: "scroll" }, el("table", { class: "dense" },
        el("thead", {}, el("tr", {}, el("th", {}, "path"), el("th", {}, "rule"), el("th", {}, "severity"), el("th", {}, "message"))),
        el("tbody", {}, sample))) : null);
  } catch (e) {
    if (e.status === 404) { fill($("#audit-verdict"), el("span", { class: "muted" }, "no audit has run yet (comfyvn-obs audit)")); fill(out); }
    else failed("audit", e);
  }
}

views.assets = {
  open() { loadAssets(); loadAudit(); },
  setup() {
    $("#assets-form").addEventListener("submit", (e) => { e.preventDefault(); assets.offset = 0; loadAssets(); });
    $("#assets-prev").addEventListener("click", () => { assets.offset = Math.max(0, assets.offset - assets.limit); loadAssets(); });
    $("#assets-next").addEventListener("click", () => { assets.offset += assets.limit; loadAssets(); });
    $("#audit-refresh").addEventListener("click", loadAudit);
  },
};

// ---------------------------------------------------------------- telemetry and flags

const CONSENT = [
  ["telemetry_opt_in", "Telemetry", "Local, anonymised usage counters."],
  ["crash_opt_in", "Crash reports", "Crash summaries in telemetry (uploads also need the crash uploader flag)."],
  ["diagnostics_opt_in", "Diagnostics bundle", "Allows exporting the diagnostics zip."],
  ["dry_run", "Dry run", "Nothing leaves this machine."],
];

function yesNo(v) {
  return v ? badge("ok", "on") : badge("", "off");
}

function renderTelemetry(t) {
  const flags = t.features || {};
  fill($("#telemetry-flags"),
    el("dt", {}, "enable_observability"), el("dd", {}, yesNo(flags.enable_observability)),
    el("dt", {}, "enable_crash_uploader"), el("dd", {}, yesNo(flags.enable_crash_uploader)));
  // The toggles are built once and then updated in place: a re-render after a change would
  // replace the box under the pointer or the keyboard focus while the user is still on it.
  const consent = $("#telemetry-consent");
  if (!consent.querySelector("input")) fill(consent, CONSENT.map(([key, label, help]) => {
    const box = el("input", { type: "checkbox", id: `consent-${key}` });
    // One change at a time, marked busy rather than disabled (that would take the focus off it).
    box.addEventListener("change", async () => {
      if (box.hasAttribute("aria-busy")) { box.checked = !box.checked; return; }
      box.setAttribute("aria-busy", "true");
      try {
        renderTelemetry(await api("/api/telemetry/settings", { method: "POST", body: { [key]: box.checked } }));
      } catch (e) {
        box.checked = !box.checked;
        failed("consent", e);
      } finally {
        box.removeAttribute("aria-busy");
      }
    });
    return el("div", { class: "consent" }, box, el("label", { for: `consent-${key}` }, el("strong", {}, label), " ",
      el("span", { class: "muted" }, help)));
  }));
  for (const [key] of CONSENT) $(`#consent-${key}`).checked = !!t.settings[key];
  const h = t.health || {};
  fill($("#telemetry-gates"),
    el("dt", {}, "telemetry"), el("dd", {}, yesNo(t.telemetry_active)),
    el("dt", {}, "crash uploads"), el("dd", {}, yesNo(t.crash_uploads_active)),
    el("dt", {}, "diagnostics"), el("dd", {}, yesNo(t.diagnostics_active)),
    el("dt", {}, "anonymous id"), el("dd", { class: "mono" }, `${h.anonymous_preview || "–"}…`),
    el("dt", {}, "last change"), el("dd", {}, when(h.last_settings_update)));
}

async function loadTelemetry() {
  try {
    renderTelemetry(await api("/api/telemetry/settings"));
  } catch (e) {
    failed("telemetry", e);
  }
}

views.telemetry = {
  open: loadTelemetry,
  setup() { $("#telemetry-refresh").addEventListener("click", loadTelemetry); },
};

// ---------------------------------------------------------------- webhooks

async function loadWebhooks() {
  try {
    const [w, d] = await Promise.all([api("/api/modder/hooks/webhooks"), api("/api/modder/hooks/webhooks/deliveries?limit=50")]);
    const rows = w.webhooks.map((r) => {
      const failing = r.consecutive_failures > 0;
      const status = !r.enabled ? "down" : failing ? "slow" : "ok";
      const label = !r.enabled ? "DISABLED" : failing ? "FAILING" : "ENABLED";
      return el("tr", { class: status },
        el("td", { class: "mono" }, r.event), el("td", { class: "mono" }, r.url), el("td", {}, badge(status, label)),
        el("td", {}, r.pending), el("td", {}, r.parked), el("td", {}, r.consecutive_failures),
        el("td", {}, r.last_error || el("span", { class: "muted" }, "–")));
    });
    fill($("#webhooks-table tbody"), rows.length ? rows : el("tr", {}, el("td", { colspan: 7, class: "muted" },
      "No webhooks registered (comfyvn-obs webhooks add --event E --url U).")));
    const drows = d.deliveries.slice().reverse().map((x) => el("tr", {},
      el("td", {}, when(x.ts)), el("td", {}, x.outcome), el("td", {}, x.attempt ?? "–"), el("td", {}, x.status_code ?? "–"),
      el("td", {}, x.latency_ms === undefined ? "–" : `${x.latency_ms} ms`), el("td", { class: "mono" }, x.seq),
      el("td", { class: "mono" }, x.event), el("td", { class: "mono" }, x.url), el("td", {}, x.error || x.reason || "")));
    fill($("#deliveries-table tbody"), drows.length ? drows : el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No deliveries yet.")));
  } catch (e) {
    failed("webhooks", e);
  }
}

views.webhooks = {
  open: loadWebhooks,
  setup() {
    $("#webhooks-refresh").addEventListener("click", loadWebhooks);
    every("webhooks", REFRESH_MS, loadWebhooks);
  },
};

// ---------------------------------------------------------------- start

setupToken();
setupTabs();
for (const v of Object.values(views)) v.setup();
show(location.hash.slice(1) || "providers");
