#!/usr/bin/env python3
"""The dashboard in a real browser: headless Chromium driven over WebDriver (Selenium, with Debian's
chromium and chromium-driver), against the real `comfyvn-obs serve` on loopback.

Run by scripts/browser-tests.sh (which installs what is missing). Each check is a function below; the
suite prints one line per check and exits 1 if any failed. Screenshots of every view go to
$ARTIFACTS (default target/browser-artifacts), and timing figures to $ARTIFACTS/figures.json: they are
measurements to read, never asserted on.
"""

import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BIN", os.path.join(REPO, "target", "debug", "comfyvn-obs"))
ARTIFACTS = os.path.abspath(os.environ.get("ARTIFACTS", os.path.join(REPO, "target", "browser-artifacts")))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
TOKEN = "dashboard-test-token-5f1c"
XSS = '<img src=x onerror=alert(1)><script>alert(2)</script>'

figures = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Provider(http.server.BaseHTTPRequestHandler):
    """A loopback provider: /fast answers at once, /slow after 600 ms; /quota returns credits."""

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.6)
        body = json.dumps({"credits": 42} if "quota" in self.path else {"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Root:
    """A runtime root with config, providers, a crash-free start, and the server process."""

    def __init__(self, token=None):
        self.dir = tempfile.mkdtemp(prefix="comfyvn-dash-")
        self.token = token
        self.port = free_port()
        self.proc = None
        os.makedirs(os.path.join(self.dir, "config", "settings"))
        with open(os.path.join(self.dir, "config", "comfyvn.json"), "w") as f:
            json.dump({"features": {"enable_observability": True},
                       "telemetry": {"telemetry_opt_in": False, "dry_run": True},
                       "obs": {"providers": {"slow_ms": 300, "timeout_ms": 2000},
                               # Short timeouts, so an idle gap longer than each fits in a test.
                               "server": {"io_timeout_ms": 1500, "sse_keepalive_secs": 1}}}, f)

    def providers(self, base):
        down = free_port()  # nothing listens there
        with open(os.path.join(self.dir, "config", "settings", "providers.json"), "w") as f:
            json.dump({"schema": 1, "providers": [
                {"id": "fast", "name": "Fast GPU", "base_url": base, "health_url": base + "/fast",
                 "quota_url": base + "/quota", "active": True, "config": {"api_key": "sk-very-secret"}},
                {"id": "slow", "name": "Slow farm", "base_url": base, "health_url": base + "/slow", "active": True},
                {"id": "down", "name": "Gone box", "base_url": f"http://127.0.0.1:{down}",
                 "health_url": f"http://127.0.0.1:{down}/", "active": True},
            ]}, f)

    def set_server(self, server):
        path = os.path.join(self.dir, "config", "comfyvn.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["obs"].setdefault("server", {}).update(server)
        with open(path + ".tmp", "w") as f:
            json.dump(cfg, f)
        os.replace(path + ".tmp", path)

    def env(self):
        e = dict(os.environ, COMFYVN_RUNTIME_ROOT=self.dir, COMFYVN_LOG_LEVEL="INFO")
        e.pop("COMFYVN_API_TOKEN", None)
        if self.token:
            e["COMFYVN_API_TOKEN"] = self.token
        return e

    def cli(self, *args, check=True):
        return subprocess.run([BIN, *args], env=self.env(), cwd=self.dir, check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def start(self):
        self.proc = subprocess.Popen([BIN, "serve", "--bind", f"127.0.0.1:{self.port}", "--no-watch"],
                                     env=self.env(), cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if "listening on" in line:
                threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
                return
            if self.proc.poll() is not None:
                break
        raise RuntimeError("serve did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def history_seqs(self):
        path = os.path.join(self.dir, "logs", "hooks", "history.jsonl")
        with open(path) as f:
            return [json.loads(line)["seq"] for line in f if line.strip()]


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,800",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A time zone far from UTC, so a check can tell local time from UTC.
    return webdriver.Chrome(service=Service(CHROMEDRIVER, env=dict(os.environ, TZ="Asia/Tokyo")), options=opts)


def wait(driver, cond, timeout=10, what="condition"):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=[StaleElementReferenceException]).until(lambda d: cond(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}")


def console_errors(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def drain_outage_errors(driver):
    """Empty the console log after a check that stopped the server: the page's reconnect attempts
    while it was down are logged as refused connections to the stream, and nothing else may be."""
    errors = console_errors(driver)
    others = [e for e in errors if not ("/api/modder/hooks/stream" in e["message"] and "ERR_CONNECTION_REFUSED" in e["message"])]
    assert not others, others


def no_alert(driver):
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"a dialog opened: {text!r}")


def shot(driver, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, f"{name}.png")
    driver.save_screenshot(path)
    return path


def goto(driver, view):
    driver.find_element(By.ID, f"tab-{view}").click()
    wait(driver, lambda d: d.find_element(By.ID, f"view-{view}").is_displayed(), what=f"view {view}")


def table_seqs(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#hooks-table tbody tr[data-seq]')].map(r => +r.dataset.seq)")


# ------------------------------------------------------------------ the checks

def check_loads_without_console_errors(ctx):
    d, root = ctx["driver"], ctx["root"]
    d.get(root.url)
    wait(d, lambda d: d.find_element(By.ID, "view-providers").is_displayed(), what="first view")
    timing = d.execute_script("""
        const n = performance.getEntriesByType('navigation')[0];
        const fcp = performance.getEntriesByName('first-contentful-paint')[0];
        const bytes = performance.getEntriesByType('resource').reduce((s, r) => s + r.transferSize, n.transferSize);
        return {dom_content_loaded_ms: n.domContentLoadedEventEnd, first_contentful_paint_ms: fcp ? fcp.startTime : null,
                transferred_bytes: bytes};""")
    figures["first_load"] = timing
    wait(d, lambda d: "live" in d.find_element(By.ID, "stream-state").text, what="stream live")
    errors = console_errors(d)
    assert not errors, f"console errors: {errors}"


def check_provider_rows_are_coloured(ctx):
    d = ctx["driver"]
    goto(d, "providers")
    rows = wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#providers-table tr[data-provider]")) == 3
                and d.find_elements(By.CSS_SELECTOR, "#providers-table tr[data-provider]"), what="3 provider rows")
    by_id = {r.get_attribute("data-provider"): r for r in rows}
    expect = {"fast": ("ok", "OK"), "slow": ("slow", "SLOW"), "down": ("down", "DOWN")}
    # Class, label and colour from one snapshot of the table: the view polls, and on a loaded
    # machine a poll may find "fast" slow for a moment, so wait for a snapshot with all three.
    snapshot = """return [...document.querySelectorAll('#providers-table tr[data-provider]')].map((r) => {
        const b = r.querySelector('.badge');
        return [r.dataset.provider, r.className.split(' '), b.textContent, getComputedStyle(b).color]; });"""
    rows_now = {}
    def settled(d):
        rows_now.clear()
        rows_now.update({pid: (cls, label, colour) for pid, cls, label, colour in d.execute_script(snapshot)})
        return all(pid in rows_now and cls in rows_now[pid][0] and rows_now[pid][1] == label
                   for pid, (cls, label) in expect.items())
    try:
        wait(d, settled, what="the three states")
    except AssertionError:
        raise AssertionError(f"provider rows: {rows_now}")
    assert len({rows_now[pid][2] for pid in expect}) == 3, f"status colours are not distinct: {rows_now}"
    down = by_id["down"].text
    assert "refused" in down.lower() or "error" in down.lower() or "connect" in down.lower(), f"down row: {down!r}"
    assert d.find_elements(By.CSS_SELECTOR, "#providers-table tr[data-provider='down'] time"), "no timestamp on the red row"
    assert "42" in by_id["fast"].text, "quota not shown"
    config = d.find_element(By.ID, "providers-config").text
    assert "sk-very-secret" not in config and "api_key" in config, "provider config not masked"
    poll = d.find_element(By.ID, "providers-poll")
    poll.click()
    assert not poll.is_selected()
    poll.click()
    ctx["shots"].append(shot(d, "providers"))


def check_emitted_event_appears_live(ctx):
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    started = time.time()
    out = root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": "live-check"}))
    seq = json.loads(out.stdout)["seq"] if out.stdout.strip().startswith("{") else None
    wait(d, lambda d: "live-check" in d.find_element(By.ID, "hooks-table").text, what="the emitted event")
    figures["emit_to_page_ms_including_cli_start"] = round((time.time() - started) * 1000)
    # The delay from the history append to the row, measured in the page itself.
    appended = os.path.getmtime(os.path.join(root.dir, "logs", "hooks", "history.jsonl"))
    figures["append_to_check_ms"] = round((time.time() - appended) * 1000)
    if seq is not None:
        assert seq in table_seqs(d)


def check_idle_gap_longer_than_every_timeout(ctx):
    """Nothing happens for longer than the server's I/O timeout and keepalive interval: the stream stays
    live (or comes back by itself), and the next event and the next request still arrive."""
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    time.sleep(4)  # io_timeout_ms 1500, sse_keepalive_secs 1: idle keep-alive connections were closed
    root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": "after-idle"}))
    wait(d, lambda d: "after-idle" in d.find_element(By.ID, "hooks-table").text, what="the event after the idle gap")
    goto(d, "providers")
    d.find_element(By.ID, "providers-refresh").click()
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#providers-table tr[data-provider]")) == 3, what="a fetch after the gap")
    assert "live" in d.find_element(By.ID, "stream-state").text
    errors = console_errors(d)
    assert not errors, errors


def check_filter_and_pause(ctx):
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    box = d.find_element(By.ID, "hooks-filter")
    box.send_keys("on_asset_*")
    root.cli("hooks", "emit", "on_asset_registered", "--data", json.dumps({"uid": "f1", "path": "x.png"}))
    root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": "filtered-out"}))
    wait(d, lambda d: "f1" in d.find_element(By.ID, "hooks-table").text, what="filtered event")
    time.sleep(0.5)
    text = d.find_element(By.ID, "hooks-table").text
    assert "filtered-out" not in text and "live-check" not in text, "filter let other events through"
    box.clear()
    box.send_keys(" ")
    box.clear()
    d.execute_script("document.getElementById('hooks-filter').dispatchEvent(new Event('input'))")
    pause = d.find_element(By.ID, "hooks-pause")
    pause.click()
    root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": "while-paused"}))
    wait(d, lambda d: "1 new" in d.find_element(By.ID, "hooks-count").text, what="paused counter")
    assert "while-paused" not in d.find_element(By.ID, "hooks-table").text, "a paused view rendered an event"
    pause.click()
    wait(d, lambda d: "while-paused" in d.find_element(By.ID, "hooks-table").text, what="event after resume")


def check_payloads_render_as_text(ctx):
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": XSS}))
    wait(d, lambda d: "onerror=alert(1)" in d.find_element(By.ID, "hooks-table").text, what="payload shown as text")
    # A sidecar holding markup, shown in the asset view.
    os.makedirs(os.path.join(root.dir, "assets", "image"), exist_ok=True)
    with open(os.path.join(root.dir, "assets", "image", "evil.png"), "wb") as f:
        f.write(b"\x89PNG\r\n")
    out = root.cli("assets", "register", "assets/image/evil.png", "--license", "CC0-1.0",
                   "--meta", json.dumps({"title": XSS}))
    assert out.returncode == 0, out.stderr
    goto(d, "assets")
    def asset_row(d):
        # The server's index follows the history (about 200 ms behind a CLI write): search again until it is there.
        rows = [b for b in d.find_elements(By.CSS_SELECTOR, "#assets-table button") if "evil.png" in b.text]
        if not rows:
            d.find_element(By.CSS_SELECTOR, "#assets-form button[type=submit]").click()
            time.sleep(0.2)
        return rows

    link = wait(d, asset_row, what="the asset row")[0]
    link.click()
    wait(d, lambda d: "Sidecar" in d.find_element(By.ID, "asset-detail").text, what="sidecar shown")
    time.sleep(0.3)
    no_alert(d)
    for sel in ["main img", "main script", "#hooks-table img", "#asset-detail img"]:
        assert not d.find_elements(By.CSS_SELECTOR, sel), f"an element was created from a payload: {sel}"
    assert not [e for e in console_errors(d) if "alert" in e["message"]], "a payload ran"
    ctx["shots"].append(shot(d, "assets"))


def check_reconnect_has_no_gap(ctx):
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    root.stop()
    wait(d, lambda d: "live" not in d.find_element(By.ID, "stream-state").text, what="stream down")
    for i in range(5):  # appended by another process while the server is down
        root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": f"while-down-{i}"}))
    root.start()
    wait(d, lambda d: "while-down-4" in d.find_element(By.ID, "hooks-table").text, timeout=20, what="events from the gap")
    root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": "after-reconnect"}))
    wait(d, lambda d: "after-reconnect" in d.find_element(By.ID, "hooks-table").text, what="event after reconnect")
    shown = table_seqs(d)
    assert len(shown) == len(set(shown)), f"duplicates: {shown}"
    history = root.history_seqs()
    assert sorted(shown) == history[-len(shown):], f"gap: page {sorted(shown)} vs history tail {history[-len(shown):]}"
    ctx["shots"].append(shot(d, "hooks"))
    drain_outage_errors(d)


def check_resync_is_shown_and_the_gap_filled(ctx):
    """More events while the page was away than the server keeps for resumes: the stream says
    `resync_required`; the page shows it and fetches the gap from the history."""
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    root.stop()
    wait(d, lambda d: "live" not in d.find_element(By.ID, "stream-state").text, what="stream down")
    root.set_server({"stream_buffer": 20})
    for i in range(30):
        root.cli("hooks", "emit", "on_scene_enter", "--data", json.dumps({"scene": f"gap-{i}"}))
    root.start()
    note = wait(d, lambda d: d.find_element(By.ID, "hooks-resync").is_displayed() and d.find_element(By.ID, "hooks-resync"),
                timeout=20, what="the resync notice")
    wait(d, lambda d: "fetched again" in note.text, what="the gap fetched")
    shown = table_seqs(d)
    history = root.history_seqs()
    assert len(shown) == len(set(shown)), f"duplicates: {shown}"
    assert sorted(shown) == history[-len(shown):], "a gap after the resync"
    ctx["shots"].append(shot(d, "hooks-resync"))
    drain_outage_errors(d)


def check_burst_does_not_freeze(ctx):
    d, root = ctx["driver"], ctx["root"]
    goto(d, "hooks")
    d.execute_script("""
        window.__gaps = []; let last = performance.now();
        window.__stop = false;
        (function tick(now) { window.__gaps.push(now - last); last = now; if (!window.__stop) requestAnimationFrame(tick); })(last);""")
    conn = http.client.HTTPConnection("127.0.0.1", root.port)
    started = time.time()
    body = json.dumps({"event": "on_scene_enter", "payload": {"scene": "burst"}})
    last = None
    for _ in range(1000):
        conn.request("POST", "/api/modder/hooks/emit", body, {"Content-Type": "application/json"})
        last = json.loads(conn.getresponse().read())["seq"]
    burst_s = time.time() - started
    wait(d, lambda d: d.execute_script("return +(document.querySelector('#hooks-table tbody tr')||{dataset:{}}).dataset.seq") == last,
         timeout=30, what="the burst's last event")
    rows = d.execute_script("window.__stop = true; return document.querySelectorAll('#hooks-table tbody tr').length")
    gaps = d.execute_script("return window.__gaps")
    figures["burst"] = {"events": 1000, "emit_seconds": round(burst_s, 2), "rows_in_table": rows,
                        "max_frame_gap_ms": round(max(gaps)), "frames": len(gaps)}
    assert rows <= 500, f"the table is unbounded: {rows} rows"


def check_crash_appears_with_traceback(ctx):
    d, root = ctx["driver"], ctx["root"]
    root.cli("crash", "simulate", check=False)
    goto(d, "crashes")
    def open_group(d):
        links = [b for b in d.find_elements(By.CSS_SELECTOR, "#crashes-table button") if "simulated crash" in b.text]
        if links:
            links[0].click()  # the table may be redrawn as the crash arrives: stale links are retried
        return links

    wait(d, open_group, what="the crash group")
    tb = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#crash-detail pre.traceback"), what="traceback")[0]
    assert "simulate" in tb.text, f"traceback: {tb.text[:200]!r}"
    t = d.find_element(By.CSS_SELECTOR, "#crash-detail time")
    utc = t.get_attribute("datetime")  # 2026-12-03T16:03:03.000Z
    assert t.get_attribute("title").endswith(" UTC"), t.get_attribute("title")
    shown_hour, utc_hour = int(t.text[11:13]), int(utc[11:13])
    assert shown_hour == (utc_hour + 9) % 24, f"not local time (Asia/Tokyo): {t.text!r} for {utc}"
    path = d.find_element(By.CSS_SELECTOR, "#crash-detail .pathline input").get_attribute("value")
    assert path.endswith(".json") and os.path.exists(path), f"dump path {path!r}"
    ctx["shots"].append(shot(d, "crashes"))


def check_telemetry_and_webhooks_views(ctx):
    d, root = ctx["driver"], ctx["root"]
    root.cli("webhooks", "add", "--event", "on_asset_*", "--url", "http://127.0.0.1:9/hook", "--secret", "s3cret-value")
    goto(d, "webhooks")
    wait(d, lambda d: "on_asset_*" in d.find_element(By.ID, "webhooks-table").text, what="the registration")
    assert "s3cret-value" not in d.page_source, "a webhook secret reached the page"
    ctx["shots"].append(shot(d, "webhooks"))
    goto(d, "telemetry")
    box = wait(d, lambda d: d.find_element(By.ID, "consent-telemetry_opt_in"), what="consent toggles")
    assert not box.is_selected()
    box.click()
    wait(d, lambda d: d.find_element(By.ID, "consent-telemetry_opt_in").is_selected(), what="toggle on")
    wait(d, lambda d: json.load(open(os.path.join(root.dir, "config", "comfyvn.json")))["telemetry"]["telemetry_opt_in"] is True,
         what="consent written to the config file")
    # The answer is applied to the same box: the pointer and the keyboard focus stay on it, and a
    # second click made right after the first lands (a re-rendered list left it detached).
    wait(d, lambda d: "on" in d.find_element(By.CSS_SELECTOR, "#telemetry-gates dd").text, what="the answer shown")
    wait(d, lambda d: box.get_attribute("aria-busy") is None, what="the change settled")
    assert box.is_selected(), "the toggle was replaced by the answer"
    assert d.switch_to.active_element.get_attribute("id") == "consent-telemetry_opt_in", "the focus left the toggle"
    ctx["shots"].append(shot(d, "telemetry"))
    errors = console_errors(d)  # reading the log empties it: keep what it said
    assert not errors, errors


def check_token_flow(ctx):
    d = ctx["driver"]
    root = Root(token=TOKEN)
    try:
        root.start()
        console_errors(d)  # start from an empty log: what earlier checks left there is theirs
        d.get(root.url + "#telemetry")
        box = wait(d, lambda d: d.find_element(By.ID, "consent-diagnostics_opt_in"), what="consent toggles")
        box.click()
        dialog = wait(d, lambda d: d.find_element(By.ID, "token-dialog").is_displayed() and d.find_element(By.ID, "token-dialog"),
                      what="the token dialog")
        d.find_element(By.ID, "token-input").send_keys("wrong-token")
        d.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        wait(d, lambda d: d.find_element(By.ID, "token-error").is_displayed(), what="the refusal")
        ctx["shots"].append(shot(d, "token-dialog"))
        d.find_element(By.ID, "token-input").send_keys(TOKEN)
        d.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        wait(d, lambda d: not dialog.is_displayed(), what="dialog closed")
        wait(d, lambda d: json.load(open(os.path.join(root.dir, "config", "comfyvn.json")))["telemetry"].get("diagnostics_opt_in") is True,
             what="the change made with the token")
        # Asked once: a second change goes through without the dialog.
        before = json.load(open(os.path.join(root.dir, "config", "comfyvn.json")))["telemetry"].get("dry_run")
        d.find_element(By.ID, "consent-dry_run").click()
        wait(d, lambda d: json.load(open(os.path.join(root.dir, "config", "comfyvn.json")))["telemetry"].get("dry_run") != before,
             what="the second change, made without asking")
        assert not d.find_element(By.ID, "token-dialog").is_displayed(), "asked for the token twice"
        # Reads work without the token; the token never appears in a URL the server saw.
        d.execute_script(f"localStorage.removeItem('comfyvn-obs.token')")
        d.get(root.url + "#crashes")
        wait(d, lambda d: d.find_element(By.ID, "crashes-total").text, what="a read without the token")
        for dirpath, _, files in os.walk(os.path.join(root.dir, "logs")):
            for name in files:
                if name.endswith(".log") or name.endswith(".jsonl"):
                    with open(os.path.join(dirpath, name), errors="replace") as f:
                        assert TOKEN not in f.read(), f"the token is in {name}"
        errors = console_errors(d)
        assert all("401" in e["message"] or "403" in e["message"] for e in errors), errors
    finally:
        root.stop()


def check_cross_origin_write_refused(ctx):
    root = ctx["root"]
    conn = http.client.HTTPConnection("127.0.0.1", root.port)
    conn.request("POST", "/api/modder/hooks/emit", "{}", {"Content-Type": "application/json", "Origin": "http://evil.example"})
    r = conn.getresponse()
    assert r.status == 403, r.status
    r.read()


def check_keyboard_navigation(ctx):
    d, root = ctx["driver"], ctx["root"]
    from selenium.webdriver.common.keys import Keys
    d.get(root.url + "#providers")
    tab = wait(d, lambda d: d.find_element(By.ID, "tab-providers"), what="tabs")
    tab.send_keys(Keys.ARROW_RIGHT)
    wait(d, lambda d: d.find_element(By.ID, "view-hooks").is_displayed(), what="arrow key to the next view")
    assert d.switch_to.active_element.get_attribute("id") == "tab-hooks"
    assert d.find_element(By.ID, "tab-hooks").get_attribute("aria-selected") == "true"
    d.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    wait(d, lambda d: d.find_element(By.ID, "view-providers").is_displayed(), what="arrow key back")


def check_narrow_window(ctx):
    d, root = ctx["driver"], ctx["root"]
    d.set_window_size(420, 900)
    d.get(root.url + "#crashes")
    wait(d, lambda d: d.find_element(By.ID, "view-crashes").is_displayed())
    width = d.execute_script("return document.documentElement.scrollWidth")
    ctx["shots"].append(shot(d, "narrow-crashes"))
    d.set_window_size(1280, 800)
    assert width <= 440, f"the page scrolls sideways at 420 px: {width}"


CHECKS = [
    check_loads_without_console_errors,
    check_provider_rows_are_coloured,
    check_emitted_event_appears_live,
    check_idle_gap_longer_than_every_timeout,
    check_filter_and_pause,
    check_payloads_render_as_text,
    check_reconnect_has_no_gap,
    check_burst_does_not_freeze,
    check_crash_appears_with_traceback,
    check_telemetry_and_webhooks_views,
    check_resync_is_shown_and_the_gap_filled,
    check_cross_origin_write_refused,
    check_keyboard_navigation,
    check_narrow_window,
    check_token_flow,
]


def main():
    if os.path.isdir(ARTIFACTS):
        shutil.rmtree(ARTIFACTS)
    os.makedirs(ARTIFACTS)
    provider = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    root = Root()
    root.providers(f"http://127.0.0.1:{provider.server_address[1]}")
    # An audit report exists, as in a studio's tree (before the first audit, the Assets view's
    # GET /api/audit/latest is a 404, which Chromium logs as a console error).
    root.cli("audit", check=False)
    root.start()
    driver = browser()
    ctx = {"driver": driver, "root": root, "shots": []}
    failures = 0
    only = sys.argv[1:]
    try:
        for check in CHECKS:
            if only and check is not CHECKS[0] and not any(o in check.__name__ for o in only):
                continue
            started = time.time()
            try:
                check(ctx)
                print(f"ok    {check.__name__} ({time.time() - started:.1f} s)", flush=True)
            except Exception:
                failures += 1
                print(f"FAIL  {check.__name__}", flush=True)
                traceback.print_exc()
                try:
                    shot(driver, f"failed-{check.__name__}")
                except Exception:
                    pass
    finally:
        driver.quit()
        root.stop()
        provider.shutdown()
    with open(os.path.join(ARTIFACTS, "figures.json"), "w") as f:
        json.dump(figures, f, indent=2)
    print(f"figures: {json.dumps(figures)}")
    print(f"screenshots: {ARTIFACTS}")
    for s in ctx["shots"]:
        print(f"  {s}")
    print(f"browser suite: {len(CHECKS) - failures if not only else '?'} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
